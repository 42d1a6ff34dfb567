//! OCI image layout directories (`oci:DIR[:TAG]`): blobs written through the
//! one [`BlobWriter`] (staged under `blobs/`, renamed by digest), index.json
//! replaced atomically under a lock, several tags in one layout; read back
//! through the one read path with every blob verified.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Sink;
use super::blob::{BlobWriter, remove_stale};
use super::read::{self, BlobFetch};
use crate::attest::Artifact;
use crate::digest::Digest;
use crate::image::{AnyImage, BlobSource, Image, ImageIndex, VerifiedFileBlob, open_regular, read_regular};
use crate::oci::{self, Descriptor, Index, Platform, canonical_json};
use crate::{Error, Result};

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Staging files older than this are a killed writer's and are removed.
const STALE: Duration = Duration::from_secs(24 * 3600);

/// Writes images into an OCI layout directory.
pub struct LayoutSink {
    dir: PathBuf,
    tag: Option<String>,
}

/// The files one write created, so a failed write removes only its own.
#[derive(Default)]
struct Created(Mutex<Vec<PathBuf>>);

impl Created {
    fn add(&self, p: PathBuf) {
        self.0.lock().expect("created list").push(p);
    }
}

impl LayoutSink {
    /// A sink for `dir`, tagging what it writes `tag` when given.
    pub fn new(dir: &Path, tag: Option<String>) -> Self {
        LayoutSink {
            dir: dir.to_path_buf(),
            tag,
        }
    }

    /// Creates (or opens) the layout directory and locks it. Returns whether
    /// this writer created it.
    fn open_locked(&self) -> Result<(bool, fs::File)> {
        let created_dir = match fs::create_dir(&self.dir) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(&self.dir).map_err(Error::write(&self.dir))?;
                true
            }
            Err(e) => {
                return Err(Error::Write {
                    path: self.dir.clone(),
                    source: e,
                });
            }
        };
        let meta = fs::symlink_metadata(&self.dir).map_err(Error::write(&self.dir))?;
        if !meta.is_dir() {
            return Err(Error::Write {
                path: self.dir.clone(),
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a directory"),
            });
        }
        // One writer at a time updates index.json (a lock on the directory
        // itself: no extra file in the layout). What is there is checked
        // under the lock, so two writers of a new layout agree on it.
        let lock = fs::File::open(&self.dir).map_err(Error::write(&self.dir))?;
        lock.lock().map_err(Error::write(&self.dir))?;
        Ok((created_dir, lock))
    }

    /// Creates (or opens) the layout and runs `write` under its lock. A new
    /// layout that fails is removed file by file: only what this writer
    /// created, so a concurrent writer's work is never deleted.
    fn with_lock(&self, write: impl FnOnce(&Created) -> Result<(Descriptor, Vec<Descriptor>)>) -> Result<()> {
        // A writer that created the directory and failed removes it; one
        // waiting for the lock meanwhile holds a removed directory. It
        // notices (the path no longer names the locked inode) and starts over.
        let mut attempts = 0;
        let (created_dir, lock) = loop {
            attempts += 1;
            let (created_dir, lock) = self.open_locked()?;
            use std::os::unix::fs::MetadataExt;
            let locked = lock.metadata().map_err(Error::write(&self.dir))?;
            let same =
                fs::symlink_metadata(&self.dir).is_ok_and(|m| m.ino() == locked.ino() && m.dev() == locked.dev());
            if same {
                break (created_dir, lock);
            }
            if attempts >= 5 {
                return Err(Error::Write {
                    path: self.dir.clone(),
                    source: std::io::Error::other("the directory kept being removed while kiln waited to write it"),
                });
            }
        };
        // Anything but a layout's own entries makes the directory foreign. A
        // bare `blobs/` is a layout another writer began (a failed writer
        // cannot remove it while a concurrent assembly stages in it).
        let foreign = fs::read_dir(&self.dir)
            .map_err(Error::read(&self.dir))?
            .flatten()
            .any(|e| !matches!(e.file_name().to_str(), Some("oci-layout" | "index.json" | "blobs")));
        if foreign && !created_dir {
            return Err(Error::invalid(
                "output",
                self.dir.display().to_string(),
                "the directory is not empty and is not an OCI layout; choose an empty or new directory",
            ));
        }
        let created = Created::default();
        let r = self.write_locked(&created, write);
        if r.is_err() && created_dir {
            let mut files = created.0.into_inner().expect("created list");
            files.reverse();
            for f in files {
                let _ = fs::remove_file(&f).or_else(|_| fs::remove_dir(&f));
            }
            let _ = fs::remove_dir(&self.dir);
        }
        drop(lock);
        r
    }

    fn write_locked(
        &self,
        created: &Created,
        write: impl FnOnce(&Created) -> Result<(Descriptor, Vec<Descriptor>)>,
    ) -> Result<()> {
        let blobs = self.dir.join("blobs");
        let sha = blobs.join("sha256");
        for d in [&blobs, &sha] {
            match fs::create_dir(d) {
                Ok(()) => created.add(d.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    return Err(Error::Write {
                        path: d.clone(),
                        source: e,
                    });
                }
            }
        }
        remove_stale(&blobs, STALE);
        let layout_file = self.dir.join("oci-layout");
        if !layout_file.exists() {
            put_file(&self.dir, &layout_file, OCI_LAYOUT)?;
            created.add(layout_file);
        }
        let (mut desc, attached) = write(created)?;
        let index_path = self.dir.join("index.json");
        let mut index = read_index(&self.dir)?.unwrap_or_else(Index::empty);
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
        // Attached documents are untagged entries with an artifactType
        // (as ORAS keeps them); readers find them by their subject.
        for a in attached {
            if !index.manifests.iter().any(|m| m.digest == a.digest) {
                index.manifests.push(a);
            }
        }
        prune_orphans(&self.dir, &mut index);
        put_file(&self.dir, &index_path, &canonical_json(&index))
    }

    /// Writes an index and every child it names (by digest, untagged), then
    /// tags the index.
    pub fn put_index(&self, index: &ImageIndex) -> Result<()> {
        self.put_attached(&AnyImage::Index(index.clone()), &[])
    }
}

impl Sink for LayoutSink {
    fn put(&self, image: &Image) -> Result<()> {
        self.put_attached(&AnyImage::Image(image.clone()), &[])
    }

    fn put_attached(&self, what: &AnyImage, attached: &[Artifact]) -> Result<()> {
        self.with_lock(|created| {
            put_any(&self.dir, what, created)?;
            for a in attached {
                for (_, bytes) in a.blobs() {
                    put_bytes(&self.dir, bytes, created)?;
                }
                put_bytes(&self.dir, a.manifest_bytes(), created)?;
            }
            let root = match what {
                AnyImage::Image(i) => i.manifest_descriptor(),
                AnyImage::Index(ix) => ix.descriptor(),
            };
            Ok((root, attached.iter().map(Artifact::descriptor).collect()))
        })
    }

    fn put_any(&self, what: &AnyImage) -> Result<()> {
        match what {
            AnyImage::Image(i) => self.put(i),
            AnyImage::Index(ix) => self.put_index(ix),
        }
    }
}

fn put_any(dir: &Path, a: &AnyImage, created: &Created) -> Result<()> {
    match a {
        AnyImage::Image(i) => put_image(dir, i, created),
        AnyImage::Index(i) => {
            for c in i.children() {
                put_any(dir, c, created)?;
            }
            put_bytes(dir, i.bytes(), created)
        }
    }
}

fn put_image(dir: &Path, image: &Image, created: &Created) -> Result<()> {
    for layer in image.layers() {
        put_blob(dir, &layer.descriptor, layer.source.as_ref(), created)?;
    }
    put_bytes(dir, image.config_bytes(), created)?;
    put_bytes(dir, image.manifest_bytes(), created)
}

/// index.json and oci-layout are staged under blobs/ too: a killed writer
/// leaves nothing but blobs/ and those two files in the layout root.
fn put_file(dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut w = BlobWriter::create_in(&dir.join("blobs"), path)?;
    w.write_all(bytes).map_err(Error::write(path))?;
    w.commit(None).map(|_| ())
}

fn blob_path(dir: &Path, d: &Digest) -> PathBuf {
    dir.join("blobs").join(d.algorithm()).join(d.hex())
}

fn have(path: &Path, size: u64) -> bool {
    // Blobs are only ever created complete under their digest name, so an
    // existing regular file of the right size is the right one.
    fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.len() == size)
}

fn put_bytes(dir: &Path, bytes: &[u8], created: &Created) -> Result<()> {
    let d = Descriptor::new("", Digest::of(bytes), bytes.len() as u64);
    let path = blob_path(dir, &d.digest);
    if have(&path, d.size) {
        return Ok(());
    }
    use std::io::Write;
    let mut w = BlobWriter::create_in(&dir.join("blobs"), &path)?;
    w.write_all(bytes).map_err(Error::write(&path))?;
    w.commit(Some(&d))?;
    created.add(path);
    Ok(())
}

fn put_blob(dir: &Path, desc: &Descriptor, src: &dyn BlobSource, created: &Created) -> Result<()> {
    let path = blob_path(dir, &desc.digest);
    if have(&path, desc.size) {
        return Ok(());
    }
    if let Some(file) = src.file()
        && fs::hard_link(file, &path).is_ok()
    {
        created.add(path);
        return Ok(());
    }
    let mut w = BlobWriter::create_in(&dir.join("blobs"), &path)?;
    let mut reader = src.open()?;
    std::io::copy(&mut reader, &mut w).map_err(|e| Error::Io {
        context: format!("copying blob {} to {}", desc.digest, path.display()),
        source: e,
    })?;
    w.commit(Some(desc))?;
    created.add(path);
    Ok(())
}

/// Reads a layout's index.json, if there is one (a regular file, capped).
pub fn read_index(dir: &Path) -> Result<Option<Index>> {
    let path = dir.join("index.json");
    let bytes = match read_regular(&path, read::MAX_JSON) {
        Ok(b) => b,
        Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() as u64 > read::MAX_JSON {
        return Err(Error::format(
            path.display().to_string(),
            format!("larger than {} bytes", read::MAX_JSON),
        ));
    }
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::format(path.display().to_string(), format!("not an OCI index: {e}")))
}

/// The blobs of a layout directory.
pub struct LayoutFetch {
    dir: PathBuf,
}

impl LayoutFetch {
    pub fn new(dir: &Path) -> Self {
        LayoutFetch { dir: dir.to_path_buf() }
    }
}

impl BlobFetch for LayoutFetch {
    fn location(&self) -> String {
        format!("oci:{}", self.dir.display())
    }

    fn bytes(&self, d: &Descriptor, max: u64) -> Result<Vec<u8>> {
        read_regular(&blob_path(&self.dir, &d.digest), max)
    }

    fn layer(&self, d: &Descriptor) -> Result<Arc<dyn BlobSource>> {
        let path = blob_path(&self.dir, &d.digest);
        let f = open_regular(&path)?;
        let len = f.metadata().map_err(Error::read(&path))?.len();
        if len != d.size {
            return Err(Error::DigestMismatch {
                what: format!("blob {}", path.display()),
                expected: format!("{} bytes", d.size),
                found: format!("{len} bytes"),
            });
        }
        Ok(Arc::new(VerifiedFileBlob {
            path,
            offset: 0,
            descriptor: d.clone(),
            keep: None,
        }))
    }
}

/// Reads the image tagged `tag` (or the only image) from a layout.
pub fn read(dir: &Path, tag: Option<&str>, platform: Option<&Platform>) -> Result<Image> {
    read::read_image(&LayoutFetch::new(dir), &entry(dir, tag)?, platform)
}

/// Reads what `tag` names, whole: an image, or an index with its children.
pub fn read_any(dir: &Path, tag: Option<&str>) -> Result<AnyImage> {
    read::read_any(&LayoutFetch::new(dir), &entry(dir, tag)?)
}

/// Drops documents whose image no entry names any more (a rebuild moved
/// the tag): the documents of every image or index still listed, and of
/// their children, stay. Their blobs stay too (a layout never deletes a
/// blob another writer may be linking to).
fn prune_orphans(dir: &Path, index: &mut Index) {
    let f = LayoutFetch::new(dir);
    let mut live: std::collections::HashSet<Digest> = std::collections::HashSet::new();
    for m in index.manifests.iter().filter(|m| m.artifact_type.is_none()) {
        live.insert(m.digest.clone());
        if read::is_index(&m.media_type, b"")
            && let Ok(bytes) = f.bytes(m, read::MAX_JSON)
            && let Ok(ix) = serde_json::from_slice::<Index>(&bytes)
        {
            live.extend(ix.manifests.into_iter().map(|c| c.digest));
        }
    }
    index.manifests.retain(|m| {
        if m.artifact_type.is_none() || m.annotations.contains_key(oci::ANNOTATION_REF_NAME) {
            return true;
        }
        // Unreadable or subject-less entries are someone else's: kept.
        let subject = f
            .bytes(m, read::MAX_JSON)
            .ok()
            .and_then(|b| serde_json::from_slice::<oci::Manifest>(&b).ok())
            .and_then(|am| am.subject.map(|s| s.digest));
        subject.is_none_or(|s| live.contains(&s))
    });
}

/// The documents attached to `subject` in the layout: index.json entries
/// with an artifactType whose manifest's subject is `subject`, each read
/// whole (bounded) and checked against its digest.
pub fn referrers(dir: &Path, subject: &Digest) -> Result<Vec<crate::attest::Artifact>> {
    let Some(index) = read_index(dir)? else {
        return Ok(Vec::new());
    };
    let f = LayoutFetch::new(dir);
    let mut out = Vec::new();
    let mut total = 0u64;
    let too_many = || {
        Error::format(
            f.location(),
            format!("more documents attached to {subject} than kiln reads"),
        )
    };
    for d in index.manifests.iter().filter(|d| d.artifact_type.is_some()) {
        let bytes = f.bytes(d, read::MAX_JSON)?;
        if Digest::of(&bytes) != d.digest {
            return Err(Error::DigestMismatch {
                what: format!("manifest {} in {}", d.digest, f.location()),
                expected: d.digest.to_string(),
                found: Digest::of(&bytes).to_string(),
            });
        }
        // Another tool's entry, or one about another image: not read.
        let Ok(m) = serde_json::from_slice::<oci::Manifest>(&bytes) else {
            continue;
        };
        if m.subject.as_ref().map(|s| &s.digest) != Some(subject) {
            continue;
        }
        let Some(layer) = m.layers.first() else { continue };
        if layer.size > crate::attest::MAX_DOCUMENT {
            continue;
        }
        total += layer.size;
        if total > crate::attest::MAX_REFERRER_BYTES || out.len() >= crate::attest::MAX_REFERRERS {
            return Err(too_many());
        }
        let doc = f.bytes(layer, crate::attest::MAX_DOCUMENT)?;
        if let Ok(a) = crate::attest::Artifact::from_parts(bytes, doc) {
            out.push(a);
        }
    }
    Ok(out)
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
        // Attached documents are not images: "the only one" skips them.
        None => match index
            .manifests
            .iter()
            .filter(|d| d.artifact_type.is_none())
            .collect::<Vec<_>>()
            .as_slice()
        {
            [one] => *one,
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
