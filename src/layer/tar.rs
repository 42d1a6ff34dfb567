//! A deterministic tar writer. Headers are built byte by byte: ustar, with a
//! PAX extended header only for what ustar cannot hold (long names, large
//! ids or sizes, xattrs), records sorted. No GNU extensions, no atime/ctime,
//! no user or group names: nothing from the host that was not asked for.

use std::collections::BTreeMap;
use std::io::{self, Write};

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file of `size` bytes; its content follows the header.
    File { size: u64 },
    /// A directory.
    Dir,
    /// A symbolic link, target stored verbatim.
    Symlink { target: String },
    /// A hard link to an earlier entry's in-archive path.
    Hardlink { target: String },
}

/// One entry's header fields, already normalized by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// Path inside the archive, relative, `/`-separated, no trailing slash.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits (& 0o7777).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

const BLOCK: usize = 512;
const USTAR_MAX_ID: u64 = 0o7_777_777;
const USTAR_MAX_SIZE: u64 = 0o77_777_777_777;

/// Writes tar entries to `W`; call [`TarWriter::finish`] for the end marker.
pub struct TarWriter<W: Write> {
    out: W,
}

impl<W: Write> TarWriter<W> {
    /// A writer over `out`.
    pub fn new(out: W) -> Self {
        TarWriter { out }
    }

    /// Writes the header (and PAX header when needed) for `entry`. For files
    /// the caller then writes exactly `size` bytes and calls [`Self::pad`].
    pub fn header(&mut self, entry: &EntryHeader) -> io::Result<()> {
        let mut name = entry.path.clone();
        if entry.kind == EntryKind::Dir {
            name.push('/');
        }
        let (size, typeflag, link) = match &entry.kind {
            EntryKind::File { size } => (*size, b'0', ""),
            EntryKind::Dir => (0, b'5', ""),
            EntryKind::Symlink { target } => (0, b'2', target.as_str()),
            EntryKind::Hardlink { target } => (0, b'1', target.as_str()),
        };

        let mut pax: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let split = split_ustar_name(&name);
        if split.is_none() {
            pax.insert("path".into(), name.as_bytes().to_vec());
        }
        if link.len() > 100 {
            pax.insert("linkpath".into(), link.as_bytes().to_vec());
        }
        if entry.uid > USTAR_MAX_ID {
            pax.insert("uid".into(), entry.uid.to_string().into_bytes());
        }
        if entry.gid > USTAR_MAX_ID {
            pax.insert("gid".into(), entry.gid.to_string().into_bytes());
        }
        if size > USTAR_MAX_SIZE {
            pax.insert("size".into(), size.to_string().into_bytes());
        }
        for (k, v) in &entry.xattrs {
            pax.insert(format!("SCHILY.xattr.{k}"), v.clone());
        }

        if !pax.is_empty() {
            let body = pax_records(&pax);
            // The PAX header's own name is fixed: it must not depend on the host (no pid).
            let pax_full = format!("PaxHeaders/{}", entry.path);
            let pax_name = truncate_utf8(&pax_full, 100);
            let hdr = ustar_header(pax_name, "", b'x', 0o644, 0, 0, entry.mtime, body.len() as u64, "");
            self.out.write_all(&hdr)?;
            self.out.write_all(&body)?;
            self.pad(body.len() as u64)?;
        }

        let (prefix, short) = split.unwrap_or(("", truncate_utf8(&name, 100)));
        let hdr = ustar_header(
            short,
            prefix,
            typeflag,
            entry.mode & 0o7777,
            entry.uid.min(USTAR_MAX_ID),
            entry.gid.min(USTAR_MAX_ID),
            entry.mtime,
            size.min(USTAR_MAX_SIZE),
            truncate_utf8(link, 100),
        );
        self.out.write_all(&hdr)
    }

    /// Writes content bytes of the current file entry.
    pub fn write_data(&mut self, data: &[u8]) -> io::Result<()> {
        self.out.write_all(data)
    }

    /// Pads the current entry's data of `size` bytes to a block boundary.
    pub fn pad(&mut self, size: u64) -> io::Result<()> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Writes the two zero blocks that end an archive; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0u8; BLOCK * 2])?;
        Ok(self.out)
    }

    /// The underlying writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// Splits a name into ustar (prefix, name) when it fits, at a `/`.
fn split_ustar_name(name: &str) -> Option<(&str, &str)> {
    if name.len() <= 100 {
        return Some(("", name));
    }
    // The prefix holds at most 155 bytes, the name 100; split at the first
    // slash that makes both fit, so the choice is a function of the name.
    let bytes = name.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i > 0 && i + 1 < name.len() {
            return Some((&name[..i], &name[i + 1..]));
        }
    }
    None
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn pax_records(map: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in map {
        // A record is "LEN KEY=VALUE\n" where LEN counts itself.
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(k.as_bytes());
        out.push(b'=');
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn ustar_header(
    name: &str,
    prefix: &str,
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    link: &str,
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime.min(0o77_777_777_777));
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    // uname/gname empty; devmajor/devminor zero-filled octal.
    octal(&mut h[329..337], 0);
    octal(&mut h[337..345], 0);
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

/// Zero-padded octal with a trailing NUL, filling the field.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> EntryHeader {
        EntryHeader {
            path: path.into(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        }
    }

    fn read_back(bytes: &[u8]) -> Vec<(String, u64, Option<String>)> {
        let mut ar = tar::Archive::new(bytes);
        ar.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().size().unwrap(),
                    e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned()),
                )
            })
            .collect()
    }

    #[test]
    fn long_names_and_links_round_trip_through_an_independent_reader() {
        let long = format!("{}/{}", "d".repeat(150), "f".repeat(90));
        let very_long = "x/".repeat(200) + "end";
        let long_link = "t".repeat(300);
        let mut w = TarWriter::new(Vec::new());
        for (p, k) in [
            (long.as_str(), EntryKind::File { size: 3 }),
            (very_long.as_str(), EntryKind::File { size: 0 }),
            (
                "l",
                EntryKind::Symlink {
                    target: long_link.clone(),
                },
            ),
        ] {
            w.header(&entry(p, k.clone())).unwrap();
            if let EntryKind::File { size } = k {
                w.write_data(&b"abc"[..size as usize]).unwrap();
                w.pad(size).unwrap();
            }
        }
        let bytes = w.finish().unwrap();
        let got = read_back(&bytes);
        assert_eq!(got[0], (long.clone(), 3, None));
        assert_eq!(got[1].0, very_long);
        assert_eq!(got[2].2.as_deref(), Some(long_link.as_str()));
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut m = BTreeMap::new();
        m.insert("path".to_string(), vec![b'a'; 93]);
        let r = pax_records(&m);
        // 3 digits + ' ' + "path=" + 93 + '\n' = 103
        assert!(r.starts_with(b"103 path="), "{}", String::from_utf8_lossy(&r));
        assert_eq!(r.len(), 103);
    }

    #[test]
    fn big_ids_go_to_pax() {
        let mut e = entry("f", EntryKind::File { size: 0 });
        e.uid = 10_000_000_000;
        let mut w = TarWriter::new(Vec::new());
        w.header(&e).unwrap();
        let bytes = w.finish().unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut it = ar.entries().unwrap();
        let mut first = it.next().unwrap().unwrap();
        let mut exts = first.pax_extensions().unwrap().unwrap();
        let rec = exts.next().unwrap().unwrap();
        assert_eq!(rec.key().unwrap(), "uid");
        assert_eq!(rec.value().unwrap(), "10000000000");
    }
}
