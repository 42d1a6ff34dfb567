//! `kiln diff A B`: compare two images strictly, top-down, and explain
//! every difference. Exit codes: 0 identical, 1 different, 2 error.

use kiln::reference::ImageRef;
use kiln::verify::diff;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// First image (oci:, docker-archive:, registry reference).
    #[arg(value_name = "A")]
    pub a: String,
    /// Second image.
    #[arg(value_name = "B")]
    pub b: String,
}

pub fn run(ctx: &kiln::context::Context, a: Args, json: bool) -> anyhow::Result<u8> {
    let ra = ImageRef::parse(&a.a)?;
    let rb = ImageRef::parse(&a.b)?;
    let ia = kiln::store::open_any(ctx, &ra)?;
    let ib = kiln::store::open_any(ctx, &rb)?;
    let pairs = kiln::image::pair_by_platform(&ia, &ib)?;
    if let [(None, x, y)] = pairs.as_slice() {
        let report = diff::diff(x, y)?;
        if json {
            outln!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            out!("{}", kiln::verify::render::render(&report));
        }
        return Ok(if report.identical { 0 } else { 1 });
    }
    // Two indexes: children paired by platform, each compared.
    #[derive(serde::Serialize)]
    struct PlatformDiff {
        platform: String,
        report: diff::Report,
    }
    let mut reports = Vec::new();
    for (p, x, y) in pairs {
        reports.push(PlatformDiff {
            platform: p.unwrap_or_default(),
            report: diff::diff(x, y)?,
        });
    }
    let identical = reports.iter().all(|r| r.report.identical) && ia.digest() == ib.digest();
    if json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        if reports.iter().all(|r| r.report.identical) && !identical {
            outln!(
                "the indexes differ ({} vs {}) but every platform's image is identical",
                ia.digest(),
                ib.digest()
            );
        }
        for r in &reports {
            outln!("== {}", r.platform);
            out!("{}", kiln::verify::render::render(&r.report));
        }
    }
    Ok(if identical { 0 } else { 1 })
}
