//! The Debian packages of an image, from dpkg's database as the image's
//! final filesystem has it ([`View`], built by streaming the layers once):
//! `/var/lib/dpkg/status` (installed stanzas only) and distroless's
//! `/var/lib/dpkg/status.d/NAME` files, with each package's files from
//! `info/NAME[:ARCH].list` or `status.d/NAME.md5sums`. Which package owns a
//! path is answered through the image's own symlinks (`/lib` → `usr/lib`
//! in a merged-/usr Debian), so a library found by the loader maps back to
//! the package that shipped it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::scan::fs::View;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// The source package, when it differs (`Source:`, version stripped).
    pub source: Option<String>,
    /// Paths it installed, absolute, as dpkg recorded them.
    #[serde(skip)]
    pub files: Vec<String>,
}

/// The distribution, from os-release (`ID`, `VERSION_ID`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Distro {
    pub id: Option<String>,
    pub version_id: Option<String>,
}

impl Distro {
    /// From the image's os-release.
    pub fn of(view: &View) -> Distro {
        let text = view.text("etc/os-release").or_else(|| view.text("usr/lib/os-release"));
        let mut d = Distro::default();
        for line in text.unwrap_or("").lines() {
            let Some((k, v)) = line.split_once('=') else { continue };
            let v = v.trim().trim_matches('"').to_string();
            match k.trim() {
                "ID" => d.id = Some(v),
                "VERSION_ID" => d.version_id = Some(v),
                _ => {}
            }
        }
        d
    }
}

/// The most packages kiln lists from one image.
pub const MAX_PACKAGES: usize = 100_000;

/// The fields of one dpkg stanza kiln reads.
#[derive(Default)]
struct Stanza {
    package: Option<String>,
    version: Option<String>,
    architecture: Option<String>,
    source: Option<String>,
    status: Option<String>,
}

/// Installed packages from dpkg control stanzas (`Field: value`,
/// continuation lines start with whitespace, stanzas separated by blank
/// lines; field names case-insensitive). One stanza's few fields are held
/// at a time: memory follows the packages found, not the text.
fn parse_packages(text: &str, out: &mut Vec<DebPackage>) {
    let mut cur = Stanza::default();
    let flush = |cur: &mut Stanza, out: &mut Vec<DebPackage>| {
        let st = std::mem::take(cur);
        if out.len() < MAX_PACKAGES
            && let Some(p) = package_of(st)
        {
            out.push(p);
        }
    };
    for line in text.lines() {
        if line.trim().is_empty() {
            flush(&mut cur, out);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else { continue };
        let v = || Some(v.trim().to_string());
        match k.trim().to_ascii_lowercase().as_str() {
            "package" => cur.package = v(),
            "version" => cur.version = v(),
            "architecture" => cur.architecture = v(),
            "source" => cur.source = v(),
            "status" => cur.status = v(),
            _ => {}
        }
    }
    flush(&mut cur, out);
}

fn package_of(st: Stanza) -> Option<DebPackage> {
    // A status stanza says whether it is installed; status.d stanzas do not.
    if let Some(status) = &st.status
        && !status.ends_with(" installed")
    {
        return None;
    }
    let name = st.package?;
    let version = st.version?;
    let source = st
        .source
        .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
        .filter(|s| !s.is_empty() && *s != name);
    Some(DebPackage {
        name,
        version,
        architecture: st.architecture.unwrap_or_default(),
        source,
        files: Vec::new(),
    })
}

/// The installed packages, sorted by name and architecture.
pub fn packages(view: &View) -> Vec<DebPackage> {
    let mut pkgs: Vec<DebPackage> = Vec::new();
    if let Some(text) = view.text("var/lib/dpkg/status") {
        parse_packages(text, &mut pkgs);
    }
    let mut md5sums: HashMap<String, &str> = HashMap::new();
    for path in view.children("var/lib/dpkg/status.d") {
        let Some(text) = view.text(&path) else { continue };
        let file = path.rsplit('/').next().unwrap_or(&path).to_string();
        if let Some(name) = file.strip_suffix(".md5sums") {
            md5sums.insert(name.to_string(), text);
        } else {
            parse_packages(text, &mut pkgs);
        }
    }
    for p in &mut pkgs {
        let list = view
            .text(&format!("var/lib/dpkg/info/{}:{}.list", p.name, p.architecture))
            .or_else(|| view.text(&format!("var/lib/dpkg/info/{}.list", p.name)));
        if let Some(list) = list {
            p.files = list
                .lines()
                .filter(|l| l.starts_with('/') && l.len() > 1)
                .map(str::to_string)
                .collect();
        } else if let Some(sums) = md5sums.get(&p.name) {
            // "md5  path", the path relative to /.
            p.files = sums
                .lines()
                .filter_map(|l| {
                    l.split_once("  ")
                        .map(|(_, f)| format!("/{}", f.trim_start_matches('/')))
                })
                .collect();
        }
    }
    pkgs.sort_by(|a, b| (&a.name, &a.architecture).cmp(&(&b.name, &b.architecture)));
    pkgs.dedup_by(|a, b| a.name == b.name && a.architecture == b.architecture);
    pkgs
}

/// For each of `paths` (absolute, as the loader resolved them), the index
/// into `pkgs` of the package that installed it. dpkg's paths are resolved
/// through the image's symlinks first; only candidates with the same file
/// name are resolved, so this stays cheap on a large image.
pub fn owners(view: &View, pkgs: &[DebPackage], paths: &[String]) -> BTreeMap<String, usize> {
    let wanted: HashSet<&str> = paths.iter().map(|p| p.trim_start_matches('/')).collect();
    let names: HashSet<&str> = paths.iter().filter_map(|p| p.rsplit('/').next()).collect();
    let mut out = BTreeMap::new();
    for (i, p) in pkgs.iter().enumerate() {
        for f in &p.files {
            let Some(base) = f.rsplit('/').next() else { continue };
            if !names.contains(base) {
                continue;
            }
            if let Ok((resolved, _)) = view.resolve(f)
                && wanted.contains(resolved.as_str())
            {
                out.entry(format!("/{resolved}")).or_insert(i);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::read::Limits;
    use crate::layer::tar::{EntryHeader, EntryKind, TarWriter};

    /// (path, symlink target, file content); neither: a directory.
    type Entry<'a> = (&'a str, Option<&'a str>, Option<&'a [u8]>);

    fn layer(entries: &[Entry]) -> Vec<u8> {
        let mut t = TarWriter::new(Vec::new());
        for (path, link, data) in entries {
            let kind = match (link, data) {
                (Some(l), _) => EntryKind::Symlink { target: l.to_string() },
                (None, Some(d)) => EntryKind::File { size: d.len() as u64 },
                (None, None) => EntryKind::Dir,
            };
            t.header(&EntryHeader {
                path: path.to_string(),
                mode: 0o644,
                kind,
                uid: 0,
                gid: 0,
                mtime: 0,
                xattrs: Default::default(),
            })
            .unwrap();
            if let Some(d) = data {
                t.write_data(d).unwrap();
                t.pad(d.len() as u64).unwrap();
            }
        }
        t.finish().unwrap()
    }

    const STATUS: &str = "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl (3.0.15-1~deb12u1)\nVersion: 3.0.15-1~deb12u1\nDescription: SSL\n shared libraries\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: all\n\nPackage: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9+deb12u9\n";

    #[test]
    fn status_file_lists_and_merged_usr_ownership() {
        let tar = layer(&[
            ("lib", Some("usr/lib"), None),
            ("usr/lib/x86_64-linux-gnu/libssl.so.3", None, Some(b"elf")),
            ("usr/lib/x86_64-linux-gnu/libc.so.6", None, Some(b"elf")),
            ("var/lib/dpkg/status", None, Some(STATUS.as_bytes())),
            (
                "var/lib/dpkg/info/libssl3:amd64.list",
                None,
                Some(b"/.\n/usr\n/usr/lib/x86_64-linux-gnu/libssl.so.3\n"),
            ),
            (
                "var/lib/dpkg/info/libc6:amd64.list",
                None,
                Some(b"/lib/x86_64-linux-gnu/libc.so.6\n"),
            ),
            ("etc/os-release", None, Some(b"ID=debian\nVERSION_ID=\"12\"\n")),
        ]);
        let mut v = View::default();
        v.apply_layer(0, &mut tar.as_slice(), "t", &Limits::default()).unwrap();
        let p = packages(&v);
        let names: Vec<&str> = p.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["libc6", "libssl3"]);
        assert_eq!(p[1].source.as_deref(), Some("openssl"));
        assert_eq!(p[1].version, "3.0.15-1~deb12u1");
        let o = owners(
            &v,
            &p,
            &[
                "/usr/lib/x86_64-linux-gnu/libc.so.6".into(),
                "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
            ],
        );
        assert_eq!(o["/usr/lib/x86_64-linux-gnu/libc.so.6"], 0, "through the /lib symlink");
        assert_eq!(o["/usr/lib/x86_64-linux-gnu/libssl.so.3"], 1);
        let d = Distro::of(&v);
        assert_eq!((d.id.as_deref(), d.version_id.as_deref()), (Some("debian"), Some("12")));
    }

    #[test]
    fn many_small_records_keep_no_more_text_than_the_budget() {
        // 1,000 status.d files of 1 KiB each, with a 64 KiB text budget.
        let names: Vec<String> = (0..1000).map(|i| format!("var/lib/dpkg/status.d/p{i:04}")).collect();
        let bodies: Vec<String> = (0..1000)
            .map(|i| format!("Package: p{i:04}\nVersion: 1\nDescription: {}\n", "x".repeat(1000)))
            .collect();
        let body = &bodies[0];
        let entries: Vec<Entry> = names
            .iter()
            .zip(&bodies)
            .map(|(n, b)| (n.as_str(), None, Some(b.as_bytes())))
            .collect();
        let tar = layer(&entries);
        let limits = Limits {
            max_text: 64 << 10,
            ..Limits::default()
        };
        let mut v = View::default();
        v.apply_layer(0, &mut tar.as_slice(), "t", &limits).unwrap();
        let kept = names.iter().filter(|n| v.text(n).is_some()).count();
        assert!(kept > 0 && kept * body.len() <= 64 << 10, "{kept}");
        assert_eq!(packages(&v).len(), kept);
    }

    #[test]
    fn distroless_status_d_with_md5sums() {
        let tar = layer(&[
            (
                "var/lib/dpkg/status.d/libssl3",
                None,
                Some(b"Package: libssl3\nVersion: 3.0.15\nArchitecture: arm64\n"),
            ),
            (
                "var/lib/dpkg/status.d/libssl3.md5sums",
                None,
                Some(b"0123  usr/lib/aarch64-linux-gnu/libssl.so.3\n"),
            ),
            ("usr/lib/aarch64-linux-gnu/libssl.so.3", None, Some(b"elf")),
        ]);
        let mut v = View::default();
        v.apply_layer(0, &mut tar.as_slice(), "t", &Limits::default()).unwrap();
        let p = packages(&v);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].files, ["/usr/lib/aarch64-linux-gnu/libssl.so.3"]);
        let o = owners(&v, &p, &["/usr/lib/aarch64-linux-gnu/libssl.so.3".into()]);
        assert_eq!(o.len(), 1);
    }

    #[test]
    fn garbage_is_no_packages_not_a_panic() {
        for junk in [
            "",
            ":::\n\n",
            "Package: x\n",
            "\u{0}\u{1}",
            "Version: 1\n",
            "Package:\nVersion:\n",
        ] {
            let mut out = Vec::new();
            parse_packages(junk, &mut out);
            assert!(out.len() <= 1, "{junk:?}");
        }
        // Many stanzas: capped.
        let many = "Package: p\nVersion: 1\n\n".repeat(MAX_PACKAGES + 10);
        let mut out = Vec::new();
        parse_packages(&many, &mut out);
        assert_eq!(out.len(), MAX_PACKAGES);
    }
}
