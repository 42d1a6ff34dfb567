//! `kiln build` through the real binary, the real engine and the dev-env
//! builder image: examples that run and answer HTTP, identical digests
//! across checkouts, environments and cache states, no leaked containers,
//! precise config errors, the lock, and the input-addressed cache.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Copies examples/NAME (without target/ and kiln.lock) to `dest`.
fn checkout(name: &str, dest: &Path) -> PathBuf {
    copy_project(&repo().join("examples").join(name), dest)
}

/// `kiln build --json` of `project` in the sandbox (its own input cache:
/// a hit must come from this test's builds).
fn build(sb: &Sandbox, project: &Path, extra: &[&str]) -> serde_json::Value {
    let out = ok(sb
        .kiln()
        .current_dir(project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--json", "--builder", &builder()])
        .args(extra));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// GET / on a loopback port, waiting up to 20 s for a 200.
fn http_get_200(port: u16) -> String {
    common::http_get(port, Duration::from_secs(20)).unwrap_or_else(|| panic!("no HTTP answer on port {port}"))
}

fn our_containers(pid: u32) -> String {
    stdout(&ok(Command::new("docker").args([
        "ps",
        "-a",
        "--filter",
        &format!("name=kiln-.*-{pid}-"),
        "--format",
        "{{.Names}}",
    ])))
}

fn run_and_get(image: &str, expect: &str) {
    let mut engine = EngineObjects::new();
    let name = engine.container(unique("kiln-test-run"));
    ok(Command::new("docker").args([
        "run",
        "-d",
        "--rm",
        "--name",
        &name,
        "-e",
        "DATABASE_URL=postgres://app@db/app",
        "-p",
        "127.0.0.1::8080",
        image,
    ]));
    let port_line = stdout(&ok(Command::new("docker").args(["port", &name, "8080/tcp"])));
    let port: u16 = port_line
        .lines()
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let reply = http_get_200(port);
    assert!(reply.contains(expect), "{image} answered: {reply}");
}

#[test]
fn both_examples_build_into_images_that_answer_http() {
    require_engine();
    let sb = Sandbox::new();
    let mut engine = EngineObjects::new();
    for (example, expect) in [
        ("hello-http", "hello from kiln"),
        ("with-deps", "\"app\":\"with-deps\""),
    ] {
        let project = checkout(example, &sb.join(example));
        let image = engine.image(format!("{}:1", unique(&format!("kiln-test/{example}"))));
        let layout = sb.join(format!("{example}-layout"));
        let r = build(
            &sb,
            &project,
            &[
                "--out",
                &format!("docker-daemon:{image}"),
                "--out",
                &format!("oci:{}", layout.display()),
            ],
        );
        assert_eq!(r["toolchain_pinned"], true);
        assert_eq!(r["lock"], "created");
        assert!(project.join("kiln.lock").exists());
        let checked = validate(&layout);
        assert_eq!(checked[0].digest, r["digest"].as_str().unwrap());
        let cfg = &checked[0].config["config"];
        assert_eq!(cfg["User"], "65532:65532", "non-root");
        assert_eq!(cfg["Entrypoint"][0], format!("/usr/local/bin/{example}"));
        let files = tar_entries(&checked[0].layer_tars[0]);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        for p in ["etc/passwd", "etc/group", "etc/ssl/certs/ca-certificates.crt", "tmp/"] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        assert_eq!(files.iter().find(|f| f.path == "tmp/").unwrap().mode, 0o1777);
        run_and_get(&image, expect);
    }
}

#[test]
fn checkouts_environments_and_cache_states_give_the_same_digest() {
    require_engine();
    let a = Sandbox::new();
    let b = Sandbox::new();
    let pa = checkout("with-deps", &a.join("src/with-deps"));
    let pb = checkout("with-deps", &b.join("elsewhere/deeper/checkout"));
    // Cold: fresh, throw-away cache volumes; odd environment, umask 077.
    let cold = ok(a
        .kiln_with_umask("077")
        .current_dir(&pa)
        .env("TZ", "Pacific/Chatham")
        .env("LANG", "fr_FR.UTF-8")
        .env("KILN_UNRELATED", "1")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--json", "--fresh", "--builder", &builder()]));
    let cold: serde_json::Value = serde_json::from_slice(&cold.stdout).unwrap();
    // Warm: the shared cache volumes, another checkout path, another env.
    // --no-cache: both are real builds, not answers from the input cache.
    let warm1 = build(&b, &pb, &["--no-cache"]);
    let warm2 = build(&b, &pb, &["--no-cache"]);
    assert_eq!(cold["cache"], "miss");
    assert_eq!(warm1["cache"], "miss");
    assert_eq!(
        warm2["cache"], "miss",
        "the second warm build was built, not answered from the cache"
    );
    assert_eq!(
        cold["digest"], warm1["digest"],
        "cold build in one checkout vs warm build in another"
    );
    assert_eq!(warm1["digest"], warm2["digest"], "warm rebuilds");
}

#[test]
fn the_cache_answers_unchanged_inputs_and_misses_changed_ones() {
    require_engine();
    let sb = Sandbox::new();
    let p = checkout("hello-http", &sb.join("hello"));
    let first = build(&sb, &p, &[]);
    assert_eq!(first["cache"], "miss");
    let t = Instant::now();
    let second = build(&sb, &p, &[]);
    assert_eq!(second["cache"], "hit");
    assert_eq!(second["digest"], first["digest"]);
    assert!(t.elapsed() < Duration::from_secs(5), "a cache hit skips the engine");
    // A one-line source change is a miss with another digest, and the
    // (warm) target cache does not serve the stale binary.
    let main = p.join("src/main.rs");
    let text = fs::read_to_string(&main)
        .unwrap()
        .replace("hello from kiln", "hello again from kiln");
    fs::write(&main, text).unwrap();
    let third = build(&sb, &p, &[]);
    assert_eq!(third["cache"], "miss");
    assert_ne!(third["digest"], first["digest"]);
    let mut engine = EngineObjects::new();
    let image = engine.image(format!("{}:1", unique("kiln-test/changed")));
    let fourth = build(&sb, &p, &["--out", &format!("docker-daemon:{image}")]);
    assert_eq!(fourth["digest"], third["digest"]);
    let run = ok(Command::new("docker").args(["run", "--rm", &image, "--once"]));
    assert_eq!(stdout(&run), "hello again from kiln");
}

#[test]
fn no_container_is_left_after_success_compile_error_or_sigint() {
    require_engine();
    let sb = Sandbox::new();
    let mut engine = EngineObjects::new();
    // Success.
    let p = checkout("hello-http", &sb.join("ok"));
    let child = sb
        .kiln()
        .current_dir(&p)
        .args(["build", "--quiet", "--no-cache", "--builder", &builder()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    engine.containers_named(format!("kiln-.*-{pid}-"));
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(our_containers(pid), "", "containers left after success");

    // Compile error: the compiler's own message reaches the user.
    let bad = checkout("hello-http", &sb.join("bad"));
    fs::write(
        bad.join("src/main.rs"),
        "fn main() { let x: u32 = \"not a number\"; }\n",
    )
    .unwrap();
    let child = sb
        .kiln()
        .current_dir(&bad)
        .args(["build", "--builder", &builder()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    engine.containers_named(format!("kiln-.*-{pid}-"));
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("error[E0308]: mismatched types"),
        "compiler output missing: {stderr}"
    );
    assert!(stderr.contains("src/main.rs"), "{stderr}");
    assert_eq!(our_containers(pid), "", "containers left after a compile error");

    // SIGINT mid-build.
    let slow = checkout("with-deps", &sb.join("slow"));
    let mut child = sb
        .kiln()
        .current_dir(&slow)
        .args(["build", "--quiet", "--fresh", "--builder", &builder()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    engine.containers_named(format!("kiln-.*-{pid}-"));
    engine.volumes_named(format!("-fresh-{pid}-"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while our_containers(pid).is_empty() {
        assert!(Instant::now() < deadline, "no build container appeared");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    ok(Command::new("kill").args(["-INT", &pid.to_string()]));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "exit code after Ctrl-C");
    assert_eq!(our_containers(pid), "", "containers left after SIGINT");
    let vols = stdout(&ok(Command::new("docker").args([
        "volume",
        "ls",
        "--format",
        "{{.Name}}",
    ])));
    assert!(
        !vols.contains(&format!("-fresh-{pid}-")),
        "fresh volumes left after SIGINT: {vols}"
    );
}

#[test]
fn bad_configuration_is_reported_with_file_line_and_a_fix() {
    let sb = Sandbox::new();
    let p = checkout("hello-http", &sb.join("cfg"));
    let cases: &[(&str, &str, &str)] = &[
        ("[build]\nbuidler = \"x\"\n", "kiln.toml:2:1", "unknown field `buidler`"),
        ("[image]\nports = [70000]\n", "kiln.toml:2:10", "PORT in 1..65535"),
        ("[image]\nuser = \"root user\"\n", "kiln.toml:2:8", "UID[:GID]"),
        (
            "[image]\nrecipe = \"alpine\"\n",
            "kiln.toml:2:10",
            "built-in recipes: scratch-static",
        ),
        ("[image]\nworkdir = \"app\"\n", "kiln.toml:2:11", "must be absolute"),
        ("[build]\nbin = \"nope\"\n", "kiln.toml:2:7", "binaries: hello-http"),
        (
            "[build]\nbackend = \"podman\"\n",
            "kiln.toml:2:11",
            "\"docker\" or \"host\"",
        ),
        (
            "[image]\nfiles = [{ src = \"missing\", dest = \"/x\" }]\n",
            "kiln.toml:2:10",
            "does not exist",
        ),
        (
            "[image]\nfiles = [{ src = \"src\", dest = \"x\" }]\n",
            "kiln.toml:2:10",
            "absolute",
        ),
        (
            "[image]\nfiles = [{ src = \"src\", dest = \"/x\", mode = \"rw\" }]\n",
            "kiln.toml:2:10",
            "octal",
        ),
        (
            "[image]\nbase = \"reg.example/Upper/Case\"\n",
            "kiln.toml:2:8",
            "lowercase",
        ),
        ("[image]\nstop_signal = \"TERM\"\n", "kiln.toml:2:15", "SIGTERM"),
        ("[image\n", "kiln.toml:1:7", "unclosed table"),
        ("[build]\ntarget = \"x86_64\"\n", "kiln.toml:2:10", "target triple"),
        ("[image]\nbinary = \"app\"\n", "kiln.toml:2:10", "absolute file path"),
        (
            "[image]\nhealthcheck = { cmd = \"\" }\n",
            "kiln.toml:2:15",
            "give the command",
        ),
    ];
    for (text, at, want) in cases {
        fs::write(p.join("kiln.toml"), text).unwrap();
        let err = fails(sb.kiln().current_dir(&p).args(["build"]));
        assert!(
            err.contains(at) && err.contains(want),
            "for {text:?} expected `{at}` and `{want}` in: {err}"
        );
    }
    assert!(!p.join("target").exists(), "failed configs must not write outputs");
    assert!(!p.join("kiln.lock").exists());
}

#[test]
fn distroless_cc_recipe_pulls_its_base_by_digest_and_runs() {
    require_engine();
    let sb = Sandbox::new();
    let p = checkout("with-deps", &sb.join("cc"));
    let base = format!("{}/kiln-test/cc-base:latest", dev_env()["KILN_REGISTRY"]);
    fs::write(
        p.join("kiln.toml"),
        format!(
            "[build]\nbuilder = \"{}\"\n\n[image]\nrecipe = \"distroless-cc\"\nbase = \"{base}\"\nports = [8080]\n",
            builder()
        ),
    )
    .unwrap();
    let mut engine = EngineObjects::new();
    let image = engine.image(format!("{}:1", unique("kiln-test/cc")));
    let layout = sb.join("cc-layout");
    let r = build(
        &sb,
        &p,
        &[
            "--out",
            &format!("docker-daemon:{image}"),
            "--out",
            &format!("oci:{}", layout.display()),
        ],
    );
    let lock = fs::read_to_string(p.join("kiln.lock")).unwrap();
    assert!(lock.contains("role = \"base\"") && lock.contains(&base), "{lock}");
    let checked = validate(&layout);
    assert_eq!(checked[0].digest, r["digest"].as_str().unwrap());
    assert_eq!(
        checked[0].manifest["layers"].as_array().unwrap().len(),
        2,
        "base layer + app layer"
    );
    // The base layer is the registry's, byte for byte.
    let pulled = sb.join("base-layout");
    ok(sb
        .kiln()
        .args(["pull", &base, "--out"])
        .arg(format!("oci:{}", pulled.display())));
    assert_eq!(
        validate(&pulled)[0].manifest["layers"][0],
        checked[0].manifest["layers"][0]
    );
    // Dynamically linked against the base's glibc, and it runs.
    let app = tar_entries(&checked[0].layer_tars[1]);
    assert!(app.iter().any(|e| e.path == "usr/local/bin/with-deps"));
    assert!(
        !app.iter().any(|e| e.path == "etc/passwd"),
        "distroless-cc adds no passwd: the base has one"
    );
    run_and_get(&image, "hello from kiln");
}

#[test]
fn locked_refuses_to_create_or_change_the_lock() {
    require_engine();
    let sb = Sandbox::new();
    let p = checkout("hello-http", &sb.join("lk"));
    let err = fails(
        sb.kiln()
            .current_dir(&p)
            .args(["build", "--locked", "--builder", &builder()]),
    );
    assert!(err.contains("not pinned") && err.contains("kiln lock"), "{err}");
    assert!(!p.join("kiln.lock").exists());
    let out = ok(sb.kiln().current_dir(&p).args(["lock"]));
    assert!(stdout(&out).contains("sha256:"), "{}", stdout(&out));
    let lock = fs::read_to_string(p.join("kiln.lock")).unwrap();
    assert!(
        lock.contains("role = \"builder\"") && lock.contains(&dev_env()["KILN_TEST_BUILDER_DIGEST"]),
        "{lock}"
    );
    // With the lock in place, --locked builds.
    ok(sb
        .kiln()
        .current_dir(&p)
        .env("SOURCE_DATE_EPOCH", "1")
        .args(["build", "--quiet", "--locked"]));
}

#[test]
fn the_fetch_phase_runs_no_project_code_and_the_cargo_home_is_read_only() {
    require_engine();
    let sb = Sandbox::new();
    let mut engine = EngineObjects::new();
    let p = checkout("with-deps", &sb.join("wrapped"));
    // A wrapper the project names twice (kiln.toml env and .cargo/config.toml).
    // It fails the build if it runs where /kiln/target is absent (the fetch
    // phase) or if it can write the shared cargo home.
    let wrap = p.join("wrap.sh");
    fs::write(
        &wrap,
        "#!/bin/sh\n\
         if [ ! -d /kiln/target ]; then echo 'PROJECT CODE RAN IN THE FETCH PHASE' >&2; exit 1; fi\n\
         if touch /kiln/cargo/poisoned 2>/dev/null; then echo 'THE CARGO HOME IS WRITABLE' >&2; exit 1; fi\n\
         exec \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&wrap, fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(p.join(".cargo")).unwrap();
    fs::write(
        p.join(".cargo/config.toml"),
        "[build]\nrustc-wrapper = \"/kiln/src/wrap.sh\"\n",
    )
    .unwrap();
    let toml = fs::read_to_string(p.join("kiln.toml")).unwrap();
    assert!(
        !toml.lines().any(|l| l.trim() == "[build]"),
        "the example has no [build]: {toml}"
    );
    fs::write(
        p.join("kiln.toml"),
        format!("[build]\nenv = {{ RUSTC_WRAPPER = \"/kiln/src/wrap.sh\" }}\n{toml}"),
    )
    .unwrap();
    // Fresh volumes: the fetch phase runs (no marker can skip it).
    let mut cmd = sb.kiln();
    cmd.current_dir(&p).env("SOURCE_DATE_EPOCH", "1700000000").args([
        "build",
        "--json",
        "--fresh",
        "--builder",
        &builder(),
    ]);
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    engine.containers_named(format!("kiln-.*-{}-", child.id()));
    engine.volumes_named(format!("-fresh-{}-", child.id()));
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", explain(&cmd, &out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["cache"], "miss");
    // The wrapper really runs in the build phase (so the checks above ran):
    // one that always fails fails the build, with its own words.
    fs::write(&wrap, "#!/bin/sh\necho 'THE WRAPPER RAN' >&2\nexit 1\n").unwrap();
    let mut cmd = sb.kiln();
    cmd.current_dir(&p)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--no-cache", "--builder", &builder()]);
    let err = fails(&mut cmd);
    assert!(err.contains("THE WRAPPER RAN"), "{err}");
}

#[test]
fn a_healthcheck_is_written_the_way_docker_writes_it_and_the_engine_runs_it() {
    require_engine();
    let sb = Sandbox::new();
    let mut engine = EngineObjects::new();
    let p = checkout("hello-http", &sb.join("hc"));
    // A probe binary in the image (scratch has no shell or curl).
    let probe = static_binary(&repo().join("tests/fixtures/nss-lookup"), "nss-lookup");
    fs::copy(&probe, p.join("probe")).unwrap();
    let toml = fs::read_to_string(p.join("kiln.toml")).unwrap();
    fs::write(
        p.join("kiln.toml"),
        format!(
            "{toml}\nfiles = [{{ src = \"probe\", dest = \"/usr/local/bin/probe\", mode = \"0755\" }}]\n\
             healthcheck = {{ cmd = [\"/usr/local/bin/probe\", \"localhost\"], interval = \"1s\", timeout = \"3s\", start_period = \"1s\", retries = 2 }}\n"
        ),
    )
    .unwrap();
    let name = engine.image(format!("kiln-test/healthcheck-{}:1", std::process::id()));
    let r = build(&sb, &p, &["--out", &format!("docker-daemon:{name}")]);
    assert_eq!(r["cache"], "miss");
    let inspected = stdout(&ok(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{json .Config.Healthcheck}}",
        &name,
    ])));
    let hc: serde_json::Value = serde_json::from_str(&inspected).unwrap();
    assert_eq!(
        hc,
        serde_json::json!({"Test": ["CMD", "/usr/local/bin/probe", "localhost"], "Interval": 1_000_000_000u64,
                           "Timeout": 3_000_000_000u64, "StartPeriod": 1_000_000_000u64, "Retries": 2}),
        "docker inspect shows it as Docker writes it"
    );
    let c = engine.container(unique("kiln-test-hc"));
    ok(Command::new("docker").args(["run", "-d", "--name", &c, &name]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = stdout(&ok(Command::new("docker").args([
            "inspect",
            "--format",
            "{{.State.Health.Status}}",
            &c,
        ])));
        if status == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the engine never reported healthy (last: {status})"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // A bad duration is a config error at its line.
    fs::write(
        p.join("kiln.toml"),
        format!("{toml}\nhealthcheck = {{ cmd = [\"/x\"], interval = \"soon\" }}\n"),
    )
    .unwrap();
    let err = fails(sb.kiln().current_dir(&p).args(["build", "--builder", &builder()]));
    assert!(
        err.contains("kiln.toml:") && err.contains("[image] healthcheck `soon`"),
        "{err}"
    );
}

#[test]
fn two_builds_of_one_project_at_once_both_succeed_with_one_digest() {
    require_engine();
    let sb = Sandbox::new();
    let mut engine = EngineObjects::new();
    // One checkout under a package name of its own (so its target volume
    // starts empty: both compile everything, at the same time, into it),
    // two kiln processes with their own input caches (both miss), sharing
    // the engine's cache volumes. Cargo's own locks (the package cache in
    // the cargo home, the build directory in the target volume) order them.
    let p = checkout("with-deps", &sb.join("p"));
    let name = unique("with-deps-concurrent");
    for f in ["Cargo.toml", "Cargo.lock"] {
        let t = fs::read_to_string(p.join(f)).unwrap();
        fs::write(
            p.join(f),
            t.replace("name = \"with-deps\"", &format!("name = \"{name}\"")),
        )
        .unwrap();
    }
    let spawn = |n: u32| {
        sb.kiln()
            .current_dir(&p)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("KILN_CACHE_DIR", sb.join(format!("cache-{n}")))
            .args(["build", "--json", "--builder", &builder()])
            .arg("--out")
            .arg(format!("oci:{}", sb.join(format!("out-{n}")).display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(1), spawn(2));
    let mut digests = Vec::new();
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["cache"], "miss");
        // Where the time went, phase by phase.
        for phase in ["compile.source", "compile.fetch", "compile.build", "compile.copy-out"] {
            assert!(r["timings"][phase].as_f64().is_some(), "no {phase} in {}", r["timings"]);
        }
        // The target volume this package got (plan.rs names it), removed after.
        let key = format!("{}|{name}|release", r["builder"]["digest"].as_str().unwrap());
        engine.volume(format!("kiln-target-{}", &sha256_hex(key.as_bytes())[..16]));
        digests.push(r["digest"].as_str().unwrap().to_string());
    }
    assert_eq!(digests[0], digests[1]);
}
