//! `kiln referrers`: the documents attached to an image (and to each
//! platform's image of an index): SBOMs, provenance, signatures' artifacts.

use kiln::reference::ImageRef;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: oci:DIR[:TAG] or a registry reference.
    #[arg(value_name = "REF")]
    pub image: String,
}

/// One attached document in `kiln referrers --json`.
#[derive(serde::Serialize)]
struct Entry {
    subject: String,
    /// The subject's platform (an index's child), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: String,
    digest: String,
    size: usize,
}

pub fn run(ctx: &kiln::context::Context, a: Args, json: bool) -> anyhow::Result<u8> {
    let r = ImageRef::parse(&a.image)?;
    let any = kiln::store::open_any(ctx, &r)?;
    let mut subjects = vec![(any.digest().clone(), None)];
    if let kiln::image::AnyImage::Index(_) = &any {
        for c in any.images() {
            subjects.push((c.digest().clone(), Some(c.platform().to_string())));
        }
    }
    let mut entries = Vec::new();
    for (subject, platform) in subjects {
        for d in kiln::store::referrers(ctx, &r, &subject)? {
            entries.push(Entry {
                subject: subject.to_string(),
                platform: platform.clone(),
                artifact_type: d.artifact_type().to_string(),
                digest: d.digest().to_string(),
                size: d.document().len(),
            });
        }
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(0);
    }
    if entries.is_empty() {
        eprintln!("{r}: nothing attached");
        return Ok(0);
    }
    for e in &entries {
        let on = e.platform.as_deref().unwrap_or("(the image)");
        outln!("{:<32} {}  {} bytes  on {on}", e.artifact_type, e.digest, e.size);
    }
    Ok(0)
}
