//! Where images are read from and written to. Every sink takes the same
//! [`Image`] value and writes its exact bytes; every source gives one back
//! with its blobs verified as they are read.

pub mod archive;
pub mod daemon;
pub mod layout;
pub mod registry;

use std::io::{Read, Write};
use std::path::Path;

use crate::digest::{Digest, HashingWriter};
use crate::image::Image;
use crate::reference::ImageRef;
use crate::{Error, Result};

/// Something an image can be written to.
pub trait Sink {
    /// Writes the image; on error nothing is left that refers to it.
    fn put(&self, image: &Image) -> Result<()>;
}

/// A sink for a reference.
pub fn sink_for(r: &ImageRef) -> Result<Box<dyn Sink>> {
    Ok(match r {
        ImageRef::Oci { dir, tag } => Box::new(layout::LayoutSink::new(dir, tag.clone())),
        ImageRef::DockerArchive { file, name } => Box::new(archive::ArchiveSink::new(file, name.clone())),
        ImageRef::DockerDaemon { name } => Box::new(daemon::DaemonSink::new(name.clone())),
        ImageRef::Registry(r) => Box::new(registry::RegistrySink::new(r.clone(), Vec::new())),
        ImageRef::Scratch => {
            return Err(Error::invalid(
                "output",
                "scratch",
                "scratch is an input, not an output; use oci:DIR, docker-archive:FILE or docker-daemon:NAME:TAG",
            ));
        }
    })
}

/// Opened sinks, one per output reference.
pub type Sinks = Vec<Box<dyn Sink>>;

/// Parses output references and opens a sink for each, before any work is
/// done, so a typo in the last `--out` costs nothing.
pub fn outputs(refs: &[String]) -> Result<(Vec<ImageRef>, Sinks)> {
    let outs = refs.iter().map(|o| ImageRef::parse(o)).collect::<Result<Vec<_>>>()?;
    let sinks = outs.iter().map(sink_for).collect::<Result<Vec<_>>>()?;
    Ok((outs, sinks))
}

/// Reads the image a reference names. `platform` picks from an index.
pub fn open(r: &ImageRef, platform: Option<&crate::oci::Platform>) -> Result<Image> {
    match r {
        ImageRef::Oci { dir, tag } => layout::read(dir, tag.as_deref(), platform),
        ImageRef::DockerArchive { file, .. } => archive::read(file, platform),
        ImageRef::Registry(reg) => registry::pull(reg, platform),
        ImageRef::DockerDaemon { name } => Err(Error::invalid(
            "image reference",
            format!("docker-daemon:{name}"),
            "reading from the engine is not supported yet; `docker save` it and use docker-archive:FILE",
        )),
        ImageRef::Scratch => Err(Error::invalid(
            "image reference",
            "scratch",
            "scratch has no manifest to read",
        )),
    }
}

/// Copies `src` into a new file at `dest` through a hash, checking the
/// result against `expected` and fsyncing before returning.
pub(crate) fn copy_verified(src: &mut dyn Read, dest: &Path, expected: &Digest, size: u64) -> Result<()> {
    let f = std::fs::File::create(dest).map_err(Error::write(dest))?;
    let mut w = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, f));
    std::io::copy(src, &mut w).map_err(|e| Error::Io {
        context: format!("copying blob {expected} to {}", dest.display()),
        source: e,
    })?;
    let (buf, digest, n) = w.finish();
    if &digest != expected || n != size {
        return Err(Error::DigestMismatch {
            what: format!("blob written to {}", dest.display()),
            expected: format!("{expected} ({size} bytes)"),
            found: format!("{digest} ({n} bytes)"),
        });
    }
    let f = buf.into_inner().map_err(|e| Error::Write {
        path: dest.to_path_buf(),
        source: e.into_error(),
    })?;
    f.sync_all().map_err(Error::write(dest))?;
    Ok(())
}

/// Writes bytes to `path` atomically: a temp file beside it, then rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-tmp-")
        .tempfile_in(dir)
        .map_err(Error::write(path))?;
    tmp.write_all(bytes).map_err(Error::write(path))?;
    make_readable(tmp.as_file(), path)?;
    tmp.as_file().sync_all().map_err(Error::write(path))?;
    tmp.persist(path).map_err(|e| Error::Write {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Temp files are created 0600; published files are world-readable like
/// those of skopeo and umoci, so other users (and engines) can read them.
pub(crate) fn make_readable(f: &std::fs::File, path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(Error::write(path))
}
