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
    let ia = kiln::store::open(ctx, &ra, None)?;
    let ib = kiln::store::open(ctx, &rb, None)?;
    let report = diff::diff(&ia, &ib)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        out!("{}", kiln::verify::render::render(&report));
    }
    Ok(if report.identical { 0 } else { 1 })
}
