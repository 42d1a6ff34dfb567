//! `kiln build`: build the project in its pinned builder, scan the image,
//! and write it to every output (pushes last).

use std::path::PathBuf;

use kiln::builder::{self, Backend, BuildRequest, LockState};
use kiln::context::Context;
use kiln::reference::ImageRef;
use kiln::store::{Outputs, Sink as _};

/// `--backend`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum BackendArg {
    /// The pinned builder image on the engine.
    Docker,
    /// The host's own cargo (not pinned).
    Host,
}

impl From<BackendArg> for Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Docker => Backend::Docker,
            BackendArg::Host => Backend::Host,
        }
    }
}

/// `--cache-mode`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CacheModeArg {
    Read,
    Readwrite,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project directory (with Cargo.toml and kiln.toml).
    #[arg(long, default_value = ".", value_name = "DIR")]
    project: PathBuf,
    /// Where to write; repeatable [default: oci:target/kiln/image:VERSION].
    #[arg(long = "out", value_name = "REF")]
    pub outs: Vec<String>,
    /// Fail instead of creating or changing kiln.lock.
    #[arg(long)]
    locked: bool,
    /// Builder backend [default: [build] backend, else docker].
    #[arg(long, value_enum, value_name = "BACKEND")]
    backend: Option<BackendArg>,
    /// Builder image, overriding [build] builder.
    #[arg(long, value_name = "REF")]
    builder: Option<String>,
    /// Build even when an identical build is in the cache (the result is stored).
    #[arg(long)]
    no_cache: bool,
    /// Build from empty, throw-away cache volumes: a cold build (implies --no-cache).
    #[arg(long)]
    fresh: bool,
    /// Push the image to this registry reference after building (repeatable).
    #[arg(long = "push", value_name = "REF")]
    pub push: Vec<String>,
    /// Write and push the image even if `kiln scan` finds that it would not start.
    #[arg(long)]
    allow_scan_failures: bool,
    /// Run `kiln check` on the built image (the host's platform) after the
    /// scan, with the project's [check]; findings stop the write and push.
    #[arg(long)]
    check: bool,
    /// Write and push the image even if `--check` finds problems.
    #[arg(long, requires = "check")]
    allow_check_failures: bool,
    /// CA bundle for the fetch phase (a TLS-intercepting proxy's CA), from your side:
    /// overrides [build] ca_bundle [env: KILN_CA_BUNDLE; default: the host's bundle].
    #[arg(long, value_name = "FILE")]
    ca_bundle: Option<PathBuf>,
    /// Stream the compiler's whole output to stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Build for this platform (linux/amd64, linux/arm64); repeatable: one
    /// image each under one index [default: [build] platforms, else the host's].
    #[arg(long = "platform", value_name = "OS/ARCH")]
    platforms: Vec<String>,
    /// A build cache shared through a registry (REGISTRY/REPO): a hit is
    /// pulled instead of built; a miss is built and written there (with the
    /// default --cache-mode readwrite) [default: [build] cache, read only].
    #[arg(long, value_name = "REF")]
    pub cache: Option<String>,
    /// `read` for untrusted builds (pull requests): use the cache, never write it.
    #[arg(long, value_enum, value_name = "MODE")]
    cache_mode: Option<CacheModeArg>,
    /// Attach no SBOMs or provenance to the image.
    #[arg(long)]
    no_attest: bool,
    /// Put the build's start and finish times in the provenance (it then
    /// differs from run to run; without this it is reproducible).
    #[arg(long)]
    provenance_times: bool,
}

/// One attached document in `kiln build --json`.
#[derive(serde::Serialize)]
struct AttachedReport {
    #[serde(rename = "artifactType")]
    artifact_type: String,
    digest: String,
    subject: String,
    size: usize,
}

/// One platform's image in `kiln build --json`.
#[derive(serde::Serialize)]
struct PlatformReport<'a> {
    platform: String,
    digest: String,
    config: String,
    size: u64,
    target: &'a str,
    cache: &'static str,
    scan: kiln::scan::Report,
}

/// What `kiln build --json` prints.
#[derive(serde::Serialize)]
struct Report<'a> {
    digest: String,
    config: String,
    size: u64,
    cache: &'static str,
    /// Where a hit came from: `local` or `registry`.
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_source: Option<&'static str>,
    /// The registry cache's compiled dependencies: `restored` or `stored`.
    #[serde(skip_serializing_if = "Option::is_none")]
    deps_cache: Option<&'static str>,
    lock: LockState,
    backend: Backend,
    builder: &'a Option<builder::PinnedImage>,
    toolchain: &'a str,
    toolchain_pinned: bool,
    recipe: &'a str,
    source_date_epoch: u64,
    outputs: Vec<String>,
    timings: std::collections::BTreeMap<&'static str, f64>,
    seconds: f64,
    scan: &'a kiln::scan::Report,
    /// Each platform (one entry for a single-platform build).
    platforms: Vec<PlatformReport<'a>>,
    /// SBOMs and provenance attached to the image.
    attached: Vec<AttachedReport>,
    /// `--check`'s checklist.
    #[serde(skip_serializing_if = "Option::is_none")]
    check: Option<kiln::check::Report>,
}

pub fn run(ctx: &Context, a: Args, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let started_at = std::time::SystemTime::now();
    let mut outs = a
        .outs
        .iter()
        .map(|o| ImageRef::parse(o))
        .collect::<Result<Vec<_>, _>>()?;
    for p in &a.push {
        match ImageRef::parse(p)? {
            r @ ImageRef::Registry(_) => outs.push(r),
            other => {
                return Err(kiln::Error::invalid(
                    "--push",
                    other.to_string(),
                    "expects a registry reference HOST/REPO[:TAG]",
                )
                .into());
            }
        }
    }
    let req = BuildRequest {
        project: a.project.clone(),
        locked: a.locked,
        backend: a.backend.map(Backend::from),
        builder: a.builder,
        no_cache: a.no_cache,
        fresh: a.fresh,
        verbose: a.verbose && !quiet,
        timestamp: ctx.timestamp,
        variation: None,
        proxy_env: ctx.proxy_env.clone(),
        ca_bundle: a.ca_bundle.or_else(|| ctx.ca_bundle.clone()),
        platforms: a
            .platforms
            .iter()
            .map(|p| kiln::oci::Platform::parse(p))
            .collect::<Result<_, _>>()?,
        platform: None,
        cache: a.cache.clone(),
        cache_mode: a.cache_mode.map(|m| match m {
            CacheModeArg::Read => kiln::store::registry::cache::Mode::Read,
            CacheModeArg::Readwrite => kiln::store::registry::cache::Mode::ReadWrite,
        }),
    };
    // Outputs are opened before the build, so a bad --out costs nothing.
    // With only pushes, the default local output is written too.
    let explicit = Outputs::open(ctx, &outs)?;
    let all = builder::build_all(ctx, &req)?;
    let r = &all.builds[0];
    let outputs = if outs.iter().all(|o| matches!(o, ImageRef::Registry(_))) {
        outs.insert(0, builder::default_out(&req.project, &r.plan.package_version));
        Outputs::open(ctx, &outs)?
    } else {
        explicit
    };
    let mut timings: std::collections::BTreeMap<&'static str, f64> = r.timings.iter().cloned().collect();

    // Will it start? Every platform's image is scanned; a failing one is
    // not written or pushed.
    let t = std::time::Instant::now();
    let mut scanned = Vec::new();
    for b in &all.builds {
        scanned.push(kiln::scan::scan_keeping_view(&b.image, kiln::scan::Options::default())?);
    }
    let scans: Vec<kiln::scan::Report> = scanned.iter().map(|(r, _)| r.clone()).collect();
    timings.insert("scan", t.elapsed().as_secs_f64());
    let failing = scans.iter().position(|s| s.failed());
    let scan = &scans[failing.unwrap_or(0)];
    if scan.failed() && !a.allow_scan_failures {
        let count = scan
            .findings
            .iter()
            .filter(|f| f.severity == kiln::scan::Severity::Error)
            .count();
        if json {
            /// What `kiln build --json` prints when the scan gate refuses the image.
            #[derive(serde::Serialize)]
            struct Refused<'a> {
                scan: &'a kiln::scan::Report,
                written: bool,
            }
            let refused = Refused { scan, written: false };
            outln!("{}", serde_json::to_string_pretty(&refused)?);
        } else {
            let what = if all.builds.len() > 1 {
                format!(
                    "the built image for {}",
                    all.builds[failing.unwrap_or(0)].image.platform()
                )
            } else {
                "the built image".to_string()
            };
            super::scan::print_report(&what, scan, false, true);
        }
        eprintln!(
            "kiln: {count} scan error(s): the image would not start, so nothing was written or pushed; fix them, or pass --allow-scan-failures"
        );
        return Ok(1);
    }
    // The deployment checklist, on the image this machine can run.
    let checked = if a.check {
        let t = std::time::Instant::now();
        let host = kiln::oci::Platform::host();
        // Only an image this machine runs natively is started (under QEMU
        // the timings would lie); the others' layers are searched for secrets.
        let i = all
            .builds
            .iter()
            .position(|b| b.image.platform() == host)
            .ok_or_else(|| {
                kiln::Error::invalid(
                    "--check",
                    host.to_string(),
                    "no image was built for this machine's platform, so none can be started here; \
                     add it with --platform, or check on a machine of that platform with `kiln check`",
                )
            })?;
        let others: Vec<&kiln::image::Image> = all
            .builds
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, b)| &b.image)
            .collect();
        let opts = kiln::check::Options::from_project(&req.project)?;
        let sp = ctx.progress.spinner("checking the image (kiln check)");
        let report = kiln::check::check(
            ctx,
            &all.builds[i].image,
            &others,
            "the built image",
            &opts,
            Some(&scans[i]),
        )?;
        sp.finish_and_clear();
        timings.insert("check", t.elapsed().as_secs_f64());
        if !report.passed && !a.allow_check_failures {
            if json {
                /// What `kiln build --json` prints when the check gate refuses the image.
                #[derive(serde::Serialize)]
                struct Refused<'a> {
                    check: &'a kiln::check::Report,
                    written: bool,
                }
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&Refused {
                        check: &report,
                        written: false
                    })?
                );
            } else {
                super::check::print_report(&report, false, true);
            }
            eprintln!(
                "kiln: {} check item(s) failed, so nothing was written or pushed; fix them, or pass --allow-check-failures",
                report.failures().count()
            );
            return Ok(1);
        }
        Some(report)
    } else {
        None
    };
    // SBOMs and provenance, from the same scan's view (one pass over the layers).
    let t = std::time::Instant::now();
    let attached = if a.no_attest {
        Vec::new()
    } else {
        let times = a.provenance_times.then(|| {
            (
                kiln::time::Timestamp::at(started_at).rfc3339(),
                kiln::time::Timestamp::at(std::time::SystemTime::now()).rfc3339(),
            )
        });
        kiln::attest::build::documents(&all, &scanned, times)?
    };
    drop(scanned);
    timings.insert("attest", t.elapsed().as_secs_f64());
    let t = std::time::Instant::now();
    outputs.put_attached(&all.image, &attached)?;
    timings.insert("write", t.elapsed().as_secs_f64());

    let digest = all.image.digest().to_string();
    let size: u64 = all.builds.iter().map(|b| b.image.total_size()).sum();
    let cache_hit = all.builds.iter().all(|b| b.cache_hit);
    if json {
        let platforms = all
            .builds
            .iter()
            .zip(scans.iter())
            .map(|(b, s)| PlatformReport {
                platform: b.image.platform().to_string(),
                digest: b.image.digest().to_string(),
                config: b.image.manifest().config.digest.to_string(),
                size: b.image.total_size(),
                target: &b.plan.target,
                cache: if b.cache_hit { "hit" } else { "miss" },
                scan: s.clone(),
            })
            .collect();
        let report = Report {
            digest,
            config: r.image.manifest().config.digest.to_string(),
            size,
            cache: if cache_hit { "hit" } else { "miss" },
            cache_source: if cache_hit {
                all.builds.iter().find_map(|b| b.cache_source)
            } else {
                None
            },
            deps_cache: all.builds.iter().find_map(|b| b.deps_cache),
            lock: all.lock_state(),
            backend: r.plan.backend,
            builder: &r.plan.builder,
            toolchain: &r.toolchain,
            toolchain_pinned: r.toolchain_pinned,
            recipe: &r.plan.recipe,
            source_date_epoch: r.plan.timestamp.0,
            outputs: outputs.refs().iter().map(|o| o.to_string()).collect(),
            timings,
            seconds: started.elapsed().as_secs_f64(),
            scan,
            platforms,
            attached: attached
                .iter()
                .map(|d| AttachedReport {
                    artifact_type: d.artifact_type().to_string(),
                    digest: d.digest().to_string(),
                    subject: d.subject().map(|s| s.digest.to_string()).unwrap_or_default(),
                    size: d.document().len(),
                })
                .collect(),
            check: checked,
        };
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    outln!("{digest}");
    if !quiet {
        if !r.toolchain_pinned {
            ctx.progress.warn(&format!(
                "built with the host's toolchain ({}): it is not pinned, so another machine may produce other bytes",
                r.toolchain
            ));
        }
        match all.lock_state() {
            LockState::Created => eprintln!("kiln.lock: created (commit it)"),
            LockState::Updated => eprintln!("kiln.lock: updated (commit it)"),
            _ => {}
        }
        for (b, s) in all.builds.iter().zip(&scans) {
            if !s.findings.is_empty() {
                let what = if all.builds.len() > 1 {
                    format!("scan {}", b.image.platform())
                } else {
                    "scan".to_string()
                };
                super::scan::print_report(&what, s, quiet, true);
            }
        }
        if all.builds.len() > 1 {
            for b in &all.builds {
                eprintln!("  {}  {}  ({})", b.image.platform(), b.image.digest(), b.plan.target);
            }
        }
        if let Some(c) = &checked {
            super::check::print_report(c, quiet, true);
        }
        if cache_hit && all.builds.iter().any(|b| b.cache_source == Some("registry")) {
            eprintln!(
                "cache: identical inputs were built before (the registry cache); pulled, verified, and reused without running the builder"
            );
        } else if cache_hit {
            eprintln!("cache: identical inputs were built before; reused without running the builder");
        }
        for o in outputs.refs() {
            eprintln!("wrote {o} ({} bytes, {:.1}s)", size, started.elapsed().as_secs_f64());
        }
    }
    Ok(0)
}
