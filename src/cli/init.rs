//! `kiln init`: write a kiln.toml from Cargo.toml, or carry one over from a
//! Dockerfile.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project directory; kiln.toml is written there.
    #[arg(long, visible_alias = "project", default_value = ".", value_name = "DIR")]
    path: PathBuf,
    /// The workspace member to build.
    #[arg(long, value_name = "NAME")]
    package: Option<String>,
    /// The binary to put in the image, when the package has several.
    #[arg(long, value_name = "NAME")]
    bin: Option<String>,
    /// Carry over a Dockerfile: base, builder, entrypoint, env, ports, user, …
    #[arg(long, value_name = "PATH")]
    from_dockerfile: Option<PathBuf>,
    /// Replace an existing kiln.toml.
    #[arg(long)]
    force: bool,
}

/// What `kiln init --json` prints.
#[derive(serde::Serialize)]
struct Report<'a> {
    path: String,
    notes: &'a [String],
    kiln_toml: &'a str,
}

pub fn run(a: Args, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let req = kiln::init::Request {
        dir: a.path.clone(),
        package: a.package,
        bin: a.bin,
        dockerfile: a.from_dockerfile,
    };
    let plan = kiln::init::plan(&req)?;
    let path = kiln::init::write(&a.path, &plan, a.force)?;
    if json {
        let report = Report {
            path: path.display().to_string(),
            notes: &plan.notes,
            kiln_toml: &plan.kiln_toml,
        };
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    if !quiet {
        use kiln::text::escape_controls as esc;
        for d in &plan.decisions {
            eprintln!("kiln init: {}", esc(d));
        }
        if !plan.notes.is_empty() {
            eprintln!("kiln init: not carried over, or worth a look:");
            for n in &plan.notes {
                eprintln!("  - {}", esc(n));
            }
        }
    }
    outln!("{}", path.display());
    Ok(0)
}
