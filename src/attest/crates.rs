//! The crates compiled into a binary, from `cargo metadata` run inside the
//! builder with the build's own target and feature flags: the root package
//! and everything reachable from it over normal dependency edges (what
//! `cargo tree -e normal --target T` prints), with each crate's source,
//! license and the checksum Cargo.lock pins. Build-only and dev-only crates
//! never reach the binary and are left out. No build path survives: crates
//! are keyed `name@version`, path crates carry no location.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Where a crate came from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CrateSource {
    /// A registry index (crates.io: `https://github.com/rust-lang/crates.io-index`).
    Registry { index: String },
    /// A git repository at a commit.
    Git { url: String, commit: String },
    /// A path in the project (a workspace member or a path dependency).
    Path,
}

/// A URL without its `user:password@` part: credentials in a registry or
/// git URL never reach a document.
fn without_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit_once('@').map(|(_, h)| h).unwrap_or(authority);
            format!("{scheme}://{host}{path}")
        }
        None => url.to_string(),
    }
}

impl CrateSource {
    /// Parses cargo's source id (`registry+URL`, `sparse+URL`, `git+URL?…#COMMIT`); None is a path.
    fn parse(source: Option<&str>) -> CrateSource {
        let Some(s) = source else { return CrateSource::Path };
        if let Some(url) = s.strip_prefix("registry+") {
            return CrateSource::Registry {
                index: without_userinfo(url),
            };
        }
        if let Some(url) = s.strip_prefix("sparse+") {
            return CrateSource::Registry {
                index: format!("sparse+{}", without_userinfo(url)),
            };
        }
        if let Some(rest) = s.strip_prefix("git+") {
            let (url, commit) = rest.split_once('#').unwrap_or((rest, ""));
            let url = url.split('?').next().unwrap_or(url);
            return CrateSource::Git {
                url: without_userinfo(url),
                commit: commit.to_string(),
            };
        }
        CrateSource::Registry {
            index: without_userinfo(s),
        }
    }

    /// Whether this is crates.io (its purls need no repository qualifier).
    pub fn is_crates_io(&self) -> bool {
        matches!(self, CrateSource::Registry { index }
            if index == "https://github.com/rust-lang/crates.io-index" || index == "sparse+https://index.crates.io/")
    }
}

/// One crate in the binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crate {
    /// `name@version` (unique in one build's normal graph but for the rare
    /// same version from two sources, which gets `#2`).
    pub key: String,
    pub name: String,
    pub version: String,
    pub source: CrateSource,
    /// The sha256 Cargo.lock pins (registry crates).
    pub checksum: Option<String>,
    /// The manifest's `license` (an SPDX expression, or cargo's legacy `A/B`).
    pub license: Option<String>,
    /// Features enabled for this crate in this build.
    pub features: Vec<String>,
    /// A procedural macro: compiled for the build, not linked into the binary.
    pub proc_macro: bool,
    /// Keys of the crates it depends on (normal edges), sorted.
    pub deps: Vec<String>,
}

/// The crates of one build: the root package and its normal dependency closure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrateGraph {
    /// The key of the package that owns the binary.
    pub root: String,
    /// Every crate, sorted by key.
    pub crates: Vec<Crate>,
}

// The subset of `cargo metadata --format-version 1` kiln reads.
#[derive(Deserialize)]
struct Metadata {
    packages: Vec<MPackage>,
    workspace_members: Vec<String>,
    resolve: Option<MResolve>,
}

#[derive(Deserialize)]
struct MPackage {
    id: String,
    name: String,
    version: String,
    license: Option<String>,
    source: Option<String>,
    #[serde(default)]
    targets: Vec<MTarget>,
}

#[derive(Deserialize)]
struct MTarget {
    name: String,
    #[serde(default)]
    kind: Vec<String>,
}

#[derive(Deserialize)]
struct MResolve {
    nodes: Vec<MNode>,
}

#[derive(Deserialize)]
struct MNode {
    id: String,
    #[serde(default)]
    deps: Vec<MDep>,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Deserialize)]
struct MDep {
    pkg: String,
    #[serde(default)]
    dep_kinds: Vec<MDepKind>,
}

#[derive(Deserialize)]
struct MDepKind {
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
}

/// The most `cargo metadata` output kiln reads (the builder writes it).
pub const MAX_METADATA: u64 = 64 << 20;

/// Builds the graph from `cargo metadata` output and the project's
/// Cargo.lock: the package with binary `bin` (in `package` when named) and
/// its normal-dependency closure.
pub fn from_metadata(metadata: &[u8], cargo_lock: &str, bin: &str, package: Option<&str>) -> Result<CrateGraph> {
    let bad = |m: String| Error::format("cargo metadata", m);
    let md: Metadata = serde_json::from_slice(metadata).map_err(|e| bad(format!("unreadable: {e}")))?;
    let resolve = md
        .resolve
        .ok_or_else(|| bad("no dependency resolution (was --no-deps given?)".into()))?;
    let lock: Lock = toml::from_str(cargo_lock).map_err(|e| Error::format("Cargo.lock", e.to_string()))?;
    let checksums: HashMap<(&str, &str, Option<&str>), &str> = lock
        .package
        .iter()
        .filter_map(|p| {
            p.checksum
                .as_deref()
                .map(|c| ((p.name.as_str(), p.version.as_str(), p.source.as_deref()), c))
        })
        .collect();
    let packages: HashMap<&str, &MPackage> = md.packages.iter().map(|p| (p.id.as_str(), p)).collect();
    let root = md
        .workspace_members
        .iter()
        .filter_map(|id| packages.get(id.as_str()))
        .find(|p| {
            package.is_none_or(|n| p.name == n)
                && p.targets
                    .iter()
                    .any(|t| t.name == bin && t.kind.iter().any(|k| k == "bin"))
        })
        .ok_or_else(|| bad(format!("no workspace package has the binary `{bin}`")))?;
    let nodes: HashMap<&str, &MNode> = resolve.nodes.iter().map(|n| (n.id.as_str(), n)).collect();

    // Walk normal edges from the root (dep_kinds kind null = normal).
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut todo = vec![root.id.as_str()];
    while let Some(id) = todo.pop() {
        if !seen.insert(id) {
            continue;
        }
        let node = nodes
            .get(id)
            .ok_or_else(|| bad(format!("resolve lists no node for {id}")))?;
        for d in &node.deps {
            if d.dep_kinds.iter().any(|k| k.kind.is_none()) {
                todo.push(d.pkg.as_str());
            }
        }
    }
    // Keys: name@version, suffixed by a counter if two sources share one.
    let mut keys: BTreeMap<&str, String> = BTreeMap::new();
    let mut used: BTreeMap<String, usize> = BTreeMap::new();
    let mut ordered: Vec<&MPackage> = seen
        .iter()
        .map(|id| packages.get(id).copied().ok_or_else(|| bad(format!("no package {id}"))))
        .collect::<Result<_>>()?;
    ordered.sort_by(|a, b| (&a.name, &a.version, &a.source).cmp(&(&b.name, &b.version, &b.source)));
    for p in &ordered {
        let base = format!("{}@{}", p.name, p.version);
        let n = used.entry(base.clone()).or_insert(0);
        *n += 1;
        let key = if *n == 1 { base } else { format!("{base}#{n}") };
        keys.insert(p.id.as_str(), key);
    }
    let mut crates = Vec::new();
    for p in ordered {
        let node = nodes[p.id.as_str()];
        let mut deps: Vec<String> = node
            .deps
            .iter()
            .filter(|d| d.dep_kinds.iter().any(|k| k.kind.is_none()))
            .filter_map(|d| keys.get(d.pkg.as_str()).cloned())
            .collect();
        deps.sort();
        deps.dedup();
        let mut features = node.features.clone();
        features.sort();
        crates.push(Crate {
            key: keys[p.id.as_str()].clone(),
            name: p.name.clone(),
            version: p.version.clone(),
            source: CrateSource::parse(p.source.as_deref()),
            checksum: checksums
                .get(&(p.name.as_str(), p.version.as_str(), p.source.as_deref()))
                .map(|c| c.to_string()),
            license: p.license.clone().filter(|l| !l.trim().is_empty()),
            features,
            proc_macro: p.targets.iter().any(|t| t.kind.iter().any(|k| k == "proc-macro")),
            deps,
        });
    }
    crates.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(CrateGraph {
        root: keys[root.id.as_str()].clone(),
        crates,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const METADATA: &str = r#"{
      "packages": [
        {"id": "path+file:///kiln/src#app@0.1.0", "name": "app", "version": "0.1.0", "license": "MIT",
         "source": null, "targets": [{"name": "app", "kind": ["bin"]}]},
        {"id": "registry+https://github.com/rust-lang/crates.io-index#serde@1.0.1", "name": "serde", "version": "1.0.1",
         "license": "MIT OR Apache-2.0", "source": "registry+https://github.com/rust-lang/crates.io-index",
         "targets": [{"name": "serde", "kind": ["lib"]}]},
        {"id": "registry+https://github.com/rust-lang/crates.io-index#serde_derive@1.0.1", "name": "serde_derive", "version": "1.0.1",
         "license": "MIT/Apache-2.0", "source": "registry+https://github.com/rust-lang/crates.io-index",
         "targets": [{"name": "serde_derive", "kind": ["proc-macro"]}]},
        {"id": "registry+https://github.com/rust-lang/crates.io-index#cc@1.0.0", "name": "cc", "version": "1.0.0",
         "license": "MIT", "source": "registry+https://github.com/rust-lang/crates.io-index",
         "targets": [{"name": "cc", "kind": ["lib"]}]},
        {"id": "git+https://example.com/x.git?branch=main#0123abcd", "name": "x", "version": "0.2.0",
         "license": null, "source": "git+https://example.com/x.git?branch=main#0123abcd",
         "targets": [{"name": "x", "kind": ["lib"]}]},
        {"id": "registry+https://github.com/rust-lang/crates.io-index#proptest@1.0.0", "name": "proptest", "version": "1.0.0",
         "license": "MIT", "source": "registry+https://github.com/rust-lang/crates.io-index",
         "targets": [{"name": "proptest", "kind": ["lib"]}]}
      ],
      "workspace_members": ["path+file:///kiln/src#app@0.1.0"],
      "resolve": {"nodes": [
        {"id": "path+file:///kiln/src#app@0.1.0", "features": [], "deps": [
          {"pkg": "registry+https://github.com/rust-lang/crates.io-index#serde@1.0.1", "dep_kinds": [{"kind": null, "target": null}]},
          {"pkg": "registry+https://github.com/rust-lang/crates.io-index#cc@1.0.0", "dep_kinds": [{"kind": "build", "target": null}]},
          {"pkg": "registry+https://github.com/rust-lang/crates.io-index#proptest@1.0.0", "dep_kinds": [{"kind": "dev", "target": null}]},
          {"pkg": "git+https://example.com/x.git?branch=main#0123abcd", "dep_kinds": [{"kind": null, "target": null}]}
        ]},
        {"id": "registry+https://github.com/rust-lang/crates.io-index#serde@1.0.1", "features": ["std", "derive", "default"], "deps": [
          {"pkg": "registry+https://github.com/rust-lang/crates.io-index#serde_derive@1.0.1", "dep_kinds": [{"kind": null, "target": null}]}
        ]},
        {"id": "registry+https://github.com/rust-lang/crates.io-index#serde_derive@1.0.1", "features": [], "deps": []},
        {"id": "registry+https://github.com/rust-lang/crates.io-index#cc@1.0.0", "features": [], "deps": []},
        {"id": "registry+https://github.com/rust-lang/crates.io-index#proptest@1.0.0", "features": [], "deps": []},
        {"id": "git+https://example.com/x.git?branch=main#0123abcd", "features": [], "deps": []}
      ]}
    }"#;

    const LOCK: &str = r#"
version = 3
[[package]]
name = "serde"
version = "1.0.1"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "aaaa"
[[package]]
name = "cc"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "cccc"
"#;

    #[test]
    fn normal_closure_only_with_sources_checksums_and_features() {
        let g = from_metadata(METADATA.as_bytes(), LOCK, "app", None).unwrap();
        let keys: Vec<&str> = g.crates.iter().map(|c| c.key.as_str()).collect();
        // cc (build) and proptest (dev) never reach the binary.
        assert_eq!(keys, ["app@0.1.0", "serde@1.0.1", "serde_derive@1.0.1", "x@0.2.0"]);
        assert_eq!(g.root, "app@0.1.0");
        let serde = &g.crates[1];
        assert_eq!(serde.checksum.as_deref(), Some("aaaa"));
        assert_eq!(serde.features, ["default", "derive", "std"]);
        assert_eq!(serde.deps, ["serde_derive@1.0.1"]);
        assert!(serde.source.is_crates_io());
        assert!(g.crates[2].proc_macro);
        assert_eq!(
            g.crates[3].source,
            CrateSource::Git {
                url: "https://example.com/x.git".into(),
                commit: "0123abcd".into()
            }
        );
        assert_eq!(g.crates[0].source, CrateSource::Path);
        assert_eq!(g.crates[0].deps, ["serde@1.0.1", "x@0.2.0"]);
        // No build path anywhere in what is kept.
        assert!(!serde_json::to_string(&g).unwrap().contains("/kiln/src"));
    }

    #[test]
    fn credentials_in_source_urls_are_dropped() {
        assert_eq!(
            CrateSource::parse(Some("git+https://user:tok@example.com/x.git?rev=1#abc")),
            CrateSource::Git {
                url: "https://example.com/x.git".into(),
                commit: "abc".into()
            }
        );
        assert_eq!(
            CrateSource::parse(Some("sparse+https://t@reg.example/index/")),
            CrateSource::Registry {
                index: "sparse+https://reg.example/index/".into()
            }
        );
    }

    #[test]
    fn a_missing_binary_or_resolution_is_an_error_not_a_panic() {
        assert!(from_metadata(METADATA.as_bytes(), LOCK, "nope", None).is_err());
        assert!(from_metadata(METADATA.as_bytes(), LOCK, "app", Some("other")).is_err());
        assert!(from_metadata(b"{\"packages\":[],\"workspace_members\":[]}", LOCK, "app", None).is_err());
        assert!(from_metadata(b"not json", LOCK, "app", None).is_err());
        assert!(from_metadata(METADATA.as_bytes(), "[[[", "app", None).is_err());
    }
}
