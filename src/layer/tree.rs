//! What goes into a layer, collected from the host without letting the host
//! leak in: sources are walked without following symlinks, entries keyed by
//! their in-image path (so the walk order never matters), modes normalized,
//! hardlinks detected by inode and pointed at the bytewise-first path.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One `--add SRC:DEST[:MODE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddSpec {
    /// File or directory on the host.
    pub src: PathBuf,
    /// Absolute destination in the image.
    pub dest: String,
    /// Mode for every regular file this adds (None: normalized from the host).
    pub mode: Option<u32>,
}

impl AddSpec {
    /// Parses `SRC:DEST[:MODE]` (MODE in octal, e.g. 0755).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |r: &str| Error::invalid("--add", s, r.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        let (src, dest, mode) = match parts.as_slice() {
            [src, dest] => (*src, *dest, None),
            [src, dest, mode] if is_octal_mode(mode) => (*src, *dest, Some(*mode)),
            [_, _, _] => return Err(bad("MODE must be octal permission bits, e.g. 0755 or 644")),
            _ => {
                return Err(bad(
                    "expected SRC:DEST or SRC:DEST:MODE, e.g. target/release/app:/app:0755",
                ));
            }
        };
        if src.is_empty() {
            return Err(bad("SRC is empty"));
        }
        let dest = normalize_dest(dest).map_err(|r| bad(&r))?;
        let mode = mode.map(|m| u32::from_str_radix(m, 8).expect("checked octal"));
        Ok(AddSpec {
            src: PathBuf::from(src),
            dest,
            mode,
        })
    }
}

fn is_octal_mode(m: &str) -> bool {
    (3..=4).contains(&m.len()) && m.bytes().all(|b| (b'0'..=b'7').contains(&b))
}

/// Checks an image path is absolute and has no `..`; returns it relative,
/// without `.` parts or repeated slashes (`""` for the root).
pub fn normalize_dest(dest: &str) -> std::result::Result<String, String> {
    if !dest.starts_with('/') {
        return Err(format!(
            "destination must be an absolute path in the image, e.g. /{}",
            dest.trim_start_matches("./")
        ));
    }
    let mut parts = Vec::new();
    for p in dest.split('/') {
        match p {
            "" | "." => {}
            ".." => return Err("destination must not contain `..`".into()),
            p => parts.push(p),
        }
    }
    if dest.bytes().any(|b| b == 0) {
        return Err("destination contains a NUL byte".into());
    }
    Ok(parts.join("/"))
}

/// An entry to write, keyed elsewhere by its in-image path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file: content read from `src` at write time.
    File { src: PathBuf, size: u64, mode: u32 },
    /// A directory (explicit or implied parent).
    Dir { mode: u32 },
    /// A symlink, target verbatim.
    Symlink { target: String },
    /// A hard link to another path in the same layer.
    Hardlink { target: String },
    /// Literal bytes (files kiln writes itself: /etc/passwd, ...).
    Bytes { data: Vec<u8>, mode: u32 },
}

/// The entries of one layer, sorted bytewise by in-image path.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    entries: BTreeMap<String, (Node, String)>,
    implied: std::collections::BTreeSet<String>,
}

/// Directory mode when nothing else is said.
pub const DIR_MODE: u32 = 0o755;

/// The normalized mode of a host file: 0755 if the owner may execute it,
/// else 0644. Host modes depend on the umask; this does not.
pub fn normalized_file_mode(host_mode: u32) -> u32 {
    if host_mode & 0o100 != 0 { 0o755 } else { 0o644 }
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries in archive order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(k, (n, _))| (k.as_str(), n))
    }

    /// The entry at an in-image path (relative, no leading `/`).
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(path).map(|(n, _)| n)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Total bytes of file content.
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|(n, _)| match n {
                Node::File { size, .. } => *size,
                Node::Bytes { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Adds a literal file at `dest` (absolute image path).
    pub fn add_bytes(&mut self, dest: &str, data: Vec<u8>, mode: u32, origin: &str) -> Result<()> {
        let path = normalize_dest(dest).map_err(|r| Error::invalid("destination", dest, r))?;
        self.insert(path, Node::Bytes { data, mode }, origin)
    }

    /// Adds a host file (already stat'ed by the caller) at `dest`.
    pub fn add_host_file(&mut self, dest: &str, src: PathBuf, size: u64, mode: u32, origin: &str) -> Result<()> {
        let path = normalize_dest(dest).map_err(|r| Error::invalid("destination", dest, r))?;
        self.insert(path, Node::File { src, size, mode }, origin)
    }

    /// Adds a symlink at `dest` pointing at `target` (verbatim).
    pub fn add_symlink(&mut self, dest: &str, target: String, origin: &str) -> Result<()> {
        let path = normalize_dest(dest).map_err(|r| Error::invalid("destination", dest, r))?;
        self.insert(path, Node::Symlink { target }, origin)
    }

    /// Adds an explicit directory at `dest`.
    pub fn add_dir(&mut self, dest: &str, mode: u32, origin: &str) -> Result<()> {
        let path = normalize_dest(dest).map_err(|r| Error::invalid("destination", dest, r))?;
        self.insert(path, Node::Dir { mode }, origin)
    }

    /// Adds a host file or directory tree. A symlink given as SRC itself is
    /// followed (the user named it); symlinks inside a tree are kept as links.
    pub fn add(&mut self, spec: &AddSpec) -> Result<()> {
        let origin = spec.src.display().to_string();
        let meta = fs::metadata(&spec.src).map_err(|e| match e.raw_os_error() {
            Some(40) => Error::invalid(
                "--add",
                origin.clone(),
                "SRC is a symlink loop; point --add at a real file or directory",
            ),
            _ => Error::Read {
                path: spec.src.clone(),
                source: e,
            },
        })?;
        let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
        if meta.is_dir() {
            if !spec.dest.is_empty() {
                self.insert(spec.dest.clone(), Node::Dir { mode: DIR_MODE }, &origin)?;
            }
            self.walk(&spec.src, &spec.dest, spec.mode, &origin, &mut inodes)?;
        } else if meta.is_file() {
            if spec.dest.is_empty() {
                return Err(Error::invalid(
                    "--add",
                    origin,
                    "a file cannot be added at `/`; give a file path, e.g. /app",
                ));
            }
            let mode = spec
                .mode
                .unwrap_or_else(|| normalized_file_mode(meta.permissions().mode()));
            self.insert(
                spec.dest.clone(),
                Node::File {
                    src: spec.src.clone(),
                    size: meta.len(),
                    mode,
                },
                &origin,
            )?;
        } else {
            return Err(Error::invalid(
                "--add",
                origin,
                "SRC is neither a regular file nor a directory (devices, sockets and fifos are not added)",
            ));
        }
        self.link_hardlinks(inodes);
        Ok(())
    }

    fn walk(
        &mut self,
        dir: &Path,
        dest: &str,
        mode: Option<u32>,
        origin: &str,
        inodes: &mut HashMap<(u64, u64), Vec<String>>,
    ) -> Result<()> {
        let rd = fs::read_dir(dir).map_err(Error::read(dir))?;
        for ent in rd {
            let ent = ent.map_err(Error::read(dir))?;
            let name = ent.file_name();
            let Some(name) = name.to_str() else {
                return Err(Error::invalid(
                    "file name",
                    ent.path().display().to_string(),
                    "not UTF-8; rename it or leave it out of the added tree",
                ));
            };
            let host = ent.path();
            let path = if dest.is_empty() {
                name.to_string()
            } else {
                format!("{dest}/{name}")
            };
            let meta = fs::symlink_metadata(&host).map_err(Error::read(&host))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.insert(path.clone(), Node::Dir { mode: DIR_MODE }, origin)?;
                self.walk(&host, &path, mode, origin, inodes)?;
            } else if ft.is_symlink() {
                let target = fs::read_link(&host).map_err(Error::read(&host))?;
                let target = target
                    .to_str()
                    .ok_or_else(|| Error::invalid("symlink target", host.display().to_string(), "not UTF-8"))?;
                self.insert(
                    path,
                    Node::Symlink {
                        target: target.to_string(),
                    },
                    origin,
                )?;
            } else if ft.is_file() {
                let m = mode.unwrap_or_else(|| normalized_file_mode(meta.permissions().mode()));
                if meta.nlink() > 1 {
                    inodes.entry((meta.dev(), meta.ino())).or_default().push(path.clone());
                }
                self.insert(
                    path,
                    Node::File {
                        src: host,
                        size: meta.len(),
                        mode: m,
                    },
                    origin,
                )?;
            }
            // Sockets, fifos and devices have no place in an image layer: skipped.
        }
        Ok(())
    }

    /// Within one source, files sharing an inode become hardlinks to the
    /// bytewise-first of their paths (the one written first).
    fn link_hardlinks(&mut self, inodes: HashMap<(u64, u64), Vec<String>>) {
        for mut paths in inodes.into_values() {
            if paths.len() < 2 {
                continue;
            }
            paths.sort();
            let first = paths[0].clone();
            for p in &paths[1..] {
                if let Some((node, _)) = self.entries.get_mut(p) {
                    *node = Node::Hardlink { target: first.clone() };
                }
            }
        }
    }

    fn insert(&mut self, path: String, node: Node, origin: &str) -> Result<()> {
        self.add_parents(&path, origin)?;
        if let Some((existing, first)) = self.entries.get(&path) {
            let both_dirs = matches!(existing, Node::Dir { .. }) && matches!(node, Node::Dir { .. });
            if both_dirs {
                self.implied.remove(&path);
                self.entries.insert(path, (node, origin.to_string()));
                return Ok(());
            }
            if !self.implied.contains(&path) || !matches!(node, Node::Dir { .. }) {
                return Err(Error::DuplicateDestination {
                    path: format!("/{path}"),
                    first: first.clone(),
                    second: origin.to_string(),
                });
            }
        }
        self.implied.remove(&path);
        self.entries.insert(path, (node, origin.to_string()));
        Ok(())
    }

    /// Every parent gets an explicit directory entry (Docker 20.10 would
    /// otherwise create missing parents with mode 0600).
    fn add_parents(&mut self, path: &str, origin: &str) -> Result<()> {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let parent = &path[..end + i];
            match self.entries.get(parent) {
                Some((Node::Dir { .. }, _)) => {}
                Some((_, porigin)) => {
                    return Err(Error::DuplicateDestination {
                        path: format!("/{parent}"),
                        first: format!("{porigin} (a non-directory there)"),
                        second: format!("{origin} (puts /{path} below it)"),
                    });
                }
                None => {
                    self.entries.insert(
                        parent.to_string(),
                        (Node::Dir { mode: DIR_MODE }, "(parent directory)".into()),
                    );
                    self.implied.insert(parent.to_string());
                }
            }
            end += i + 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_spec_parsing() {
        let a = AddSpec::parse("bin/app:/usr/local/bin/app:0755").unwrap();
        assert_eq!(a.dest, "usr/local/bin/app");
        assert_eq!(a.mode, Some(0o755));
        assert_eq!(AddSpec::parse("x://etc/./ssl/").unwrap().dest, "etc/ssl");
        assert!(AddSpec::parse("x:relative/path").is_err());
        assert!(AddSpec::parse("x:/a/../b").is_err());
        assert!(AddSpec::parse("x").is_err());
        assert!(AddSpec::parse("x:/a:rwx").is_err());
        assert!(AddSpec::parse(":/a").is_err());
    }

    #[test]
    fn parents_are_explicit_and_duplicates_rejected() {
        let mut t = Tree::new();
        t.add_bytes("/etc/ssl/certs/ca.pem", b"x".to_vec(), 0o644, "one")
            .unwrap();
        let paths: Vec<&str> = t.entries().map(|(p, _)| p).collect();
        assert_eq!(paths, ["etc", "etc/ssl", "etc/ssl/certs", "etc/ssl/certs/ca.pem"]);
        // An explicit dir may replace an implied one.
        t.add_dir("/etc", 0o700, "two").unwrap();
        assert!(t.entries().any(|(p, n)| p == "etc" && *n == Node::Dir { mode: 0o700 }));
        let err = t
            .add_bytes("/etc/ssl/certs/ca.pem", b"y".to_vec(), 0o644, "three")
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("duplicate destination `/etc/ssl/certs/ca.pem`"),
            "{err}"
        );
        let mut t2 = Tree::new();
        t2.add_bytes("/a", vec![], 0o644, "file").unwrap();
        t2.add_bytes("/a/b", vec![], 0o644, "below").unwrap_err();
    }

    #[test]
    fn order_is_bytewise() {
        let mut t = Tree::new();
        for p in ["/a/b", "/a-b", "/a.b", "/B"] {
            t.add_bytes(p, vec![], 0o644, "t").unwrap();
        }
        let paths: Vec<&str> = t.entries().map(|(p, _)| p).collect();
        assert_eq!(paths, ["B", "a", "a-b", "a.b", "a/b"]);
    }
}
