//! The one read path from every source users reach for: the engine's own
//! store (`docker-daemon:`), `docker save` archives of Engines before 25
//! (no index.json), and layouts whose files are not what they claim; plus
//! the project's confinement (no host file through kiln.toml).

mod common;

use std::os::unix::fs::symlink;
use std::process::Command;

use common::*;
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

/// A static hello image loaded into the engine under `name`; returns what
/// `kiln assemble --json` said about it.
fn load_hello(sb: &Sandbox, name: &str) -> Value {
    let bin = static_hello();
    json(&ok(sb.kiln().args([
        "--json",
        "assemble",
        "--add",
        &format!("{}:/app", bin.display()),
        "--entrypoint",
        "/app",
        "--out",
        &format!("docker-daemon:{name}"),
    ])))
}

#[test]
fn the_engine_and_pre_25_docker_save_archives_read_like_any_source() {
    require_engine();
    require_tool("skopeo");
    let sb = Sandbox::new();
    let mut engine = EngineObjects::new();
    let name = engine.image(format!("kiln-test/sources-{}:1", std::process::id()));
    let built = load_hello(&sb, &name);
    let config = built["config"].as_str().unwrap();

    // The engine's store, read through its export.
    let from_engine = json(&ok(sb.kiln().args([
        "--json",
        "inspect",
        &format!("docker-daemon:{name}"),
    ])));
    assert_eq!(
        from_engine["manifest"]["config"]["digest"], config,
        "the engine keeps the config bytes kiln wrote"
    );
    let diff_ids: Vec<&Value> = built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["diff_id"])
        .collect();
    let engine_diff_ids: Vec<&Value> = from_engine["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["diff_id"])
        .collect();
    assert_eq!(diff_ids, engine_diff_ids);
    // Will it start? asked of the engine's image directly.
    // (Exit 0: no errors; the static-glibc NSS note may be printed.)
    let scan = ok(sb.kiln().args(["scan", "--json", &format!("docker-daemon:{name}")]));
    let report: Value = serde_json::from_slice(&scan.stdout).unwrap();
    assert_eq!(report["entrypoint"], serde_json::json!(["/app"]), "{report}");

    // Engine 20.10's `docker save`: manifest.json and <id>/layer.tar only.
    let archive = sb.join("legacy.tar");
    ok(Command::new("docker").args(["save", "-o"]).arg(&archive).arg(&name));
    let listing = ok(Command::new("tar").arg("-tf").arg(&archive));
    let members = String::from_utf8_lossy(&listing.stdout).into_owned();
    assert!(
        members.contains("manifest.json") && !members.contains("index.json"),
        "this engine writes the old format: {members}"
    );
    let from_archive = json(&ok(sb.kiln().args([
        "--json",
        "inspect",
        &format!("docker-archive:{}", archive.display()),
    ])));
    assert_eq!(from_archive["manifest"]["config"]["digest"], config);
    assert_eq!(
        from_archive["digest"], from_engine["digest"],
        "one derived manifest, whichever way the same export arrives"
    );

    // It pushes like any image, and what lands validates.
    let reg = &dev_env()["KILN_REGISTRY"];
    let dest = format!("{reg}/kiln-test/legacy-{}:1", std::process::id());
    let pushed = stdout(&ok(sb.kiln().args([
        "push",
        &format!("docker-archive:{}", archive.display()),
        &dest,
    ])));
    assert_eq!(pushed, from_archive["digest"].as_str().unwrap());
    let layout = sb.join("pulled");
    ok(sb
        .kiln()
        .args(["pull", &dest, "--out"])
        .arg(format!("oci:{}:x", layout.display())));
    let checked = validate(&layout);
    assert_eq!(checked[0].digest, pushed);
    let raw = ok(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &format!("docker://{dest}")]));
    assert_eq!(sha256_hex(&raw.stdout), pushed.trim_start_matches("sha256:"));

    // An image the engine does not have: a clear error.
    let err = fails(sb.kiln().args(["inspect", "docker-daemon:kiln-test/no-such-image:404"]));
    assert!(err.contains("not found in the Docker engine"), "{err}");
}

#[test]
fn layout_files_that_are_links_or_devices_are_refused_not_followed() {
    let sb = Sandbox::new();
    std::fs::write(sb.join("f"), b"content").unwrap();
    let layout = sb.join("img");
    ok(sb
        .kiln()
        .args(["assemble", "--add", "f:/f", "--out"])
        .arg(format!("oci:{}:t", layout.display())));
    // A blob replaced by a link to an endless device.
    let checked = validate(&layout);
    let layer = checked[0].manifest["layers"][0]["digest"].as_str().unwrap().to_string();
    let blob = layout.join("blobs/sha256").join(layer.trim_start_matches("sha256:"));
    std::fs::remove_file(&blob).unwrap();
    symlink("/dev/zero", &blob).unwrap();
    let started = std::time::Instant::now();
    let err = fails(
        sb.kiln()
            .args(["inspect", "--files"])
            .arg(format!("oci:{}:t", layout.display())),
    );
    assert!(err.contains("not a regular file"), "{err}");
    // index.json itself a link to /dev/zero.
    let index = layout.join("index.json");
    std::fs::remove_file(&index).unwrap();
    symlink("/dev/zero", &index).unwrap();
    let err = fails(sb.kiln().args(["inspect"]).arg(format!("oci:{}:t", layout.display())));
    assert!(err.contains("not a regular file"), "{err}");
    assert!(started.elapsed().as_secs() < 20, "refused at once, not read");
}

/// A project whose kiln.toml names `file_src` in [image] files and
/// `ca_bundle` in [build]; returns the error `kiln build` gives.
fn confinement_error(sb: &Sandbox, files_src: Option<&str>, ca_bundle: Option<&str>) -> String {
    let p = sb.join("proj");
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(p.join("src")).unwrap();
    std::fs::write(
        p.join("Cargo.toml"),
        "[package]\nname = \"confined\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(p.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(
        p.join("Cargo.lock"),
        "version = 3\n\n[[package]]\nname = \"confined\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    std::fs::write(p.join("inside.pem"), "not really a pem\n").unwrap();
    symlink("/etc/passwd", p.join("leak")).unwrap();
    symlink("/etc", p.join("dirleak")).unwrap();
    symlink("inside.pem", p.join("ok-link")).unwrap();
    let mut toml = String::from("[build]\nbuilder = \"127.0.0.1:1/none:latest\"\n");
    if let Some(ca) = ca_bundle {
        toml.push_str(&format!("ca_bundle = \"{ca}\"\n"));
    }
    if let Some(src) = files_src {
        toml.push_str(&format!(
            "[image]\nfiles = [{{ src = \"{src}\", dest = \"/srv/x\" }}]\n"
        ));
    }
    std::fs::write(p.join("kiln.toml"), toml).unwrap();
    fails(sb.kiln().args(["build", "--project"]).arg(&p))
}

#[test]
fn a_project_cannot_put_host_files_into_its_image() {
    let sb = Sandbox::new();
    for (files, ca, says) in [
        (Some("leak"), None, "resolves to /etc/passwd, outside the project"),
        (Some("dirleak"), None, "resolves to /etc, outside the project"),
        (None, Some("leak"), "resolves to /etc/passwd, outside the project"),
        (None, Some("/etc/passwd"), "must be a path inside the project"),
        (None, Some("../../etc/passwd"), "must be a path inside the project"),
    ] {
        let err = confinement_error(&sb, files, ca);
        assert!(err.contains(says), "{files:?} {ca:?}: {err}");
        assert!(err.contains("kiln.toml:"), "the error names the line: {err}");
    }
    // A link that stays inside the project is fine: the build gets as far
    // as the (unreachable) builder.
    let err = confinement_error(&sb, Some("ok-link"), Some("ok-link"));
    assert!(!err.contains("outside the project"), "{err}");
    // A bundle from outside the project comes from the user's side only.
    let p = sb.join("proj");
    let err = fails(
        sb.kiln()
            .args([
                "build",
                "--ca-bundle",
                "/etc/ssl/certs/ca-certificates.crt",
                "--project",
            ])
            .arg(&p),
    );
    assert!(
        !err.contains("ca_bundle") && !err.contains("--ca-bundle"),
        "accepted: {err}"
    );
    let err = fails(
        sb.kiln()
            .args(["build", "--ca-bundle", "/no/such.pem", "--project"])
            .arg(&p),
    );
    assert!(err.contains("invalid --ca-bundle `/no/such.pem`"), "{err}");

    // Other doors the project's kiln.toml must not open.
    let toml = "[build]\nbuilder = \"127.0.0.1:1/none:latest\"\n";
    let attempt = |extra: &str| {
        std::fs::write(p.join("kiln.toml"), format!("{toml}{extra}")).unwrap();
        fails(sb.kiln().args(["build", "--project"]).arg(&p))
    };
    // The host backend would run the project's build scripts on this machine.
    std::fs::write(
        p.join("kiln.toml"),
        toml.replacen("[build]\n", "[build]\nbackend = \"host\"\n", 1),
    )
    .unwrap();
    let err = fails(sb.kiln().args(["build", "--project"]).arg(&p));
    assert!(
        err.contains("kiln.toml cannot choose that") && err.contains("--backend host"),
        "{err}"
    );
    // Version-control data (the CI job token lives in .git/config).
    std::fs::create_dir_all(p.join(".git")).unwrap();
    std::fs::write(
        p.join(".git/config"),
        "[http]\n\textraheader = AUTHORIZATION: basic c2VjcmV0\n",
    )
    .unwrap();
    let err = attempt("[image]\nfiles = [{ src = \".\", dest = \"/srv\" }]\n");
    assert!(
        err.contains("contains") && err.contains(".git") && err.contains("kiln.toml:"),
        "{err}"
    );
    // A local base outside the project (another project's layout, kiln's cache).
    let err = attempt("[image]\nbase = \"oci:/var/tmp/elsewhere:t\"\n");
    assert!(
        err.contains("base: `/var/tmp/elsewhere` must be a path inside the project"),
        "{err}"
    );
}

#[test]
fn a_project_without_cargo_lock_gets_kilns_own_advice() {
    let sb = Sandbox::new();
    let p = sb.join("fresh");
    std::fs::create_dir_all(p.join("src")).unwrap();
    std::fs::write(
        p.join("Cargo.toml"),
        "[package]\nname = \"fresh\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(p.join("src/main.rs"), "fn main() {}\n").unwrap();
    let err = fails(sb.kiln().args(["build", "--project"]).arg(&p));
    assert!(
        err.contains("there is no Cargo.lock") && err.contains("cargo generate-lockfile"),
        "{err}"
    );
    assert!(!err.contains("scripts/"), "{err}");
}
