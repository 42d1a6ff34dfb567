//! `kiln lock`: resolve the builder (and bases) to digests into kiln.lock.

use std::path::PathBuf;

use kiln::builder::{BuildRequest, pin, resolve};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project directory.
    #[arg(long, default_value = ".", value_name = "DIR")]
    project: PathBuf,
    /// Re-resolve every reference, even those already pinned.
    #[arg(long)]
    update: bool,
}

pub fn run(ctx: &kiln::context::Context, a: Args, json: bool) -> anyhow::Result<u8> {
    let req = BuildRequest {
        project: a.project.clone(),
        timestamp: ctx.timestamp,
        ..Default::default()
    };
    let (mut plan, builder_ref) = resolve::resolve(&req)?;
    let state = pin::pin(ctx, &mut plan, builder_ref.as_deref(), false, a.update)?;
    if json {
        /// What `kiln lock --json` prints.
        #[derive(serde::Serialize)]
        struct Report<'a> {
            lock: kiln::builder::LockState,
            builder: &'a Option<kiln::builder::PinnedImage>,
        }
        let report = Report {
            lock: state,
            builder: &plan.builder,
        };
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        if let Some(b) = &plan.builder {
            outln!("builder {} -> {}", b.reference, b.digest);
        }
        eprintln!("kiln.lock: {state}");
    }
    Ok(0)
}
