//! `kiln diff A B` and `kiln verify`: prove byte-identical rebuilds, explain differences.
//! Exit codes: 0 identical, 1 different, 2 error.

use std::path::PathBuf;

use kiln::reference::ImageRef;
use kiln::verify::{self, diff};

#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// First image (oci:, docker-archive:, registry reference).
    #[arg(value_name = "A")]
    a: String,
    /// Second image.
    #[arg(value_name = "B")]
    b: String,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The project directory.
    #[arg(long, default_value = ".", value_name = "DIR")]
    project: PathBuf,
    /// How many builds: the first is the reference, the others are varied
    /// (with --against, N varied builds are compared with that image).
    #[arg(long, default_value_t = 2, value_name = "N")]
    rebuilds: usize,
    /// Compare with this image (e.g. the one CI published) instead of a first build.
    #[arg(long, value_name = "REF")]
    against: Option<String>,
    /// What to vary, comma-separated: path, env, hostname, jobs, umask, cache [default: all].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    vary: Vec<String>,
    /// Builder image, overriding [build] builder.
    #[arg(long, value_name = "REF")]
    builder: Option<String>,
}

pub fn diff(a: DiffArgs, json: bool) -> anyhow::Result<u8> {
    let ra = ImageRef::parse(&a.a)?;
    let rb = ImageRef::parse(&a.b)?;
    let ia = kiln::store::open(&ra, None)?;
    let ib = kiln::store::open(&rb, None)?;
    let report = diff::diff(&ia, &ib)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", diff::render(&report));
    }
    Ok(if report.identical { 0 } else { 1 })
}

pub fn verify(a: VerifyArgs, json: bool, progress: &kiln::progress::Progress) -> anyhow::Result<u8> {
    let vary = if a.vary.is_empty() {
        verify::ALL_VARIATIONS.iter().map(|s| s.to_string()).collect()
    } else {
        a.vary.clone()
    };
    for v in &vary {
        if !verify::ALL_VARIATIONS.contains(&v.as_str()) {
            return Err(kiln::Error::invalid(
                "--vary",
                v.as_str(),
                format!("choose from {}", verify::ALL_VARIATIONS.join(", ")),
            )
            .into());
        }
    }
    if a.rebuilds == 0 {
        return Err(kiln::Error::invalid("--rebuilds", "0", "at least 1 rebuild").into());
    }
    let against = a.against.as_deref().map(ImageRef::parse).transpose()?;
    let req = verify::VerifyRequest {
        project: a.project,
        rebuilds: a.rebuilds,
        against,
        vary,
        builder: a.builder,
    };
    let report = verify::verify(&req, progress)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}",
            if report.identical {
                "identical"
            } else {
                "NOT reproducible"
            }
        );
        println!("  reference: {}", report.reference);
        for b in &report.builds {
            println!("  {}: {}", b.label, b.digest);
            for v in &b.variation {
                println!("      {v}");
            }
        }
        for d in &report.differences {
            println!("\n{} differs from the reference:", d.build);
            for line in diff::render(&d.diff).lines() {
                println!("  {line}");
            }
            for h in &d.hints {
                println!("  hint: {h}");
            }
        }
    }
    Ok(if report.identical { 0 } else { 1 })
}
