//! Release history and rollback against the real registry: pushes to
//! `:prod` are recorded in the registry, `kiln rollback --steps 1` puts the
//! previous manifest back byte for byte with no blob upload, and a rollback
//! to a deleted manifest fails cleanly with the tag where it was.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn raw(image: &str) -> String {
    stdout(&ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{image}"),
    ])))
}

#[test]
fn push_history_rollback_byte_for_byte_and_a_deleted_release_is_refused() {
    require_tool("skopeo");
    require_tool("curl");
    let sb = Sandbox::new();
    let reg = dev_env()["KILN_REGISTRY"].clone();
    let repo = unique("kiln-test/releases");
    let prod = format!("{reg}/{repo}:prod");
    let mut digests = Vec::new();
    for v in 1..=3 {
        let dir = sb.join(format!("v{v}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("version"), format!("v{v}\n")).unwrap();
        let layout = format!("oci:{}:v{v}", sb.join("layout").display());
        ok(sb
            .kiln()
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["assemble", "--quiet", "--add"])
            .arg(format!("{}:/version", dir.join("version").display()))
            .args(["--out", &layout]));
        let out = ok(sb.kiln().args(["push", "--json", &layout, &prod]));
        let out: Value = serde_json::from_slice(&out.stdout).unwrap();
        digests.push(out["digest"].as_str().unwrap().to_string());
    }
    // A re-push of the current release moves nothing and records nothing.
    let layout3 = format!("oci:{}:v3", sb.join("layout").display());
    let again = ok(sb.kiln().args(["push", "--json", &layout3, &prod]));
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(again["requests"].get("PUT").is_none(), "{again}");

    let h = ok(sb.kiln().args(["history", "--json", &prod]));
    let h: Value = serde_json::from_slice(&h.stdout).unwrap();
    let tos: Vec<&str> = h["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["to"].as_str().unwrap())
        .collect();
    assert_eq!(tos, digests.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(h["moves"][0]["from"].is_null());
    assert_eq!(h["moves"][2]["from"], digests[1]);

    // Roll back one step: v2's manifest bytes, exactly, no blob upload.
    let v2_raw = raw(&format!("{reg}/{repo}@{}", digests[1]));
    let rb = ok(sb.kiln().args(["rollback", "--json", "--steps", "1", &prod]));
    let rb: Value = serde_json::from_slice(&rb.stdout).unwrap();
    assert_eq!(rb["to"], digests[1]);
    assert_eq!(rb["from"], digests[2]);
    assert_eq!(raw(&prod), v2_raw);
    let requests = rb["requests"].as_object().unwrap();
    assert!(
        !requests.contains_key("POST") && !requests.contains_key("PATCH"),
        "{rb}"
    );
    assert_eq!(requests["PUT"], 2, "the tag and its history, nothing else: {rb}");
    let h = ok(sb.kiln().args(["history", "--json", &prod]));
    let h: Value = serde_json::from_slice(&h.stdout).unwrap();
    let moves = h["moves"].as_array().unwrap();
    assert_eq!(moves.len(), 4);
    assert_eq!(moves[3]["action"], "rollback");
    assert_eq!(moves[3]["to"], digests[1]);

    // Too far back: a clean error, nothing moved.
    let far = sb.kiln().args(["rollback", "--steps", "9", &prod]).output().unwrap();
    assert_eq!(far.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&far.stderr).contains("at most"),
        "{}",
        String::from_utf8_lossy(&far.stderr)
    );

    // v1's manifest deleted from the registry: the rollback names it and the tag stays on v2.
    ok(Command::new("curl").args([
        "-fsS",
        "-X",
        "DELETE",
        &format!("http://{reg}/v2/{repo}/manifests/{}", digests[0]),
    ]));
    let gone = sb
        .kiln()
        .args(["rollback", "--to", &digests[0], &prod])
        .output()
        .unwrap();
    assert_eq!(gone.status.code(), Some(2));
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains(&digests[0]) && err.contains("deleted"), "{err}");
    assert_eq!(raw(&prod), v2_raw, "the tag did not move");
    let h = ok(sb.kiln().args(["history", "--json", &prod]));
    let h: Value = serde_json::from_slice(&h.stdout).unwrap();
    assert_eq!(
        h["moves"].as_array().unwrap().len(),
        4,
        "a failed rollback records nothing"
    );

    // Steps count releases back from where the tag is: after v3 is pushed
    // again and rolled back to v2, another `--steps 1` goes on to v1 (here
    // deleted, so refused by name), never forward to v3.
    ok(sb.kiln().args(["push", "--quiet", &layout3, &prod]));
    let rb = ok(sb.kiln().args(["rollback", "--json", "--steps", "1", &prod]));
    let rb: Value = serde_json::from_slice(&rb.stdout).unwrap();
    assert_eq!(rb["to"], digests[1]);
    let back = sb.kiln().args(["rollback", "--steps", "1", &prod]).output().unwrap();
    assert_eq!(back.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&back.stderr).contains(&digests[0]),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert_eq!(raw(&prod), v2_raw);
}
