//! `kiln init`: a kiln.toml for a project, from Cargo.toml alone or carried
//! over from a Dockerfile. [`plan`] decides (pure but for reading the
//! project); [`write`] writes the file atomically and never overwrites one
//! unless asked. The text is written by hand so it is ordered and commented:
//! what differs from kiln's defaults is live, every other field is a comment
//! showing its default, and each has a one-line explanation.

pub mod cargo;
pub mod dockerfile;

use std::path::{Path, PathBuf};

use crate::config::recipe;
use crate::reference::RegistryRef;
use crate::{Error, Result};
use cargo::Project;
use dockerfile::{CopyFrom, Dockerfile, Form, Run, Stage};

/// What `kiln init` was asked.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The project directory (where kiln.toml goes).
    pub dir: PathBuf,
    /// A workspace member.
    pub package: Option<String>,
    /// The binary, when the package has several.
    pub bin: Option<String>,
    /// A Dockerfile to carry over.
    pub dockerfile: Option<PathBuf>,
}

/// The kiln.toml to write and what the user should know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub kiln_toml: String,
    /// What was decided, one line each (for stderr).
    pub decisions: Vec<String>,
    /// What could not be carried over or needs attention, one line each.
    pub notes: Vec<String>,
}

/// Reads the project (and the Dockerfile) and plans kiln.toml.
pub fn plan(req: &Request) -> Result<Plan> {
    let df = match &req.dockerfile {
        Some(path) => Some((read_dockerfile(path)?, display_name(&req.dir, path))),
        None => None,
    };
    // A Dockerfile's `cargo build -p NAME` picks the workspace member.
    let hinted = df.as_ref().and_then(|(d, _)| package_hint(d));
    let wanted = req.package.clone().or(hinted);
    let project = cargo::read(&req.dir, wanted.as_deref())?;
    let mut v = Values::default();
    let mut out = Out::default();
    if project.needs_package {
        v.package = Some(project.package.name.clone());
        out.decide(format!(
            "package `{}` (the workspace has several)",
            project.package.name
        ));
    }
    match &df {
        Some((d, name)) => from_dockerfile(&project, req, d, name, &mut v, &mut out)?,
        None => from_cargo(&project, req, &mut v, &mut out)?,
    }
    let source = match &df {
        Some((_, name)) => format!("Cargo.toml and {name}"),
        None => "Cargo.toml".into(),
    };
    let kiln_toml = render(&project, &v, &source);
    out.notes.sort_by_key(|(line, _)| line.unwrap_or(usize::MAX));
    Ok(Plan {
        kiln_toml,
        decisions: out.decisions,
        notes: out.notes.into_iter().map(|(_, n)| n).collect(),
    })
}

/// Writes `plan` to DIR/kiln.toml atomically; refuses to replace an
/// existing file unless `force`. Returns the path written.
pub fn write(dir: &Path, plan: &Plan, force: bool) -> Result<PathBuf> {
    let path = dir.join("kiln.toml");
    if !force && std::fs::symlink_metadata(&path).is_ok() {
        return Err(Error::invalid(
            "kiln.toml",
            path.display().to_string(),
            "it already exists and kiln init does not overwrite it; pass --force to replace it, or edit it by hand",
        ));
    }
    crate::store::blob::write_atomic(&path, plan.kiln_toml.as_bytes())?;
    Ok(path)
}

fn read_dockerfile(path: &Path) -> Result<Dockerfile> {
    let too_big = |n: u64| {
        Error::format(
            path.display().to_string(),
            format!(
                "{n} bytes is over kiln's {}-byte limit for a Dockerfile; is this the right file?",
                dockerfile::MAX_BYTES
            ),
        )
    };
    let meta = std::fs::metadata(path).map_err(Error::read(path))?;
    if meta.len() > dockerfile::MAX_BYTES as u64 {
        return Err(too_big(meta.len()));
    }
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(Error::read(path))?
        .take(dockerfile::MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::read(path))?;
    if bytes.len() > dockerfile::MAX_BYTES {
        return Err(too_big(bytes.len() as u64));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        Error::format(
            format!("{}:{line}", path.display()),
            "not UTF-8 text; save the Dockerfile as UTF-8",
        )
    })?;
    dockerfile::parse(path, &text)
}

/// The Dockerfile as comments name it: relative to the project when inside it.
fn display_name(dir: &Path, path: &Path) -> String {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    match canon(path).strip_prefix(canon(dir)) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => path.display().to_string(),
    }
}

/// Everything kiln.toml may say; `None`/empty is kiln's default.
#[derive(Debug, Default)]
struct Values {
    builder: Option<String>,
    package: Option<String>,
    bin: Option<String>,
    features: Vec<String>,
    no_default_features: bool,
    profile: Option<String>,
    target: Option<String>,
    rustflags: Vec<String>,
    build_env: Vec<(String, String)>,
    recipe: Option<String>,
    base: Option<String>,
    binary: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<(String, String)>,
    user: Option<String>,
    workdir: Option<String>,
    /// Canonical `PORT/PROTO`.
    ports: Vec<String>,
    labels: Vec<(String, String)>,
    stop_signal: Option<String>,
    files: Vec<File>,
    healthcheck: Option<Health>,
    /// Extra comment lines per field (where a value came from, alternatives).
    why: Vec<(&'static str, String)>,
}

impl Values {
    fn why(&mut self, field: &'static str, text: impl Into<String>) {
        self.why.push((field, text.into()));
    }
}

#[derive(Debug)]
struct File {
    src: String,
    dest: String,
    mode: Option<String>,
}

#[derive(Debug)]
struct Health {
    cmd: Form,
    interval: Option<String>,
    timeout: Option<String>,
    start_period: Option<String>,
    retries: Option<u32>,
}

#[derive(Debug, Default)]
struct Out {
    decisions: Vec<String>,
    /// (Dockerfile line for ordering, text)
    notes: Vec<(Option<usize>, String)>,
}

impl Out {
    fn decide(&mut self, s: impl Into<String>) {
        self.decisions.push(s.into());
    }
    fn note(&mut self, line: Option<usize>, s: impl Into<String>) {
        let s = s.into();
        if !self.notes.iter().any(|(_, n)| *n == s) {
            self.notes.push((line, s));
        }
    }
}

/// The binary kiln builds when nothing names it, or an error listing them.
fn default_bin(p: &Project, req: &Request) -> Result<String> {
    if let Some(b) = &req.bin {
        if !p.package.bins.contains(b) {
            return Err(Error::invalid(
                "--bin",
                b.as_str(),
                format!(
                    "package `{}` has no such binary; its binaries: {}",
                    p.package.name,
                    p.package.bins.join(", ")
                ),
            ));
        }
        return Ok(b.clone());
    }
    match &p.default_bin {
        Some(b) => Ok(b.clone()),
        None if p.package.bins.is_empty() => Err(Error::invalid(
            "project",
            p.package.dir.display().to_string(),
            format!(
                "package `{}` has no binary target (src/main.rs or [[bin]])",
                p.package.name
            ),
        )),
        None => Err(Error::invalid(
            "project",
            p.package.dir.display().to_string(),
            format!(
                "package `{}` has several binaries ({}) and none is named like the package; choose one with `kiln init --bin NAME`",
                p.package.name,
                p.package.bins.join(", ")
            ),
        )),
    }
}

fn set_bin(p: &Project, bin: &str, v: &mut Values, out: &mut Out) {
    if p.default_bin.as_deref() != Some(bin) {
        v.bin = Some(bin.to_string());
    }
    if p.package.bins.len() > 1 {
        v.why(
            "bin",
            format!("binaries of `{}`: {}", p.package.name, p.package.bins.join(", ")),
        );
    }
    out.decide(format!("binary `{bin}` of package `{}`", p.package.name));
}

/// kiln.toml from Cargo.toml and the code.
fn from_cargo(p: &Project, req: &Request, v: &mut Values, out: &mut Out) -> Result<()> {
    let bin = default_bin(p, req)?;
    set_bin(p, &bin, v, out);
    let libs = cargo::system_libraries(p);
    // debian-slim is the most general base; it wins over distroless-cc.
    let recipe = if libs.iter().any(|s| s.recipe == "debian-slim") {
        Some("debian-slim")
    } else if libs.is_empty() {
        None
    } else {
        Some("distroless-cc")
    };
    for s in &libs {
        let has = if s.base_has_it {
            format!("the {} base has {}", s.recipe, s.library)
        } else {
            format!("no recipe's base has {}: build one with it and set base", s.library)
        };
        v.why(
            "recipe",
            format!(
                "Cargo.lock has {}, which links the system's {} at run time; {has}.",
                s.name, s.library
            ),
        );
        v.why("recipe", format!("Instead, {}.", s.instead));
        let note = if s.base_has_it {
            format!(
                "recipe {}: {} links the system's {}, which the {} base has; {}",
                s.recipe, s.name, s.library, s.recipe, s.instead
            )
        } else {
            format!(
                "recipe {}: {} links the system's {}, which none of kiln's bases has; set [image] base to an image with {} installed, or: {}",
                s.recipe, s.name, s.library, s.library, s.instead
            )
        };
        out.note(None, note);
    }
    match recipe {
        Some(r) => {
            v.recipe = Some(r.to_string());
            out.decide(format!("recipe {r} (a glibc-linked binary)"));
        }
        None => out.decide("recipe scratch-static (no -sys crate links a system library)"),
    }
    let listens = cargo::listen_addresses(&req.dir, &p.package.dir);
    for l in &listens {
        v.ports.push(format!("{}/tcp", l.port));
        v.why("ports", format!("{}: listens on port {}", l.at, l.port));
        if l.loopback {
            out.note(
                None,
                format!(
                    "{}: the program listens on 127.0.0.1:{}, which is unreachable from outside a container; listen on 0.0.0.0 (or [::]) instead",
                    l.at, l.port
                ),
            );
        }
    }
    if !listens.is_empty() {
        let ports: Vec<String> = listens.iter().map(|l| l.port.to_string()).collect();
        out.decide(format!("ports {} (listen addresses in the code)", ports.join(", ")));
    }
    Ok(())
}

/// `-p NAME` of the last `cargo build`/`cargo install` anywhere in the Dockerfile.
fn package_hint(d: &Dockerfile) -> Option<String> {
    d.stages
        .iter()
        .flat_map(|s| s.runs.iter())
        .filter_map(|r| cargo_command(r, d.escape))
        .filter_map(|c| c.package)
        .next_back()
}

/// A `cargo build` or `cargo install` read from a RUN line.
#[derive(Debug, Default, Clone)]
struct CargoCmd {
    install: bool,
    bin: Option<String>,
    package: Option<String>,
    features: Vec<String>,
    all_features: bool,
    no_default_features: bool,
    target: Option<String>,
    /// `release` unless `--profile`, a debug `cargo build` or `cargo install --debug`.
    profile: String,
    /// `cargo install --root`.
    root: Option<String>,
    /// `RUSTFLAGS=… cargo build`.
    rustflags: Option<String>,
}

/// Splits a shell command at `&&`, `||`, `;`, `|` and newlines (quotes are
/// not tracked: this reads the common shapes, not every shell program).
fn segments(text: &str) -> Vec<&str> {
    text.split(['\n', ';', '|', '&'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

fn is_cargo(word: &str) -> bool {
    word == "cargo" || word.ends_with("/cargo")
}

/// The first `cargo build`/`cargo install` in a RUN, if any (not `cargo chef`).
fn cargo_command(run: &Run, escape: char) -> Option<CargoCmd> {
    for seg in segments(&run.command.text()) {
        let Some(words) = dockerfile::shell_words(seg, escape, &run.vars) else {
            continue;
        };
        let mut it = words.iter().peekable();
        let mut c = CargoCmd {
            profile: "release".into(),
            ..Default::default()
        };
        while let Some(w) = it.peek() {
            match w.split_once('=') {
                Some((k, v)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                    if k == "RUSTFLAGS" {
                        c.rustflags = Some(v.to_string());
                    }
                    it.next();
                }
                _ => break,
            }
        }
        if !it.next().is_some_and(|w| is_cargo(w)) {
            continue;
        }
        if it.peek().is_some_and(|w| w.starts_with('+')) {
            it.next();
        }
        match it.next().map(String::as_str) {
            Some("build" | "b") => {}
            Some("install") => c.install = true,
            _ => continue,
        }
        let mut explicit_release = c.install;
        let mut explicit_profile = false;
        while let Some(w) = it.next() {
            let (flag, inline) = match w.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (w.as_str(), None),
            };
            let value = |it: &mut std::iter::Peekable<std::slice::Iter<'_, String>>| {
                inline.clone().or_else(|| it.next().cloned())
            };
            match flag {
                "--release" | "-r" => explicit_release = true,
                "--debug" if c.install => explicit_release = false,
                "--profile" => {
                    if let Some(p) = value(&mut it) {
                        c.profile = p;
                        explicit_profile = true;
                    }
                }
                "--bin" => c.bin = value(&mut it),
                "-p" | "--package" => c.package = value(&mut it),
                "--features" | "-F" => {
                    if let Some(f) = value(&mut it) {
                        c.features
                            .extend(f.split([',', ' ']).filter(|s| !s.is_empty()).map(String::from));
                    }
                }
                "--all-features" => c.all_features = true,
                "--no-default-features" => c.no_default_features = true,
                "--target" => c.target = value(&mut it),
                "--root" if c.install => c.root = value(&mut it),
                f if f.starts_with("-p") && f.len() > 2 => c.package = Some(f[2..].to_string()),
                f if f.starts_with("-F") && f.len() > 2 => c.features.push(f[2..].to_string()),
                _ => {}
            }
        }
        if !explicit_profile && !explicit_release {
            c.profile = "dev".into();
        }
        return Some(c);
    }
    None
}

/// `-C x` pairs of a RUSTFLAGS value, `-Cx` split like rustc reads it.
fn flag_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in s.split_whitespace() {
        match w.strip_prefix("-C").filter(|r| !r.is_empty()) {
            Some(r) => {
                out.push("-C".to_string());
                out.push(r.to_string());
            }
            None => out.push(w.to_string()),
        }
    }
    out
}

/// Registry references compare equal after Docker Hub normalization.
fn same_image(a: &str, b: &str) -> bool {
    match (RegistryRef::parse(a), RegistryRef::parse(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The recipe for a runtime base image, and whether `base` must be written.
fn recipe_for(image: &str) -> (&'static str, bool) {
    if image == "scratch" {
        return ("scratch-static", false);
    }
    let Ok(r) = RegistryRef::parse(image) else {
        return ("debian-slim", true);
    };
    let name = match (r.registry.as_str(), r.repository.as_str()) {
        ("gcr.io", repo) if repo.starts_with("distroless/cc") || repo.starts_with("distroless/base") => "distroless-cc",
        ("gcr.io", repo) if repo.starts_with("distroless/static") => "distroless-static",
        _ => "debian-slim",
    };
    let own_base = recipe::get(name).map(|r| r.base).unwrap_or_default();
    (name, !same_image(image, &own_base))
}

fn file_name(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or(p)
}

/// The profile's directory under target/.
fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        p => p,
    }
}

/// A COPY --from source that looks like cargo's output: (triple, name).
fn cargo_output(src: &str) -> Option<(Option<String>, String)> {
    let parts: Vec<&str> = src.split('/').filter(|s| !s.is_empty()).collect();
    let name = parts.last()?.to_string();
    if let Some(i) = parts.iter().rposition(|p| *p == "target")
        && parts.len() >= i + 3
    {
        let triple = (parts.len() == i + 4).then(|| parts[i + 1].to_string());
        return Some((triple, name));
    }
    (parts.len() >= 2 && parts[parts.len() - 2] == "bin" && src.contains("cargo")).then_some((None, name))
}

/// What kiln provides instead of a file copied from another stage.
fn provided_instead(src: &str, recipe: &str) -> String {
    let static_like = recipe == "scratch-static";
    if src.contains("ca-certificates") || src.starts_with("/etc/ssl") || src.contains("/certs") {
        return "the scratch-static and debian-slim recipes add the builder's CA bundle, and the distroless bases have one".into();
    }
    if src == "/etc/passwd" || src == "/etc/group" {
        return if static_like {
            "the scratch-static recipe adds /etc/passwd and /etc/group naming the non-root user 65532".into()
        } else {
            "the recipe's base has its own /etc/passwd and /etc/group".into()
        };
    }
    if src.contains("zoneinfo") {
        return "the distroless bases include tzdata; on scratch, put the zone files in the project and list them in [image] files".into();
    }
    if src == "/tmp" || src.starts_with("/tmp/") {
        return "the scratch-static recipe adds a world-writable /tmp".into();
    }
    "kiln cannot carry it: the image holds the binary, the recipe's files and [image] files; if the file is in the project, list it in [image] files".into()
}

/// What provides a package a RUN installs in the runtime stage.
fn package_provider(pkg: &str) -> String {
    match pkg {
        "ca-certificates" => {
            "the scratch-static and debian-slim recipes add the builder's CA bundle; distroless bases have one".into()
        }
        "libssl3" | "openssl" | "libssl1.1" | "libssl-dev" | "openssl-libs" => {
            "the distroless-cc base has libssl3 (recipe = \"distroless-cc\")".into()
        }
        "tzdata" => "the distroless bases include tzdata".into(),
        "libc6" | "libgcc-s1" | "libgcc1" | "libstdc++6" | "libc6-compat" | "libgcc" => {
            "the distroless-cc base has glibc and libgcc_s".into()
        }
        p => format!("use a base that has it: [image] base = \"<an image with {p} installed>\""),
    }
}

/// Packages an `apt-get install` / `apk add` / `dnf install` segment names.
fn installed_packages(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for seg in segments(text) {
        let words: Vec<&str> = seg.split_whitespace().collect();
        let start = words.windows(2).position(|w| {
            matches!(
                (file_name(w[0]), w[1]),
                ("apt-get" | "apt", "install") | ("apk", "add") | ("dnf" | "yum" | "microdnf", "install")
            )
        });
        if let Some(i) = start {
            for w in &words[i + 2..] {
                if w.starts_with('-') || w.starts_with('\\') {
                    continue;
                }
                let name = w.split(['=', '>', '<']).next().unwrap_or(w);
                if !name.is_empty() && !out.iter().any(|o| o == name) {
                    out.push(name.to_string());
                }
            }
        }
    }
    out
}

fn is_shell_less(recipe: &str, base_written: bool) -> bool {
    !base_written && matches!(recipe, "scratch-static" | "distroless-static" | "distroless-cc")
}

/// kiln.toml carried over from a Dockerfile.
fn from_dockerfile(p: &Project, req: &Request, d: &Dockerfile, df: &str, v: &mut Values, out: &mut Out) -> Result<()> {
    let at = |line: usize| format!("{df}:{line}");
    let runtime = d.stages.len() - 1;
    let run_chain = d.chain(runtime);
    let runtime_root = d.root_image(runtime).to_string();

    // The binary: a COPY --from of cargo's output (or of a file named like a binary).
    let mut bin_copy = None;
    let mut other_bins = Vec::new();
    for &si in &run_chain {
        for c in &d.stages[si].copies {
            let Some(CopyFrom::Stage(from)) = c.from else { continue };
            for src in &c.srcs {
                let name = file_name(src).to_string();
                let looks = cargo_output(src).is_some() || p.package.bins.contains(&name);
                if !looks {
                    continue;
                }
                if bin_copy.is_none() {
                    bin_copy = Some((si, c.clone(), from, src.clone(), name));
                } else {
                    other_bins.push((c.line, name));
                }
            }
        }
    }
    // The stage that builds: the one the binary comes from, else a stage of
    // the runtime chain running `cargo build` (a single-stage Dockerfile).
    let build_stage = match &bin_copy {
        Some((_, _, from, _, _)) => Some(*from),
        None => run_chain
            .iter()
            .rev()
            .copied()
            .find(|&si| d.stages[si].runs.iter().any(|r| cargo_command(r, d.escape).is_some())),
    };
    let build_chain = build_stage.map(|b| d.chain(b)).unwrap_or_default();
    let cargo_run = build_chain
        .iter()
        .flat_map(|&si| d.stages[si].runs.iter())
        .filter_map(|r| cargo_command(r, d.escape).map(|c| (r, c)))
        .next_back();

    // The recipe and base, from the runtime chain's root image.
    let (recipe_name, write_base) = recipe_for(&runtime_root);
    let recipe = recipe::get(recipe_name)?;
    let root_line = d.stages[run_chain[0]].line;
    if recipe_name != "scratch-static" {
        v.recipe = Some(recipe_name.to_string());
    }
    v.why(
        "recipe",
        format!("{}: the runtime stage is FROM {runtime_root}", at(root_line)),
    );
    if write_base {
        // `[image] base` reads transports first (`oci:`, `docker-archive:`),
        // so a short Docker Hub name (`rust:1.96`) is written in full.
        v.base = Some(match crate::reference::ImageRef::parse(&runtime_root) {
            Ok(crate::reference::ImageRef::Registry(_)) => runtime_root.clone(),
            _ => RegistryRef::parse(&runtime_root)
                .map(|r| r.to_string())
                .unwrap_or_else(|_| runtime_root.clone()),
        });
    }
    out.decide(format!(
        "recipe {recipe_name}{} (the last stage's base, {}: FROM {runtime_root})",
        if write_base {
            format!(" with base {runtime_root}")
        } else {
            String::new()
        },
        at(root_line)
    ));

    // The builder.
    if let Some(b) = build_stage {
        let builder = d.root_image(b).to_string();
        let root = d.stages[build_chain[0]].line;
        let default = &p.default_builder.reference;
        if builder == "scratch" {
            out.note(
                Some(root),
                format!(
                    "{}: the build stage starts FROM scratch; kiln's default builder is {default}",
                    at(root)
                ),
            );
        } else if !same_image(&builder, default) {
            v.builder = Some(builder.clone());
            v.why(
                "builder",
                format!("{}: FROM {builder} (the build stage {})", at(root), d.stages[b].label()),
            );
            out.decide(format!("builder {builder} ({})", at(root)));
        } else {
            out.decide(format!(
                "builder: kiln's default {default} is the Dockerfile's ({})",
                at(root)
            ));
        }
    } else {
        out.note(
            None,
            format!("{df}: found no `COPY --from=<stage> …/target/…/<bin>` and no `RUN cargo build`; kiln builds the package with its defaults"),
        );
    }

    // cargo's options.
    let cargo = cargo_run.as_ref().map(|(_, c)| c.clone()).unwrap_or_else(|| CargoCmd {
        profile: "release".into(),
        ..Default::default()
    });
    let cargo_line = cargo_run.as_ref().map(|(r, _)| r.line);
    let from_cargo_line = |v: &mut Values, field: &'static str| {
        if let Some(l) = cargo_line {
            v.why(field, format!("{}: RUN cargo …", at(l)));
        }
    };
    if let Some(pkg) = &cargo.package
        && *pkg != p.package.name
        && req.package.is_some()
    {
        out.note(
            cargo_line,
            format!(
                "{}: cargo builds package `{pkg}`, but --package chose `{}`",
                at(cargo_line.unwrap_or(0)),
                p.package.name
            ),
        );
    }
    if p.needs_package && cargo.package.is_some() {
        from_cargo_line(v, "package");
    }
    if cargo.profile != "release" {
        v.profile = Some(cargo.profile.clone());
        from_cargo_line(v, "profile");
    }
    if !cargo.features.is_empty() {
        v.features = cargo.features.clone();
        from_cargo_line(v, "features");
    }
    if cargo.no_default_features {
        v.no_default_features = true;
        from_cargo_line(v, "no_default_features");
    }
    if cargo.all_features {
        out.note(
            cargo_line,
            format!(
                "{}: --all-features is not carried; list the features in [build] features",
                at(cargo_line.unwrap_or(0))
            ),
        );
    }
    let copy_triple = bin_copy
        .as_ref()
        .and_then(|(_, _, _, src, _)| cargo_output(src))
        .and_then(|(t, _)| t);
    let target = cargo.target.clone().or(copy_triple);
    let recipe_target = recipe.target(&crate::oci::Platform::host()).unwrap_or_default();
    if let Some(t) = &target
        && *t != recipe_target
    {
        v.target = Some(t.clone());
        from_cargo_line(v, "target");
        if t.contains("musl") {
            out.note(
                cargo_line,
                format!(
                    "{}: target {t}: the builder image needs that target installed (`rustup target add {t}`, and musl-tools for C code); kiln's default builder has only the host target",
                    at(cargo_line.unwrap_or(0))
                ),
            );
        }
    }

    // RUSTFLAGS: ENV/ARG of the build stage or inline, minus the recipe's own.
    if let Some((run, c)) = &cargo_run {
        let flags = c
            .rustflags
            .clone()
            .or_else(|| run.vars.iter().find(|(k, _)| k == "RUSTFLAGS").map(|(_, v)| v.clone()));
        if let Some(flags) = flags {
            let mut words = flag_words(&flags);
            let own = &recipe.rustflags;
            if !own.is_empty()
                && let Some(i) = words.windows(own.len()).position(|w| w == own.as_slice())
            {
                words.drain(i..i + own.len());
                out.decide(format!(
                    "RUSTFLAGS {}: the {recipe_name} recipe already sets it",
                    own.join(" ")
                ));
            }
            if !words.is_empty() {
                v.rustflags = words;
                v.why("rustflags", format!("{}: RUSTFLAGS of the build", at(run.line)));
            }
        } else if !recipe.rustflags.is_empty() {
            out.decide(format!(
                "the {recipe_name} recipe builds with RUSTFLAGS {} (a static binary)",
                recipe.rustflags.join(" ")
            ));
        }
    }

    // The binary's name and its place in the image.
    let bin = match (&bin_copy, &cargo.bin) {
        (Some((_, _, _, _, name)), _) if p.package.bins.contains(name) => name.clone(),
        (_, Some(b)) if p.package.bins.contains(b) => b.clone(),
        (Some((_, c, _, _, name)), _) => {
            let b = default_bin(p, req)?;
            out.note(
                Some(c.line),
                format!(
                    "{}: `{name}` is not a binary of package `{}` (its binaries: {}); kiln builds `{b}`",
                    at(c.line),
                    p.package.name,
                    p.package.bins.join(", ")
                ),
            );
            b
        }
        _ => default_bin(p, req)?,
    };
    set_bin(p, &bin, v, out);
    for (line, name) in &other_bins {
        out.note(
            Some(*line),
            format!(
                "{}: `{name}` is another binary; a kiln image holds one binary (`{bin}`), so it is not carried",
                at(*line)
            ),
        );
    }
    let default_path = format!("{}/{bin}", recipe.bin_dir);
    let binary = match &bin_copy {
        Some((_, c, _, _, name)) => {
            if c.dest_is_dir {
                format!("{}/{name}", c.dest.trim_end_matches('/'))
            } else {
                c.dest.clone()
            }
        }
        None if build_stage.is_some() => {
            // Where cargo ran: relative paths are relative to that WORKDIR.
            let wd = cargo_run
                .as_ref()
                .and_then(|(r, _)| r.workdir.clone())
                .unwrap_or_else(|| "/".into());
            if cargo.install {
                let root = cargo.root.clone().unwrap_or_else(|| "/usr/local/cargo".into());
                dockerfile::resolve_path(&wd, &format!("{root}/bin/{bin}"))
            } else {
                let triple = cargo.target.as_deref().map(|t| format!("{t}/")).unwrap_or_default();
                dockerfile::resolve_path(&wd, &format!("target/{triple}{}/{bin}", profile_dir(&cargo.profile)))
            }
        }
        None => default_path.clone(),
    };
    if binary != default_path {
        v.binary = Some(binary.clone());
        match &bin_copy {
            Some((_, c, _, src, _)) => v.why("binary", format!("{}: COPY --from=… {src} {}", at(c.line), c.dest)),
            None => v.why(
                "binary",
                format!(
                    "where `cargo {}` leaves it ({})",
                    if cargo.install { "install" } else { "build" },
                    at(cargo_line.unwrap_or(0))
                ),
            ),
        }
    }
    out.decide(format!("the binary goes to {binary}"));

    // The runtime config, with Docker's semantics (computed by the parser).
    let c = &d.stages[runtime].config;
    let shell_less = is_shell_less(recipe_name, write_base);
    for cmd in [&c.entrypoint, &c.cmd].into_iter().flatten() {
        if cmd.shell_form {
            let what = if c.entrypoint.as_ref() == Some(cmd) {
                "ENTRYPOINT"
            } else {
                "CMD"
            };
            let tail = if shell_less {
                format!("; the {recipe_name} base has no /bin/sh, so write it in exec form")
            } else {
                String::new()
            };
            out.note(
                Some(cmd.line),
                format!(
                    "{}: {what} in shell form runs through {} as Docker does{tail}",
                    at(cmd.line),
                    cmd.argv[..cmd.argv.len().saturating_sub(1)].join(" ")
                ),
            );
        }
    }
    match (&c.entrypoint, &c.cmd) {
        (Some(e), cmd) => {
            if e.argv != [binary.clone()] {
                v.entrypoint = Some(e.argv.clone());
                v.why("entrypoint", format!("{}: ENTRYPOINT", at(e.line)));
            }
            if let Some(cmd) = cmd {
                v.cmd = Some(cmd.argv.clone());
                v.why("cmd", format!("{}: CMD", at(cmd.line)));
            }
        }
        (None, Some(cmd)) => {
            v.entrypoint = Some(Vec::new());
            v.why("entrypoint", "the Dockerfile has CMD but no ENTRYPOINT: none, so CMD is the whole command, as in Docker");
            v.cmd = Some(cmd.argv.clone());
            v.why("cmd", format!("{}: CMD", at(cmd.line)));
        }
        (None, None) => out.note(
            None,
            format!("{df}: no ENTRYPOINT or CMD; kiln runs the binary ({binary}), where Docker would run the base image's command"),
        ),
    }
    if !c.env.is_empty() {
        v.env = c.env.clone();
        let mut sorted = c.env.clone();
        sorted.sort();
        if sorted != c.env {
            out.note(
                None,
                format!("{df}: kiln writes [image] env in name order; Docker keeps the order of the ENV lines"),
            );
        }
        if recipe_name == "scratch-static" && !write_base {
            out.decide("env: the ENV lines; kiln adds PATH on scratch, as Docker does");
        }
    }
    for (k, line) in run_chain.iter().flat_map(|&si| d.stages[si].env_lines.iter()) {
        if c.env.iter().any(|(e, _)| e == k) {
            v.why("env", format!("{}: ENV {k}", at(*line)));
        }
    }
    match &c.user {
        Some(u) if *u == recipe.user => {}
        Some(u) => {
            v.user = Some(u.clone());
        }
        None => {
            v.user = Some(String::new());
            v.why(
                "user",
                "the Dockerfile has no USER: keep the base image's user (root on scratch); kiln's default is 65532:65532",
            );
            out.note(
                None,
                format!("{df}: no USER, so the image runs as the base's user (root on scratch); drop `user = \"\"` to run as kiln's non-root 65532:65532"),
            );
        }
    }
    for (kw, line) in &c.origin {
        let f = match kw.as_str() {
            "LABEL" => "labels",
            "USER" => "user",
            "WORKDIR" => "workdir",
            "STOPSIGNAL" => "stop_signal",
            _ => "ports",
        };
        v.why(f, format!("{}: {kw}", at(*line)));
    }
    if let Some(w) = &c.workdir {
        v.workdir = Some(w.clone());
    }
    v.ports = c.ports.clone();
    if !c.labels.is_empty() {
        v.labels = c.labels.clone();
        out.note(
            None,
            format!("{df}: kiln also sets the labels org.opencontainers.image.title and .version from Cargo.toml"),
        );
    }
    v.stop_signal = c.stop_signal.clone();
    if let Some(h) = &c.healthcheck {
        match &h.test {
            None => out.note(
                Some(h.line),
                format!("{}: HEALTHCHECK NONE is not carried: kiln writes no health check, so the base's (none on scratch and distroless) applies", at(h.line)),
            ),
            Some(test) => {
                let mut keep = |name: &str, val: &Option<String>| {
                    val.as_ref().and_then(|s| match crate::settings::parse_duration(s, "HEALTHCHECK") {
                        Ok(_) => Some(s.clone()),
                        Err(_) => {
                            out.note(
                                Some(h.line),
                                format!("{}: HEALTHCHECK --{name}={s} is not a duration kiln reads (ms, s, m, h); left out", at(h.line)),
                            );
                            None
                        }
                    })
                };
                let health = Health {
                    cmd: test.clone(),
                    interval: keep("interval", &h.interval),
                    timeout: keep("timeout", &h.timeout),
                    start_period: keep("start-period", &h.start_period),
                    retries: h.retries,
                };
                if h.start_interval.is_some() {
                    out.note(Some(h.line), format!("{}: HEALTHCHECK --start-interval is not carried (kiln's healthcheck has no such field)", at(h.line)));
                }
                if matches!(test, Form::Shell(_)) && shell_less {
                    out.note(
                        Some(h.line),
                        format!("{}: the HEALTHCHECK runs through /bin/sh, which the {recipe_name} base does not have; write it in exec form", at(h.line)),
                    );
                }
                v.why("healthcheck", format!("{}: HEALTHCHECK", at(h.line)));
                v.healthcheck = Some(health);
            }
        }
    }

    // ENV of build-only stages: cargo's and rustc's variables are the build's.
    for &si in build_chain.iter().filter(|si| !run_chain.contains(si)) {
        for (k, line) in &d.stages[si].env_lines {
            let Some((_, val)) = d.stages[si].config.env.iter().find(|(e, _)| e == k) else {
                continue;
            };
            if k == "RUSTFLAGS" || matches!(k.as_str(), "CARGO_HOME" | "RUSTUP_HOME" | "RUST_VERSION" | "PATH") {
                continue;
            }
            if (k.starts_with("CARGO_") || k.starts_with("RUST")) && !v.build_env.iter().any(|(e, _)| e == k) {
                v.build_env.push((k.clone(), val.clone()));
                v.why("build.env", format!("{}: ENV {k} of the build stage", at(*line)));
            } else if !v.build_env.iter().any(|(e, _)| e == k) {
                out.note(Some(*line), format!("{}: ENV {k} of the build stage is not carried (only CARGO_* and RUST* variables reach kiln's build)", at(*line)));
            }
        }
    }

    // Stages: what each one contributed or why it is dropped.
    for s in &d.stages {
        let in_run = run_chain.contains(&s.index);
        let in_build = build_chain.contains(&s.index);
        if !in_run && !in_build {
            let chef = s.runs.iter().any(|r| r.command.text().contains("cargo chef"));
            let why = if chef {
                "it runs cargo-chef, whose dependency caching kiln's own fetch/build cache replaces"
            } else {
                "the image kiln writes does not use it"
            };
            out.note(
                Some(s.line),
                format!("{}: stage {} is not carried: {why}", at(s.line), s.label()),
            );
            continue;
        }
        carry_stage(
            s,
            in_run,
            in_build,
            d,
            df,
            recipe_name,
            cargo_line,
            &bin_copy.as_ref().map(|b| b.1.line),
            v,
            out,
            &req.dir,
        );
    }
    Ok(())
}

/// Notes and `[image] files` for one stage of the runtime or build chain.
#[allow(clippy::too_many_arguments)]
fn carry_stage(
    s: &Stage,
    in_run: bool,
    in_build: bool,
    d: &Dockerfile,
    df: &str,
    recipe_name: &str,
    cargo_line: Option<usize>,
    bin_copy_line: &Option<usize>,
    v: &mut Values,
    out: &mut Out,
    dir: &Path,
) {
    let at = |line: usize| format!("{df}:{line}");
    for r in &s.remarks {
        out.note(Some(r.line), format!("{}: {} (not carried)", at(r.line), r.text));
    }
    for r in &s.runs {
        if Some(r.line) == cargo_line {
            continue;
        }
        let text = r.command.text();
        let shown: String = text.chars().take(100).collect();
        let shown = if r.heredoc {
            format!("{shown} (with a heredoc)")
        } else {
            shown
        };
        if text.contains("cargo chef") {
            out.note(
                Some(r.line),
                format!(
                    "{}: RUN {shown}: cargo-chef's dependency caching; kiln's own fetch/build cache replaces it",
                    at(r.line)
                ),
            );
            continue;
        }
        if in_build {
            let pkgs = installed_packages(&text);
            let what = if text.contains("rustup target add") {
                "the builder image must have the target installed (set [build] builder to an image that does)"
                    .to_string()
            } else if !pkgs.is_empty() {
                format!(
                    "the builder image must have {} (set [build] builder to an image that does)",
                    pkgs.join(", ")
                )
            } else {
                "kiln builds with cargo only".to_string()
            };
            out.note(
                Some(r.line),
                format!("{}: RUN {shown} is not carried: {what}", at(r.line)),
            );
            continue;
        }
        let pkgs = installed_packages(&text);
        if pkgs.is_empty() {
            out.note(
                Some(r.line),
                format!(
                    "{}: RUN {shown} is not carried: kiln runs nothing at image build time",
                    at(r.line)
                ),
            );
        } else {
            let provided: Vec<String> = pkgs.iter().map(|p| format!("{p}: {}", package_provider(p))).collect();
            out.note(
                Some(r.line),
                format!(
                    "{}: RUN installs {}, not carried: kiln runs nothing at image build time. {}",
                    at(r.line),
                    pkgs.join(", "),
                    provided.join("; ")
                ),
            );
        }
    }
    for c in &s.copies {
        if Some(c.line) == *bin_copy_line && in_run {
            continue;
        }
        let kw = if c.add { "ADD" } else { "COPY" };
        if c.heredoc {
            out.note(
                Some(c.line),
                format!("{}: {kw} <<… creates a file inline; not carried: put it in the project and list it in [image] files", at(c.line)),
            );
            continue;
        }
        match &c.from {
            Some(CopyFrom::Image(img)) => {
                out.note(
                    Some(c.line),
                    format!(
                        "{}: {kw} --from={img} {} is not carried: kiln copies nothing from other images",
                        at(c.line),
                        c.srcs.join(" ")
                    ),
                );
                continue;
            }
            Some(CopyFrom::Stage(from)) => {
                if in_run && !in_build {
                    for src in &c.srcs {
                        out.note(
                            Some(c.line),
                            format!(
                                "{}: {kw} --from={} {src} is not carried: {}",
                                at(c.line),
                                d.stages[*from].name.clone().unwrap_or_else(|| from.to_string()),
                                provided_instead(src, recipe_name)
                            ),
                        );
                    }
                }
                continue;
            }
            None => {}
        }
        if in_build {
            // Sources copied in for the build: kiln builds from the project.
            if !in_run || c.srcs.iter().any(|s| is_build_input(s, dir)) {
                if in_run {
                    out.note(
                        Some(c.line),
                        format!("{}: {kw} {} {} copies the sources for the build; kiln builds from the project, so the image holds only the binary", at(c.line), c.srcs.join(" "), c.dest),
                    );
                }
                continue;
            }
        }
        for src in &c.srcs {
            if src.starts_with("http://") || src.starts_with("https://") || src.starts_with("git@") {
                out.note(Some(c.line), format!("{}: {kw} {src} downloads at build time; not carried: put the file in the project and list it in [image] files", at(c.line)));
                continue;
            }
            if src.contains(['*', '?', '[']) {
                out.note(
                    Some(c.line),
                    format!(
                        "{}: {kw} {src} is a pattern; not carried: list each file in [image] files",
                        at(c.line)
                    ),
                );
                continue;
            }
            // Docker reads sources inside the build context: `/etc/x` is the
            // context's etc/x, and `..` cannot leave it.
            let rel = src
                .trim_start_matches('/')
                .trim_start_matches("./")
                .trim_end_matches('/');
            let rel = if rel.is_empty() { "." } else { rel };
            if rel.contains(char::is_control) {
                out.note(
                    Some(c.line),
                    format!(
                        "{}: {kw} {}: a file name with control characters; not carried",
                        at(c.line),
                        crate::text::escape_controls(src)
                    ),
                );
                continue;
            }
            if rel.split('/').any(|c| c == "..") {
                out.note(
                    Some(c.line),
                    format!(
                        "{}: {kw} {src} reaches outside the build context; not carried",
                        at(c.line)
                    ),
                );
                continue;
            }
            let path = dir.join(rel);
            if c.add
                && [".tar", ".tgz", ".gz", ".xz", ".bz2", ".zst"]
                    .iter()
                    .any(|x| rel.ends_with(x))
            {
                out.note(Some(c.line), format!("{}: ADD {src} unpacks an archive; kiln copies files as they are, so unpack it in the project and list the result in [image] files", at(c.line)));
                continue;
            }
            let is_dir = path.is_dir();
            if !path.exists() {
                out.note(
                    Some(c.line),
                    format!(
                        "{}: {kw} {src}: not found in the project; listed in [image] files anyway",
                        at(c.line)
                    ),
                );
            }
            let dest = if c.dest_is_dir && !is_dir {
                format!("{}/{}", c.dest.trim_end_matches('/'), file_name(rel))
            } else {
                c.dest.clone()
            };
            let mode = c.chmod.as_ref().and_then(|m| {
                if !m.is_empty() && m.len() <= 4 && m.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                    Some(format!("{m:0>4}"))
                } else {
                    out.note(
                        Some(c.line),
                        format!("{}: --chmod={m} is not an octal mode; not carried", at(c.line)),
                    );
                    None
                }
            });
            if let Some(o) = &c.chown {
                out.note(
                    Some(c.line),
                    format!(
                        "{}: --chown={o} is not carried: kiln's files belong to root",
                        at(c.line)
                    ),
                );
            }
            v.why("files", format!("{}: {kw} {src} {}", at(c.line), c.dest));
            v.files.push(File {
                src: rel.to_string(),
                dest,
                mode,
            });
        }
        for f in &c.other_flags {
            out.note(Some(c.line), format!("{}: {kw} {f} is not carried", at(c.line)));
        }
    }
}

/// A build-context source that is the project itself or part of its build.
fn is_build_input(src: &str, dir: &Path) -> bool {
    let rel = src.trim_start_matches("./").trim_end_matches('/');
    matches!(
        rel,
        "" | "."
            | "Cargo.toml"
            | "Cargo.lock"
            | "src"
            | "build.rs"
            | "benches"
            | "tests"
            | "examples"
            | ".cargo"
            | "recipe.json"
    ) || dir.join(rel).join("Cargo.toml").is_file()
}

// ---- rendering ----

/// A TOML basic string.
fn s(v: &str) -> String {
    toml::Value::String(v.to_string()).to_string()
}

fn key(k: &str) -> String {
    if !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        k.to_string()
    } else {
        s(k)
    }
}

fn array(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|i| s(i)).collect();
    format!("[{}]", inner.join(", "))
}

fn table(pairs: &[(String, String)]) -> String {
    if pairs.is_empty() {
        return "{}".into();
    }
    let mut sorted = pairs.to_vec();
    sorted.sort();
    let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{} = {}", key(k), s(v))).collect();
    format!("{{ {} }}", inner.join(", "))
}

fn port(p: &str) -> String {
    match p.strip_suffix("/tcp") {
        Some(n) => n.to_string(),
        None => s(p),
    }
}

fn health(h: &Health) -> String {
    let mut parts = vec![match &h.cmd {
        Form::Exec(v) => format!("cmd = {}", array(v)),
        Form::Shell(t) => format!("cmd = {}", s(t)),
    }];
    for (k, val) in [
        ("interval", &h.interval),
        ("timeout", &h.timeout),
        ("start_period", &h.start_period),
    ] {
        if let Some(x) = val {
            parts.push(format!("{k} = {}", s(x)));
        }
    }
    if let Some(r) = h.retries {
        parts.push(format!("retries = {r}"));
    }
    format!("{{ {} }}", parts.join(", "))
}

/// One field: its explanation, the lines saying where its value came from,
/// and the line itself (live, or a comment with the default or an example).
fn field(text: &mut String, v: &Values, name: &'static str, help: &str, live: Option<String>, example: String) {
    for h in help.lines() {
        text.push_str(&format!("# {h}\n"));
    }
    // Reasons quote the Dockerfile: control characters (a newline above
    // all) are escaped so a quote can never end the comment.
    for (_, why) in v.why.iter().filter(|(f, _)| *f == name) {
        text.push_str(&format!("#   {}\n", crate::text::escape_controls(why)));
    }
    // `build.env` is [build] env (its `why` lines are not [image] env's).
    let key = name.rsplit('.').next().unwrap_or(name);
    match live {
        Some(val) => text.push_str(&format!("{key} = {val}\n")),
        None => text.push_str(&format!("# {key} = {example}\n")),
    }
}

fn render(p: &Project, v: &Values, source: &str) -> String {
    let recipe_name = v.recipe.clone().unwrap_or_else(|| "scratch-static".into());
    let recipe = recipe::get(&recipe_name).ok();
    let recipe_base = recipe.as_ref().map(|r| r.base.clone()).unwrap_or_default();
    let recipe_target = recipe
        .as_ref()
        .and_then(|r| r.target(&crate::oci::Platform::host()).ok())
        .unwrap_or_default();
    let bin = v
        .bin
        .clone()
        .or_else(|| p.default_bin.clone())
        .unwrap_or_else(|| p.package.name.clone());
    let bin_dir = recipe
        .as_ref()
        .map(|r| r.bin_dir.clone())
        .unwrap_or_else(|| "/usr/local/bin".into());
    let binary = v.binary.clone().unwrap_or_else(|| format!("{bin_dir}/{bin}"));
    let mut t = String::new();
    t.push_str(&format!(
        "# kiln.toml for `{}`, written by `kiln init` from {}.\n",
        crate::text::escape_controls(&p.package.name),
        crate::text::escape_controls(source)
    ));
    t.push_str("# Live lines differ from kiln's defaults; each commented line shows a default\n");
    t.push_str("# or an example. The README's kiln.toml reference describes every field.\n\n");
    t.push_str("[build]\n");
    field(
        &mut t,
        v,
        "builder",
        &format!(
            "Build image, pinned in kiln.lock. Default: docker.io/library/rust:<version>-slim-bookworm,\n<version> from rust-toolchain.toml, else rust-version when newer than {}, else {} (here: {}).",
            crate::builder::toolchain::DEFAULT_RUST_VERSION,
            crate::builder::toolchain::DEFAULT_RUST_VERSION,
            p.default_builder.source
        ),
        v.builder.as_deref().map(s),
        s(&p.default_builder.reference),
    );
    field(
        &mut t,
        v,
        "package",
        "Cargo package to build (for workspaces). Default: the root package.",
        v.package.as_deref().map(s),
        s(&p.package.name),
    );
    field(
        &mut t,
        v,
        "bin",
        "Binary to put in the image. Default: the only one, or the one named like the package.",
        v.bin.as_deref().map(s),
        s(&bin),
    );
    field(
        &mut t,
        v,
        "features",
        "Cargo features to enable. Default: none.",
        (!v.features.is_empty()).then(|| array(&v.features)),
        "[]".into(),
    );
    field(
        &mut t,
        v,
        "no_default_features",
        "Build without the package's default features.",
        v.no_default_features.then(|| "true".into()),
        "false".into(),
    );
    field(
        &mut t,
        v,
        "profile",
        "Cargo profile. Default: release.",
        v.profile.as_deref().map(s),
        s("release"),
    );
    field(
        &mut t,
        v,
        "target",
        "Rust target triple. Default: the recipe's.",
        v.target.as_deref().map(s),
        s(&recipe_target),
    );
    field(
        &mut t,
        v,
        "rustflags",
        "Extra RUSTFLAGS, appended to the recipe's.",
        (!v.rustflags.is_empty()).then(|| array(&v.rustflags)),
        "[]".into(),
    );
    field(
        &mut t,
        v,
        "build.env",
        "Environment of the build. Default: none.",
        (!v.build_env.is_empty()).then(|| table(&v.build_env)),
        "{}".into(),
    );
    t.push_str("\n[image]\n");
    field(
        &mut t,
        v,
        "recipe",
        "Recipe: scratch-static (default), distroless-static, distroless-cc or debian-slim.",
        v.recipe.as_deref().map(s),
        s("scratch-static"),
    );
    field(
        &mut t,
        v,
        "base",
        &format!("Base image. Default: the recipe's ({recipe_base})."),
        v.base.as_deref().map(s),
        s(&recipe_base),
    );
    field(
        &mut t,
        v,
        "binary",
        &format!("Where the binary goes in the image. Default: {bin_dir}/<bin>."),
        v.binary.as_deref().map(s),
        s(&binary),
    );
    field(
        &mut t,
        v,
        "entrypoint",
        "What runs. Default: the binary; [] for none, so that cmd is the whole command.",
        v.entrypoint.as_deref().map(array),
        array(std::slice::from_ref(&binary)),
    );
    field(
        &mut t,
        v,
        "cmd",
        "Arguments after the entrypoint (the command itself when entrypoint = []). Default: none.",
        v.cmd.as_deref().map(array),
        "[]".into(),
    );
    field(
        &mut t,
        v,
        "env",
        "Environment. Default: the base's (PATH alone on scratch).",
        (!v.env.is_empty()).then(|| table(&v.env)),
        "{}".into(),
    );
    field(
        &mut t,
        v,
        "user",
        "User to run as. Default: 65532:65532 (non-root); \"\" keeps the base image's user.",
        v.user.as_deref().map(s),
        s(recipe.as_ref().map(|r| r.user.as_str()).unwrap_or("65532:65532")),
    );
    field(
        &mut t,
        v,
        "workdir",
        "Working directory. Default: the base's (/ on scratch).",
        v.workdir.as_deref().map(s),
        s("/"),
    );
    field(
        &mut t,
        v,
        "ports",
        "Ports the program listens on (EXPOSE). Default: none.",
        (!v.ports.is_empty()).then(|| format!("[{}]", v.ports.iter().map(|p| port(p)).collect::<Vec<_>>().join(", "))),
        "[]".into(),
    );
    field(
        &mut t,
        v,
        "labels",
        "Labels; kiln adds org.opencontainers.image.title and .version from Cargo.toml.",
        (!v.labels.is_empty()).then(|| table(&v.labels)),
        "{}".into(),
    );
    field(
        &mut t,
        v,
        "stop_signal",
        "Signal that stops the container. Default: the engine's (SIGTERM).",
        v.stop_signal.as_deref().map(s),
        s("SIGTERM"),
    );
    let files = (!v.files.is_empty()).then(|| {
        let items: Vec<String> = v
            .files
            .iter()
            .map(|f| {
                let mode = f
                    .mode
                    .as_ref()
                    .map(|m| format!(", mode = {}", s(m)))
                    .unwrap_or_default();
                format!("  {{ src = {}, dest = {}{mode} }},\n", s(&f.src), s(&f.dest))
            })
            .collect();
        format!("[\n{}]", items.concat())
    });
    field(
        &mut t,
        v,
        "files",
        "Files from the project put in the image ({ src, dest, mode }). Default: none.",
        files,
        "[]".into(),
    );
    field(
        &mut t,
        v,
        "healthcheck",
        "Docker's HEALTHCHECK ({ cmd, interval, timeout, start_period, retries }). Default: none.",
        v.healthcheck.as_ref().map(health),
        format!(
            "{{ cmd = {}, interval = \"30s\" }}",
            array(&[binary.clone(), "--health".into()])
        ),
    );
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_lines() {
        let run = |t: &str| Run {
            line: 1,
            command: Form::Shell(t.into()),
            vars: vec![("FEATS".into(), "a,b".into())],
            heredoc: false,
            workdir: None,
        };
        let c = cargo_command(&run("apt-get update && RUSTFLAGS='-C x' cargo +stable build --release --locked -p app --bin app --features $FEATS --target x86_64-unknown-linux-musl"), '\\').unwrap();
        assert_eq!(c.package.as_deref(), Some("app"));
        assert_eq!(c.bin.as_deref(), Some("app"));
        assert_eq!(c.features, ["a", "b"]);
        assert_eq!(c.target.as_deref(), Some("x86_64-unknown-linux-musl"));
        assert_eq!(c.profile, "release");
        assert_eq!(c.rustflags.as_deref(), Some("-C x"));
        assert_eq!(cargo_command(&run("cargo build"), '\\').unwrap().profile, "dev");
        assert_eq!(
            cargo_command(&run("cargo build --profile=prod"), '\\').unwrap().profile,
            "prod"
        );
        let i = cargo_command(&run("cargo install --path . --locked"), '\\').unwrap();
        assert!(i.install && i.profile == "release");
        assert!(cargo_command(&run("cargo chef cook --release --recipe-path recipe.json"), '\\').is_none());
    }

    #[test]
    fn recipes_for_bases() {
        assert_eq!(recipe_for("scratch"), ("scratch-static", false));
        assert_eq!(
            recipe_for("gcr.io/distroless/cc-debian12:nonroot"),
            ("distroless-cc", false)
        );
        assert_eq!(recipe_for("gcr.io/distroless/cc-debian12"), ("distroless-cc", true));
        assert_eq!(
            recipe_for("gcr.io/distroless/static-debian12:nonroot"),
            ("distroless-static", false)
        );
        assert_eq!(recipe_for("debian:bookworm-slim"), ("debian-slim", false));
        assert_eq!(recipe_for("rust:1.96-slim-bookworm"), ("debian-slim", true));
        assert!(same_image(
            "rust:1.96-slim-bookworm",
            "docker.io/library/rust:1.96-slim-bookworm"
        ));
    }

    #[test]
    fn packages_and_outputs() {
        assert_eq!(
            installed_packages(
                "apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 && rm -rf /var/lib/apt/lists/*"
            ),
            ["ca-certificates", "libssl3"]
        );
        assert_eq!(installed_packages("apk add --no-cache tzdata"), ["tzdata"]);
        assert_eq!(
            cargo_output("/app/target/x86_64-unknown-linux-gnu/release/app"),
            Some((Some("x86_64-unknown-linux-gnu".into()), "app".into()))
        );
        assert_eq!(cargo_output("/app/target/release/app"), Some((None, "app".into())));
        assert_eq!(cargo_output("/usr/local/cargo/bin/app"), Some((None, "app".into())));
        assert_eq!(cargo_output("/etc/passwd"), None);
        assert_eq!(
            flag_words("-Ctarget-feature=+crt-static -C opt-level=3"),
            ["-C", "target-feature=+crt-static", "-C", "opt-level=3"]
        );
    }

    #[test]
    fn toml_values_are_escaped() {
        assert_eq!(
            key("org.opencontainers.image.source"),
            "\"org.opencontainers.image.source\""
        );
        let t = table(&[("B".into(), "x \"q\"\n".into()), ("A".into(), "1".into())]);
        let parsed: toml::Table = format!("t = {t}").parse().unwrap();
        assert_eq!(parsed["t"]["B"].as_str(), Some("x \"q\"\n"));
    }
}
