//! The build cache shared through a registry (`--cache REF`, `[build]
//! cache`): the input-addressed result of a build, under its key, in a
//! repository every runner can reach. An entry is the tag
//! `kiln-cache-<key hex>` naming an OCI artifact manifest (artifactType
//! [`ARTIFACT_TYPE`]) whose `subject` is the built image (pushed by digest
//! in the same repository) and whose one layer is the build's crate list
//! (for the SBOM). Entries are looked up only by their full key; the image
//! and the crate list are read through the one read path and verified by
//! digest. A cache is trusted as far as whoever can write to it: untrusted
//! builds (pull requests) read with `--cache-mode read` and never write.

use bytes::Bytes;

use super::locations::Locations;
use super::push::{Session, push_bytes, put_manifest};
use super::referrers::get_optional;
use crate::attest::Artifact;
use crate::context::Context;
use crate::digest::Digest;
use crate::image::Image;
use crate::oci;
use crate::reference::RegistryRef;
use crate::time::Timestamp;
use crate::{Error, Result};

/// What a cache entry is.
pub const ARTIFACT_TYPE: &str = "application/vnd.dev.kiln.build-cache.v1+json";

/// How image entries' tags begin.
pub const ENTRY_PREFIX: &str = "kiln-cache-";

/// How compiled-dependencies entries' tags begin.
pub const DEPS_PREFIX: &str = "kiln-deps-";

/// The tag of the entry for `key`.
pub fn tag(key: &Digest) -> String {
    format!("{ENTRY_PREFIX}{}", key.hex())
}

/// When an entry is stored (wall clock: what `kiln cache prune` orders by;
/// an entry's bytes are not part of any image).
fn stored_at() -> Timestamp {
    Timestamp::at(std::time::SystemTime::now())
}

/// Whether runners may write the cache or only read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Read,
    ReadWrite,
}

/// A registry cache: the repository and the mode.
#[derive(Debug, Clone)]
pub struct RemoteCache {
    pub repo: RegistryRef,
    pub mode: Mode,
}

impl RemoteCache {
    /// `REGISTRY/REPO` (no tag, no digest: entries are tags kiln names).
    pub fn parse(s: &str, mode: Mode) -> Result<RemoteCache> {
        let mut r = RegistryRef::parse(s)?;
        let last = s.rsplit('/').next().unwrap_or(s);
        if s.contains('@') || last.contains(':') {
            return Err(Error::invalid(
                "cache",
                s,
                "expected a repository REGISTRY/REPO without a tag or digest (kiln names the entries)",
            ));
        }
        // The parser's default tag (latest) is not the user's.
        r.tag = None;
        Ok(RemoteCache { repo: r, mode })
    }
}

/// Whether the cache has an entry for `key`.
pub fn exists(ctx: &Context, cache: &RemoteCache, key: &Digest) -> Result<bool> {
    Ok(entry_manifest(ctx, cache, key)?.is_some())
}

fn entry_manifest(ctx: &Context, cache: &RemoteCache, key: &Digest) -> Result<Option<Bytes>> {
    manifest_by_tag(ctx, cache, &tag(key))
}

/// Whether the cache has a compiled-dependencies entry for `key`.
pub fn deps_exist(ctx: &Context, cache: &RemoteCache, key: &Digest) -> Result<bool> {
    Ok(manifest_by_tag(ctx, cache, &deps_tag(key))?.is_some())
}

fn manifest_by_tag(ctx: &Context, cache: &RemoteCache, t: &str) -> Result<Option<Bytes>> {
    let rt = crate::store::daemon::runtime()?;
    rt.block_on(async {
        let client = super::client::Client::connect(&cache.repo, &ctx.registry).await?;
        let scopes = vec![super::client::scope(&cache.repo.repository, "pull")];
        get_optional(
            &client,
            &scopes,
            &format!("{}/manifests/{t}", cache.repo.repository),
            oci::MEDIA_TYPE_MANIFEST,
            &format!("the cache entry {t}"),
        )
        .await
    })
}

/// The entry for `key`: the image, the crate list and the entry's digest,
/// verified; None when the cache has no entry for it.
pub fn lookup(ctx: &Context, cache: &RemoteCache, key: &Digest) -> Result<Option<(Image, Vec<u8>, Digest)>> {
    let t = tag(key);
    let Some(manifest) = entry_manifest(ctx, cache, key)? else {
        return Ok(None);
    };
    let at = format!("{}:{t}", cache.repo);
    let m: oci::Manifest =
        serde_json::from_slice(&manifest).map_err(|e| Error::format(&at, format!("not an OCI manifest: {e}")))?;
    if m.artifact_type.as_deref() != Some(ARTIFACT_TYPE) {
        return Err(Error::format(
            &at,
            "not a kiln build-cache entry (its artifactType differs)",
        ));
    }
    let subject = m
        .subject
        .clone()
        .ok_or_else(|| Error::format(&at, "a cache entry without a subject"))?;
    let desc = oci::Descriptor::new(oci::MEDIA_TYPE_MANIFEST, Digest::of(&manifest), manifest.len() as u64);
    // The entry again by digest through the one read path: its shape and
    // document are checked there, and every byte against its digest.
    let entry = super::referrers::fetch(ctx, &cache.repo, &desc, &subject.digest)?;
    if entry.artifact_type() != ARTIFACT_TYPE {
        return Err(Error::format(&at, "not a kiln build-cache entry"));
    }
    let image = super::pull::pull(ctx, &cache.repo.by_digest(&subject.digest), None)?;
    if image.digest() != &subject.digest {
        return Err(Error::DigestMismatch {
            what: at,
            expected: subject.digest.to_string(),
            found: image.digest().to_string(),
        });
    }
    Ok(Some((image, entry.document().to_vec(), entry.digest().clone())))
}

/// Writes the entry for `key`: the image by digest, then its crate list and
/// the entry's tag (last: a tag never names an incomplete entry).
pub fn store(ctx: &Context, cache: &RemoteCache, key: &Digest, image: &Image, crates: &[u8]) -> Result<()> {
    if cache.mode != Mode::ReadWrite {
        return Ok(());
    }
    super::push::push(ctx, image, &cache.repo.by_digest(image.digest()), &[])?;
    let entry = Artifact::new(
        ARTIFACT_TYPE,
        &image.manifest_descriptor(),
        crates.to_vec(),
        stored_at(),
    );
    let rt = crate::store::daemon::runtime()?;
    let locations = Locations::new(&ctx.cache);
    rt.block_on(async {
        let s = Session::connect(ctx, &cache.repo, &locations).await?;
        for (desc, bytes) in entry.blobs() {
            push_bytes(&s, desc, Bytes::copy_from_slice(bytes)).await?;
        }
        put_manifest(
            &s.client,
            &s.repo,
            &s.scopes,
            &tag(key),
            oci::MEDIA_TYPE_MANIFEST,
            &Bytes::copy_from_slice(entry.manifest_bytes()),
            entry.digest(),
        )
        .await?;
        Ok::<_, Error>(())
    })?;
    Ok(())
}

/// The label (and its value) on a compiled-dependencies entry's config.
pub const DEPS_LABEL: (&str, &str) = ("dev.kiln.cache", "cargo-target-v1");

/// The most a compiled-dependencies layer may hold (stored bytes).
pub const MAX_DEPS: u64 = 16 << 30;

/// The tag of the compiled-dependencies entry for `key` (see
/// [`crate::builder::deps`]): an image for the build's platform whose one
/// layer is the target directory's dependency artifacts.
pub fn deps_tag(key: &Digest) -> String {
    format!("{DEPS_PREFIX}{}", key.hex())
}

/// The compiled-dependencies layer for `key`, verified by digest into the
/// content store; None when the cache has no entry for it.
pub fn lookup_deps(
    ctx: &Context,
    cache: &RemoteCache,
    key: &Digest,
    platform: &oci::Platform,
) -> Result<Option<crate::image::Layer>> {
    let t = deps_tag(key);
    let at = format!("{}:{t}", cache.repo);
    let Some(manifest) = manifest_by_tag(ctx, cache, &t)? else {
        return Ok(None);
    };
    // Checked before any layer byte is fetched: the size bound and the shape.
    let m: oci::Manifest =
        serde_json::from_slice(&manifest).map_err(|e| Error::format(&at, format!("not an OCI manifest: {e}")))?;
    match m.layers.as_slice() {
        [l] if l.size <= MAX_DEPS => {}
        [l] => {
            return Err(Error::format(
                &at,
                format!("a dependency layer of {} bytes (limit {MAX_DEPS})", l.size),
            ));
        }
        _ => return Err(Error::format(&at, "not a kiln dependency entry (it has not one layer)")),
    }
    let image = super::pull::pull(ctx, &cache.repo.by_digest(&Digest::of(&manifest)), None)?;
    let labels = image
        .config()
        .config
        .as_ref()
        .map(|c| c.labels.clone())
        .unwrap_or_default();
    if labels.get(DEPS_LABEL.0).map(String::as_str) != Some(DEPS_LABEL.1) {
        return Err(Error::format(&at, "not a kiln dependency entry (its label differs)"));
    }
    if &image.platform() != platform {
        return Err(Error::format(
            &at,
            format!("built for {}, not {platform}", image.platform()),
        ));
    }
    Ok(image.layers().first().cloned())
}

/// Writes the compiled-dependencies entry for `key`: the layer and a
/// config by digest, then the tag.
pub fn store_deps(
    ctx: &Context,
    cache: &RemoteCache,
    key: &Digest,
    layer: crate::image::Layer,
    platform: &oci::Platform,
) -> Result<Option<Digest>> {
    if cache.mode != Mode::ReadWrite {
        return Ok(None);
    }
    let mut config = crate::image::scratch_config(platform, Timestamp(0));
    config
        .config
        .get_or_insert_with(Default::default)
        .labels
        .insert(DEPS_LABEL.0.into(), DEPS_LABEL.1.into());
    crate::image::push_history(&mut config, Timestamp(0), "kiln build: compiled dependencies");
    let created = [(crate::attest::ANNOTATION_CREATED.to_string(), stored_at().rfc3339())].into();
    let image = Image::new(config, vec![layer], created)?;
    // By digest, then the tag by a bare manifest PUT: a cache tag is not a
    // release, so it gets no release history.
    super::push::push(ctx, &image, &cache.repo.by_digest(image.digest()), &[])?;
    let rt = crate::store::daemon::runtime()?;
    let locations = Locations::new(&ctx.cache);
    rt.block_on(async {
        let s = Session::connect(ctx, &cache.repo, &locations).await?;
        put_manifest(
            &s.client,
            &s.repo,
            &s.scopes,
            &deps_tag(key),
            oci::MEDIA_TYPE_MANIFEST,
            &Bytes::copy_from_slice(image.manifest_bytes()),
            image.digest(),
        )
        .await
    })?;
    Ok(Some(image.digest().clone()))
}
