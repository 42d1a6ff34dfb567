//! Pushing and finding the documents attached to a manifest (OCI
//! distribution 1.1):
//! the referrers API (`GET /v2/<repo>/referrers/<digest>`) where the
//! registry has it, else the referrers tag schema — an image index tagged
//! `sha256-<hex>` that clients keep up to date themselves (Debian's
//! registry, distribution 2.8, has no referrers API).

use reqwest::StatusCode;

use bytes::Bytes;

use super::RegistryRef;
use super::client::{self, Client};
use super::push::{Put, Session, push_bytes, put_manifest};
use crate::attest::{self, Artifact};
use crate::context::Context;
use crate::digest::Digest;
use crate::oci::{self, Descriptor, Index, canonical_json};
use crate::store::read::MAX_JSON;
use crate::{Error, Result};

const ACCEPT_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// GETs `path` (a manifest by tag, the referrers API) with `accept`;
/// None when the registry has nothing there (404, or an unknown route:
/// distribution 2.8 answers those 404 and some registries 400/405).
pub(super) async fn get_optional(
    client: &Client,
    scopes: &[String],
    path: &str,
    accept: &str,
    what: &str,
) -> Result<Option<bytes::Bytes>> {
    let url = client.url(path);
    let resp = client
        .get_following(scopes, url, Some(accept), client.opts.retry.attempts)
        .await?;
    match resp.status() {
        s if s.is_success() => Ok(Some(client.read_capped(resp, MAX_JSON, what).await?)),
        StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST | StatusCode::METHOD_NOT_ALLOWED => Ok(None),
        _ => Err(client.error_from(&format!("reading {what}"), resp).await),
    }
}

/// GETs a referrers index (API or tag); None when the registry has none.
async fn get_index(client: &Client, scopes: &[String], path: &str, what: &str) -> Result<Option<Index>> {
    let Some(body) = get_optional(client, scopes, path, ACCEPT_INDEX, what).await? else {
        return Ok(None);
    };
    let index: Index = serde_json::from_slice(&body).map_err(|e| {
        Error::format(
            format!("{} {what}", client.registry),
            format!("not an image index: {e}"),
        )
    })?;
    Ok(Some(index))
}

/// Whether the registry serves the referrers API (asked about the first
/// artifact's subject).
pub(super) async fn api_supported(
    client: &Client,
    repo: &str,
    scopes: &[String],
    attached: &[Artifact],
) -> Result<bool> {
    let Some(subject) = attached.iter().find_map(|a| a.subject()) else {
        return Ok(false);
    };
    let path = format!("{repo}/referrers/{}", subject.digest);
    Ok(get_index(client, scopes, &path, "the referrers API").await?.is_some())
}

/// The referrers tag index with `descs` added (None: nothing to add). What
/// was there stays, in its order; new entries follow.
pub(super) async fn merged_tag_index(
    client: &Client,
    repo: &str,
    scopes: &[String],
    tag: &str,
    descs: Vec<Descriptor>,
) -> Result<Option<Vec<u8>>> {
    let path = format!("{repo}/manifests/{tag}");
    let mut index = get_index(client, scopes, &path, &format!("the referrers tag {tag}"))
        .await?
        .unwrap_or_else(Index::empty);
    let before = index.manifests.len();
    for d in descs {
        if !index.manifests.iter().any(|m| m.digest == d.digest) {
            index.manifests.push(d);
        }
    }
    if index.manifests.len() == before {
        return Ok(None);
    }
    index.media_type = Some(oci::MEDIA_TYPE_INDEX.into());
    Ok(Some(canonical_json(&index)))
}

/// The artifacts registered as referring to `subject` in `r`'s repository:
/// from the referrers API, else the referrers tag. Descriptors only.
pub fn list(ctx: &Context, r: &RegistryRef, subject: &Digest) -> Result<Vec<Descriptor>> {
    let rt = crate::store::daemon::runtime()?;
    rt.block_on(async {
        let client = Client::connect(r, &ctx.registry).await?;
        let scopes = vec![client::scope(&r.repository, "pull")];
        let api = format!("{}/referrers/{subject}", r.repository);
        if let Some(index) = get_index(&client, &scopes, &api, "the referrers API").await? {
            return Ok(index.manifests);
        }
        let tag = attest::referrers_tag(subject);
        let path = format!("{}/manifests/{tag}", r.repository);
        Ok(get_index(&client, &scopes, &path, &format!("the referrers tag {tag}"))
            .await?
            .map(|i| i.manifests)
            .unwrap_or_default())
    })
}

/// Fetches one listed artifact (manifest and document, each verified and bounded).
/// The artifact must be about `subject`: a referrers index is written by
/// whoever can push, so what it lists proves nothing by itself.
pub fn fetch(ctx: &Context, r: &RegistryRef, d: &Descriptor, subject: &Digest) -> Result<Artifact> {
    let at = r.by_digest(&d.digest);
    let f = super::pull::RegistryFetch::connect_to(ctx, &at)?;
    let manifest = crate::store::read::BlobFetch::bytes(&f, d, MAX_JSON)?;
    if Digest::of(&manifest) != d.digest {
        return Err(Error::DigestMismatch {
            what: format!("artifact manifest in {r}"),
            expected: d.digest.to_string(),
            found: Digest::of(&manifest).to_string(),
        });
    }
    let m: oci::Manifest = serde_json::from_slice(&manifest)
        .map_err(|e| Error::format(format!("artifact {} in {r}", d.digest), e.to_string()))?;
    let layer = m
        .layers
        .first()
        .ok_or_else(|| Error::format(format!("artifact {} in {r}", d.digest), "no layer"))?;
    if layer.size > attest::MAX_DOCUMENT {
        return Err(Error::format(
            format!("artifact {} in {r}", d.digest),
            format!("its document is {} bytes, over {}", layer.size, attest::MAX_DOCUMENT),
        ));
    }
    if m.subject.as_ref().map(|s| &s.digest) != Some(subject) {
        return Err(Error::format(
            format!("artifact {} in {r}", d.digest),
            format!("it is listed for {subject} but is about another manifest"),
        ));
    }
    let doc = crate::store::read::BlobFetch::bytes(&f, layer, attest::MAX_DOCUMENT)?;
    Artifact::from_parts(manifest, doc)
}

/// Pushes artifacts and makes them findable from their subjects.
pub(super) async fn push_artifacts(s: &Session<'_>, attached: &[Artifact]) -> Result<()> {
    if attached.is_empty() {
        return Ok(());
    }
    let mut indexed_by_registry = false;
    for a in attached {
        for (desc, bytes) in a.blobs() {
            push_bytes(s, desc, Bytes::copy_from_slice(bytes)).await?;
        }
        let body = Bytes::copy_from_slice(a.manifest_bytes());
        let put = put_manifest(
            &s.client,
            &s.repo,
            &s.scopes,
            &a.digest().to_string(),
            oci::MEDIA_TYPE_MANIFEST,
            &body,
            a.digest(),
        )
        .await?;
        // OCI 1.1: a registry that indexes the subject says so in OCI-Subject.
        indexed_by_registry |= put == Put::SubjectIndexed;
    }
    if indexed_by_registry || api_supported(&s.client, &s.repo, &s.scopes, attached).await? {
        return Ok(());
    }
    let mut by_subject: std::collections::BTreeMap<Digest, Vec<Descriptor>> = Default::default();
    for a in attached {
        if let Some(subject) = a.subject() {
            by_subject
                .entry(subject.digest.clone())
                .or_default()
                .push(a.descriptor());
        }
    }
    for (subject, descs) in by_subject {
        let tag = crate::attest::referrers_tag(&subject);
        if let Some(index) = merged_tag_index(&s.client, &s.repo, &s.scopes, &tag, descs).await? {
            let d = Digest::of(&index);
            put_manifest(
                &s.client,
                &s.repo,
                &s.scopes,
                &tag,
                oci::MEDIA_TYPE_INDEX,
                &Bytes::from(index),
                &d,
            )
            .await?;
        }
    }
    Ok(())
}
