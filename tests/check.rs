//! `kiln check` against the real engine: fixture images that each fail
//! exactly one checklist item, examples/with-deps passing all nine, the
//! `kiln build --check` gate, cleanup after Ctrl-C, and [check] errors with
//! their positions.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::*;

/// What the checks below pass for the fixture (its [check], as flags).
const FLAGS: &[&str] = &[
    "--health",
    "/health",
    "--required-env",
    "DATABASE_URL",
    "--env",
    "DATABASE_URL=postgres://app@db/app",
    "--settle",
    "1s",
    "--ready-timeout",
    "3s",
    "--stop-timeout",
    "2s",
];

/// Runs `kiln check --json`; returns the exit code and the report.
fn check(sb: &Sandbox, project: &Path, image: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut c = sb.kiln();
    c.arg("check")
        .arg("--json")
        .arg("--project")
        .arg(project)
        .args(extra)
        .arg(image);
    let out = output(&mut c);
    let code = out.status.code().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", explain(&c, &out)));
    (code, report)
}

fn failed_items(report: &serde_json::Value) -> BTreeSet<u64> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "fail")
        .map(|i| i["id"].as_u64().unwrap())
        .collect()
}

/// kiln's own containers of one run, by the PID in their names.
fn check_containers_of(pid: u32) -> String {
    stdout(&ok(Command::new("docker").args([
        "ps",
        "-a",
        "--filter",
        &format!("name=kiln-check-.*-{pid}-"),
        "--format",
        "{{.Names}}",
    ])))
}

#[test]
fn each_fixture_fails_exactly_its_item_and_the_good_one_passes() {
    require_engine();
    let sb = Sandbox::new();
    // The fixture binary by the host's cargo (static), in images assembled
    // around it: one per misbehaviour. The project (with its kiln.lock)
    // stands for item 9.
    let bin = static_binary(&repo().join("tests/fixtures/check-app"), "check-app");
    let project = copy_project(&repo().join("tests/fixtures/check-app"), &sb.join("check-app"));
    ok(sb.kiln().current_dir(&project).args(["lock"]));
    let add_bin = format!("{}:/usr/local/bin/check-app:0755", bin.display());
    let key = sb.join("server.key");
    // A made-up EC key: only its shape matters.
    std::fs::write(
        &key,
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oDd4k0TyPCvXoAoGCCqGSM49\nAwEHoUQDQgAEjz1h9Xv3xqGf0p0y8Y3p8k2c6s1sQy9n8iM1Ck3gQm7f6b1v5Lr3\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let key_add = format!("{}:/etc/app/server.key:0600", key.display());
    let variants: Vec<(&str, Vec<&str>, Vec<u64>)> = vec![
        ("good", vec![], vec![]),
        ("no-health", vec!["--env", "APP_NO_HEALTH=1"], vec![4]),
        ("ignores-sigterm", vec!["--env", "APP_IGNORE_SIGTERM=1"], vec![6]),
        ("no-validation", vec!["--env", "APP_SKIP_VALIDATION=1"], vec![5]),
        ("writes-var-lib", vec!["--env", "APP_STATE_DIR=/var/lib/app"], vec![7]),
        (
            "secrets",
            vec![
                "--add",
                &key_add,
                "--env",
                "AWS_SECRET_ACCESS_KEY=Zq3vT9xW2mK8pL4nR7sY1uB6cE0dF5gH3jA9kM2o",
            ],
            vec![8],
        ),
        ("undeclared-port", vec!["--env", "APP_EXTRA_PORT=9090"], vec![3]),
    ];
    for (name, args, expect) in variants {
        let image = format!("oci:{}:{name}", sb.join("layout").display());
        ok(sb
            .kiln()
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "assemble", "--quiet", "--add", &add_bin, "--expose", "8080", "--out", &image,
            ])
            .args(["--entrypoint", "/usr/local/bin/check-app"])
            .args(&args));
        let (code, report) = check(&sb, &project, &image, FLAGS);
        let failed = failed_items(&report);
        let expect: BTreeSet<u64> = expect.into_iter().collect();
        assert_eq!(
            failed,
            expect,
            "{name}: {}",
            serde_json::to_string_pretty(&report).unwrap()
        );
        assert_eq!(code, if expect.is_empty() { 0 } else { 1 }, "{name}");
        assert_eq!(report["passed"], expect.is_empty(), "{name}");
        let items = report["items"].as_array().unwrap();
        assert_eq!(items.len(), 9, "{name}");
        // The good one skips nothing: every item was really checked.
        if name == "good" {
            assert!(items.iter().all(|i| i["status"] == "pass"), "{report}");
        }
        let item = |id: u64| items.iter().find(|i| i["id"] == id).unwrap().to_string();
        match name {
            "no-health" => assert!(item(4).contains("404"), "{}", item(4)),
            "ignores-sigterm" => assert!(item(6).contains("SIGKILL"), "{}", item(6)),
            "no-validation" => assert!(item(5).contains("starts anyway"), "{}", item(5)),
            "writes-var-lib" => {
                assert!(item(7).contains("/var/lib/app"), "{}", item(7));
                assert!(item(7).contains("Read-only file system"), "{}", item(7));
            }
            "secrets" => {
                assert!(item(8).contains("/etc/app/server.key"), "{}", item(8));
                assert!(item(8).contains("AWS_SECRET_ACCESS_KEY"), "{}", item(8));
                assert!(!item(8).contains("Zq3vT9xW2mK8"), "the value is printed: {}", item(8));
            }
            "undeclared-port" => assert!(item(3).contains("9090"), "{}", item(3)),
            _ => {}
        }
    }
}

#[test]
fn with_deps_passes_every_item_and_build_check_gates_the_push() {
    require_engine();
    let sb = Sandbox::new();
    let project = copy_project(&repo().join("examples/with-deps"), &sb.join("with-deps"));
    let layout = sb.join("out");
    let out = ok(sb.kiln().current_dir(&project).args([
        "build",
        "--json",
        "--check",
        "--out",
        &format!("oci:{}", layout.display()),
    ]));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = r["check"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 9);
    for i in items {
        assert_eq!(i["status"], "pass", "{i}");
    }
    assert!(r["timings"]["check"].as_f64().unwrap() > 0.0);
    assert!(layout.join("index.json").exists());

    // The same image through `kiln check` with the project's [check].
    let (code, report) = check(&sb, &project, &format!("oci:{}", layout.display()), &[]);
    assert_eq!(code, 0, "{report}");
    let health = report["items"][3].to_string();
    assert!(health.contains("/health"), "{health}");

    // A requirement the app does not enforce: the gate refuses to write or push.
    let toml = std::fs::read_to_string(project.join("kiln.toml")).unwrap();
    std::fs::write(
        project.join("kiln.toml"),
        toml.replace(
            "required_env = [\"DATABASE_URL\"]",
            "required_env = [\"DATABASE_URL\", \"SMTP_HOST\"]",
        ),
    )
    .unwrap();
    let refused = sb.join("refused");
    let pushed = format!("{}/{}:1", dev_env()["KILN_REGISTRY"], unique("kiln-test/check-gate"));
    let mut c = sb.kiln();
    c.current_dir(&project).args([
        "build",
        "--check",
        "--out",
        &format!("oci:{}", refused.display()),
        "--push",
        &pushed,
    ]);
    let o = output(&mut c);
    assert_eq!(o.status.code(), Some(1), "{}", explain(&c, &o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("SMTP_HOST") && err.contains("nothing was written or pushed"),
        "{err}"
    );
    assert!(!refused.exists(), "the refused image was written");
    let inspect = output(Command::new("skopeo").args(["inspect", "--tls-verify=false", &format!("docker://{pushed}")]));
    assert!(!inspect.status.success(), "the refused image was pushed");
}

#[test]
fn interrupted_check_removes_its_containers_and_network() {
    require_engine();
    let sb = Sandbox::new();
    let image = format!("oci:{}", sb.join("layout").display());
    ok(sb.kiln().args([
        "assemble",
        "--quiet",
        "--add",
        &format!("{}:/hello:0755", static_hello().display()),
        "--entrypoint",
        "/hello",
        "--out",
        &image,
    ]));
    // A long settle keeps it inside the run when the signal comes: Ctrl-C,
    // and SIGTERM as a cancelled CI job sends it.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let child = sb
            .kiln()
            .args(["check", "--quiet", "--settle", "60s", &image])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let t = std::time::Instant::now();
        while check_containers_of(pid).is_empty() {
            assert!(t.elapsed().as_secs() < 60, "kiln check made no containers");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        unsafe {
            libc::kill(pid as i32, sig);
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(check_containers_of(pid), "", "containers left behind");
        let nets = stdout(&ok(Command::new("docker").args([
            "network",
            "ls",
            "--filter",
            &format!("name=kiln-check-{pid}-"),
            "--format",
            "{{.Name}}",
        ])));
        assert_eq!(nets, "", "network left behind");
    }
}

#[test]
fn check_config_errors_name_file_line_and_column() {
    let sb = Sandbox::new();
    let project = sb.join("p");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("kiln.toml"),
        "[image]\nports = [8080]\n\n[check]\nsettle = \"soon\"\n",
    )
    .unwrap();
    let err = fails(
        sb.kiln()
            .args(["check", "--project"])
            .arg(&project)
            .arg("oci:/nonexistent"),
    );
    assert!(err.contains("kiln.toml:5:10") && err.contains("duration"), "{err}");
    std::fs::write(project.join("kiln.toml"), "[check]\nenv_file = \".env.prod\"\n").unwrap();
    let err = fails(
        sb.kiln()
            .args(["check", "--project"])
            .arg(&project)
            .arg("oci:/nonexistent"),
    );
    assert!(
        err.contains("kiln.toml:2:12") && err.contains("does not exist"),
        "{err}"
    );
    std::fs::write(project.join("kiln.toml"), "[check]\nenv_file = \".env.prod\"\n").unwrap();
    std::fs::write(project.join(".env.prod"), "A=1\nnot a pair\n").unwrap();
    let err = fails(
        sb.kiln()
            .args(["check", "--project"])
            .arg(&project)
            .arg("oci:/nonexistent"),
    );
    assert!(err.contains(".env.prod:2:1") && err.contains("KEY=VALUE"), "{err}");
    // The project is untrusted: its env file stays inside it, and a bad
    // line is located, never quoted.
    std::fs::write(project.join(".env.prod"), "A=1\n{\"secret\": \"abc=\"}\n").unwrap();
    let err = fails(
        sb.kiln()
            .args(["check", "--project"])
            .arg(&project)
            .arg("oci:/nonexistent"),
    );
    assert!(err.contains(".env.prod:2:1") && !err.contains("secret"), "{err}");
    std::fs::write(sb.join("elsewhere.env"), "TOKEN=1\n").unwrap();
    std::fs::write(project.join("kiln.toml"), "[check]\nenv_file = \"../elsewhere.env\"\n").unwrap();
    let err = fails(
        sb.kiln()
            .args(["check", "--project"])
            .arg(&project)
            .arg("oci:/nonexistent"),
    );
    assert!(
        err.contains("kiln.toml:2:12") && err.contains("inside the project"),
        "{err}"
    );
    std::os::unix::fs::symlink(sb.join("elsewhere.env"), project.join("link.env")).unwrap();
    std::fs::write(project.join("kiln.toml"), "[check]\nenv_file = \"link.env\"\n").unwrap();
    let err = fails(
        sb.kiln()
            .args(["check", "--project"])
            .arg(&project)
            .arg("oci:/nonexistent"),
    );
    assert!(
        err.contains("kiln.toml:2:12") && err.contains("out of the project"),
        "{err}"
    );
    std::fs::write(project.join("kiln.toml"), "[check]\nsettle = \"2h\"\n").unwrap();
    let err = fails(
        sb.kiln()
            .args(["check", "--project"])
            .arg(&project)
            .arg("oci:/nonexistent"),
    );
    assert!(err.contains("kiln.toml:2:10") && err.contains("at most"), "{err}");
    std::fs::write(project.join("kiln.toml"), "[check]\nhealth = \"health\"\n").unwrap();
    let err = fails(
        sb.kiln()
            .args(["check", "--project"])
            .arg(&project)
            .arg("oci:/nonexistent"),
    );
    assert!(err.contains("kiln.toml:2:10") && err.contains("HTTP path"), "{err}");
}
