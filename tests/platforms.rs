//! Multi-platform images and musl, through the real binary, engine and
//! registry: examples/hello-http as a linux/amd64 + linux/arm64/v8 index
//! cross-compiled in the one pinned builder (no QEMU to build), both
//! binaries executed (arm64 under the dev-env's qemu binfmt handler) and
//! the index digest identical across rebuilds; and a scratch-musl image
//! whose binary is static musl, runs from scratch and rebuilds the same.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn checkout(name: &str, dest: &Path) -> PathBuf {
    copy_project(&repo().join("examples").join(name), dest)
}

/// The binary at `path` in `image` (a registry reference) for `platform`,
/// copied out through the engine.
fn binary_of(engine: &mut EngineObjects, image: &str, platform: &str, path: &str, dest: &Path) {
    ok(Command::new("docker").args(["pull", "-q", "--platform", platform, image]));
    let name = engine.container(unique("kiln-test-plat"));
    ok(Command::new("docker").args(["create", "--platform", platform, "--name", &name, image]));
    ok(Command::new("docker").args(["cp", &format!("{name}:{path}")]).arg(dest));
}

fn file_says(path: &Path) -> String {
    stdout(&ok(Command::new("file").arg("-b").arg(path)))
}

#[test]
fn hello_http_as_a_two_platform_index_runs_on_both_and_rebuilds_identically() {
    require_engine();
    assert!(
        Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists(),
        "no qemu-aarch64 binfmt handler: run scripts/dev-env.sh up"
    );
    let sb = Sandbox::new();
    let project = checkout("hello-http", &sb.join("hello-http"));
    // The platforms in kiln.toml, as a project would keep them.
    let toml = std::fs::read_to_string(project.join("kiln.toml")).unwrap();
    std::fs::write(
        project.join("kiln.toml"),
        format!("[build]\nplatforms = [\"linux/arm64\", \"linux/amd64\"]\n{toml}"),
    )
    .unwrap();
    let layout = sb.join("layout");
    let out = ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--json", "--out"])
        .arg(format!("oci:{}:1", layout.display())));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let targets: Vec<&str> = r["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["target"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]);

    // An OCI index with both children, as an independent tool reads it.
    let raw = stdout(&ok(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{}:1", layout.display()))));
    let index: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            let mut s = format!("{}/{}", p["os"].as_str().unwrap(), p["architecture"].as_str().unwrap());
            if let Some(v) = p["variant"].as_str() {
                s.push_str(&format!("/{v}"));
            }
            s
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);
    assert_eq!(
        r["digest"].as_str().unwrap(),
        format!("sha256:{}", sha256_hex(raw.as_bytes()))
    );

    // Through the registry, both run: amd64 natively, arm64 under QEMU.
    let pushed = format!("{}/{}:1", dev_env()["KILN_REGISTRY"], unique("kiln-test/multi"));
    ok(sb
        .kiln()
        .args(["push", "--quiet"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(&pushed));
    let mut engine = EngineObjects::new();
    engine.image(pushed.clone());
    for (platform, arch_word) in [("linux/amd64", "x86-64"), ("linux/arm64", "ARM aarch64")] {
        let bin = sb.join(format!("hello-{}", platform.replace('/', "-")));
        binary_of(&mut engine, &pushed, platform, "/usr/local/bin/hello-http", &bin);
        let said = file_says(&bin);
        assert!(
            // glibc's crt-static is static-pie on x86_64; either way no interpreter.
            said.contains(arch_word) && (said.contains("statically linked") || said.contains("static-pie linked")),
            "{platform}: {said}"
        );
        let run = ok(Command::new("docker").args([
            "run",
            "--rm",
            "--platform",
            platform,
            &pushed,
            "/usr/local/bin/hello-http",
            "--once",
        ]));
        assert_eq!(stdout(&run).trim(), "hello from kiln", "{platform}");
    }
    // Every consumer reads the index: scan checks each platform, inspect
    // lists the children, diff pairs them by platform.
    let local_ref = format!("oci:{}:1", layout.display());
    let scans = ok(sb.kiln().args(["scan", "--json", &local_ref]));
    let scans: serde_json::Value = serde_json::from_slice(&scans.stdout).unwrap();
    let scanned: Vec<&str> = scans
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["platform"].as_str().unwrap())
        .collect();
    assert_eq!(scanned, ["linux/amd64", "linux/arm64/v8"]);
    let listed = stdout(&ok(sb.kiln().args(["inspect", &local_ref])));
    assert!(
        listed.contains("(2 platforms)") && listed.contains("linux/arm64/v8"),
        "{listed}"
    );
    // Each platform has its SBOMs, the index its provenance; the push carried them.
    for at in [&local_ref, &pushed] {
        let listed = ok(sb.kiln().args(["referrers", "--json", at]));
        let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
        let mut seen: Vec<(String, String)> = listed
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["platform"].as_str().unwrap_or("index").to_string(),
                    e["artifactType"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        seen.sort();
        let want: Vec<(String, String)> = [
            ("index", "application/vnd.in-toto+json"),
            ("linux/amd64", "application/spdx+json"),
            ("linux/amd64", "application/vnd.cyclonedx+json"),
            ("linux/arm64/v8", "application/spdx+json"),
            ("linux/arm64/v8", "application/vnd.cyclonedx+json"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(seen, want, "{at}: {listed:#}");
    }
    let arm_sbom = ok(sb.kiln().args(["sbom", "--platform", "linux/arm64", &pushed]));
    let arm_sbom: serde_json::Value = serde_json::from_slice(&arm_sbom.stdout).unwrap();
    assert_eq!(
        arm_sbom["metadata"]["component"]["properties"][0]["value"],
        "linux/arm64/v8"
    );
    let same = sb.kiln().args(["diff", &local_ref, &pushed]).output().unwrap();
    assert!(same.status.success(), "{}", String::from_utf8_lossy(&same.stdout));

    // The engine's copy is the host's platform (docker-daemon: loads one);
    // a docker-archive holds the whole index.
    let local = engine.image(format!("{}:1", unique("kiln-test/multi-local")));
    let archive = sb.join("multi.tar");
    let archived = engine.image(format!("{}:1", unique("kiln-test/multi-archive")));
    ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--quiet", "--out"])
        .arg(format!("docker-daemon:{local}"))
        .arg("--out")
        .arg(format!("docker-archive:{}:{archived}", archive.display())));
    let arch = stdout(&ok(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Architecture}}",
        &local,
    ])));
    assert_eq!(arch.trim(), "amd64");

    // The archive's index.json names the index (as `docker save` of Engine
    // >= 25 writes); `docker load` on this engine takes the host's child.
    let back = ok(sb
        .kiln()
        .args(["inspect", "--json"])
        .arg(format!("docker-archive:{}", archive.display())));
    let back: serde_json::Value = serde_json::from_slice(&back.stdout).unwrap();
    assert_eq!(back["index"]["digest"], r["digest"], "{back}");
    let loaded = stdout(&ok(Command::new("docker").arg("load").arg("-i").arg(&archive)));
    assert!(loaded.contains(&archived), "{loaded}");
    let run = ok(Command::new("docker").args(["run", "--rm", &archived, "/usr/local/bin/hello-http", "--once"]));
    assert_eq!(stdout(&run).trim(), "hello from kiln");

    // Two cold rebuilds under variation give the same index.
    let v = ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["verify", "--json", "--rebuilds", "2", "--vary", "env,path,hostname"]));
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["identical"], true, "{v}");
    for b in v["builds"].as_array().unwrap() {
        assert_eq!(b["digest"], r["digest"], "{v}");
    }
}

#[test]
fn scratch_musl_is_a_static_musl_binary_that_runs_from_scratch_and_rebuilds_identically() {
    require_engine();
    let sb = Sandbox::new();
    let project = checkout("hello-http", &sb.join("musl"));
    let toml = std::fs::read_to_string(project.join("kiln.toml")).unwrap();
    std::fs::write(
        project.join("kiln.toml"),
        toml.replace("recipe = \"scratch-static\"", "recipe = \"scratch-musl\""),
    )
    .unwrap();
    let mut engine = EngineObjects::new();
    let image = engine.image(format!("{}:1", unique("kiln-test/musl")));
    let out = ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--json", "--out"])
        .arg(format!("docker-daemon:{image}")));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["platforms"][0]["target"], "x86_64-unknown-linux-musl");
    assert_eq!(r["scan"]["findings"].as_array().map(|f| f.len()), Some(0), "{r}");
    let bin = sb.join("hello-musl");
    let name = engine.container(unique("kiln-test-musl"));
    ok(Command::new("docker").args(["create", "--name", &name, &image]));
    ok(Command::new("docker")
        .args(["cp", &format!("{name}:/usr/local/bin/hello-http")])
        .arg(&bin));
    let said = file_says(&bin);
    assert!(
        said.contains("statically linked") && !said.contains("interpreter"),
        "{said}"
    );
    // musl's own marker: glibc's static binaries carry GNU version strings, musl's do not.
    let bytes = std::fs::read(&bin).unwrap();
    assert!(
        !bytes.windows(6).any(|w| w == b"GLIBC_"),
        "a glibc symbol version in a musl binary"
    );
    let run = ok(Command::new("docker").args(["run", "--rm", &image, "--once"]));
    assert_eq!(stdout(&run).trim(), "hello from kiln");
    let v = ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["verify", "--json", "--rebuilds", "2", "--vary", "path,env"]));
    let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(v["identical"], true, "{v}");
    assert_eq!(v["builds"][0]["digest"], r["digest"], "{v}");
}

#[test]
fn an_aarch64_dynamic_binary_is_clean_on_the_arm64_base_and_a_wrong_machine_on_amd64() {
    require_engine();
    let sb = Sandbox::new();
    let project = checkout("hello-http", &sb.join("dyn"));
    let multi = &dev_env()["KILN_TEST_CC_MULTI"];
    let toml = std::fs::read_to_string(project.join("kiln.toml")).unwrap();
    std::fs::write(
        project.join("kiln.toml"),
        toml.replace(
            "recipe = \"scratch-static\"",
            &format!("recipe = \"distroless-cc\"\nbase = \"{multi}\""),
        ),
    )
    .unwrap();
    // linux/arm64 from the base's index: its arm64 child, pinned per platform.
    let mut engine = EngineObjects::new();
    let image = engine.image(format!("{}:1", unique("kiln-test/dyn-arm64")));
    let layout = sb.join("layout");
    let out = ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--json", "--platform", "linux/arm64", "--out"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg("--out")
        .arg(format!("docker-daemon:{image}")));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["platforms"][0]["platform"], "linux/arm64/v8");
    assert_eq!(
        r["scan"]["findings"].as_array().map(|f| f.len()),
        Some(0),
        "clean on arm64: {r}"
    );
    let lock = std::fs::read_to_string(project.join("kiln.lock")).unwrap();
    assert!(lock.contains("platform = \"linux/arm64/v8\""), "{lock}");
    let run = ok(Command::new("docker").args(["run", "--rm", "--platform", "linux/arm64", &image, "--once"]));
    assert_eq!(stdout(&run).trim(), "hello from kiln");

    // The same aarch64 binary on the amd64 base: a wrong machine, reported.
    let root = sb.join("rootfs");
    ok(Command::new("umoci")
        .args(["raw", "unpack", "--rootless", "--image"])
        .arg(format!("{}:1", layout.display()))
        .arg(&root));
    let bin = root.join("usr/local/bin/hello-http");
    let said = file_says(&bin);
    assert!(
        said.contains("ARM aarch64") && said.contains("ld-linux-aarch64.so.1"),
        "{said}"
    );
    let wrong = sb.join("wrong");
    ok(sb
        .kiln()
        .args(["assemble", "--from", &dev_env()["KILN_TEST_CC_BASE"], "--add"])
        .arg(format!("{}:/usr/local/bin/app", bin.display()))
        .args(["--entrypoint", "/usr/local/bin/app", "--out"])
        .arg(format!("oci:{}:1", wrong.display())));
    let scan = sb
        .kiln()
        .args(["scan", "--json", &format!("oci:{}:1", wrong.display())])
        .output()
        .unwrap();
    assert_eq!(scan.status.code(), Some(1), "{}", String::from_utf8_lossy(&scan.stdout));
    let report = String::from_utf8_lossy(&scan.stdout);
    assert!(report.contains("the image is for amd64"), "{report}");
}

/// Runs `image` for `platform` as a server and asks it for a page.
fn serves(engine: &mut EngineObjects, image: &str, platform: &str, expect: &str) {
    let name = engine.container(unique("kiln-test-serve"));
    ok(Command::new("docker").args([
        "run",
        "-d",
        "--platform",
        platform,
        "--name",
        &name,
        // examples/with-deps refuses to start without it; hello-http ignores it.
        "-e",
        "DATABASE_URL=postgres://app@db/app",
        "-p",
        "127.0.0.1::8080",
        image,
    ]));
    let mapped = stdout(&ok(Command::new("docker").args(["port", &name, "8080/tcp"])));
    let port: u16 = mapped
        .lines()
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let reply = http_get(port, std::time::Duration::from_secs(60));
    assert!(
        reply.as_deref().is_some_and(|r| r.contains(expect)),
        "{image} ({platform}) answered {reply:?}"
    );
}

#[test]
fn both_examples_as_two_platform_indexes_answer_http_on_both_platforms() {
    require_engine();
    let sb = Sandbox::new();
    let mut engine = EngineObjects::new();
    for (example, expect) in [
        ("hello-http", "hello from kiln"),
        ("with-deps", "\"app\":\"with-deps\""),
    ] {
        let project = checkout(example, &sb.join(example));
        let pushed = format!(
            "{}/{}:1",
            dev_env()["KILN_REGISTRY"],
            unique(&format!("kiln-test/{example}-multi"))
        );
        engine.image(pushed.clone());
        ok(sb
            .kiln()
            .current_dir(&project)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .args([
                "build",
                "--quiet",
                "--platform",
                "linux/amd64",
                "--platform",
                "linux/arm64",
                "--push",
                &pushed,
            ]));
        for (platform, arch_word) in [("linux/amd64", "x86-64"), ("linux/arm64", "ARM aarch64")] {
            ok(Command::new("docker").args(["pull", "-q", "--platform", platform, &pushed]));
            serves(&mut engine, &pushed, platform, expect);
            let bin = sb.join(format!("{example}-{}", platform.replace('/', "-")));
            binary_of(
                &mut engine,
                &pushed,
                platform,
                &format!("/usr/local/bin/{example}"),
                &bin,
            );
            let said = file_says(&bin);
            assert!(said.contains(arch_word), "{example} {platform}: {said}");
        }
        if example == "with-deps" {
            // The index with dependencies rebuilds identically too (hello-http's
            // is checked above): two cold rebuilds against the pushed digest.
            let pushed_digest = ok(sb.kiln().args(["inspect", "--json", &pushed]));
            let pushed_digest: serde_json::Value = serde_json::from_slice(&pushed_digest.stdout).unwrap();
            let v = ok(sb
                .kiln()
                .current_dir(&project)
                .env("SOURCE_DATE_EPOCH", "1700000000")
                .args([
                    "verify",
                    "--json",
                    "--rebuilds",
                    "2",
                    "--platform",
                    "linux/amd64",
                    "--platform",
                    "linux/arm64",
                ]));
            let v: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
            assert_eq!(v["identical"], true, "{v}");
            for b in v["builds"].as_array().unwrap() {
                assert_eq!(b["digest"], pushed_digest["index"]["digest"], "{v}");
            }
        }
    }
}
