//! What kiln needs to know about a Cargo project, read from Cargo.toml
//! without running cargo (the host may not have a toolchain): the package,
//! its version and its binaries.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// The package kiln builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// Binary targets, by name.
    pub bins: Vec<String>,
    /// The package's directory.
    pub dir: PathBuf,
    /// `package.rust-version` (the oldest toolchain the package supports).
    pub rust_version: Option<String>,
}

#[derive(Deserialize)]
struct Manifest {
    package: Option<PackageSection>,
    workspace: Option<WorkspaceSection>,
    #[serde(default)]
    bin: Vec<BinSection>,
}

#[derive(Deserialize)]
struct PackageSection {
    name: String,
    version: Option<toml::Value>,
    #[serde(rename = "rust-version")]
    rust_version: Option<toml::Value>,
    #[serde(default = "yes")]
    autobins: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct WorkspaceSection {
    #[serde(default)]
    members: Vec<String>,
    package: Option<WorkspacePackage>,
}

#[derive(Deserialize)]
struct WorkspacePackage {
    version: Option<String>,
    #[serde(rename = "rust-version")]
    rust_version: Option<String>,
}

#[derive(Deserialize)]
struct BinSection {
    name: Option<String>,
}

fn read_manifest(path: &Path) -> Result<Manifest> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::invalid(
            "project",
            path.parent().unwrap_or(Path::new(".")).display().to_string(),
            "no Cargo.toml here; run kiln in a Cargo project or pass --project DIR",
        ),
        _ => Error::Read {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    crate::config::Source {
        file: path,
        text: &text,
    }
    .parse()
    .map_err(Error::Config)
}

/// Finds the package to build: the root package, or `wanted` among the
/// workspace members.
pub fn find(project: &Path, wanted: Option<&str>) -> Result<Package> {
    let all = packages(project)?;
    match wanted {
        Some(w) => all.into_iter().find(|p| p.name == w).ok_or_else(|| {
            Error::invalid(
                "[build] package",
                w,
                "no package of that name in this project or workspace",
            )
        }),
        None => {
            let n = all.len();
            if n != 1 {
                let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
                return Err(Error::invalid(
                    "project",
                    project.display().to_string(),
                    format!(
                        "{n} packages found ({}); name one with [build] package = \"NAME\" in kiln.toml",
                        names.join(", ")
                    ),
                ));
            }
            Ok(all.into_iter().next().expect("one"))
        }
    }
}

/// Every package of the project: the root package, then the workspace
/// members in the order Cargo.toml lists them.
pub fn packages(project: &Path) -> Result<Vec<Package>> {
    let root_path = project.join("Cargo.toml");
    let root = read_manifest(&root_path)?;
    let ws_version = root
        .workspace
        .as_ref()
        .and_then(|w| w.package.as_ref())
        .and_then(|p| p.version.clone());
    let ws_rust_version = root
        .workspace
        .as_ref()
        .and_then(|w| w.package.as_ref())
        .and_then(|p| p.rust_version.clone());
    let members = root.workspace.as_ref().map(|w| w.members.clone()).unwrap_or_default();
    let mut candidates = Vec::new();
    if root.package.is_some() {
        candidates.push((project.to_path_buf(), root));
    }
    for m in members {
        let mut dirs: Vec<PathBuf> = match m.strip_suffix("/*") {
            Some(parent) => std::fs::read_dir(project.join(parent))
                .map(|rd| {
                    rd.filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|p| p.join("Cargo.toml").exists())
                        .collect()
                })
                .unwrap_or_default(),
            None => vec![project.join(&m)],
        };
        dirs.sort();
        for d in dirs {
            let man = read_manifest(&d.join("Cargo.toml"))?;
            candidates.push((d, man));
        }
    }
    Ok(candidates
        .into_iter()
        .filter_map(|(dir, man)| package(dir, man, ws_version.as_deref(), ws_rust_version.as_deref()))
        .collect())
}

fn package(dir: PathBuf, man: Manifest, ws_version: Option<&str>, ws_rust_version: Option<&str>) -> Option<Package> {
    let pkg = man.package?;
    let version = match pkg.version {
        Some(toml::Value::String(v)) => v,
        Some(toml::Value::Table(t)) if t.get("workspace").and_then(|v| v.as_bool()) == Some(true) => {
            ws_version.unwrap_or("0.0.0").to_string()
        }
        _ => "0.0.0".into(),
    };
    let rust_version = match pkg.rust_version {
        Some(toml::Value::String(v)) => Some(v),
        Some(toml::Value::Table(t)) if t.get("workspace").and_then(|v| v.as_bool()) == Some(true) => {
            ws_rust_version.map(str::to_string)
        }
        _ => None,
    };
    let mut bins: Vec<String> = man.bin.iter().filter_map(|b| b.name.clone()).collect();
    if pkg.autobins && dir.join("src/main.rs").exists() && !bins.contains(&pkg.name) {
        bins.push(pkg.name.clone());
    }
    if pkg.autobins
        && let Ok(rd) = std::fs::read_dir(dir.join("src/bin"))
    {
        for e in rd.flatten() {
            let p = e.path();
            let name = if p.extension().is_some_and(|x| x == "rs") {
                p.file_stem().map(|s| s.to_string_lossy().into_owned())
            } else if p.join("main.rs").exists() {
                p.file_name().map(|s| s.to_string_lossy().into_owned())
            } else {
                None
            };
            if let Some(n) = name
                && !bins.contains(&n)
            {
                bins.push(n);
            }
        }
    }
    bins.sort();
    Some(Package {
        name: pkg.name,
        version,
        bins,
        dir,
        rust_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_package_with_bins() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("Cargo.toml"),
            "[package]\nname = \"app\"\nversion = \"1.2.3\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(d.path().join("src/bin")).unwrap();
        std::fs::write(d.path().join("src/main.rs"), "").unwrap();
        std::fs::write(d.path().join("src/bin/tool.rs"), "").unwrap();
        let p = find(d.path(), None).unwrap();
        assert_eq!((p.name.as_str(), p.version.as_str()), ("app", "1.2.3"));
        assert_eq!(p.bins, ["app", "tool"]);
    }

    #[test]
    fn workspace_member_by_name() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("Cargo.toml"),
            "[workspace]\nmembers = [\"crates/*\"]\n[workspace.package]\nversion = \"0.9.0\"\n",
        )
        .unwrap();
        for n in ["a", "b"] {
            let m = d.path().join("crates").join(n);
            std::fs::create_dir_all(m.join("src")).unwrap();
            std::fs::write(
                m.join("Cargo.toml"),
                format!("[package]\nname = \"{n}\"\nversion.workspace = true\n"),
            )
            .unwrap();
            std::fs::write(m.join("src/main.rs"), "").unwrap();
        }
        assert!(
            find(d.path(), None)
                .unwrap_err()
                .to_string()
                .contains("2 packages found (a, b)")
        );
        let b = find(d.path(), Some("b")).unwrap();
        assert_eq!((b.name.as_str(), b.version.as_str()), ("b", "0.9.0"));
        assert!(find(d.path(), Some("c")).is_err());
    }
}
