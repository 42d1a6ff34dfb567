//! The image as a value: a config, a manifest and layers, each serialized or
//! produced once. Images are built from scratch or from a base by appending
//! layers and setting config; sources and sinks (see [`crate::store`]) only
//! ever see this value.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use crate::digest::{Digest, VerifyingReader};
use crate::layer::LayerInfo;
use crate::oci::{
    self, Descriptor, History, ImageConfig, Index, Manifest, Platform, RootFs, RuntimeConfig, canonical_json,
};
use crate::time::Timestamp;
use crate::{Error, Result};

/// Where a blob's bytes can be read from, again and again.
pub trait BlobSource: Send + Sync + std::fmt::Debug {
    /// Opens the blob. Readers of blobs from outside verify size and digest.
    fn open(&self) -> Result<Box<dyn Read + Send>>;
    /// A file that holds exactly the blob's bytes, when there is one (lets
    /// sinks hardlink instead of copying).
    fn file(&self) -> Option<&std::path::Path> {
        None
    }
}

/// A blob in a file that kiln wrote itself and already hashed.
#[derive(Debug)]
pub struct FileBlob {
    pub path: PathBuf,
    /// Keeps a temporary file alive as long as the image refers to it.
    pub _keep: Option<Arc<tempfile::TempDir>>,
}

impl BlobSource for FileBlob {
    fn open(&self) -> Result<Box<dyn Read + Send>> {
        Ok(Box::new(File::open(&self.path).map_err(Error::read(&self.path))?))
    }
    fn file(&self) -> Option<&std::path::Path> {
        Some(&self.path)
    }
}

/// A blob read from outside (a layout, an archive): every read is verified.
#[derive(Debug)]
pub struct VerifiedFileBlob {
    pub path: PathBuf,
    pub offset: u64,
    pub descriptor: Descriptor,
    /// Keeps a temporary file (e.g. an engine export) alive as long as the
    /// image refers to it.
    pub keep: Option<Arc<tempfile::TempPath>>,
}

impl BlobSource for VerifiedFileBlob {
    fn open(&self) -> Result<Box<dyn Read + Send>> {
        use std::io::{Seek, SeekFrom};
        let mut f = open_regular(&self.path)?;
        f.seek(SeekFrom::Start(self.offset)).map_err(Error::read(&self.path))?;
        let what = format!("blob {}", self.descriptor.digest);
        // A whole file (offset 0) may be longer than declared: read one
        // byte more so the verifier sees it. A member of an archive ends
        // where its header says; what follows is the next member.
        let limit = if self.offset == 0 {
            self.descriptor.size + 1
        } else {
            self.descriptor.size
        };
        Ok(Box::new(VerifyingReader::new(
            f.take(limit),
            self.descriptor.digest.clone(),
            self.descriptor.size,
            what,
        )))
    }
}

/// Opens a file for reading without following a final symlink, and only if
/// it is a regular file: a blob planted as a link to /dev/zero or a FIFO
/// must not become an endless read.
pub fn open_regular(path: &std::path::Path) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            // O_NOFOLLOW on a symlink.
            Some(libc::ELOOP) => Error::format(
                path.display().to_string(),
                "not a regular file (a symlink where a blob or index was expected); kiln does not follow links in layouts",
            ),
            _ => Error::Read {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
    let meta = f.metadata().map_err(Error::read(path))?;
    if !meta.is_file() {
        return Err(Error::format(
            path.display().to_string(),
            "not a regular file (a symlink, device or FIFO where a blob or index was expected)",
        ));
    }
    Ok(f)
}

/// At most `max + 1` bytes of a regular file (see [`open_regular`]): one
/// byte more than allowed, so the caller can tell "too long" from "exact".
pub fn read_regular(path: &std::path::Path, max: u64) -> Result<Vec<u8>> {
    let f = open_regular(path)?;
    let mut bytes = Vec::new();
    f.take(max + 1).read_to_end(&mut bytes).map_err(Error::read(path))?;
    Ok(bytes)
}

/// One layer of an image.
#[derive(Debug, Clone)]
pub struct Layer {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    pub source: Arc<dyn BlobSource>,
}

impl Layer {
    /// A layer kiln just wrote to `path`.
    pub fn from_written(info: LayerInfo, path: PathBuf, keep: Option<Arc<tempfile::TempDir>>) -> Self {
        Layer {
            descriptor: info.descriptor,
            diff_id: info.diff_id,
            source: Arc::new(FileBlob { path, _keep: keep }),
        }
    }
}

/// An image: config and manifest bytes fixed at construction, layers by reference.
#[derive(Debug, Clone)]
pub struct Image {
    config: ImageConfig,
    config_bytes: Arc<[u8]>,
    manifest: Manifest,
    manifest_bytes: Arc<[u8]>,
    digest: Digest,
    layers: Vec<Layer>,
}

impl Image {
    /// Builds an image from a config and its layers; serializes both once.
    /// The config's rootfs is set from the layers, so it cannot disagree.
    pub fn new(
        mut config: ImageConfig,
        layers: Vec<Layer>,
        annotations: std::collections::BTreeMap<String, String>,
    ) -> Result<Self> {
        if layers.is_empty() {
            return Err(Error::invalid(
                "image",
                "(no layers)",
                "an image needs at least one layer (the OCI manifest schema requires one): add files with --add",
            ));
        }
        config.rootfs = RootFs {
            kind: "layers".into(),
            diff_ids: layers.iter().map(|l| l.diff_id.clone()).collect(),
        };
        let config_bytes: Arc<[u8]> = canonical_json(&config).into();
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
            artifact_type: None,
            subject: None,
            config: Descriptor::new(
                oci::MEDIA_TYPE_CONFIG,
                Digest::of(&config_bytes),
                config_bytes.len() as u64,
            ),
            layers: layers.iter().map(|l| l.descriptor.clone()).collect(),
            annotations,
        };
        let manifest_bytes: Arc<[u8]> = canonical_json(&manifest).into();
        Ok(Image {
            digest: Digest::of(&manifest_bytes),
            config,
            config_bytes,
            manifest,
            manifest_bytes,
            layers,
        })
    }

    /// An image read from elsewhere, keeping its exact bytes (so its digest
    /// is the source's). Checks that manifest, config and layers agree.
    pub fn from_parts(manifest_bytes: Vec<u8>, config_bytes: Vec<u8>, layers: Vec<Layer>) -> Result<Self> {
        let what = "image manifest";
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| Error::format(what, format!("not a manifest: {e}")))?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::format("image config", format!("not an image config: {e}")))?;
        let cfg_digest = Digest::of(&config_bytes);
        if cfg_digest != manifest.config.digest || config_bytes.len() as u64 != manifest.config.size {
            return Err(Error::DigestMismatch {
                what: "image config".into(),
                expected: format!("{} ({} bytes)", manifest.config.digest, manifest.config.size),
                found: format!("{cfg_digest} ({} bytes)", config_bytes.len()),
            });
        }
        if manifest.layers.len() != layers.len() || config.rootfs.diff_ids.len() != layers.len() {
            return Err(Error::format(
                what,
                format!(
                    "{} layer descriptors, {} diff_ids in the config, {} layers given",
                    manifest.layers.len(),
                    config.rootfs.diff_ids.len(),
                    layers.len()
                ),
            ));
        }
        Ok(Image {
            digest: Digest::of(&manifest_bytes),
            config,
            config_bytes: config_bytes.into(),
            manifest,
            manifest_bytes: manifest_bytes.into(),
            layers,
        })
    }

    /// The manifest digest: the image's identity.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
    /// The exact manifest bytes (what is stored, hashed and sent).
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }
    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The exact config bytes.
    pub fn config_bytes(&self) -> &[u8] {
        &self.config_bytes
    }
    /// The parsed config.
    pub fn config(&self) -> &ImageConfig {
        &self.config
    }
    /// The layers, bottom first.
    pub fn layers(&self) -> &[Layer] {
        &self.layers
    }
    /// The image's platform.
    pub fn platform(&self) -> Platform {
        self.config.platform()
    }
    /// A descriptor of the manifest (for an index), with its platform.
    pub fn manifest_descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(
            oci::MEDIA_TYPE_MANIFEST,
            self.digest.clone(),
            self.manifest_bytes.len() as u64,
        );
        if let Some(mt) = &self.manifest.media_type {
            d.media_type = mt.clone();
        }
        d.platform = Some(self.platform());
        d
    }
    /// Total stored size: manifest, config and layer blobs.
    pub fn total_size(&self) -> u64 {
        self.manifest_bytes.len() as u64
            + self.config_bytes.len() as u64
            + self.layers.iter().map(|l| l.descriptor.size).sum::<u64>()
    }
}

/// A multi-platform image (or any index) as stored: the exact index bytes,
/// and each child it names, in order.
#[derive(Debug, Clone)]
pub struct ImageIndex {
    index: Index,
    bytes: Arc<[u8]>,
    media_type: String,
    digest: Digest,
    children: Vec<AnyImage>,
}

/// What a reference names: one image, or an index of images (or indexes).
// Few of these exist at once and they are moved rarely: boxing the image
// would cost every caller a deref for no measurable gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum AnyImage {
    Image(Image),
    Index(ImageIndex),
}

/// The images of `a` and `b` to compare: the images themselves, or an
/// index's children paired by platform (a platform only one side has is an
/// error that names it).
pub fn pair_by_platform<'a>(a: &'a AnyImage, b: &'a AnyImage) -> Result<Vec<(Option<String>, &'a Image, &'a Image)>> {
    let (ca, cb) = (a.images(), b.images());
    if let ([x], [y]) = (ca.as_slice(), cb.as_slice()) {
        return Ok(vec![(None, *x, *y)]);
    }
    let mut out = Vec::new();
    for x in &ca {
        let p = x.platform();
        let y = cb.iter().find(|y| y.platform() == p).ok_or_else(|| {
            Error::invalid(
                "platforms",
                p.to_string(),
                "only one of the compared images has this platform; build the same platforms",
            )
        })?;
        out.push((Some(p.to_string()), *x, *y));
    }
    if let Some(y) = cb.iter().find(|y| !ca.iter().any(|x| x.platform() == y.platform())) {
        return Err(Error::invalid(
            "platforms",
            y.platform().to_string(),
            "only one of the compared images has this platform; build the same platforms",
        ));
    }
    Ok(out)
}

impl AnyImage {
    /// The images it holds: itself, or an index's image children.
    pub fn images(&self) -> Vec<&Image> {
        match self {
            AnyImage::Image(i) => vec![i],
            AnyImage::Index(ix) => ix
                .children()
                .iter()
                .filter_map(|c| match c {
                    AnyImage::Image(i) => Some(i),
                    AnyImage::Index(_) => None,
                })
                .collect(),
        }
    }

    /// The image for `platform`: itself, or the index's matching child.
    pub fn for_platform(&self, platform: &Platform) -> Option<&Image> {
        self.images().into_iter().find(|i| i.platform().satisfies(platform))
    }

    /// The one image an output that holds a single platform takes (an
    /// engine, a `docker load` archive): a plain image whatever its platform
    /// (the engine runs it under emulation); from an index, this machine's.
    pub fn for_single_platform_output(&self, output: &str) -> Result<&Image> {
        if let AnyImage::Image(i) = self {
            return Ok(i);
        }
        let host = Platform::host();
        self.for_platform(&host).ok_or_else(|| {
            Error::invalid(
                "output",
                output,
                format!("the index has no image for this machine ({host}); write it to oci:DIR or a registry"),
            )
        })
    }

    /// The digest of the manifest or index.
    pub fn digest(&self) -> &Digest {
        match self {
            AnyImage::Image(i) => i.digest(),
            AnyImage::Index(i) => i.digest(),
        }
    }
}

impl ImageIndex {
    /// A new OCI index over per-platform images: children ordered by
    /// platform, no annotations or timestamps, canonical JSON, so the same
    /// children always give the same index digest.
    pub fn new(mut children: Vec<Image>) -> Result<Self> {
        children.sort_by_key(|c| c.platform().to_string());
        if let Some(w) = children.windows(2).find(|w| w[0].platform() == w[1].platform()) {
            return Err(Error::invalid(
                "platforms",
                w[0].platform().to_string(),
                "listed twice; an index holds one image per platform",
            ));
        }
        let index = Index {
            schema_version: 2,
            media_type: Some(oci::MEDIA_TYPE_INDEX.into()),
            manifests: children.iter().map(Image::manifest_descriptor).collect(),
            annotations: Default::default(),
        };
        let bytes = canonical_json(&index);
        ImageIndex::from_parts(
            bytes,
            oci::MEDIA_TYPE_INDEX.into(),
            children.into_iter().map(AnyImage::Image).collect(),
        )
    }

    /// An index read from elsewhere, keeping its exact bytes. Checks that
    /// the children are the ones its descriptors name, in order.
    pub fn from_parts(bytes: Vec<u8>, media_type: String, children: Vec<AnyImage>) -> Result<Self> {
        let index: Index =
            serde_json::from_slice(&bytes).map_err(|e| Error::format("image index", format!("not an index: {e}")))?;
        if index.manifests.len() != children.len()
            || index
                .manifests
                .iter()
                .zip(&children)
                .any(|(d, c)| &d.digest != c.digest())
        {
            return Err(Error::format(
                "image index",
                "its children do not match the descriptors it lists",
            ));
        }
        Ok(ImageIndex {
            digest: Digest::of(&bytes),
            index,
            bytes: bytes.into(),
            media_type,
            children,
        })
    }

    /// The index digest: its identity.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
    /// The exact index bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The parsed index.
    pub fn index(&self) -> &Index {
        &self.index
    }
    /// Its media type (OCI index or Docker manifest list).
    pub fn media_type(&self) -> &str {
        &self.media_type
    }
    /// The children, in the index's order.
    pub fn children(&self) -> &[AnyImage] {
        &self.children
    }
    /// A descriptor of the index itself.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(self.media_type.clone(), self.digest.clone(), self.bytes.len() as u64)
    }
}

/// A config for an image built from nothing: the platform and the one timestamp.
pub fn scratch_config(platform: &Platform, ts: Timestamp) -> ImageConfig {
    ImageConfig {
        created: Some(ts.rfc3339()),
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        config: Some(RuntimeConfig::default()),
        rootfs: RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        },
        history: Vec::new(),
    }
}

/// Appends a layer's history entry to a config (the layer itself goes into
/// the layer list). The history carries only the timestamp and a fixed text:
/// no host path, no tool version.
pub fn push_history(config: &mut ImageConfig, ts: Timestamp, created_by: &str) {
    config.created = Some(ts.rfc3339());
    config.history.push(History {
        created: Some(ts.rfc3339()),
        created_by: Some(created_by.into()),
        comment: None,
        empty_layer: false,
    });
}
