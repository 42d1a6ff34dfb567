//! The content store: blobs pulled from registries, shared across runs,
//! under `<cache>/blobs/sha256/HEX`. Written only through the
//! [`BlobWriter`] (verified before they get their name); a blob already there
//! is re-verified before it is reused, so a planted file of the right size
//! never reaches an output.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::blob::{BlobWriter, remove_stale};
use super::read::BlobFetch;
use crate::cache::Cache;
use crate::digest::{Digest, HashingWriter};
use crate::image::{BlobSource, FileBlob, open_regular, read_regular};
use crate::oci::Descriptor;
use crate::{Error, Result};

/// A content store directory.
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
}

impl ContentStore {
    /// The content store of `cache` (created when missing).
    pub fn open(cache: &Cache) -> Result<Self> {
        let dir = cache.blobs()?;
        let sha = dir.join("sha256");
        std::fs::create_dir_all(&sha).map_err(Error::write(&sha))?;
        remove_stale(&dir, Duration::from_secs(24 * 3600));
        Ok(ContentStore { dir })
    }

    fn path(&self, d: &Digest) -> PathBuf {
        self.dir.join("sha256").join(d.hex())
    }

    /// Where blob `d` lives (whether or not it is there).
    pub fn path_of(&self, d: &Digest) -> PathBuf {
        self.path(d)
    }

    /// The blob's file when the store holds it intact (size and digest
    /// checked now); a damaged one is removed.
    pub fn get(&self, d: &Descriptor) -> Result<Option<PathBuf>> {
        let path = self.path(&d.digest);
        let Ok(f) = open_regular(&path) else {
            return Ok(None);
        };
        let meta = f.metadata().map_err(Error::read(&path))?;
        let mut h = HashingWriter::new(std::io::sink());
        let ok = meta.len() == d.size && std::io::copy(&mut f.take(d.size), &mut h).is_ok() && h.finish().1 == d.digest;
        if !ok {
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(path))
    }

    /// A writer for `d`: committed under its digest only if it matches.
    pub fn writer(&self, d: &Descriptor) -> Result<BlobWriter> {
        BlobWriter::create_in(&self.dir, &self.path(&d.digest))
    }

    /// Stores bytes already in memory (a manifest), checked against `d`.
    pub fn put_bytes(&self, d: &Descriptor, bytes: &[u8]) -> Result<PathBuf> {
        use std::io::Write;
        let mut w = self.writer(d)?;
        w.write_all(bytes).map_err(Error::write(self.path(&d.digest)))?;
        w.commit(Some(d))?;
        Ok(self.path(&d.digest))
    }

    /// Where it lives (for messages).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl BlobFetch for ContentStore {
    fn location(&self) -> String {
        format!("the content store {}", self.dir.display())
    }

    fn bytes(&self, d: &Descriptor, max: u64) -> Result<Vec<u8>> {
        read_regular(&self.path(&d.digest), max)
    }

    fn layer(&self, d: &Descriptor) -> Result<Arc<dyn BlobSource>> {
        let path = self.get(d)?.ok_or_else(|| Error::NotFound {
            what: format!("blob {}", d.digest),
            location: self.location(),
            hint: String::new(),
        })?;
        Ok(Arc::new(FileBlob { path, _keep: None }))
    }
}
