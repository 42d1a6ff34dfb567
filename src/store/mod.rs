//! Where images are read from and written to. Every source goes through the
//! one read path ([`read`]) and gives back an [`Image`] (or an
//! [`AnyImage`]) with its blobs verified as they are read; every sink takes
//! the same value and writes its exact bytes through the one blob writer
//! ([`blob`]).

pub mod archive;
pub mod blob;
pub mod content;
pub mod daemon;
pub mod engine;
pub mod layout;
pub mod read;
pub mod registry;
mod transport;

use crate::attest::Artifact;
use crate::context::Context;
use crate::image::{AnyImage, Image};
use crate::oci::Platform;
use crate::reference::ImageRef;
use crate::{Error, Result};

/// Something an image can be written to.
pub trait Sink {
    /// Writes the image; on error nothing is left that refers to it.
    fn put(&self, image: &Image) -> Result<()>;

    /// Writes an image or a whole index (children first).
    fn put_any(&self, what: &AnyImage) -> Result<()> {
        match what {
            AnyImage::Image(i) => self.put(i),
            AnyImage::Index(_) => Err(Error::invalid(
                "output",
                "(an image index)",
                "this output holds one image; write multi-platform images to oci:DIR or a registry",
            )),
        }
    }

    /// Writes an image or index with documents attached to it (SBOMs,
    /// provenance). Outputs that cannot hold them (the engine, a `docker
    /// load` archive) take the image alone.
    fn put_attached(&self, what: &AnyImage, attached: &[Artifact]) -> Result<()> {
        let _ = attached;
        self.put_any(what)
    }
}

/// A sink for a reference.
pub fn sink_for(ctx: &Context, r: &ImageRef) -> Result<Box<dyn Sink>> {
    Ok(match r {
        ImageRef::Oci { dir, tag } => Box::new(layout::LayoutSink::new(dir, tag.clone())),
        ImageRef::DockerArchive { file, name } => Box::new(archive::ArchiveSink::new(file, name.clone())),
        ImageRef::DockerDaemon { name } => Box::new(daemon::DaemonSink::new(ctx.engine.clone(), name.clone())),
        ImageRef::Registry(r) => Box::new(registry::RegistrySink::new(ctx, r.clone(), Vec::new())),
        ImageRef::Scratch => {
            return Err(Error::invalid(
                "output",
                "scratch",
                "scratch is an input, not an output; use oci:DIR, docker-archive:FILE or docker-daemon:NAME:TAG",
            ));
        }
    })
}

/// Several outputs as one sink, written in order (like ko's
/// `MultiPublisher`): whoever produces an image never knows how many
/// destinations there are.
pub struct Outputs {
    refs: Vec<ImageRef>,
    sinks: Vec<Box<dyn Sink>>,
}

impl Outputs {
    /// Opens a sink for each reference before any work is done, so a typo
    /// in the last `--out` costs nothing. Local outputs are written before
    /// registry pushes.
    pub fn open(ctx: &Context, refs: &[ImageRef]) -> Result<Self> {
        let mut refs = refs.to_vec();
        refs.sort_by_key(|o| matches!(o, ImageRef::Registry(_)));
        let sinks = refs.iter().map(|r| sink_for(ctx, r)).collect::<Result<Vec<_>>>()?;
        Ok(Outputs { refs, sinks })
    }

    /// Parses and opens output references given as text.
    pub fn parse(ctx: &Context, refs: &[String]) -> Result<Self> {
        let refs = refs.iter().map(|o| ImageRef::parse(o)).collect::<Result<Vec<_>>>()?;
        Self::open(ctx, &refs)
    }

    /// The references, in the order they are written.
    pub fn refs(&self) -> &[ImageRef] {
        &self.refs
    }
}

impl Sink for Outputs {
    fn put(&self, image: &Image) -> Result<()> {
        self.sinks.iter().try_for_each(|s| s.put(image))
    }
    fn put_any(&self, what: &AnyImage) -> Result<()> {
        self.sinks.iter().try_for_each(|s| s.put_any(what))
    }
    fn put_attached(&self, what: &AnyImage, attached: &[Artifact]) -> Result<()> {
        self.sinks.iter().try_for_each(|s| s.put_attached(what, attached))
    }
}

/// Everything attached to what `r` names: to the image or index itself and,
/// for an index, to each child (SBOMs are per platform). Copies carry these.
pub fn attached_to(ctx: &Context, r: &ImageRef, what: &AnyImage) -> Result<Vec<Artifact>> {
    let mut subjects = vec![what.digest().clone()];
    if let AnyImage::Index(_) = what {
        subjects.extend(what.images().iter().map(|i| i.digest().clone()));
    }
    let mut out = Vec::new();
    for s in &subjects {
        out.extend(referrers(ctx, r, s)?);
    }
    Ok(out)
}

/// The documents attached to `subject` where `r` lives (an OCI layout or a
/// registry; the engine and archives hold none), each read whole and verified.
/// Entries that are not kiln-readable documents about `subject` (about
/// another manifest, another shape) are left out; more than
/// [`crate::attest::MAX_REFERRERS`] listed, or more than
/// [`crate::attest::MAX_REFERRER_BYTES`] of documents, is an error.
pub fn referrers(ctx: &Context, r: &ImageRef, subject: &crate::digest::Digest) -> Result<Vec<Artifact>> {
    match r {
        ImageRef::Oci { dir, .. } => layout::referrers(dir, subject),
        ImageRef::Registry(reg) => {
            let listed = registry::referrers::list(ctx, reg, subject)?;
            let too_many = |what: String| Error::format(format!("{reg}: documents attached to {subject}"), what);
            if listed.len() > crate::attest::MAX_REFERRERS {
                return Err(too_many(format!(
                    "{} are listed; kiln reads at most {}",
                    listed.len(),
                    crate::attest::MAX_REFERRERS
                )));
            }
            let mut out = Vec::new();
            let mut bytes = 0u64;
            for d in &listed {
                let Ok(a) = registry::referrers::fetch(ctx, reg, d, subject) else {
                    continue;
                };
                bytes += a.document().len() as u64;
                if bytes > crate::attest::MAX_REFERRER_BYTES {
                    return Err(too_many(format!(
                        "more than {} bytes of them",
                        crate::attest::MAX_REFERRER_BYTES
                    )));
                }
                out.push(a);
            }
            Ok(out)
        }
        _ => Ok(Vec::new()),
    }
}

/// Reads the image a reference names. `platform` picks from an index.
pub fn open(ctx: &Context, r: &ImageRef, platform: Option<&Platform>) -> Result<Image> {
    match r {
        ImageRef::Oci { dir, tag } => layout::read(dir, tag.as_deref(), platform),
        ImageRef::DockerArchive { file, name } => archive::read(file, name.as_ref(), platform),
        ImageRef::Registry(reg) => registry::pull(ctx, reg, platform),
        ImageRef::DockerDaemon { name } => daemon::export(&ctx.engine, name, platform),
        ImageRef::Scratch => Err(Error::invalid(
            "image reference",
            "scratch",
            "scratch has no manifest to read",
        )),
    }
}

/// Reads what a reference names, whole: an image or an index with every
/// child (to push or copy the set).
pub fn open_any(ctx: &Context, r: &ImageRef) -> Result<AnyImage> {
    match r {
        ImageRef::Oci { dir, tag } => layout::read_any(dir, tag.as_deref()),
        ImageRef::DockerArchive { file, name } => archive::read_any(file, name.as_ref()),
        ImageRef::Registry(reg) => registry::pull_any(ctx, reg),
        // The engine stores one platform: its image is the whole.
        other => open(ctx, other, None).map(AnyImage::Image),
    }
}
