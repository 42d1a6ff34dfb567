//! `kiln init --from-dockerfile` on five Dockerfile shapes from real Rust
//! projects (tests/fixtures/dockerfiles): the image kiln builds from the
//! generated kiln.toml and the image `docker build` makes from the
//! Dockerfile have the same runtime config, field by field, and both run
//! and answer HTTP. `docker build` uses the legacy builder with no network:
//! its FROM images are the dev-env's mirror images under their official
//! names, and the one step that needs Debian's package servers (apt-get in
//! the debian-slim fixture) was cached by scripts/dev-env.sh.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const SHAPES: &[&str] = &["chef", "static-scratch", "distroless-cc", "debian-slim", "single-stage"];

/// Labels kiln adds to every image (from Cargo.toml), documented.
const KILN_LABELS: &[&str] = &["org.opencontainers.image.title", "org.opencontainers.image.version"];

/// The runtime config fields compared.
const FIELDS: &[&str] = &[
    "Entrypoint",
    "Cmd",
    "Env",
    "User",
    "WorkingDir",
    "ExposedPorts",
    "Labels",
    "StopSignal",
    "Healthcheck",
];

fn fixtures() -> std::path::PathBuf {
    repo().join("tests/fixtures/dockerfiles")
}

fn config_of(image: &str) -> serde_json::Value {
    let out = ok(Command::new("docker").args(["image", "inspect", "--format", "{{json .Config}}", image]));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A field as compared: absent, null, "" and empty collections are one
/// thing (Docker writes them variously), kiln's own labels are left out.
fn field(config: &serde_json::Value, name: &str) -> serde_json::Value {
    use serde_json::Value;
    let mut v = config.get(name).cloned().unwrap_or(Value::Null);
    if name == "Labels"
        && let Value::Object(m) = &mut v
    {
        for k in KILN_LABELS {
            m.remove(*k);
        }
    }
    match &v {
        Value::String(s) if s.is_empty() => Value::Null,
        Value::Array(a) if a.is_empty() => Value::Null,
        Value::Object(o) if o.is_empty() => Value::Null,
        _ => v,
    }
}

/// Runs `image`, publishes its first exposed port, and asks it for a page.
fn runs_and_answers(engine: &mut EngineObjects, image: &str, config: &serde_json::Value) {
    let port = config["ExposedPorts"]
        .as_object()
        .and_then(|m| m.keys().next().cloned())
        .unwrap_or_else(|| panic!("{image} exposes no port"));
    let name = engine.container(unique("kiln-test-df"));
    ok(Command::new("docker")
        .args(["run", "-d", "--name", &name, "-p"])
        .arg(format!("127.0.0.1::{port}"))
        .arg(image));
    let mapped = stdout(&ok(Command::new("docker").args(["port", &name, &port])));
    let host_port: u16 = mapped
        .lines()
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let reply = http_get(host_port, Duration::from_secs(20));
    let logs = Command::new("docker").args(["logs", &name]).output().unwrap();
    assert!(
        reply.as_deref().is_some_and(|r| r.contains("hello from app")),
        "{image} did not answer on {port}: {reply:?}\nlogs: {}{}",
        String::from_utf8_lossy(&logs.stdout),
        String::from_utf8_lossy(&logs.stderr)
    );
}

fn copy_dir(src: &Path, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dest.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            if e.file_name() != "target" {
                copy_dir(&e.path(), &to);
            }
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

fn one_shape(shape: &str) {
    let sb = Sandbox::new();
    let project = sb.join(shape);
    copy_dir(&fixtures().join("app"), &project);
    std::fs::copy(fixtures().join(shape).join("Dockerfile"), project.join("Dockerfile")).unwrap();
    let init = ok(sb
        .kiln()
        .current_dir(&project)
        .args(["init", "--from-dockerfile", "Dockerfile"]));
    let toml = std::fs::read_to_string(project.join("kiln.toml")).unwrap();
    let mut engine = EngineObjects::new();
    let kiln_image = engine.image(format!("kiln-test-df-kiln-{shape}:{}", unique("t")));
    let docker_image = engine.image(format!("kiln-test-df-docker-{shape}:{}", unique("t")));
    ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--quiet", "--out"])
        .arg(format!("docker-daemon:{kiln_image}")));
    let built = Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args([
            "build",
            "-q",
            "--network",
            "none",
            "-t",
            &docker_image,
            "-f",
            "Dockerfile",
            ".",
        ])
        .current_dir(&project)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "docker build of the {shape} fixture failed (scripts/dev-env.sh up tags the FROM images and caches the apt step):\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let (k, d) = (config_of(&kiln_image), config_of(&docker_image));
    let mut differ = Vec::new();
    for f in FIELDS {
        let (kv, dv) = (field(&k, f), field(&d, f));
        if kv != dv {
            differ.push(format!("  {f}: kiln {kv} vs docker build {dv}"));
        }
    }
    assert!(
        differ.is_empty(),
        "{shape}: config fields differ:\n{}\nkiln.toml:\n{toml}\nkiln init said:\n{}",
        differ.join("\n"),
        String::from_utf8_lossy(&init.stderr)
    );
    runs_and_answers(&mut engine, &kiln_image, &k);
    runs_and_answers(&mut engine, &docker_image, &d);
}

#[test]
fn chef() {
    require_engine();
    one_shape("chef");
}

#[test]
fn static_scratch() {
    require_engine();
    one_shape("static-scratch");
}

#[test]
fn distroless_cc() {
    require_engine();
    one_shape("distroless-cc");
}

#[test]
fn debian_slim() {
    require_engine();
    one_shape("debian-slim");
}

#[test]
fn single_stage() {
    require_engine();
    one_shape("single-stage");
}

#[test]
fn every_fixture_is_tested() {
    let mut found: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("Dockerfile").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = SHAPES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(found, want);
}
