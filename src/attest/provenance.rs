//! Build provenance: an in-toto Statement v1 whose predicate is SLSA
//! Provenance v1. It says what was built (the subjects: the index or image
//! and each platform's image), from what (the source tree and git commit,
//! Cargo.lock, the builder and base images by digest), how (kiln's settings
//! for the build) and by which tool. Deterministic unless the caller asks
//! for run details (start and finish times), which then make it unique.

use serde_json::{Value, json};

use crate::digest::Digest;

/// kiln's build type (documented in docs/attestations.md).
pub const BUILD_TYPE: &str = "https://kiln.dev/attestations/build/cargo-image/v1";
/// The predicate type of SLSA Provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The in-toto Statement v1 type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// Media type of a bare in-toto statement (the attached document).
pub const MEDIA_TYPE: &str = "application/vnd.in-toto+json";

/// A resolved dependency: a URI and its digests.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: Option<String>,
    pub uri: Option<String>,
    /// algorithm → hex (`sha256`, `gitCommit`).
    pub digest: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

/// What a provenance statement says.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// (name, digest) of each built artifact; the first is the top (index or image).
    pub subjects: Vec<(String, Digest)>,
    /// The settings the user controls (kiln.toml as resolved, platforms).
    pub external: Value,
    /// What kiln decided (recipe, format version, SOURCE_DATE_EPOCH).
    pub internal: Value,
    pub resolved: Vec<Resolved>,
    /// `urn:kiln:builder:docker` or `:host`.
    pub builder_id: String,
    /// Tool versions: kiln, the toolchain.
    pub versions: Vec<(String, String)>,
    /// Start and finish (RFC 3339), only when run details are asked for.
    pub run_times: Option<(String, String)>,
}

impl Provenance {
    /// The statement, pretty JSON with sorted keys and a final newline.
    pub fn render(&self) -> Vec<u8> {
        let subjects: Vec<Value> = self
            .subjects
            .iter()
            .map(|(n, d)| json!({"name": n, "digest": {d.algorithm(): d.hex()}}))
            .collect();
        let resolved: Vec<Value> = self
            .resolved
            .iter()
            .map(|r| {
                let mut v = json!({
                    "digest": r.digest.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                });
                if let Some(n) = &r.name {
                    v["name"] = json!(n);
                }
                if let Some(u) = &r.uri {
                    v["uri"] = json!(u);
                }
                if !r.annotations.is_empty() {
                    v["annotations"] =
                        Value::Object(r.annotations.iter().map(|(k, v)| (k.clone(), json!(v))).collect());
                }
                v
            })
            .collect();
        let mut run = json!({
            "builder": {
                "id": self.builder_id,
                "version": self.versions.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            },
        });
        if let Some((start, end)) = &self.run_times {
            run["metadata"] = json!({"startedOn": start, "finishedOn": end});
        }
        let statement = json!({
            "_type": STATEMENT_TYPE,
            "subject": subjects,
            "predicateType": PREDICATE_TYPE,
            "predicate": {
                "buildDefinition": {
                    "buildType": BUILD_TYPE,
                    "externalParameters": self.external,
                    "internalParameters": self.internal,
                    "resolvedDependencies": resolved,
                },
                "runDetails": run,
            },
        });
        let mut out = serde_json::to_vec_pretty(&statement).expect("a Value always serializes");
        out.push(b'\n');
        out
    }
}

/// The commit HEAD names in the git repository holding `dir` (read from
/// `.git` directly: no git binary needed, nothing run). None outside git.
pub fn git_head(dir: &std::path::Path) -> Option<String> {
    let mut d = dir.canonicalize().ok()?;
    let git = loop {
        let g = d.join(".git");
        // Not through symlinks: a project's .git link could point anywhere.
        let meta = std::fs::symlink_metadata(&g).ok();
        if meta.as_ref().is_some_and(|m| m.is_dir()) {
            break g;
        }
        if meta.as_ref().is_some_and(|m| m.is_file()) {
            // A worktree or submodule: "gitdir: PATH".
            let text = read_small(&g)?;
            let p = text.strip_prefix("gitdir:")?.trim();
            break d.join(p);
        }
        if !d.pop() {
            return None;
        }
    };
    let head = read_small(&git.join("HEAD"))?;
    let head = head.trim();
    let Some(r) = head.strip_prefix("ref:") else {
        return is_sha(head).then(|| head.to_string());
    };
    let r = r.trim();
    // Only a ref under refs/, relative, no `..`: nothing outside .git is read.
    if !r.starts_with("refs/") || r.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return None;
    }
    // A worktree keeps refs in the common dir.
    let common = read_small(&git.join("commondir"))
        .map(|c| git.join(c.trim()))
        .unwrap_or_else(|| git.clone());
    for base in [&git, &common] {
        if let Some(s) = read_small(&base.join(r)) {
            let s = s.trim();
            if is_sha(s) {
                return Some(s.to_string());
            }
        }
        if let Some(packed) = read_small(&base.join("packed-refs")) {
            for line in packed.lines() {
                if let Some((sha, name)) = line.split_once(' ')
                    && name == r
                    && is_sha(sha)
                {
                    return Some(sha.to_string());
                }
            }
        }
    }
    None
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A regular file's text (no symlink, no FIFO that would hang the build), bounded.
fn read_small(p: &std::path::Path) -> Option<String> {
    let bytes = crate::image::read_regular(p, 16 << 20).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_shape_and_determinism() {
        let p = Provenance {
            subjects: vec![("app".into(), Digest::of(b"x"))],
            external: json!({"platforms": ["linux/amd64"]}),
            internal: json!({"sourceDateEpoch": 0}),
            resolved: vec![Resolved {
                name: Some("Cargo.lock".into()),
                uri: None,
                digest: vec![("sha256".into(), "00".repeat(32))],
                annotations: vec![],
            }],
            builder_id: "urn:kiln:builder:docker".into(),
            versions: vec![("kiln".into(), "0.1.0".into())],
            run_times: None,
        };
        let a = p.render();
        assert_eq!(a, p.render());
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["_type"], STATEMENT_TYPE);
        assert_eq!(v["subject"][0]["digest"]["sha256"], Digest::of(b"x").hex());
        assert_eq!(
            v["predicate"]["buildDefinition"]["resolvedDependencies"][0]["name"],
            "Cargo.lock"
        );
        assert!(v["predicate"]["runDetails"].get("metadata").is_none());
    }

    #[test]
    fn git_head_reads_refs_and_packed_refs() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path().join(".git");
        std::fs::create_dir_all(g.join("refs/heads")).unwrap();
        std::fs::write(g.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        let sha = "a".repeat(40);
        std::fs::write(g.join("packed-refs"), format!("# pack\n{sha} refs/heads/main\n")).unwrap();
        std::fs::create_dir_all(d.path().join("sub")).unwrap();
        assert_eq!(git_head(&d.path().join("sub")), Some(sha));
        let sha2 = "b".repeat(40);
        std::fs::write(g.join("refs/heads/main"), format!("{sha2}\n")).unwrap();
        assert_eq!(git_head(d.path()), Some(sha2));
        std::fs::write(g.join("HEAD"), "ref: ../../etc/passwd\n").unwrap();
        assert_eq!(git_head(d.path()), None);
        std::fs::write(g.join("HEAD"), "ref: /etc/passwd\n").unwrap();
        assert_eq!(git_head(d.path()), None);
        // A FIFO where a ref should be: no hang, no commit.
        std::fs::write(g.join("HEAD"), "ref: refs/heads/fifo\n").unwrap();
        let fifo = g.join("refs/heads/fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(git_head(d.path()), None);
    }
}
