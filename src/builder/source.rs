//! The project's source as kiln sends it to a builder: a tar stream built
//! from the project directory (never a bind mount, so the host path cannot
//! leak and a remote engine works), skipping `target/`, `.git/` and whatever
//! `.kilnignore` (gitignore syntax) excludes; and the much smaller upload
//! the fetch phase gets ([`fetch_tree`]).

use std::path::Path;

use crate::layer::tree::{Tree, normalized_file_mode};
use crate::{Error, Result};

/// Where the source sits inside the builder.
pub const SRC_DIR: &str = "/kiln/src";

/// Collects the project's files under `prefix` (an absolute image path).
pub fn collect(project: &Path, prefix: &str) -> Result<Tree> {
    use std::os::unix::fs::PermissionsExt;
    let mut tree = Tree::new();
    tree.add_dir(prefix, 0o755, "source")?;
    let walker = ignore::WalkBuilder::new(project)
        .standard_filters(false)
        .hidden(false)
        .parents(false)
        .follow_links(false)
        .add_custom_ignore_filename(".kilnignore")
        .filter_entry(|e| {
            // Build outputs and VCS data never go in: they are large and host-specific.
            let outputs = e.depth() == 1 && matches!(e.file_name().to_str(), Some("target" | ".git"));
            // Nor kiln's own staging files (another kiln writing kiln.lock
            // beside this one): they are renamed away while the walk runs.
            let staging = e
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(crate::store::blob::STAGING_PREFIX));
            !(outputs || staging)
        })
        .build();
    for entry in walker {
        let entry = entry.map_err(|e| Error::format("project source", e.to_string()))?;
        if entry.depth() == 0 {
            continue;
        }
        let host = entry.path();
        let rel = host.strip_prefix(project).expect("walk stays below the project");
        let rel = rel.to_str().ok_or_else(|| {
            Error::invalid(
                "file name",
                host.display().to_string(),
                "not UTF-8; rename it or list it in .kilnignore",
            )
        })?;
        let dest = format!("{prefix}/{rel}");
        let meta = std::fs::symlink_metadata(host).map_err(Error::read(host))?;
        let ft = meta.file_type();
        if ft.is_dir() {
            tree.add_dir(&dest, 0o755, "source")?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(host).map_err(Error::read(host))?;
            let target = target
                .to_str()
                .ok_or_else(|| Error::invalid("symlink target", host.display().to_string(), "not UTF-8"))?;
            tree.add_symlink(&dest, target.to_string(), "source")?;
        } else if ft.is_file() {
            let mode = normalized_file_mode(meta.permissions().mode());
            tree.add_host_file(&dest, host.to_path_buf(), meta.len(), mode, "source")?;
        }
    }
    Ok(tree)
}

/// What the fetch phase sees of the project: every Cargo.toml and Cargo.lock
/// with its content (mode 0644), every other regular file as an empty,
/// non-executable placeholder (so cargo's target discovery finds what it
/// would), no `.cargo/` directory (no project config: no wrapper, no build
/// settings), no `rust-toolchain` file (rustup in the builder must not pick
/// a project-named toolchain) and no symlinks (none can dress a script up
/// as a manifest). No project code reaches the only phase with network.
pub fn fetch_tree(upload: &Tree) -> Result<Tree> {
    use crate::layer::tree::Node;
    let mut t = Tree::new();
    for (path, node) in upload.entries() {
        if path.split('/').any(|c| c == ".cargo") {
            continue;
        }
        let dest = format!("/{path}");
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.starts_with("rust-toolchain") {
            continue;
        }
        let keep = matches!(name, "Cargo.toml" | "Cargo.lock");
        match node {
            Node::Dir { .. } => t.add_dir(&dest, 0o755, "fetch")?,
            Node::Symlink { .. } => {}
            Node::File { src, size, .. } if keep => t.add_host_file(&dest, src.clone(), *size, 0o644, "fetch")?,
            Node::Bytes { data, .. } if keep => t.add_bytes(&dest, data.clone(), 0o644, "fetch")?,
            Node::File { .. } | Node::Bytes { .. } | Node::Hardlink { .. } => {
                t.add_bytes(&dest, Vec::new(), 0o644, "fetch")?
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_target_git_and_kilnignored() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for f in [
            "Cargo.toml",
            "src/main.rs",
            "target/debug/x",
            ".git/HEAD",
            "big/blob.bin",
            "notes.tmp",
            "sub/target/keep",
            ".kiln-tmp-aB3dEf",
        ] {
            std::fs::create_dir_all(p.join(f).parent().unwrap()).unwrap();
            std::fs::write(p.join(f), "x").unwrap();
        }
        std::fs::write(p.join(".kilnignore"), "big/\n*.tmp\n").unwrap();
        let t = collect(p, "/kiln/src").unwrap();
        let paths: Vec<&str> = t.entries().map(|(p, _)| p).collect();
        assert!(paths.contains(&"kiln/src/src/main.rs"));
        assert!(
            paths.contains(&"kiln/src/sub/target/keep"),
            "only the top-level target/ is skipped"
        );
        assert!(paths.contains(&"kiln/src/.kilnignore"));
        for gone in [
            "kiln/src/target",
            "kiln/src/.git",
            "kiln/src/big",
            "kiln/src/notes.tmp",
            "kiln/src/.kiln-tmp-aB3dEf",
        ] {
            assert!(!paths.contains(&gone), "{gone} should be skipped: {paths:?}");
        }
    }

    #[test]
    fn the_fetch_upload_holds_manifests_only() {
        let mut up = Tree::new();
        let files: [(&str, &[u8], u32); 6] = [
            ("Cargo.toml", b"[package]", 0o755),
            ("Cargo.lock", b"version = 4", 0o644),
            ("src/main.rs", b"fn main() { evil() }", 0o644),
            ("build.rs", b"fn main() {}", 0o755),
            (".cargo/config.toml", b"[build]", 0o644),
            ("rust-toolchain.toml", b"[toolchain]", 0o644),
        ];
        for (path, data, mode) in files {
            up.add_bytes(&format!("/kiln/src/{path}"), data.to_vec(), mode, "t")
                .unwrap();
        }
        up.add_symlink("/kiln/src/member/Cargo.toml", "../build.rs".into(), "t")
            .unwrap();
        let t = fetch_tree(&up).unwrap();
        use crate::layer::tree::Node;
        let bytes = |p: &str| match t.get(p) {
            Some(Node::Bytes { data, mode }) => Some((data.clone(), *mode)),
            _ => None,
        };
        assert_eq!(
            bytes("kiln/src/Cargo.toml"),
            Some((b"[package]".to_vec(), 0o644)),
            "content kept, not executable"
        );
        assert_eq!(bytes("kiln/src/Cargo.lock").map(|b| b.0), Some(b"version = 4".to_vec()));
        assert_eq!(bytes("kiln/src/src/main.rs"), Some((Vec::new(), 0o644)), "placeholder");
        assert_eq!(
            bytes("kiln/src/build.rs"),
            Some((Vec::new(), 0o644)),
            "placeholder, not executable"
        );
        assert!(t.get("kiln/src/.cargo/config.toml").is_none());
        assert!(t.get("kiln/src/rust-toolchain.toml").is_none());
        assert!(t.get("kiln/src/member/Cargo.toml").is_none(), "no symlinks");
    }
}
