//! `kiln lock`: resolve the builder (and bases) to digests into kiln.lock.

use std::path::PathBuf;

use kiln::build::{self, BuildRequest};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project directory.
    #[arg(long, default_value = ".", value_name = "DIR")]
    project: PathBuf,
    /// Re-resolve every reference, even those already pinned.
    #[arg(long)]
    update: bool,
}

pub fn run(a: Args, json: bool) -> anyhow::Result<u8> {
    let req = BuildRequest {
        project: a.project.clone(),
        ..Default::default()
    };
    let (mut plan, builder_ref) = build::plan(&req)?;
    let state = build::pin(&mut plan, builder_ref.as_deref(), false, a.update)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "lock": state, "builder": plan.builder }))?
        );
    } else {
        if let Some(b) = &plan.builder {
            println!("builder {} -> {}", b.reference, b.digest);
        }
        eprintln!("kiln.lock: {state}");
    }
    Ok(0)
}
