//! The one read path for every source. A source implements [`BlobFetch`]
//! (raw bytes of a small JSON blob by descriptor, a layer's blob source by
//! descriptor) and names its root descriptor; [`read_image`] and
//! [`read_any`] derive everything else once: both index media types, nested
//! indexes (bounded depth, no recursion on untrusted depth), platform
//! choice, one size cap for JSON, digest and size checks, config and layer
//! agreement. (Model: go-containerregistry's `partial` package.)

use std::sync::Arc;

use crate::digest::Digest;
use crate::image::{AnyImage, BlobSource, Image, ImageIndex, Layer};
use crate::oci::{self, Descriptor, Index, Platform};
use crate::{Error, Result};

/// Largest manifest, index or config kiln reads (like containerd's 4 MiB
/// manifest limit, with room for huge configs).
pub const MAX_JSON: u64 = 16 << 20;

/// How deep indexes may nest (an index of indexes of …). Real images use 1
/// or 2 levels; a hostile chain is refused instead of exhausting the stack.
pub const MAX_DEPTH: usize = 8;

/// How many descriptors one read may visit in all (an index listing one
/// manifest 100,000 times, or indexes fanning out, is refused).
pub const MAX_DESCRIPTORS: usize = 10_000;

/// What a source must provide; everything else is derived here.
pub trait BlobFetch: Sync {
    /// Where the blobs come from, for messages (`oci:DIR`, a registry …).
    fn location(&self) -> String;
    /// The bytes of a small blob (manifest, index, config): at most `max`
    /// bytes are read; the caller verifies digest and size.
    fn bytes(&self, d: &Descriptor, max: u64) -> Result<Vec<u8>>;
    /// A layer's bytes, verified against `d` whenever they are read.
    fn layer(&self, d: &Descriptor) -> Result<Arc<dyn BlobSource>>;
    /// Every layer of a manifest (a registry fetches them in parallel).
    fn layers(&self, ds: &[Descriptor]) -> Result<Vec<Arc<dyn BlobSource>>> {
        ds.iter().map(|d| self.layer(d)).collect()
    }
}

/// A manifest, index or config blob: size capped before reading, digest
/// and size checked after.
pub fn read_json(f: &dyn BlobFetch, d: &Descriptor) -> Result<Vec<u8>> {
    if d.size > MAX_JSON {
        return Err(Error::format(
            format!("{} in {}", d.digest, f.location()),
            format!(
                "a manifest or config of {} bytes; kiln reads at most {MAX_JSON}",
                d.size
            ),
        ));
    }
    let bytes = f.bytes(d, d.size)?;
    let found = Digest::of(&bytes);
    if found != d.digest || bytes.len() as u64 != d.size {
        return Err(Error::DigestMismatch {
            what: format!("blob {} in {}", d.digest, f.location()),
            expected: format!("{} ({} bytes)", d.digest, d.size),
            found: format!("{found} ({} bytes)", bytes.len()),
        });
    }
    Ok(bytes)
}

/// Whether a descriptor (or, without a media type, the body) is an index.
pub fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    match media_type {
        oci::MEDIA_TYPE_INDEX | oci::MEDIA_TYPE_DOCKER_LIST => true,
        "" | "application/json" => {
            #[derive(serde::Deserialize)]
            struct Probe {
                manifests: Option<serde::de::IgnoredAny>,
                layers: Option<serde::de::IgnoredAny>,
            }
            serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| p.manifests.is_some() && p.layers.is_none())
        }
        _ => false,
    }
}

fn parse_index(f: &dyn BlobFetch, d: &Descriptor, bytes: &[u8]) -> Result<Index> {
    serde_json::from_slice(bytes)
        .map_err(|e| Error::format(format!("index {} in {}", d.digest, f.location()), e.to_string()))
}

/// The child of `index` for `want` (the host's platform when None); the
/// error lists the platforms there are.
pub fn choose(index: &Index, want: Option<&Platform>, location: &str) -> Result<Descriptor> {
    let want = want.cloned().unwrap_or_else(Platform::host);
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
                location: location.to_string(),
                hint: if have.is_empty() {
                    "; its index names no platforms".into()
                } else {
                    format!("; it has {}; choose one with --platform", have.join(", "))
                },
            }
        })
}

/// The image `root` names; through indexes, the child for `platform`.
pub fn read_image(f: &dyn BlobFetch, root: &Descriptor, platform: Option<&Platform>) -> Result<Image> {
    let mut desc = root.clone();
    for _ in 0..=MAX_DEPTH {
        let bytes = read_json(f, &desc)?;
        if !is_index(&desc.media_type, &bytes) {
            return image_from_manifest(f, &desc, bytes);
        }
        let index = parse_index(f, &desc, &bytes)?;
        desc = choose(&index, platform, &format!("index {} in {}", desc.digest, f.location()))?;
    }
    Err(too_deep(f, root))
}

fn too_deep(f: &dyn BlobFetch, root: &Descriptor) -> Error {
    Error::format(
        format!("{} in {}", root.digest, f.location()),
        format!("indexes nest deeper than {MAX_DEPTH} levels"),
    )
}

/// What `root` names, whole: an image, or an index with every child (for
/// pushing or copying the set).
pub fn read_any(f: &dyn BlobFetch, root: &Descriptor) -> Result<AnyImage> {
    let mut walk = Walk::default();
    read_any_at(f, root, 0, &mut walk)
}

/// What one read has seen: each digest read once, descriptors counted.
#[derive(Default)]
struct Walk {
    seen: std::collections::HashMap<crate::digest::Digest, AnyImage>,
    visited: usize,
}

// Recursion is bounded by MAX_DEPTH and the walk by MAX_DESCRIPTORS, so
// hostile nesting or fan-out can exhaust neither the stack nor memory.
fn read_any_at(f: &dyn BlobFetch, desc: &Descriptor, depth: usize, walk: &mut Walk) -> Result<AnyImage> {
    if depth > MAX_DEPTH {
        return Err(too_deep(f, desc));
    }
    walk.visited += 1;
    if walk.visited > MAX_DESCRIPTORS {
        return Err(Error::format(
            format!("{} in {}", desc.digest, f.location()),
            format!("the index names more than {MAX_DESCRIPTORS} manifests in all"),
        ));
    }
    if let Some(done) = walk.seen.get(&desc.digest) {
        return Ok(done.clone());
    }
    let read = read_any_uncached(f, desc, depth, walk)?;
    walk.seen.insert(desc.digest.clone(), read.clone());
    Ok(read)
}

fn read_any_uncached(f: &dyn BlobFetch, desc: &Descriptor, depth: usize, walk: &mut Walk) -> Result<AnyImage> {
    let bytes = read_json(f, desc)?;
    if !is_index(&desc.media_type, &bytes) {
        return image_from_manifest(f, desc, bytes).map(AnyImage::Image);
    }
    let index = parse_index(f, desc, &bytes)?;
    let children = index
        .manifests
        .iter()
        .map(|d| read_any_at(f, d, depth + 1, walk))
        .collect::<Result<Vec<_>>>()?;
    let media_type = index
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| desc.media_type.clone());
    ImageIndex::from_parts(bytes, media_type, children).map(AnyImage::Index)
}

fn image_from_manifest(f: &dyn BlobFetch, desc: &Descriptor, bytes: Vec<u8>) -> Result<Image> {
    let manifest: oci::Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(format!("manifest {} in {}", desc.digest, f.location()), e.to_string()))?;
    let config_bytes = read_json(f, &manifest.config)?;
    let config: oci::ImageConfig = serde_json::from_slice(&config_bytes).map_err(|e| {
        Error::format(
            format!("config {} in {}", manifest.config.digest, f.location()),
            e.to_string(),
        )
    })?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(Error::format(
            format!("image {} in {}", desc.digest, f.location()),
            format!(
                "{} layers in the manifest but {} diff_ids in the config",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            ),
        ));
    }
    let sources = f.layers(&manifest.layers)?;
    let layers = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .zip(sources)
        .map(|((d, diff_id), source)| Layer {
            descriptor: d.clone(),
            diff_id: diff_id.clone(),
            source,
        })
        .collect();
    Image::from_parts(bytes, config_bytes, layers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Blobs in memory, for the read path's own checks.
    struct Mem(HashMap<Digest, Vec<u8>>);

    impl BlobFetch for Mem {
        fn location(&self) -> String {
            "memory".into()
        }
        fn bytes(&self, d: &Descriptor, max: u64) -> Result<Vec<u8>> {
            let b = self.0.get(&d.digest).ok_or_else(|| Error::NotFound {
                what: d.digest.to_string(),
                location: "memory".into(),
                hint: String::new(),
            })?;
            Ok(b[..b.len().min(max as usize)].to_vec())
        }
        fn layer(&self, _: &Descriptor) -> Result<Arc<dyn BlobSource>> {
            unreachable!("no layers in these tests")
        }
    }

    fn index_over(child: &Descriptor) -> Vec<u8> {
        let mut i = Index::empty();
        i.manifests.push(child.clone());
        oci::canonical_json(&i)
    }

    #[test]
    fn a_deep_index_chain_is_refused_not_a_stack_overflow() {
        let mut blobs = HashMap::new();
        let mut d = Descriptor::new(oci::MEDIA_TYPE_MANIFEST, Digest::of(b"none"), 4);
        d.platform = Some(Platform::host());
        for _ in 0..10_000 {
            let b = index_over(&d);
            d = Descriptor::new(oci::MEDIA_TYPE_INDEX, Digest::of(&b), b.len() as u64);
            d.platform = Some(Platform::host());
            blobs.insert(d.digest.clone(), b);
        }
        let f = Mem(blobs);
        let e = read_image(&f, &d, None).unwrap_err().to_string();
        assert!(e.contains("nest deeper"), "{e}");
        let e = read_any(&f, &d).err().unwrap().to_string();
        assert!(e.contains("nest deeper"), "{e}");
    }

    #[test]
    fn a_wide_index_is_refused_and_repeats_are_read_once() {
        // A real (layerless) image, listed many times by one index.
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let cd = Descriptor::new(oci::MEDIA_TYPE_CONFIG, Digest::of(config), config.len() as u64);
        let manifest = oci::Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
            artifact_type: None,
            subject: None,
            config: cd.clone(),
            layers: Vec::new(),
            annotations: Default::default(),
        };
        let mb = oci::canonical_json(&manifest);
        let md = Descriptor::new(oci::MEDIA_TYPE_MANIFEST, Digest::of(&mb), mb.len() as u64);
        let index_of = |n: usize| {
            let mut i = Index::empty();
            i.manifests = vec![md.clone(); n];
            let b = oci::canonical_json(&i);
            (
                Descriptor::new(oci::MEDIA_TYPE_INDEX, Digest::of(&b), b.len() as u64),
                b,
            )
        };
        let (small, sb) = index_of(5);
        let (wide, wb) = index_of(MAX_DESCRIPTORS + 1);
        let reads = std::sync::atomic::AtomicUsize::new(0);
        struct Counting<'a>(Mem, &'a std::sync::atomic::AtomicUsize);
        impl BlobFetch for Counting<'_> {
            fn location(&self) -> String {
                self.0.location()
            }
            fn bytes(&self, d: &Descriptor, max: u64) -> Result<Vec<u8>> {
                self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                self.0.bytes(d, max)
            }
            fn layer(&self, d: &Descriptor) -> Result<Arc<dyn BlobSource>> {
                self.0.layer(d)
            }
        }
        let f = Counting(
            Mem(HashMap::from([
                (cd.digest.clone(), config.to_vec()),
                (md.digest.clone(), mb.clone()),
                (small.digest.clone(), sb),
                (wide.digest.clone(), wb),
            ])),
            &reads,
        );
        let AnyImage::Index(i) = read_any(&f, &small).unwrap() else {
            panic!("an index")
        };
        assert_eq!(i.children().len(), 5);
        assert_eq!(
            reads.load(std::sync::atomic::Ordering::SeqCst),
            3,
            "index, manifest, config: each once"
        );
        let e = read_any(&f, &wide).err().unwrap().to_string();
        assert!(e.contains(&format!("more than {MAX_DESCRIPTORS}")), "{e}");
    }

    #[test]
    fn oversized_or_wrong_blobs_are_refused_before_parsing() {
        let f = Mem(HashMap::from([(Digest::of(b"{}"), b"{}".to_vec())]));
        let big = Descriptor::new(oci::MEDIA_TYPE_MANIFEST, Digest::of(b"{}"), MAX_JSON + 1);
        assert!(read_json(&f, &big).unwrap_err().to_string().contains("at most"));
        let short = Descriptor::new(oci::MEDIA_TYPE_MANIFEST, Digest::of(b"{}"), 1);
        assert!(matches!(read_json(&f, &short), Err(Error::DigestMismatch { .. })));
    }

    #[test]
    fn platform_errors_list_what_exists() {
        let mut i = Index::empty();
        let mut d = Descriptor::new(oci::MEDIA_TYPE_MANIFEST, Digest::of(b"a"), 1);
        d.platform = Some(Platform::parse("linux/s390x").unwrap());
        i.manifests.push(d);
        let e = choose(&i, Some(&Platform::parse("linux/arm64").unwrap()), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux/s390x") && e.contains("linux/arm64"), "{e}");
    }
}
