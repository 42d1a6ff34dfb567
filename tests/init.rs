//! `kiln init`, run as the real binary on copies of the fixtures: the
//! golden kiln.toml of each Dockerfile shape, the notes, refusing to
//! overwrite, Dockerfile errors with PATH:LINE, and kiln.toml from
//! Cargo.toml alone (an openssl-sys project, ports found in the code). No
//! engine, no network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SHAPES: [&str; 5] = ["chef", "static-scratch", "distroless-cc", "debian-slim", "single-stage"];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dockerfiles")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A copy of the fixture app with `shape`'s Dockerfile beside Cargo.toml.
fn app_with(shape: &str) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let app = t.path().join("app");
    copy_dir(&fixtures().join("app"), &app);
    std::fs::copy(fixtures().join(shape).join("Dockerfile"), app.join("Dockerfile")).unwrap();
    (t, app)
}

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .env_remove("KILN_CACHE_DIR")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn init_ok(dir: &Path, extra: &[&str]) -> (String, String) {
    let d = dir.to_str().unwrap();
    let mut args = vec!["init", "--path", d];
    args.extend_from_slice(extra);
    let out = kiln(&args);
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "kiln {args:?} failed:\nstdout: {o}\nstderr: {e}");
    (o, e)
}

/// The generated file parses as kiln's own config.
fn parses(toml_text: &str) -> kiln::config::KilnToml {
    kiln::config::Source {
        file: Path::new("kiln.toml"),
        text: toml_text,
    }
    .parse()
    .unwrap_or_else(|e| panic!("{e}\n{toml_text}"))
}

#[test]
fn each_dockerfile_shape_gives_its_golden_kiln_toml() {
    for shape in SHAPES {
        let (_t, app) = app_with(shape);
        let df = app.join("Dockerfile");
        let (stdout, _) = init_ok(&app, &["--from-dockerfile", df.to_str().unwrap()]);
        let written = app.join("kiln.toml");
        assert_eq!(
            stdout.trim(),
            written.display().to_string(),
            "{shape}: stdout is the path"
        );
        let got = std::fs::read_to_string(&written).unwrap();
        let golden = fixtures().join(shape).join("expected-kiln.toml");
        if std::env::var_os("KILN_BLESS").is_some() {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden).unwrap();
        assert_eq!(got, want, "{shape}: kiln.toml differs from {}", golden.display());
        parses(&got);
    }
}

#[test]
fn notes_say_what_was_not_carried() {
    let notes = |shape: &str| {
        let (_t, app) = app_with(shape);
        let df = app.join("Dockerfile");
        init_ok(&app, &["--from-dockerfile", df.to_str().unwrap()]).1
    };
    let chef = notes("chef");
    assert!(
        chef.contains("Dockerfile:14: RUN cargo chef cook")
            && chef.contains("kiln's own fetch/build cache replaces it"),
        "{chef}"
    );
    assert!(chef.contains("stage `planner` is not carried"), "{chef}");
    let slim = notes("debian-slim");
    assert!(
        slim.contains("Dockerfile:8: RUN installs ca-certificates, libssl3"),
        "{slim}"
    );
    assert!(slim.contains("libssl3: the distroless-cc base has libssl3"), "{slim}");
    assert!(
        slim.contains("ca-certificates: the scratch-static and debian-slim recipes add the builder's CA bundle"),
        "{slim}"
    );
    assert!(
        slim.contains("ENTRYPOINT in shell form runs through /bin/sh -c"),
        "{slim}"
    );
    let single = notes("single-stage");
    assert!(
        single.contains("Dockerfile:3: COPY . /usr/src/app copies the sources for the build"),
        "{single}"
    );
}

#[test]
fn json_report_and_no_overwrite_without_force() {
    let (_t, app) = app_with("static-scratch");
    let d = app.to_str().unwrap();
    let df = app.join("Dockerfile");
    let df = df.to_str().unwrap();
    let out = kiln(&["--json", "init", "--path", d, "--from-dockerfile", df]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let toml_text = report["kiln_toml"].as_str().unwrap();
    assert_eq!(
        report["path"].as_str().unwrap(),
        app.join("kiln.toml").display().to_string()
    );
    assert!(report["notes"].is_array());
    assert_eq!(std::fs::read_to_string(app.join("kiln.toml")).unwrap(), toml_text);

    std::fs::write(app.join("kiln.toml"), "# mine\n").unwrap();
    let out = kiln(&["init", "--path", d]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(app.join("kiln.toml")).unwrap(), "# mine\n");
    init_ok(&app, &["--force"]);
    assert!(
        std::fs::read_to_string(app.join("kiln.toml"))
            .unwrap()
            .starts_with("# kiln.toml for `app`")
    );
    let stray: Vec<_> = std::fs::read_dir(&app)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "no staging file left behind: {stray:?}");
}

#[test]
fn dockerfile_errors_name_path_and_line() {
    let (_t, app) = app_with("chef");
    let df = app.join("Dockerfile");
    std::fs::write(
        &df,
        "FROM rust:1.96 AS build\nRUN cargo build --release\nFROM scratch\nEXPOSE http\n",
    )
    .unwrap();
    let out = kiln(&[
        "init",
        "--path",
        app.to_str().unwrap(),
        "--from-dockerfile",
        df.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("{}:4: EXPOSE `http`", df.display())), "{err}");
    assert!(!app.join("kiln.toml").exists());
    std::fs::write(&df, vec![b'#'; 2 << 20]).unwrap();
    let err = text(
        &kiln(&[
            "init",
            "--path",
            app.to_str().unwrap(),
            "--from-dockerfile",
            df.to_str().unwrap(),
        ])
        .stderr,
    );
    assert!(err.contains("limit for a Dockerfile"), "{err}");
}

#[test]
fn openssl_sys_picks_distroless_cc() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    std::fs::create_dir(p.join("src")).unwrap();
    std::fs::write(p.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(
        p.join("Cargo.toml"),
        "[package]\nname = \"tls-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nopenssl-sys = \"0.9\"\n",
    )
    .unwrap();
    std::fs::write(
        p.join("Cargo.lock"),
        "version = 4\n\n[[package]]\nname = \"openssl-sys\"\nversion = \"0.9.109\"\n\n[[package]]\nname = \"tls-app\"\nversion = \"0.1.0\"\ndependencies = [\"openssl-sys\"]\n",
    )
    .unwrap();
    let (_, err) = init_ok(p, &[]);
    let got = std::fs::read_to_string(p.join("kiln.toml")).unwrap();
    assert!(got.contains("\nrecipe = \"distroless-cc\"\n"), "{got}");
    assert!(
        got.contains("openssl-sys") && got.contains("`vendored`") && got.contains("rustls"),
        "{got}"
    );
    assert!(err.contains("recipe distroless-cc"), "{err}");
    let cfg = parses(&got);
    assert_eq!(cfg.image.recipe.unwrap().into_inner(), "distroless-cc");
}

#[test]
fn ports_come_from_listen_addresses_in_the_code() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    std::fs::create_dir_all(p.join("src/net")).unwrap();
    std::fs::write(
        p.join("src/main.rs"),
        "mod net;\nfn main() {\n    let _ = std::net::TcpListener::bind(\"0.0.0.0:8080\");\n}\n",
    )
    .unwrap();
    std::fs::write(
        p.join("src/net/mod.rs"),
        "pub fn admin() {\n    let _ = std::net::TcpListener::bind(\"127.0.0.1:9090\");\n}\n",
    )
    .unwrap();
    std::fs::write(
        p.join("Cargo.toml"),
        "[package]\nname = \"srv\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    )
    .unwrap();
    std::fs::write(
        p.join("Cargo.lock"),
        "version = 4\n\n[[package]]\nname = \"srv\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let (_, err) = init_ok(p, &[]);
    let got = std::fs::read_to_string(p.join("kiln.toml")).unwrap();
    assert!(got.contains("\nports = [8080, 9090]\n"), "{got}");
    assert!(got.contains("src/main.rs:3: listens on port 8080"), "{got}");
    assert!(
        err.contains("127.0.0.1:9090, which is unreachable from outside a container"),
        "{err}"
    );
    assert!(!got.contains("\nrecipe = "), "no -sys crate: the default recipe\n{got}");
    parses(&got);
}

#[test]
fn workspace_with_several_binary_packages_is_an_error_listing_them() {
    let t = tempfile::tempdir().unwrap();
    let p = t.path();
    std::fs::write(p.join("Cargo.toml"), "[workspace]\nmembers = [\"a\", \"b\"]\n").unwrap();
    for n in ["a", "b"] {
        std::fs::create_dir_all(p.join(n).join("src")).unwrap();
        std::fs::write(p.join(n).join("src/main.rs"), "fn main() {}\n").unwrap();
        std::fs::write(
            p.join(n).join("Cargo.toml"),
            format!("[package]\nname = \"{n}\"\nversion = \"0.1.0\"\n"),
        )
        .unwrap();
    }
    let out = kiln(&["init", "--path", p.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("2 packages with binaries (a, b)") && err.contains("--package"),
        "{err}"
    );
    let (_, _) = init_ok(p, &["--package", "b"]);
    let got = std::fs::read_to_string(p.join("kiln.toml")).unwrap();
    assert!(got.contains("\npackage = \"b\"\n"), "{got}");
}

#[test]
fn dockerfile_text_cannot_inject_toml_or_reach_outside_the_project() {
    let (_t, app) = app_with("static-scratch");
    std::fs::write(
        app.join("Dockerfile"),
        "FROM rust:1.96-slim-bookworm AS build\nWORKDIR /src\nCOPY . .\nRUN cargo build --release --locked\n\
         FROM scratch\nCOPY --from=build /src/target/release/app /app\n\
         COPY [\"src\\nstop_signal = \\\"SIGKILL\\\"\\n#\", \"/x\"]\n\
         COPY ../../etc/passwd /etc/passwd\nCOPY /src/main.rs /srv/main.rs\nENTRYPOINT [\"/app\"]\n",
    )
    .unwrap();
    let (_, err) = init_ok(&app, &["--from-dockerfile", app.join("Dockerfile").to_str().unwrap()]);
    let toml = std::fs::read_to_string(app.join("kiln.toml")).unwrap();
    let cfg = parses(&toml);
    assert!(
        cfg.image.stop_signal.is_none(),
        "a quoted newline became a live line:\n{toml}"
    );
    assert!(
        !toml.contains("SIGKILL\n"),
        "a quoted newline reached the file unescaped:\n{toml}"
    );
    assert!(err.contains("control characters"), "{err}");
    assert!(err.contains("reaches outside the build context"), "{err}");
    let files: Vec<String> = cfg.image.files.iter().map(|f| f.get_ref().src.clone()).collect();
    assert!(files.contains(&"src/main.rs".to_string()), "{files:?}\n{toml}");
    assert!(
        !files.iter().any(|f| f.contains("..") || f.starts_with('/')),
        "{files:?}"
    );
}
