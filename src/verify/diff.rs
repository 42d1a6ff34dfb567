//! `kiln diff`: compare two images strictly, top-down (manifest → config →
//! layer digests → diff_ids → files), then explain: compression-only,
//! config fields, and per file every header field, the content, and for ELF
//! files which sections differ and what the differing bytes look like.
//! The text form of a report is in [`super::render`].

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::image::{Image, Layer};
use crate::layer::read;
use crate::{Error, Result};

/// One differing field: where, and both values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Field {
    pub field: String,
    pub a: String,
    pub b: String,
}

/// How a file differs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FileDiff {
    pub path: String,
    /// added, removed or changed
    pub change: String,
    pub fields: Vec<Field>,
    /// For ELF files: differing sections and what the bytes look like.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sections: Vec<SectionDiff>,
    /// For text files: a short unified diff.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A differing ELF section.
#[derive(Debug, Clone, Serialize)]
pub struct SectionDiff {
    pub name: String,
    pub bytes_differ: u64,
    /// What the differing bytes look like.
    pub looks_like: Looks,
    /// The differing bytes in A and B (printable form, shortened).
    pub sample_a: String,
    pub sample_b: String,
}

/// A differing layer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LayerDiff {
    pub index: usize,
    pub digest_a: String,
    pub digest_b: String,
    pub diff_id_equal: bool,
    pub files: Vec<FileDiff>,
}

/// The comparison of two images.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub identical: bool,
    pub digest_a: String,
    pub digest_b: String,
    /// Short, most telling first: "compression-only", "config: created", …
    pub summary: Vec<String>,
    pub config: Vec<Field>,
    pub layers: Vec<LayerDiff>,
}

/// Everything kiln compares about one tar entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rec {
    kind: String,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    size: u64,
    hash: String,
    link: String,
    pax: String,
    position: usize,
    elf: bool,
    text: bool,
}

const KEEP_CAP: u64 = 256 << 20;

type LayerRead = (BTreeMap<String, Rec>, BTreeMap<String, Vec<u8>>);

/// Reads a layer's entries through the one layer reader (its limits
/// included); keeps the bytes of files in `keep` (capped). Returns the
/// records, the kept bytes, and the diff_id computed from the stream.
fn read_layer(layer: &Layer, keep: &BTreeMap<String, ()>) -> Result<(LayerRead, Digest)> {
    let what = format!("layer {}", layer.descriptor.digest);
    let bad = |e: std::io::Error| Error::format(&what, e.to_string());
    let mut recs = BTreeMap::new();
    let mut kept = BTreeMap::new();
    let mut kept_total = 0u64;
    let diff_id = read::layer_entries(layer, &read::Limits::default(), &what, |m, data| {
        let path = read::normalize(&m.path);
        let mut pax = m
            .pax
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ");
        // Kept per entry for comparison: a long one (up to 1 MiB each) is
        // kept as its digest, so many of them cannot exhaust memory.
        if pax.len() > 256 {
            pax = format!("{} ({} bytes)", Digest::of(pax.as_bytes()), pax.len());
        }
        let mut hasher = Sha256::new();
        let want = keep.contains_key(&path) && kept_total + m.size <= KEEP_CAP;
        let mut bytes = Vec::new();
        let mut head = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = data.read(&mut buf).map_err(bad)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if head.len() < 512 {
                head.extend_from_slice(&buf[..n.min(512 - head.len())]);
            }
            if want {
                bytes.extend_from_slice(&buf[..n]);
            }
        }
        if want {
            kept_total += m.size;
            kept.insert(path.clone(), bytes);
        }
        let elf = crate::elf::is_elf(&head);
        let text = !elf && !head.is_empty() && std::str::from_utf8(&head).is_ok() && !head.contains(&0);
        recs.insert(
            path,
            Rec {
                kind: m.kind.name().to_string(),
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                mtime: m.mtime,
                size: m.size,
                hash: hex::encode(hasher.finalize()),
                link: m.link.clone().unwrap_or_default(),
                pax,
                position: m.position,
                elf,
                text,
            },
        );
        Ok(())
    })?;
    Ok(((recs, kept), diff_id))
}

fn json_fields(prefix: &str, a: &serde_json::Value, b: &serde_json::Value, out: &mut Vec<Field>) {
    use serde_json::Value;
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                json_fields(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ if a != b => out.push(Field {
            field: prefix.to_string(),
            a: short(&a.to_string()),
            b: short(&b.to_string()),
        }),
        _ => {}
    }
}

fn short(s: &str) -> String {
    if s.len() > 200 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(200).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s.to_string()
    }
}

/// What a run of differing bytes looks like (serialized as the phrase
/// the text report prints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Looks {
    #[serde(rename = "a date/time")]
    DateTime,
    #[serde(rename = "an absolute path")]
    AbsolutePath,
    #[serde(rename = "a random-looking run")]
    Random,
    #[serde(rename = "other bytes")]
    Other,
}

impl std::fmt::Display for Looks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Looks::DateTime => "a date/time",
            Looks::AbsolutePath => "an absolute path",
            Looks::Random => "a random-looking run",
            Looks::Other => "other bytes",
        })
    }
}

/// What a run of differing bytes looks like.
pub fn classify(bytes: &[u8]) -> Looks {
    let s = String::from_utf8_lossy(bytes);
    let digits = s.chars().filter(|c| c.is_ascii_digit()).count();
    let looks_time = (s.contains(':') && digits >= 4)
        || s.contains("UTC")
        || [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .any(|m| s.contains(m))
        || (digits >= 8 && s.contains('-'))
        || (bytes.len() >= 9 && digits * 10 >= bytes.len() * 9)
        || has_epoch(&s);
    if looks_time {
        return Looks::DateTime;
    }
    if s.contains('/') && s.chars().filter(|c| c.is_ascii_graphic()).count() * 10 >= s.len() * 9 {
        return Looks::AbsolutePath;
    }
    let distinct = bytes.iter().collect::<std::collections::BTreeSet<_>>().len();
    if bytes.len() >= 8 && distinct * 2 >= bytes.len() {
        return Looks::Random;
    }
    Looks::Other
}

/// Whether `s` holds a decimal Unix time (seconds, ms, µs or ns) within
/// ten years of now: a build stamp such as `built at 1795695602607414304`.
/// (The clock is read only to recognise such stamps in a report; it never
/// reaches an output.)
fn has_epoch(s: &str) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u128)
        .unwrap_or(0);
    has_epoch_near(s, now)
}

fn has_epoch_near(s: &str, now: u128) -> bool {
    const SPAN: u128 = 10 * 366 * 86_400;
    s.split(|c: char| !c.is_ascii_digit())
        .filter(|run| (9..=20).contains(&run.len()))
        .filter_map(|run| run.parse::<u128>().ok())
        .any(|n| {
            // Seconds, milliseconds, microseconds or nanoseconds.
            [1u128, 1_000, 1_000_000, 1_000_000_000].iter().any(|scale| {
                let secs = n / scale;
                secs + SPAN >= now && secs <= now + SPAN
            })
        })
}

/// Printable form of bytes.
fn printable(b: &[u8]) -> String {
    let s: String = b
        .iter()
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                c as char
            } else {
                '.'
            }
        })
        .collect();
    short(&s)
}

fn elf_sections_diff(a: &[u8], b: &[u8]) -> Vec<SectionDiff> {
    let (sa, sb) = (crate::elf::sections(a), crate::elf::sections(b));
    let mut out = Vec::new();
    let by_name: BTreeMap<&str, &crate::elf::Section> = sb.iter().map(|s| (s.name.as_str(), s)).collect();
    // Offsets and sizes are checked by the reader: every range lies in its file.
    let bytes = |f: &'_ [u8], s: &crate::elf::Section| -> Vec<u8> {
        f.get(s.offset as usize..(s.offset + s.size) as usize)
            .unwrap_or(&[])
            .to_vec()
    };
    for s_a in &sa {
        let name = &s_a.name;
        let Some(s_b) = by_name.get(name.as_str()) else {
            continue;
        };
        let (xa, xb) = (bytes(a, s_a), bytes(b, s_b));
        let (xa, xb) = (xa.as_slice(), xb.as_slice());
        if xa == xb {
            continue;
        }
        let n = xa.len().max(xb.len());
        let differ = (0..n).filter(|&i| xa.get(i) != xb.get(i)).count() as u64;
        // The first differing run, widened to its printable surroundings.
        let first = (0..n).find(|&i| xa.get(i) != xb.get(i)).unwrap_or(0);
        let widen = |x: &[u8]| {
            let mut s = first.min(x.len());
            while s > 0 && first - s < 48 && (x[s - 1].is_ascii_graphic() || x[s - 1] == b' ') {
                s -= 1;
            }
            let mut e = first.min(x.len());
            while e < x.len() && e - first < 48 && (x[e].is_ascii_graphic() || x[e] == b' ') {
                e += 1;
            }
            if e == s {
                e = (s + 16).min(x.len());
            }
            x[s..e].to_vec()
        };
        let (ra, rb) = (widen(xa), widen(xb));
        out.push(SectionDiff {
            name: name.clone(),
            bytes_differ: differ,
            looks_like: classify(&ra),
            sample_a: printable(&ra),
            sample_b: printable(&rb),
        });
    }
    out
}

fn text_diff(a: &[u8], b: &[u8]) -> String {
    let (sa, sb) = (
        String::from_utf8_lossy(a).into_owned(),
        String::from_utf8_lossy(b).into_owned(),
    );
    let (la, lb): (Vec<&str>, Vec<&str>) = (sa.lines().collect(), sb.lines().collect());
    let mut out = Vec::new();
    let common_prefix = la.iter().zip(&lb).take_while(|(x, y)| x == y).count();
    let common_suffix = la[common_prefix..]
        .iter()
        .rev()
        .zip(lb[common_prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    out.push(format!(
        "@@ -{},{} +{},{} @@",
        common_prefix + 1,
        la.len() - common_prefix - common_suffix,
        common_prefix + 1,
        lb.len() - common_prefix - common_suffix
    ));
    for l in &la[common_prefix..la.len() - common_suffix] {
        out.push(format!("-{l}"));
    }
    for l in &lb[common_prefix..lb.len() - common_suffix] {
        out.push(format!("+{l}"));
    }
    out.truncate(41);
    out.join("\n")
}

fn compare_recs(a: &Rec, b: &Rec) -> Vec<Field> {
    let mut f = Vec::new();
    let mut push = |name: &str, x: String, y: String| {
        if x != y {
            f.push(Field {
                field: name.into(),
                a: x,
                b: y,
            });
        }
    };
    push("type", a.kind.clone(), b.kind.clone());
    push("mode", format!("{:04o}", a.mode), format!("{:04o}", b.mode));
    push("owner", format!("{}:{}", a.uid, a.gid), format!("{}:{}", b.uid, b.gid));
    push("mtime", a.mtime.to_string(), b.mtime.to_string());
    push("size", a.size.to_string(), b.size.to_string());
    push("content sha256", a.hash.clone(), b.hash.clone());
    push("link target", a.link.clone(), b.link.clone());
    push("pax headers / xattrs", a.pax.clone(), b.pax.clone());
    push("position in the tar", a.position.to_string(), b.position.to_string());
    f
}

/// Compares two images.
pub fn diff(a: &Image, b: &Image) -> Result<Report> {
    let mut r = Report {
        digest_a: a.digest().to_string(),
        digest_b: b.digest().to_string(),
        ..Default::default()
    };
    if a.digest() == b.digest() {
        r.identical = true;
        return Ok(r);
    }
    let ca: serde_json::Value =
        serde_json::from_slice(a.config_bytes()).map_err(|e| Error::format("config A", e.to_string()))?;
    let cb: serde_json::Value =
        serde_json::from_slice(b.config_bytes()).map_err(|e| Error::format("config B", e.to_string()))?;
    json_fields("", &ca, &cb, &mut r.config);
    let (la, lb) = (a.layers(), b.layers());
    if la.len() != lb.len() {
        r.summary.push(format!("layer count: {} vs {}", la.len(), lb.len()));
    }
    let mut compression_only = 0;
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (la.get(i), lb.get(i));
        if let (Some(x), Some(y)) = (x, y)
            && x.descriptor.digest == y.descriptor.digest
        {
            continue;
        }
        // The diff_ids are computed from the decompressed bytes, never taken
        // from the configs (which an image could make claim anything).
        let empty = BTreeMap::new();
        let read_side = |l: Option<&Layer>| -> Result<(BTreeMap<String, Rec>, Option<Digest>)> {
            match l {
                Some(l) => read_layer(l, &empty).map(|((recs, _), id)| (recs, Some(id))),
                None => Ok((BTreeMap::new(), None)),
            }
        };
        let (ra, ida) = read_side(x)?;
        let (rb, idb) = read_side(y)?;
        let mut ld = LayerDiff {
            index: i + 1,
            digest_a: x
                .map(|l| l.descriptor.digest.to_string())
                .unwrap_or_else(|| "(none)".into()),
            digest_b: y
                .map(|l| l.descriptor.digest.to_string())
                .unwrap_or_else(|| "(none)".into()),
            diff_id_equal: ida.is_some() && ida == idb,
            files: Vec::new(),
        };
        if ld.diff_id_equal {
            compression_only += 1;
            r.layers.push(ld);
            continue;
        }
        let mut keep = BTreeMap::new();
        let paths: std::collections::BTreeSet<&String> = ra.keys().chain(rb.keys()).collect();
        for p in &paths {
            match (ra.get(*p), rb.get(*p)) {
                (Some(u), Some(v)) if u.hash != v.hash && (u.elf || u.text) => {
                    keep.insert((*p).clone(), ());
                }
                _ => {}
            }
        }
        // A second pass keeps the bytes of only the differing ELF and text
        // files: reading twice keeps memory bounded for large layers.
        let (ka, kb) = match (x, y) {
            (Some(x), Some(y)) if !keep.is_empty() => (read_layer(x, &keep)?.0.1, read_layer(y, &keep)?.0.1),
            _ => (BTreeMap::new(), BTreeMap::new()),
        };
        for p in paths {
            let fd = match (ra.get(p), rb.get(p)) {
                (Some(_), None) => FileDiff {
                    path: format!("/{p}"),
                    change: "removed".into(),
                    ..Default::default()
                },
                (None, Some(_)) => FileDiff {
                    path: format!("/{p}"),
                    change: "added".into(),
                    ..Default::default()
                },
                (Some(u), Some(v)) => {
                    let fields = compare_recs(u, v);
                    if fields.is_empty() {
                        continue;
                    }
                    let mut fd = FileDiff {
                        path: format!("/{p}"),
                        change: "changed".into(),
                        fields,
                        ..Default::default()
                    };
                    if let (Some(xa), Some(xb)) = (ka.get(p), kb.get(p)) {
                        if u.elf {
                            fd.sections = elf_sections_diff(xa, xb);
                        } else if u.text {
                            fd.text = Some(text_diff(xa, xb));
                        }
                    }
                    fd
                }
                (None, None) => continue,
            };
            ld.files.push(fd);
        }
        r.layers.push(ld);
    }
    // The summary, most telling first.
    if compression_only > 0 && r.layers.iter().all(|l| l.diff_id_equal) {
        r.summary.insert(
            0,
            "compression-only: the uncompressed layers are identical (same diff_ids), the compressed bytes differ"
                .into(),
        );
    }
    let config_fields: Vec<&str> = r
        .config
        .iter()
        .map(|f| f.field.as_str())
        .filter(|f| !f.starts_with("rootfs.diff_ids"))
        .collect();
    if !config_fields.is_empty() {
        let mut top: Vec<String> = config_fields
            .iter()
            .map(|f| f.split('.').take(2).collect::<Vec<_>>().join("."))
            .collect();
        top.dedup();
        r.summary.push(format!("config: {}", top.join(", ")));
    }
    for l in &r.layers {
        if !l.diff_id_equal {
            let files: Vec<String> = l
                .files
                .iter()
                .take(5)
                .map(|f| {
                    format!(
                        "{} ({})",
                        f.path,
                        f.fields.iter().map(|x| x.field.as_str()).collect::<Vec<_>>().join(", ")
                    )
                })
                .collect();
            r.summary.push(format!(
                "layer {}: {} file(s) differ: {}",
                l.index,
                l.files.len(),
                files.join("; ")
            ));
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_byte_runs() {
        assert_eq!(classify(b"2026-11-26 07:01:02"), Looks::DateTime);
        assert_eq!(classify(b"Thu Nov 26 07:01:02 UTC 2026"), Looks::DateTime);
        assert_eq!(classify(b"1764140462"), Looks::DateTime);
        // A nanosecond stamp inside text (kiln verify called it random before).
        assert_eq!(classify(b"built at 1795695602607414304"), Looks::DateTime);
        let now = 1_795_695_602u128;
        assert!(has_epoch_near("t=1795695602607", now), "ms");
        assert!(has_epoch_near("1795695602607414", now), "µs");
        assert!(!has_epoch_near("id 123456789012345678", now), "not near now");
        assert!(!has_epoch_near("v 12345", now), "too short");
        assert_eq!(classify(b"/home/alice/src/app"), Looks::AbsolutePath);
        assert_eq!(
            classify(&[0x91, 0x3a, 0xf0, 0x11, 0x7c, 0xe2, 0x05, 0xb8]),
            Looks::Random
        );
    }

    #[test]
    fn text_diff_shows_the_change() {
        let d = text_diff(b"a\nb\nc\n", b"a\nB\nc\n");
        assert!(d.contains("-b") && d.contains("+B"), "{d}");
    }

    #[test]
    fn finds_sections_of_a_real_binary() {
        let b = std::fs::read("/bin/ls").unwrap();
        let s = crate::elf::sections(&b);
        assert!(s.iter().any(|x| x.name == ".text"));
        let mut c = b.clone();
        let off = s.iter().find(|x| x.name == ".rodata").unwrap().offset;
        c[off as usize + 10] ^= 0xff;
        let d = elf_sections_diff(&b, &c);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].name, ".rodata");
    }
}
