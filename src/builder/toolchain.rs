//! The default builder: with no `[build] builder`, the official Rust image
//! for the project's toolchain, on Debian bookworm
//! (`docker.io/library/rust:<version>-slim-bookworm`), pinned by digest in
//! kiln.lock like any builder. The version comes from rust-toolchain.toml
//! (or the legacy rust-toolchain file) when it names one, else
//! `package.rust-version` as a floor under kiln's own, else kiln's own.
//! Bookworm matters: the glibc-dynamic recipes' bases are Debian 12, and a
//! binary linked against a newer glibc than its base's does not start.

use std::path::Path;

use super::project::Package;
use crate::{Error, Result};

/// The stable Rust kiln was released with: the default builder's version.
pub const DEFAULT_RUST_VERSION: &str = "1.96";

/// The Debian release of the default builder (and of the glibc bases).
pub const DEBIAN_RELEASE: &str = "bookworm";

/// The chosen default builder and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultBuilder {
    pub reference: String,
    /// Where the version came from, for messages (`rust-toolchain.toml`, …).
    pub source: String,
}

/// The reference of the official image for `version`.
pub fn official_image(version: &str) -> String {
    format!("docker.io/library/rust:{version}-slim-{DEBIAN_RELEASE}")
}

/// `1.96` or `1.96.0`: a version the official image has a tag for.
fn is_version(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A version as (major, minor, patch); `1.96` is `1.96.0`.
fn numbers(s: &str) -> Vec<u64> {
    let mut n: Vec<u64> = s.split('.').map(|p| p.parse().unwrap_or(0)).collect();
    n.resize(3, 0);
    n
}

/// Largest toolchain file read.
const MAX_TOOLCHAIN_FILE: u64 = 64 << 10;

/// The channel a toolchain file names (None: no file).
fn toolchain_channel(project: &Path) -> Result<Option<(String, String)>> {
    // rustup's order: the legacy file wins when both exist.
    for name in ["rust-toolchain", "rust-toolchain.toml"] {
        let path = project.join(name);
        // The project's file: a regular file (no link to /dev/zero), bounded.
        let bytes = match crate::image::read_regular(&path, MAX_TOOLCHAIN_FILE) {
            Ok(b) => b,
            Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if bytes.len() as u64 > MAX_TOOLCHAIN_FILE {
            return Err(Error::invalid(
                name,
                path.display().to_string(),
                "larger than 64 KiB; a toolchain file names a channel",
            ));
        }
        let text =
            String::from_utf8(bytes).map_err(|_| Error::invalid(name, path.display().to_string(), "not UTF-8 text"))?;
        // The legacy file may hold just the channel name.
        let trimmed = text.trim();
        if name == "rust-toolchain" && !trimmed.contains('[') && !trimmed.contains('\n') {
            return Ok(Some((trimmed.to_string(), name.into())));
        }
        #[derive(serde::Deserialize)]
        struct File {
            toolchain: Option<Toolchain>,
        }
        #[derive(serde::Deserialize)]
        struct Toolchain {
            channel: Option<String>,
        }
        let f: File = crate::config::Source {
            file: &path,
            text: &text,
        }
        .parse()
        .map_err(Error::Config)?;
        return Ok(f.toolchain.and_then(|t| t.channel).map(|c| (c, name.into())));
    }
    Ok(None)
}

/// The default builder for a project.
pub fn default_builder(project: &Path, pkg: &Package) -> Result<DefaultBuilder> {
    // `stable`, `nightly-2026-01-01`, …: no official image tag names them
    // reproducibly; those fall through to rust-version or kiln's own.
    if let Some((channel, file)) = toolchain_channel(project)?
        && is_version(&channel)
    {
        return Ok(DefaultBuilder {
            reference: official_image(&channel),
            source: format!("{file} (channel {channel})"),
        });
    }
    if let Some(v) = &pkg.rust_version
        && is_version(v)
        && numbers(v) > numbers(DEFAULT_RUST_VERSION)
    {
        return Ok(DefaultBuilder {
            reference: official_image(v),
            source: format!("package.rust-version = \"{v}\" (newer than kiln's {DEFAULT_RUST_VERSION})"),
        });
    }
    Ok(DefaultBuilder {
        reference: official_image(DEFAULT_RUST_VERSION),
        source: format!("kiln's default Rust {DEFAULT_RUST_VERSION}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(rust_version: Option<&str>) -> Package {
        Package {
            name: "app".into(),
            version: "0.1.0".into(),
            bins: vec!["app".into()],
            dir: ".".into(),
            rust_version: rust_version.map(Into::into),
        }
    }

    #[test]
    fn toolchain_file_then_rust_version_floor_then_default() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let b = |rv| default_builder(p, &pkg(rv)).unwrap().reference;
        assert_eq!(b(None), "docker.io/library/rust:1.96-slim-bookworm");
        // rust-version is a floor: an older one keeps kiln's version.
        assert_eq!(b(Some("1.70")), "docker.io/library/rust:1.96-slim-bookworm");
        assert_eq!(b(Some("1.97.1")), "docker.io/library/rust:1.97.1-slim-bookworm");
        // 1.96.0 is kiln's own version, not a newer one.
        assert_eq!(b(Some("1.96.0")), "docker.io/library/rust:1.96-slim-bookworm");
        std::fs::write(p.join("rust-toolchain"), "1.80.1\n").unwrap();
        assert_eq!(b(Some("1.97")), "docker.io/library/rust:1.80.1-slim-bookworm");
        std::fs::remove_file(p.join("rust-toolchain")).unwrap();
        std::fs::write(p.join("rust-toolchain.toml"), "[toolchain]\nchannel = \"1.85\"\n").unwrap();
        let got = default_builder(p, &pkg(None)).unwrap();
        assert_eq!(got.reference, "docker.io/library/rust:1.85-slim-bookworm");
        assert!(got.source.contains("rust-toolchain.toml"), "{got:?}");
        std::fs::write(p.join("rust-toolchain.toml"), "[toolchain]\nchannel = \"nightly\"\n").unwrap();
        assert_eq!(b(None), "docker.io/library/rust:1.96-slim-bookworm");
        std::fs::write(p.join("rust-toolchain.toml"), "[toolchain\n").unwrap();
        let e = default_builder(p, &pkg(None)).unwrap_err().to_string();
        assert!(e.contains("rust-toolchain.toml:1:"), "{e}");
        // A link (to /dev/zero, say) is refused, not read.
        std::fs::remove_file(p.join("rust-toolchain.toml")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", p.join("rust-toolchain")).unwrap();
        assert!(default_builder(p, &pkg(None)).is_err());
    }
}
