//! OCI registries as a sink (push) and a source (pull), on kiln's own client
//! (see `client`). Push: blobs in parallel (bounded), HEAD to skip what is
//! there, cross-repository mount when kiln knows another repository on the
//! same registry holds the blob, one streaming PUT (or resumable chunks),
//! then the manifest bytes exactly as hashed, then the tags. Pull: manifests
//! and indices of all four media types, platform selection, every blob
//! verified while it streams into a local content store shared across runs.

pub mod auth;
pub mod client;
pub mod reference;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::{StatusCode, Url};

pub use client::{Client, Options};
pub use reference::RegistryRef;

use crate::digest::{Digest, HashingWriter};
use crate::image::{BlobSource, FileBlob, Image, Layer};
use crate::oci::{self, Descriptor, Index, Platform};
use crate::{Error, Result};

static OPTIONS: OnceLock<Options> = OnceLock::new();

/// Sets the registry options for this process (the CLI does, once).
pub fn set_options(o: Options) {
    let _ = OPTIONS.set(o);
}

/// The registry options in force.
pub fn options() -> Options {
    OPTIONS.get().cloned().unwrap_or_default()
}

const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Where pulled blobs are kept, shared across runs: `<cache>/blobs/sha256/HEX`.
pub fn content_store() -> PathBuf {
    crate::build::cache_dir().join("blobs")
}

/// Remembers which repositories of a registry hold a blob, so a push to a
/// sibling repository can mount instead of uploading.
fn location_file(registry: &str, digest: &Digest) -> PathBuf {
    let reg = registry.replace(['/', ':'], "_");
    crate::build::cache_dir()
        .join("blob-locations")
        .join(reg)
        .join(digest.hex())
}

fn remember_location(registry: &str, repo: &str, digest: &Digest) {
    let f = location_file(registry, digest);
    let mut repos = std::fs::read_to_string(&f).unwrap_or_default();
    if repos.lines().any(|l| l == repo) {
        return;
    }
    repos.push_str(repo);
    repos.push('\n');
    if let Some(p) = f.parent() {
        let _ = std::fs::create_dir_all(p);
    }
    let _ = crate::store::write_atomic(&f, repos.as_bytes());
}

fn known_locations(registry: &str, repo: &str, digest: &Digest) -> Vec<String> {
    std::fs::read_to_string(location_file(registry, digest))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.is_empty() && *l != repo)
        .map(str::to_string)
        .collect()
}

/// Streams a blocking reader as chunks (read on a blocking thread).
fn read_stream(mut r: Box<dyn std::io::Read + Send>) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            match r.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|i| (i, rx)) })
}

/// A blob to push: its descriptor and where to read it.
struct PushBlob {
    desc: Descriptor,
    source: Arc<dyn BlobSource>,
}

#[derive(Debug)]
struct BytesBlob(Bytes);

impl BlobSource for BytesBlob {
    fn open(&self) -> Result<Box<dyn std::io::Read + Send>> {
        Ok(Box::new(std::io::Cursor::new(self.0.clone())))
    }
}

/// What a push did, for the report and the benchmark.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PushReport {
    pub digest: String,
    pub uploaded: usize,
    pub skipped: usize,
    pub mounted: usize,
    pub bytes_uploaded: u64,
    pub requests: std::collections::BTreeMap<String, u64>,
}

/// Pushes `image` to `dest`, then tags it with every name in `extra_tags`.
pub fn push(image: &Image, dest: &RegistryRef, extra_tags: &[String]) -> Result<PushReport> {
    let rt = crate::store::daemon::runtime()?;
    rt.block_on(push_async(image, dest, extra_tags))
}

async fn push_async(image: &Image, dest: &RegistryRef, extra_tags: &[String]) -> Result<PushReport> {
    let client = Client::connect(dest, &options()).await?;
    let repo = dest.repository.clone();
    let push_scope = vec![client::scope(&repo, "pull,push")];
    let mut blobs: Vec<PushBlob> = image
        .layers()
        .iter()
        .map(|l| PushBlob {
            desc: l.descriptor.clone(),
            source: l.source.clone(),
        })
        .collect();
    blobs.push(PushBlob {
        desc: image.manifest().config.clone(),
        source: Arc::new(BytesBlob(Bytes::copy_from_slice(image.config_bytes()))),
    });
    blobs.dedup_by(|a, b| a.desc.digest == b.desc.digest);
    let parallel = client.opts.parallel.max(1);
    let outcomes: Vec<Outcome> =
        futures_util::stream::iter(blobs.iter().map(|b| push_blob(&client, &repo, &push_scope, b)))
            .buffer_unordered(parallel)
            .try_collect()
            .await?;
    let mut report = PushReport {
        digest: image.digest().to_string(),
        ..Default::default()
    };
    for o in &outcomes {
        match o {
            Outcome::Skipped => report.skipped += 1,
            Outcome::Mounted => report.mounted += 1,
            Outcome::Uploaded(n) => {
                report.uploaded += 1;
                report.bytes_uploaded += n;
            }
        }
    }
    for b in &blobs {
        remember_location(&client.registry, &repo, &b.desc.digest);
    }
    // The manifest only after every blob is there: no tag ever names an incomplete image.
    let mut tags: Vec<String> = Vec::new();
    if let Some(t) = &dest.tag {
        tags.push(t.clone());
    }
    tags.extend(extra_tags.iter().cloned());
    if tags.is_empty() {
        tags.push(image.digest().to_string());
    }
    let media_type = image
        .manifest()
        .media_type
        .clone()
        .unwrap_or_else(|| oci::MEDIA_TYPE_MANIFEST.into());
    let body = Bytes::copy_from_slice(image.manifest_bytes());
    for t in &tags {
        put_manifest(&client, &repo, &push_scope, t, &media_type, &body, image.digest()).await?;
    }
    report.requests = client.stats.snapshot();
    Ok(report)
}

/// Pushes a multi-platform image: every child by digest first, then the
/// index bytes exactly as stored, under the tags.
pub fn push_index(
    multi: &crate::store::layout::MultiImage,
    dest: &RegistryRef,
    extra_tags: &[String],
) -> Result<PushReport> {
    let rt = crate::store::daemon::runtime()?;
    rt.block_on(async {
        let mut total = PushReport {
            digest: Digest::of(&multi.index_bytes).to_string(),
            ..Default::default()
        };
        let by_digest = RegistryRef {
            tag: None,
            digest: None,
            ..dest.clone()
        };
        for child in &multi.children {
            // No tag: pushed by digest, so nothing points at it until the index does.
            let r = push_async(child, &by_digest, &[]).await?;
            total.uploaded += r.uploaded;
            total.skipped += r.skipped;
            total.mounted += r.mounted;
            total.bytes_uploaded += r.bytes_uploaded;
        }
        let client = Client::connect(dest, &options()).await?;
        let scopes = vec![client::scope(&dest.repository, "pull,push")];
        let mut tags: Vec<String> = dest.tag.iter().cloned().collect();
        tags.extend(extra_tags.iter().cloned());
        let digest = Digest::of(&multi.index_bytes);
        if tags.is_empty() {
            tags.push(digest.to_string());
        }
        let body = Bytes::copy_from_slice(&multi.index_bytes);
        for t in &tags {
            put_manifest(&client, &dest.repository, &scopes, t, &multi.media_type, &body, &digest).await?;
        }
        total.requests = client.stats.snapshot();
        Ok(total)
    })
}

/// PUTs manifest bytes exactly as hashed and checks the registry agrees on the digest.
async fn put_manifest(
    client: &Client,
    repo: &str,
    scopes: &[String],
    reference: &str,
    media_type: &str,
    body: &Bytes,
    digest: &Digest,
) -> Result<()> {
    let url = client.url(&format!("{repo}/manifests/{reference}"));
    // Re-pushing an unchanged image costs one HEAD here instead of a PUT.
    let head = client
        .send(scopes, || {
            client
                .http()
                .head(url.clone())
                .header(reqwest::header::ACCEPT, ACCEPT_MANIFESTS)
        })
        .await?;
    if head.status().is_success()
        && head
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            == Some(digest.to_string().as_str())
    {
        return Ok(());
    }
    let resp = client
        .send(scopes, || {
            client
                .http()
                .put(url.clone())
                .header(reqwest::header::CONTENT_TYPE, media_type)
                .body(Client::bytes_body(body))
        })
        .await?;
    if resp.status() != StatusCode::CREATED && !resp.status().is_success() {
        return Err(client
            .error_from(&format!("pushing the manifest as {repo}:{reference}"), resp)
            .await);
    }
    if let Some(d) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        && d != digest.to_string()
    {
        return Err(Error::DigestMismatch {
            what: format!("manifest stored by {} as {repo}:{reference}", client.registry),
            expected: digest.to_string(),
            found: d.to_string(),
        });
    }
    Ok(())
}

enum Outcome {
    Skipped,
    Mounted,
    Uploaded(u64),
}

async fn blob_exists(client: &Client, repo: &str, scopes: &[String], d: &Digest) -> Result<bool> {
    let url = client.url(&format!("{repo}/blobs/{d}"));
    let resp = client.send(scopes, || client.http().head(url.clone())).await?;
    Ok(match resp.status() {
        s if s.is_success() => true,
        StatusCode::NOT_FOUND => false,
        _ => return Err(client.error_from(&format!("checking blob {d}"), resp).await),
    })
}

async fn push_blob(client: &Client, repo: &str, scopes: &[String], b: &PushBlob) -> Result<Outcome> {
    let d = &b.desc.digest;
    if blob_exists(client, repo, scopes, d).await? {
        return Ok(Outcome::Skipped);
    }
    // Try a cross-repository mount from repositories known to hold it.
    let mut session: Option<Url> = None;
    for from in known_locations(&client.registry, repo, d) {
        let mut mount_scopes = scopes.to_vec();
        mount_scopes.push(client::scope(&from, "pull"));
        let mut url = client.url(&format!("{repo}/blobs/uploads/"));
        url.query_pairs_mut()
            .append_pair("mount", &d.to_string())
            .append_pair("from", &from);
        let resp = client
            .send(&mount_scopes, || {
                client
                    .http()
                    .post(url.clone())
                    .header(reqwest::header::CONTENT_LENGTH, "0")
            })
            .await?;
        match resp.status() {
            StatusCode::CREATED => return Ok(Outcome::Mounted),
            StatusCode::ACCEPTED => {
                session = Some(client.resolve_location(&url, &resp)?);
                break;
            }
            // Not allowed or not there: upload instead.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => continue,
            _ => return Err(client.error_from(&format!("mounting blob {d} from {from}"), resp).await),
        }
    }
    let mut attempts = 0;
    loop {
        attempts += 1;
        let location = match session.take() {
            Some(l) => (l, 0),
            None => start_upload(client, repo, scopes).await?,
        };
        let r = match client.opts.chunk_size {
            Some(cs) => upload_chunked(client, scopes, location.0, location.1.max(cs), b).await,
            None => upload_monolithic(client, scopes, location.0, b).await,
        };
        match r {
            Ok(()) => return Ok(Outcome::Uploaded(b.desc.size)),
            Err(e) if attempts < client.opts.attempts && is_retryable(&e) => {
                tokio::time::sleep(client.delay(attempts, &reqwest::header::HeaderMap::new())).await;
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_retryable(e: &Error) -> bool {
    match e {
        Error::Registry { retryable, .. } => *retryable,
        Error::Io { .. } => true,
        _ => false,
    }
}

/// POST …/blobs/uploads/ → (session URL, minimum chunk length).
async fn start_upload(client: &Client, repo: &str, scopes: &[String]) -> Result<(Url, u64)> {
    let url = client.url(&format!("{repo}/blobs/uploads/"));
    let resp = client
        .send(scopes, || {
            client
                .http()
                .post(url.clone())
                .header(reqwest::header::CONTENT_LENGTH, "0")
        })
        .await?;
    if resp.status() != StatusCode::ACCEPTED {
        return Err(client.error_from(&format!("starting an upload to {repo}"), resp).await);
    }
    let min = resp
        .headers()
        .get("oci-chunk-min-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((client.resolve_location(&url, &resp)?, min))
}

/// Where a session URL becomes the final PUT: `?digest=` appended to whatever state it carries.
fn with_digest(mut u: Url, d: &Digest) -> Url {
    u.query_pairs_mut().append_pair("digest", &d.to_string());
    u
}

async fn upload_monolithic(client: &Client, scopes: &[String], location: Url, b: &PushBlob) -> Result<()> {
    let url = with_digest(location, &b.desc.digest);
    // One streaming PUT. A new attempt re-opens the source (send() rebuilds the body).
    let size = b.desc.size;
    let resp = client
        .send(scopes, || {
            let body = match b.source.open() {
                Ok(r) => reqwest::Body::wrap_stream(read_stream(r)),
                Err(e) => reqwest::Body::wrap_stream(futures_util::stream::once(async move {
                    Err::<Bytes, std::io::Error>(std::io::Error::other(e.to_string()))
                })),
            };
            client
                .http()
                .put(url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::CONTENT_LENGTH, size.to_string())
                .body(body)
        })
        .await?;
    if resp.status() != StatusCode::CREATED {
        return Err(client
            .error_from(&format!("uploading blob {}", b.desc.digest), resp)
            .await);
    }
    check_stored_digest(client, &resp, &b.desc.digest)
}

fn check_stored_digest(client: &Client, resp: &reqwest::Response, d: &Digest) -> Result<()> {
    if let Some(found) = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        && found != d.to_string()
    {
        return Err(Error::DigestMismatch {
            what: format!("blob stored by {}", client.registry),
            expected: d.to_string(),
            found: found.to_string(),
        });
    }
    Ok(())
}

/// Chunked upload: PATCH chunks with Content-Range; after a dropped
/// connection, asks the registry how much it has (GET session → Range) and
/// resumes from there; then PUT ?digest=.
async fn upload_chunked(client: &Client, scopes: &[String], mut location: Url, chunk: u64, b: &PushBlob) -> Result<()> {
    let size = b.desc.size;
    let mut offset = 0u64;
    let mut failures = 0;
    while offset < size {
        let end = (offset + chunk).min(size);
        let data = read_range(b.source.as_ref(), offset, end - offset)?;
        let loc = location.clone();
        let range = format!("{offset}-{}", end - 1);
        let sent = client
            .send_once(scopes, || {
                client
                    .http()
                    .patch(loc.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                    .header("content-range", range.clone())
                    .header(reqwest::header::CONTENT_LENGTH, data.len().to_string())
                    .body(Client::bytes_body(&data))
            })
            .await;
        match sent {
            Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                location = client.resolve_location(&location, &resp)?;
                offset = end;
                failures = 0;
            }
            Ok(resp) if !client::retryable(resp.status()) => {
                return Err(client
                    .error_from(&format!("uploading a chunk of {}", b.desc.digest), resp)
                    .await);
            }
            _ => {
                // Dropped or refused for now: ask where the upload stands and resume.
                failures += 1;
                if failures >= client.opts.attempts {
                    return Err(
                        client.protocol_error(&format!("upload of {} kept failing at byte {offset}", b.desc.digest))
                    );
                }
                tokio::time::sleep(client.delay(failures, &reqwest::header::HeaderMap::new())).await;
                let loc = location.clone();
                let status = client.send(scopes, || client.http().get(loc.clone())).await?;
                if status.status() == StatusCode::NO_CONTENT || status.status().is_success() {
                    if let Some(r) = status.headers().get("range").and_then(|v| v.to_str().ok()) {
                        // "0-N": the registry has bytes 0..=N.
                        // Distribution reports an empty upload as "0-0" too, so
                        // "0-0" after nothing acknowledged means zero bytes.
                        if let Some(n) = r.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()) {
                            offset = if n == 0 && offset == 0 { 0 } else { n + 1 };
                        }
                    } else {
                        offset = 0;
                    }
                    if status.headers().contains_key(reqwest::header::LOCATION) {
                        location = client.resolve_location(&loc, &status)?;
                    }
                } else {
                    // The session is gone: start again from zero.
                    return Err(Error::Registry {
                        registry: client.registry.clone(),
                        status: status.status().as_u16(),
                        code: "BLOB_UPLOAD_UNKNOWN".into(),
                        message: "the upload session was lost".into(),
                        retryable: true,
                    });
                }
            }
        }
    }
    let url = with_digest(location, &b.desc.digest);
    let resp = client
        .send(scopes, || {
            client
                .http()
                .put(url.clone())
                .header(reqwest::header::CONTENT_LENGTH, "0")
        })
        .await?;
    if resp.status() != StatusCode::CREATED {
        return Err(client
            .error_from(&format!("finishing the upload of {}", b.desc.digest), resp)
            .await);
    }
    check_stored_digest(client, &resp, &b.desc.digest)
}

fn read_range(src: &dyn BlobSource, offset: u64, len: u64) -> Result<Bytes> {
    use std::io::Read;
    let mut r = src.open()?;
    std::io::copy(&mut (&mut r).take(offset), &mut std::io::sink()).map_err(|e| Error::Io {
        context: "reading a blob".into(),
        source: e,
    })?;
    let mut buf = Vec::with_capacity(len as usize);
    r.take(len).read_to_end(&mut buf).map_err(|e| Error::Io {
        context: "reading a blob".into(),
        source: e,
    })?;
    Ok(Bytes::from(buf))
}

/// Pulls `r` (choosing `platform` from an index) into the content store.
pub fn pull(r: &RegistryRef, platform: Option<&Platform>) -> Result<Image> {
    let rt = crate::store::daemon::runtime()?;
    rt.block_on(pull_async(r, platform))
}

/// Resolves a reference to its manifest digest (for kiln lock): for an index,
/// the digest of the platform's manifest.
pub fn resolve(r: &RegistryRef, platform: Option<&Platform>) -> Result<Digest> {
    let rt = crate::store::daemon::runtime()?;
    rt.block_on(async {
        let client = Client::connect(r, &options()).await?;
        let scopes = vec![client::scope(&r.repository, "pull")];
        let (bytes, media_type, digest) =
            get_manifest(&client, &r.repository, &scopes, &r.reference(), r.digest.as_ref()).await?;
        if is_index(&media_type, &bytes) {
            let child = choose(&bytes, platform, r)?;
            return Ok(child.digest);
        }
        Ok(digest)
    })
}

fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    media_type == oci::MEDIA_TYPE_INDEX
        || media_type == oci::MEDIA_TYPE_DOCKER_LIST
        || (media_type.is_empty()
            && serde_json::from_slice::<serde_json::Value>(bytes).is_ok_and(|v| v.get("manifests").is_some()))
}

fn choose(index_bytes: &[u8], platform: Option<&Platform>, r: &RegistryRef) -> Result<Descriptor> {
    let index: Index =
        serde_json::from_slice(index_bytes).map_err(|e| Error::format(format!("index of {r}"), e.to_string()))?;
    let want = platform.cloned().unwrap_or_else(Platform::host);
    index
        .manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| p.satisfies(&want)))
        .cloned()
        .ok_or_else(|| {
            let have: Vec<String> = index
                .manifests
                .iter()
                .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
                .collect();
            Error::NotFound {
                what: format!("an image for {want}"),
                location: r.to_string(),
                hint: format!("; it has {}; pass --platform", have.join(", ")),
            }
        })
}

async fn get_manifest(
    client: &Client,
    repo: &str,
    scopes: &[String],
    reference: &str,
    expected: Option<&Digest>,
) -> Result<(Vec<u8>, String, Digest)> {
    let url = client.url(&format!("{repo}/manifests/{reference}"));
    let resp = client.get_following(scopes, url, Some(ACCEPT_MANIFESTS)).await?;
    if !resp.status().is_success() {
        return Err(client
            .error_from(&format!("fetching the manifest {repo}:{reference}"), resp)
            .await);
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
        .unwrap_or_default();
    let header_digest = resp
        .headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = resp.bytes().await.map_err(|e| client.transport_error(&e))?;
    if bytes.len() > 16 << 20 {
        return Err(Error::format(
            format!("manifest {repo}:{reference}"),
            "larger than 16 MiB",
        ));
    }
    let digest = Digest::of(&bytes);
    if let Some(want) = expected
        && &digest != want
    {
        return Err(Error::DigestMismatch {
            what: format!("manifest {repo}@{want}"),
            expected: want.to_string(),
            found: digest.to_string(),
        });
    }
    if let Some(h) = header_digest
        && h != digest.to_string()
    {
        return Err(Error::DigestMismatch {
            what: format!("manifest {repo}:{reference} (Docker-Content-Digest)"),
            expected: h,
            found: digest.to_string(),
        });
    }
    // The body's own mediaType must agree with the Content-Type.
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
        && let Some(mt) = v.get("mediaType").and_then(|m| m.as_str())
        && !content_type.is_empty()
        && content_type != mt
        && content_type != "application/json"
    {
        return Err(Error::format(
            format!("manifest {repo}:{reference}"),
            format!("Content-Type {content_type} but mediaType {mt}"),
        ));
    }
    let media_type = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
        .unwrap_or(content_type);
    Ok((bytes.to_vec(), media_type, digest))
}

/// Downloads a blob into the content store, verifying size and digest
/// before it gets its name. Nothing is stored when they do not match.
async fn fetch_blob(client: &Client, repo: &str, scopes: &[String], d: &Descriptor) -> Result<PathBuf> {
    let store = content_store().join("sha256");
    let path = store.join(d.digest.hex());
    if std::fs::metadata(&path).map(|m| m.len() == d.size).unwrap_or(false) {
        return Ok(path);
    }
    std::fs::create_dir_all(&store).map_err(Error::write(&store))?;
    let mut attempts = 0;
    loop {
        attempts += 1;
        match fetch_blob_once(client, repo, scopes, d, &store, &path).await {
            Err(e) if attempts < client.opts.attempts && is_retryable(&e) => {
                tokio::time::sleep(client.delay(attempts, &reqwest::header::HeaderMap::new())).await;
            }
            r => return r.map(|_| path),
        }
    }
}

async fn fetch_blob_once(
    client: &Client,
    repo: &str,
    scopes: &[String],
    d: &Descriptor,
    store: &Path,
    path: &Path,
) -> Result<()> {
    use std::io::Write;
    let url = client.url(&format!("{repo}/blobs/{}", d.digest));
    let resp = client.get_following(scopes, url, None).await?;
    if !resp.status().is_success() {
        return Err(client.error_from(&format!("fetching blob {}", d.digest), resp).await);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-tmp-")
        .tempfile_in(store)
        .map_err(Error::write(store))?;
    let mut w = HashingWriter::new(std::io::BufWriter::new(tmp.reopen().map_err(Error::write(tmp.path()))?));
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::Registry {
            registry: client.registry.clone(),
            status: 0,
            code: "TRANSPORT".into(),
            message: format!("blob {} download broke off: {e}", d.digest),
            retryable: true,
        })?;
        if w.count() + chunk.len() as u64 > d.size {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", d.digest),
                expected: format!("{} bytes", d.size),
                found: "more".into(),
            });
        }
        w.write_all(&chunk).map_err(Error::write(tmp.path()))?;
    }
    let (buf, digest, n) = w.finish();
    if n != d.size {
        return Err(Error::Registry {
            registry: client.registry.clone(),
            status: 0,
            code: "TRANSPORT".into(),
            message: format!("blob {} ended after {n} of {} bytes", d.digest, d.size),
            retryable: true,
        });
    }
    if digest != d.digest {
        return Err(Error::DigestMismatch {
            what: format!("blob from {}/{repo}", client.registry),
            expected: d.digest.to_string(),
            found: digest.to_string(),
        });
    }
    let f = buf.into_inner().map_err(|e| Error::Write {
        path: tmp.path().to_path_buf(),
        source: e.into_error(),
    })?;
    f.sync_all().map_err(Error::write(tmp.path()))?;
    crate::store::make_readable(&f, path)?;
    tmp.persist(path).map_err(|e| Error::Write {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

async fn pull_async(r: &RegistryRef, platform: Option<&Platform>) -> Result<Image> {
    let client = Client::connect(r, &options()).await?;
    let repo = &r.repository;
    let scopes = vec![client::scope(repo, "pull")];
    let (mut bytes, mut media_type, mut digest) =
        get_manifest(&client, repo, &scopes, &r.reference(), r.digest.as_ref()).await?;
    if is_index(&media_type, &bytes) {
        let child = choose(&bytes, platform, r)?;
        (bytes, media_type, digest) =
            get_manifest(&client, repo, &scopes, &child.digest.to_string(), Some(&child.digest)).await?;
    }
    let _ = (media_type, digest);
    let manifest: oci::Manifest =
        serde_json::from_slice(&bytes).map_err(|e| Error::format(format!("manifest of {r}"), e.to_string()))?;
    let cfg_path = fetch_blob(&client, repo, &scopes, &manifest.config).await?;
    let config_bytes = std::fs::read(&cfg_path).map_err(Error::read(&cfg_path))?;
    let config: oci::ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| Error::format(format!("config of {r}"), e.to_string()))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::format(
            format!("image {r}"),
            "the config's diff_ids do not match the manifest's layers",
        ));
    }
    let paths: Vec<PathBuf> =
        futures_util::stream::iter(manifest.layers.iter().map(|d| fetch_blob(&client, repo, &scopes, d)))
            .buffered(client.opts.parallel.max(1))
            .try_collect()
            .await?;
    let layers = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .zip(paths)
        .map(|((d, diff_id), path)| {
            remember_location(&client.registry, repo, &d.digest);
            Layer {
                descriptor: d.clone(),
                diff_id: diff_id.clone(),
                source: Arc::new(FileBlob { path, _keep: None }),
            }
        })
        .collect();
    remember_location(&client.registry, repo, &manifest.config.digest);
    Image::from_parts(bytes, config_bytes, layers)
}

/// Pushes images to a registry reference.
pub struct RegistrySink {
    dest: RegistryRef,
    extra_tags: Vec<String>,
}

impl RegistrySink {
    pub fn new(dest: RegistryRef, extra_tags: Vec<String>) -> Self {
        RegistrySink { dest, extra_tags }
    }
}

impl crate::store::Sink for RegistrySink {
    fn put(&self, image: &Image) -> Result<()> {
        push(image, &self.dest, &self.extra_tags).map(|_| ())
    }
}
