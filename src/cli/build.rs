//! `kiln build`: build the project in its pinned builder and assemble the image.

use std::path::PathBuf;

use kiln::build::{self, Backend, BuildRequest};
use kiln::progress::Progress;
use kiln::reference::ImageRef;
use kiln::time::Timestamp;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project directory (with Cargo.toml and kiln.toml).
    #[arg(long, default_value = ".", value_name = "DIR")]
    project: PathBuf,
    /// Where to write; repeatable [default: oci:target/kiln/image:VERSION].
    #[arg(long = "out", value_name = "REF")]
    outs: Vec<String>,
    /// Fail instead of creating or changing kiln.lock.
    #[arg(long)]
    locked: bool,
    /// Builder backend: docker (pinned builder image) or host (local cargo, not pinned).
    #[arg(long, value_name = "BACKEND")]
    backend: Option<String>,
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
    push: Vec<String>,
    /// Write and push the image even if `kiln scan` finds that it would not start.
    #[arg(long)]
    allow_scan_failures: bool,
    /// Stream the compiler's whole output to stderr.
    #[arg(long, short)]
    verbose: bool,
}

pub fn run(a: Args, json: bool, quiet: bool, progress: &Progress) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let backend = match a.backend.as_deref() {
        None => None,
        Some("docker") => Some(Backend::Docker),
        Some("host") => Some(Backend::Host),
        Some(other) => {
            return Err(kiln::Error::invalid("--backend", other, "expected docker or host").into());
        }
    };
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
    let timestamp = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Some(Timestamp::parse(&v)?),
        _ => None,
    };
    let req = BuildRequest {
        project: a.project.clone(),
        locked: a.locked,
        backend,
        builder: a.builder,
        no_cache: a.no_cache,
        fresh: a.fresh,
        outs,
        verbose: a.verbose && !quiet,
        timestamp,
        allow_scan_failures: a.allow_scan_failures,
        variation: None,
    };
    let r = match build::build(&req, progress) {
        Err(kiln::Error::ScanFailed { count, report }) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"scan": *report, "written": false}))?
                );
            } else {
                super::scan::print_report("the built image", &report, false, true);
            }
            eprintln!(
                "kiln: {count} scan error(s): the image would not start, so nothing was written or pushed; fix them, or pass --allow-scan-failures"
            );
            return Ok(1);
        }
        other => other?,
    };
    let digest = r.image.digest().to_string();
    if json {
        let v = serde_json::json!({
            "digest": digest,
            "config": r.image.manifest().config.digest.to_string(),
            "size": r.image.total_size(),
            "cache": if r.cache_hit { "hit" } else { "miss" },
            "lock": r.lock_state,
            "backend": r.plan.backend,
            "builder": r.plan.builder,
            "toolchain": r.toolchain,
            "toolchain_pinned": r.toolchain_pinned,
            "recipe": r.plan.recipe,
            "source_date_epoch": r.plan.timestamp.0,
            "outputs": r.outputs.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
            "timings": r.timings.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            "seconds": started.elapsed().as_secs_f64(),
            "scan": r.scan,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    println!("{digest}");
    if !quiet {
        if !r.toolchain_pinned {
            eprintln!(
                "warning: built with the host's toolchain ({}): it is not pinned, so another machine may produce other bytes",
                r.toolchain
            );
        }
        match r.lock_state {
            "created" => eprintln!("kiln.lock: created (commit it)"),
            "updated" => eprintln!("kiln.lock: updated (commit it)"),
            _ => {}
        }
        if !r.scan.findings.is_empty() {
            super::scan::print_report("scan", &r.scan, quiet, true);
        }
        if r.cache_hit {
            eprintln!("cache: identical inputs were built before; reused without running the builder");
        }
        for o in &r.outputs {
            eprintln!(
                "wrote {o} ({} bytes, {:.1}s)",
                r.image.total_size(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(0)
}
