//! docker-archive files (`docker-archive:FILE[:NAME[:TAG]]`): one tar holding
//! an OCI layout and a Docker `manifest.json` side by side, so Engine 20.10
//! (which reads manifest.json) and Engine ≥ 25 (which reads the OCI index)
//! both load it. Written to a temp file and renamed: never half a file.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Sink;
use crate::digest::Digest;
use crate::image::{Image, Layer, VerifiedFileBlob};
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
    fn put(&self, image: &Image) -> Result<()> {
        let dir = match self.file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".kiln-tmp-")
            .tempfile_in(dir)
            .map_err(Error::write(&self.file))?;
        let out = BufWriter::with_capacity(1 << 20, tmp.reopen().map_err(Error::write(&self.file))?);
        let out = write_archive(image, self.name.as_ref(), out).map_err(|e| match e {
            Error::Io { source, .. } => Error::Write {
                path: self.file.clone(),
                source,
            },
            e => e,
        })?;
        let f = out.into_inner().map_err(|e| Error::Write {
            path: self.file.clone(),
            source: e.into_error(),
        })?;
        super::make_readable(&f, &self.file)?;
        f.sync_all().map_err(Error::write(&self.file))?;
        tmp.persist(&self.file).map_err(|e| Error::Write {
            path: self.file.clone(),
            source: e.error,
        })?;
        Ok(())
    }
}

/// Streams the docker-archive form of `image` into `out`.
pub fn write_archive<W: Write>(image: &Image, name: Option<&DockerName>, out: W) -> Result<W> {
    let io = |source: std::io::Error| Error::Io {
        context: "writing docker-archive".into(),
        source,
    };
    let blob_name = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let mut index_desc = image.manifest_descriptor();
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
        config: blob_name(&image.manifest().config.digest),
        repo_tags: name.map(|n| vec![n.to_string()]).unwrap_or_default(),
        layers: image.layers().iter().map(|l| blob_name(&l.descriptor.digest)).collect(),
    }];

    // Blobs by path: BTreeMap gives bytewise order and drops duplicates.
    enum Content<'a> {
        Bytes(&'a [u8]),
        Layer(&'a Layer),
    }
    let mut blobs: BTreeMap<String, (u64, Content)> = BTreeMap::new();
    for l in image.layers() {
        blobs.insert(blob_name(&l.descriptor.digest), (l.descriptor.size, Content::Layer(l)));
    }
    blobs.insert(
        blob_name(&image.manifest().config.digest),
        (image.config_bytes().len() as u64, Content::Bytes(image.config_bytes())),
    );
    blobs.insert(
        blob_name(image.digest()),
        (
            image.manifest_bytes().len() as u64,
            Content::Bytes(image.manifest_bytes()),
        ),
    );
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

/// Reads an image from a docker-archive: the OCI layout inside when there is
/// one, else Docker's manifest.json (as `docker save` writes it).
pub fn read(file: &Path, platform: Option<&oci::Platform>) -> Result<Image> {
    let entries = scan(file)?;
    let location = format!("docker-archive:{}", file.display());
    let read_member = |name: &str, max: u64| -> Result<Vec<u8>> {
        let &(off, size) = entries.get(name).ok_or_else(|| Error::NotFound {
            what: name.to_string(),
            location: location.clone(),
            hint: String::new(),
        })?;
        if size > max {
            return Err(Error::format(&location, format!("{name} is larger than {max} bytes")));
        }
        let mut f = File::open(file).map_err(Error::read(file))?;
        f.seek(SeekFrom::Start(off)).map_err(Error::read(file))?;
        let mut buf = vec![0u8; size as usize];
        f.read_exact(&mut buf).map_err(Error::read(file))?;
        Ok(buf)
    };
    const MAX_JSON: u64 = 16 << 20;
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    let (manifest_bytes, _) = if entries.contains_key("index.json") {
        let index: Index = serde_json::from_slice(&read_member("index.json", MAX_JSON)?)
            .map_err(|e| Error::format(&location, format!("index.json: {e}")))?;
        let desc = index.manifests.first().ok_or_else(|| Error::NotFound {
            what: "an image".into(),
            location: location.clone(),
            hint: " (index.json lists none)".into(),
        })?;
        let mut bytes = read_member(&blob(&desc.digest), MAX_JSON)?;
        let mut d = desc.clone();
        if desc.media_type == oci::MEDIA_TYPE_INDEX {
            let inner: Index =
                serde_json::from_slice(&bytes).map_err(|e| Error::format(&location, format!("index: {e}")))?;
            let want = platform.cloned().unwrap_or_else(oci::Platform::host);
            d = inner
                .manifests
                .into_iter()
                .find(|m| m.platform.as_ref().is_some_and(|p| p.satisfies(&want)))
                .ok_or_else(|| Error::NotFound {
                    what: format!("an image for {want}"),
                    location: location.clone(),
                    hint: String::new(),
                })?;
            bytes = read_member(&blob(&d.digest), MAX_JSON)?;
        }
        if Digest::of(&bytes) != d.digest {
            return Err(Error::DigestMismatch {
                what: format!("manifest in {location}"),
                expected: d.digest.to_string(),
                found: Digest::of(&bytes).to_string(),
            });
        }
        (bytes, d)
    } else {
        return Err(Error::format(
            &location,
            "no index.json: only archives with an OCI layout inside (kiln's, or `docker save` from Engine 25+) are read",
        ));
    };
    let manifest: oci::Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| Error::format(&location, format!("manifest: {e}")))?;
    let config_bytes = read_member(&blob(&manifest.config.digest), MAX_JSON)?;
    let config: oci::ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|e| Error::format(&location, format!("config: {e}")))?;
    let layers = manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(d, diff_id): (&Descriptor, &Digest)| {
            let &(off, size) = entries.get(&blob(&d.digest)).ok_or_else(|| Error::NotFound {
                what: format!("layer {}", d.digest),
                location: location.clone(),
                hint: String::new(),
            })?;
            if size != d.size {
                return Err(Error::DigestMismatch {
                    what: format!("layer {} in {location}", d.digest),
                    expected: format!("{} bytes", d.size),
                    found: format!("{size} bytes"),
                });
            }
            Ok(Layer {
                descriptor: d.clone(),
                diff_id: diff_id.clone(),
                source: Arc::new(VerifiedFileBlob {
                    path: file.to_path_buf(),
                    offset: off,
                    descriptor: d.clone(),
                }),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Image::from_parts(manifest_bytes, config_bytes, layers)
}

/// Member name → (data offset, size), for regular files.
fn scan(file: &Path) -> Result<HashMap<String, (u64, u64)>> {
    let f = File::open(file).map_err(Error::read(file))?;
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
