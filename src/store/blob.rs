//! The one blob writer: every file kiln publishes (layout blobs, index.json,
//! docker-archive files, the content store, kiln.lock) is written through a
//! [`BlobWriter`], which hashes while writing and on [`BlobWriter::commit`]
//! checks digest and size, fsyncs, makes the file world-readable and renames
//! it into place. An interrupted or failed write leaves at most a staging
//! file, never a partial file under a final name. (Model: ocidir-rs's
//! `BlobWriter::complete_verified_as`.)

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::digest::{Digest, HashingWriter};
use crate::oci::Descriptor;
use crate::{Error, Result};

/// Prefix of staging files; stale ones (a killed writer's) are removed by
/// [`remove_stale`].
pub const STAGING_PREFIX: &str = ".kiln-tmp-";

/// A file being written: bytes go to a staging file in `staging` (same
/// filesystem as `dest`), hashed as they pass.
pub struct BlobWriter {
    tmp: tempfile::TempPath,
    out: HashingWriter<BufWriter<File>>,
    dest: PathBuf,
}

impl BlobWriter {
    /// A writer for `dest`, staged beside it.
    pub fn create(dest: &Path) -> Result<Self> {
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Self::create_in(dir, dest)
    }

    /// A writer for `dest`, staged in `staging` (which must be on the same
    /// filesystem: the commit is a rename).
    pub fn create_in(staging: &Path, dest: &Path) -> Result<Self> {
        let tmp = tempfile::Builder::new()
            .prefix(STAGING_PREFIX)
            .tempfile_in(staging)
            .map_err(Error::write(dest))?;
        let (file, tmp) = tmp.into_parts();
        Ok(BlobWriter {
            tmp,
            out: HashingWriter::new(BufWriter::with_capacity(1 << 20, file)),
            dest: dest.to_path_buf(),
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.out.count()
    }

    /// Where the blob will land.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Checks the content against `expected` (digest and size) when given,
    /// then makes it durable and renames it into place. Returns the digest
    /// and size of what was written. On a mismatch nothing is renamed and
    /// the staging file is removed.
    pub fn commit(self, expected: Option<&Descriptor>) -> Result<(Digest, u64)> {
        let (buf, digest, size) = self.out.finish();
        if let Some(d) = expected
            && (digest != d.digest || size != d.size)
        {
            return Err(Error::DigestMismatch {
                what: format!("blob written to {}", self.dest.display()),
                expected: format!("{} ({} bytes)", d.digest, d.size),
                found: format!("{digest} ({size} bytes)"),
            });
        }
        let file = buf.into_inner().map_err(|e| Error::Write {
            path: self.dest.clone(),
            source: e.into_error(),
        })?;
        // Staging files are created 0600; published files are world-readable
        // like skopeo's and umoci's, so engines and other users can read them.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(Error::write(&self.dest))?;
        file.sync_all().map_err(Error::write(&self.dest))?;
        self.tmp.persist(&self.dest).map_err(|e| Error::Write {
            path: self.dest.clone(),
            source: e.error,
        })?;
        Ok((digest, size))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Writes `bytes` to `path` atomically (staged beside it).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut w = BlobWriter::create(path)?;
    w.write_all(bytes).map_err(Error::write(path))?;
    w.commit(None).map(|_| ())
}

/// Removes staging files older than `age` in `dir` (a writer killed with
/// SIGKILL cannot clean up after itself). Errors are ignored: another
/// writer may be removing the same file.
pub fn remove_stale(dir: &Path, age: Duration) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for e in rd.flatten() {
        if !e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|d| d > age));
        if old {
            // A staging file, or a staging directory of a killed assembly.
            let _ = std::fs::remove_file(e.path()).or_else(|_| std::fs::remove_dir_all(e.path()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_checks_then_renames() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("blob");
        let mut w = BlobWriter::create(&dest).unwrap();
        w.write_all(b"hello").unwrap();
        let good = Descriptor::new("x", Digest::of(b"hello"), 5);
        assert_eq!(w.commit(Some(&good)).unwrap(), (Digest::of(b"hello"), 5));
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");

        let dest2 = d.path().join("blob2");
        let mut w = BlobWriter::create(&dest2).unwrap();
        w.write_all(b"hellO").unwrap();
        assert!(w.commit(Some(&good)).is_err());
        assert!(!dest2.exists());
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "only the first blob remains: {left:?}");
    }

    #[test]
    fn stale_staging_files_go() {
        let d = tempfile::tempdir().unwrap();
        let stale = d.path().join(format!("{STAGING_PREFIX}old"));
        std::fs::write(&stale, b"x").unwrap();
        let keep = d.path().join("keep");
        std::fs::write(&keep, b"x").unwrap();
        remove_stale(d.path(), Duration::from_secs(3600));
        assert!(stale.exists(), "young staging files stay");
        remove_stale(d.path(), Duration::ZERO);
        assert!(!stale.exists() && keep.exists());
    }
}
