//! `kiln scan`: will this image start? From a streamed view of the final
//! filesystem ([`fs::View`]) it checks the entrypoint and everything it
//! loads the way the dynamic loader would (interpreter, DT_NEEDED through
//! RPATH/LD_LIBRARY_PATH/RUNPATH/ld.so.conf/default dirs, symbol versions),
//! static binaries that need NSS, `#!` interpreters, the user, and the CA
//! bundle. Every finding says what is missing and a real next step.
//!
//! One file on purpose (~560 lines): the loader-faithful search order and the
//! checks that use it are one algorithm; the filesystem view is in `fs`, the
//! ELF reader in `crate::elf`.

pub mod fs;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::Serialize;

use crate::Result;
use crate::elf::{self, ElfInfo};
use crate::image::Image;
use fs::{FsNode, View};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The file concerned (absolute path in the image).
    pub file: String,
    /// What is wrong.
    pub message: String,
    /// A real next step.
    pub fix: String,
}

/// How one ELF object's needs were resolved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Resolution {
    pub interp: Option<String>,
    /// DT_NEEDED name → the path it resolved to (symlinks followed), or None.
    pub needed: BTreeMap<String, Option<String>>,
}

/// The scan's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub digest: String,
    pub platform: String,
    pub entrypoint: Vec<String>,
    pub files: usize,
    pub findings: Vec<Finding>,
    /// Every ELF object checked, by absolute path.
    pub objects: BTreeMap<String, Resolution>,
}

impl Report {
    /// Whether any finding is an error.
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }
}

/// What to check.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Every ELF in the image, not only the entrypoint's closure.
    pub all: bool,
}

fn machine_for(arch: &str) -> Option<(u8, u16)> {
    Some(match arch {
        "amd64" => (64, 62),
        "arm64" => (64, 183),
        "386" => (32, 3),
        "arm" => (32, 40),
        "ppc64le" => (64, 21),
        "s390x" => (64, 22),
        "riscv64" => (64, 243),
        _ => return None,
    })
}

fn default_dirs(arch: &str) -> Vec<String> {
    let triple = match arch {
        "amd64" => "x86_64-linux-gnu",
        "arm64" => "aarch64-linux-gnu",
        "386" => "i386-linux-gnu",
        "arm" => "arm-linux-gnueabihf",
        "ppc64le" => "powerpc64le-linux-gnu",
        "s390x" => "s390x-linux-gnu",
        "riscv64" => "riscv64-linux-gnu",
        _ => "",
    };
    let mut d = vec![format!("/lib/{triple}"), format!("/usr/lib/{triple}")];
    if matches!(arch, "amd64" | "arm64" | "ppc64le" | "s390x" | "riscv64") {
        d.extend(["/lib64".to_string(), "/usr/lib64".to_string()]);
    }
    d.extend(["/lib".to_string(), "/usr/lib".to_string()]);
    d
}

/// /etc/ld.so.conf and its includes, read from the image.
fn ld_so_conf(view: &View) -> Vec<String> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from(["etc/ld.so.conf".to_string()]);
    while let Some(f) = queue.pop_front() {
        if !seen.insert(f.clone()) || seen.len() > 256 {
            continue;
        }
        let Some(text) = view.text(&f) else { continue };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if let Some(pattern) = line.strip_prefix("include").map(str::trim) {
                // Only `dir/*.conf`-style globs are used in practice.
                let pattern = fs::normalize(pattern);
                let (dir, glob) = pattern.rsplit_once('/').unwrap_or(("", &pattern));
                let suffix = glob.strip_prefix('*').unwrap_or(glob);
                let mut matches: Vec<String> = view
                    .children(dir)
                    .into_iter()
                    .filter(|c| c.ends_with(suffix) || glob == "*")
                    .collect();
                matches.sort();
                queue.extend(matches);
            } else {
                for d in line.split([':', ',', ' ', '\t']).filter(|d| d.starts_with('/')) {
                    out.push(d.to_string());
                }
            }
        }
    }
    out
}

fn expand(dir: &str, origin: &str, class: u8, arch: &str) -> String {
    let lib = if class == 64 { "lib64" } else { "lib" };
    let platform = match arch {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i686",
        other => other,
    };
    dir.replace("${ORIGIN}", origin)
        .replace("$ORIGIN", origin)
        .replace("${LIB}", lib)
        .replace("$LIB", lib)
        .replace("${PLATFORM}", platform)
        .replace("$PLATFORM", platform)
}

struct Ctx<'a> {
    view: &'a View,
    arch: String,
    want: Option<(u8, u16)>,
    env_paths: Vec<String>,
    conf: Vec<String>,
    defaults: Vec<String>,
    findings: Vec<Finding>,
    objects: BTreeMap<String, Resolution>,
    scratch_like: bool,
    tls: bool,
    /// Checking files only --all reaches (nothing the entrypoint loads).
    extra: bool,
}

impl Ctx<'_> {
    fn add(&mut self, severity: Severity, file: &str, message: String, fix: &str) {
        let f = Finding {
            severity,
            file: format!("/{}", file.trim_start_matches('/')),
            message,
            fix: fix.to_string(),
        };
        if !self.findings.contains(&f) {
            self.findings.push(f);
        }
    }

    /// The ELF facts at a path (following symlinks), if it is an ELF.
    fn elf_at(&self, path: &str) -> Option<(String, std::sync::Arc<ElfInfo>)> {
        match self.view.resolve(path) {
            Ok((real, FsNode::File { facts, .. })) => facts.elf.clone().map(|e| (real, e)),
            _ => None,
        }
    }

    /// Finds a library the way ld.so does for `obj` (loaded from `obj_path`).
    fn find_library(&self, obj_path: &str, obj: &ElfInfo, exe_rpath: &[String], name: &str) -> Option<String> {
        let origin = format!("/{}", obj_path.rsplit_once('/').map(|(d, _)| d).unwrap_or(""));
        let candidates: Vec<String> = if name.contains('/') {
            vec![name.to_string()]
        } else {
            let mut dirs: Vec<String> = Vec::new();
            if obj.runpath.is_empty() {
                dirs.extend(obj.rpath.iter().map(|d| expand(d, &origin, obj.class, &self.arch)));
                dirs.extend(exe_rpath.iter().cloned());
            }
            dirs.extend(self.env_paths.iter().cloned());
            dirs.extend(obj.runpath.iter().map(|d| expand(d, &origin, obj.class, &self.arch)));
            dirs.extend(self.conf.iter().cloned());
            dirs.extend(self.defaults.iter().cloned());
            dirs.iter()
                .map(|d| format!("{}/{name}", d.trim_end_matches('/')))
                .collect()
        };
        for c in candidates {
            if let Some((real, lib)) = self.elf_at(&c) {
                // Wrong-class or wrong-machine candidates are skipped, as ld.so does.
                if lib.class == obj.class && lib.machine == obj.machine {
                    return Some(real);
                }
            }
        }
        None
    }

    /// Checks one object and queues what it loads.
    fn check_object(
        &mut self,
        path: &str,
        info: &ElfInfo,
        exe_rpath: &[String],
        queue: &mut VecDeque<(String, Vec<String>)>,
    ) {
        if self.objects.contains_key(&format!("/{path}")) {
            return;
        }
        let mut res = Resolution::default();
        if let Some(want) = self.want
            && (info.class, info.machine) != want
        {
            // Found by --all, loaded by nothing that starts: a cross
            // toolchain's files in a builder, say. Worth a word, not a failure.
            if self.extra {
                self.add(
                    Severity::Info,
                    path,
                    format!(
                        "is a {}-bit ELF for machine {} in a {} image; nothing the entrypoint loads uses it",
                        info.class, info.machine, self.arch
                    ),
                    "none needed if it is a cross toolchain's file; else remove it",
                );
                return;
            }
            self.add(
                Severity::Error,
                path,
                format!(
                    "is a {}-bit ELF for machine {} but the image is for {}",
                    info.class, info.machine, self.arch
                ),
                "build for the image's platform (--target / --platform)",
            );
        }
        if let Some(interp) = &info.interp {
            res.interp = Some(interp.clone());
            match self.elf_at(interp) {
                Some((real, i)) => {
                    if !self.objects.contains_key(&format!("/{real}")) {
                        queue.push_back((real, Vec::new()));
                    }
                    let _ = i;
                }
                None => {
                    let fix = if self.scratch_like {
                        "the base is scratch but the binary is dynamically linked: use recipe distroless-cc, or build static (-C target-feature=+crt-static)"
                    } else {
                        "use a base that has the C library this binary was linked against, or build static"
                    };
                    self.add(
                        Severity::Error,
                        path,
                        format!("its interpreter {interp} is not in the image"),
                        fix,
                    );
                }
            }
        }
        let mut resolved_libs: BTreeMap<String, std::sync::Arc<ElfInfo>> = BTreeMap::new();
        for name in &info.needed {
            match self.find_library(path, info, exe_rpath, name) {
                Some(real) => {
                    if let Some((_, lib)) = self.elf_at(&real) {
                        resolved_libs.insert(name.clone(), lib);
                    }
                    res.needed.insert(name.clone(), Some(format!("/{real}")));
                    queue.push_back((real, exe_rpath.to_vec()));
                }
                None => {
                    res.needed.insert(name.clone(), None);
                    let fix = if self.scratch_like {
                        "the base is scratch but the binary is dynamically linked: use recipe distroless-cc, or build static"
                    } else if name.starts_with("libssl") || name.starts_with("libcrypto") {
                        "add OpenSSL to the image (a base with libssl3, e.g. recipe distroless-cc), or use rustls / vendored OpenSSL"
                    } else {
                        "add the library to the image (a base or [image] files), or link it statically"
                    };
                    self.add(
                        Severity::Error,
                        path,
                        format!("needs {name}, which is not in the image's library path"),
                        fix,
                    );
                }
            }
            if name.starts_with("libssl") {
                self.tls = true;
            }
        }
        for need in &info.version_needs {
            let Some(lib) = resolved_libs.get(&need.file) else {
                continue;
            };
            let missing: Vec<&String> = need.versions.iter().filter(|v| !lib.version_defs.contains(v)).collect();
            if missing.is_empty() {
                continue;
            }
            let family = elf::version_key(missing[0]).0;
            let newest = lib
                .version_defs
                .iter()
                .filter(|v| elf::version_key(v).0 == family)
                .max_by_key(|v| elf::version_key(v))
                .cloned()
                .unwrap_or_else(|| "none of them".into());
            let mut missing_sorted: Vec<&String> = missing.clone();
            missing_sorted.sort_by_key(|v| elf::version_key(v));
            let top = missing_sorted.last().expect("non-empty");
            self.add(
                Severity::Error,
                path,
                format!(
                    "needs {} from {}; the image's {} provides up to {newest}",
                    missing_sorted.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    need.file,
                    need.file
                ),
                &format!(
                    "build on an older builder (whose {} is at most {newest}) or use a newer base that provides {top}",
                    need.file
                ),
            );
        }
        self.objects.insert(format!("/{path}"), res);
    }
}

/// Scans an image.
pub fn scan(image: &Image, opts: Options) -> Result<Report> {
    scan_keeping_view(image, opts).map(|(r, _)| r)
}

/// Scans an image and hands back the filesystem view it built (the SBOM
/// reads the package database from the same single pass over the layers).
pub fn scan_keeping_view(image: &Image, opts: Options) -> Result<(Report, View)> {
    let view = View::build(image, &fs::Limits::default())?;
    Ok((scan_view(image, &view, opts), view))
}

/// Scans an already built view.
pub fn scan_view(image: &Image, view: &View, opts: Options) -> Report {
    let config = image.config();
    let rc = config.config.clone().unwrap_or_default();
    let arch = config.architecture.clone();
    let env: BTreeMap<String, String> = rc
        .env
        .iter()
        .filter_map(|e| e.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut ctx = Ctx {
        view,
        arch: arch.clone(),
        want: machine_for(&arch),
        env_paths: env
            .get("LD_LIBRARY_PATH")
            .map(|p| p.split(':').filter(|d| !d.is_empty()).map(str::to_string).collect())
            .unwrap_or_default(),
        conf: ld_so_conf(view),
        defaults: default_dirs(&arch),
        findings: Vec::new(),
        objects: BTreeMap::new(),
        scratch_like: view.lstat("lib").is_none() && view.lstat("usr/lib").is_none() && view.lstat("lib64").is_none(),
        tls: false,
        extra: false,
    };
    let mut argv: Vec<String> = rc.entrypoint.clone().unwrap_or_default();
    argv.extend(rc.cmd.clone().unwrap_or_default());
    let mut queue: VecDeque<(String, Vec<String>)> = VecDeque::new();

    // The entrypoint exists, is executable, and what it runs exists.
    match argv.first() {
        None => ctx.add(
            Severity::Error,
            "/",
            "the image has no entrypoint and no cmd".into(),
            "set an entrypoint ([image] entrypoint or --entrypoint)",
        ),
        Some(prog) => {
            let path_var = env
                .get("PATH")
                .cloned()
                .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
            let candidates: Vec<String> = if prog.starts_with('/') {
                vec![prog.clone()]
            } else if prog.contains('/') {
                // The runtime starts a relative path from the working directory.
                let wd = rc.working_dir.as_deref().filter(|w| !w.is_empty()).unwrap_or("/");
                vec![format!("{}/{prog}", wd.trim_end_matches('/'))]
            } else {
                path_var.split(':').map(|d| format!("{d}/{prog}")).collect()
            };
            let found = candidates.iter().find_map(|c| match view.resolve(c) {
                Ok((real, FsNode::File { mode, facts, .. })) => Some((c.clone(), real, *mode, facts.clone())),
                _ => None,
            });
            match found {
                None => {
                    let why = match view.resolve(&candidates[0]) {
                        Err(e) => e,
                        Ok(_) => "it is not a regular file".into(),
                    };
                    ctx.add(
                        Severity::Error,
                        prog,
                        format!("the entrypoint {prog} cannot be run: {why}"),
                        "add the binary at that path, or fix the entrypoint",
                    );
                }
                Some((shown, real, mode, facts)) => {
                    if mode & 0o111 == 0 {
                        ctx.add(
                            Severity::Error,
                            &shown,
                            format!("the entrypoint {shown} is not executable (mode {mode:04o})"),
                            "add it with mode 0755",
                        );
                    }
                    if facts.head.starts_with(b"#!") {
                        let line = String::from_utf8_lossy(&facts.head[2..]);
                        let interp = line
                            .lines()
                            .next()
                            .unwrap_or("")
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .to_string();
                        match view.resolve(&interp) {
                            Ok((ireal, FsNode::File { facts: ifacts, mode: imode, .. })) => {
                                if imode & 0o111 == 0 {
                                    ctx.add(Severity::Error, &shown, format!("its interpreter {interp} is not executable"), "fix the interpreter's mode");
                                }
                                if ifacts.elf.is_some() {
                                    queue.push_back((ireal, Vec::new()));
                                }
                            }
                            _ => ctx.add(
                                Severity::Error,
                                &shown,
                                format!("is a script for {interp}, which is not in the image"),
                                "use a base that has the interpreter (e.g. recipe debian-slim), or make the entrypoint a binary",
                            ),
                        }
                    } else if let Some(e) = &facts.elf {
                        // Static glibc resolves through `files` and `dns` on its
                        // own; only other NSS modules (ldap, sss, mdns,
                        // myhostname, systemd, …) need a shared library it
                        // cannot load. Say so only when nsswitch.conf names one.
                        let unloadable = if e.interp.is_none() && e.needed.is_empty() && facts.nss {
                            nss_modules_beyond_files_and_dns(view.text("etc/nsswitch.conf"))
                        } else {
                            Vec::new()
                        };
                        if !unloadable.is_empty() {
                            ctx.add(
                                Severity::Info,
                                &real,
                                format!(
                                    "is a static glibc binary: `files` and `dns` lookups work, but /etc/nsswitch.conf names NSS module(s) it cannot load ({}); lookups that reach them fail",
                                    unloadable.join(", ")
                                ),
                                "drop those modules from the image's /etc/nsswitch.conf, or use recipe distroless-cc (dynamic glibc loads NSS modules), or a musl target",
                            );
                        }
                        if facts.tls {
                            ctx.tls = true;
                        }
                        queue.push_back((real, e.rpath.clone()));
                    } else if let Some(err) = &facts.elf_error {
                        ctx.add(
                            Severity::Error,
                            &real,
                            format!("looks like an ELF file but cannot be read: {err}"),
                            "rebuild the binary; the file is corrupt or truncated",
                        );
                    } else {
                        ctx.add(
                            Severity::Error,
                            &real,
                            "is neither an ELF binary nor a #! script".into(),
                            "point the entrypoint at the binary",
                        );
                    }
                }
            }
        }
    }
    // The entrypoint and what it loads first, so --all's extras are known as such.
    while let Some((path, exe_rpath)) = queue.pop_front() {
        if let Some((real, info)) = ctx.elf_at(&path) {
            ctx.check_object(&real, &info, &exe_rpath, &mut queue);
        }
    }
    if opts.all {
        ctx.extra = true;
        for (p, facts) in view.elves() {
            match &facts.elf {
                Some(e) => queue.push_back((p.to_string(), e.rpath.clone())),
                None => ctx.add(
                    Severity::Warning,
                    p,
                    format!("cannot be read as ELF: {}", facts.elf_error.clone().unwrap_or_default()),
                    "check the file",
                ),
            }
        }
    }
    while let Some((path, exe_rpath)) = queue.pop_front() {
        if let Some((real, info)) = ctx.elf_at(&path) {
            ctx.check_object(&real, &info, &exe_rpath, &mut queue);
        }
    }

    // The user exists.
    if let Some(user) = rc.user.as_deref().filter(|u| !u.is_empty()) {
        let (u, g) = user.split_once(':').map(|(u, g)| (u, Some(g))).unwrap_or((user, None));
        let listed = |file: &str, name: &str| {
            view.text(file)
                .is_some_and(|t| t.lines().any(|l| l.split(':').next() == Some(name)))
        };
        if !u.chars().all(|c| c.is_ascii_digit()) && !listed("etc/passwd", u) {
            ctx.add(
                Severity::Error,
                "/etc/passwd",
                format!("the image's user `{u}` is not in /etc/passwd"),
                "use a numeric UID (e.g. 65532:65532) or add the user to /etc/passwd",
            );
        }
        if let Some(g) = g
            && !g.chars().all(|c| c.is_ascii_digit())
            && !listed("etc/group", g)
        {
            ctx.add(
                Severity::Error,
                "/etc/group",
                format!("the image's group `{g}` is not in /etc/group"),
                "use a numeric GID or add the group",
            );
        }
    }

    // TLS with system roots needs a CA bundle.
    if ctx.tls {
        let bundles = [
            "etc/ssl/certs/ca-certificates.crt",
            "etc/pki/tls/certs/ca-bundle.crt",
            "etc/ssl/cert.pem",
            "etc/ssl/ca-bundle.pem",
        ];
        let has = bundles
            .iter()
            .any(|b| matches!(view.resolve(b), Ok((_, FsNode::File { .. }))))
            || env
                .get("SSL_CERT_FILE")
                .is_some_and(|f| matches!(view.resolve(f), Ok((_, FsNode::File { .. }))));
        if !has {
            ctx.add(
                Severity::Warning,
                "/etc/ssl/certs/ca-certificates.crt",
                "the binary does TLS with the system's roots but the image has no CA bundle: every TLS connection will fail to verify".into(),
                "add a CA bundle (recipe scratch-static adds the builder's), or set SSL_CERT_FILE to one in the image",
            );
        }
    }
    let mut findings = ctx.findings;
    findings.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.file.cmp(&b.file)));
    Report {
        digest: image.digest().to_string(),
        platform: image.platform().to_string(),
        entrypoint: argv,
        files: view.len(),
        findings,
        objects: ctx.objects,
    }
}

/// `DB: MODULE` pairs for hosts/passwd/group in an nsswitch.conf whose
/// module is neither `files` nor `dns` (status actions like `[NOTFOUND=return]`
/// skipped). No file: glibc's defaults, which use only files and dns.
pub fn nss_modules_beyond_files_and_dns(conf: Option<&str>) -> Vec<String> {
    let Some(conf) = conf else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in conf.lines() {
        let line = line.split('#').next().unwrap_or("");
        let Some((db, sources)) = line.split_once(':') else {
            continue;
        };
        let db = db.trim();
        if !matches!(db, "hosts" | "passwd" | "group") {
            continue;
        }
        let mut in_action = false;
        for tok in sources.split_whitespace() {
            if tok.starts_with('[') {
                in_action = !tok.ends_with(']');
                continue;
            }
            if in_action {
                in_action = !tok.ends_with(']');
                continue;
            }
            if !matches!(tok, "files" | "dns") {
                out.push(format!("{db}: {tok}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_modules_static_glibc_cannot_load_are_named() {
        assert!(
            nss_modules_beyond_files_and_dns(None).is_empty(),
            "no file: glibc defaults"
        );
        let debian = "passwd: files\ngroup: files\nhosts: files dns\n# hosts: ldap\n";
        assert!(nss_modules_beyond_files_and_dns(Some(debian)).is_empty());
        let fancy =
            "passwd: files systemd\nhosts: files mdns4_minimal [NOTFOUND=return] dns myhostname\nnetworks: ldap\n";
        assert_eq!(
            nss_modules_beyond_files_and_dns(Some(fancy)),
            vec!["passwd: systemd", "hosts: mdns4_minimal", "hosts: myhostname"]
        );
        let spaced = "hosts: files [ NOTFOUND=return ] dns";
        assert!(nss_modules_beyond_files_and_dns(Some(spaced)).is_empty());
    }
}
