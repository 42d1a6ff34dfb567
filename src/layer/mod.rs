//! Deterministic layers: a [`Tree`] of entries becomes a tar stream, which is
//! hashed (diff_id), compressed and hashed again (digest) in one pass while it
//! is written to a blob file. Nothing is read twice.

pub mod compress;
pub mod read;
pub mod tar;
pub mod tree;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

pub use compress::Compression;
pub use tree::{AddSpec, Node, Tree};

use crate::digest::{Digest, HashingWriter};
use crate::oci::Descriptor;
pub use crate::time::Timestamp;
use crate::{Error, Result};
use tar::{EntryHeader, EntryKind, TarWriter};

/// The explicit inputs that shape a layer's bytes besides its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerOptions {
    /// mtime of every entry.
    pub timestamp: Timestamp,
    /// Owner of every entry.
    pub uid: u64,
    pub gid: u64,
    pub compression: Compression,
}

/// What writing a layer produced: its descriptor (digest and size of the
/// stored blob) and its diff_id (digest of the uncompressed tar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    pub descriptor: Descriptor,
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub tar_size: u64,
}

/// Writes `tree` as a layer blob into `out_path` in one pass.
/// `progress` is called with the number of content bytes added so far.
pub fn write_layer(tree: &Tree, opts: &LayerOptions, out_path: &Path, progress: &dyn Fn(u64)) -> Result<LayerInfo> {
    let file = File::create(out_path).map_err(Error::write(out_path))?;
    write_layer_to(tree, opts, BufWriter::with_capacity(1 << 20, file), progress).and_then(|(info, w)| {
        let f = w.into_inner().map_err(|e| Error::Write {
            path: out_path.to_path_buf(),
            source: e.into_error(),
        })?;
        f.sync_all().map_err(Error::write(out_path))?;
        Ok(info)
    })
}

/// Writes `tree` as a layer into any writer; returns the info and the writer.
pub fn write_layer_to<W: Write + Send + 'static>(
    tree: &Tree,
    opts: &LayerOptions,
    out: W,
    progress: &dyn Fn(u64),
) -> Result<(LayerInfo, W)> {
    let io_err = |source: std::io::Error| Error::Io {
        context: "writing layer".into(),
        source,
    };
    let stored = HashingWriter::new(out);
    let compressor = compress::Compressor::new(stored, opts.compression).map_err(io_err)?;
    let mut tar = TarWriter::new(HashingWriter::new(compressor));
    let mut done = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    for (path, node) in tree.entries() {
        let (kind, mode) = match node {
            Node::File { size, mode, .. } => (EntryKind::File { size: *size }, *mode),
            Node::Bytes { data, mode } => (
                EntryKind::File {
                    size: data.len() as u64,
                },
                *mode,
            ),
            Node::Dir { mode } => (EntryKind::Dir, *mode),
            Node::Symlink { target } => (EntryKind::Symlink { target: target.clone() }, 0o777),
            Node::Hardlink { target } => (EntryKind::Hardlink { target: target.clone() }, 0o644),
        };
        // A hardlink's mode is the target's; tar readers take it from there.
        let mode = match node {
            Node::Hardlink { target } => tree
                .get(target)
                .map(|n| match n {
                    Node::File { mode, .. } | Node::Bytes { mode, .. } => *mode,
                    _ => mode,
                })
                .unwrap_or(mode),
            _ => mode,
        };
        tar.header(&EntryHeader {
            path: path.to_string(),
            kind,
            mode,
            uid: opts.uid,
            gid: opts.gid,
            mtime: opts.timestamp.0,
            xattrs: BTreeMap::new(),
        })
        .map_err(io_err)?;
        match node {
            Node::File { src, size, .. } => {
                copy_exact(src, *size, &mut tar, &mut buf, &mut |n| {
                    done += n;
                    progress(done)
                })?;
                tar.pad(*size).map_err(io_err)?;
            }
            Node::Bytes { data, .. } => {
                tar.write_data(data).map_err(io_err)?;
                tar.pad(data.len() as u64).map_err(io_err)?;
                done += data.len() as u64;
            }
            _ => {}
        }
    }
    let tar_hash = tar.finish().map_err(io_err)?;
    let (compressor, diff_id, tar_size) = tar_hash.finish();
    let stored = compressor.finish().map_err(io_err)?;
    let (out, digest, size) = stored.finish();
    progress(done);
    Ok((
        LayerInfo {
            descriptor: Descriptor::new(opts.compression.media_type(), digest, size),
            diff_id,
            tar_size,
        },
        out,
    ))
}

fn copy_exact<W: Write>(
    src: &Path,
    size: u64,
    tar: &mut TarWriter<W>,
    buf: &mut [u8],
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut f = File::open(src).map_err(Error::read(src))?;
    let mut left = size;
    while left > 0 {
        let want = (buf.len() as u64).min(left) as usize;
        let n = f.read(&mut buf[..want]).map_err(Error::read(src))?;
        if n == 0 {
            return Err(Error::ChangedWhileReading {
                path: src.to_path_buf(),
                expected: size,
                found: size - left,
            });
        }
        tar.write_data(&buf[..n]).map_err(|source| Error::Io {
            context: "writing layer".into(),
            source,
        })?;
        left -= n as u64;
        progress(n as u64);
    }
    // A file that grew is caught too: the header already promised `size`.
    let mut probe = [0u8; 1];
    if f.read(&mut probe).map_err(Error::read(src))? != 0 {
        let now = f.metadata().map(|m| m.len()).unwrap_or(size + 1);
        return Err(Error::ChangedWhileReading {
            path: src.to_path_buf(),
            expected: size,
            found: now,
        });
    }
    Ok(())
}
