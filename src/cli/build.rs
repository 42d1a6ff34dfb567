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
    /// CA bundle for the fetch phase (a TLS-intercepting proxy's CA), from your side:
    /// overrides [build] ca_bundle [env: KILN_CA_BUNDLE; default: the host's bundle].
    #[arg(long, value_name = "FILE")]
    ca_bundle: Option<PathBuf>,
    /// Stream the compiler's whole output to stderr.
    #[arg(long, short)]
    verbose: bool,
}

/// What `kiln build --json` prints.
#[derive(serde::Serialize)]
struct Report<'a> {
    digest: String,
    config: String,
    size: u64,
    cache: &'static str,
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
}

pub fn run(ctx: &Context, a: Args, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
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
    };
    // Outputs are opened before the build, so a bad --out costs nothing.
    // With only pushes, the default local output is written too.
    let explicit = Outputs::open(ctx, &outs)?;
    let r = builder::build(ctx, &req)?;
    let outputs = if outs.iter().all(|o| matches!(o, ImageRef::Registry(_))) {
        outs.insert(0, builder::default_out(&req.project, &r.plan.package_version));
        Outputs::open(ctx, &outs)?
    } else {
        explicit
    };
    let mut timings: std::collections::BTreeMap<&'static str, f64> = r.timings.iter().cloned().collect();

    // Will it start? A failing image is not written or pushed.
    let t = std::time::Instant::now();
    let scan = kiln::scan::scan(&r.image, kiln::scan::Options::default())?;
    timings.insert("scan", t.elapsed().as_secs_f64());
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
            let refused = Refused {
                scan: &scan,
                written: false,
            };
            outln!("{}", serde_json::to_string_pretty(&refused)?);
        } else {
            super::scan::print_report("the built image", &scan, false, true);
        }
        eprintln!(
            "kiln: {count} scan error(s): the image would not start, so nothing was written or pushed; fix them, or pass --allow-scan-failures"
        );
        return Ok(1);
    }
    let t = std::time::Instant::now();
    outputs.put(&r.image)?;
    timings.insert("write", t.elapsed().as_secs_f64());

    let digest = r.image.digest().to_string();
    if json {
        let report = Report {
            digest,
            config: r.image.manifest().config.digest.to_string(),
            size: r.image.total_size(),
            cache: if r.cache_hit { "hit" } else { "miss" },
            lock: r.lock_state,
            backend: r.plan.backend,
            builder: &r.plan.builder,
            toolchain: &r.toolchain,
            toolchain_pinned: r.toolchain_pinned,
            recipe: &r.plan.recipe,
            source_date_epoch: r.plan.timestamp.0,
            outputs: outputs.refs().iter().map(|o| o.to_string()).collect(),
            timings,
            seconds: started.elapsed().as_secs_f64(),
            scan: &scan,
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
        match r.lock_state {
            LockState::Created => eprintln!("kiln.lock: created (commit it)"),
            LockState::Updated => eprintln!("kiln.lock: updated (commit it)"),
            _ => {}
        }
        if !scan.findings.is_empty() {
            super::scan::print_report("scan", &scan, quiet, true);
        }
        if r.cache_hit {
            eprintln!("cache: identical inputs were built before; reused without running the builder");
        }
        for o in outputs.refs() {
            eprintln!(
                "wrote {o} ({} bytes, {:.1}s)",
                r.image.total_size(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(0)
}
