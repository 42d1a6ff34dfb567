//! Item 9: the inputs are pinned. Cargo.lock exists and git tracks it, and
//! kiln.lock pins every image input the configuration names, so that
//! `kiln build --locked` would pass. Git's index is read here, never by
//! running git: a project's `.git/config` can name programs git would run
//! (core.fsmonitor), and the project is untrusted.

use std::path::{Path, PathBuf};

use crate::builder::{BuildRequest, pin, resolve};
use crate::context::Context;

/// Largest git index read.
const MAX_INDEX: u64 = 256 << 20;

/// The verdict: problems (empty when pinned) and what was seen.
#[derive(Debug, Default)]
pub struct Pinned {
    pub problems: Vec<(String, String)>,
    pub evidence: Vec<String>,
}

/// Checks `project`'s pins.
pub fn check(ctx: &Context, project: &Path) -> Pinned {
    let mut p = Pinned::default();
    let cargo_lock = project.join("Cargo.lock");
    if !cargo_lock.is_file() {
        p.problems.push((
            "there is no Cargo.lock".into(),
            "run `cargo generate-lockfile` and commit Cargo.lock".into(),
        ));
    } else {
        match tracked(&cargo_lock) {
            Ok(Some(true)) => p.evidence.push("Cargo.lock is tracked by git (in its index)".into()),
            Ok(Some(false)) => p.problems.push((
                "Cargo.lock is not tracked by git: another machine resolves other crate versions".into(),
                "`git add Cargo.lock` and commit it (and remove it from .gitignore)".into(),
            )),
            Ok(None) => p
                .evidence
                .push("Cargo.lock exists (the project is not in a git work tree: not checked for commit)".into()),
            Err(e) => p.problems.push((
                format!("cannot read git's index: {e}"),
                "look at the project's .git/config first (it can name programs git runs), then `git -c core.fsmonitor= status` to rewrite the index".into(),
            )),
        }
    }
    let req = BuildRequest {
        project: project.to_path_buf(),
        timestamp: ctx.timestamp,
        ..Default::default()
    };
    let platforms = match resolve::platforms(&req) {
        Ok(ps) => ps,
        Err(e) => {
            p.problems.push((e.to_string(), "fix kiln.toml".into()));
            return p;
        }
    };
    for platform in platforms {
        let one = BuildRequest {
            platform: Some(platform.clone()),
            ..req.clone()
        };
        let pinned = resolve::resolve(&one).and_then(|(mut plan, builder_ref)| {
            // Locked: reads kiln.lock, never writes it, never asks a registry.
            pin::pin(ctx, &mut plan, builder_ref.as_deref(), true, false).map(|_| plan)
        });
        match pinned {
            Ok(plan) => {
                if plan.backend == crate::builder::Backend::Host {
                    p.problems.push((
                        "the host backend builds with the host's toolchain, which nothing pins".into(),
                        "build with the docker backend ([build] backend = \"docker\")".into(),
                    ));
                }
                if let Some(b) = &plan.builder {
                    let line = format!("kiln.lock pins the builder {}@{}", b.reference, b.digest);
                    if !p.evidence.contains(&line) {
                        p.evidence.push(line);
                    }
                }
                if let Some(d) = &plan.image.base_digest {
                    p.evidence
                        .push(format!("kiln.lock pins the {platform} base {}@{d}", plan.image.base));
                }
            }
            Err(e) => p.problems.push((
                format!("`kiln build --locked` would fail: {e}"),
                "run `kiln lock` and commit kiln.lock".into(),
            )),
        }
    }
    p
}

/// Whether git tracks `file`: `None` when it is in no git work tree.
pub fn tracked(file: &Path) -> crate::Result<Option<bool>> {
    let file = std::fs::canonicalize(file).map_err(crate::Error::read(file))?;
    let Some((root, git_dir)) = find_repo(&file) else {
        return Ok(None);
    };
    let rel = file
        .strip_prefix(&root)
        .map_err(|_| crate::Error::format(file.display().to_string(), "outside its work tree"))?;
    let rel = rel.to_string_lossy().replace('\\', "/");
    let index = git_dir.join("index");
    if !index.exists() {
        return Ok(Some(false));
    }
    let bytes = crate::image::read_regular(&index, MAX_INDEX)?;
    if bytes.len() as u64 > MAX_INDEX {
        return Err(crate::Error::format(
            index.display().to_string(),
            format!("larger than {} MiB", MAX_INDEX >> 20),
        ));
    }
    index_contains(&bytes, rel.as_bytes())
        .map(Some)
        .map_err(|m| crate::Error::format(index.display().to_string(), m))
}
/// The work tree and git directory enclosing `file`.
fn find_repo(file: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut dir = file.parent();
    while let Some(d) = dir {
        let dot = d.join(".git");
        if dot.is_dir() {
            return Some((d.to_path_buf(), dot));
        }
        if dot.is_file() {
            // A worktree or submodule: `gitdir: PATH`.
            let text = crate::image::read_regular(&dot, 4096)
                .ok()
                .filter(|t| t.len() <= 4096)?;
            let text = String::from_utf8(text).ok()?;
            let g = text.trim().strip_prefix("gitdir:")?.trim();
            let g = d.join(g);
            return Some((d.to_path_buf(), g));
        }
        dir = d.parent();
    }
    None
}

/// Longest path an index entry may have here (git's own PATH_MAX-sized limit).
const MAX_PATH: usize = 4096;

/// Whether a git index (versions 2, 3 and 4; SHA-1 or SHA-256, told apart by
/// the trailing checksum) has `path` as a real entry (not intent-to-add).
pub fn index_contains(b: &[u8], path: &[u8]) -> Result<bool, String> {
    use sha2::Digest as _;
    // The index ends with a checksum of all before it: a SHA-256 one means
    // a SHA-256 repository (32-byte object names), else SHA-1 (20).
    let hash_len = match b.len().checked_sub(32) {
        Some(end) if sha2::Sha256::digest(&b[..end]).as_slice() == &b[end..] => 32,
        _ => 20,
    };
    let mut found = false;
    walk_index(b, hash_len, |p, intent_to_add| {
        if p == path && !intent_to_add {
            found = true;
        }
        found
    })?;
    Ok(found)
}

/// Calls `f(path, intent_to_add)` for each entry until it returns true.
pub fn walk_index(b: &[u8], hash_len: usize, mut f: impl FnMut(&[u8], bool) -> bool) -> Result<(), String> {
    let u32_at = |i: usize| -> Result<u32, String> {
        b.get(i..i + 4)
            .map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")))
            .ok_or_else(|| "truncated".to_string())
    };
    if b.get(..4) != Some(b"DIRC") {
        return Err("not a git index (no DIRC signature)".into());
    }
    let version = u32_at(4)?;
    if !(2..=4).contains(&version) {
        return Err(format!("git index version {version} is not supported"));
    }
    let count = u32_at(8)? as usize;
    if count > b.len() / 40 {
        return Err("more entries than the file can hold".into());
    }
    let mut pos = 12usize;
    // v4 paths are stored as "drop N bytes of the previous one, add these".
    let mut path: Vec<u8> = Vec::new();
    for n in 0..count {
        let start = pos;
        let flags_at = start + 40 + hash_len;
        let flags = b
            .get(flags_at..flags_at + 2)
            .map(|s| u16::from_be_bytes([s[0], s[1]]))
            .ok_or("truncated entry")?;
        let mut p = flags_at + 2;
        let mut intent_to_add = false;
        if version >= 3 && flags & 0x4000 != 0 {
            let ext = b
                .get(p..p + 2)
                .map(|s| u16::from_be_bytes([s[0], s[1]]))
                .ok_or("truncated entry")?;
            intent_to_add = ext & 0x2000 != 0;
            p += 2;
        }
        let too_long = || format!("entry {n}: a path longer than {MAX_PATH} bytes");
        if version == 4 {
            let (strip, used) = varint(b.get(p..).ok_or("truncated entry")?)?;
            p += used;
            let end = nul_at(b, p)?;
            let keep = usize::try_from(strip)
                .ok()
                .and_then(|s| path.len().checked_sub(s))
                .ok_or("bad path prefix")?;
            path.truncate(keep);
            if keep + (end - p) > MAX_PATH {
                return Err(too_long());
            }
            path.extend_from_slice(&b[p..end]);
            pos = end + 1;
        } else {
            let end = nul_at(b, p)?;
            if end - p > MAX_PATH {
                return Err(too_long());
            }
            path.clear();
            path.extend_from_slice(&b[p..end]);
            // Entries are padded with 1–8 NULs to a multiple of 8 bytes.
            pos = start + ((end - start + 8) & !7);
        }
        if f(&path, intent_to_add) {
            return Ok(());
        }
    }
    Ok(())
}

/// The offset of the NUL that ends the path starting at `p`.
fn nul_at(b: &[u8], p: usize) -> Result<usize, String> {
    let rest = b.get(p..).ok_or("truncated entry")?;
    Ok(p + rest.iter().position(|&c| c == 0).ok_or("unterminated path")?)
}

/// Git's offset varint (big-endian groups, +1 per continuation).
fn varint(b: &[u8]) -> Result<(u64, usize), String> {
    let mut i = 0;
    let mut c = *b.first().ok_or("truncated varint")?;
    let mut v = u64::from(c & 0x7f);
    while c & 0x80 != 0 {
        i += 1;
        c = *b.get(i).ok_or("truncated varint")?;
        v = v
            .checked_add(1)
            .and_then(|v| v.checked_mul(128))
            .ok_or("varint overflow")?
            | u64::from(c & 0x7f);
    }
    Ok((v, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, v4_strip: Option<u8>) -> Vec<u8> {
        let mut e = vec![0u8; 40 + 20];
        e.extend_from_slice(&(path.len() as u16).to_be_bytes());
        if let Some(s) = v4_strip {
            e.push(s);
            e.extend_from_slice(path.as_bytes());
            e.push(0);
        } else {
            e.extend_from_slice(path.as_bytes());
            let len = (e.len() + 8) & !7;
            e.resize(len, 0);
        }
        e
    }

    fn index(version: u32, entries: &[Vec<u8>]) -> Vec<u8> {
        let mut b = b"DIRC".to_vec();
        b.extend_from_slice(&version.to_be_bytes());
        b.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for e in entries {
            b.extend_from_slice(e);
        }
        b
    }

    fn paths(b: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        walk_index(b, 20, |p, _| {
            out.push(p.to_vec());
            false
        })?;
        Ok(out)
    }

    #[test]
    fn reads_v2_and_v4_paths() {
        let b = index(2, &[entry("Cargo.lock", None), entry("src/main.rs", None)]);
        assert_eq!(
            paths(&b).unwrap(),
            vec![b"Cargo.lock".to_vec(), b"src/main.rs".to_vec()]
        );
        assert!(index_contains(&b, b"Cargo.lock").unwrap());
        assert!(!index_contains(&b, b"Cargo.toml").unwrap());
        // v4: "src/lib.rs" then strip 6 ("lib.rs") + "main.rs".
        let b = index(4, &[entry("src/lib.rs", Some(0)), entry("main.rs", Some(6))]);
        assert_eq!(
            paths(&b).unwrap(),
            vec![b"src/lib.rs".to_vec(), b"src/main.rs".to_vec()]
        );
        assert!(paths(b"DIRC\0\0\0\x05").is_err());
        assert!(paths(&index(2, &[entry("x", None)])[..20]).is_err());
        // A v4 path growing past the limit is refused, not built.
        let long = "a".repeat(3000);
        let b = index(4, &[entry(&long, Some(0)), entry(&long, Some(0))]);
        assert!(paths(&b).unwrap_err().contains("longer than"));
    }

    #[test]
    fn the_real_index_of_this_repository() {
        // The suite runs in a git clone of kiln: its index is a real one.
        let me = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        assert_eq!(tracked(&me).unwrap(), Some(true));
        let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kiln-untracked-probe");
        std::fs::create_dir_all(probe.parent().unwrap()).unwrap();
        std::fs::write(&probe, b"").unwrap();
        assert_eq!(tracked(&probe).unwrap(), Some(false));
        let _ = std::fs::remove_file(probe);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..200), v in 2u32..5) {
            let mut b = b"DIRC".to_vec();
            b.extend_from_slice(&v.to_be_bytes());
            b.extend_from_slice(&3u32.to_be_bytes());
            b.extend_from_slice(&tail);
            let _ = index_contains(&b, b"Cargo.lock");
        }
    }
}
