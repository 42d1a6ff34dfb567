//! `kiln build`: kiln.toml + Cargo project → pinned builder → binary →
//! assembled [`Image`]. The parts: [`plan`] (config → [`plan::Inputs`], the
//! cache key), [`pin`] (kiln.lock), a [`Builder`] ([`docker`] or [`host`])
//! that compiles, and the assembly. [`build`] returns the image; the caller
//! scans it and hands it to one [`crate::store::Outputs`] sink — the build
//! never knows how many destinations there are. An identical build is
//! answered from the input-addressed cache without touching the engine.

pub mod deps;
pub mod docker;
pub mod host;
pub mod pin;
pub mod plan;
pub mod project;
pub mod resolve;
pub mod script;
pub mod source;
pub mod toolchain;

use std::io::Read;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

pub use pin::LockState;
pub use plan::{Inputs, Plan, Variation};

use crate::assemble::{self, AssembleSpec};
use crate::context::Context;
use crate::digest::{Digest, HashingWriter};
use crate::image::Image;
use crate::layer::{AddSpec, Compression, LayerOptions, Tree};
use crate::oci::Platform;
use crate::reference::{ImageRef, RegistryRef};
use crate::store::Sink as _;
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
    /// `repo@sha256:…`, the form that runs.
    pub fn by_digest(&self) -> String {
        match RegistryRef::parse(&self.reference) {
            Ok(r) => {
                let r = r.by_digest(&self.digest);
                format!("{}/{}@{}", r.registry, r.repository, self.digest)
            }
            // Not a registry name (an engine-only image): keep it as written.
            Err(_) => {
                let name = self.reference.split('@').next().unwrap_or(&self.reference);
                let repo = match name.rsplit_once(':') {
                    Some((r, t)) if !t.contains('/') => r,
                    _ => name,
                };
                format!("{repo}@{}", self.digest)
            }
        }
    }
}

/// Compiles a plan's binary. The docker backend runs the pinned builder
/// image; the host backend the host's cargo.
pub trait Builder {
    /// Builds the binary from the project's source tree.
    fn compile(&self, plan: &Plan, source: &Tree) -> Result<Artifacts>;
}

/// What a builder hands back.
#[derive(Debug)]
pub struct Artifacts {
    pub binary: Vec<u8>,
    /// The builder's CA bundle, when it has one.
    pub ca_bundle: Option<Vec<u8>>,
    /// `rustc -V` of the toolchain that built it.
    pub toolchain: String,
    /// `cargo metadata` for the build's target and features (the SBOM's
    /// crates); None when cargo could not give it.
    pub metadata: Option<Vec<u8>>,
    /// Where the compile's time went (`--json` timings `compile.*`).
    pub phases: Vec<(&'static str, f64)>,
    /// What the registry cache's dependency layer did: `restored`, `stored`.
    pub deps_cache: Option<&'static str>,
    /// The dependency layer exported after the build, to be stored.
    pub deps_layer: Option<crate::layer::LayerInfo>,
}

/// Reads the builder's out dir (as a tar from the archive API).
/// The most kiln copies out of a builder (the binary and two small files).
pub(crate) const MAX_OUTPUT: u64 = 1 << 30;

/// Reads the builder's out dir: exactly `out/binary`, `out/ca.crt` and
/// `out/toolchain` (bounded), anything else refused.
pub(crate) fn artifacts_from_tar(tar_bytes: &[u8], bin: &str) -> Result<Artifacts> {
    let mut ar = tar::Archive::new(tar_bytes);
    let mut binary = None;
    let mut ca = None;
    let mut toolchain = String::new();
    let mut metadata = None;
    let entries = ar
        .entries()
        .map_err(|e| Error::format("builder output", e.to_string()))?;
    for e in entries {
        let mut e = e.map_err(|e| Error::format("builder output", e.to_string()))?;
        let name = e.path().map_err(|e| Error::format("builder output", e.to_string()))?;
        let name = name.to_string_lossy().trim_end_matches('/').to_string();
        let limit = match name.as_str() {
            "out" => continue,
            "out/binary" => MAX_OUTPUT,
            "out/ca.crt" => 16 << 20,
            "out/toolchain" => 64 << 10,
            "out/metadata.json" => crate::attest::crates::MAX_METADATA,
            other => {
                return Err(Error::format(
                    "builder output",
                    format!("unexpected `{other}` (only the binary, the CA bundle and the toolchain come out)"),
                ));
            }
        };
        if e.size() > limit {
            return Err(Error::format(
                "builder output",
                format!("{name} is {} bytes, over {limit}", e.size()),
            ));
        }
        let mut buf = Vec::new();
        e.read_to_end(&mut buf)
            .map_err(|e| Error::format("builder output", e.to_string()))?;
        match name.as_str() {
            "out/binary" => binary = Some(buf),
            "out/ca.crt" => ca = Some(buf),
            "out/metadata.json" => metadata = Some(buf),
            _ => toolchain = String::from_utf8_lossy(&buf).trim().to_string(),
        }
    }
    Ok(Artifacts {
        binary: binary.ok_or_else(|| Error::format("builder output", format!("binary `{bin}` missing")))?,
        ca_bundle: ca,
        toolchain,
        metadata,
        phases: Vec::new(),
        deps_cache: None,
        deps_layer: None,
    })
}

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub project: std::path::PathBuf,
    pub locked: bool,
    pub backend: Option<Backend>,
    pub builder: Option<String>,
    pub no_cache: bool,
    /// Build from empty cache volumes (implies no_cache); they are removed after.
    pub fresh: bool,
    pub verbose: bool,
    pub timestamp: Option<Timestamp>,
    /// Deliberate variation of the build (kiln verify).
    pub variation: Option<Variation>,
    /// HTTP(S)_PROXY/NO_PROXY for the fetch phase.
    pub proxy_env: Vec<(String, String)>,
    /// A CA bundle from the user's side (flag or environment), for the fetch
    /// phase; overrides `[build] ca_bundle`.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// `--platform`, repeatable (empty: `[build] platforms`, else the host's).
    pub platforms: Vec<Platform>,
    /// The one platform a [`build`] call makes (None: the host's); set by
    /// [`build_all`] for each platform.
    pub platform: Option<Platform>,
    /// `--cache REF`: a registry build cache (overrides `[build] cache`).
    pub cache: Option<String>,
    /// `--cache-mode` (default: read-write for `--cache`, read for `[build] cache`).
    pub cache_mode: Option<crate::store::registry::cache::Mode>,
}

/// What a build produced.
#[derive(Debug)]
pub struct BuildResult {
    pub image: Image,
    pub cache_hit: bool,
    /// Where a hit came from: `local` (this machine's cache) or `registry`.
    pub cache_source: Option<&'static str>,
    /// The registry cache entry a hit came from (`REPO@DIGEST`), for the provenance.
    pub cache_entry: Option<String>,
    /// What the registry cache's compiled-dependencies layer did for a
    /// miss: `restored` into a new target volume, or `stored` after it.
    pub deps_cache: Option<&'static str>,
    pub lock_state: LockState,
    pub toolchain: String,
    pub toolchain_pinned: bool,
    pub timings: Vec<(&'static str, f64)>,
    pub plan: Plan,
    /// The crates compiled in (None: cargo metadata failed).
    pub crates: Option<crate::attest::crates::CrateGraph>,
    /// The digest of the source tree as kiln uploads it (an uncompressed
    /// tar, fixed mtimes): what was built, whatever git says.
    pub source_digest: Digest,
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

/// Hash of the plan's inputs and the source content: the input-addressed
/// cache key; and the source tree's own digest (the provenance names it).
pub fn cache_key(plan: &Plan, source: &Tree) -> Result<(Digest, Digest)> {
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
    let _ = h.write_all(&crate::oci::canonical_json(&plan.inputs));
    let _ = writeln!(h, "\nsource {}", info.diff_id);
    Ok((h.finish().1, info.diff_id))
}

/// What a build of every platform produced.
#[derive(Debug)]
pub struct BuildAll {
    /// One image, or (several platforms) an index over one image each.
    pub image: crate::image::AnyImage,
    /// Each platform's build, ordered by platform.
    pub builds: Vec<BuildResult>,
}

impl BuildAll {
    /// The lock state over every platform's pinning.
    pub fn lock_state(&self) -> LockState {
        let states: Vec<LockState> = self.builds.iter().map(|b| b.lock_state).collect();
        [LockState::Created, LockState::Updated, LockState::Unchanged]
            .into_iter()
            .find(|s| states.contains(s))
            .unwrap_or(LockState::None)
    }
}

/// Builds every platform the request or kiln.toml names (one fetch: the
/// cargo-home volume and its marker are shared; one target volume, so
/// build scripts and proc macros compile once), then puts several
/// platforms under one index.
pub fn build_all(ctx: &Context, req: &BuildRequest) -> Result<BuildAll> {
    let platforms = resolve::platforms(req)?;
    let mut builds = Vec::new();
    for p in &platforms {
        let one = BuildRequest {
            platform: Some(p.clone()),
            ..req.clone()
        };
        builds.push(build(ctx, &one)?);
    }
    let image = if builds.len() == 1 {
        crate::image::AnyImage::Image(builds[0].image.clone())
    } else {
        crate::image::AnyImage::Index(crate::image::ImageIndex::new(
            builds.iter().map(|b| b.image.clone()).collect(),
        )?)
    };
    builds.sort_by_key(|b| b.image.platform().to_string());
    Ok(BuildAll { image, builds })
}

/// Runs a whole build of one platform and returns the image (not yet
/// scanned or written).
pub fn build(ctx: &Context, req: &BuildRequest) -> Result<BuildResult> {
    let progress = &ctx.progress;
    let mut timings = Vec::new();
    let t0 = Instant::now();
    let (mut plan, builder_ref) = resolve::resolve(req)?;
    let lock_state = pin::pin(ctx, &mut plan, builder_ref.as_deref(), req.locked, false)?;
    let source_tree = source::collect(&req.project, source::SRC_DIR)?;
    let (key, source_digest) = cache_key(&plan, &source_tree)?;
    timings.push(("plan", t0.elapsed().as_secs_f64()));
    let cache = ctx.cache.images()?;
    let cache_tag = key.hex();
    let crates_file = ctx.cache.crates()?.join(format!("{cache_tag}.json"));
    // One local entry: the image and its crate list (an entry from before
    // kiln kept crates is rebuilt once).
    let local_entry = |tag: &str, crates_file: &Path| {
        crate::store::layout::read(&cache, Some(tag), None)
            .ok()
            .and_then(|img| {
                let bytes = crate::image::read_regular(crates_file, crate::attest::crates::MAX_METADATA).ok()?;
                let crates: Option<crate::attest::crates::CrateGraph> = serde_json::from_slice(&bytes).ok()?;
                Some((img, crates))
            })
    };
    let cached = if req.no_cache || req.fresh {
        None
    } else {
        local_entry(&cache_tag, &crates_file)
    };
    let mut cache_source = cached.as_ref().map(|_| "local");
    let mut cache_entry = None;
    // The registry cache, by the full key, when this machine has no entry.
    let remote = if req.no_cache || req.fresh || plan.variation.is_some() {
        None
    } else {
        plan.remote_cache.as_ref()
    };
    if plan.remote_cache_ignored {
        progress.warn("kiln.toml names a registry cache ([build] cache); it is used only with --cache-mode read");
    }
    let cached = match (cached, remote) {
        (Some(c), _) => {
            // A writer with a warm machine still fills the shared cache.
            if let Some(rc) = remote.filter(|rc| rc.mode == crate::store::registry::cache::Mode::ReadWrite)
                && !matches!(crate::store::registry::cache::exists(ctx, rc, &key), Ok(true))
            {
                let doc = serde_json::to_vec(&c.1).expect("serializable");
                if let Err(e) = crate::store::registry::cache::store(ctx, rc, &key, &c.0, &doc) {
                    progress.warn(&format!(
                        "could not write the build to the registry cache {} ({e})",
                        rc.repo
                    ));
                }
            }
            Some(c)
        }
        (None, Some(rc)) => {
            // What a registry gave is kept apart from what was built here,
            // under the cache's name: it is reused only with that same cache.
            let copy_tag = format!(
                "{cache_tag}-r{}",
                &Digest::of(rc.repo.to_string().as_bytes()).hex()[..16]
            );
            let copy_crates = ctx.cache.crates()?.join(format!("{copy_tag}.json"));
            if let Some(c) = local_entry(&copy_tag, &copy_crates) {
                cache_source = Some("registry");
                Some(c)
            } else {
                let t = Instant::now();
                let found = crate::store::registry::cache::lookup(ctx, rc, &key);
                timings.push(("cache-lookup", t.elapsed().as_secs_f64()));
                let usable = match found {
                    Ok(Some((img, doc, entry))) => {
                        let crates = serde_json::from_slice::<Option<crate::attest::crates::CrateGraph>>(&doc);
                        match crates {
                            Ok(crates) if img.platform() == plan.platform => Some((img, crates, doc, entry)),
                            Ok(_) => {
                                progress.warn(&format!(
                                    "the registry cache {} has an entry for this key built for {}, not {}; building",
                                    rc.repo,
                                    img.platform(),
                                    plan.platform
                                ));
                                None
                            }
                            Err(e) => {
                                progress.warn(&format!(
                                    "the registry cache {}'s entry has an unreadable crate list ({e}); building",
                                    rc.repo
                                ));
                                None
                            }
                        }
                    }
                    Ok(None) => None,
                    Err(e) => {
                        progress.warn(&format!(
                            "the registry cache {} could not be read ({e}); building",
                            rc.repo
                        ));
                        None
                    }
                };
                usable.map(|(img, crates, doc, entry)| {
                    if crate::store::layout::LayoutSink::new(&cache, Some(copy_tag.clone()))
                        .put(&img)
                        .is_ok()
                    {
                        let _ = std::fs::create_dir_all(copy_crates.parent().expect("a bucket"));
                        let _ = crate::store::blob::write_atomic(&copy_crates, &doc);
                    }
                    cache_source = Some("registry");
                    cache_entry = Some(format!("{}@{entry}", rc.repo));
                    (img, crates)
                })
            }
        }
        (None, None) => None,
    };
    let toolchain_pinned = plan.backend == Backend::Docker;
    let mut deps_cache = None;
    let (image, cache_hit, toolchain, crates) = match cached {
        Some((img, crates)) => (img, true, String::from("(cached)"), crates),
        None => {
            let t = Instant::now();
            let builder: Box<dyn Builder> = match plan.backend {
                Backend::Docker => Box::new(docker::DockerBuilder::new(ctx)?),
                Backend::Host => Box::new(host::HostBuilder::new(progress)),
            };
            let artifacts = builder.compile(&plan, &source_tree)?;
            timings.push(("compile", t.elapsed().as_secs_f64()));
            timings.extend(artifacts.phases.iter().copied());
            deps_cache = artifacts.deps_cache;
            let t = Instant::now();
            let image = assemble_image(ctx, &plan, &artifacts)?;
            timings.push(("assemble", t.elapsed().as_secs_f64()));
            let crates = crates_of(&plan, &artifacts, progress)?;
            // Into the cache, so the next identical build skips the engine
            // (not a deliberately varied one: that is verify's to judge).
            if plan.variation.is_none()
                && let Err(e) = crate::store::layout::LayoutSink::new(&cache, Some(cache_tag.clone())).put(&image)
            {
                progress.warn(&format!(
                    "could not store the build in the cache {} ({e})",
                    cache.display()
                ));
            } else if plan.variation.is_none() {
                let _ = std::fs::create_dir_all(crates_file.parent().expect("a bucket"));
                if let Err(e) =
                    crate::store::blob::write_atomic(&crates_file, &serde_json::to_vec(&crates).expect("serializable"))
                {
                    progress.warn(&format!("could not store the crate list in the cache ({e})"));
                }
            }
            if let Some(rc) = remote.filter(|rc| rc.mode == crate::store::registry::cache::Mode::ReadWrite) {
                let t = Instant::now();
                let doc = serde_json::to_vec(&crates).expect("serializable");
                if let Err(e) = crate::store::registry::cache::store(ctx, rc, &key, &image, &doc) {
                    progress.warn(&format!(
                        "could not write the build to the registry cache {} ({e})",
                        rc.repo
                    ));
                }
                timings.push(("cache-store", t.elapsed().as_secs_f64()));
            }
            (image, false, artifacts.toolchain, crates)
        }
    };
    Ok(BuildResult {
        image,
        cache_hit,
        cache_source,
        cache_entry,
        deps_cache,
        lock_state,
        toolchain,
        toolchain_pinned,
        timings,
        plan,
        crates,
        source_digest,
    })
}

/// The crate graph from the builder's `cargo metadata` and the project's
/// Cargo.lock. A build without it still succeeds (its SBOM lists no
/// crates, and says so); unreadable metadata is the builder's fault and an error.
fn crates_of(
    plan: &Plan,
    artifacts: &Artifacts,
    progress: &crate::progress::Progress,
) -> Result<Option<crate::attest::crates::CrateGraph>> {
    let Some(md) = &artifacts.metadata else {
        progress.warn("cargo metadata gave nothing: the SBOM will list no crates");
        return Ok(None);
    };
    let lock_path = plan.project.join("Cargo.lock");
    let lock = crate::image::read_regular(&lock_path, 64 << 20)?;
    let lock = String::from_utf8(lock).map_err(|_| Error::format(lock_path.display().to_string(), "not UTF-8"))?;
    crate::attest::crates::from_metadata(md, &lock, &plan.bin, plan.package.as_deref()).map(Some)
}

/// Puts the binary and the recipe's files into an image.
pub fn assemble_image(ctx: &Context, plan: &Plan, artifacts: &Artifacts) -> Result<Image> {
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
    if im.passwd {
        let (u, g) = im.user.as_ref().map(crate::settings::User::ids).unwrap_or((None, None));
        let (u, g) = (u.unwrap_or(65532), g.unwrap_or(65532));
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
    let mut spec = AssembleSpec::new(plan.platform.clone());
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
    spec.user = im.user.clone();
    // `user = ""`: the base's user, as a Dockerfile without USER has it.
    spec.base_user = im.user.is_none();
    spec.workdir = im.workdir.clone();
    spec.labels = im.labels.clone();
    spec.ports = im.ports.clone();
    spec.stop_signal = im.stop_signal.clone();
    spec.healthcheck = im.healthcheck.clone();
    spec.layer = LayerOptions {
        timestamp: plan.timestamp,
        uid: 0,
        gid: 0,
        compression: Compression::default(),
    };
    let image = assemble::assemble(ctx, &spec, None)?;
    drop(staging);
    Ok(image)
}
