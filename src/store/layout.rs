//! OCI image layout directories (`oci:DIR[:TAG]`): blobs written atomically
//! by digest, index.json replaced atomically under a lock, several tags in
//! one layout; and reading back with every blob verified.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Sink, copy_verified, write_atomic};
use crate::digest::Digest;
use crate::image::{BlobSource, Image, Layer, VerifiedFileBlob};
use crate::oci::{self, Descriptor, Index, Platform, canonical_json};
use crate::{Error, Result};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Writes images into an OCI layout directory.
pub struct LayoutSink {
    dir: PathBuf,
    tag: Option<String>,
}

impl LayoutSink {
    /// A sink for `dir`, tagging the image `tag` when given.
    pub fn new(dir: &Path, tag: Option<String>) -> Self {
        LayoutSink {
            dir: dir.to_path_buf(),
            tag,
        }
    }

    fn put_inner(&self, image: &Image) -> Result<()> {
        let blobs = self.dir.join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(Error::write(&blobs))?;
        // One writer at a time updates index.json (a lock on the directory
        // itself: no extra file in the layout); blobs are safe regardless.
        let lock = fs::File::open(&self.dir).map_err(Error::write(&self.dir))?;
        lock.lock().map_err(Error::write(&self.dir))?;

        let layout_file = self.dir.join("oci-layout");
        if !layout_file.exists() {
            write_atomic(&layout_file, OCI_LAYOUT)?;
        }
        for layer in image.layers() {
            put_blob(&self.dir, &layer.descriptor, layer.source.as_ref())?;
        }
        put_bytes(&self.dir, image.config_bytes())?;
        put_bytes(&self.dir, image.manifest_bytes())?;

        let index_path = self.dir.join("index.json");
        let mut index = read_index(&self.dir)?.unwrap_or_else(Index::empty);
        let mut desc = image.manifest_descriptor();
        match &self.tag {
            Some(tag) => {
                index
                    .manifests
                    .retain(|d| d.annotations.get(oci::ANNOTATION_REF_NAME) != Some(tag));
                desc.annotations.insert(oci::ANNOTATION_REF_NAME.into(), tag.clone());
            }
            None => index
                .manifests
                .retain(|d| d.digest != desc.digest || d.annotations.contains_key(oci::ANNOTATION_REF_NAME)),
        }
        index.manifests.push(desc);
        write_atomic(&index_path, &canonical_json(&index))?;
        drop(lock);
        Ok(())
    }
}

impl Sink for LayoutSink {
    fn put(&self, image: &Image) -> Result<()> {
        let existed = self.dir.exists();
        if existed && !self.dir.is_dir() {
            return Err(Error::Write {
                path: self.dir.clone(),
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a directory"),
            });
        }
        if existed
            && fs::read_dir(&self.dir)
                .map_err(Error::read(&self.dir))?
                .next()
                .is_some()
            && !self.dir.join("oci-layout").exists()
        {
            return Err(Error::invalid(
                "output",
                self.dir.display().to_string(),
                "the directory is not empty and is not an OCI layout; choose an empty or new directory",
            ));
        }
        let r = self.put_inner(image);
        if r.is_err() && !existed {
            // We made this directory: leave nothing behind.
            let _ = fs::remove_dir_all(&self.dir);
        }
        r
    }
}

fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm()).join(d.hex())
}

fn put_bytes(dir: &Path, bytes: &[u8]) -> Result<()> {
    let path = blob_path(dir, &Digest::of(bytes));
    if fs::metadata(&path)
        .map(|m| m.len() == bytes.len() as u64)
        .unwrap_or(false)
    {
        return Ok(());
    }
    write_atomic(&path, bytes)
}

fn put_blob(dir: &Path, desc: &Descriptor, src: &dyn BlobSource) -> Result<()> {
    let path = blob_path(dir, &desc.digest);
    // Blobs are only ever created complete under their digest name, so an
    // existing one of the right size is the right one.
    if fs::metadata(&path).map(|m| m.len() == desc.size).unwrap_or(false) {
        return Ok(());
    }
    if let Some(file) = src.file()
        && fs::hard_link(file, &path).is_ok()
    {
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix(".kiln-tmp-")
        .tempfile_in(dir)
        .map_err(Error::write(dir))?;
    let mut reader = src.open()?;
    copy_verified(&mut reader, tmp.path(), &desc.digest, desc.size)?;
    super::make_readable(tmp.as_file(), &path)?;
    tmp.persist(&path).map_err(|e| Error::Write { path, source: e.error })?;
    Ok(())
}

/// Reads a layout's index.json, if there is one.
pub fn read_index(dir: &Path) -> Result<Option<Index>> {
    let path = dir.join("index.json");
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::format(path.display().to_string(), format!("not an OCI index: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Read { path, source: e }),
    }
}

fn read_blob(dir: &Path, d: &Descriptor) -> Result<Vec<u8>> {
    const MAX_JSON: u64 = 16 << 20;
    if d.size > MAX_JSON {
        return Err(Error::format(
            format!("blob {}", d.digest),
            "a manifest or config over 16 MiB",
        ));
    }
    let path = blob_path(dir, &d.digest);
    let bytes = fs::read(&path).map_err(Error::read(&path))?;
    let found = Digest::of(&bytes);
    if found != d.digest || bytes.len() as u64 != d.size {
        return Err(Error::DigestMismatch {
            what: format!("blob {}", path.display()),
            expected: format!("{} ({} bytes)", d.digest, d.size),
            found: format!("{found} ({} bytes)", bytes.len()),
        });
    }
    Ok(bytes)
}

/// Reads the image tagged `tag` (or the only image) from a layout.
pub fn read(dir: &Path, tag: Option<&str>, platform: Option<&Platform>) -> Result<Image> {
    let desc = entry(dir, tag)?;
    read_manifest(dir, &desc, platform)
}

/// A multi-platform image as stored: the index bytes and every child image.
pub struct MultiImage {
    pub index_bytes: Vec<u8>,
    pub media_type: String,
    pub children: Vec<Image>,
}

/// When `tag` names an index, reads it and all its children (for pushing
/// the whole set); `None` when it names a single image.
pub fn read_multi(dir: &Path, tag: Option<&str>) -> Result<Option<MultiImage>> {
    let desc = entry(dir, tag)?;
    if desc.media_type != oci::MEDIA_TYPE_INDEX && desc.media_type != oci::MEDIA_TYPE_DOCKER_LIST {
        return Ok(None);
    }
    let index_bytes = read_blob(dir, &desc)?;
    let index: Index = serde_json::from_slice(&index_bytes)
        .map_err(|e| Error::format(format!("index {}", desc.digest), e.to_string()))?;
    let children = index
        .manifests
        .iter()
        .map(|d| read_manifest(dir, d, None))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(MultiImage {
        index_bytes,
        media_type: desc.media_type,
        children,
    }))
}

/// The index.json entry named by `tag` (or the only one).
fn entry(dir: &Path, tag: Option<&str>) -> Result<Descriptor> {
    let location = format!("oci:{}", dir.display());
    let index = read_index(dir)?.ok_or_else(|| Error::NotFound {
        what: "index.json".into(),
        location: location.clone(),
        hint: "; is this an OCI image layout?".into(),
    })?;
    let tags: Vec<&str> = index
        .manifests
        .iter()
        .filter_map(|d| d.annotations.get(oci::ANNOTATION_REF_NAME).map(String::as_str))
        .collect();
    let desc = match tag {
        Some(t) => index
            .manifests
            .iter()
            .find(|d| d.annotations.get(oci::ANNOTATION_REF_NAME).map(String::as_str) == Some(t))
            .ok_or_else(|| Error::NotFound {
                what: format!("tag `{t}`"),
                location: location.clone(),
                hint: format!(
                    "; tags there: {}",
                    if tags.is_empty() {
                        "none".into()
                    } else {
                        tags.join(", ")
                    }
                ),
            })?,
        None => match index.manifests.as_slice() {
            [one] => one,
            [] => {
                return Err(Error::NotFound {
                    what: "an image".into(),
                    location,
                    hint: " (index.json lists none)".into(),
                });
            }
            _ => {
                return Err(Error::invalid(
                    "image reference",
                    location,
                    format!(
                        "the layout holds several images; name one as oci:DIR:TAG (tags: {})",
                        tags.join(", ")
                    ),
                ));
            }
        },
    };
    Ok(desc.clone())
}

fn read_manifest(dir: &Path, desc: &Descriptor, platform: Option<&Platform>) -> Result<Image> {
    let bytes = read_blob(dir, desc)?;
    if desc.media_type == oci::MEDIA_TYPE_INDEX || desc.media_type == oci::MEDIA_TYPE_DOCKER_LIST {
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| Error::format(format!("index {}", desc.digest), e.to_string()))?;
        let want = platform.cloned().unwrap_or_else(Platform::host);
        let child = index
            .manifests
            .iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.satisfies(&want)))
            .ok_or_else(|| Error::NotFound {
                what: format!("an image for {want}"),
                location: format!("index {}", desc.digest),
                hint: "; choose another --platform".into(),
            })?;
        return read_manifest(dir, child, platform);
    }
    let manifest: oci::Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| Error::format(format!("manifest {}", desc.digest), e.to_string()))?;
    let config_bytes = read_blob(dir, &manifest.config)?;
    let config: oci::ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| Error::format(format!("config {}", manifest.config.digest), e.to_string()))?;
    let layers = manifest
        .layers
        .iter()
        .zip(config.rootfs.diff_ids.iter())
        .map(|(d, diff_id)| {
            let path = blob_path(dir, &d.digest);
            let meta = fs::metadata(&path).map_err(Error::read(&path))?;
            if meta.len() != d.size {
                return Err(Error::DigestMismatch {
                    what: format!("blob {}", path.display()),
                    expected: format!("{} bytes", d.size),
                    found: format!("{} bytes", meta.len()),
                });
            }
            Ok(Layer {
                descriptor: d.clone(),
                diff_id: diff_id.clone(),
                source: Arc::new(VerifiedFileBlob {
                    path,
                    offset: 0,
                    descriptor: d.clone(),
                }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Image::from_parts(bytes, config_bytes, layers)
}

/// Checks every blob the layout's images refer to: exists, right size and
/// digest. Returns the number of blobs checked.
pub fn verify(dir: &Path) -> Result<usize> {
    let index = read_index(dir)?.ok_or_else(|| Error::NotFound {
        what: "index.json".into(),
        location: format!("oci:{}", dir.display()),
        hint: String::new(),
    })?;
    let mut n = 0;
    for d in &index.manifests {
        let image = read_manifest(dir, d, None)?;
        for l in image.layers() {
            std::io::copy(&mut l.source.open()?, &mut std::io::sink()).map_err(|e| Error::Io {
                context: format!("verifying {}", l.descriptor.digest),
                source: e,
            })?;
            n += 1;
        }
        n += 2;
    }
    Ok(n)
}
