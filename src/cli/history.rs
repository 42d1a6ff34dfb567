//! `kiln history REPO:TAG` and `kiln rollback REPO:TAG`: a tag's release
//! history as kept in the registry, and a rehearsable rollback that puts an
//! earlier manifest back byte for byte (see `kiln::store::registry::history`).

use kiln::store::registry::history::{self, Target};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// HOST[:PORT]/REPO:TAG.
    #[arg(value_name = "REF")]
    pub image: String,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    /// HOST[:PORT]/REPO:TAG.
    #[arg(value_name = "REF")]
    pub image: String,
    /// Go back this many releases in the tag's history.
    #[arg(long, value_name = "N", conflicts_with = "to", required_unless_present = "to")]
    steps: Option<usize>,
    /// Point the tag at this manifest digest of the repository.
    #[arg(long, value_name = "DIGEST")]
    to: Option<String>,
}

pub fn run_history(ctx: &kiln::context::Context, a: HistoryArgs, json: bool) -> anyhow::Result<u8> {
    let r = super::push::registry_ref("image", &a.image)?;
    let h = history::history(ctx, &r)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&h)?);
        return Ok(0);
    }
    if h.moves.is_empty() {
        eprintln!("{r}: no release history (kiln records one from the first `kiln push` to the tag)");
        return Ok(0);
    }
    for (i, m) in h.moves.iter().enumerate().rev() {
        let current = if i + 1 == h.moves.len() { "  (current)" } else { "" };
        // The history is registry data: shown with control characters escaped.
        outln!(
            "{}  {:<8}  {}  by {}{current}",
            kiln::text::escape_controls(&m.at),
            kiln::text::escape_controls(&m.action),
            m.to,
            kiln::text::escape_controls(&m.by)
        );
    }
    Ok(0)
}

pub fn run_rollback(ctx: &kiln::context::Context, a: RollbackArgs, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let r = super::push::registry_ref("image", &a.image)?;
    let target = match (a.steps, &a.to) {
        (Some(n), _) => Target::Steps(n),
        (None, Some(d)) => Target::Digest(
            d.parse()
                .map_err(|_| kiln::Error::invalid("--to", d.clone(), "expected sha256:<64 hex digits>"))?,
        ),
        (None, None) => unreachable!("clap requires --steps or --to"),
    };
    let done = history::rollback(ctx, &r, target)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&done)?);
        return Ok(0);
    }
    outln!("{}", done.to);
    if !quiet {
        if done.moved_outside_kiln {
            eprintln!("note: the tag named something its kiln history did not end with (pushed by another tool?)");
        }
        eprintln!(
            "{r}: {} -> {} (recorded in its release history)",
            done.from.map(|d| d.to_string()).unwrap_or_else(|| "(nothing)".into()),
            done.to
        );
    }
    Ok(0)
}
