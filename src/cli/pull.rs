//! `kiln pull REF --out REF`: an image from a registry, every blob verified
//! as it streams into the content store, written to any output.

use kiln::context::Context;
use kiln::store::{Outputs, Sink as _, registry};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// HOST[:PORT]/REPO[:TAG][@DIGEST].
    #[arg(value_name = "REF")]
    pub image: String,
    /// Where to write it (oci:DIR[:TAG], docker-archive:FILE, docker-daemon:NAME).
    #[arg(long = "out", value_name = "REF", required = true)]
    outs: Vec<String>,
    /// Platform to pick from a multi-platform image [default: every platform; docker-daemon: and docker-archive: get the host's].
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
}

#[derive(serde::Serialize)]
struct Report {
    digest: String,
    platform: String,
    size: u64,
    outputs: Vec<String>,
}

pub fn run(ctx: &Context, a: Args, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let r = super::push::registry_ref("image", &a.image)?;
    let platform = a.platform.as_deref().map(kiln::oci::Platform::parse).transpose()?;
    let outputs = Outputs::parse(ctx, &a.outs)?;
    // Without --platform an index comes whole (every child), as push sends it.
    let any = match &platform {
        Some(p) => kiln::image::AnyImage::Image(registry::pull(ctx, &r, Some(p))?),
        None => registry::pull_any(ctx, &r)?,
    };
    // What is attached to it (SBOMs, provenance) comes along where the
    // output can hold it.
    let attached = kiln::store::attached_to(ctx, &kiln::reference::ImageRef::Registry(r.clone()), &any)?;
    outputs.put_attached(&any, &attached)?;
    let outs: Vec<String> = outputs.refs().iter().map(|o| o.to_string()).collect();
    if json {
        let report = Report {
            digest: any.digest().to_string(),
            platform: any
                .images()
                .iter()
                .map(|i| i.platform().to_string())
                .collect::<Vec<_>>()
                .join(","),
            size: any.images().iter().map(|i| i.total_size()).sum(),
            outputs: outs,
        };
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{}", any.digest());
        if !quiet {
            for o in &outs {
                eprintln!("wrote {o}");
            }
        }
    }
    Ok(0)
}
