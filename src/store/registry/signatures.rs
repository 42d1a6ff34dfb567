//! cosign's signature storage in a registry: for a manifest `sha256:HEX`,
//! the tag `sha256-HEX.sig` in the same repository names an OCI image
//! manifest with one layer per signature — the payload blob, media type
//! `application/vnd.dev.cosign.simplesigning.v1+json`, the base64 DER
//! signature in the annotation `dev.cosignproject.cosign/signature` — and a
//! config whose diff_ids list the payloads (what cosign and
//! containers/image write; nobody reads the config). Adding a signature
//! reads that manifest, appends a layer unless an identical one is there,
//! and puts it back (a read-modify-write race, as in cosign and skopeo).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::RegistryRef;
use super::client::{self, Client};
use super::locations::Locations;
use super::push::{Session, push_bytes, put_manifest};
use super::referrers::get_optional;
use crate::context::Context;
use crate::digest::Digest;
use crate::oci::{self, Descriptor, Manifest, canonical_json};
use crate::{Error, Result};
use bytes::Bytes;

/// The layer media type of a cosign signature.
pub const MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The annotation holding the base64 DER signature.
pub const ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The most bytes of one signature payload kiln reads (containers/image: 4 MiB).
pub const MAX_PAYLOAD: u64 = 4 << 20;
/// The most signatures kiln reads or keeps for one manifest.
pub const MAX_SIGNATURES: usize = 256;

/// The signature tag of a manifest: `sha256-HEX.sig`.
pub fn tag(subject: &Digest) -> String {
    format!("{}-{}.sig", subject.algorithm(), subject.hex())
}

/// A signature to store: the payload and the base64 DER signature over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSignature {
    pub payload: Vec<u8>,
    pub signature: String,
}

/// One stored signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub payload: Vec<u8>,
    /// The annotation's base64 text (None: a layer without one).
    pub signature: Option<String>,
}

/// The `.sig` manifest and config of `subject`, if there is one.
async fn existing(
    client: &Client,
    scopes: &[String],
    repo: &str,
    subject: &Digest,
) -> Result<Option<(Manifest, Value)>> {
    let t = tag(subject);
    let Some(body) = get_optional(
        client,
        scopes,
        &format!("{repo}/manifests/{t}"),
        oci::MEDIA_TYPE_MANIFEST,
        &format!("the signature tag {t}"),
    )
    .await?
    else {
        return Ok(None);
    };
    let m: Manifest = serde_json::from_slice(&body)
        .map_err(|e| Error::format(format!("{repo}:{t}"), format!("not an OCI manifest: {e}")))?;
    let config_url = client.url(&format!("{repo}/blobs/{}", m.config.digest));
    let resp = client
        .get_following(scopes, config_url, None, client.opts.retry.attempts)
        .await?;
    let config = if resp.status().is_success() {
        let b = client
            .read_capped(resp, crate::store::read::MAX_JSON, "the signature config")
            .await?;
        if Digest::of(&b) != m.config.digest {
            return Err(Error::DigestMismatch {
                what: format!("config of {repo}:{t}"),
                expected: m.config.digest.to_string(),
                found: Digest::of(&b).to_string(),
            });
        }
        // Anything but an object is replaced (nobody reads the config).
        serde_json::from_slice::<Value>(&b)
            .ok()
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}))
    } else {
        json!({})
    };
    Ok(Some((m, config)))
}

/// The new `.sig` manifest bytes with `add` appended, and the blobs to
/// upload first (new payloads, the config); None when every signature was
/// already there.
pub(super) async fn merged(
    client: &Client,
    scopes: &[String],
    repo: &str,
    subject: &Digest,
    add: &[NewSignature],
) -> Result<Option<(Vec<u8>, Vec<Vec<u8>>)>> {
    let (mut m, mut config) = match existing(client, scopes, repo, subject).await? {
        Some(x) => x,
        None => (
            Manifest {
                schema_version: 2,
                media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
                artifact_type: None,
                config: Descriptor::new(oci::MEDIA_TYPE_CONFIG, Digest::of(b""), 0),
                layers: Vec::new(),
                subject: None,
                annotations: BTreeMap::new(),
            },
            // cosign's shape (go-containerregistry's empty image).
            json!({"architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{"created": "0001-01-01T00:00:00Z"}],
                   "os": "", "rootfs": {"type": "layers", "diff_ids": []}, "config": {}}),
        ),
    };
    if m.layers.len() + add.len() > MAX_SIGNATURES {
        return Err(Error::format(
            format!("{repo}:{}", tag(subject)),
            format!(
                "it holds {} signatures; kiln keeps at most {MAX_SIGNATURES}",
                m.layers.len()
            ),
        ));
    }
    let mut uploads = Vec::new();
    for NewSignature { payload, signature } in add {
        let mut d = Descriptor::new(MEDIA_TYPE, Digest::of(payload), payload.len() as u64);
        d.annotations.insert(ANNOTATION.into(), signature.clone());
        if m.layers.contains(&d) {
            continue;
        }
        m.layers.push(d);
        if !config["rootfs"].is_object() || !config["rootfs"]["diff_ids"].is_array() {
            config["rootfs"] = json!({"type": "layers", "diff_ids": []});
        }
        config["rootfs"]["diff_ids"]
            .as_array_mut()
            .expect("an array")
            .push(json!(Digest::of(payload).to_string()));
        uploads.push(payload.clone());
    }
    if uploads.is_empty() {
        return Ok(None);
    }
    let config_bytes = canonical_json(&config);
    m.config = Descriptor::new(
        oci::MEDIA_TYPE_CONFIG,
        Digest::of(&config_bytes),
        config_bytes.len() as u64,
    );
    uploads.push(config_bytes);
    Ok(Some((canonical_json(&m), uploads)))
}

/// The signatures stored for `subject` in `r`'s repository (payloads
/// fetched by digest, verified and bounded).
pub fn read(ctx: &Context, r: &RegistryRef, subject: &Digest) -> Result<Vec<Stored>> {
    let rt = crate::store::daemon::runtime()?;
    let layers = rt.block_on(async {
        let client = Client::connect(r, &ctx.registry).await?;
        let scopes = vec![client::scope(&r.repository, "pull")];
        Ok::<_, Error>(
            existing(&client, &scopes, &r.repository, subject)
                .await?
                .map(|(m, _)| m.layers)
                .unwrap_or_default(),
        )
    })?;
    drop(rt);
    if layers.len() > MAX_SIGNATURES {
        return Err(Error::format(
            format!("{r}:{}", tag(subject)),
            format!(
                "it lists {} signatures; kiln reads at most {MAX_SIGNATURES}",
                layers.len()
            ),
        ));
    }
    let mut out = Vec::new();
    let f = super::pull::RegistryFetch::connect_to(ctx, r)?;
    for l in layers.iter().filter(|l| l.media_type == MEDIA_TYPE) {
        if l.size > MAX_PAYLOAD {
            return Err(Error::format(
                format!("{r} signature {}", l.digest),
                format!("its payload is {} bytes, over {MAX_PAYLOAD}", l.size),
            ));
        }
        let payload = crate::store::read::BlobFetch::bytes(&f, l, MAX_PAYLOAD)?;
        out.push(Stored {
            payload,
            signature: l.annotations.get(ANNOTATION).cloned(),
        });
    }
    Ok(out)
}

/// Adds cosign signatures: for each subject digest, (payload, base64
/// signature) pairs appended to its `sha256-HEX.sig` manifest in `dest`'s
/// repository. Returns how many were new.
pub fn push(ctx: &Context, dest: &RegistryRef, per_subject: &[(Digest, Vec<NewSignature>)]) -> Result<usize> {
    let rt = crate::store::daemon::runtime()?;
    let locations = Locations::new(&ctx.cache);
    rt.block_on(async {
        let s = Session::connect(ctx, dest, &locations).await?;
        let mut added = 0;
        for (subject, sigs) in per_subject {
            let Some((manifest, uploads)) = merged(&s.client, &s.scopes, &s.repo, subject, sigs).await? else {
                continue;
            };
            added += uploads.len() - 1;
            for blob in uploads {
                let desc = Descriptor::new("application/octet-stream", Digest::of(&blob), blob.len() as u64);
                push_bytes(&s, desc, Bytes::from(blob)).await?;
            }
            let d = Digest::of(&manifest);
            let tag = tag(subject);
            put_manifest(
                &s.client,
                &s.repo,
                &s.scopes,
                &tag,
                oci::MEDIA_TYPE_MANIFEST,
                &Bytes::from(manifest),
                &d,
            )
            .await?;
        }
        Ok(added)
    })
}
