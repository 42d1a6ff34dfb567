//! `kiln cache prune REPO`: garbage collection of a registry build cache
//! (see `kiln::store::registry::prune`).

use kiln::store::registry::cache::{Mode, RemoteCache};
use kiln::store::registry::prune::{self, Keep};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Delete all but the newest entries of a registry build cache (`kiln build --cache`).
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// REGISTRY/REPO: the cache, as given to `kiln build --cache`.
    #[arg(value_name = "REPO")]
    pub repo: String,
    /// Image entries (`kiln-cache-*`) to keep, newest first.
    #[arg(long, value_name = "N", default_value_t = 20)]
    keep: usize,
    /// Compiled-dependency layers (`kiln-deps-*`) to keep, newest first.
    #[arg(long, value_name = "N", default_value_t = 2)]
    keep_deps: usize,
    /// Say what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(ctx: &kiln::context::Context, a: Args, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let Action::Prune(a) = a.action;
    let cache = RemoteCache::parse(&a.repo, Mode::ReadWrite)?;
    let keep = Keep {
        entries: a.keep,
        deps: a.keep_deps,
    };
    let sp = ctx.progress.spinner(&format!("reading the cache {}", cache.repo));
    let r = prune::prune(ctx, &cache, keep, a.dry_run)?;
    sp.finish_and_clear();
    if json {
        outln!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    let verb = if a.dry_run { "would delete" } else { "deleted" };
    for e in &r.deleted {
        // Tags and dates are registry data: shown with control characters escaped.
        outln!(
            "{verb}  {}  {}  {}",
            kiln::text::escape_controls(&e.tag),
            if e.created.is_empty() {
                "(no date)".into()
            } else {
                kiln::text::escape_controls(&e.created)
            },
            e.digest
        );
    }
    for d in &r.deleted_images {
        outln!("{verb}  (image)  {d}");
    }
    if let Some(why) = &r.images_kept_because {
        ctx.progress.warn(&format!(
            "the entries' images are left in place: {}",
            kiln::text::escape_controls(why)
        ));
    }
    if !quiet {
        eprintln!(
            "{}: kept {} entries; {verb} {} entries and {} images. The registry's own garbage collection frees their blobs.",
            cache.repo,
            r.kept.len(),
            r.deleted.len(),
            r.deleted_images.len()
        );
    }
    Ok(0)
}
