//! `kiln index IMAGE... --out REF`: one OCI image index over per-platform
//! images (children ordered by platform, canonical JSON: the same images
//! always give the same index digest).

use kiln::image::{AnyImage, ImageIndex};
use kiln::reference::ImageRef;
use kiln::store::{Outputs, Sink as _};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The images, one per platform (oci:, docker-archive:, registry references).
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,
    /// Where to write the index (oci:DIR[:TAG] or a registry reference); repeatable.
    #[arg(long = "out", value_name = "REF", required = true)]
    pub outs: Vec<String>,
}

pub fn run(ctx: &kiln::context::Context, a: Args, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let outputs = Outputs::parse(ctx, &a.outs)?;
    let mut images = Vec::new();
    for s in &a.images {
        let r = ImageRef::parse(s)?;
        match kiln::store::open_any(ctx, &r)? {
            AnyImage::Image(i) => images.push(i),
            AnyImage::Index(_) => {
                return Err(kiln::Error::invalid(
                    "image",
                    r.to_string(),
                    "is an index already; give one image per platform (--platform on pull picks one)",
                )
                .into());
            }
        }
    }
    let index = AnyImage::Index(ImageIndex::new(images)?);
    outputs.put_any(&index)?;
    if json {
        #[derive(serde::Serialize)]
        struct Report {
            digest: String,
            platforms: Vec<String>,
            outputs: Vec<String>,
        }
        let report = Report {
            digest: index.digest().to_string(),
            platforms: index.images().iter().map(|i| i.platform().to_string()).collect(),
            outputs: outputs.refs().iter().map(|o| o.to_string()).collect(),
        };
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{}", index.digest());
        if !quiet {
            for i in index.images() {
                eprintln!("  {}  {}", i.platform(), i.digest());
            }
        }
    }
    Ok(0)
}
