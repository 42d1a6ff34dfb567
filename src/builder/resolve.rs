//! Resolving a build: kiln.toml, Cargo.toml and the recipe read and
//! validated into a [`Plan`] (every error with file:line:column and a fix).

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::plan::{ImagePlan, Inputs, Plan, confine, git_timestamp};
use super::{Backend, BuildRequest, host, project};
use crate::config::recipe::{self, Recipe};
use crate::config::{ImageSection, KilnToml, PortValue, Source};
use crate::oci::Platform;
use crate::reference::ImageRef;
use crate::settings::{Port, Signal, User};
use crate::{Error, Result};

fn spanned_str(s: &Option<Spanned<String>>) -> Option<(String, std::ops::Range<usize>)> {
    s.as_ref().map(|v| (v.get_ref().clone(), v.span()))
}

/// Reads kiln.toml, Cargo.toml and the recipe and validates them into a plan
/// (without the builder pin, which needs the lock). Also returns the builder
/// reference to pin.
pub fn resolve(req: &BuildRequest) -> Result<(Plan, Option<String>)> {
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
    // kiln builds with --locked: the lock is an input, never made up on the way.
    if !req.project.join("Cargo.lock").is_file() {
        return Err(Error::invalid(
            "project",
            req.project.display().to_string(),
            "there is no Cargo.lock: kiln builds with --locked, so the lock file is an input; \
             run `cargo generate-lockfile` (or any cargo build) in the project and commit Cargo.lock",
        ));
    }
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
            // The host backend runs the project's build scripts on this
            // machine: only the user (--backend host) may choose it.
            Some((b, span)) if b == "host" => {
                return Err(at(
                    span,
                    "backend = \"host\" runs this project's build scripts and proc macros on this machine; \
                     kiln.toml cannot choose that: pass --backend host yourself to allow it"
                        .into(),
                ));
            }
            Some((b, span)) => return Err(at(span, format!("unknown backend `{b}`; write \"docker\" or \"host\""))),
        },
    };
    let profile = spanned_str(&cfg.build.profile)
        .map(|p| p.0)
        .unwrap_or_else(|| "release".into());
    let platform = req.platform.clone().unwrap_or_else(Platform::host).normalized();
    let target = match spanned_str(&cfg.build.target) {
        Some((_, span)) if cfg.build.platforms.len() > 1 || req.platforms.len() > 1 => {
            return Err(at(
                span,
                "target names one triple but several platforms are built; remove target (each platform's comes from the recipe)"
                    .into(),
            ));
        }
        Some((t, span)) => {
            // It reaches the builder's shell script: a triple's characters only.
            if t.split('-').count() < 3
                || !t
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
            {
                return Err(at(
                    span,
                    format!("`{t}` is not a target triple; e.g. x86_64-unknown-linux-gnu"),
                ));
            }
            t
        }
        None => recipe.target(&platform)?,
    };
    let mut rustflags = recipe.rustflags.clone();
    rustflags.extend(cfg.build.rustflags.iter().cloned());
    // The user's side (--ca-bundle, KILN_CA_BUNDLE) wins; the project may
    // only name a file inside itself; else the host's bundle.
    // Which cache is used, and whether it is written, is the runner's
    // decision, never the project's: `--cache REF` reads and writes (unless
    // --cache-mode read); `[build] cache` is used only when the command line
    // asks for it with --cache-mode, and only ever read: a project must not
    // choose where the runner's credentials write, nor swap its own build
    // for a prebuilt image.
    use crate::store::registry::cache::{Mode, RemoteCache};
    let remote_cache = match (&req.cache, spanned_str(&cfg.build.cache)) {
        (Some(c), _) => Some(RemoteCache::parse(c, req.cache_mode.unwrap_or(Mode::ReadWrite))?),
        (None, Some((c, span))) => match req.cache_mode {
            None => None,
            Some(Mode::Read) => Some(RemoteCache::parse(&c, Mode::Read).map_err(|e| at(span, e.to_string()))?),
            Some(Mode::ReadWrite) => {
                return Err(at(
                    span,
                    "--cache-mode readwrite writes only a cache named on the command line: pass --cache REF \
                     (a project's kiln.toml cache can only be read, with --cache-mode read)"
                        .into(),
                ));
            }
        },
        (None, None) => None,
    };
    let ca_bundle = match (&req.ca_bundle, spanned_str(&cfg.build.ca_bundle)) {
        (Some(p), _) => {
            if !p.is_file() {
                return Err(Error::invalid(
                    "--ca-bundle",
                    p.display().to_string(),
                    "not a file; give a PEM bundle (e.g. /etc/ssl/certs/ca-certificates.crt)",
                ));
            }
            Some(p.clone())
        }
        (None, Some((p, span))) => {
            let path = confine(&req.project, &p).map_err(|e| at(span.clone(), format!("ca_bundle: {e}")))?;
            if !path.is_file() {
                return Err(at(
                    span,
                    format!("CA bundle `{p}` is not a file; give a PEM file in the project or remove ca_bundle"),
                ));
            }
            Some(path)
        }
        (None, None) => ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
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

    let image = resolve_image(
        &cfg.image,
        &src,
        &recipe,
        recipe_name.1.clone(),
        &req.project,
        &pkg,
        &bin,
    )?;
    let timestamp = match req.timestamp {
        Some(t) => t,
        None => git_timestamp(&req.project),
    };
    let builder_ref = req
        .builder
        .clone()
        .or_else(|| spanned_str(&cfg.build.builder).map(|b| b.0));
    // No builder named: the official Rust image for the project's toolchain.
    let (builder_ref, builder_origin) = match (backend, builder_ref) {
        (Backend::Docker, None) => {
            let d = super::toolchain::default_builder(&req.project, &pkg)?;
            (Some(d.reference), Some(d.source))
        }
        (_, b) => (b, None),
    };
    let host_toolchain = match backend {
        Backend::Host => Some(host::toolchain_identity()?),
        Backend::Docker => None,
    };
    let plan = Plan {
        inputs: Inputs {
            backend,
            package: package_arg.map(|p| p.0),
            package_name: pkg.name,
            package_version: pkg.version,
            bin,
            features: cfg.build.features.clone(),
            no_default_features: cfg.build.no_default_features,
            profile,
            platform,
            target,
            rustflags,
            env,
            builder: None,
            timestamp,
            recipe: recipe.name.clone(),
            recipe_text: recipe.text.to_string(),
            image,
            host_toolchain,
        },
        project: req.project.clone(),
        builder_origin,
        verbose: req.verbose,
        variation: req.variation.clone(),
        ca_bundle,
        proxy_env: req.proxy_env.clone(),
        remote_cache_ignored: remote_cache.is_none() && cfg.build.cache.is_some(),
        remote_cache,
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
    };
    Ok((plan, builder_ref))
}

/// The platforms to build: `--platform` flags, else `[build] platforms`,
/// else the host's; normalized (arm64 is arm64/v8), sorted, each once.
pub fn platforms(req: &BuildRequest) -> Result<Vec<Platform>> {
    let mut out: Vec<Platform> = if !req.platforms.is_empty() {
        req.platforms.clone()
    } else {
        let toml_path = req.project.join("kiln.toml");
        let (cfg, text) = KilnToml::load(&toml_path)?;
        let src = Source {
            file: &toml_path,
            text: &text,
        };
        let mut v = Vec::new();
        for p in &cfg.build.platforms {
            let parsed = Platform::parse(p.get_ref()).map_err(|e| Error::Config(src.error(p.span(), e.to_string())))?;
            parsed
                .rust_arch()
                .map_err(|e| Error::Config(src.error(p.span(), e.to_string())))?;
            v.push(parsed);
        }
        if v.is_empty() {
            v.push(Platform::host());
        }
        v
    };
    for p in &out {
        p.rust_arch()?;
    }
    out = out.into_iter().map(|p| p.normalized()).collect();
    out.sort_by_key(|p| p.to_string());
    out.dedup();
    Ok(out)
}

/// A `.git` at or below `path`, if any.
fn vcs_inside(path: &Path) -> Option<PathBuf> {
    if path.file_name().is_some_and(|n| n == ".git") {
        return Some(path.to_path_buf());
    }
    if !path.is_dir() {
        return None;
    }
    let walker = ignore::WalkBuilder::new(path)
        .standard_filters(false)
        .hidden(false)
        .follow_links(false)
        .build();
    walker
        .flatten()
        .find(|e| e.file_name() == ".git")
        .map(|e| e.path().to_path_buf())
}

/// The `[image]` side of kiln.toml over the recipe's defaults, validated.
fn resolve_image(
    im: &ImageSection,
    src: &Source,
    recipe: &Recipe,
    recipe_span: std::ops::Range<usize>,
    project: &Path,
    pkg: &project::Package,
    bin: &str,
) -> Result<ImagePlan> {
    let at = |span: std::ops::Range<usize>, msg: String| Error::Config(src.error(span, msg));
    let mut base = spanned_str(&im.base).unwrap_or((recipe.base.clone(), 0..0));
    if base.0 != "scratch" {
        let span = if im.base.is_some() {
            base.1.clone()
        } else {
            recipe_span.clone()
        };
        match ImageRef::parse(&base.0) {
            Ok(ImageRef::Registry(_)) => {}
            // A local base named by kiln.toml is the project's own file:
            // confined like every other path (never another project's
            // layout or kiln's cache), resolved against the project.
            Ok(ImageRef::Oci { dir, tag }) => {
                let real =
                    confine(project, &dir.to_string_lossy()).map_err(|e| at(span.clone(), format!("base: {e}")))?;
                base.0 = ImageRef::Oci { dir: real, tag }.to_string();
            }
            Ok(ImageRef::DockerArchive { file, name }) => {
                let real =
                    confine(project, &file.to_string_lossy()).map_err(|e| at(span.clone(), format!("base: {e}")))?;
                base.0 = ImageRef::DockerArchive { file: real, name }.to_string();
            }
            Ok(_) => {
                return Err(at(
                    span,
                    format!("base `{}`: use scratch, oci:DIR[:TAG] or a registry reference", base.0),
                ));
            }
            Err(e) => return Err(at(span, format!("base `{}`: {e}", base.0))),
        }
    }
    // `user = ""` keeps the base's user, as a Dockerfile without USER does.
    let user = match spanned_str(&im.user) {
        Some((u, _)) if u.is_empty() => None,
        Some((u, span)) => Some(User::parse(&u, "[image] user").map_err(|e| at(span, e.to_string()))?),
        None => Some(User::parse(&recipe.user, "the recipe's user")?),
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
        ports.push(Port::parse(&text, "[image] ports").map_err(|e| at(p.span(), e.to_string()))?);
    }
    let healthcheck = match &im.healthcheck {
        Some(h) => {
            let v = h.get_ref();
            Some(
                crate::settings::healthcheck(
                    &v.cmd,
                    v.interval.as_deref(),
                    v.timeout.as_deref(),
                    v.start_period.as_deref(),
                    v.retries,
                    "[image] healthcheck",
                )
                .map_err(|e| at(h.span(), e.to_string()))?,
            )
        }
        None => None,
    };
    let stop_signal = match spanned_str(&im.stop_signal) {
        Some((s, span)) => Some(Signal::parse(&s, "[image] stop_signal").map_err(|e| at(span, e.to_string()))?),
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
        if !project.join(&v.src).exists() {
            return Err(at(f.span(), format!("src `{}` does not exist in the project", v.src)));
        }
        let real = confine(project, &v.src).map_err(|e| at(f.span(), format!("src: {e}")))?;
        // VCS data holds credentials (actions/checkout keeps the job token
        // in .git/config): it never goes into an image from kiln.toml.
        if let Some(git) = vcs_inside(&real) {
            return Err(at(
                f.span(),
                format!(
                    "src `{}` contains {}: version-control data (and the credentials in it) never goes into an image; name the files or directory you mean",
                    v.src,
                    git.display()
                ),
            ));
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
    let bin_path = match spanned_str(&im.binary) {
        Some((b, span)) => {
            let norm = crate::layer::tree::normalize_dest(&b)
                .ok()
                .filter(|n| b.starts_with('/') && !n.is_empty())
                .ok_or_else(|| {
                    at(
                        span,
                        format!("binary `{b}` must be an absolute file path in the image, e.g. \"/app/{bin}\""),
                    )
                })?;
            format!("/{}", norm.trim_start_matches('/'))
        }
        None => format!("{}/{}", recipe.bin_dir.trim_end_matches('/'), bin),
    };
    let mut labels: Vec<(String, String)> = vec![
        ("org.opencontainers.image.title".into(), pkg.name.clone()),
        ("org.opencontainers.image.version".into(), pkg.version.clone()),
    ];
    for (k, v) in &im.labels {
        labels.retain(|(lk, _)| lk != k);
        labels.push((k.clone(), v.clone()));
    }
    Ok(ImagePlan {
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
        healthcheck,
        files,
        passwd: recipe.passwd,
        ca_bundle: recipe.ca_bundle,
        tmp: recipe.tmp,
        bin_path,
    })
}
