//! Pull: the registry as a [`BlobFetch`]. Manifests, configs and layers are
//! verified while they stream into the content store, and the image is read
//! from there through the one read path ([`crate::store::read`]), like every
//! other source.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};

use super::client::{self, Client};
use super::locations::Locations;
use super::{ACCEPT_MANIFESTS, RegistryRef};
use crate::context::Context;
use crate::digest::Digest;
use crate::image::{AnyImage, BlobSource, FileBlob, Image};
use crate::oci::{self, Descriptor, Platform};
use crate::store::content::ContentStore;
use crate::store::read::{self, BlobFetch, MAX_JSON};
use crate::{Error, Result};

/// A repository of a registry, read into the content store on demand.
pub(super) struct RegistryFetch {
    rt: tokio::runtime::Runtime,
    client: Client,
    reference: RegistryRef,
    scopes: Vec<String>,
    store: ContentStore,
    locations: Locations,
}

impl RegistryFetch {
    /// A fetch from exactly `r`'s registry (no mirrors: what is attached
    /// to an image lives where the image was pushed).
    pub(super) fn connect_to(ctx: &Context, r: &RegistryRef) -> Result<Self> {
        Self::connect(ctx, r, false)
    }

    fn connect(ctx: &Context, r: &RegistryRef, insecure: bool) -> Result<Self> {
        let rt = crate::store::daemon::runtime()?;
        let mut opts = ctx.registry.clone();
        if insecure {
            opts.insecure.push(r.registry.clone());
        }
        let client = rt.block_on(Client::connect(r, &opts))?;
        Ok(RegistryFetch {
            rt,
            client,
            scopes: vec![client::scope(&r.repository, "pull")],
            reference: r.clone(),
            store: ContentStore::open(&ctx.cache)?,
            locations: Locations::new(&ctx.cache),
        })
    }

    /// Connects to the first of `r`'s mirrors (then `r` itself, unless a
    /// registries.conf blocks it) that serves the manifest, and returns the
    /// root of the read. The bytes are checked against `r`'s digest when it
    /// has one, whoever serves them; errors name every place asked.
    fn open(ctx: &Context, r: &RegistryRef) -> Result<(Self, Descriptor)> {
        let endpoints = ctx.registry.mirrors.endpoints(r)?;
        if let [only] = endpoints.as_slice()
            && only.mirror_from.is_none()
        {
            let f = Self::connect(ctx, &only.reference, only.insecure)?;
            let root = f.root()?;
            return Ok((f, root));
        }
        let mut tried = Vec::new();
        for ep in &endpoints {
            let attempt = Self::connect(ctx, &ep.reference, ep.insecure).and_then(|f| {
                let root = f.root()?;
                Ok((f, root))
            });
            match attempt {
                Ok(found) => return Ok(found),
                Err(e) => tried.push(match &ep.mirror_from {
                    Some(file) => format!("mirror {} (from {}): {e}", ep.reference, file.display()),
                    None => format!("{}: {e}", ep.reference),
                }),
            }
        }
        Err(Error::NotFound {
            what: format!("image {r}"),
            location: if endpoints.iter().all(|e| e.mirror_from.is_some()) {
                "its mirrors (the registry itself is blocked)".into()
            } else {
                "its mirrors or its registry".into()
            },
            hint: format!(
                "; asked in order: {}. Push the image to the mirror, or change the reference",
                tried.join("; ")
            ),
        })
    }
    /// GETs the manifest the reference names, keeps it in the content
    /// store, and returns its descriptor: the root of the read.
    fn root(&self) -> Result<Descriptor> {
        let r = &self.reference;
        let (bytes, media_type, digest) = self.rt.block_on(get_manifest(
            &self.client,
            &r.repository,
            &self.scopes,
            &r.reference(),
            r.digest.as_ref(),
        ))?;
        let d = Descriptor::new(media_type, digest, bytes.len() as u64);
        self.store.put_bytes(&d, &bytes)?;
        Ok(d)
    }

    fn is_manifest(d: &Descriptor) -> bool {
        matches!(
            d.media_type.as_str(),
            oci::MEDIA_TYPE_MANIFEST
                | oci::MEDIA_TYPE_INDEX
                | oci::MEDIA_TYPE_DOCKER_MANIFEST
                | oci::MEDIA_TYPE_DOCKER_LIST
        )
    }

    /// Makes sure the store holds `d` intact (fetching it when not);
    /// returns its path.
    async fn ensure(&self, d: &Descriptor) -> Result<std::path::PathBuf> {
        if let Some(p) = self.store.get(d)? {
            return Ok(p);
        }
        if Self::is_manifest(d) {
            let (bytes, _, _) = get_manifest(
                &self.client,
                &self.reference.repository,
                &self.scopes,
                &d.digest.to_string(),
                Some(&d.digest),
            )
            .await?;
            return self.store.put_bytes(d, &bytes);
        }
        self.client
            .retrying(|| fetch_blob_once(&self.client, &self.reference.repository, &self.scopes, d, &self.store))
            .await?;
        self.locations
            .remember(&self.client.registry, &self.reference.repository, &d.digest);
        Ok(self.store.path_of(&d.digest))
    }
}

impl BlobFetch for RegistryFetch {
    fn location(&self) -> String {
        self.reference.to_string()
    }

    fn bytes(&self, d: &Descriptor, max: u64) -> Result<Vec<u8>> {
        self.rt.block_on(self.ensure(d))?;
        self.store.bytes(d, max)
    }

    fn layer(&self, d: &Descriptor) -> Result<Arc<dyn BlobSource>> {
        Ok(self.layers(std::slice::from_ref(d))?.remove(0))
    }

    fn layers(&self, ds: &[Descriptor]) -> Result<Vec<Arc<dyn BlobSource>>> {
        let parallel = self.client.opts.parallel.max(1);
        let paths = self.rt.block_on(async {
            futures_util::stream::iter(ds.iter().map(|d| self.ensure(d)))
                .buffered(parallel)
                .try_collect::<Vec<_>>()
                .await
        })?;
        // Each was just verified (downloaded through the writer, or re-hashed
        // by get()): sinks may hard-link them.
        Ok(paths
            .into_iter()
            .map(|path| Arc::new(FileBlob { path, _keep: None }) as Arc<dyn BlobSource>)
            .collect())
    }
}

/// Pulls `r` (choosing `platform` from an index) into the content store.
pub fn pull(ctx: &Context, r: &RegistryRef, platform: Option<&Platform>) -> Result<Image> {
    let (f, root) = RegistryFetch::open(ctx, r)?;
    read::read_image(&f, &root, platform)
}

/// Pulls what `r` names, whole: an image, or an index with every child.
pub fn pull_any(ctx: &Context, r: &RegistryRef) -> Result<AnyImage> {
    let (f, root) = RegistryFetch::open(ctx, r)?;
    read::read_any(&f, &root)
}

/// Resolves a reference to its manifest digest (for kiln lock): for an index,
/// the digest of the platform's manifest.
pub fn resolve(ctx: &Context, r: &RegistryRef, platform: Option<&Platform>) -> Result<Digest> {
    let (f, root) = RegistryFetch::open(ctx, r)?;
    let bytes = read::read_json(&f, &root)?;
    if read::is_index(&root.media_type, &bytes) {
        let index: oci::Index =
            serde_json::from_slice(&bytes).map_err(|e| Error::format(format!("index of {r}"), e.to_string()))?;
        return Ok(read::choose(&index, platform, &r.to_string())?.digest);
    }
    Ok(root.digest)
}

/// The manifests a reference names.
pub struct Manifests {
    /// The index's or image's own digest.
    pub top: Digest,
    /// An index's children, with their platforms.
    pub children: Vec<(Digest, Option<Platform>)>,
}

/// The digests a reference names without reading any layer: its own
/// (index or image) and, for an index, each child's with its platform.
/// Asked of the registry itself, never a mirror: what is signed or listed
/// is what lives where the image was pushed.
pub fn manifest_digests(ctx: &Context, r: &RegistryRef) -> Result<Manifests> {
    let f = RegistryFetch::connect_to(ctx, r)?;
    let root = f.root()?;
    let bytes = read::read_json(&f, &root)?;
    let mut children = Vec::new();
    if read::is_index(&root.media_type, &bytes) {
        let index: oci::Index =
            serde_json::from_slice(&bytes).map_err(|e| Error::format(format!("index of {r}"), e.to_string()))?;
        children = index.manifests.into_iter().map(|d| (d.digest, d.platform)).collect();
    }
    Ok(Manifests {
        top: root.digest,
        children,
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
    let resp = client
        .get_following(scopes, url, Some(ACCEPT_MANIFESTS), client.opts.retry.attempts)
        .await?;
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
    let bytes = client
        .read_capped(resp, MAX_JSON, &format!("the manifest {repo}:{reference}"))
        .await?;
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

async fn fetch_blob_once(
    client: &Client,
    repo: &str,
    scopes: &[String],
    d: &Descriptor,
    store: &ContentStore,
) -> Result<()> {
    use std::io::Write;
    let url = client.url(&format!("{repo}/blobs/{}", d.digest));
    // One try per request: the whole download is retried by the caller.
    let resp = client.get_following(scopes, url, None, 1).await?;
    if !resp.status().is_success() {
        return Err(client.error_from(&format!("fetching blob {}", d.digest), resp).await);
    }
    let mut w = store.writer(d)?;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::Registry {
            registry: client.registry.clone(),
            status: 0,
            code: "TRANSPORT".into(),
            message: format!("blob {} download broke off: {e}", d.digest),
            retryable: true,
        })?;
        if w.written() + chunk.len() as u64 > d.size {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", d.digest),
                expected: format!("{} bytes", d.size),
                found: "more".into(),
            });
        }
        w.write_all(&chunk).map_err(Error::write(w.dest().to_path_buf()))?;
    }
    let n = w.written();
    if n != d.size {
        return Err(Error::Registry {
            registry: client.registry.clone(),
            status: 0,
            code: "TRANSPORT".into(),
            message: format!("blob {} ended after {n} of {} bytes", d.digest, d.size),
            retryable: true,
        });
    }
    w.commit(Some(d)).map_err(|e| match e {
        Error::DigestMismatch { expected, found, .. } => Error::DigestMismatch {
            what: format!("blob from {}/{repo}", client.registry),
            expected,
            found,
        },
        e => e,
    })?;
    Ok(())
}
