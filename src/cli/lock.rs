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
    /// Pin the bases of these platforms (repeatable) [default: [build] platforms, else the host's].
    #[arg(long = "platform", value_name = "OS/ARCH")]
    platforms: Vec<String>,
}

pub fn run(ctx: &kiln::context::Context, a: Args, json: bool) -> anyhow::Result<u8> {
    let req = BuildRequest {
        project: a.project.clone(),
        timestamp: ctx.timestamp,
        platforms: a
            .platforms
            .iter()
            .map(|p| kiln::oci::Platform::parse(p))
            .collect::<Result<_, _>>()?,
        ..Default::default()
    };
    // One pinning per platform (the builder once, each platform's base).
    let mut state = kiln::builder::LockState::None;
    let mut plan = None;
    for p in resolve::platforms(&req)? {
        let one = BuildRequest {
            platform: Some(p),
            ..req.clone()
        };
        let (mut pl, builder_ref) = resolve::resolve(&one)?;
        let s = pin::pin(ctx, &mut pl, builder_ref.as_deref(), false, a.update)?;
        if matches!(
            state,
            kiln::builder::LockState::None | kiln::builder::LockState::Unchanged
        ) && s != kiln::builder::LockState::None
        {
            state = s;
        }
        plan.get_or_insert(pl);
    }
    let plan = plan.expect("at least one platform");
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
