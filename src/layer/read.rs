//! The one way kiln reads a layer: decompress by media type (or magic),
//! then walk the tar's raw entries with kiln's own limits, applied before
//! anything is buffered — path bytes, GNU long-name and PAX record sizes,
//! entry count, total path bytes, total uncompressed bytes. The tar crate
//! is used in raw mode, so it never collects a hostile long name or PAX
//! header in memory on kiln's behalf. The uncompressed stream is hashed on
//! the way: the diff_id comes from the bytes, not from a config. Used by
//! scan, diff and inspect.

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::image::Layer;
use crate::{Error, Result};

/// Bounds on one layer (or, for `max_total`, on what a caller sums).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Entries in one layer.
    pub max_entries: usize,
    /// Bytes of one path or link target (after long names and PAX).
    pub max_path: usize,
    /// Bytes of one PAX extended header or GNU long-name record.
    pub max_header: u64,
    /// Path bytes over all entries of the layer.
    pub max_path_total: u64,
    /// Uncompressed bytes of the layer.
    pub max_total: u64,
    /// Bytes of whole-file text a scan view keeps, all files of all layers
    /// together (dpkg's database, passwd, …): beyond it, files are seen but
    /// their text is not kept.
    pub max_text: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 1_000_000,
            max_path: 4096,
            max_header: 1 << 20,
            max_path_total: 256 << 20,
            max_total: 1 << 40,
            max_text: 64 << 20,
        }
    }
}

/// A layer blob's decompressed bytes: by media type when it says, else by
/// the first bytes (gzip, zstd, or a plain tar).
pub fn decompress(media_type: &str, r: Box<dyn Read + Send>) -> io::Result<Box<dyn Read + Send>> {
    let mut br = io::BufReader::with_capacity(256 * 1024, r);
    let by_type = if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
        Some(true)
    } else if media_type.ends_with("+zstd") {
        Some(false)
    } else {
        None
    };
    let head = br.fill_buf()?;
    let gzip = by_type == Some(true) || (by_type.is_none() && head.starts_with(&[0x1f, 0x8b]));
    let zstd = by_type == Some(false) || (by_type.is_none() && head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]));
    Ok(if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(br))
    } else if zstd {
        Box::new(zstd::stream::read::Decoder::with_buffer(br)?)
    } else {
        Box::new(br)
    })
}

/// Normalizes a path from a tar header or a link: relative to the root, no
/// `.`/`..` (clamped at the root), no empty parts.
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in path.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
    /// Any other type flag.
    Other(u8),
}

impl Kind {
    /// A short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Hardlink => "hardlink",
            Kind::Char => "char",
            Kind::Block => "block",
            Kind::Fifo => "fifo",
            Kind::Other(_) => "other",
        }
    }
}

/// One entry's header, long names and PAX records applied.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The path as written (lossy UTF-8), not normalized.
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    /// Link target for symlinks and hardlinks.
    pub link: Option<String>,
    /// This entry's PAX records (xattrs among them), sorted.
    pub pax: BTreeMap<String, String>,
    /// Position among the layer's entries (0-based, metadata records not counted).
    pub position: usize,
}

/// Walks the entries of an uncompressed tar stream, calling `f` with each
/// entry's metadata and a reader of its content (which `f` may leave
/// unread). Returns the diff_id: the digest of every byte of the stream.
pub fn entries(
    r: &mut dyn Read,
    limits: &Limits,
    what: &str,
    mut f: impl FnMut(&Meta, &mut dyn Read) -> Result<()>,
) -> Result<Digest> {
    let bad = |e: io::Error| Error::format(what, format!("unreadable tar: {e}"));
    let too = |m: String| Error::format(what, m);
    let mut hashing = HashingReader::new(r, limits.max_total);
    {
        let mut ar = tar::Archive::new(&mut hashing);
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        let mut pax: BTreeMap<String, String> = BTreeMap::new();
        let mut count = 0usize;
        let mut path_total = 0u64;
        let iter = ar.entries().map_err(bad)?.raw(true);
        for e in iter {
            let mut e = e.map_err(bad)?;
            let header = e.header().clone();
            let flag = header.entry_type().as_byte();
            let size = header.size().map_err(bad)?;
            // Metadata records: bounded before a byte of them is read.
            if matches!(flag, b'L' | b'K' | b'x' | b'g') {
                if size > limits.max_header {
                    return Err(too(format!(
                        "a {} record of {size} bytes (limit {})",
                        if flag == b'x' || flag == b'g' {
                            "PAX"
                        } else {
                            "GNU long-name"
                        },
                        limits.max_header
                    )));
                }
                let mut data = Vec::with_capacity(size as usize);
                (&mut e).take(size).read_to_end(&mut data).map_err(bad)?;
                match flag {
                    b'L' => long_name = Some(trim_nul(data)),
                    b'K' => long_link = Some(trim_nul(data)),
                    b'x' => pax = parse_pax(&data).map_err(|m| too(format!("a PAX header: {m}")))?,
                    _ => {} // global headers: kiln's readers need nothing from them
                }
                continue;
            }
            count += 1;
            if count > limits.max_entries {
                return Err(too(format!("more than {} entries", limits.max_entries)));
            }
            let path_bytes = match (pax.remove("path"), long_name.take()) {
                (Some(p), _) => p.into_bytes(),
                (None, Some(l)) => l,
                (None, None) => header.path_bytes().into_owned(),
            };
            let link_bytes = match (pax.remove("linkpath"), long_link.take()) {
                (Some(p), _) => Some(p.into_bytes()),
                (None, Some(l)) => Some(l),
                (None, None) => header.link_name_bytes().map(|b| b.into_owned()),
            };
            for b in std::iter::once(&path_bytes).chain(link_bytes.as_ref()) {
                if b.len() > limits.max_path {
                    return Err(too(format!("a path of {} bytes (limit {})", b.len(), limits.max_path)));
                }
                path_total += b.len() as u64;
            }
            if path_total > limits.max_path_total {
                return Err(too(format!("more than {} bytes of paths", limits.max_path_total)));
            }
            let kind = match flag {
                b'0' | 0 | b'7' => Kind::File,
                b'5' => Kind::Dir,
                b'2' => Kind::Symlink,
                b'1' => Kind::Hardlink,
                b'3' => Kind::Char,
                b'4' => Kind::Block,
                b'6' => Kind::Fifo,
                other => Kind::Other(other),
            };
            // A blank numeric field reads as 0, as the tar crate's own
            // readers (and GNU tar) treat it; a bad PAX number is an error.
            let num = |k: &str, v: io::Result<u64>| -> Result<u64> {
                match pax.get(k) {
                    Some(s) => s
                        .split('.')
                        .next()
                        .unwrap_or(s)
                        .parse()
                        .map_err(|_| too(format!("PAX {k} `{s}` is not a number"))),
                    None => Ok(v.unwrap_or(0)),
                }
            };
            let meta = Meta {
                path: String::from_utf8_lossy(&path_bytes).into_owned(),
                kind,
                mode: header.mode().unwrap_or(0o644) & 0o7777,
                uid: num("uid", header.uid())?,
                gid: num("gid", header.gid())?,
                mtime: num("mtime", header.mtime())?,
                size,
                link: link_bytes.map(|b| String::from_utf8_lossy(&b).into_owned()),
                pax: std::mem::take(&mut pax),
                position: count - 1,
            };
            f(&meta, &mut e)?;
        }
    }
    // Whatever follows the end marker is part of the layer's bytes too.
    io::copy(&mut hashing, &mut io::sink()).map_err(bad)?;
    if hashing.over {
        return Err(too(format!(
            "more than {} uncompressed bytes (a decompression bomb?)",
            limits.max_total
        )));
    }
    Ok(hashing.finish())
}

/// Opens a layer, decompresses it by its media type, and walks its entries.
pub fn layer_entries(
    layer: &Layer,
    limits: &Limits,
    what: &str,
    f: impl FnMut(&Meta, &mut dyn Read) -> Result<()>,
) -> Result<Digest> {
    let raw = layer.source.open()?;
    let mut r = decompress(&layer.descriptor.media_type, raw).map_err(|e| Error::format(what, e.to_string()))?;
    entries(&mut r, limits, what, f)
}

fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

/// PAX records: `LEN key=value\n`, LEN counting the whole record.
fn parse_pax(data: &[u8]) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("a record without a length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("a record length that is not a number")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("a record length that does not fit".into());
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=').ok_or("a record without `=`")?;
        out.insert(
            String::from_utf8_lossy(&rec[..eq]).into_owned(),
            String::from_utf8_lossy(&rec[eq + 1..]).into_owned(),
        );
        rest = &rest[len..];
    }
    Ok(out)
}

/// Hashes what passes and stops (reporting EOF, flagging `over`) past `max` bytes.
struct HashingReader<'a> {
    inner: &'a mut dyn Read,
    hasher: Sha256,
    count: u64,
    max: u64,
    over: bool,
}

impl<'a> HashingReader<'a> {
    fn new(inner: &'a mut dyn Read, max: u64) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            max,
            over: false,
        }
    }

    fn finish(self) -> Digest {
        let bytes: [u8; 32] = self.hasher.finalize().into();
        Digest::from_bytes(bytes)
    }
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.count >= self.max {
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? > 0 {
                self.over = true;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("more than {} uncompressed bytes (a decompression bomb?)", self.max),
                ));
            }
            return Ok(0);
        }
        let room = (self.max - self.count).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(entries: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        // (name field bytes, type flag, data) as raw ustar blocks.
        let mut out = Vec::new();
        for (name, flag, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::new(*flag));
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    #[test]
    fn long_names_and_pax_apply_and_the_diff_id_is_the_stream_digest() {
        let long = "d/".repeat(100) + "file";
        let body = format!(" path=pax/{long}\n");
        let len = body.len() + (body.len() + 3).to_string().len();
        let pax = format!("{len}{body}");
        assert_eq!(pax.len(), len, "the length prefix counts itself");
        let t = tar_with(&[
            (b"././@LongLink", b'L', long.as_bytes()),
            (b"short", b'0', b"one"),
            (b"pax", b'x', pax.as_bytes()),
            (b"short2", b'0', b"two"),
        ]);
        let mut seen = Vec::new();
        let id = entries(&mut &t[..], &Limits::default(), "t", |m, r| {
            let mut s = String::new();
            r.read_to_string(&mut s).unwrap();
            seen.push((m.path.clone(), s, m.position));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen[0], (long.clone(), "one".into(), 0));
        assert_eq!(seen[1], (format!("pax/{long}"), "two".into(), 1));
        assert_eq!(id, Digest::of(&t));
    }

    #[test]
    fn hostile_records_are_refused_before_they_are_read() {
        let limits = Limits {
            max_header: 1000,
            max_path: 100,
            ..Limits::default()
        };
        let huge = vec![b'a'; 5000];
        let t = tar_with(&[(b"././@LongLink", b'L', &huge), (b"x", b'0', b"")]);
        let e = entries(&mut &t[..], &limits, "t", |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("GNU long-name record of 5000 bytes"), "{e}");
        let name = vec![b'a'; 500];
        let t = tar_with(&[(b"././@LongLink", b'L', &name), (b"x", b'0', b"")]);
        let e = entries(&mut &t[..], &limits, "t", |_, _| Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a path of 500 bytes"), "{e}");
        let many: Vec<(&[u8], u8, &[u8])> = (0..20).map(|_| (&b"f"[..], b'0', &b""[..])).collect();
        let t = tar_with(&many);
        let small = Limits {
            max_entries: 10,
            ..Limits::default()
        };
        assert!(entries(&mut &t[..], &small, "t", |_, _| Ok(())).is_err());
        let bomb = Limits {
            max_total: 2048,
            ..Limits::default()
        };
        let t = tar_with(&[(b"f", b'0', &vec![0u8; 4096])]);
        let e = entries(&mut &t[..], &bomb, "t", |_, r| {
            io::copy(r, &mut io::sink())
                .map(|_| ())
                .map_err(|e| Error::format("t", e.to_string()))
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("uncompressed"), "{e}");
    }

    #[test]
    fn pax_parsing_rejects_garbage() {
        assert!(parse_pax(b"12 path=abc\n").is_ok());
        assert!(parse_pax(b"99 path=abc\n").is_err());
        assert!(parse_pax(b"x path=abc\n").is_err());
        assert!(parse_pax(b"5 ab\n").is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            let _ = entries(&mut &bytes[..], &Limits::default(), "fuzz", |_, r| {
                io::copy(r, &mut io::sink()).map(|_| ()).map_err(|e| Error::format("fuzz", e.to_string()))
            });
        }

        #[test]
        fn mutated_tars_never_panic(flips in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 1..24)) {
            let long = "n/".repeat(80);
            let pax = "30 path=pax/with/a/long/path\n".to_string();
            let mut t = tar_with(&[
                (b"././@LongLink", b'L', long.as_bytes()),
                (b"f", b'0', b"data"),
                (b"pax", b'x', pax.as_bytes()),
                (b"g", b'2', b""),
                (b"h", b'1', b""),
            ]);
            for (i, v) in flips {
                if i < t.len() { t[i] = v; }
            }
            let small = Limits { max_header: 512, max_path: 200, max_entries: 8, ..Limits::default() };
            let _ = entries(&mut &t[..], &small, "fuzz", |_, r| {
                io::copy(r, &mut io::sink()).map(|_| ()).map_err(|e| Error::format("fuzz", e.to_string()))
            });
        }
    }
}
