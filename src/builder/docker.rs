//! The `docker` builder backend (bollard; Engine 20.10 and newer, Podman's
//! Docker-compatible socket). Two containers from the pinned builder image:
//! a fetch phase with network (`cargo fetch --locked` into a cache volume,
//! with the CA bundle for TLS-intercepting proxies), then a build phase with
//! no network at fixed paths. Source goes in and artifacts come out as tar
//! streams through the archive API; containers are removed on success,
//! failure and Ctrl-C.
//!
//! One responsibility: the two phases and their containers are one protocol
//! with the engine (what goes in is `super::source`'s, the shell they run
//! `super::script`'s, the dependency layer `super::deps`').

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, LogsOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::script;
use super::source;
use super::{Artifacts, Builder, PinnedImage, Plan};
use crate::context::Context;
use crate::layer::{Compression, LayerOptions, Tree};
use crate::progress::Progress;
use crate::reference::RegistryRef;
use crate::store::daemon;
use crate::time::Timestamp;
use crate::{Error, Result};

/// The docker backend: the pinned builder image on the engine DOCKER_HOST names.
pub struct DockerBuilder {
    /// For pulling the builder through kiln's own registry client.
    ctx: Context,
    progress: Progress,
    /// Where the "this volume fetched this Cargo.lock" markers live.
    fetched: std::path::PathBuf,
}

impl DockerBuilder {
    pub fn new(ctx: &Context) -> Result<Self> {
        Ok(DockerBuilder {
            ctx: ctx.clone(),
            progress: ctx.progress,
            fetched: ctx.cache.fetched()?,
        })
    }
}

impl Builder for DockerBuilder {
    fn compile(&self, plan: &Plan, source_tree: &Tree) -> Result<Artifacts> {
        let pinned = plan.builder.clone().ok_or_else(|| {
            Error::invalid(
                "builder",
                "(none)",
                "the docker backend needs a builder image; set [build] builder",
            )
        })?;
        let staging = tempfile::tempdir().map_err(|e| Error::Io {
            context: "temp dir".into(),
            source: e,
        })?;
        let t = std::time::Instant::now();
        let tar_path = staging.path().join("source.tar");
        let upload = if plan.src_dir() == source::SRC_DIR {
            source_tree.clone()
        } else {
            source::collect(&plan.project, &plan.src_dir())?
        };

        // Sources go in with the current time as mtime so cargo's freshness
        // check always sees them as new: a warm target cache can never serve
        // a stale crate. mtimes never reach the binary; the cache key uses
        // fixed ones.
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
        let fetch_path = staging.path().join("fetch.tar");
        let mut fetch_upload = source::fetch_tree(&upload)?;
        // The CA bundle (for a TLS-intercepting proxy) goes to the fetch
        // phase only: the build phase has no network to trust anyone on.
        if let Some(ca) = &plan.ca_bundle {
            let bytes = std::fs::read(ca).map_err(Error::read(ca))?;
            fetch_upload.add_bytes(CA_PATH, bytes, 0o644, "ca bundle")?;
        }
        crate::layer::write_layer(&fetch_upload, &opts, &fetch_path, &|_| {})?;
        let tars = Tars {
            build: &tar_path,
            fetch: &fetch_path,
        };
        let source_s = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let image = ensure_builder(&self.ctx, &pinned)?;
        let builder_s = t.elapsed().as_secs_f64();
        let t = std::time::Instant::now();
        let job = super::deps::prepare(&self.ctx, plan, &pinned, &build_env(plan), &rustflags(plan));
        let deps_s = t.elapsed().as_secs_f64();
        let export_to = staging.path().join("deps.layer");
        let mut a = build(
            &self.ctx.engine,
            plan,
            &pinned,
            &image,
            tars,
            &self.progress,
            &self.fetched,
            job.as_ref().map(|j| (j, export_to.as_path())),
        )?;
        a.phases.splice(
            0..0,
            [
                ("compile.source", source_s),
                ("compile.builder-image", builder_s),
                ("compile.deps-lookup", deps_s),
            ],
        );
        if let (Some(job), Some(info)) = (&job, a.deps_layer.take()) {
            let t = std::time::Instant::now();
            let sp = self
                .progress
                .spinner("writing the compiled dependencies to the registry cache");
            match super::deps::store(&self.ctx, plan, job, info, export_to) {
                Ok(()) => a.deps_cache = Some("stored"),
                Err(e) => self.progress.warn(&format!(
                    "could not write the compiled dependencies to the registry cache {} ({e})",
                    job.cache.repo
                )),
            }
            sp.finish_and_clear();
            a.phases.push(("compile.deps-store", t.elapsed().as_secs_f64()));
        }
        Ok(a)
    }
}

/// Makes the pinned builder present in the engine; returns the image ID to
/// run. kiln pulls it itself (registries.conf/daemon.json mirrors, kiln's
/// credentials, every blob checked against the pinned digest) and loads it:
/// the engine never reaches out to a registry for kiln, so a builder behind
/// a mirror works even when the engine has no mirror configured. Containers
/// start from the image ID, never a tag someone could move: an ID the
/// engine resolved from `repo@digest`, or the config digest of the image
/// kiln loaded, recorded in kiln's own cache (0700) and checked against the
/// engine's image before each use.
fn ensure_builder(ctx: &Context, pinned: &PinnedImage) -> Result<String> {
    let by_digest = pinned.by_digest();
    let record = ctx.cache.loaded()?.join(pinned.digest.hex());
    let recorded = std::fs::read_to_string(&record).ok().map(|s| s.trim().to_string());
    let rt = crate::store::daemon::runtime()?;
    let present = rt.block_on(async {
        let docker = crate::store::daemon::connect(&ctx.engine)?;
        // An engine that cannot be reached is said now, not after a pull.
        crate::store::engine::ping(&docker, &ctx.engine).await?;
        if let Ok(i) = docker.inspect_image(&by_digest).await
            && let Some(id) = i.id
        {
            return Ok::<_, Error>(Some(id));
        }
        if let Some(id) = &recorded
            && let Ok(i) = docker.inspect_image(id).await
            && i.id.as_deref() == Some(id.as_str())
        {
            return Ok(Some(id.clone()));
        }
        Ok(None)
    })?;
    if let Some(id) = present {
        return Ok(id);
    }
    let r = RegistryRef::parse(&pinned.reference).map_err(|_| Error::Engine {
        message: format!("the engine has no image {by_digest} and it names no registry to pull it from"),
    })?;
    let sp = ctx
        .progress
        .spinner(&format!("pulling the builder {}", pinned.reference));
    let image = crate::store::registry::pull(ctx, &r.by_digest(&pinned.digest), Some(&crate::oci::Platform::host()))?;
    // A readable name in `docker images`; runs go by ID.
    let name = format!("{}/{}:kiln-{}", r.registry, r.repository, &pinned.digest.hex()[..24]);
    sp.set_message(format!("loading the builder into the engine as {name}"));
    let sink = crate::store::daemon::DaemonSink::new(ctx.engine.clone(), crate::reference::DockerName::parse(&name)?);
    // The sink checks that the engine's image ID is the config digest.
    crate::store::Sink::put(&sink, &image)?;
    sp.finish_and_clear();
    let id = image.manifest().config.digest.to_string();
    if let Some(dir) = record.parent() {
        std::fs::create_dir_all(dir).map_err(Error::write(dir))?;
    }
    crate::store::blob::write_atomic(&record, id.as_bytes())?;
    Ok(id)
}

/// The two uploads: the whole project for the build phase, and for the
/// fetch phase (which has network) only what dependency resolution reads.
#[derive(Clone, Copy)]
struct Tars<'a> {
    build: &'a Path,
    fetch: &'a Path,
}

/// Label on every container and volume kiln creates.
pub const LABEL: &str = "dev.kiln.owner";

/// Fixed paths inside the builder.
pub(super) const CARGO_HOME: &str = "/kiln/cargo";
pub(super) const TARGET_DIR: &str = "/kiln/target";
pub(super) const OUT_DIR: &str = "/kiln/out";
const CA_PATH: &str = "/kiln/ca.crt";

fn engine_err(context: &str) -> impl FnOnce(bollard::errors::Error) -> Error + '_ {
    move |e| {
        let text = e.to_string();
        let hint = if text.contains("No such image") || text.contains("not found") {
            "; is the image pushed and the reference right? `kiln lock --update` re-resolves it"
        } else if text.contains("no space left") {
            "; the engine's disk is full: `docker system prune` frees space"
        } else if text.contains("connect") || text.contains("Connection refused") || text.contains("No such file") {
            "; is the engine running? start it or set DOCKER_HOST"
        } else {
            ""
        };
        Error::Engine {
            message: format!("{context}: {text}{hint}"),
        }
    }
}

/// Resolves an image reference (tag) to a digest through what the engine
/// already has (its recorded repo digest). It never pulls: the engine's
/// registry access is not kiln's (no mirrors, other credentials).
pub async fn resolve(docker: &Docker, reference: &str) -> Result<crate::digest::Digest> {
    let r = RegistryRef::parse(reference)?;
    let repo = format!("{}/{}", r.registry, r.repository);
    let info = docker
        .inspect_image(reference)
        .await
        .map_err(engine_err(&format!("inspecting {reference}")))?;
    let digests = info.repo_digests.unwrap_or_default();
    let found = digests
        .iter()
        .find_map(|d| {
            d.strip_prefix(&format!("{repo}@"))
                .or_else(|| d.strip_prefix(&format!("{}@", r.repository)))
        })
        .or_else(|| digests.first().and_then(|d| d.split_once('@').map(|(_, d)| d)))
        .ok_or_else(|| Error::Engine {
            message: format!("{reference} has no registry digest in the engine; push it to a registry first"),
        })?;
    found.parse()
}

/// Runs the fetch and build phases for `plan`; `source_tar` holds the
/// project (and CA bundle) as a tar to unpack at `/`.
#[allow(clippy::too_many_arguments)]
fn build(
    engine: &crate::store::engine::Engine,
    plan: &Plan,
    pinned: &PinnedImage,
    image: &str,
    tars: Tars<'_>,
    progress: &Progress,
    fetched: &Path,
    deps: Option<(&super::deps::Job, &Path)>,
) -> Result<Artifacts> {
    let rt = daemon::runtime()?;
    let created: Arc<Mutex<Vec<String>>> = Arc::default();
    rt.block_on(async {
        let docker = daemon::connect(engine)?;
        crate::store::engine::ping(&docker, engine).await?;
        let flow = run(
            &docker,
            plan,
            pinned,
            image,
            tars,
            progress,
            fetched,
            deps,
            created.clone(),
        );
        let r = tokio::select! {
            r = flow => r,
            _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
        };
        // Whatever happened, the containers go; cache volumes stay (they are
        // the cache) unless this was a fresh build.
        let ids: Vec<String> = created.lock().expect("container list").drain(..).collect();
        for id in ids {
            let opts = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
            let _ = docker.remove_container(&id, Some(opts)).await;
        }
        if plan.fresh.is_some() {
            for v in [plan.cargo_volume(pinned), plan.target_volume(pinned)] {
                let _ = docker
                    .remove_volume(&v, None::<bollard::query_parameters::RemoveVolumeOptions>)
                    .await;
            }
        }
        r
    })
}

/// The cache volumes of a phase. The build phase (project code runs there)
/// gets the cargo home read-only: it can use the fetched crate sources but
/// not rewrite them for the next project that compiles them.
fn mounts(plan: &Plan, pinned: &PinnedImage, with_target: bool) -> Vec<Mount> {
    let mut m = vec![Mount {
        target: Some(CARGO_HOME.into()),
        source: Some(plan.cargo_volume(pinned)),
        typ: Some(MountType::VOLUME),
        read_only: Some(with_target),
        ..Default::default()
    }];
    if with_target {
        m.push(Mount {
            target: Some(TARGET_DIR.into()),
            source: Some(plan.target_volume(pinned)),
            typ: Some(MountType::VOLUME),
            ..Default::default()
        });
    }
    m
}

#[allow(clippy::too_many_arguments)]
async fn run(
    docker: &Docker,
    plan: &Plan,
    pinned: &PinnedImage,
    image: &str,
    tars: Tars<'_>,
    progress: &Progress,
    fetched: &Path,
    deps: Option<(&super::deps::Job, &Path)>,
    created: Arc<Mutex<Vec<String>>>,
) -> Result<Artifacts> {
    for m in mounts(plan, pinned, true) {
        let name = m.source.expect("named volume");
        let req = bollard::models::VolumeCreateRequest {
            name: Some(name.clone()),
            labels: Some(HashMap::from([(LABEL.to_string(), "cache".to_string())])),
            ..Default::default()
        };
        docker
            .create_volume(req)
            .await
            .map_err(engine_err(&format!("creating cache volume {name}")))?;
    }

    // Phase 2 (build, no network) is defined first: its container is
    // created and filled (source, a dependency layer to restore) while
    // phase 1 runs.
    let umask = plan
        .variation
        .as_ref()
        .and_then(|v| v.umask.clone())
        .unwrap_or_else(|| "022".into());
    let restore = deps
        .and_then(|(j, _)| j.restore.as_ref())
        .and_then(|l| l.source.file())
        .map(|f| (f.to_path_buf(), daemon::name_suffix()));
    let put_in_place = match &restore {
        Some((_, nonce)) => super::deps::restore_script(TARGET_DIR, nonce, &plan.target, plan.profile_dir()),
        None => String::new(),
    };
    let script = script::build(plan, &umask, &put_in_place, restore.is_some());
    let mut env = build_env(plan);
    env.push(format!("CARGO_ENCODED_RUSTFLAGS={}", rustflags(plan).join("\x1f")));
    let build = Phase {
        name: "build",
        cmd: vec!["sh".into(), "-c".into(), script],
        env,
        network: false,
        with_target: true,
        restore,
    };

    // Phase 1: fetch, with network. Skipped when this cargo-home volume
    // already fetched this exact Cargo.lock (a marker on the host); if the
    // offline build then misses a crate anyway, kiln fetches and retries.
    let marker = fetch_marker(plan, pinned, fetched);
    let skipped_fetch = plan.fresh.is_none() && marker.as_ref().is_some_and(|m| m.exists());
    let mut phases = Vec::new();
    let t = std::time::Instant::now();
    let fetching = async {
        if !skipped_fetch {
            fetch(docker, plan, pinned, image, tars.fetch, progress, created.clone()).await?;
            if let Some(m) = &marker {
                let _ = std::fs::create_dir_all(m.parent().expect("marker has a parent"));
                let _ = std::fs::write(m, b"");
            }
        }
        Ok::<_, Error>(())
    };
    let filling = create_phase(
        docker,
        plan,
        pinned,
        image,
        &build,
        tars.build,
        progress,
        created.clone(),
    );
    let (fetched_r, build_id) = tokio::join!(fetching, filling);
    fetched_r?;
    let mut id = build_id?;
    phases.push(("compile.fetch", t.elapsed().as_secs_f64()));
    let t = std::time::Instant::now();
    let sp = progress.spinner("compiling (network off)");
    let (mut code, mut log) = start_phase(docker, plan, &build, &id, &sp).await?;
    sp.finish_and_clear();
    if code != 0 && skipped_fetch && missing_crates(&log) {
        // The cache volume lost crates since the marker was written: fetch, then build again.
        if let Some(m) = &marker {
            let _ = std::fs::remove_file(m);
        }
        fetch(docker, plan, pinned, image, tars.fetch, progress, created.clone()).await?;
        let sp = progress.spinner("compiling (network off)");
        (code, log, id) = run_phase(
            docker,
            plan,
            pinned,
            image,
            &build,
            tars.build,
            progress,
            &sp,
            created.clone(),
        )
        .await?;
        sp.finish_and_clear();
    }
    if code != 0 {
        return Err(Error::Build {
            message: format!("the build failed in the builder (exit {code}); the compiler said:"),
            output: log,
        });
    }
    phases.push(("compile.build", t.elapsed().as_secs_f64()));
    let t = std::time::Instant::now();
    // Artifacts leave as a tar stream.
    let opts = DownloadFromContainerOptionsBuilder::default().path(OUT_DIR).build();
    let mut s = docker.download_from_container(&id, Some(opts));
    // The out dir is written by project code (build scripts run in this
    // container): bounded while it streams.
    let mut tar_bytes = Vec::new();
    while let Some(chunk) = s.next().await {
        tar_bytes.extend_from_slice(&chunk.map_err(engine_err("copying the binary out of the builder"))?);
        if tar_bytes.len() as u64 > super::MAX_OUTPUT {
            return Err(Error::Build {
                message: format!(
                    "the builder's output is larger than {} bytes; is the binary really that big?",
                    super::MAX_OUTPUT
                ),
                output: String::new(),
            });
        }
    }
    let mut a = super::artifacts_from_tar(&tar_bytes, &plan.bin)?;
    phases.push(("compile.copy-out", t.elapsed().as_secs_f64()));
    if build.restore.is_some() && log.lines().any(|l| l == super::deps::RESTORED) {
        a.deps_cache = Some("restored");
    }
    if let Some((_, out)) = deps.filter(|(j, _)| j.export) {
        let t = std::time::Instant::now();
        let sp = progress.spinner("exporting the compiled dependencies");
        a.deps_layer =
            super::deps::export_after_build(docker, &id, TARGET_DIR, plan, a.metadata.as_deref(), out, progress).await;
        sp.finish_and_clear();
        phases.push(("compile.deps-export", t.elapsed().as_secs_f64()));
    }
    a.phases = phases;
    Ok(a)
}

/// The fetch phase: `cargo fetch --locked` with network into the cargo-home volume.
async fn fetch(
    docker: &Docker,
    plan: &Plan,
    pinned: &PinnedImage,
    image: &str,
    source_tar: &Path,
    progress: &Progress,
    created: Arc<Mutex<Vec<String>>>,
) -> Result<()> {
    // Not base_env: the project's [build] env (e.g. RUSTC_WRAPPER) stays
    // out of the only phase with network and proxy credentials.
    let mut env = plan.fetch_env(CARGO_HOME, TARGET_DIR);
    if plan.ca_bundle.is_some() {
        for k in ["CARGO_HTTP_CAINFO", "SSL_CERT_FILE", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE"] {
            env.push(format!("{k}={CA_PATH}"));
        }
    }
    // Proxies the user's environment names are part of the network, not the build.
    env.extend(plan.proxy_env.iter().map(|(k, v)| format!("{k}={v}")));
    let fetch_args = plan.fetch_args(&format!("{}/Cargo.toml", plan.src_dir()));
    let fetch_cmd = vec![
        "sh".into(),
        "-c".into(),
        format!(
            "set -e\n{}exec {} $KILN_BUILD_STD\n",
            script::target_setup(&plan.target),
            fetch_args.join(" ")
        ),
    ];
    let sp = progress.spinner("fetching dependencies (network on)");
    let fetch = Phase {
        name: "fetch",
        cmd: fetch_cmd,
        env,
        network: true,
        with_target: false,
        restore: None,
    };
    let (code, log, _) = run_phase(
        docker,
        plan,
        pinned,
        image,
        &fetch,
        source_tar,
        progress,
        &sp,
        created.clone(),
    )
    .await?;
    sp.finish_and_clear();
    if code == 3 {
        // target_setup's own exit: the builder lacks what the target needs.
        return Err(Error::Build {
            message: format!(
                "the builder {} cannot build for {} ({}); pick a builder that can, or another platform",
                pinned.reference, plan.target, plan.platform
            ),
            output: log,
        });
    }
    if code != 0 {
        return Err(Error::Build {
            message: format!(
                "`cargo fetch` failed in the builder (exit {code}); check Cargo.lock is committed and the network/CA bundle ([build] ca_bundle)"
            ),
            output: log,
        });
    }

    Ok(())
}

/// Host-side record that a cargo-home volume holds every crate of a Cargo.lock.
fn fetch_marker(plan: &Plan, pinned: &PinnedImage, fetched: &Path) -> Option<std::path::PathBuf> {
    let lock = std::fs::read(plan.project.join("Cargo.lock")).ok()?;
    let key = crate::digest::Digest::of(&[lock.as_slice(), plan.target.as_bytes()].concat());
    Some(fetched.join(plan.cargo_volume(pinned)).join(key.hex()))
}

/// Whether an offline build failed for want of a crate that a fetch would bring.
fn missing_crates(log: &str) -> bool {
    [
        "--offline",
        "failed to download",
        "no matching package",
        "failed to load source",
        "failed to get `",
    ]
    .iter()
    .any(|p| log.contains(p))
}

/// The build phase's environment (without RUSTFLAGS).
fn build_env(plan: &Plan) -> Vec<String> {
    plan.base_env(CARGO_HOME, TARGET_DIR)
}

/// The build phase's RUSTFLAGS.
fn rustflags(plan: &Plan) -> Vec<String> {
    plan.rustflags_for(&plan.src_dir(), CARGO_HOME)
}

struct Phase {
    name: &'static str,
    cmd: Vec<String>,
    env: Vec<String>,
    network: bool,
    with_target: bool,
    /// A dependency layer (gzip tar) the engine unpacks into a staging
    /// directory of the target volume (named by the nonce) before the start;
    /// the script puts it in place under the lock.
    restore: Option<(std::path::PathBuf, String)>,
}

/// Creates a phase's container, fills it and runs it to its end: its exit
/// code, the tail of its log and its ID.
#[allow(clippy::too_many_arguments)]
async fn run_phase(
    docker: &Docker,
    plan: &Plan,
    pinned: &PinnedImage,
    image: &str,
    phase: &Phase,
    source_tar: &Path,
    progress: &Progress,
    bar: &indicatif::ProgressBar,
    created: Arc<Mutex<Vec<String>>>,
) -> Result<(i64, String, String)> {
    let id = create_phase(docker, plan, pinned, image, phase, source_tar, progress, created).await?;
    let (code, log) = start_phase(docker, plan, phase, &id, bar).await?;
    Ok((code, log, id))
}

/// Creates a phase's container and uploads what it needs (the source, a
/// dependency layer to restore), without starting it.
#[allow(clippy::too_many_arguments)]
async fn create_phase(
    docker: &Docker,
    plan: &Plan,
    pinned: &PinnedImage,
    image: &str,
    phase: &Phase,
    source_tar: &Path,
    progress: &Progress,
    created: Arc<Mutex<Vec<String>>>,
) -> Result<String> {
    let name = format!("kiln-{}-{}", phase.name, daemon::name_suffix());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(phase.cmd.clone()),
        env: Some(phase.env.clone()),
        working_dir: Some(plan.src_dir()),
        hostname: Some(
            plan.variation
                .as_ref()
                .and_then(|v| v.hostname.clone())
                .unwrap_or_else(|| "kiln".into()),
        ),
        labels: Some(HashMap::from([(LABEL.to_string(), phase.name.to_string())])),
        host_config: Some(HostConfig {
            mounts: Some(mounts(plan, pinned, phase.with_target)),
            network_mode: if phase.network { None } else { Some("none".into()) },
            ..Default::default()
        }),
        network_disabled: if phase.network { None } else { Some(true) },
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::default().name(&name).build();
    let c = docker
        .create_container(Some(opts), body)
        .await
        .map_err(engine_err("creating the build container"))?;
    created.lock().expect("container list").push(c.id.clone());

    upload(docker, &c.id, source_tar, "/", "copying the source into the builder").await?;
    if let Some((layer, nonce)) = &phase.restore {
        // The staging directory, the layer (the engine unpacks it, gzip and
        // all), then the mark that it is complete: a restore cut short is
        // never put in place, and never fails the build.
        let staging = super::deps::staging_dir(nonce);
        let steps = async {
            upload_bytes(docker, &c.id, super::deps::dir_tar(&staging)?, TARGET_DIR).await?;
            upload(
                docker,
                &c.id,
                layer,
                &format!("{TARGET_DIR}/{staging}"),
                "restoring the compiled dependencies",
            )
            .await?;
            upload_bytes(docker, &c.id, super::deps::complete_tar(&staging)?, TARGET_DIR).await
        };
        if let Err(e) = steps.await {
            progress.warn(&format!(
                "could not restore the compiled dependencies ({e}); compiling them"
            ));
        }
    }
    Ok(c.id)
}

/// Starts a created phase and follows it to its end.
async fn start_phase(
    docker: &Docker,
    plan: &Plan,
    phase: &Phase,
    id: &str,
    bar: &indicatif::ProgressBar,
) -> Result<(i64, String)> {
    docker
        .start_container(id, None)
        .await
        .map_err(engine_err("starting the build container"))?;
    follow(docker, plan, phase, id, bar).await
}

/// Uploads a small tar held in memory into a container at `path`.
async fn upload_bytes(docker: &Docker, id: &str, tar: Vec<u8>, path: &str) -> Result<()> {
    let opts = UploadToContainerOptionsBuilder::default().path(path).build();
    docker
        .upload_to_container(id, Some(opts), bollard::body_full(tar.into()))
        .await
        .map_err(engine_err("restoring the compiled dependencies"))
}

/// Streams a tar file (plain or compressed) into a container at `path`.
async fn upload(docker: &Docker, id: &str, tar: &Path, path: &str, what: &str) -> Result<()> {
    let file = tokio::fs::File::open(tar).await.map_err(Error::read(tar))?;
    let stream = futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    });
    let opts = UploadToContainerOptionsBuilder::default().path(path).build();
    docker
        .upload_to_container(id, Some(opts), bollard::body_try_stream(stream))
        .await
        .map_err(engine_err(what))
}

/// Follows a started phase to its end: its log (the tail kept for errors,
/// progress from cargo's lines) and its exit code.
async fn follow(
    docker: &Docker,
    plan: &Plan,
    phase: &Phase,
    id: &str,
    bar: &indicatif::ProgressBar,
) -> Result<(i64, String)> {
    let mut tail: VecDeque<String> = VecDeque::new();
    let opts = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .build();
    let mut logs = docker.logs(id, Some(opts));
    let mut partial = String::new();
    while let Some(item) = logs.next().await {
        let Ok(out) = item else { break };
        partial.push_str(&String::from_utf8_lossy(&out.into_bytes()));
        while let Some(i) = partial.find('\n') {
            let line: String = partial.drain(..=i).collect();
            let line = line.trim_end().to_string();
            let shown = line.trim_start();
            if shown.starts_with("Compiling") || shown.starts_with("Downloaded") || shown.starts_with("Finished") {
                bar.set_message(format!("{}: {shown}", phase.name));
            }
            if plan.verbose {
                crate::progress::echo(Some(bar), &line);
            }
            tail.push_back(line);
            if tail.len() > 80 {
                tail.pop_front();
            }
        }
    }
    if !partial.is_empty() {
        tail.push_back(partial);
    }
    let mut code = 0;
    let mut wait = docker.wait_container(id, None);
    while let Some(r) = wait.next().await {
        match r {
            Ok(w) => code = w.status_code,
            Err(bollard::errors::Error::DockerContainerWaitError { code: c, .. }) => code = c,
            Err(e) => return Err(engine_err("waiting for the build container")(e)),
        }
    }
    Ok((code, tail.into_iter().collect::<Vec<_>>().join("\n")))
}
