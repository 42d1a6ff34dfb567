//! The payload a cosign signature signs (cosign's "simple signing"
//! variant): exactly `{"critical":{"identity":{"docker-reference":R},
//! "image":{"docker-manifest-digest":D},"type":"cosign container image
//! signature"},"optional":…}`. containers/image reads it with exact-field
//! rules (no unknown or missing keys, `optional` present), and so does kiln.

use serde_json::{Map, Value, json};

use crate::digest::Digest;
use crate::{Error, Result};

/// The `type` every cosign image signature carries.
pub const SIGNATURE_TYPE: &str = "cosign container image signature";

/// What a signature claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// `docker-reference`: the name the signer vouched for.
    pub reference: String,
    /// `docker-manifest-digest`: the manifest signed.
    pub digest: Digest,
}

/// The payload bytes for `reference` at `digest` (sorted keys, no
/// whitespace, `optional` null: no time, so signing twice gives the same bytes).
pub fn payload(reference: &str, digest: &Digest) -> Vec<u8> {
    let v = json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": SIGNATURE_TYPE,
        },
        "optional": null,
    });
    serde_json::to_vec(&v).expect("a Value always serializes")
}

fn exact<'a>(v: &'a Value, keys: &[&str], what: &str) -> Result<&'a Map<String, Value>> {
    let bad = |m: String| Error::format("signature payload", m);
    let o = v.as_object().ok_or_else(|| bad(format!("{what} is not an object")))?;
    if o.len() != keys.len() || keys.iter().any(|k| !o.contains_key(*k)) {
        let mut have: Vec<&str> = o.keys().map(String::as_str).collect();
        have.sort();
        return Err(bad(format!("{what} must have exactly {keys:?}, has {have:?}")));
    }
    Ok(o)
}

/// Parses a payload with containers/image's exact-field rules.
pub fn parse(bytes: &[u8]) -> Result<Claim> {
    let bad = |m: &str| Error::format("signature payload", m.to_string());
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let top = exact(&v, &["critical", "optional"], "the payload")?;
    if !(top["optional"].is_null() || top["optional"].is_object()) {
        return Err(bad("`optional` must be null or an object"));
    }
    let critical = exact(&top["critical"], &["identity", "image", "type"], "`critical`")?;
    if critical["type"] != SIGNATURE_TYPE {
        return Err(bad("`critical.type` is not a cosign container image signature"));
    }
    let image = exact(&critical["image"], &["docker-manifest-digest"], "`critical.image`")?;
    let identity = exact(&critical["identity"], &["docker-reference"], "`critical.identity`")?;
    let digest = image["docker-manifest-digest"]
        .as_str()
        .ok_or_else(|| bad("`docker-manifest-digest` is not a string"))?
        .parse()
        .map_err(|_| bad("`docker-manifest-digest` is not a digest"))?;
    let reference = identity["docker-reference"]
        .as_str()
        .ok_or_else(|| bad("`docker-reference` is not a string"))?
        .to_string();
    Ok(Claim { reference, digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_cosigns_shape_and_parses_back() {
        let d = Digest::of(b"m");
        let p = payload("127.0.0.1:5000/a/b:1", &d);
        let text = String::from_utf8(p.clone()).unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"127.0.0.1:5000/a/b:1\"}},\"image\":{{\"docker-manifest-digest\":\"{d}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
            )
        );
        assert_eq!(
            parse(&p).unwrap(),
            Claim {
                reference: "127.0.0.1:5000/a/b:1".into(),
                digest: d
            }
        );
    }

    #[test]
    fn strict_like_containers_image() {
        let d = Digest::of(b"m");
        let good = serde_json::from_slice::<Value>(&payload("r:1", &d)).unwrap();
        let mut missing_optional = good.clone();
        missing_optional.as_object_mut().unwrap().remove("optional");
        let mut extra = good.clone();
        extra["critical"]["extra"] = json!(1);
        let mut wrong_type = good.clone();
        wrong_type["critical"]["type"] = json!("atomic container signature");
        let mut optional_string = good.clone();
        optional_string["optional"] = json!("x");
        for bad in [missing_optional, extra, wrong_type, optional_string] {
            assert!(parse(&serde_json::to_vec(&bad).unwrap()).is_err(), "{bad}");
        }
        let mut with_optional = good;
        with_optional["optional"] = json!({"creator": "containers/image 5.23.1", "timestamp": 1});
        assert!(parse(&serde_json::to_vec(&with_optional).unwrap()).is_ok());
        assert!(parse(b"\xff").is_err());
    }
}
