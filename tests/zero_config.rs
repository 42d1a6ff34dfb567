//! A new user's first build: `cargo new`, `cargo generate-lockfile`,
//! `kiln build` with no kiln.toml and no flags. The builder is the official
//! Rust image for the project's toolchain, reached through the dev-env's
//! registries.conf mirror (as an air-gapped user's would be), pinned in
//! kiln.lock under its canonical name; the image runs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// `cargo new --bin NAME` and a lock file, in the sandbox.
fn new_project(sb: &Sandbox, name: &str) -> PathBuf {
    ok(Command::new("cargo")
        .current_dir(sb.path())
        .args(["new", "--quiet", "--vcs", "none", "--bin", name]));
    let dir = sb.join(name);
    ok(Command::new("cargo")
        .current_dir(&dir)
        .args(["generate-lockfile", "--offline"]));
    dir
}

fn mirror_has(reference: &str) -> bool {
    // reference: docker.io/library/rust:TAG → mirror/docker.io/library/rust/manifests/TAG
    let (repo, tag) = reference.rsplit_once(':').unwrap();
    let url = format!("http://{}/v2/mirror/{repo}/manifests/{tag}", dev_env()["KILN_REGISTRY"]);
    Command::new("curl")
        .args(["-fsS", "-o", "/dev/null", "-H"])
        .arg("Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
        .arg(&url)
        .status()
        .is_ok_and(|s| s.success())
}

fn lock_text(project: &Path) -> String {
    std::fs::read_to_string(project.join("kiln.lock")).expect("kiln.lock written by the first build")
}

#[test]
fn a_new_cargo_project_builds_with_no_configuration_through_the_mirror() {
    require_engine();
    assert!(
        registries_conf().is_some(),
        "the dev-env's registries.conf is missing; run scripts/dev-env.sh up"
    );
    let default = "docker.io/library/rust:1.96-slim-bookworm";
    assert!(mirror_has(default), "the dev-env mirror lacks {default}");
    let sb = Sandbox::new();
    let project = new_project(&sb, "hello-zero");
    assert!(!project.join("kiln.toml").exists());
    let mut engine = EngineObjects::new();
    let image = engine.image(format!("kiln-test-zero:{}", unique("t")));
    let out = ok(sb
        .kiln()
        .current_dir(&project)
        .args(["--debug-registry", "build", "--json", "--out"])
        .arg(format!("docker-daemon:{image}")));
    let err = String::from_utf8_lossy(&out.stderr);
    // The builder's official name was resolved at the mirror, never at Docker Hub.
    assert!(
        err.contains("/v2/mirror/docker.io/library/rust/manifests/1.96-slim-bookworm"),
        "no mirror request in: {err}"
    );
    assert!(!err.contains("registry-1.docker.io"), "{err}");
    let lock = lock_text(&project);
    assert!(lock.contains(&format!("reference = \"{default}\"")), "{lock}");
    assert!(lock.contains("role = \"builder\""), "{lock}");
    assert!(lock.contains("digest = \"sha256:"), "{lock}");
    assert!(!lock.contains("127.0.0.1"), "the lock keeps the canonical name: {lock}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["digest"].as_str().unwrap().starts_with("sha256:"), "{report}");
    let run = ok(Command::new("docker").args(["run", "--rm", &image]));
    assert_eq!(stdout(&run).trim(), "Hello, world!");

    // A second build reads the lock: no resolution, same digest.
    let again = ok(sb.kiln().current_dir(&project).args(["build", "--json", "--locked"]));
    let again: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(again["digest"], report["digest"]);

    // `user = ""` keeps the base's user: on scratch none (root), as a
    // Dockerfile without USER has it.
    std::fs::write(project.join("kiln.toml"), "[image]\nuser = \"\"\n").unwrap();
    let root_image = engine.image(format!("kiln-test-zero:{}", unique("root")));
    ok(sb
        .kiln()
        .current_dir(&project)
        .args(["build", "--quiet", "--out"])
        .arg(format!("docker-daemon:{root_image}")));
    let user = stdout(&ok(Command::new("docker").args([
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}",
        &root_image,
    ])));
    assert_eq!(user.trim(), "", "user = \"\" on scratch");
    let run = ok(Command::new("docker").args(["run", "--rm", &root_image]));
    assert_eq!(stdout(&run).trim(), "Hello, world!");
}

#[test]
fn a_toolchain_the_mirror_lacks_is_named_with_the_mirror_asked() {
    assert!(registries_conf().is_some(), "run scripts/dev-env.sh up");
    let sb = Sandbox::new();
    let project = new_project(&sb, "old-toolchain");
    std::fs::write(
        project.join("rust-toolchain.toml"),
        "[toolchain]\nchannel = \"1.80.1\"\n",
    )
    .unwrap();
    assert!(!mirror_has("docker.io/library/rust:1.80.1-slim-bookworm"));
    let err = fails(sb.kiln().current_dir(&project).arg("build"));
    assert!(err.contains("docker.io/library/rust:1.80.1-slim-bookworm"), "{err}");
    assert!(
        err.contains(&format!(
            "mirror {}/mirror/docker.io/library/rust:1.80.1-slim-bookworm",
            dev_env()["KILN_REGISTRY"]
        )),
        "the error names the mirror asked: {err}"
    );
    assert!(err.contains("registries.conf"), "{err}");
    // kiln chose this builder: it says why and how to choose another.
    assert!(err.contains("rust-toolchain.toml (channel 1.80.1)"), "{err}");
    assert!(err.contains("[build] builder"), "{err}");
    assert!(!project.join("kiln.lock").exists(), "a failed pin writes no lock");
}
