//! What `kiln init` reads from the Cargo project: the package and binary,
//! the Rust version the default builder uses, `-sys` crates that link a
//! system library (they decide the recipe), and listen addresses in the
//! code (they become ports).

use std::path::{Path, PathBuf};

use crate::builder::project::{self, Package};
use crate::builder::toolchain::{self, DefaultBuilder};
use crate::{Error, Result};

/// Files larger than this are not scanned for listen addresses.
const MAX_SCAN_FILE: u64 = 1 << 20;
/// At most this many source files are scanned.
const MAX_SCAN_FILES: usize = 400;
/// Cargo.lock and Cargo.toml larger than this are not read for `-sys` crates.
const MAX_MANIFEST: u64 = 16 << 20;

/// The Cargo side of `kiln init`.
#[derive(Debug, Clone)]
pub struct Project {
    pub package: Package,
    /// kiln build needs `[build] package` (the project has several packages).
    pub needs_package: bool,
    /// The binary kiln builds when kiln.toml names none (the only one, or the
    /// one named like the package); `None` when that is ambiguous.
    pub default_bin: Option<String>,
    /// The builder `kiln build` picks when kiln.toml names none (the one
    /// rule, in builder::toolchain).
    pub default_builder: DefaultBuilder,
    /// Package names in Cargo.lock.
    pub locked: Vec<String>,
    /// Cargo.toml (package and workspace) asks some dependency for `bundled`.
    pub bundled_feature: bool,
}

fn read_small(path: &Path, max: u64) -> Result<Option<String>> {
    // Regular files only (no link to /dev/zero, no FIFO), bounded; a file
    // over `max` is skipped as before.
    let bytes = match crate::image::read_regular(path, max) {
        Ok(b) => b,
        Err(Error::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() as u64 > max {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Reads the project in `dir`; `wanted` names a workspace member.
pub fn read(dir: &Path, wanted: Option<&str>) -> Result<Project> {
    let all = project::packages(dir)?;
    let needs_package = all.len() > 1;
    let package = match wanted {
        Some(_) => project::find(dir, wanted)?,
        None => {
            let with_bins: Vec<&Package> = all.iter().filter(|p| !p.bins.is_empty()).collect();
            match with_bins.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return Err(Error::invalid(
                        "project",
                        dir.display().to_string(),
                        "no package here has a binary target (src/main.rs or [[bin]]); kiln images run a binary",
                    ));
                }
                many => {
                    let names: Vec<&str> = many.iter().map(|p| p.name.as_str()).collect();
                    return Err(Error::invalid(
                        "project",
                        dir.display().to_string(),
                        format!(
                            "{} packages with binaries ({}); choose one with `kiln init --package NAME`",
                            many.len(),
                            names.join(", ")
                        ),
                    ));
                }
            }
        }
    };
    let default_bin = match package.bins.as_slice() {
        [one] => Some(one.clone()),
        many if many.contains(&package.name) => Some(package.name.clone()),
        _ => None,
    };
    let manifest = read_small(&package.dir.join("Cargo.toml"), MAX_MANIFEST)?.unwrap_or_default();
    let root_manifest = read_small(&dir.join("Cargo.toml"), MAX_MANIFEST)?.unwrap_or_default();
    let manifest: toml::Table = manifest.parse().unwrap_or_default();
    let root_manifest: toml::Table = root_manifest.parse().unwrap_or_default();
    let default_builder = toolchain::default_builder(dir, &package)?;
    let locked = read_small(&dir.join("Cargo.lock"), MAX_MANIFEST)?
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("package").and_then(|p| p.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.get("name").and_then(|n| n.as_str()).map(String::from))
        .collect();
    let bundled_feature = [&manifest, &root_manifest].iter().any(|m| asks_bundled(m));
    Ok(Project {
        package,
        needs_package,
        default_bin,
        default_builder,
        locked,
        bundled_feature,
    })
}

/// Some dependency in `m` enables a `bundled` feature (rusqlite, libsqlite3-sys, pq-sys).
fn asks_bundled(m: &toml::Table) -> bool {
    let in_deps = |deps: Option<&toml::Value>| {
        deps.and_then(|d| d.as_table()).is_some_and(|d| {
            d.values().any(|dep| {
                dep.get("features")
                    .and_then(|f| f.as_array())
                    .is_some_and(|f| f.iter().any(|x| x.as_str().is_some_and(|s| s.starts_with("bundled"))))
            })
        })
    };
    in_deps(m.get("dependencies")) || in_deps(m.get("workspace").and_then(|w| w.get("dependencies")))
}

/// A `-sys` crate that links a system library by default.
pub struct SysCrate {
    pub name: &'static str,
    /// The Debian package with the library.
    pub library: &'static str,
    /// The recipe whose base has it, or `debian-slim` when none has.
    pub recipe: &'static str,
    /// Whether that recipe's base has the library itself.
    pub base_has_it: bool,
    /// How to keep a static binary instead.
    pub instead: &'static str,
    /// A crate in Cargo.lock that means it is built from source after all.
    pub built_from_source_if: Option<&'static str>,
}

/// The well-known ones. Crates that build their C library from source by
/// default (zstd-sys, libz-sys, curl-sys and libgit2-sys in a builder
/// without the -dev package, ring, which is no -sys crate) are not here.
pub const SYS_CRATES: &[SysCrate] = &[
    SysCrate {
        name: "openssl-sys",
        library: "libssl3",
        recipe: "distroless-cc",
        base_has_it: true,
        instead: "openssl's `vendored` feature (a static OpenSSL), or rustls instead of native-tls, keeps the default scratch-static recipe",
        built_from_source_if: Some("openssl-src"),
    },
    SysCrate {
        name: "libsqlite3-sys",
        library: "libsqlite3-0",
        recipe: "debian-slim",
        base_has_it: false,
        instead: "rusqlite's (or libsqlite3-sys's) `bundled` feature keeps the default scratch-static recipe",
        built_from_source_if: None,
    },
    SysCrate {
        name: "pq-sys",
        library: "libpq5",
        recipe: "debian-slim",
        base_has_it: false,
        instead: "pq-sys's `bundled` feature, or a pure-Rust driver (tokio-postgres, sqlx), keeps the default scratch-static recipe",
        built_from_source_if: Some("pq-src"),
    },
];

/// The `-sys` crates of the project that link a system library.
pub fn system_libraries(p: &Project) -> Vec<&'static SysCrate> {
    SYS_CRATES
        .iter()
        .filter(|s| p.locked.iter().any(|l| l == s.name))
        .filter(|s| !s.built_from_source_if.is_some_and(|c| p.locked.iter().any(|l| l == c)))
        .filter(|s| !(s.name == "libsqlite3-sys" && p.bundled_feature))
        .collect()
}

/// A listen address literal found in the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    pub port: u16,
    /// `path:line`, the path relative to the project.
    pub at: String,
    pub loopback: bool,
}

/// Listen addresses in `src/**/*.rs` of the package: `"0.0.0.0:8080"`,
/// `"[::]:3000"`, `"127.0.0.1:8080"` and `([0, 0, 0, 0], 8080)`. Bounded:
/// at most [`MAX_SCAN_FILES`] files, none over [`MAX_SCAN_FILE`], no symlinks.
pub fn listen_addresses(root: &Path, pkg_dir: &Path) -> Vec<Listen> {
    let mut files = Vec::new();
    let mut stack = vec![(pkg_dir.join("src"), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for p in entries {
            let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
            if m.is_dir() && depth < 16 {
                stack.push((p, depth + 1));
            } else if m.is_file() && p.extension().is_some_and(|x| x == "rs") && m.len() <= MAX_SCAN_FILE {
                files.push(p);
            }
        }
        if files.len() >= MAX_SCAN_FILES {
            break;
        }
    }
    files.sort();
    files.truncate(MAX_SCAN_FILES);
    let mut out: Vec<Listen> = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let rel = f.strip_prefix(root).unwrap_or(&f).display().to_string();
        for (n, line) in text.lines().enumerate() {
            for (port, loopback) in scan_line(line) {
                if !out.iter().any(|l| l.port == port) {
                    out.push(Listen {
                        port,
                        at: format!("{rel}:{}", n + 1),
                        loopback,
                    });
                }
            }
        }
    }
    out
}

/// Listen address literals on one line: (port, loopback).
fn scan_line(line: &str) -> Vec<(u16, bool)> {
    let mut out = Vec::new();
    let port_at = |s: &str, end: char| -> Option<u16> {
        let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
        let rest = &s[digits.len()..];
        (rest.starts_with(end) && !digits.is_empty())
            .then(|| digits.parse().ok())
            .flatten()
            .filter(|p| *p > 0)
    };
    for (prefix, loopback) in [
        ("\"0.0.0.0:", false),
        ("\"[::]:", false),
        ("\"127.0.0.1:", true),
        ("\"localhost:", true),
        ("\"[::1]:", true),
    ] {
        for (i, _) in line.match_indices(prefix) {
            if let Some(p) = port_at(&line[i + prefix.len()..], '"') {
                out.push((p, loopback));
            }
        }
    }
    for (prefix, loopback) in [("[0, 0, 0, 0],", false), ("[127, 0, 0, 1],", true)] {
        for (i, _) in line.match_indices(prefix) {
            if let Some(p) = port_at(line[i + prefix.len()..].trim_start(), ')') {
                out.push((p, loopback));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_literals() {
        assert_eq!(scan_line(r#"TcpListener::bind("0.0.0.0:8080")"#), [(8080, false)]);
        assert_eq!(
            scan_line(r#"bind("[::]:3000").or(bind("127.0.0.1:9"))"#),
            [(3000, false), (9, true)]
        );
        assert_eq!(scan_line("SocketAddr::from(([0, 0, 0, 0], 8081))"), [(8081, false)]);
        assert_eq!(scan_line(r#"format!("0.0.0.0:{port}")"#), []);
        assert_eq!(scan_line(r#""0.0.0.0:99999""#), []);
    }

    #[test]
    fn sys_crates_and_rust_version() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("src")).unwrap();
        std::fs::write(d.path().join("src/main.rs"), "fn main() {}").unwrap();
        std::fs::write(
            d.path().join("Cargo.toml"),
            "[package]\nname = \"s\"\nversion = \"0.1.0\"\nrust-version = \"1.85\"\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("Cargo.lock"),
            "version = 4\n[[package]]\nname = \"openssl-sys\"\nversion = \"0.9.1\"\n[[package]]\nname = \"s\"\nversion = \"0.1.0\"\n",
        )
        .unwrap();
        let p = read(d.path(), None).unwrap();
        // rust-version is a floor under kiln's own version, as `kiln build` uses it.
        assert_eq!(p.default_builder.reference, "docker.io/library/rust:1.96-slim-bookworm");
        assert_eq!(p.default_bin.as_deref(), Some("s"));
        let libs: Vec<&str> = system_libraries(&p).iter().map(|s| s.name).collect();
        assert_eq!(libs, ["openssl-sys"]);
        std::fs::write(
            d.path().join("rust-toolchain.toml"),
            "[toolchain]\nchannel = \"1.90.0\"\n",
        )
        .unwrap();
        assert_eq!(
            read(d.path(), None).unwrap().default_builder.reference,
            "docker.io/library/rust:1.90.0-slim-bookworm"
        );
    }
}
