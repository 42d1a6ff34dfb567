//! `kiln referrers`: the documents attached to an image (and to each
//! platform's image of an index): SBOMs and provenance, and the cosign
//! signatures of the image, its platforms and those documents.

use kiln::digest::Digest;
use kiln::reference::ImageRef;
use kiln::store::registry;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: oci:DIR[:TAG] or a registry reference.
    #[arg(value_name = "REF")]
    pub image: String,
}

/// One attached document or signature in `kiln referrers --json`.
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
    // The manifests: from a registry without reading any layer.
    let subjects: Vec<(Digest, Option<String>)> = match &r {
        ImageRef::Registry(reg) => {
            let registry::pull::Manifests { top, children } = registry::pull::manifest_digests(ctx, reg)?;
            std::iter::once((top, None))
                .chain(children.into_iter().map(|(d, p)| (d, p.map(|p| p.to_string()))))
                .collect()
        }
        other => {
            let any = kiln::store::open_any(ctx, other)?;
            let mut s = vec![(any.digest().clone(), None)];
            if let kiln::image::AnyImage::Index(_) = &any {
                s.extend(
                    any.images()
                        .iter()
                        .map(|c| (c.digest().clone(), Some(c.platform().to_string()))),
                );
            }
            s
        }
    };
    let mut entries = Vec::new();
    for (subject, platform) in &subjects {
        for d in kiln::store::referrers(ctx, &r, subject)? {
            entries.push(Entry {
                subject: subject.to_string(),
                platform: platform.clone(),
                artifact_type: d.artifact_type().to_string(),
                digest: d.digest().to_string(),
                size: d.document().len(),
            });
        }
    }
    // cosign signatures (sha256-HEX.sig tags) of each manifest and document.
    if let ImageRef::Registry(reg) = &r {
        let mut signed: Vec<(String, Option<String>)> =
            subjects.iter().map(|(d, p)| (d.to_string(), p.clone())).collect();
        signed.extend(entries.iter().map(|e| (e.digest.clone(), e.platform.clone())));
        for (subject, platform) in signed {
            let d: Digest = subject.parse()?;
            for s in registry::signatures::read(ctx, reg, &d)? {
                entries.push(Entry {
                    subject: subject.clone(),
                    platform: platform.clone(),
                    artifact_type: registry::signatures::MEDIA_TYPE.to_string(),
                    digest: Digest::of(&s.payload).to_string(),
                    size: s.payload.len(),
                });
            }
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
        let on = match &e.platform {
            Some(p) => format!("on {p} {}", e.subject),
            None => format!("on {}", e.subject),
        };
        outln!(
            "{:<50} {}  {} bytes  {on}",
            kiln::text::escape_controls(&e.artifact_type),
            e.digest,
            e.size
        );
    }
    Ok(0)
}
