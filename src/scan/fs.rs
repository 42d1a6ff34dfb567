//! A read-only view of an image's final filesystem, built by streaming each
//! layer once: whiteouts and opaque directories applied in layer order,
//! hardlinks resolved to their targets, and for every regular file only what
//! the checks need (ELF facts, the first bytes, small config files, marker
//! strings) — never the content, never anything written to the host.
//! Symlinks are resolved inside the image root, with loops detected.
//!
//! ~400 lines of code; the rest are its tests (hostile tars, whiteouts,
//! links, fuzzing), kept beside the code they pin down.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use memchr::memmem;

use crate::elf::{self, ElfError, ElfInfo};
use crate::image::Image;
use crate::layer::read::{self as layer_read, Kind};
pub use crate::layer::read::{Limits, normalize};
use crate::{Error, Result};

/// What a regular file is, as far as the checks care.
#[derive(Debug, Clone, Default)]
pub struct FileFacts {
    pub elf: Option<Arc<ElfInfo>>,
    /// Why an ELF-looking file could not be read.
    pub elf_error: Option<String>,
    /// The first bytes (for `#!` lines).
    pub head: Vec<u8>,
    /// Whole content of small configuration files (passwd, group, ld.so.conf).
    pub text: Option<String>,
    /// The file mentions nsswitch.conf (static glibc with NSS).
    pub nss: bool,
    /// The file mentions a CA bundle location or SSL_CERT_FILE.
    pub tls: bool,
}

/// A node of the final filesystem.
#[derive(Debug, Clone)]
pub enum FsNode {
    Dir,
    File {
        mode: u32,
        size: u64,
        facts: Arc<FileFacts>,
    },
    Symlink(String),
    /// Devices, fifos: present, not inspected.
    Other,
}

#[derive(Debug, Clone)]
struct Entry {
    node: FsNode,
    layer: usize,
}

/// The final filesystem of an image.
#[derive(Debug, Default)]
pub struct View {
    entries: BTreeMap<String, Entry>,
    /// Bytes of file text kept so far: all files together stay under
    /// `Limits::max_text`, so a layer of many small database files cannot
    /// make kiln hold gigabytes.
    text_kept: u64,
}

/// Files whose whole text the checks (and the SBOM) read, and the most
/// bytes of each kept: the package database can be large, the rest is small.
fn text_cap(path: &str) -> Option<u64> {
    if matches!(
        path,
        "etc/passwd" | "etc/group" | "etc/ld.so.conf" | "etc/nsswitch.conf" | "etc/os-release" | "usr/lib/os-release"
    ) || path.starts_with("etc/ld.so.conf.d/")
    {
        return Some(1 << 20);
    }
    // dpkg's database: the status file, distroless's per-package
    // status.d/ files (with their md5sums), and the file lists.
    if path == "var/lib/dpkg/status" {
        return Some(32 << 20);
    }
    if path.starts_with("var/lib/dpkg/status.d/") || (path.starts_with("var/lib/dpkg/info/") && path.ends_with(".list"))
    {
        return Some(4 << 20);
    }
    None
}

/// Bytes of an ELF's beginning kept in memory at most; tables further in
/// (the dynamic segment of a huge library) are caught in a window instead.
const PREFIX_CAP: u64 = 32 << 20;
/// Largest dynamic segment kiln reads through a window.
const WINDOW_CAP: u64 = 8 << 20;

/// Reads a file entry: ELF facts from a prefix (only as far as the tables
/// need, capped) plus a window over a far-away dynamic segment, the head,
/// small texts, and marker strings over all bytes. Memory stays bounded
/// whatever the file's size.
fn read_facts(size: u64, keep_text: bool, r: &mut dyn Read) -> std::io::Result<FileFacts> {
    let mut facts = FileFacts::default();
    let nss = memmem::Finder::new(b"nsswitch.conf");
    let tls = [
        memmem::Finder::new(b"SSL_CERT_FILE"),
        memmem::Finder::new(b"/etc/ssl/certs"),
    ];
    let mut prefix: Vec<u8> = Vec::new();
    let mut need: u64 = 64;
    let mut is_elf: Option<bool> = None;
    let mut parsed = false;
    // (offset, wanted length, bytes so far) of the window.
    let mut window: Option<(u64, u64, Vec<u8>)> = None;
    let mut pos: u64 = 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let finish = |facts: &mut FileFacts, res: Result<ElfInfo, ElfError>| match res {
        Ok(info) => facts.elf = Some(Arc::new(info)),
        Err(ElfError::NeedMore(m)) => {
            facts.elf_error = Some(format!(
                "its tables need byte {m}, beyond what kiln reads (file has {size})"
            ))
        }
        Err(ElfError::Invalid(e)) => facts.elf_error = Some(e),
        Err(ElfError::NotElf) => {}
    };
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        let chunk_start = pos;
        pos += n as u64;
        if facts.head.len() < 256 {
            let take = (256 - facts.head.len()).min(n);
            facts.head.extend_from_slice(&chunk[..take]);
        }
        if keep_text || (is_elf != Some(false) && !parsed && (prefix.len() as u64) < PREFIX_CAP) {
            let room = if keep_text {
                n
            } else {
                (PREFIX_CAP - prefix.len() as u64).min(n as u64) as usize
            };
            prefix.extend_from_slice(&chunk[..room]);
        }
        if is_elf.is_none() && facts.head.len() >= 4.min(size as usize) {
            is_elf = Some(elf::is_elf(&facts.head));
            if is_elf == Some(false) && !keep_text {
                prefix = Vec::new();
            }
        }
        if is_elf == Some(true) {
            if let Some((wo, wl, wb)) = window.as_mut() {
                // Copy the part of this chunk that falls in the window.
                let from = (*wo).max(chunk_start);
                let to = (*wo + *wl).min(pos);
                if from < to {
                    wb.extend_from_slice(&chunk[(from - chunk_start) as usize..(to - chunk_start) as usize]);
                }
                // Parse once the window is full and the prefix is as long as it gets.
                if !parsed
                    && wb.len() as u64 == *wl
                    && (prefix.len() as u64 == PREFIX_CAP || prefix.len() as u64 == pos)
                {
                    let res = elf::parse_windowed(&prefix, Some((*wo, wb.as_slice())), size);
                    finish(&mut facts, res);
                    parsed = true;
                    prefix = Vec::new();
                }
            }
            while !parsed && window.is_none() && prefix.len() as u64 >= need.min(size) {
                match elf::parse(&prefix, size) {
                    Err(ElfError::NeedMore(m)) if m > need && m <= size && m <= PREFIX_CAP => need = m,
                    Err(ElfError::NeedMore(m)) if m > PREFIX_CAP && m <= size => {
                        // A far-away table: window over the dynamic segment.
                        match elf::dynamic_range(&prefix, size) {
                            Some((off, len)) if len <= WINDOW_CAP && off >= prefix.len() as u64 => {
                                let mut wb = Vec::new();
                                let from = off.max(chunk_start);
                                let to = (off + len).min(pos);
                                if from < to && off >= chunk_start {
                                    wb.extend_from_slice(
                                        &chunk[(from - chunk_start) as usize..(to - chunk_start) as usize],
                                    );
                                }
                                window = Some((off, len, wb));
                            }
                            _ => {
                                finish(&mut facts, Err(ElfError::NeedMore(m)));
                                parsed = true;
                            }
                        }
                    }
                    res => {
                        finish(&mut facts, res);
                        parsed = true;
                        prefix = Vec::new();
                    }
                }
            }
            // Marker strings, across chunk boundaries.
            carry.extend_from_slice(chunk);
            if !facts.nss && nss.find(&carry).is_some() {
                facts.nss = true;
            }
            if !facts.tls && tls.iter().any(|f| f.find(&carry).is_some()) {
                facts.tls = true;
            }
            let keep = carry.len().saturating_sub(32);
            carry.drain(..keep);
        }
    }
    if is_elf == Some(true) && !parsed {
        let res = match &window {
            Some((wo, _, wb)) => elf::parse_windowed(&prefix, Some((*wo, wb.as_slice())), size),
            None => elf::parse(&prefix, size),
        };
        finish(&mut facts, res);
    }
    if keep_text {
        facts.text = Some(String::from_utf8_lossy(&prefix).into_owned());
    }
    Ok(facts)
}

impl View {
    /// Streams every layer of `image` once and builds the final view.
    pub fn build(image: &Image, limits: &Limits) -> Result<View> {
        let mut view = View::default();
        for (i, layer) in image.layers().iter().enumerate() {
            let what = format!("layer {} ({})", i + 1, layer.descriptor.digest);
            let raw = layer.source.open()?;
            let mut r = layer_read::decompress(&layer.descriptor.media_type, raw)
                .map_err(|e| Error::format(&what, e.to_string()))?;
            view.apply_layer(i, &mut r, &what, limits)?;
        }
        Ok(view)
    }

    /// Applies one uncompressed tar stream as layer `idx`.
    pub fn apply_layer(&mut self, idx: usize, r: &mut dyn Read, what: &str, limits: &Limits) -> Result<()> {
        let bad = |e: std::io::Error| Error::format(what, format!("unreadable tar: {e}"));
        layer_read::entries(r, limits, what, |m, data| {
            let path = normalize(&m.path);
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b.to_string()),
                None => (String::new(), path.clone()),
            };
            if base == ".wh..wh..opq" {
                // Opaque: what lower layers had below this directory is hidden.
                self.remove_below(&dir, Some(idx));
                return Ok(());
            }
            if let Some(hidden) = base.strip_prefix(".wh.") {
                let target = if dir.is_empty() {
                    hidden.to_string()
                } else {
                    format!("{dir}/{hidden}")
                };
                self.remove_below(&target, Some(idx));
                if self.entries.get(&target).is_some_and(|x| x.layer < idx) {
                    self.entries.remove(&target);
                }
                return Ok(());
            }
            if path.is_empty() {
                return Ok(());
            }
            let link = m.link.clone().unwrap_or_default();
            let node = match m.kind {
                Kind::Dir => FsNode::Dir,
                Kind::Symlink => FsNode::Symlink(link),
                Kind::Hardlink => {
                    let t = normalize(&link);
                    match self.entries.get(&t) {
                        Some(x) => x.node.clone(),
                        // A hardlink to nothing: the engine would fail to apply this layer.
                        None => return Err(Error::format(what, format!("hardlink {path} points to missing {t}"))),
                    }
                }
                Kind::File => {
                    let keep_text =
                        text_cap(&path).is_some_and(|cap| m.size <= cap) && self.text_kept + m.size <= limits.max_text;
                    if keep_text {
                        self.text_kept += m.size;
                    }
                    let facts = read_facts(m.size, keep_text, data).map_err(bad)?;
                    FsNode::File {
                        mode: m.mode,
                        size: m.size,
                        facts: Arc::new(facts),
                    }
                }
                _ => FsNode::Other,
            };
            // A non-directory replacing a directory hides what was below it.
            if !matches!(node, FsNode::Dir) {
                self.remove_below(&path, None);
            }
            self.entries.insert(path, Entry { node, layer: idx });
            Ok(())
        })
        .map(|_| ())
    }

    /// Removes entries strictly below `dir` (from layers before `before`, if given).
    fn remove_below(&mut self, dir: &str, before: Option<usize>) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let doomed: Vec<String> = self
            .entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, e)| before.is_none_or(|b| e.layer < b))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.entries.remove(&k);
        }
    }

    /// The node at a normalized path, without following a final symlink.
    pub fn lstat(&self, path: &str) -> Option<&FsNode> {
        if path.is_empty() {
            return Some(&FsNode::Dir);
        }
        self.entries.get(path).map(|e| &e.node)
    }

    /// Follows symlinks (in every component) inside the image root.
    /// Returns the final path and node, or why not.
    pub fn resolve(&self, path: &str) -> std::result::Result<(String, &FsNode), String> {
        let mut hops = 0;
        let mut pending: Vec<String> = normalize(path)
            .split('/')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .rev()
            .collect();
        let mut done: Vec<String> = Vec::new();
        while let Some(part) = pending.pop() {
            if part == ".." {
                done.pop();
                continue;
            }
            done.push(part);
            let cur = done.join("/");
            match self.entries.get(&cur).map(|e| &e.node) {
                Some(FsNode::Symlink(target)) => {
                    hops += 1;
                    if hops > 40 {
                        return Err(format!("symlink loop at /{cur}"));
                    }
                    done.pop();
                    if target.starts_with('/') {
                        done.clear();
                    }
                    for p in target.split('/').filter(|s| !s.is_empty() && *s != ".").rev() {
                        pending.push(p.to_string());
                    }
                }
                Some(_) => {}
                None => {
                    // A parent directory may exist only implicitly (no dir entry).
                    if !pending.is_empty()
                        && self
                            .entries
                            .range(format!("{cur}/")..)
                            .next()
                            .is_some_and(|(k, _)| k.starts_with(&format!("{cur}/")))
                    {
                        continue;
                    }
                    return Err(format!("/{cur} does not exist"));
                }
            }
        }
        let p = done.join("/");
        let node = self.lstat(&p).ok_or_else(|| format!("/{p} does not exist"))?;
        Ok((p, node))
    }

    /// Every regular file path with ELF facts.
    pub fn elves(&self) -> impl Iterator<Item = (&str, &Arc<FileFacts>)> {
        self.entries.iter().filter_map(|(k, e)| match &e.node {
            FsNode::File { facts, .. } if facts.elf.is_some() || facts.elf_error.is_some() => Some((k.as_str(), facts)),
            _ => None,
        })
    }

    /// Whole text of a small config file, following symlinks.
    pub fn text(&self, path: &str) -> Option<&str> {
        match self.resolve(path) {
            Ok((_, FsNode::File { facts, .. })) => facts.text.as_deref(),
            _ => None,
        }
    }

    /// Paths directly below a directory.
    pub fn children(&self, dir: &str) -> Vec<String> {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        self.entries
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the view is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::tar::{EntryHeader, EntryKind, TarWriter};

    fn tar(entries: &[(&str, EntryKind, &[u8])]) -> Vec<u8> {
        let mut w = TarWriter::new(Vec::new());
        for (p, k, data) in entries {
            w.header(&EntryHeader {
                path: p.to_string(),
                kind: k.clone(),
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
                xattrs: Default::default(),
            })
            .unwrap();
            if let EntryKind::File { size } = k {
                w.write_data(data).unwrap();
                w.pad(*size).unwrap();
            }
        }
        w.finish().unwrap()
    }

    fn file(data: &'static [u8]) -> (EntryKind, &'static [u8]) {
        (
            EntryKind::File {
                size: data.len() as u64,
            },
            data,
        )
    }

    fn view(layers: Vec<Vec<u8>>) -> View {
        let mut v = View::default();
        for (i, l) in layers.into_iter().enumerate() {
            v.apply_layer(i, &mut std::io::Cursor::new(l), "test", &Limits::default())
                .unwrap();
        }
        v
    }

    #[test]
    fn whiteouts_and_opaque_dirs_apply_in_order() {
        let (fk, fd) = file(b"x");
        let l1 = tar(&[
            ("lib", EntryKind::Dir, b""),
            ("lib/a.so", fk.clone(), fd),
            ("lib/b.so", fk.clone(), fd),
            ("etc", EntryKind::Dir, b""),
            ("etc/x", fk.clone(), fd),
        ]);
        let empty = EntryKind::File { size: 0 };
        let l2 = tar(&[
            ("lib/.wh.a.so", empty.clone(), b"" as &[u8]),
            ("etc/.wh..wh..opq", empty, b""),
            ("etc/y", fk.clone(), fd),
        ]);
        let v = view(vec![l1, l2]);
        assert!(v.lstat("lib/a.so").is_none(), "whiteout removes");
        assert!(v.lstat("lib/b.so").is_some());
        assert!(v.lstat("etc/x").is_none(), "opaque hides the lower layer");
        assert!(v.lstat("etc/y").is_some(), "but not the same layer's files");
    }

    #[test]
    fn symlinks_resolve_inside_the_root_and_loops_are_caught() {
        let (fk, fd) = file(b"x");
        let l = tar(&[
            ("usr/lib/libz.so.1.2", fk.clone(), fd),
            (
                "usr/lib/libz.so.1",
                EntryKind::Symlink {
                    target: "libz.so.1.2".into(),
                },
                b"",
            ),
            (
                "lib",
                EntryKind::Symlink {
                    target: "usr/lib".into(),
                },
                b"",
            ),
            (
                "abs",
                EntryKind::Symlink {
                    target: "/../../../usr/lib/libz.so.1".into(),
                },
                b"",
            ),
            ("loop1", EntryKind::Symlink { target: "loop2".into() }, b""),
            ("loop2", EntryKind::Symlink { target: "loop1".into() }, b""),
        ]);
        let v = view(vec![l]);
        assert_eq!(v.resolve("/lib/libz.so.1").unwrap().0, "usr/lib/libz.so.1.2");
        assert_eq!(
            v.resolve("abs").unwrap().0,
            "usr/lib/libz.so.1.2",
            "`..` clamps at the image root"
        );
        assert!(v.resolve("loop1").unwrap_err().contains("loop"));
        assert!(v.resolve("/nope").is_err());
    }

    #[test]
    fn hardlinks_and_hostile_paths() {
        let (fk, fd) = file(b"#!/bin/sh\n");
        let l = tar(&[
            ("../../etc/evil", fk.clone(), fd),
            (
                "bin/sh2",
                EntryKind::Hardlink {
                    target: "etc/evil".into(),
                },
                b"",
            ),
        ]);
        let v = view(vec![l]);
        assert!(v.lstat("etc/evil").is_some(), "`../` stays inside the view");
        match v.lstat("bin/sh2") {
            Some(FsNode::File { facts, .. }) => assert!(facts.head.starts_with(b"#!")),
            other => panic!("{other:?}"),
        }
        let bad = tar(&[(
            "x",
            EntryKind::Hardlink {
                target: "missing".into(),
            },
            b"",
        )]);
        let mut v = View::default();
        assert!(
            v.apply_layer(0, &mut std::io::Cursor::new(bad), "t", &Limits::default())
                .is_err()
        );
    }

    #[test]
    fn elf_facts_come_from_the_stream() {
        let ls = std::fs::read("/bin/ls").unwrap();
        let f = read_facts(ls.len() as u64, false, &mut std::io::Cursor::new(&ls)).unwrap();
        let e = f.elf.expect("parsed");
        assert!(e.needed.contains(&"libc.so.6".to_string()));
        // One byte at a time exercises every boundary.
        struct Slow<'a>(&'a [u8]);
        impl Read for Slow<'_> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                if self.0.is_empty() || b.is_empty() {
                    return Ok(0);
                }
                b[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let g = read_facts(ls.len() as u64, false, &mut Slow(&ls)).unwrap();
        assert_eq!(g.elf.as_deref(), Some(&*e));
    }

    #[test]
    fn a_decompression_bomb_hits_the_limit() {
        // 64 MiB of zeros in one file, gzip-compressed to a few KiB.
        let mut w = TarWriter::new(Vec::new());
        let size = 64u64 << 20;
        w.header(&EntryHeader {
            path: "bomb".into(),
            kind: EntryKind::File { size },
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Default::default(),
        })
        .unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            w.write_data(&zeros).unwrap();
        }
        let tarball = w.finish().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &tarball).unwrap();
        let compressed = gz.finish().unwrap();
        assert!(compressed.len() < 1 << 20);
        let limits = Limits {
            max_total: 16 << 20,
            ..Limits::default()
        };
        let mut r = layer_read::decompress("", Box::new(std::io::Cursor::new(compressed))).unwrap();
        let mut v = View::default();
        let err = v.apply_layer(0, &mut r, "bomb layer", &limits).unwrap_err();
        assert!(err.to_string().contains("decompression bomb"), "{err}");
    }

    #[test]
    fn duplicate_entries_take_the_last_one() {
        let l = tar(&[
            ("a", EntryKind::File { size: 1 }, b"1"),
            ("a", EntryKind::Symlink { target: "b".into() }, b""),
        ]);
        let v = view(vec![l]);
        assert!(matches!(v.lstat("a"), Some(FsNode::Symlink(_))));
    }

    proptest::proptest! {
        #[test]
        fn hostile_tar_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..8192)) {
            let mut v = View::default();
            let _ = v.apply_layer(0, &mut std::io::Cursor::new(bytes), "fuzz", &Limits::default());
        }

        #[test]
        fn mutated_layers_never_panic(flips in proptest::collection::vec((0usize..6000, proptest::num::u8::ANY), 1..30)) {
            let ls = std::fs::read("/bin/true").unwrap();
            let ls = &ls[..ls.len().min(3000)];
            let mut base = tar(&[
                ("usr/bin/true", EntryKind::File { size: ls.len() as u64 }, ls),
                ("lib", EntryKind::Symlink { target: "../../..//lib".into() }, b""),
                ("x", EntryKind::Hardlink { target: "usr/bin/true".into() }, b""),
                ("usr/.wh..wh..opq", EntryKind::File { size: 0 }, b""),
            ]);
            for (i, b) in flips {
                if i < base.len() { base[i] = b; }
            }
            let mut v = View::default();
            let _ = v.apply_layer(0, &mut std::io::Cursor::new(base), "fuzz", &Limits::default());
            let _ = v.resolve("lib/x/y");
        }
    }
}
