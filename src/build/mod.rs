//! `kiln build`: kiln.toml + Cargo project → pinned builder → binary →
//! assembled image → outputs. Every input that shapes the bytes is part of
//! the [`Plan`]; the plan plus the source tree's content is the key of an
//! input-addressed cache, so an unchanged project skips the engine entirely.

pub mod docker;
pub mod host;
pub mod project;
pub mod source;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use toml::Spanned;

use crate::assemble::{self, AssembleSpec};
use crate::config::lock::Lock;
use crate::config::recipe::{self, Recipe};
use crate::config::{KilnToml, PortValue, Source};
use crate::digest::{Digest, HashingWriter};
use crate::image::Image;
use crate::layer::{AddSpec, Compression, LayerOptions, Tree};
use crate::oci::Platform;
use crate::progress::Progress;
use crate::reference::ImageRef;
use crate::time::Timestamp;
use crate::{Error, Result};

/// Which builder runs cargo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A container from the pinned builder image (the default).
    Docker,
    /// The host's own cargo: same normalization, toolchain not pinned.
    Host,
}

/// An image reference pinned to a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PinnedImage {
    pub reference: String,
    pub digest: Digest,
}

impl PinnedImage {
    /// `repo@sha256:…`.
    pub fn by_digest(&self) -> String {
        let without_digest = self.reference.split('@').next().unwrap_or(&self.reference);
        let (repo, _) = docker::split_tag(without_digest);
        format!("{repo}@{}", self.digest)
    }
}

/// Deliberate differences between rebuilds (kiln verify). A reproducible
/// project builds the same bytes under any of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Variation {
    /// Where the source sits in the builder instead of /kiln/src.
    pub src_dir: Option<String>,
    /// Extra or overriding environment in the build container.
    pub env: Vec<(String, String)>,
    pub hostname: Option<String>,
    /// CARGO_BUILD_JOBS.
    pub jobs: Option<u32>,
    /// umask of the build.
    pub umask: Option<String>,
}

impl Variation {
    /// One line per varied input, for reports.
    pub fn describe(&self) -> Vec<String> {
        let mut d = Vec::new();
        if let Some(s) = &self.src_dir {
            d.push(format!("source at {s} in the builder"));
        }
        if !self.env.is_empty() {
            d.push(format!(
                "env {}",
                self.env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        if let Some(h) = &self.hostname {
            d.push(format!("hostname {h}"));
        }
        if let Some(j) = self.jobs {
            d.push(format!("CARGO_BUILD_JOBS={j}"));
        }
        if let Some(u) = &self.umask {
            d.push(format!("umask {u}"));
        }
        d
    }
}

/// Everything that decides the binary and the image. Serialized into the cache key.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    #[serde(skip)]
    pub project: PathBuf,
    #[serde(skip)]
    pub verbose: bool,
    /// Throw-away cache volumes (a cold build), removed afterwards.
    #[serde(skip)]
    pub fresh: Option<String>,
    /// Deliberate variation (kiln verify); never part of the cache key.
    #[serde(skip)]
    pub variation: Option<Variation>,
    pub backend: Backend,
    pub package: Option<String>,
    pub package_name: String,
    pub package_version: String,
    pub bin: String,
    pub features: Vec<String>,
    pub no_default_features: bool,
    pub profile: String,
    pub target: String,
    pub rustflags: Vec<String>,
    pub env: BTreeMap<String, String>,
    #[serde(skip)]
    pub ca_bundle: Option<PathBuf>,
    pub builder: Option<PinnedImage>,
    pub timestamp: Timestamp,
    pub recipe: String,
    pub recipe_text: String,
    pub image: ImagePlan,
}

/// The image side of the plan, validated.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub base: String,
    pub base_digest: Option<Digest>,
    pub entrypoint: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub user: String,
    pub workdir: Option<String>,
    pub ports: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub stop_signal: Option<String>,
    /// (src relative to the project, dest, mode)
    pub files: Vec<(String, String, Option<u32>)>,
    pub passwd: bool,
    pub ca_bundle: bool,
    pub tmp: bool,
    pub bin_path: String,
}

impl Plan {
    /// Where the source sits inside the builder.
    pub fn src_dir(&self) -> String {
        self.variation
            .as_ref()
            .and_then(|v| v.src_dir.clone())
            .unwrap_or_else(|| source::SRC_DIR.to_string())
    }

    /// Environment common to both phases.
    pub fn base_env(&self, cargo_home: &str, target_dir: &str) -> Vec<String> {
        let mut env = vec![
            format!("CARGO_HOME={cargo_home}"),
            format!("CARGO_TARGET_DIR={target_dir}"),
            format!("SOURCE_DATE_EPOCH={}", self.timestamp.0),
            "CARGO_INCREMENTAL=0".into(),
            "CARGO_TERM_COLOR=never".into(),
            "TZ=UTC".into(),
            "LANG=C.UTF-8".into(),
            "LC_ALL=C.UTF-8".into(),
        ];
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        if let Some(v) = &self.variation {
            env.extend(v.env.iter().map(|(k, val)| format!("{k}={val}")));
            if let Some(j) = v.jobs {
                env.push(format!("CARGO_BUILD_JOBS={j}"));
            }
        }
        env
    }

    /// `cargo fetch` argv (without `cargo`).
    pub fn fetch_args(&self, manifest: &str) -> Vec<String> {
        vec![
            "cargo".into(),
            "fetch".into(),
            "--locked".into(),
            "--manifest-path".into(),
            manifest.into(),
            "--target".into(),
            self.target.clone(),
        ]
    }

    /// `cargo build` arguments (without `cargo`).
    pub fn build_args(&self) -> Vec<String> {
        let mut a = vec![
            "build".into(),
            "--locked".into(),
            "--offline".into(),
            "--target".into(),
            self.target.clone(),
            "--profile".into(),
            self.profile.clone(),
            "--bin".into(),
            self.bin.clone(),
        ];
        if let Some(p) = &self.package {
            a.extend(["--package".into(), p.clone()]);
        }
        if !self.features.is_empty() {
            a.extend(["--features".into(), self.features.join(",")]);
        }
        if self.no_default_features {
            a.push("--no-default-features".into());
        }
        a
    }

    /// The directory cargo writes the profile's outputs to.
    pub fn profile_dir(&self) -> &str {
        match self.profile.as_str() {
            "dev" | "test" => "debug",
            "bench" => "release",
            p => p,
        }
    }

    /// The full RUSTFLAGS: recipe and user flags, plus path remapping so no
    /// build path reaches the binary.
    pub fn rustflags_for(&self, src: &str, cargo_home: &str) -> Vec<String> {
        let mut f = self.rustflags.clone();
        f.push(format!("--remap-path-prefix={src}=/build"));
        f.push(format!("--remap-path-prefix={cargo_home}=/cargo"));
        f
    }

    /// Name of the target-dir cache volume: per builder and project identity,
    /// shared by every checkout of the project.
    pub fn target_volume(&self, pinned: &PinnedImage) -> String {
        let key = format!(
            "{}|{}|{}|{}",
            pinned.digest, self.package_name, self.target, self.profile
        );
        format!(
            "kiln-target-{}{}",
            &Digest::of(key.as_bytes()).hex()[..16],
            self.volume_suffix()
        )
    }

    /// Name of the cargo-home cache volume (registry and git caches).
    pub fn cargo_volume(&self, pinned: &PinnedImage) -> String {
        format!("kiln-cargo-{}{}", &pinned.digest.hex()[..16], self.volume_suffix())
    }

    fn volume_suffix(&self) -> String {
        self.fresh.as_ref().map(|f| format!("-fresh-{f}")).unwrap_or_default()
    }
}

/// What a builder hands back.
#[derive(Debug)]
pub struct Artifacts {
    pub binary: Vec<u8>,
    /// The builder's CA bundle, when it has one.
    pub ca_bundle: Option<Vec<u8>>,
    /// `rustc -V` of the toolchain that built it.
    pub toolchain: String,
}

/// Reads the builder's out dir (as a tar from the archive API).
pub(crate) fn artifacts_from_tar(tar_bytes: &[u8], bin: &str) -> Result<Artifacts> {
    let mut ar = tar::Archive::new(tar_bytes);
    let mut binary = None;
    let mut ca = None;
    let mut toolchain = String::new();
    let entries = ar
        .entries()
        .map_err(|e| Error::format("builder output", e.to_string()))?;
    for e in entries {
        let mut e = e.map_err(|e| Error::format("builder output", e.to_string()))?;
        let name = e.path().map_err(|e| Error::format("builder output", e.to_string()))?;
        let name = name
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut buf = Vec::new();
        e.read_to_end(&mut buf)
            .map_err(|e| Error::format("builder output", e.to_string()))?;
        match name.as_str() {
            "binary" => binary = Some(buf),
            "ca.crt" => ca = Some(buf),
            "toolchain" => toolchain = String::from_utf8_lossy(&buf).trim().to_string(),
            _ => {}
        }
    }
    Ok(Artifacts {
        binary: binary.ok_or_else(|| Error::format("builder output", format!("binary `{bin}` missing")))?,
        ca_bundle: ca,
        toolchain,
    })
}

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub project: PathBuf,
    pub locked: bool,
    pub backend: Option<Backend>,
    pub builder: Option<String>,
    pub no_cache: bool,
    /// Build from empty cache volumes (implies no_cache); they are removed after.
    pub fresh: bool,
    pub outs: Vec<ImageRef>,
    pub verbose: bool,
    pub timestamp: Option<Timestamp>,
    /// Deliberate variation of the build (kiln verify).
    pub variation: Option<Variation>,
    /// Write and push images even when scan finds errors.
    pub allow_scan_failures: bool,
}

/// What a build produced.
#[derive(Debug)]
pub struct BuildResult {
    pub image: Image,
    pub cache_hit: bool,
    pub lock_state: &'static str,
    pub toolchain: String,
    pub toolchain_pinned: bool,
    pub timings: Vec<(&'static str, f64)>,
    pub outputs: Vec<ImageRef>,
    pub plan: Plan,
    pub scan: crate::scan::Report,
}

/// The default output of `kiln build`.
pub fn default_out(project: &Path, version: &str) -> ImageRef {
    let tag = if crate::reference::valid_tag(version) {
        Some(version.to_string())
    } else {
        None
    };
    ImageRef::Oci {
        dir: project.join("target/kiln/image"),
        tag,
    }
}

/// The SOURCE_DATE_EPOCH of a build: the env var, else the last commit
/// time of the project's git repository, else 0.
pub fn source_date_epoch(project: &Path) -> Result<Timestamp> {
    if let Ok(v) = std::env::var("SOURCE_DATE_EPOCH")
        && !v.is_empty()
    {
        return Timestamp::parse(&v);
    }
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(project)
        .args(["log", "-1", "--pretty=%ct"])
        .output();
    Ok(match out {
        Ok(o) if o.status.success() => Timestamp::parse(String::from_utf8_lossy(&o.stdout).trim()).unwrap_or_default(),
        _ => Timestamp(0),
    })
}

fn spanned_str(s: &Option<Spanned<String>>) -> Option<(String, std::ops::Range<usize>)> {
    s.as_ref().map(|v| (v.get_ref().clone(), v.span()))
}

/// Reads kiln.toml, Cargo.toml and the recipe and validates them into a plan
/// (without the builder pin, which needs the lock).
pub fn plan(req: &BuildRequest) -> Result<(Plan, Option<String>)> {
    let toml_path = req.project.join("kiln.toml");
    let (cfg, text): (KilnToml, String) = KilnToml::load(&toml_path)?;
    let src = Source {
        file: &toml_path,
        text: &text,
    };
    let at = |span: std::ops::Range<usize>, msg: String| Error::Config(src.error(span, msg));

    let recipe_name = spanned_str(&cfg.image.recipe).unwrap_or(("scratch-static".into(), 0..0));
    let recipe: Recipe = recipe::get(&recipe_name.0).map_err(|e| at(recipe_name.1.clone(), e.to_string()))?;

    let package_arg = spanned_str(&cfg.build.package);
    let pkg =
        project::find(&req.project, package_arg.as_ref().map(|p| p.0.as_str())).map_err(|e| match &package_arg {
            Some((_, span)) => at(span.clone(), e.to_string()),
            None => e,
        })?;
    let bin = match spanned_str(&cfg.build.bin) {
        Some((b, span)) => {
            if !pkg.bins.contains(&b) {
                return Err(at(
                    span,
                    format!(
                        "package `{}` has no binary `{b}`; binaries: {}",
                        pkg.name,
                        pkg.bins.join(", ")
                    ),
                ));
            }
            b
        }
        None => match pkg.bins.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(Error::invalid(
                    "project",
                    pkg.dir.display().to_string(),
                    format!("package `{}` has no binary target (src/main.rs or [[bin]])", pkg.name),
                ));
            }
            many if many.contains(&pkg.name) => pkg.name.clone(),
            many => {
                return Err(Error::invalid(
                    "kiln.toml",
                    toml_path.display().to_string(),
                    format!(
                        "several binaries ({}); choose one with [build] bin = \"NAME\"",
                        many.join(", ")
                    ),
                ));
            }
        },
    };
    let backend = match req.backend {
        Some(b) => b,
        None => match spanned_str(&cfg.build.backend) {
            None => Backend::Docker,
            Some((b, _)) if b == "docker" => Backend::Docker,
            Some((b, _)) if b == "host" => Backend::Host,
            Some((b, span)) => return Err(at(span, format!("unknown backend `{b}`; write \"docker\" or \"host\""))),
        },
    };
    let profile = spanned_str(&cfg.build.profile)
        .map(|p| p.0)
        .unwrap_or_else(|| "release".into());
    let target = match spanned_str(&cfg.build.target) {
        Some((t, span)) => {
            if t.split('-').count() < 3 || t.contains(char::is_whitespace) {
                return Err(at(
                    span,
                    format!("`{t}` is not a target triple; e.g. x86_64-unknown-linux-gnu"),
                ));
            }
            t
        }
        None => recipe.target.clone(),
    };
    let mut rustflags = recipe.rustflags.clone();
    rustflags.extend(cfg.build.rustflags.iter().cloned());
    let ca_bundle = match spanned_str(&cfg.build.ca_bundle) {
        Some((p, span)) => {
            let path = req.project.join(&p);
            if !path.is_file() {
                return Err(at(
                    span,
                    format!("CA bundle `{p}` does not exist; give a PEM file or remove ca_bundle"),
                ));
            }
            Some(path)
        }
        None => ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file()),
    };
    let env = cfg
        .build
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.get_ref().clone()))
        .collect();

    // The image side.
    let im = &cfg.image;
    let base = spanned_str(&im.base).unwrap_or((recipe.base.clone(), 0..0));
    if base.0 != "scratch" {
        let span = if im.base.is_some() {
            base.1.clone()
        } else {
            recipe_name.1.clone()
        };
        match ImageRef::parse(&base.0) {
            Ok(ImageRef::Oci { .. }) | Ok(ImageRef::Registry(_)) | Ok(ImageRef::DockerArchive { .. }) => {}
            Ok(_) => {
                return Err(at(
                    span,
                    format!("base `{}`: use scratch, oci:DIR[:TAG] or a registry reference", base.0),
                ));
            }
            Err(e) => return Err(at(span, format!("base `{}`: {e}", base.0))),
        }
    }
    let user = match spanned_str(&im.user) {
        Some((u, span)) => {
            assemble::check_user(&u).map_err(|e| at(span, e.to_string()))?;
            u
        }
        None => recipe.user.clone(),
    };
    let workdir = match spanned_str(&im.workdir) {
        Some((w, span)) if !w.starts_with('/') => {
            return Err(at(span, format!("workdir `{w}` must be absolute, e.g. \"/{w}\"")));
        }
        other => other.map(|w| w.0),
    };
    let mut ports = Vec::new();
    for p in &im.ports {
        let text = match p.get_ref() {
            PortValue::Number(n) => n.to_string(),
            PortValue::Text(t) => t.clone(),
        };
        ports.push(assemble::parse_port(&text).map_err(|e| at(p.span(), e.to_string()))?);
    }
    let stop_signal = match spanned_str(&im.stop_signal) {
        Some((s, span)) => {
            assemble::check_signal(&s).map_err(|e| at(span, e.to_string()))?;
            Some(s)
        }
        None => None,
    };
    let mut files = Vec::new();
    for f in &im.files {
        let v = f.get_ref();
        let mode = match &v.mode {
            Some(m) => Some(u32::from_str_radix(m, 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| {
                at(
                    f.span(),
                    format!("mode `{m}` is not octal permission bits; write e.g. \"0644\""),
                )
            })?),
            None => None,
        };
        crate::layer::tree::normalize_dest(&v.dest).map_err(|r| at(f.span(), format!("dest `{}`: {r}", v.dest)))?;
        if Path::new(&v.src).is_absolute() || v.src.split('/').any(|c| c == "..") {
            return Err(at(
                f.span(),
                format!("src `{}` must be a path inside the project, without `..`", v.src),
            ));
        }
        if !req.project.join(&v.src).exists() {
            return Err(at(f.span(), format!("src `{}` does not exist in the project", v.src)));
        }
        files.push((v.src.clone(), v.dest.clone(), mode));
    }
    for (k, _) in im.env.iter().chain(im.labels.iter()) {
        if k.is_empty() || k.contains('=') || k.contains(char::is_whitespace) {
            return Err(Error::Config(src.error(
                0..0,
                format!("key `{k}` in [image] env/labels must be non-empty without `=` or spaces"),
            )));
        }
    }
    let bin_path = format!("{}/{}", recipe.bin_dir.trim_end_matches('/'), bin);
    let mut labels: Vec<(String, String)> = vec![
        ("org.opencontainers.image.title".into(), pkg.name.clone()),
        ("org.opencontainers.image.version".into(), pkg.version.clone()),
    ];
    for (k, v) in &im.labels {
        labels.retain(|(lk, _)| lk != k);
        labels.push((k.clone(), v.clone()));
    }
    let image = ImagePlan {
        base: base.0,
        base_digest: None,
        entrypoint: im.entrypoint.clone().unwrap_or_else(|| vec![bin_path.clone()]),
        cmd: im.cmd.clone(),
        env: im.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        user,
        workdir,
        ports,
        labels,
        stop_signal,
        files,
        passwd: recipe.passwd,
        ca_bundle: recipe.ca_bundle,
        tmp: recipe.tmp,
        bin_path,
    };
    let timestamp = match req.timestamp {
        Some(t) => t,
        None => source_date_epoch(&req.project)?,
    };
    let builder_ref = req
        .builder
        .clone()
        .or_else(|| spanned_str(&cfg.build.builder).map(|b| b.0));
    if backend == Backend::Docker && builder_ref.is_none() {
        return Err(Error::Config(src.error(
            0..0,
            "no builder image: set [build] builder = \"REGISTRY/REPO:TAG\" (scripts/dev-env.sh prints a local one), \
             pass --builder, or use --backend host",
        )));
    }
    let plan = Plan {
        project: req.project.clone(),
        verbose: req.verbose,
        variation: req.variation.clone(),
        fresh: req.fresh.then(|| {
            format!(
                "{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            )
        }),
        backend,
        package: package_arg.map(|p| p.0),
        package_name: pkg.name,
        package_version: pkg.version,
        bin,
        features: cfg.build.features.clone(),
        no_default_features: cfg.build.no_default_features,
        profile,
        target,
        rustflags,
        env,
        ca_bundle,
        builder: None,
        timestamp,
        recipe: recipe.name.clone(),
        recipe_text: recipe.text.to_string(),
        image,
    };
    Ok((plan, builder_ref))
}

/// Resolves a tag to a digest: through the registry (kiln's own client),
/// else through the engine for images that exist only there.
fn resolve_reference(reference: &str, platform: &Platform) -> Result<Digest> {
    let via_registry = crate::store::registry::RegistryRef::parse(reference)
        .and_then(|r| crate::store::registry::resolve(&r, Some(platform)));
    match via_registry {
        Ok(d) => Ok(d),
        Err(registry_err) => {
            let rt = crate::store::daemon::runtime()?;
            rt.block_on(async {
                let d = crate::store::daemon::connect()?;
                docker::resolve(&d, reference).await
            })
            .map_err(|engine_err| {
                Error::invalid(
                    "image reference",
                    reference,
                    format!("cannot resolve it to a digest: {registry_err}; and through the engine: {engine_err}"),
                )
            })
        }
    }
}

/// Pins one reference through the lock; `None` when it needs no pin.
fn pin_one(
    lock: &mut Lock,
    role: &str,
    reference: &str,
    platform: &Platform,
    locked: bool,
    update: bool,
    lock_path: &Path,
) -> Result<Digest> {
    if let Some((_, d)) = reference.split_once('@') {
        return d.parse();
    }
    let key = platform.to_string();
    if let Some(d) = lock.get(role, reference, &key)
        && !update
    {
        return Ok(d.clone());
    }
    if locked {
        return Err(Error::invalid(
            "kiln.lock",
            lock_path.display().to_string(),
            format!("{role} `{reference}` is not pinned and --locked forbids changing the lock; run `kiln lock`"),
        ));
    }
    let digest = resolve_reference(reference, platform)?;
    lock.set(role, reference, &key, digest.clone());
    Ok(digest)
}

/// Pins the builder and the base through kiln.lock (resolving and recording
/// them when allowed). Returns the lock state.
pub fn pin(plan: &mut Plan, builder_ref: Option<&str>, locked: bool, update: bool) -> Result<&'static str> {
    let lock_path = plan.project.join("kiln.lock");
    let existing = Lock::load(&lock_path)?;
    let mut lock = existing.clone().unwrap_or_default();
    let platform = Platform::host();
    if let Some(r) = builder_ref {
        let digest = pin_one(&mut lock, "builder", r, &platform, locked, update, &lock_path)?;
        plan.builder = Some(PinnedImage {
            reference: r.to_string(),
            digest,
        });
    }
    let base = plan.image.base.clone();
    let base_is_registry = matches!(ImageRef::parse(&base), Ok(ImageRef::Registry(_)));
    if base_is_registry {
        plan.image.base_digest = Some(pin_one(
            &mut lock, "base", &base, &platform, locked, update, &lock_path,
        )?);
    }
    // Pins no longer used go away, so the lock says exactly what the build uses.
    let used_builder = plan.builder.as_ref().map(|b| b.reference.clone());
    lock.retain(|i| match i.role.as_str() {
        "builder" => Some(&i.reference) == used_builder.as_ref(),
        "base" => base_is_registry && i.reference == base,
        _ => true,
    });
    let state = match &existing {
        None if lock.images.is_empty() => "none",
        None => "created",
        Some(old) if *old == lock => "unchanged",
        Some(_) => "updated",
    };
    if matches!(state, "created" | "updated") {
        if locked {
            return Err(Error::invalid(
                "kiln.lock",
                lock_path.display().to_string(),
                "the lock would change and --locked forbids it; run `kiln lock` and commit kiln.lock",
            ));
        }
        lock.save(&lock_path)?;
    }
    Ok(state)
}

/// The directory of kiln's caches.
pub fn cache_dir() -> PathBuf {
    if let Ok(d) = std::env::var("KILN_CACHE_DIR") {
        return PathBuf::from(d);
    }
    let base = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/tmp".into())).join(".cache"));
    base.join("kiln")
}

/// Hash of the plan and the source content: the input-addressed cache key.
pub fn cache_key(plan: &Plan, source: &Tree) -> Result<Digest> {
    let opts = LayerOptions {
        timestamp: Timestamp(0),
        uid: 0,
        gid: 0,
        compression: Compression::None,
    };
    let (info, _) = crate::layer::write_layer_to(source, &opts, std::io::sink(), &|_| {})?;
    let mut h = HashingWriter::new(std::io::sink());
    use std::io::Write;
    let _ = writeln!(
        h,
        "kiln-build-cache v1 kiln {} format {}",
        env!("CARGO_PKG_VERSION"),
        crate::ASSEMBLY_FORMAT_VERSION
    );
    let _ = h.write_all(&crate::oci::canonical_json(plan));
    let _ = writeln!(h, "\nsource {}", info.diff_id);
    Ok(h.finish().1)
}

/// Runs a whole build.
pub fn build(req: &BuildRequest, progress: &Progress) -> Result<BuildResult> {
    let mut timings = Vec::new();
    let t0 = Instant::now();
    let (mut plan, builder_ref) = plan(req)?;
    let lock_state = pin(&mut plan, builder_ref.as_deref(), req.locked, false)?;
    // Registry pushes come after the local outputs; with only pushes, the
    // default local output is written too.
    let mut outs = req.outs.clone();
    if outs.iter().all(|o| matches!(o, ImageRef::Registry(_))) {
        outs.insert(0, default_out(&req.project, &plan.package_version));
    }
    outs.sort_by_key(|o| matches!(o, ImageRef::Registry(_)));
    let sinks = outs.iter().map(crate::store::sink_for).collect::<Result<Vec<_>>>()?;

    let source_tree = source::collect(&req.project, source::SRC_DIR)?;
    let key = cache_key(&plan, &source_tree)?;
    timings.push(("plan", t0.elapsed().as_secs_f64()));
    let cache = cache_dir().join("images");
    let cache_tag = key.hex();
    let cached = if req.no_cache || req.fresh {
        None
    } else {
        crate::store::layout::read(&cache, Some(&cache_tag), None).ok()
    };
    let toolchain_pinned = plan.backend == Backend::Docker;
    let (image, cache_hit, toolchain) = match cached {
        Some(img) => (img, true, String::from("(cached)")),
        None => {
            let t = Instant::now();
            let artifacts = match plan.backend {
                Backend::Docker => {
                    let pinned = plan.builder.clone().expect("docker backend has a pinned builder");
                    let staging = tempfile::tempdir().map_err(|e| Error::Io {
                        context: "temp dir".into(),
                        source: e,
                    })?;
                    let tar_path = staging.path().join("source.tar");
                    let mut upload = if plan.src_dir() == source::SRC_DIR {
                        source_tree.clone()
                    } else {
                        source::collect(&plan.project, &plan.src_dir())?
                    };
                    if let Some(ca) = &plan.ca_bundle {
                        let bytes = std::fs::read(ca).map_err(Error::read(ca))?;
                        upload.add_bytes("/kiln/ca.crt", bytes, 0o644, "ca bundle")?;
                    }
                    // Sources go in with the current time as mtime so cargo's
                    // freshness check always sees them as new: a warm target
                    // cache can never serve a stale crate. mtimes never reach
                    // the binary; the cache key above uses fixed ones.
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let opts = LayerOptions {
                        timestamp: Timestamp(now),
                        uid: 0,
                        gid: 0,
                        compression: Compression::None,
                    };
                    crate::layer::write_layer(&upload, &opts, &tar_path, &|_| {})?;
                    docker::build(&plan, &pinned, &tar_path, progress)?
                }
                Backend::Host => host::build(&plan, progress)?,
            };
            timings.push(("compile", t.elapsed().as_secs_f64()));
            let t = Instant::now();
            let image = assemble_image(&plan, &artifacts, progress)?;
            timings.push(("assemble", t.elapsed().as_secs_f64()));
            // Into the cache, so the next identical build skips the engine
            // (not a deliberately varied one: that is verify's to judge).
            let stored = match plan.variation {
                Some(_) => Ok(()),
                None => crate::store::layout::LayoutSink::new(&cache, Some(cache_tag.clone())).put(&image),
            };
            if let Err(e) = stored {
                eprintln!(
                    "kiln: warning: could not store the build in the cache {} ({e})",
                    cache.display()
                );
            }
            (image, false, artifacts.toolchain)
        }
    };
    // Will it start? A failing image is not written or pushed.
    let t = Instant::now();
    let report = crate::scan::scan(&image, crate::scan::Options::default())?;
    timings.push(("scan", t.elapsed().as_secs_f64()));
    if report.failed() && !req.allow_scan_failures {
        let count = report
            .findings
            .iter()
            .filter(|f| f.severity == crate::scan::Severity::Error)
            .count();
        return Err(Error::ScanFailed {
            count,
            report: Box::new(report),
        });
    }
    let t = Instant::now();
    for sink in &sinks {
        sink.put(&image)?;
    }
    timings.push(("write", t.elapsed().as_secs_f64()));
    Ok(BuildResult {
        image,
        cache_hit,
        lock_state,
        toolchain,
        toolchain_pinned,
        timings,
        outputs: outs,
        plan,
        scan: report,
    })
}

use crate::store::Sink as _;

/// Puts the binary and the recipe's files into an image.
pub fn assemble_image(plan: &Plan, artifacts: &Artifacts, progress: &Progress) -> Result<Image> {
    let im = &plan.image;
    let mut extra = Tree::new();
    let staging = tempfile::tempdir().map_err(|e| Error::Io {
        context: "temp dir".into(),
        source: e,
    })?;
    let bin_file = staging.path().join("binary");
    std::fs::write(&bin_file, &artifacts.binary).map_err(Error::write(&bin_file))?;
    extra.add_host_file(
        &im.bin_path,
        bin_file,
        artifacts.binary.len() as u64,
        0o755,
        "the built binary",
    )?;
    let (uid, gid) = im.user.split_once(':').unwrap_or((&im.user, &im.user));
    if im.passwd {
        let (u, g) = (uid.parse::<u32>().unwrap_or(65532), gid.parse::<u32>().unwrap_or(65532));
        let passwd =
            format!("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{u}:{g}:nonroot:/home/nonroot:/sbin/nologin\n");
        let group = format!("root:x:0:\nnonroot:x:{g}:\n");
        extra.add_bytes("/etc/passwd", passwd.into_bytes(), 0o644, "recipe")?;
        extra.add_bytes("/etc/group", group.into_bytes(), 0o644, "recipe")?;
    }
    if im.ca_bundle
        && let Some(ca) = &artifacts.ca_bundle
    {
        extra.add_bytes(
            "/etc/ssl/certs/ca-certificates.crt",
            ca.clone(),
            0o644,
            "builder CA bundle",
        )?;
    }
    if im.tmp {
        extra.add_dir("/tmp", 0o1777, "recipe")?;
    }
    let mut spec = AssembleSpec::new(Platform::host());
    spec.base = match (&im.base_digest, ImageRef::parse(&im.base)?) {
        (Some(d), ImageRef::Registry(mut r)) => {
            r.digest = Some(d.clone());
            ImageRef::Registry(r)
        }
        (_, other) => other,
    };
    spec.extra = extra;
    spec.adds = im
        .files
        .iter()
        .map(|(src, dest, mode)| AddSpec {
            src: plan.project.join(src),
            dest: crate::layer::tree::normalize_dest(dest).unwrap_or_default(),
            mode: *mode,
        })
        .collect();
    spec.entrypoint = Some(im.entrypoint.clone());
    spec.cmd = im.cmd.clone();
    spec.env = im.env.clone();
    spec.user = Some(im.user.clone());
    spec.workdir = im.workdir.clone();
    spec.labels = im.labels.clone();
    spec.ports = im.ports.clone();
    spec.stop_signal = im.stop_signal.clone();
    spec.layer = LayerOptions {
        timestamp: plan.timestamp,
        uid: 0,
        gid: 0,
        compression: Compression::default(),
    };
    let image = assemble::assemble(&spec, None, progress)?;
    drop(staging);
    Ok(image)
}
