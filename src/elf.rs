//! A small, defensive ELF reader, shared by scan and diff. For scan, what
//! decides whether a binary starts:
//! class and machine, PT_INTERP, and from PT_DYNAMIC the needed libraries,
//! RPATH/RUNPATH, SONAME, and the symbol versions needed and defined
//! (.gnu.version_r / .gnu.version_d via DT_VERNEED / DT_VERDEF, so it works
//! on section-stripped binaries). It parses a prefix of the file and asks
//! for more bytes when a table lies further in, so callers can stream a
//! file without holding all of it. For diff, the section table
//! ([`sections`]). Every offset, size and count is checked: hostile input
//! gives an error (or no sections), never a panic, an overflow or an
//! unbounded allocation.
//!
//! One file on purpose (~450 lines of code, the rest tests): one binary
//! format, one set of bounds checks.

/// What parsing a prefix needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfError {
    /// Not an ELF file (no magic).
    NotElf,
    /// The structure is broken; the text says where.
    Invalid(String),
    /// Call again with at least this many bytes of the file.
    NeedMore(u64),
}

/// Required version `name` from library `file` (.gnu.version_r).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionNeed {
    pub file: String,
    pub versions: Vec<String>,
}

/// What kiln keeps of an ELF file.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ElfInfo {
    /// 32 or 64.
    pub class: u8,
    pub big_endian: bool,
    /// e_machine (62 = x86-64, 183 = AArch64).
    pub machine: u16,
    /// ET_EXEC 2, ET_DYN 3.
    pub kind: u16,
    pub interp: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    pub soname: Option<String>,
    pub version_needs: Vec<VersionNeed>,
    pub version_defs: Vec<String>,
    /// Has a PT_DYNAMIC segment.
    pub dynamic: bool,
}

const MAX_PHNUM: u64 = 4096;
const MAX_DYN: u64 = 65536;
const MAX_STR: usize = 4096;
const MAX_VER: usize = 65536;

struct Rd<'a> {
    /// The file's first bytes.
    b: &'a [u8],
    /// Another stretch of the file, at an offset (the dynamic segment of a
    /// large library that lies far beyond the prefix).
    win: Option<(u64, &'a [u8])>,
    be: bool,
}

impl<'a> Rd<'a> {
    /// The bytes at `off..off+len`, from the prefix or the window.
    fn slice(&self, off: u64, len: u64) -> Result<&'a [u8], ElfError> {
        let end = off
            .checked_add(len)
            .ok_or_else(|| ElfError::Invalid("offset overflow".into()))?;
        if end <= self.b.len() as u64 {
            return Ok(&self.b[off as usize..end as usize]);
        }
        if let Some((wo, wb)) = self.win
            && off >= wo
            && end <= wo + wb.len() as u64
        {
            return Ok(&wb[(off - wo) as usize..(end - wo) as usize]);
        }
        Err(ElfError::NeedMore(end))
    }
    fn need(&self, off: u64, len: u64) -> Result<(), ElfError> {
        self.slice(off, len).map(|_| ())
    }
    fn u16(&self, off: u64) -> Result<u16, ElfError> {
        let a: [u8; 2] = self.slice(off, 2)?.try_into().expect("2 bytes");
        Ok(if self.be {
            u16::from_be_bytes(a)
        } else {
            u16::from_le_bytes(a)
        })
    }
    fn u32(&self, off: u64) -> Result<u32, ElfError> {
        let a: [u8; 4] = self.slice(off, 4)?.try_into().expect("4 bytes");
        Ok(if self.be {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    }
    fn u64(&self, off: u64) -> Result<u64, ElfError> {
        let a: [u8; 8] = self.slice(off, 8)?.try_into().expect("8 bytes");
        Ok(if self.be {
            u64::from_be_bytes(a)
        } else {
            u64::from_le_bytes(a)
        })
    }
    fn word(&self, off: u64, is64: bool) -> Result<u64, ElfError> {
        if is64 {
            self.u64(off)
        } else {
            self.u32(off).map(u64::from)
        }
    }
    /// A NUL-terminated string at `off`, at most MAX_STR bytes, within `limit`.
    fn cstr(&self, off: u64, limit: u64) -> Result<String, ElfError> {
        if off >= limit {
            return Err(ElfError::Invalid(format!("string offset {off} outside its table")));
        }
        let max = (limit - off).min(MAX_STR as u64);
        // The longest stretch available at `off`, up to `max`.
        let region: &[u8] = if off < self.b.len() as u64 {
            &self.b[off as usize..]
        } else if let Some((wo, wb)) = self.win.filter(|(wo, wb)| off >= *wo && off < wo + wb.len() as u64) {
            &wb[(off - wo) as usize..]
        } else {
            return Err(ElfError::NeedMore(off + max.min(64)));
        };
        let avail = (region.len() as u64).min(max) as usize;
        match region[..avail].iter().position(|&c| c == 0) {
            Some(n) => Ok(String::from_utf8_lossy(&region[..n]).into_owned()),
            None if (avail as u64) < max => Err(ElfError::NeedMore(off + max)),
            None => Err(ElfError::Invalid(format!("string at {off} has no end"))),
        }
    }
}

/// A section: its name and where its bytes lie in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub offset: u64,
    /// Bytes in the file (0 for SHT_NOBITS, e.g. .bss).
    pub size: u64,
}

/// The section table of a whole ELF file (either byte order, 32 or 64
/// bit); empty when there is none or it is broken.
pub fn sections(b: &[u8]) -> Vec<Section> {
    sections_checked(b).unwrap_or_default()
}

fn sections_checked(b: &[u8]) -> Result<Vec<Section>, ElfError> {
    if !is_elf(b) || b.len() < 64 {
        return Err(ElfError::NotElf);
    }
    let is64 = b[4] == 2;
    let rd = Rd {
        b,
        win: None,
        be: b[5] == 2,
    };
    let (shoff, shentsize, shnum, shstrndx) = if is64 {
        (rd.u64(40)?, rd.u16(58)? as u64, rd.u16(60)? as u64, rd.u16(62)? as u64)
    } else {
        (
            rd.u32(32)? as u64,
            rd.u16(46)? as u64,
            rd.u16(48)? as u64,
            rd.u16(50)? as u64,
        )
    };
    let min_entsize = if is64 { 64 } else { 40 };
    if shnum == 0 || shnum > MAX_PHNUM || shentsize < min_entsize || shstrndx >= shnum {
        return Ok(Vec::new());
    }
    let header = |i: u64| -> Result<(u64, u32, u64, u64), ElfError> {
        let o = i
            .checked_mul(shentsize)
            .and_then(|x| x.checked_add(shoff))
            .ok_or_else(|| ElfError::Invalid("section header offset overflow".into()))?;
        let name = rd.u32(o)? as u64;
        let kind = rd.u32(o + 4)?;
        let (off, size) = if is64 {
            (rd.u64(o + 24)?, rd.u64(o + 32)?)
        } else {
            (rd.u32(o + 16)? as u64, rd.u32(o + 20)? as u64)
        };
        Ok((name, kind, off, size))
    };
    let (_, _, str_off, str_size) = header(shstrndx)?;
    let str_end = str_off
        .checked_add(str_size)
        .filter(|e| *e <= b.len() as u64)
        .ok_or_else(|| ElfError::Invalid("section name table outside the file".into()))?;
    let mut out = Vec::new();
    for i in 0..shnum {
        let (name_off, kind, off, size) = header(i)?;
        let name = match str_off.checked_add(name_off) {
            Some(at) if at < str_end => rd.cstr(at, str_end).unwrap_or_default(),
            _ => String::new(),
        };
        // SHT_NOBITS (8) occupies no file bytes.
        let size = if kind == 8 { 0 } else { size };
        let in_file = off.checked_add(size).is_some_and(|e| e <= b.len() as u64);
        out.push(Section {
            name,
            offset: off,
            size: if in_file { size } else { 0 },
        });
    }
    Ok(out)
}

/// Whether `b` starts with the ELF magic.
pub fn is_elf(b: &[u8]) -> bool {
    b.len() >= 4 && &b[..4] == b"\x7fELF"
}

/// Parses the ELF facts from a prefix of a file of `file_size` bytes.
pub fn parse(b: &[u8], file_size: u64) -> Result<ElfInfo, ElfError> {
    parse_windowed(b, None, file_size)
}

/// The file range of PT_DYNAMIC, read from the headers in `b`.
pub fn dynamic_range(b: &[u8], file_size: u64) -> Option<(u64, u64)> {
    // Parsing with an empty dynamic segment stops right after the program headers.
    match parse_headers(b, file_size) {
        Ok((_, dynamic, _, _)) => dynamic,
        Err(_) => None,
    }
}

type Headers = (ElfInfo, Option<(u64, u64)>, Vec<(u64, u64, u64, u64)>, bool);

fn parse_headers(b: &[u8], file_size: u64) -> Result<Headers, ElfError> {
    if b.len() < 4 {
        return if file_size >= 4 {
            Err(ElfError::NeedMore(64))
        } else {
            Err(ElfError::NotElf)
        };
    }
    if !is_elf(b) {
        return Err(ElfError::NotElf);
    }
    if b.len() < 64 && file_size >= 64 {
        return Err(ElfError::NeedMore(64));
    }
    if b.len() < 52 {
        return Err(ElfError::Invalid("truncated ELF header".into()));
    }
    let is64 = match b[4] {
        1 => false,
        2 => true,
        c => return Err(ElfError::Invalid(format!("unknown ELF class {c}"))),
    };
    let be = match b[5] {
        1 => false,
        2 => true,
        d => return Err(ElfError::Invalid(format!("unknown data encoding {d}"))),
    };
    let r = Rd { b, win: None, be };
    let kind = r.u16(16)?;
    let machine = r.u16(18)?;
    let (phoff, phentsize, phnum) = if is64 {
        (r.u64(32)?, r.u16(54)? as u64, r.u16(56)? as u64)
    } else {
        (r.u32(28)? as u64, r.u16(42)? as u64, r.u16(44)? as u64)
    };
    let mut info = ElfInfo {
        class: if is64 { 64 } else { 32 },
        big_endian: be,
        machine,
        kind,
        ..Default::default()
    };
    if phnum == 0 {
        return Ok((info, None, Vec::new(), is64));
    }
    let min_ph = if is64 { 56 } else { 32 };
    if phnum > MAX_PHNUM || phentsize < min_ph {
        return Err(ElfError::Invalid(format!(
            "{phnum} program headers of {phentsize} bytes"
        )));
    }
    if phoff.saturating_add(phnum * phentsize) > file_size {
        return Err(ElfError::Invalid("program headers beyond the end of the file".into()));
    }
    r.need(phoff, phnum * phentsize)?;
    // (vaddr, memsz, offset, filesz) of PT_LOAD segments, to map addresses to offsets.
    let mut loads: Vec<(u64, u64, u64, u64)> = Vec::new();
    let mut dynamic: Option<(u64, u64)> = None;
    for i in 0..phnum {
        let p = phoff + i * phentsize;
        let ptype = r.u32(p)?;
        let (offset, vaddr, filesz, memsz) = if is64 {
            (r.u64(p + 8)?, r.u64(p + 16)?, r.u64(p + 32)?, r.u64(p + 40)?)
        } else {
            (
                r.u32(p + 4)? as u64,
                r.u32(p + 8)? as u64,
                r.u32(p + 16)? as u64,
                r.u32(p + 20)? as u64,
            )
        };
        match ptype {
            1 => loads.push((vaddr, memsz, offset, filesz)),
            2 => dynamic = Some((offset, filesz)),
            3 => {
                if filesz > MAX_STR as u64 || offset.saturating_add(filesz) > file_size {
                    return Err(ElfError::Invalid("PT_INTERP out of bounds".into()));
                }
                let s = r.slice(offset, filesz)?;
                let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
                info.interp = Some(String::from_utf8_lossy(&s[..end]).into_owned());
            }
            _ => {}
        }
    }
    Ok((info, dynamic, loads, is64))
}

/// Parses with the prefix `b` and, optionally, a window of the file at an offset.
pub fn parse_windowed(b: &[u8], win: Option<(u64, &[u8])>, file_size: u64) -> Result<ElfInfo, ElfError> {
    let (mut info, dynamic, loads, is64) = parse_headers(b, file_size)?;
    let r = Rd {
        b,
        win,
        be: info.big_endian,
    };
    let Some((dyn_off, dyn_size)) = dynamic else {
        return Ok(info);
    };
    info.dynamic = true;
    let entsize = if is64 { 16 } else { 8 };
    let count = (dyn_size / entsize).min(MAX_DYN);
    if dyn_off.saturating_add(count * entsize) > file_size {
        return Err(ElfError::Invalid("PT_DYNAMIC beyond the end of the file".into()));
    }
    r.need(dyn_off, count * entsize)?;
    let mut entries: Vec<(u64, u64)> = Vec::new();
    for i in 0..count {
        let e = dyn_off + i * entsize;
        let tag = r.word(e, is64)?;
        let val = r.word(e + entsize / 2, is64)?;
        if tag == 0 {
            break;
        }
        entries.push((tag, val));
    }
    let get = |t: u64| entries.iter().find(|(k, _)| *k == t).map(|(_, v)| *v);
    let to_off = |addr: u64| -> Result<u64, ElfError> {
        loads
            .iter()
            .find(|(va, _, _, fsz)| addr >= *va && addr < va.saturating_add(*fsz))
            .map(|(va, _, off, _)| addr - va + off)
            .ok_or_else(|| ElfError::Invalid(format!("address {addr:#x} is in no loaded segment")))
    };
    let (Some(strtab), Some(strsz)) = (get(5), get(10)) else {
        return Ok(info);
    };
    let str_off = to_off(strtab)?;
    let str_end = str_off.saturating_add(strsz).min(file_size);
    let s = |o: u64| r.cstr(str_off.saturating_add(o), str_end);
    for (tag, val) in &entries {
        match tag {
            1 => info.needed.push(s(*val)?),
            14 => info.soname = Some(s(*val)?),
            15 => info
                .rpath
                .extend(s(*val)?.split(':').filter(|p| !p.is_empty()).map(str::to_string)),
            29 => info
                .runpath
                .extend(s(*val)?.split(':').filter(|p| !p.is_empty()).map(str::to_string)),
            _ => {}
        }
        if info.needed.len() > MAX_VER {
            return Err(ElfError::Invalid("too many DT_NEEDED entries".into()));
        }
    }
    // DT_VERNEED 0x6ffffffe, DT_VERNEEDNUM 0x6fffffff
    if let (Some(vn), Some(num)) = (get(0x6fff_fffe), get(0x6fff_ffff)) {
        let mut off = to_off(vn)?;
        for _ in 0..num.min(MAX_VER as u64) {
            let cnt = r.u16(off + 2)? as u64;
            let file = s(r.u32(off + 4)? as u64)?;
            let aux = r.u32(off + 8)? as u64;
            let next = r.u32(off + 12)? as u64;
            let mut versions = Vec::new();
            let mut a = off
                .checked_add(aux)
                .ok_or_else(|| ElfError::Invalid("verneed overflow".into()))?;
            for _ in 0..cnt.min(MAX_VER as u64) {
                versions.push(s(r.u32(a + 8)? as u64)?);
                let an = r.u32(a + 12)? as u64;
                if an == 0 {
                    break;
                }
                a = a
                    .checked_add(an)
                    .ok_or_else(|| ElfError::Invalid("vernaux overflow".into()))?;
            }
            info.version_needs.push(VersionNeed { file, versions });
            if next == 0 {
                break;
            }
            off = off
                .checked_add(next)
                .ok_or_else(|| ElfError::Invalid("verneed overflow".into()))?;
        }
    }
    // DT_VERDEF 0x6ffffffc, DT_VERDEFNUM 0x6ffffffd
    if let (Some(vd), Some(num)) = (get(0x6fff_fffc), get(0x6fff_fffd)) {
        let mut off = to_off(vd)?;
        for _ in 0..num.min(MAX_VER as u64) {
            let flags = r.u16(off + 2)?;
            let cnt = r.u16(off + 6)?;
            let aux = r.u32(off + 12)? as u64;
            let next = r.u32(off + 16)? as u64;
            // The first aux names the version; flag 1 (VER_FLG_BASE) is the file itself.
            if cnt > 0 && flags & 1 == 0 {
                let a = off
                    .checked_add(aux)
                    .ok_or_else(|| ElfError::Invalid("verdef overflow".into()))?;
                info.version_defs.push(s(r.u32(a)? as u64)?);
            }
            if next == 0 {
                break;
            }
            off = off
                .checked_add(next)
                .ok_or_else(|| ElfError::Invalid("verdef overflow".into()))?;
        }
    }
    Ok(info)
}

/// Compares version strings like GLIBC_2.34 numerically (2.9 < 2.34).
pub fn version_key(v: &str) -> (String, Vec<u64>) {
    let (prefix, nums) = match v.find(|c: char| c.is_ascii_digit()) {
        Some(i) => (&v[..i], &v[i..]),
        None => (v, ""),
    };
    (
        prefix.to_string(),
        nums.split(['.', '_']).filter_map(|n| n.parse().ok()).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_file(path: &str) -> ElfInfo {
        let b = std::fs::read(path).unwrap();
        parse(&b, b.len() as u64).unwrap()
    }

    #[test]
    fn reads_a_dynamic_executable_and_libc() {
        let ls = parse_file("/bin/ls");
        assert_eq!((ls.class, ls.machine), (64, 62));
        assert_eq!(ls.interp.as_deref(), Some("/lib64/ld-linux-x86-64.so.2"));
        assert!(ls.needed.contains(&"libc.so.6".to_string()), "{:?}", ls.needed);
        let glibc = ls.version_needs.iter().find(|v| v.file == "libc.so.6").unwrap();
        assert!(glibc.versions.iter().any(|v| v.starts_with("GLIBC_2.")));
        let libc = parse_file("/lib/x86_64-linux-gnu/libc.so.6");
        assert_eq!(libc.soname.as_deref(), Some("libc.so.6"));
        assert!(
            libc.version_defs.contains(&"GLIBC_2.34".to_string()),
            "{:?}",
            libc.version_defs
        );
    }

    #[test]
    fn streaming_prefixes_ask_for_more() {
        let b = std::fs::read("/bin/ls").unwrap();
        let mut have = 4u64;
        let mut rounds = 0;
        let info = loop {
            rounds += 1;
            match parse(&b[..have as usize], b.len() as u64) {
                Ok(i) => break i,
                Err(ElfError::NeedMore(n)) => {
                    assert!(n > have && n <= b.len() as u64);
                    have = n;
                }
                Err(e) => panic!("{e:?}"),
            }
        };
        assert!(rounds > 1);
        assert_eq!(info, parse(&b, b.len() as u64).unwrap());
    }

    #[test]
    fn hostile_headers_are_errors_not_panics() {
        let mut b = std::fs::read("/bin/ls").unwrap();
        let n = b.len() as u64;
        assert_eq!(
            parse(b"\x7fELF", 4),
            Err(ElfError::Invalid("truncated ELF header".into()))
        );
        assert_eq!(parse(b"#!/bin/sh\n", 10), Err(ElfError::NotElf));
        b[56] = 0xff; // phnum
        b[57] = 0xff;
        assert!(matches!(parse(&b, n), Err(ElfError::Invalid(_))));
    }

    #[test]
    fn version_ordering_is_numeric() {
        assert!(version_key("GLIBC_2.9") < version_key("GLIBC_2.34"));
        assert!(version_key("GLIBC_2.34") < version_key("GLIBC_2.34.1"));
        assert_eq!(version_key("OPENSSL_3.0.0").0, "OPENSSL_");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_mutated_elves(flips in proptest::collection::vec((0usize..8192, proptest::num::u8::ANY), 1..40), cut in 0usize..20000) {
            let mut b = std::fs::read("/bin/true").unwrap();
            for (i, v) in flips {
                if i < b.len() { b[i] = v; }
            }
            let cut = cut.min(b.len());
            let n = b.len() as u64;
            let _ = parse(&b[..cut], n);
            let _ = parse(&b, n);
        }

        #[test]
        fn never_panics_on_random_bytes(mut b in proptest::collection::vec(proptest::num::u8::ANY, 0..4096)) {
            if b.len() >= 4 { b[..4].copy_from_slice(b"\x7fELF"); }
            let n = b.len() as u64;
            let _ = parse(&b, n);
            let _ = sections(&b);
        }

        #[test]
        fn section_tables_of_mutated_elves_stay_inside_the_file(flips in proptest::collection::vec((0usize..8192, proptest::num::u8::ANY), 1..40)) {
            let mut b = std::fs::read("/bin/true").unwrap();
            let len = b.len();
            // Mutate the ELF header and the section header table.
            let shoff = u64::from_le_bytes(b[40..48].try_into().unwrap()) as usize;
            for (i, v) in flips {
                let at = if i % 2 == 0 { i % 64 } else { shoff + i % (len - shoff).max(1) };
                if at < len { b[at] = v; }
            }
            for s in sections(&b) {
                proptest::prop_assert!(s.offset.checked_add(s.size).is_some_and(|e| e <= b.len() as u64) || s.size == 0);
            }
        }
    }
}
