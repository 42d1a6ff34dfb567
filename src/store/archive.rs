//! docker-archive files (`docker-archive:FILE[:NAME[:TAG]]`): one tar holding
//! an OCI layout and a Docker `manifest.json` side by side, so Engine 20.10
//! (which reads manifest.json) and Engine ≥ 25 (which reads the OCI index)
//! both load it. Written to a temp file and renamed: never half a file.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Sink;
use super::blob::BlobWriter;
use super::read::{self, BlobFetch};
use crate::digest::Digest;
use crate::image::{AnyImage, BlobSource, Image, Layer, VerifiedFileBlob, open_regular};
use crate::layer::tar::{EntryHeader, EntryKind, TarWriter};
use crate::oci::{self, Descriptor, Index, canonical_json};
use crate::reference::DockerName;
use crate::{Error, Result};

/// One entry of Docker's manifest.json.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Writes an image as a docker-archive tar.
pub struct ArchiveSink {
    file: PathBuf,
    name: Option<DockerName>,
}

impl ArchiveSink {
    /// A sink writing `file`, tagging the image `name` inside when given.
    pub fn new(file: &Path, name: Option<DockerName>) -> Self {
        ArchiveSink {
            file: file.to_path_buf(),
            name,
        }
    }
}

impl Sink for ArchiveSink {
    /// An index goes in whole (index.json names it, as `docker save` of
    /// Engine ≥ 25 does); manifest.json, which Engine 20.10 loads, lists the
    /// one image `docker load` should take: this machine's child.
    fn put_any(&self, what: &AnyImage) -> Result<()> {
        let location = format!("docker-archive:{}", self.file.display());
        let w = BlobWriter::create(&self.file)?;
        let w = write_archive(what, self.name.as_ref(), &location, w).map_err(|e| match e {
            Error::Io { source, .. } => Error::Write {
                path: self.file.clone(),
                source,
            },
            e => e,
        })?;
        w.commit(None).map(|_| ())
    }

    fn put(&self, image: &Image) -> Result<()> {
        self.put_any(&AnyImage::Image(image.clone()))
    }
}

/// Streams the docker-archive form of `what` (an image or a whole index)
/// into `out`.
pub fn write_archive<W: Write>(what: &AnyImage, name: Option<&DockerName>, location: &str, out: W) -> Result<W> {
    let io = |source: std::io::Error| Error::Io {
        context: "writing docker-archive".into(),
        source,
    };
    let blob_name = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    // The image `docker load` on Engine 20.10 takes (it reads manifest.json
    // only): a plain image as it is, from an index this machine's child.
    let loaded = what.for_single_platform_output(location)?;
    let mut index_desc = match what {
        AnyImage::Image(i) => i.manifest_descriptor(),
        AnyImage::Index(ix) => ix.descriptor(),
    };
    if let Some(n) = name {
        index_desc
            .annotations
            .insert(oci::ANNOTATION_REF_NAME.into(), n.tag.clone());
        index_desc
            .annotations
            .insert(oci::ANNOTATION_CONTAINERD_NAME.into(), n.qualified());
    }
    let mut index = Index::empty();
    index.manifests.push(index_desc);
    let docker_manifest = vec![DockerManifestEntry {
        config: blob_name(&loaded.manifest().config.digest),
        repo_tags: name.map(|n| vec![n.to_string()]).unwrap_or_default(),
        layers: loaded
            .layers()
            .iter()
            .map(|l| blob_name(&l.descriptor.digest))
            .collect(),
    }];

    // Blobs by path: BTreeMap gives bytewise order and drops duplicates.
    enum Content<'a> {
        Bytes(&'a [u8]),
        Layer(&'a Layer),
    }
    let mut blobs: BTreeMap<String, (u64, Content)> = BTreeMap::new();
    for image in what.images() {
        for l in image.layers() {
            blobs.insert(blob_name(&l.descriptor.digest), (l.descriptor.size, Content::Layer(l)));
        }
        for bytes in [image.config_bytes(), image.manifest_bytes()] {
            blobs.insert(
                blob_name(&Digest::of(bytes)),
                (bytes.len() as u64, Content::Bytes(bytes)),
            );
        }
    }
    if let AnyImage::Index(ix) = what {
        blobs.insert(
            blob_name(ix.digest()),
            (ix.bytes().len() as u64, Content::Bytes(ix.bytes())),
        );
    }
    let index_bytes = canonical_json(&index);
    let manifest_json = serde_json::to_vec(&docker_manifest).expect("serializable");

    let mut tar = TarWriter::new(out);
    let header = |path: &str, kind: EntryKind| EntryHeader {
        path: path.into(),
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        kind,
        uid: 0,
        gid: 0,
        mtime: 0,
        xattrs: BTreeMap::new(),
    };
    tar.header(&header("blobs", EntryKind::Dir)).map_err(io)?;
    tar.header(&header("blobs/sha256", EntryKind::Dir)).map_err(io)?;
    for (path, (size, content)) in &blobs {
        tar.header(&header(path, EntryKind::File { size: *size })).map_err(io)?;
        match content {
            Content::Bytes(b) => tar.write_data(b).map_err(io)?,
            Content::Layer(l) => {
                let mut r = l.source.open()?;
                let n = std::io::copy(&mut r, tar.get_mut()).map_err(io)?;
                if n != *size {
                    return Err(Error::DigestMismatch {
                        what: format!("layer {}", l.descriptor.digest),
                        expected: format!("{size} bytes"),
                        found: format!("{n} bytes"),
                    });
                }
            }
        }
        tar.pad(*size).map_err(io)?;
    }
    for (path, bytes) in [
        ("index.json", index_bytes.as_slice()),
        ("manifest.json", manifest_json.as_slice()),
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.as_slice()),
    ] {
        tar.header(&header(
            path,
            EntryKind::File {
                size: bytes.len() as u64,
            },
        ))
        .map_err(io)?;
        tar.write_data(bytes).map_err(io)?;
        tar.pad(bytes.len() as u64).map_err(io)?;
    }
    tar.finish().map_err(io)
}

/// A docker-archive's members: an OCI layout inside, or the `docker save`
/// format of Engines before 25 (manifest.json, `<id>/layer.tar`, config
/// `<hex>.json`), for which a manifest is derived once.
pub struct ArchiveFetch {
    file: PathBuf,
    /// Member name → (data offset, size), regular files only.
    members: HashMap<String, (u64, u64)>,
    /// Blobs made here, not read from the file (the derived manifest).
    derived: HashMap<Digest, Vec<u8>>,
    /// Keeps a temporary archive (an engine export) alive.
    keep: Option<Arc<tempfile::TempPath>>,
}

fn blob_member(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

impl ArchiveFetch {
    /// Indexes the archive's members (one pass over the headers).
    pub fn open(file: &Path) -> Result<Self> {
        Ok(ArchiveFetch {
            file: file.to_path_buf(),
            members: scan(file)?,
            derived: HashMap::new(),
            keep: None,
        })
    }

    fn member(&self, name: &str) -> Result<(u64, u64)> {
        self.members.get(name).copied().ok_or_else(|| Error::NotFound {
            what: name.to_string(),
            location: self.location(),
            hint: String::new(),
        })
    }

    fn read_member(&self, name: &str, max: u64) -> Result<Vec<u8>> {
        let (off, size) = self.member(name)?;
        if size > max {
            return Err(Error::format(
                self.location(),
                format!("{name} is larger than {max} bytes"),
            ));
        }
        let mut f = open_regular(&self.file)?;
        f.seek(SeekFrom::Start(off)).map_err(Error::read(&self.file))?;
        let mut buf = Vec::new();
        f.take(size).read_to_end(&mut buf).map_err(Error::read(&self.file))?;
        Ok(buf)
    }

    /// The root descriptor: the index.json entry named `name` (or the
    /// first), else a manifest derived from Docker's manifest.json.
    pub fn root(&mut self, name: Option<&DockerName>) -> Result<Descriptor> {
        if self.members.contains_key("index.json") {
            let index: Index = serde_json::from_slice(&self.read_member("index.json", read::MAX_JSON)?)
                .map_err(|e| Error::format(self.location(), format!("index.json: {e}")))?;
            let pick = match name {
                Some(n) => index.manifests.iter().find(|d| {
                    d.annotations.get(oci::ANNOTATION_CONTAINERD_NAME) == Some(&n.qualified())
                        || d.annotations.get(oci::ANNOTATION_REF_NAME) == Some(&n.tag)
                }),
                None => index.manifests.first(),
            };
            return pick.cloned().ok_or_else(|| Error::NotFound {
                what: name.map(|n| n.to_string()).unwrap_or_else(|| "an image".into()),
                location: self.location(),
                hint: " (in index.json)".into(),
            });
        }
        if !self.members.contains_key("manifest.json") {
            return Err(Error::format(
                self.location(),
                "neither index.json nor manifest.json: not a docker-archive (`docker save` output)",
            ));
        }
        self.derive_manifest(name)
    }

    /// Engines before 25 write only manifest.json: the config and
    /// uncompressed layer tars. kiln derives an OCI manifest from them (as
    /// skopeo does), so the image's digest is that derived manifest's.
    fn derive_manifest(&mut self, name: Option<&DockerName>) -> Result<Descriptor> {
        let entries: Vec<DockerManifestEntry> =
            serde_json::from_slice(&self.read_member("manifest.json", read::MAX_JSON)?)
                .map_err(|e| Error::format(self.location(), format!("manifest.json: {e}")))?;
        let entry = match name {
            Some(n) => entries.iter().find(|e| {
                e.repo_tags
                    .iter()
                    .any(|t| DockerName::parse(t).is_ok_and(|t| t.qualified() == n.qualified()))
            }),
            None if entries.len() == 1 => entries.first(),
            None => {
                let names: Vec<&str> = entries
                    .iter()
                    .flat_map(|e| e.repo_tags.iter().map(String::as_str))
                    .collect();
                return Err(Error::invalid(
                    "image reference",
                    self.location(),
                    format!(
                        "the archive holds {} images; name one as docker-archive:FILE:NAME:TAG ({})",
                        entries.len(),
                        names.join(", ")
                    ),
                ));
            }
        }
        .ok_or_else(|| Error::NotFound {
            what: name.map(|n| n.to_string()).unwrap_or_default(),
            location: self.location(),
            hint: " (in manifest.json)".into(),
        })?;
        let config_bytes = self.read_member(&entry.config, read::MAX_JSON)?;
        let config: oci::ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::format(self.location(), format!("{}: {e}", entry.config)))?;
        if config.rootfs.diff_ids.len() != entry.layers.len() {
            return Err(Error::format(
                self.location(),
                "manifest.json lists a different number of layers than the config's diff_ids",
            ));
        }
        let config_desc = Descriptor::new(
            oci::MEDIA_TYPE_CONFIG,
            Digest::of(&config_bytes),
            config_bytes.len() as u64,
        );
        let mut layers = Vec::new();
        for (name, diff_id) in entry.layers.iter().zip(&config.rootfs.diff_ids) {
            let (off, size) = self.member(name)?;
            // Layers are uncompressed tars whose digest is the diff_id
            // (checked whenever they are read); a compressed one is hashed.
            let mut head = [0u8; 2];
            let mut f = open_regular(&self.file)?;
            f.seek(SeekFrom::Start(off)).map_err(Error::read(&self.file))?;
            let n = f.read(&mut head).map_err(Error::read(&self.file))?;
            let d = if n == 2 && head == [0x1f, 0x8b] {
                f.seek(SeekFrom::Start(off)).map_err(Error::read(&self.file))?;
                let mut h = crate::digest::HashingWriter::new(std::io::sink());
                std::io::copy(&mut f.take(size), &mut h).map_err(Error::read(&self.file))?;
                Descriptor::new(oci::MEDIA_TYPE_LAYER_GZIP, h.finish().1, size)
            } else {
                Descriptor::new(oci::MEDIA_TYPE_LAYER_TAR, diff_id.clone(), size)
            };
            self.members.insert(blob_member(&d.digest), (off, size));
            layers.push(d);
        }
        self.members
            .insert(blob_member(&config_desc.digest), self.member(&entry.config)?);
        let manifest = oci::Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
            artifact_type: None,
            subject: None,
            config: config_desc,
            layers,
            annotations: Default::default(),
        };
        let bytes = canonical_json(&manifest);
        let d = Descriptor::new(oci::MEDIA_TYPE_MANIFEST, Digest::of(&bytes), bytes.len() as u64);
        self.derived.insert(d.digest.clone(), bytes);
        Ok(d)
    }
}

impl BlobFetch for ArchiveFetch {
    fn location(&self) -> String {
        format!("docker-archive:{}", self.file.display())
    }

    fn bytes(&self, d: &Descriptor, max: u64) -> Result<Vec<u8>> {
        if let Some(b) = self.derived.get(&d.digest) {
            return Ok(b.clone());
        }
        self.read_member(&blob_member(&d.digest), max + 1)
    }

    fn layer(&self, d: &Descriptor) -> Result<Arc<dyn BlobSource>> {
        let (off, size) = self.member(&blob_member(&d.digest))?;
        if size != d.size {
            return Err(Error::DigestMismatch {
                what: format!("layer {} in {}", d.digest, self.location()),
                expected: format!("{} bytes", d.size),
                found: format!("{size} bytes"),
            });
        }
        Ok(Arc::new(VerifiedFileBlob {
            path: self.file.clone(),
            offset: off,
            descriptor: d.clone(),
            keep: self.keep.clone(),
        }))
    }
}

/// Reads an image from a docker-archive (`platform` picks from an index).
pub fn read(file: &Path, name: Option<&DockerName>, platform: Option<&oci::Platform>) -> Result<Image> {
    let mut f = ArchiveFetch::open(file)?;
    let root = f.root(name)?;
    read::read_image(&f, &root, platform)
}

/// Reads what an archive holds, whole (an image or an index).
pub fn read_any(file: &Path, name: Option<&DockerName>) -> Result<AnyImage> {
    let mut f = ArchiveFetch::open(file)?;
    let root = f.root(name)?;
    read::read_any(&f, &root)
}

/// Reads an archive that must stay alive only as long as the image: the
/// engine's export streamed to a temporary file.
pub fn read_temporary(
    file: tempfile::TempPath,
    name: Option<&DockerName>,
    platform: Option<&oci::Platform>,
) -> Result<Image> {
    let mut f = ArchiveFetch::open(&file)?;
    f.keep = Some(Arc::new(file));
    let root = f.root(name)?;
    read::read_image(&f, &root, platform)
}

/// Member name → (data offset, size), for regular files.
fn scan(file: &Path) -> Result<HashMap<String, (u64, u64)>> {
    let f = open_regular(file)?;
    let mut ar = tar::Archive::new(std::io::BufReader::new(f));
    let mut out = HashMap::new();
    let entries = ar.entries_with_seek().map_err(Error::read(file))?;
    for e in entries {
        let e = e.map_err(|e| Error::format(file.display().to_string(), format!("not a tar archive: {e}")))?;
        if e.header().entry_type().is_file() {
            let name = e
                .path()
                .map_err(Error::read(file))?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            out.insert(name, (e.raw_file_position(), e.size()));
        }
    }
    Ok(out)
}
