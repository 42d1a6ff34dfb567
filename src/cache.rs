//! kiln's one cache directory and its named buckets. Every cache path is
//! computed here and nowhere else, so the layout of the cache is one file to
//! read and one place to change.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The cache root (`$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else
/// `~/.cache/kiln`) and the buckets in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// None when the environment names no cache (no HOME): commands that
    /// need the cache then fail with advice; the others never notice.
    root: Option<PathBuf>,
}

impl Cache {
    /// A cache rooted at `root` (created on first use, mode 0700).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache {
            root: Some(root.into()),
        }
    }

    /// The cache the environment names. Never a shared directory such as
    /// /tmp: without KILN_CACHE_DIR, XDG_CACHE_HOME or HOME there is none,
    /// and using it is an error that says so.
    pub fn from_env(kiln_cache_dir: Option<&str>, xdg_cache_home: Option<&str>, home: Option<&str>) -> Self {
        let nonempty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
        let root = nonempty(kiln_cache_dir)
            .or_else(|| nonempty(xdg_cache_home).map(|d| d.join("kiln")))
            .or_else(|| nonempty(home).map(|h| h.join(".cache/kiln")));
        Cache { root }
    }

    /// The root directory.
    pub fn root(&self) -> Result<&Path> {
        self.root.as_deref().ok_or_else(|| {
            Error::invalid(
                "cache directory",
                "(none)",
                "HOME is not set; set KILN_CACHE_DIR to a directory only you can write",
            )
        })
    }

    /// Creates the root (0700: other users must not plant blobs or results)
    /// and returns `bucket` under it.
    fn bucket(&self, bucket: &str) -> Result<PathBuf> {
        use std::os::unix::fs::DirBuilderExt;
        let root = self.root()?;
        if !root.is_dir() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(Error::write(root))?;
        }
        Ok(root.join(bucket))
    }

    /// Build results by input key: an OCI layout, one tag per key.
    pub fn images(&self) -> Result<PathBuf> {
        self.bucket("images")
    }

    /// The content store of pulled blobs: `blobs/sha256/HEX`.
    pub fn blobs(&self) -> Result<PathBuf> {
        self.bucket("blobs")
    }

    /// Which repositories of a registry are known to hold a blob (for
    /// cross-repository mounts): `blob-locations/REGISTRY/HEX`.
    pub fn blob_locations(&self) -> Result<PathBuf> {
        self.bucket("blob-locations")
    }

    /// Markers that a cargo-home volume already fetched a Cargo.lock.
    pub fn fetched(&self) -> Result<PathBuf> {
        self.bucket("fetched")
    }

    /// The crates of each cached build (for its SBOM), by input key.
    pub fn crates(&self) -> Result<PathBuf> {
        self.bucket("crates")
    }

    /// Builders kiln loaded into the engine: manifest digest → image ID.
    pub fn loaded(&self) -> Result<PathBuf> {
        self.bucket("loaded")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_from_the_environment_never_tmp() {
        assert_eq!(
            Cache::from_env(Some("/c"), Some("/x"), Some("/h")).root().unwrap(),
            Path::new("/c")
        );
        assert_eq!(
            Cache::from_env(None, Some("/x"), Some("/h")).root().unwrap(),
            Path::new("/x/kiln")
        );
        assert_eq!(
            Cache::from_env(Some(""), None, Some("/h")).root().unwrap(),
            Path::new("/h/.cache/kiln")
        );
        let none = Cache::from_env(None, None, None);
        assert!(none.images().unwrap_err().to_string().contains("KILN_CACHE_DIR"));
    }

    #[test]
    fn root_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let c = Cache::new(d.path().join("cache"));
        c.images().unwrap();
        let mode = std::fs::metadata(c.root().unwrap()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
