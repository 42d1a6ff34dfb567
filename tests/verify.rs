//! `kiln diff` and `kiln verify` through the real binary: images that differ
//! in known ways are explained, non-reproducible fixtures are caught and
//! named, and the examples rebuild byte for byte under every variation.

mod common;

use std::fs;
use std::path::Path;

use common::*;

fn assemble(sb: &Sandbox, args: &[&str], out: &str) -> String {
    stdout(&ok(sb
        .kiln()
        .args(["assemble", "--quiet"])
        .args(args)
        .args(["--out", out])))
}

fn diff(sb: &Sandbox, a: &str, b: &str) -> (i32, serde_json::Value, String) {
    let out = output(sb.kiln().args(["diff", "--json", a, b]));
    let text = output(sb.kiln().args(["diff", a, b]));
    (
        out.status.code().unwrap(),
        serde_json::from_slice(&out.stdout).unwrap(),
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

#[test]
fn diff_explains_compression_created_and_mode() {
    let sb = Sandbox::new();
    let l = |tag: &str| format!("oci:{}/l:{tag}", sb.path().display());
    fs::write(sb.join("f"), "some content\n".repeat(1000)).unwrap();
    fs::write(sb.join("g"), "other\n").unwrap();
    let a = assemble(
        &sb,
        &["--add", "f:/f", "--add", "g:/g", "--source-date-epoch", "1"],
        &l("a"),
    );
    // Identical.
    let (code, r, text) = diff(&sb, &l("a"), &l("a"));
    assert_eq!((code, r["identical"].as_bool()), (0, Some(true)));
    assert!(text.contains("identical"));
    // Only the gzip level.
    assemble(
        &sb,
        &[
            "--add",
            "f:/f",
            "--add",
            "g:/g",
            "--source-date-epoch",
            "1",
            "--compression",
            "gzip:1",
        ],
        &l("gz1"),
    );
    let (code, r, text) = diff(&sb, &l("a"), &l("gz1"));
    assert_eq!(code, 1);
    assert!(r["summary"][0].as_str().unwrap().starts_with("compression-only"), "{r}");
    assert!(text.contains("compression-only"), "{text}");
    // Only `created`: the same layer, config rewritten with another timestamp.
    assemble(&sb, &["--from", &l("a"), "--source-date-epoch", "2"], &l("created"));
    let (_, r, text) = diff(&sb, &l("a"), &l("created"));
    assert!(r["layers"].as_array().unwrap().is_empty(), "{r}");
    assert_eq!(r["summary"], serde_json::json!(["config: created"]), "{r}");
    assert!(
        text.contains("created: \"1970-01-01T00:00:01Z\" -> \"1970-01-01T00:00:02Z\""),
        "{text}"
    );
    // One file's mode.
    assemble(
        &sb,
        &["--add", "f:/f:0600", "--add", "g:/g", "--source-date-epoch", "1"],
        &l("mode"),
    );
    let (_, r, text) = diff(&sb, &l("a"), &l("mode"));
    let files = r["layers"][0]["files"].as_array().unwrap();
    assert_eq!(files.len(), 1, "{r}");
    assert_eq!(files[0]["path"], "/f");
    assert_eq!(
        files[0]["fields"],
        serde_json::json!([{"field": "mode", "a": "0644", "b": "0600"}])
    );
    assert!(text.contains("mode: 0644 -> 0600"), "{text}");
    // A text file's content: a unified diff.
    fs::write(sb.join("g"), "changed\n").unwrap();
    assemble(
        &sb,
        &["--add", "f:/f", "--add", "g:/g", "--source-date-epoch", "1"],
        &l("text"),
    );
    let (_, _, text) = diff(&sb, &l("a"), &l("text"));
    assert!(text.contains("-other") && text.contains("+changed"), "{text}");
    let _ = a;
}

fn verify(sb: &Sandbox, project: &Path, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut c = sb.kiln();
    c.current_dir(project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["verify", "--json", "--builder", &builder()])
        .args(extra);
    let out = output(&mut c);
    let code = out.status.code().unwrap();
    assert!(code == 0 || code == 1, "verify failed to run\n{}", explain(&c, &out));
    (code, serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn verify_names_the_build_time_and_the_absolute_path() {
    require_engine();
    let sb = Sandbox::new();
    let p = sb.join("build-time");
    copy_project(&repo().join("tests/fixtures/build-time"), &p);
    let (code, r) = verify(&sb, &p, &["--rebuilds", "2"]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["identical"], false);
    let d = &r["differences"][0];
    let file = &d["diff"]["layers"][0]["files"][0];
    assert_eq!(file["path"], "/usr/local/bin/build-time");
    let sections = file["sections"].as_array().unwrap();
    let timed = sections
        .iter()
        .find(|s| s["looks_like"] == "a date/time")
        .expect("a section with the time");
    assert!(timed["sample_a"].as_str().unwrap().contains("UTC"), "{timed}");
    assert!(
        d["hints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h.as_str().unwrap().contains("embeds the build time")),
        "{d}"
    );

    let p = sb.join("manifest-dir");
    copy_project(&repo().join("tests/fixtures/manifest-dir"), &p);
    let (code, r) = verify(&sb, &p, &["--rebuilds", "2", "--vary", "path"]);
    assert_eq!(code, 1, "{r:#}");
    let d = &r["differences"][0];
    let sections = d["diff"]["layers"][0]["files"][0]["sections"].as_array().unwrap();
    let path = sections
        .iter()
        .find(|s| s["looks_like"] == "an absolute path")
        .expect("a section with the path");
    assert!(path["sample_a"].as_str().unwrap().contains("/kiln/src"), "{path}");
    assert!(
        path["sample_b"].as_str().unwrap().contains("/kiln/src-variant-"),
        "{path}"
    );
    assert!(
        d["hints"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h.as_str().unwrap().contains("CARGO_MANIFEST_DIR")),
        "{d}"
    );
}

#[test]
fn the_examples_rebuild_identically_under_every_variation() {
    require_engine();
    let sb = Sandbox::new();
    for example in ["hello-http", "with-deps"] {
        let p = sb.join(example);
        copy_project(&repo().join("examples").join(example), &p);
        let (code, r) = verify(&sb, &p, &["--rebuilds", "3"]);
        assert_eq!(code, 0, "{example}: {r:#}");
        let builds = r["builds"].as_array().unwrap();
        assert_eq!(builds.len(), 3);
        let d0 = &builds[0]["digest"];
        assert!(builds.iter().all(|b| &b["digest"] == d0));
        let varied: Vec<String> = builds[1]["variation"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        for what in [
            "checkout copied",
            "source at",
            "env TZ=",
            "hostname",
            "CARGO_BUILD_JOBS",
            "umask",
            "cold",
        ] {
            assert!(varied.iter().any(|v| v.contains(what)), "{what} varied: {varied:?}");
        }
    }
}

#[test]
fn verify_against_a_published_image() {
    require_engine();
    let sb = Sandbox::new();
    let p = sb.join("hello");
    copy_project(&repo().join("examples/hello-http"), &p);
    let dest = format!(
        "{}/kiln-test/verify-against:{}",
        dev_env()["KILN_REGISTRY"],
        std::process::id()
    );
    ok(sb.kiln().current_dir(&p).env("SOURCE_DATE_EPOCH", "1700000000").args([
        "build",
        "--quiet",
        "--builder",
        &builder(),
        "--push",
        &dest,
    ]));
    let (code, r) = verify(&sb, &p, &["--rebuilds", "1", "--against", &dest]);
    assert_eq!(code, 0, "{r:#}");
    assert!(r["reference"].as_str().unwrap().starts_with("published"));
}
