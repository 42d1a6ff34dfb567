//! Which repositories of a registry are known to hold a blob, so a push to a
//! sibling repository can mount it instead of uploading it. A small index in
//! the cache: `blob-locations/REGISTRY/HEX` lists repositories, one a line.
//! Only a hint: a mount that the registry refuses falls back to an upload.

use std::path::PathBuf;

use crate::cache::Cache;
use crate::digest::Digest;

/// The blob-location index of one cache.
#[derive(Debug, Clone)]
pub struct Locations {
    root: Option<PathBuf>,
}

impl Locations {
    /// The index in `cache` (none, silently, when the cache is unusable:
    /// mounts are an optimisation).
    pub fn new(cache: &Cache) -> Self {
        Locations {
            root: cache.blob_locations().ok(),
        }
    }

    fn file(&self, registry: &str, digest: &Digest) -> Option<PathBuf> {
        let reg = registry.replace(['/', ':'], "_");
        Some(self.root.as_ref()?.join(reg).join(digest.hex()))
    }

    /// Records that `repo` on `registry` holds `digest`.
    pub fn remember(&self, registry: &str, repo: &str, digest: &Digest) {
        let Some(f) = self.file(registry, digest) else {
            return;
        };
        let mut repos = std::fs::read_to_string(&f).unwrap_or_default();
        if repos.lines().any(|l| l == repo) {
            return;
        }
        repos.push_str(repo);
        repos.push('\n');
        if let Some(p) = f.parent() {
            let _ = std::fs::create_dir_all(p);
        }
        let _ = crate::store::blob::write_atomic(&f, repos.as_bytes());
    }

    /// Other repositories of `registry` known to hold `digest`.
    pub fn known(&self, registry: &str, repo: &str, digest: &Digest) -> Vec<String> {
        let Some(f) = self.file(registry, digest) else {
            return Vec::new();
        };
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty() && *l != repo)
            .map(str::to_string)
            .collect()
    }
}
