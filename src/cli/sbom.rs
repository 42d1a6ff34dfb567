//! `kiln sbom`: the SBOM of an image. The one kiln attached at build time
//! when the image carries it (exact bytes, crates included); otherwise one
//! made from the image alone (its Debian packages and the libraries the
//! entrypoint loads; no crates, which only the build knows), said on stderr.

use std::path::PathBuf;

use kiln::attest::sbom::Format;
use kiln::reference::ImageRef;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: oci:DIR[:TAG], a registry reference, docker-archive:FILE, docker-daemon:NAME:TAG.
    #[arg(value_name = "REF")]
    pub image: String,
    /// cyclonedx (1.6 JSON) or spdx (2.3 JSON).
    #[arg(long, default_value = "cyclonedx", value_name = "FORMAT")]
    format: String,
    /// Write the document here (atomically) instead of to stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// From a multi-platform index, this platform's SBOM [default: the host's].
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
}

pub fn run(ctx: &kiln::context::Context, a: Args, quiet: bool) -> anyhow::Result<u8> {
    let format = Format::parse(&a.format)
        .ok_or_else(|| kiln::Error::invalid("--format", a.format.clone(), "expected cyclonedx or spdx"))?;
    let r = ImageRef::parse(&a.image)?;
    let platform = a
        .platform
        .as_deref()
        .map(kiln::oci::Platform::parse)
        .transpose()?
        .unwrap_or_else(kiln::oci::Platform::host);
    // From a registry, the manifests alone say which image is meant: an
    // attached SBOM is then printed without reading any layer.
    if let ImageRef::Registry(reg) = &r {
        let m = kiln::store::registry::pull::manifest_digests(ctx, reg)?;
        let subject = if m.children.is_empty() {
            Some(m.top)
        } else {
            m.children
                .into_iter()
                .find(|(_, p)| p.as_ref().is_some_and(|p| p.satisfies(&platform)))
                .map(|(d, _)| d)
        };
        if let Some(subject) = subject
            && let Some(doc) = kiln::store::referrers(ctx, &r, &subject)?
                .into_iter()
                .find(|d| d.artifact_type() == format.media_type())
        {
            return write_out(a.out.as_deref(), doc.document());
        }
    }
    let any = kiln::store::open_any(ctx, &r)?;
    let image = match &any {
        kiln::image::AnyImage::Image(i) => i.clone(),
        kiln::image::AnyImage::Index(_) => any.for_platform(&platform).cloned().ok_or_else(|| {
            kiln::Error::invalid(
                "--platform",
                platform.to_string(),
                "the index has no image for this platform; `kiln inspect` lists them",
            )
        })?,
    };
    let attached = kiln::store::referrers(ctx, &r, image.digest())?;
    let bytes = match attached.iter().find(|d| d.artifact_type() == format.media_type()) {
        Some(doc) => doc.document().to_vec(),
        None => {
            if !quiet {
                eprintln!(
                    "kiln: {r} carries no {} SBOM; this one is made from the image alone: its packages and the libraries the entrypoint loads, not the crates (build with kiln to have them)",
                    a.format
                );
            }
            let (report, view) = kiln::scan::scan_keeping_view(&image, kiln::scan::Options::default())?;
            let name = match &r {
                ImageRef::Registry(reg) => format!("{}/{}", reg.registry, reg.repository),
                other => other.to_string(),
            };
            let created = ctx.timestamp.unwrap_or(kiln::time::Timestamp(0));
            kiln::attest::inventory(
                &image,
                &view,
                &report,
                &name,
                None,
                kiln::attest::build::tools(None),
                created,
            )
            .render(format)
        }
    };
    write_out(a.out.as_deref(), &bytes)
}

/// The document to `out` (atomically) or stdout.
fn write_out(out: Option<&std::path::Path>, bytes: &[u8]) -> anyhow::Result<u8> {
    match out {
        Some(path) => kiln::store::blob::write_atomic(path, bytes)?,
        None => out!("{}", String::from_utf8_lossy(bytes)),
    }
    Ok(0)
}
