//! The documents `kiln build` attaches: per platform, a CycloneDX and an
//! SPDX SBOM whose subject is that platform's image; for the whole build,
//! one provenance statement whose subject is the index (or the image).
//! Everything comes from the build's own record (plans, crates, scans), so
//! a cached build attaches byte-identical documents.

use serde_json::{Value, json};

use super::provenance::{self, Provenance, Resolved};
use super::sbom::Format;
use super::{Artifact, inventory};
use crate::builder::{Backend, BuildAll, PinnedImage};
use crate::reference::RegistryRef;
use crate::scan::Report;
use crate::scan::fs::View;
use crate::{Error, Result};

/// The tools an SBOM names: kiln and the builder image.
pub fn tools(builder: Option<&PinnedImage>) -> Vec<(String, String)> {
    let mut t = vec![("kiln".to_string(), env!("CARGO_PKG_VERSION").to_string())];
    if let Some(b) = builder {
        t.push((b.reference.clone(), b.digest.to_string()));
    }
    t
}

/// A purl for an image reference at a digest (as buildx names its inputs).
fn docker_purl(reference: &str, digest: &crate::digest::Digest, platform: Option<&str>) -> String {
    let name = RegistryRef::parse(reference)
        .map(|r| format!("{}/{}", r.registry, r.repository))
        .unwrap_or_else(|_| reference.to_string());
    let mut p = format!("pkg:docker/{name}@{digest}");
    if let Some(pl) = platform {
        p.push_str(&format!("?platform={}", pl.replace('/', "%2F")));
    }
    p
}

/// SBOMs for every platform and the build's provenance, as artifacts.
/// `scanned` holds each build's scan and filesystem view, in `all.builds`
/// order; `run_times` adds start and finish to the provenance (which then
/// differs run to run).
pub fn documents(
    all: &BuildAll,
    scanned: &[(Report, View)],
    run_times: Option<(String, String)>,
) -> Result<Vec<Artifact>> {
    if scanned.len() != all.builds.len() {
        return Err(Error::invalid(
            "attestations",
            "scans",
            "one scan per platform is needed",
        ));
    }
    let mut out = Vec::new();
    for (b, (report, view)) in all.builds.iter().zip(scanned) {
        let inv = inventory(
            &b.image,
            view,
            report,
            &b.plan.package_name,
            b.crates.clone(),
            tools(b.plan.builder.as_ref()),
            b.plan.timestamp,
        );
        for f in Format::ALL {
            out.push(Artifact::new(
                f.media_type(),
                &b.image.manifest_descriptor(),
                inv.render(f),
                b.plan.timestamp,
            ));
        }
    }
    let first = &all.builds[0];
    let top = match &all.image {
        crate::image::AnyImage::Image(i) => i.manifest_descriptor(),
        crate::image::AnyImage::Index(ix) => ix.descriptor(),
    };
    let p = provenance_of(all, run_times)?;
    out.push(Artifact::new(
        provenance::MEDIA_TYPE,
        &top,
        p.render(),
        first.plan.timestamp,
    ));
    Ok(out)
}

/// The provenance of a build of every platform.
pub fn provenance_of(all: &BuildAll, run_times: Option<(String, String)>) -> Result<Provenance> {
    let first = &all.builds[0];
    let plan = &first.plan;
    let name = plan.package_name.clone();
    let mut subjects = vec![(name.clone(), all.image.digest().clone())];
    if all.builds.len() > 1 {
        for b in &all.builds {
            subjects.push((format!("{name}/{}", b.image.platform()), b.image.digest().clone()));
        }
    }
    let mut image_plan = serde_json::to_value(&plan.image).expect("serializable");
    if let Some(o) = image_plan.as_object_mut() {
        // Per platform: listed with the resolved dependencies instead.
        o.remove("base_digest");
    }
    let external = json!({
        "package": plan.package_name,
        "version": plan.package_version,
        "bin": plan.bin,
        "features": plan.features,
        "noDefaultFeatures": plan.no_default_features,
        "profile": plan.profile,
        "platforms": all.builds.iter().map(|b| b.image.platform().to_string()).collect::<Vec<_>>(),
        "recipe": plan.recipe,
        "rustflags": plan.rustflags,
        "env": plan.env,
        "image": image_plan,
    });
    let internal = json!({
        "sourceDateEpoch": plan.timestamp.0,
        "assemblyFormat": crate::ASSEMBLY_FORMAT_VERSION,
        "backend": plan.backend,
        "targets": all.builds.iter()
            .map(|b| (b.image.platform().to_string(), Value::String(b.plan.target.clone())))
            .collect::<serde_json::Map<_, _>>(),
    });
    let mut resolved = Vec::new();
    let mut source_digest = vec![("sha256".to_string(), first.source_digest.hex().to_string())];
    if let Some(commit) = provenance::git_head(&plan.project) {
        source_digest.push(("gitCommit".into(), commit));
    }
    resolved.push(Resolved {
        name: Some("source".into()),
        uri: None,
        digest: source_digest,
        annotations: vec![(
            "dev.kiln.digest".into(),
            "sha256 of the source tree as kiln uploads it: an uncompressed tar, sorted, mtime 0".into(),
        )],
    });
    if let Ok(lock) = crate::image::read_regular(&plan.project.join("Cargo.lock"), 64 << 20)
        && lock.len() as u64 <= 64 << 20
    {
        resolved.push(Resolved {
            name: Some("Cargo.lock".into()),
            uri: None,
            digest: vec![("sha256".into(), crate::digest::Digest::of(&lock).hex().to_string())],
            annotations: vec![],
        });
    }
    if let Some(b) = &plan.builder {
        resolved.push(Resolved {
            name: Some("builder".into()),
            uri: Some(docker_purl(&b.reference, &b.digest, None)),
            digest: vec![("sha256".into(), b.digest.hex().to_string())],
            annotations: vec![],
        });
    }
    // An image pulled from a registry cache was not built in this run: the
    // entry it came from is named (its writers are who vouch for it).
    for b in &all.builds {
        if let Some(entry) = &b.cache_entry {
            let digest = entry
                .rsplit_once("@sha256:")
                .map(|(_, h)| h.to_string())
                .unwrap_or_default();
            resolved.push(Resolved {
                name: Some(format!("build-cache {}", b.image.platform())),
                uri: Some(entry.clone()),
                digest: vec![("sha256".into(), digest)],
                annotations: vec![(
                    "dev.kiln.cache".into(),
                    "the image was pulled from this registry build-cache entry, not built in this run".into(),
                )],
            });
        }
    }
    for b in &all.builds {
        if let Some(d) = &b.plan.image.base_digest {
            let platform = b.image.platform().to_string();
            resolved.push(Resolved {
                name: Some(format!("base {platform}")),
                uri: Some(docker_purl(&b.plan.image.base, d, Some(&platform))),
                digest: vec![("sha256".into(), d.hex().to_string())],
                annotations: vec![],
            });
        }
    }
    Ok(Provenance {
        subjects,
        external,
        internal,
        resolved,
        builder_id: match plan.backend {
            Backend::Docker => "https://kiln.dev/attestations/builder/docker".into(),
            Backend::Host => "https://kiln.dev/attestations/builder/host".into(),
        },
        versions: vec![("kiln".into(), env!("CARGO_PKG_VERSION").into())],
        run_times,
    })
}
