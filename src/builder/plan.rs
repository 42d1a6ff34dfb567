//! The plan of a build: [`Inputs`] (everything that decides the bytes, the
//! cache key) and the run's own settings; resolved from kiln.toml,
//! Cargo.toml and the recipe by [`super::resolve`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{Backend, PinnedImage, source};
use crate::digest::Digest;
use crate::settings::{Port, Signal, User};
use crate::time::Timestamp;
use serde::Serialize;

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

/// Everything that decides the binary and the image: serialized (and only
/// this) into the input-addressed cache key.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub backend: Backend,
    pub package: Option<String>,
    pub package_name: String,
    pub package_version: String,
    pub bin: String,
    pub features: Vec<String>,
    pub no_default_features: bool,
    pub profile: String,
    /// The image's platform (its target follows from it and the recipe).
    pub platform: crate::oci::Platform,
    pub target: String,
    pub rustflags: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub builder: Option<PinnedImage>,
    /// `rustc -vV` of the host toolchain (host backend): a toolchain update
    /// must not be answered with the old compiler's binary.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_toolchain: Option<String>,
    pub timestamp: Timestamp,
    pub recipe: String,
    pub recipe_text: String,
    pub image: ImagePlan,
}

/// A resolved build: its [`Inputs`] plus how this run goes (where the
/// project is, throw-away volumes, deliberate variation), which never
/// changes the intended bytes and is not part of the cache key.
#[derive(Debug, Clone)]
pub struct Plan {
    pub inputs: Inputs,
    /// Why the builder is the default one (None: the user named it).
    pub builder_origin: Option<String>,
    pub project: PathBuf,
    pub verbose: bool,
    /// Throw-away cache volumes (a cold build), removed afterwards.
    pub fresh: Option<String>,
    /// Deliberate variation (kiln verify).
    pub variation: Option<Variation>,
    /// The CA bundle given to the fetch phase (the host's side, never the project's).
    pub ca_bundle: Option<PathBuf>,
    /// HTTP(S)_PROXY/NO_PROXY for the fetch phase.
    pub proxy_env: Vec<(String, String)>,
    /// The registry build cache (not an input: it only says where results live).
    pub remote_cache: Option<crate::store::registry::cache::RemoteCache>,
    /// kiln.toml names a cache the command line did not ask to use.
    pub remote_cache_ignored: bool,
}

// The inputs are read everywhere the plan is; deref keeps `plan.target`
// short while the cache key stays exactly `plan.inputs`.
impl std::ops::Deref for Plan {
    type Target = Inputs;
    fn deref(&self) -> &Inputs {
        &self.inputs
    }
}

impl std::ops::DerefMut for Plan {
    fn deref_mut(&mut self) -> &mut Inputs {
        &mut self.inputs
    }
}

/// The image side of the plan, validated.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    pub base: String,
    pub base_digest: Option<Digest>,
    pub entrypoint: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    /// None: the base's user stays (`user = ""`).
    pub user: Option<User>,
    pub workdir: Option<String>,
    pub ports: Vec<Port>,
    pub labels: Vec<(String, String)>,
    pub stop_signal: Option<Signal>,
    /// Absent from the cache key unless set (older keys stay valid).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<crate::oci::Healthcheck>,
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

    /// The fetch phase's environment: kiln's fixed settings only, nothing
    /// from the project (the fetch has network; project settings such as a
    /// RUSTC_WRAPPER must not run there).
    pub fn fetch_env(&self, cargo_home: &str, target_dir: &str) -> Vec<String> {
        self.fixed_env(cargo_home, target_dir)
    }

    /// Environment of the build phase: kiln's fixed settings, then the
    /// project's [build] env, then a verify variation.
    pub fn base_env(&self, cargo_home: &str, target_dir: &str) -> Vec<String> {
        let mut env = self.fixed_env(cargo_home, target_dir);
        env.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        if let Some(v) = &self.variation {
            env.extend(v.env.iter().map(|(k, val)| format!("{k}={val}")));
            if let Some(j) = v.jobs {
                env.push(format!("CARGO_BUILD_JOBS={j}"));
            }
        }
        env
    }

    fn fixed_env(&self, cargo_home: &str, target_dir: &str) -> Vec<String> {
        vec![
            format!("CARGO_HOME={cargo_home}"),
            format!("CARGO_TARGET_DIR={target_dir}"),
            format!("SOURCE_DATE_EPOCH={}", self.timestamp.0),
            "CARGO_INCREMENTAL=0".into(),
            "CARGO_TERM_COLOR=never".into(),
            "TZ=UTC".into(),
            "LANG=C.UTF-8".into(),
            "LC_ALL=C.UTF-8".into(),
        ]
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
        a.extend(self.feature_args());
        a
    }

    fn feature_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if !self.features.is_empty() {
            a.extend(["--features".into(), self.features.join(",")]);
        }
        if self.no_default_features {
            a.push("--no-default-features".into());
        }
        a
    }

    /// `cargo metadata` arguments (without `cargo`) that resolve the
    /// build's dependency graph: its target and features, offline, for the SBOM.
    pub fn metadata_args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--offline",
            "--filter-platform",
        ]
        .map(String::from)
        .into();
        a.push(self.target.clone());
        a.extend(self.feature_args());
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
        // Not keyed by target: cargo keeps each target's output apart
        // (target/<triple>/), and the host-side build scripts and proc
        // macros compile once for every platform.
        let key = format!("{}|{}|{}", pinned.digest, self.package_name, self.profile);
        format!(
            "kiln-target-{}{}{}",
            &Digest::of(key.as_bytes()).hex()[..16],
            self.target_suffix(),
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

    /// A build that writes a shared registry cache compiles in a target
    /// volume of its own: artifacts another (maybe untrusted) build left in
    /// the common one must not reach every runner through the cache.
    /// Keyed by the cache (which the command line names): another project
    /// with the same package name writing another cache on this engine must
    /// not compile into the volume this cache's layer is exported from.
    fn target_suffix(&self) -> String {
        match &self.remote_cache {
            Some(rc) if rc.mode == crate::store::registry::cache::Mode::ReadWrite => format!(
                "-cache-writer-{}",
                &Digest::of(rc.repo.to_string().as_bytes()).hex()[..12]
            ),
            _ => String::new(),
        }
    }
}

/// The timestamp of a build when SOURCE_DATE_EPOCH is not set: the last
/// commit time of the project's git repository, else 0.
pub fn git_timestamp(project: &Path) -> Timestamp {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(project)
        .args(["log", "-1", "--pretty=%ct"])
        .output();
    match out {
        Ok(o) if o.status.success() => Timestamp::parse(String::from_utf8_lossy(&o.stdout).trim()).unwrap_or_default(),
        _ => Timestamp(0),
    }
}

/// `rel` resolved inside the project, symlinks followed: a path that ends
/// up outside the canonical project root (an absolute path, `..`, or a
/// symlink to a host file) is refused, naming both ends. In CI building a
/// pull request, the project must not be able to publish the runner's files.
pub fn confine(project: &Path, rel: &str) -> std::result::Result<PathBuf, String> {
    if Path::new(rel).is_absolute() || rel.split('/').any(|c| c == "..") {
        return Err(format!("`{rel}` must be a path inside the project, without `..`"));
    }
    let root = project
        .canonicalize()
        .map_err(|e| format!("the project {}: {e}", project.display()))?;
    let joined = project.join(rel);
    let real = joined.canonicalize().map_err(|e| format!("`{rel}`: {e}"))?;
    if !real.starts_with(&root) {
        return Err(format!(
            "`{rel}` resolves to {}, outside the project {}; a project may only add its own files",
            real.display(),
            root.display()
        ));
    }
    Ok(real)
}
