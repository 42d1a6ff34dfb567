//! SBOMs and provenance, end to end: what `kiln build` attaches to
//! examples/with-deps is checked by independent validators (pyspdxtools and
//! the SPDX 2.3 schema, cyclonedx-python-lib's strict 1.6 validator, the
//! in-toto/SLSA v1 schemas under tests/attest), lists exactly the crates
//! `cargo tree -e normal --target T` prints, is byte-identical across two
//! cold builds in two checkouts, leaves the image digest alone, and travels
//! with `kiln push` to a registry without a referrers API (the referrers
//! tag, read back by skopeo).

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn checkout(dest: &Path) -> PathBuf {
    copy_project(&repo().join("examples/with-deps"), dest)
}

/// Runs one of the validators under tests/attest with the dev-env's venv python.
fn validator(script: &str, file: &Path) {
    ok(Command::new(&dev_env()["KILN_TEST_PYTHON"])
        .arg(repo().join("tests/attest").join(script))
        .arg(file));
}

/// The document of `artifact_type` attached to `subject` in an OCI layout,
/// read from the blobs by hand (not through kiln).
fn attached(layout: &Path, subject: &str, artifact_type: &str) -> Vec<u8> {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| std::fs::read(layout.join("blobs/sha256").join(d.trim_start_matches("sha256:"))).unwrap();
    for m in index["manifests"].as_array().unwrap() {
        if m["artifactType"] != artifact_type {
            continue;
        }
        let manifest: Value = serde_json::from_slice(&blob(m["digest"].as_str().unwrap())).unwrap();
        if manifest["subject"]["digest"] == subject {
            assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
            return blob(manifest["layers"][0]["digest"].as_str().unwrap());
        }
    }
    panic!("no {artifact_type} about {subject} in {}", layout.display());
}

/// `name@version` of every crate `cargo tree -e normal --target T` prints.
fn cargo_tree(project: &Path, target: &str) -> BTreeSet<String> {
    let out = ok(Command::new("cargo").current_dir(project).args([
        "tree", "--locked", "-e", "normal", "--prefix", "none", "--format", "{p}", "--target", target,
    ]));
    stdout(&out)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next()?;
            let version = w.next()?.trim_start_matches('v');
            Some(format!("{name}@{version}"))
        })
        .collect()
}

#[test]
fn with_deps_sboms_and_provenance_validate_match_cargo_tree_rebuild_identically_and_push_along() {
    require_engine();
    let sb = Sandbox::new();
    let project = checkout(&sb.join("a/with-deps"));
    let layout = sb.join("layout");
    let out = ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--json", "--fresh", "--out"])
        .arg(format!("oci:{}:1", layout.display())));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let digest = r["digest"].as_str().unwrap().to_string();
    let target = r["platforms"][0]["target"].as_str().unwrap().to_string();
    let types: BTreeSet<&str> = r["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["artifactType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        BTreeSet::from([
            "application/spdx+json",
            "application/vnd.cyclonedx+json",
            "application/vnd.in-toto+json"
        ])
    );
    // The layout is still a valid OCI layout with one image for skopeo and umoci.
    validate(&layout);

    // Independent validators.
    let docs = sb.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let cdx = attached(&layout, &digest, "application/vnd.cyclonedx+json");
    let spdx = attached(&layout, &digest, "application/spdx+json");
    let prov = attached(&layout, &digest, "application/vnd.in-toto+json");
    for (name, bytes) in [("sbom.cdx.json", &cdx), ("sbom.spdx.json", &spdx), ("prov.json", &prov)] {
        std::fs::write(docs.join(name), bytes).unwrap();
    }
    validator("validate_cdx.py", &docs.join("sbom.cdx.json"));
    ok(Command::new(&dev_env()["KILN_TEST_PYSPDXTOOLS"])
        .arg("-i")
        .arg(docs.join("sbom.spdx.json")));
    validator("validate_spdx_schema.py", &docs.join("sbom.spdx.json"));
    validator("validate_provenance.py", &docs.join("prov.json"));

    // `kiln sbom` prints the attached bytes.
    let printed = ok(sb
        .kiln()
        .args(["sbom", "--format", "spdx"])
        .arg(format!("oci:{}:1", layout.display())));
    assert_eq!(printed.stdout, spdx);

    // Exactly the crates cargo tree prints for this target and features.
    let cdx_v: Value = serde_json::from_slice(&cdx).unwrap();
    let listed: BTreeSet<String> = cdx_v["components"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["bom-ref"].as_str()?.strip_prefix("crate:").map(str::to_string))
        .collect();
    assert_eq!(listed, cargo_tree(&project, &target));
    let prov_v: Value = serde_json::from_slice(&prov).unwrap();
    assert_eq!(
        prov_v["subject"][0]["digest"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    let deps = prov_v["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    assert!(deps.iter().any(|d| d["name"] == "Cargo.lock"), "{deps:?}");
    assert!(
        deps.iter()
            .any(|d| d["name"] == "builder" && d["digest"]["sha256"].is_string()),
        "{deps:?}"
    );

    // A second cold build in another checkout: the same image, the same documents.
    let other = checkout(&sb.join("b/elsewhere"));
    let layout2 = sb.join("layout2");
    let out = ok(sb
        .kiln()
        .current_dir(&other)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--json", "--fresh", "--out"])
        .arg(format!("oci:{}:1", layout2.display())));
    let r2: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r2["digest"], r["digest"]);
    assert_eq!(r2["cache"], "miss");
    for t in [
        "application/vnd.cyclonedx+json",
        "application/spdx+json",
        "application/vnd.in-toto+json",
    ] {
        assert!(
            attached(&layout2, &digest, t) == attached(&layout, &digest, t),
            "{t} differs"
        );
    }

    // Attaching nothing gives the same image digest.
    let bare = ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--json", "--no-attest", "--out"])
        .arg(format!("oci:{}:1", sb.join("bare").display())));
    let bare: Value = serde_json::from_slice(&bare.stdout).unwrap();
    assert_eq!(bare["digest"], r["digest"]);
    assert_eq!(bare["attached"], serde_json::json!([]));

    // A rebuild that moves the tag leaves only the new image's documents
    // listed in the layout.
    let moved = ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000001")
        .args(["build", "--json", "--out"])
        .arg(format!("oci:{}:1", layout.display())));
    let moved: Value = serde_json::from_slice(&moved.stdout).unwrap();
    assert_ne!(moved["digest"], r["digest"]);
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let artifacts: Vec<&Value> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["artifactType"].is_string())
        .collect();
    assert_eq!(artifacts.len(), 3, "{index:#}");
    validate(&layout);
    // Back to the first image (from the cache) for what follows.
    ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--quiet", "--out"])
        .arg(format!("oci:{}:1", layout.display())));

    // Pushed with the image: the registry (no referrers API) gets the
    // referrers tag, which skopeo reads as an index of the three.
    let pushed = format!("{}/{}:1", dev_env()["KILN_REGISTRY"], unique("kiln-test/attest"));
    ok(sb
        .kiln()
        .args(["push", "--quiet"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(&pushed));
    let listed = ok(sb.kiln().args(["referrers", "--json", &pushed]));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3, "{listed}");
    let repo_ref = pushed.rsplit_once(':').unwrap().0;
    let tag = format!("{repo_ref}:sha256-{}", digest.trim_start_matches("sha256:"));
    let raw = stdout(&ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{tag}"),
    ])));
    let index: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(index["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(index["manifests"].as_array().unwrap().len(), 3, "{index}");
    let from_registry = ok(sb.kiln().args(["sbom", "--format", "cyclonedx", &pushed]));
    assert_eq!(from_registry.stdout, cdx);
    // A referrers list is writable by anyone who can push: another image's
    // SBOM listed under this image's referrers tag is not taken for its own.
    let other_layout = sb.join("other-layout");
    ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000001")
        .args(["build", "--quiet", "--out"])
        .arg(format!("oci:{}:1", other_layout.display())));
    let other = format!("{repo_ref}:other");
    ok(sb
        .kiln()
        .args(["push", "--quiet"])
        .arg(format!("oci:{}:1", other_layout.display()))
        .arg(&other));
    let other_docs = ok(sb.kiln().args(["referrers", "--json", &other]));
    let other_docs: Value = serde_json::from_slice(&other_docs.stdout).unwrap();
    let foreign = other_docs
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["artifactType"] == "application/vnd.cyclonedx+json")
        .unwrap();
    let reg = &dev_env()["KILN_REGISTRY"];
    let repo_path = repo_ref.strip_prefix(&format!("{reg}/")).unwrap();
    let tag_url = format!(
        "http://{reg}/v2/{repo_path}/manifests/sha256-{}",
        digest.trim_start_matches("sha256:")
    );
    let mut forged = index.clone();
    forged["manifests"].as_array_mut().unwrap().insert(
        0,
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.cyclonedx+json",
            "digest": foreign["digest"],
            "size": 666,
        }),
    );
    // The real size of the foreign artifact manifest.
    let foreign_manifest = ok(Command::new("curl").args([
        "-fsS",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!(
            "http://{reg}/v2/{repo_path}/manifests/{}",
            foreign["digest"].as_str().unwrap()
        ),
    ]));
    forged["manifests"][0]["size"] = serde_json::json!(foreign_manifest.stdout.len());
    ok(Command::new("curl").args([
        "-fsS",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.index.v1+json",
        "--data-binary",
        &forged.to_string(),
        &tag_url,
    ]));
    let listed = ok(sb.kiln().args(["referrers", "--json", &pushed]));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(
        listed.as_array().unwrap().len(),
        3,
        "the foreign SBOM is not listed: {listed:#}"
    );
    let still = ok(sb.kiln().args(["sbom", "--format", "cyclonedx", &pushed]));
    assert_eq!(
        still.stdout, cdx,
        "kiln sbom gives this image's SBOM, not the one listed first"
    );

    // The image itself is untouched by what was attached.
    let inspected = ok(sb.kiln().args(["inspect", "--json", &pushed]));
    let inspected: Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(inspected["digest"], r["digest"]);
}
