//! `kiln.lock`: every image input (builder, bases) resolved to a digest per
//! platform, plus the assembly format version. Like Cargo.lock: written by
//! kiln, committed by the user, and `--locked` refuses to change it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Source;
use crate::digest::Digest;
use crate::{Error, Result};

/// Current lock file format.
pub const LOCK_VERSION: u32 = 1;

/// One pinned image input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedImage {
    /// `builder` or `base`.
    pub role: String,
    /// The reference as written in kiln.toml or the recipe.
    pub reference: String,
    pub platform: String,
    pub digest: Digest,
}

/// The lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Lock {
    pub version: u32,
    pub assembly_format: u32,
    #[serde(default, rename = "image")]
    pub images: Vec<LockedImage>,
}

impl Default for Lock {
    fn default() -> Self {
        Lock {
            version: LOCK_VERSION,
            assembly_format: crate::ASSEMBLY_FORMAT_VERSION,
            images: Vec::new(),
        }
    }
}

impl Lock {
    /// Reads `path`; `None` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Read {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        };
        let lock: Lock = Source {
            file: path,
            text: &text,
        }
        .parse()
        .map_err(Error::Config)?;
        if lock.version != LOCK_VERSION {
            return Err(Error::invalid(
                "kiln.lock",
                path.display().to_string(),
                format!(
                    "lock format {} is not {LOCK_VERSION}; run `kiln lock --update`",
                    lock.version
                ),
            ));
        }
        Ok(Some(lock))
    }

    /// The pinned digest of `reference` for `platform`, if any.
    pub fn get(&self, role: &str, reference: &str, platform: &str) -> Option<&Digest> {
        self.images
            .iter()
            .find(|i| i.role == role && i.reference == reference && i.platform == platform)
            .map(|i| &i.digest)
    }

    /// Records a pin, replacing an older one for the same input.
    pub fn set(&mut self, role: &str, reference: &str, platform: &str, digest: Digest) {
        self.images
            .retain(|i| !(i.role == role && i.reference == reference && i.platform == platform));
        self.images.push(LockedImage {
            role: role.into(),
            reference: reference.into(),
            platform: platform.into(),
            digest,
        });
        self.images
            .sort_by(|a, b| (&a.role, &a.reference, &a.platform).cmp(&(&b.role, &b.reference, &b.platform)));
    }

    /// Keeps only the pins `keep` says are still used.
    pub fn retain(&mut self, keep: impl Fn(&LockedImage) -> bool) {
        self.images.retain(keep);
    }

    /// The file's text: stable, sorted, with a header comment.
    pub fn render(&self) -> String {
        let mut s = String::from(
            "# kiln.lock: every image input pinned by digest. Written by kiln; commit it.\n\
             # `kiln lock --update` refreshes it; `kiln build --locked` refuses to change it.\n",
        );
        s.push_str(&format!(
            "version = {}\nassembly-format = {}\n",
            self.version, self.assembly_format
        ));
        for i in &self.images {
            s.push_str(&format!(
                "\n[[image]]\nrole = {}\nreference = {}\nplatform = {}\ndigest = \"{}\"\n",
                toml_str(&i.role),
                toml_str(&i.reference),
                toml_str(&i.platform),
                i.digest
            ));
        }
        s
    }

    /// Writes the lock atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::store::blob::write_atomic(path, self.render().as_bytes())
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_parses_back_and_is_sorted() {
        let mut l = Lock::default();
        l.set("builder", "b:1", "linux/amd64", Digest::of(b"1"));
        l.set("base", "a\"q", "linux/amd64", Digest::of(b"2"));
        l.set("builder", "b:1", "linux/amd64", Digest::of(b"3"));
        let text = l.render();
        let back: Lock = toml::from_str(&text).unwrap();
        assert_eq!(back, l);
        assert_eq!(back.images.len(), 2);
        assert_eq!(back.images[0].role, "base");
        assert_eq!(back.get("builder", "b:1", "linux/amd64"), Some(&Digest::of(b"3")));
    }
}
