//! Push: blobs in parallel (bounded), HEAD to skip what is there,
//! cross-repository mount when kiln knows another repository on the same
//! registry holds the blob, one streaming PUT (or resumable chunks), then
//! the manifest bytes exactly as hashed, then the tags. An index pushes its
//! children by digest first, in one authenticated session.
//!
//! One file on purpose (~530 lines): the upload protocol (mount, monolithic
//! PUT, chunked PATCH with resume from the registry's Range) reads best
//! together; its requests share the session and the client's one retry policy.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use reqwest::{StatusCode, Url};

use super::client::{self, Client};
use super::locations::Locations;
use super::{ACCEPT_MANIFESTS, RegistryRef};
use crate::attest::Artifact;
use crate::context::Context;
use crate::digest::Digest;
use crate::image::{AnyImage, BlobSource, Image};
use crate::oci::{self, Descriptor};
use crate::{Error, Result};

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
pub(super) struct PushBlob {
    pub(super) desc: Descriptor,
    pub(super) source: Arc<dyn BlobSource>,
}

#[derive(Debug)]
pub(super) struct BytesBlob(pub(super) Bytes);

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
    /// Why a tag's release history could not be written (the push itself
    /// succeeded: the tag names the new image).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history_warning: Option<String>,
}

/// One authenticated session for a push: the client (tokens, retry budget,
/// request counts) is shared by an index and every child it pushes.
pub(super) struct Session<'a> {
    pub(super) client: Client,
    pub(super) repo: String,
    pub(super) scopes: Vec<String>,
    pub(super) locations: &'a Locations,
}

impl Session<'_> {
    fn tally(&self, report: &mut PushReport, outcomes: &[Outcome]) {
        for o in outcomes {
            match o {
                Outcome::Skipped => report.skipped += 1,
                Outcome::Mounted => report.mounted += 1,
                Outcome::Uploaded(n) => {
                    report.uploaded += 1;
                    report.bytes_uploaded += n;
                }
            }
        }
    }
}

/// Pushes `image` to `dest`, then tags it with every name in `extra_tags`.
pub fn push(ctx: &Context, image: &Image, dest: &RegistryRef, extra_tags: &[String]) -> Result<PushReport> {
    push_any(ctx, &AnyImage::Image(image.clone()), dest, extra_tags)
}

/// Pushes an image, or an index with every child (children by digest
/// first, then the index bytes exactly as stored), then the tags.
pub fn push_any(ctx: &Context, what: &AnyImage, dest: &RegistryRef, extra_tags: &[String]) -> Result<PushReport> {
    push_attached(ctx, what, &[], dest, extra_tags)
}

/// [`push_any`], then the documents attached to it (each an artifact
/// manifest by digest, whose `subject` is the image or one of its children),
/// then, when the registry does not index referrers itself, the referrers
/// tag of each subject.
pub fn push_attached(
    ctx: &Context,
    what: &AnyImage,
    attached: &[Artifact],
    dest: &RegistryRef,
    extra_tags: &[String],
) -> Result<PushReport> {
    let rt = crate::store::daemon::runtime()?;
    let locations = Locations::new(&ctx.cache);
    rt.block_on(async {
        let session = Session::connect(ctx, dest, &locations).await?;
        let mut report = PushReport {
            digest: what.digest().to_string(),
            ..Default::default()
        };
        push_children(&session, what, &mut report).await?;
        let (media_type, body) = manifest_body(what);
        // The manifest only after every blob is there: no tag ever names an incomplete image.
        let mut tags: Vec<String> = dest.tag.iter().cloned().collect();
        tags.extend(extra_tags.iter().cloned());
        if tags.is_empty() {
            tags.push(what.digest().to_string());
        }
        let mut moved = Vec::new();
        for t in &tags {
            let put = put_manifest(
                &session.client,
                &session.repo,
                &session.scopes,
                t,
                &media_type,
                &body,
                what.digest(),
            )
            .await?;
            if let Put::Stored { previous } = put
                && dest.digest.is_none()
                && crate::reference::valid_tag(t)
            {
                moved.push((t.clone(), previous));
            }
        }
        // The documents first: a history that cannot be written must not
        // leave the image without them.
        super::referrers::push_artifacts(&session, attached).await?;
        // Each tag that moved gets the move in its release history. The
        // push has happened (the tag names the new image); a history that
        // cannot be written is a warning, not a failed push.
        for (t, previous) in moved {
            let mv = super::history::new_move(previous, what.digest().clone(), &media_type, "push");
            if let Err(e) = super::history::record(&session, &t, mv).await {
                let w = format!(
                    "{}:{t} now names {}, but its release history could not be written ({e}); `kiln rollback --steps` will not know this release",
                    session.repo,
                    what.digest()
                );
                ctx.progress.warn(&w);
                report.history_warning = Some(w);
            }
        }
        report.requests = session.client.stats.snapshot();
        Ok(report)
    })
}

impl<'a> Session<'a> {
    /// Connects to `dest`'s registry for pulling and pushing its repository.
    pub(super) async fn connect(ctx: &Context, dest: &RegistryRef, locations: &'a Locations) -> Result<Session<'a>> {
        let client = Client::connect(dest, &ctx.registry).await?;
        Ok(Session {
            scopes: vec![client::scope(&dest.repository, "pull,push")],
            repo: dest.repository.clone(),
            client,
            locations,
        })
    }
}

/// Pushes a small blob held in memory (a document, a payload, a config).
pub(super) async fn push_bytes(s: &Session<'_>, desc: Descriptor, bytes: Bytes) -> Result<Outcome> {
    push_blob(
        s,
        &PushBlob {
            desc,
            source: Arc::new(BytesBlob(bytes)),
        },
    )
    .await
}

/// HEAD of a manifest by tag or digest, accepting every manifest type.
pub(super) async fn head_manifest(
    client: &Client,
    scopes: &[String],
    repo: &str,
    reference: &str,
) -> Result<reqwest::Response> {
    let url = client.url(&format!("{repo}/manifests/{reference}"));
    client
        .send(scopes, || {
            client
                .http()
                .head(url.clone())
                .header(reqwest::header::ACCEPT, ACCEPT_MANIFESTS)
        })
        .await
}

/// What a manifest PUT found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Put {
    /// The registry already had these bytes under the reference.
    Present,
    /// Stored; the reference named `previous` before (None: nothing).
    Stored { previous: Option<Digest> },
    /// Stored, and the registry indexed its subject (OCI-Subject header).
    SubjectIndexed,
}

fn manifest_body(what: &AnyImage) -> (String, Bytes) {
    match what {
        AnyImage::Image(i) => (
            i.manifest()
                .media_type
                .clone()
                .unwrap_or_else(|| oci::MEDIA_TYPE_MANIFEST.into()),
            Bytes::copy_from_slice(i.manifest_bytes()),
        ),
        AnyImage::Index(i) => (i.media_type().to_string(), Bytes::copy_from_slice(i.bytes())),
    }
}

/// Uploads what `what` needs before its own manifest can be put: an
/// image's blobs, or an index's children (each put by digest, untagged, so
/// nothing points at it until the index does).
fn push_children<'a>(
    s: &'a Session<'_>,
    what: &'a AnyImage,
    report: &'a mut PushReport,
) -> futures_util::future::LocalBoxFuture<'a, Result<()>> {
    Box::pin(async move {
        match what {
            AnyImage::Image(image) => {
                let outcomes = push_blobs(s, image).await?;
                s.tally(report, &outcomes);
            }
            AnyImage::Index(index) => {
                for child in index.children() {
                    push_children(s, child, report).await?;
                    let (mt, body) = manifest_body(child);
                    let d = child.digest().to_string();
                    put_manifest(&s.client, &s.repo, &s.scopes, &d, &mt, &body, child.digest()).await?;
                }
            }
        }
        Ok(())
    })
}

async fn push_blobs(s: &Session<'_>, image: &Image) -> Result<Vec<Outcome>> {
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
    let parallel = s.client.opts.parallel.max(1);
    let outcomes: Vec<Outcome> = futures_util::stream::iter(blobs.iter().map(|b| push_blob(s, b)))
        .buffer_unordered(parallel)
        .try_collect()
        .await?;
    for b in &blobs {
        s.locations.remember(&s.client.registry, &s.repo, &b.desc.digest);
    }
    Ok(outcomes)
}

/// PUTs manifest bytes exactly as hashed and checks the registry agrees on
/// the digest. The HEAD before it (which skips an unchanged re-push) also
/// tells what the reference named before.
pub(super) async fn put_manifest(
    client: &Client,
    repo: &str,
    scopes: &[String],
    reference: &str,
    media_type: &str,
    body: &Bytes,
    digest: &Digest,
) -> Result<Put> {
    let url = client.url(&format!("{repo}/manifests/{reference}"));
    // Re-pushing an unchanged image costs one HEAD here instead of a PUT.
    let head = head_manifest(client, scopes, repo, reference).await?;
    let previous: Option<Digest> = if head.status().is_success() {
        head.headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    } else {
        None
    };
    if previous.as_ref() == Some(digest) {
        return Ok(Put::Present);
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
    if resp.headers().contains_key("oci-subject") {
        return Ok(Put::SubjectIndexed);
    }
    Ok(Put::Stored { previous })
}

pub(super) enum Outcome {
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

pub(super) async fn push_blob(s: &Session<'_>, b: &PushBlob) -> Result<Outcome> {
    let (client, repo, scopes) = (&s.client, s.repo.as_str(), s.scopes.as_slice());
    let d = &b.desc.digest;
    if blob_exists(client, repo, scopes, d).await? {
        return Ok(Outcome::Skipped);
    }
    // Try a cross-repository mount from repositories known to hold it.
    let session: Mutex<Option<Url>> = Mutex::new(None);
    for from in s.locations.known(&client.registry, repo, d) {
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
                *session.lock().expect("session") = Some(client.resolve_location(&url, &resp)?);
                break;
            }
            // Not allowed or not there: upload instead.
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => continue,
            _ => return Err(client.error_from(&format!("mounting blob {d} from {from}"), resp).await),
        }
    }
    // Starting the upload and sending it are one operation: a failed PUT
    // leaves a session the registry may have half-filled, so a retry starts
    // a new one. The client retries the operation under its one policy.
    client
        .retrying(|| async {
            let mounted = session.lock().expect("session").take();
            let location = match mounted {
                Some(l) => (l, 0),
                None => start_upload(client, repo, scopes).await?,
            };
            match client.opts.chunk_size {
                Some(cs) => upload_chunked(client, scopes, location.0, location.1.max(cs), b).await,
                None => upload_monolithic(client, scopes, location.0, b).await,
            }
        })
        .await?;
    Ok(Outcome::Uploaded(b.desc.size))
}

/// POST …/blobs/uploads/ → (session URL, minimum chunk length).
async fn start_upload(client: &Client, repo: &str, scopes: &[String]) -> Result<(Url, u64)> {
    let url = client.url(&format!("{repo}/blobs/uploads/"));
    let resp = client
        .send_once(scopes, || {
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
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        // A registry's minimum chunk is honoured up to a sane bound: a
        // chunk is held in memory.
        .min(MAX_CHUNK);
    Ok((client.resolve_location(&url, &resp)?, min))
}

/// Where a session URL becomes the final PUT: `?digest=` appended to whatever state it carries.
fn with_digest(mut u: Url, d: &Digest) -> Url {
    u.query_pairs_mut().append_pair("digest", &d.to_string());
    u
}

async fn upload_monolithic(client: &Client, scopes: &[String], location: Url, b: &PushBlob) -> Result<()> {
    let url = with_digest(location, &b.desc.digest);
    // One streaming PUT; a retry of the whole operation re-opens the source.
    let size = b.desc.size;
    let resp = client
        .send_once(scopes, || {
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

/// The largest chunk kiln holds in memory, whatever the registry asks.
const MAX_CHUNK: u64 = 256 << 20;

/// Chunked upload: PATCH chunks with Content-Range; after a dropped
/// connection, asks the registry how much it has (GET session → Range) and
/// resumes from there; then PUT ?digest=.
async fn upload_chunked(client: &Client, scopes: &[String], mut location: Url, chunk: u64, b: &PushBlob) -> Result<()> {
    let size = b.desc.size;
    let chunk = chunk.clamp(1, MAX_CHUNK);
    let mut offset = 0u64;
    // Failures are counted until the upload gets past the furthest byte
    // acknowledged so far: a registry that keeps moving the offset back
    // cannot keep kiln looping.
    let (mut failures, mut furthest) = (0, 0u64);
    while offset < size {
        let end = offset.saturating_add(chunk).min(size);
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
                if offset > furthest {
                    furthest = offset;
                    failures = 0;
                }
            }
            Ok(resp) if !client::retryable(resp.status()) => {
                return Err(client
                    .error_from(&format!("uploading a chunk of {}", b.desc.digest), resp)
                    .await);
            }
            _ => {
                // Dropped or refused for now: ask where the upload stands and resume.
                failures += 1;
                if failures >= client.opts.retry.attempts {
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
                            // Never past the blob's end, whatever the registry claims.
                            offset = if n == 0 && offset == 0 {
                                0
                            } else {
                                n.saturating_add(1).min(size)
                            };
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
        .send_once(scopes, || {
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

/// Pushes images to a registry reference.
pub struct RegistrySink {
    ctx: Context,
    dest: RegistryRef,
    extra_tags: Vec<String>,
}

impl RegistrySink {
    pub fn new(ctx: &Context, dest: RegistryRef, extra_tags: Vec<String>) -> Self {
        RegistrySink {
            ctx: ctx.clone(),
            dest,
            extra_tags,
        }
    }
}

impl crate::store::Sink for RegistrySink {
    fn put(&self, image: &Image) -> Result<()> {
        push(&self.ctx, image, &self.dest, &self.extra_tags).map(|_| ())
    }
    fn put_any(&self, what: &AnyImage) -> Result<()> {
        push_any(&self.ctx, what, &self.dest, &self.extra_tags).map(|_| ())
    }
    fn put_attached(&self, what: &AnyImage, attached: &[Artifact]) -> Result<()> {
        push_attached(&self.ctx, what, attached, &self.dest, &self.extra_tags).map(|_| ())
    }
}
