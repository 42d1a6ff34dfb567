//! cosign-compatible signatures against the real registry, checked by
//! implementations that are not kiln's: openssl verifies kiln's ECDSA
//! signatures over the payload it fetched itself (curl), a pure-Python
//! implementation of cosign's key format (tests/attest/cosign_key.py)
//! decrypts kiln's key file and makes one kiln must read, and a signature
//! made with openssl and pushed by a Python script is one kiln must accept.
//! skopeo 1.9.3 as Debian builds it has sigstore disabled (a Debian patch):
//! it is shown to find and parse kiln's signature layout up to the check
//! its build refuses, which is as far as this machine's skopeo goes.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

const PASSWORD: &str = "correct horse";

fn python() -> String {
    dev_env()["KILN_TEST_PYTHON"].clone()
}

fn script(name: &str) -> std::path::PathBuf {
    repo().join("tests/attest").join(name)
}

/// The `.sig` manifest of `digest` in `repo`, and (payload, DER signature) of its layers, fetched with curl.
fn sig_layers(repo: &str, digest: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let reg = &dev_env()["KILN_REGISTRY"];
    let tag = format!("{}.sig", digest.replacen(':', "-", 1));
    let man = ok(Command::new("curl").args([
        "-fsS",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json",
        &format!("http://{reg}/v2/{repo}/manifests/{tag}"),
    ]));
    let man: Value = serde_json::from_slice(&man.stdout).unwrap();
    man["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert_eq!(l["mediaType"], "application/vnd.dev.cosign.simplesigning.v1+json");
            let payload = ok(Command::new("curl").args([
                "-fsS",
                &format!("http://{reg}/v2/{repo}/blobs/{}", l["digest"].as_str().unwrap()),
            ]))
            .stdout;
            use base64::Engine as _;
            let sig = base64::engine::general_purpose::STANDARD
                .decode(l["annotations"]["dev.cosignproject.cosign/signature"].as_str().unwrap())
                .unwrap();
            (payload, sig)
        })
        .collect()
}

/// An ECDSA P-256 key pair made by openssl: DIR/NAME.pem (private, unencrypted) and DIR/NAME.pub.
fn openssl_key(dir: &Path, name: &str) {
    let pem = dir.join(format!("{name}.pem"));
    ok(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&pem));
    ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&pem)
        .arg("-out")
        .arg(dir.join(format!("{name}.pub"))));
}

/// openssl's verdict on a signature.
fn openssl_verifies(dir: &Path, public: &Path, payload: &[u8], sig: &[u8]) -> bool {
    std::fs::write(dir.join("payload"), payload).unwrap();
    std::fs::write(dir.join("sig.der"), sig).unwrap();
    Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public)
        .arg("-signature")
        .arg(dir.join("sig.der"))
        .arg(dir.join("payload"))
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn kiln_signatures_verify_with_openssl_and_kiln_accepts_signatures_it_did_not_make() {
    require_engine();
    require_tool("openssl");
    require_tool("curl");
    let sb = Sandbox::new();
    let reg = dev_env()["KILN_REGISTRY"].clone();

    // A key pair from kiln; its private key decrypts with the independent
    // implementation, and openssl derives the same public key from it.
    let prefix = sb.join("cosign");
    ok(sb
        .kiln()
        .env("COSIGN_PASSWORD", PASSWORD)
        .args(["generate-key-pair", "--output-prefix"])
        .arg(&prefix));
    let key = sb.join("cosign.key");
    let public = sb.join("cosign.pub");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .starts_with("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----")
    );
    let plain = ok(Command::new(python())
        .arg(script("cosign_key.py"))
        .arg("decrypt-pem")
        .arg(&key)
        .arg(PASSWORD));
    std::fs::write(sb.join("plain.pem"), &plain.stdout).unwrap();
    let derived = ok(Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(sb.join("plain.pem")));
    assert_eq!(
        stdout(&derived).trim(),
        std::fs::read_to_string(&public).unwrap().trim()
    );
    let again = sb
        .kiln()
        .env("COSIGN_PASSWORD", PASSWORD)
        .args(["generate-key-pair", "--output-prefix"])
        .arg(&prefix)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2), "keys are never overwritten");

    // An image with its SBOMs and provenance, pushed and signed.
    let project = copy_project(&repo().join("examples/hello-http"), &sb.join("hello-http"));
    let layout = sb.join("layout");
    ok(sb
        .kiln()
        .current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["build", "--quiet", "--out"])
        .arg(format!("oci:{}:1", layout.display())));
    let repo_name = unique("kiln-test/signed");
    let pushed = format!("{reg}/{repo_name}:1");
    let wrong = sb
        .kiln()
        .args(["push", "--sign-key"])
        .arg(&key)
        .arg(format!("oci:{}:1", layout.display()))
        .arg(&pushed)
        .output()
        .unwrap();
    assert_eq!(
        wrong.status.code(),
        Some(2),
        "no COSIGN_PASSWORD: refused before pushing"
    );
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("COSIGN_PASSWORD"));
    ok(sb
        .kiln()
        .env("COSIGN_PASSWORD", PASSWORD)
        .args(["push", "--quiet", "--sign-key"])
        .arg(&key)
        .arg(format!("oci:{}:1", layout.display()))
        .arg(&pushed));

    // kiln's own check: the image and its three documents are signed.
    let v = ok(sb
        .kiln()
        .args(["verify-signature", "--json", "--attached", "--key"])
        .arg(&public)
        .arg(&pushed));
    let v: Value = serde_json::from_slice(&v.stdout).unwrap();
    let checked = v.as_array().unwrap();
    assert_eq!(checked.len(), 4, "{v:#}");
    assert!(checked.iter().all(|c| c["valid"] == 1), "{v:#}");
    let image_digest = checked[0]["digest"].as_str().unwrap().to_string();

    // openssl's check of what the registry holds, fetched without kiln.
    let layers = sig_layers(&repo_name, &image_digest);
    assert_eq!(layers.len(), 1);
    let (payload, sig) = &layers[0];
    assert!(
        openssl_verifies(&sb.path(), &public, payload, sig),
        "openssl rejects kiln's signature"
    );
    let claim: Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(claim["critical"]["identity"]["docker-reference"], pushed);
    assert_eq!(claim["critical"]["image"]["docker-manifest-digest"], image_digest);
    assert_eq!(claim["critical"]["type"], "cosign container image signature");
    assert!(claim["optional"].is_null());

    // Signing again adds nothing (deterministic signatures); `kiln
    // referrers` lists the documents and the signatures.
    let resign = ok(sb
        .kiln()
        .env("COSIGN_PASSWORD", PASSWORD)
        .args(["sign", "--json", "--key"])
        .arg(&key)
        .arg(&pushed));
    let resign: Value = serde_json::from_slice(&resign.stdout).unwrap();
    assert_eq!(resign["added"], 0, "{resign:#}");
    let listed = ok(sb.kiln().args(["referrers", "--json", &pushed]));
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let kinds: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["artifactType"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "application/vnd.dev.cosign.simplesigning.v1+json")
            .count(),
        4,
        "{listed:#}"
    );
    assert!(
        kinds.contains(&"application/spdx+json") && kinds.contains(&"application/vnd.in-toto+json"),
        "{listed:#}"
    );

    // Another key, from openssl, encrypted by the independent implementation:
    // kiln signs with it, and a signature made by openssl and pushed by a
    // Python script (not kiln) verifies in kiln.
    openssl_key(&sb.path(), "other");
    let other_key = ok(Command::new(python())
        .arg(script("cosign_key.py"))
        .arg("encrypt")
        .arg(sb.join("other.pem"))
        .arg("pw2"));
    std::fs::write(sb.join("other.key"), &other_key.stdout).unwrap();
    let second = format!("{reg}/{repo_name}:2");
    ok(sb
        .kiln()
        .env("COSIGN_PASSWORD", "pw2")
        .args(["push", "--quiet", "--sign-key"])
        .arg(sb.join("other.key"))
        .arg(format!("oci:{}:1", layout.display()))
        .arg(&second));
    // Same image digest, now two signatures (two identities, two keys).
    let layers = sig_layers(&repo_name, &image_digest);
    assert_eq!(layers.len(), 2);
    assert!(
        layers
            .iter()
            .any(|(p, s)| openssl_verifies(&sb.path(), &sb.join("other.pub"), p, s))
    );
    // A signature kiln did not make: openssl signs the image digest for
    // another repository (pushed there without signatures), a Python
    // script stores it the cosign way, kiln accepts it.
    let other_repo = unique("kiln-test/signed-elsewhere");
    let third = format!("{reg}/{other_repo}:3");
    ok(sb
        .kiln()
        .args(["push", "--quiet"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(&third));
    ok(Command::new(python())
        .arg(script("cosign_sign.py"))
        .args([&reg, &other_repo, &image_digest, &third])
        .arg(sb.join("other.pem")));
    ok(sb
        .kiln()
        .args(["verify-signature", "--key"])
        .arg(sb.join("other.pub"))
        .arg(&third));
    // kiln's key vouched for :1, not :2; cosign's repository-only rule accepts it.
    let refused = sb
        .kiln()
        .args(["verify-signature", "--key"])
        .arg(&public)
        .arg(&second)
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("vouches for"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    ok(sb
        .kiln()
        .args(["verify-signature", "--match-repository", "--key"])
        .arg(&public)
        .arg(&second));
    // A key that signed nothing here.
    openssl_key(&sb.path(), "stranger");
    let stranger = sb
        .kiln()
        .args(["verify-signature", "--key"])
        .arg(sb.join("stranger.pub"))
        .arg(&pushed)
        .output()
        .unwrap();
    assert_eq!(stranger.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stranger.stderr).contains("not made by this key"));

    // skopeo 1.9.3 (Debian): with use-sigstore-attachments it finds kiln's
    // .sig manifest and reads its layer; Debian's build then refuses to
    // check any sigstore signature. An unsigned image stops earlier.
    let rd = sb.join("registries.d");
    std::fs::create_dir_all(&rd).unwrap();
    std::fs::write(
        rd.join("kiln.yaml"),
        format!("docker:\n  {reg}:\n    use-sigstore-attachments: true\n"),
    )
    .unwrap();
    let policy = sb.join("policy.json");
    std::fs::write(
        &policy,
        serde_json::json!({"default": [{"type": "reject"}], "transports": {"docker": {reg.clone(): [
            {"type": "sigstoreSigned", "keyPath": public, "signedIdentity": {"type": "matchRepoDigestOrExact"}}]}}})
        .to_string(),
    )
    .unwrap();
    let skopeo = |image: &str| {
        Command::new("skopeo")
            .arg("--debug")
            .arg("--policy")
            .arg(&policy)
            .arg("--registries.d")
            .arg(&rd)
            .args(["copy", "--src-tls-verify=false", &format!("docker://{image}")])
            .arg(format!("dir:{}", sb.join(unique("skopeo-out")).display()))
            .output()
            .unwrap()
    };
    let out = skopeo(&pushed);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Found a sigstore attachment manifest with 2 layers"),
        "{err}"
    );
    if !err.contains("sigstore disabled") {
        // A skopeo with sigstore enabled: then it must accept kiln's signature.
        assert!(
            out.status.success(),
            "skopeo with sigstore rejected kiln's signature: {err}"
        );
    }
    let unsigned = format!("{reg}/{}:1", unique("kiln-test/unsigned"));
    ok(sb
        .kiln()
        .args(["push", "--quiet"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(&unsigned));
    let out = skopeo(&unsigned);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!err.contains("Found a sigstore attachment manifest"), "{err}");
}
