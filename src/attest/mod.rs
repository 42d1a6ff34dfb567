//! Evidence about an image, attached the OCI 1.1 way: SBOMs ([`sbom`]),
//! provenance ([`provenance`]), each an [`Artifact`] — an image manifest
//! whose `artifactType` says what it holds, whose config is the empty
//! descriptor, whose one layer is the document, and whose `subject` is the
//! image it describes. Attaching never changes the image: the link points
//! from the document to the image, and registries find it through the
//! referrers API or the referrers tag (`sha256-<hex>`).

pub mod build;
pub mod crates;
pub mod dpkg;
pub mod provenance;
pub mod sbom;

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::digest::Digest;
use crate::image::Image;
use crate::oci::{self, Descriptor, Manifest, canonical_json};
use crate::scan::fs::View;
use crate::time::Timestamp;
use crate::{Error, Result};

/// `org.opencontainers.image.created`, set to SOURCE_DATE_EPOCH.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// The most bytes of one attached document kiln reads back.
pub const MAX_DOCUMENT: u64 = 16 << 20;
/// The most documents kiln reads for one subject, and the most bytes of
/// documents one command holds: a registry listing thousands of entries
/// (all pointing at one large blob) gets an error, not kiln's memory.
pub const MAX_REFERRERS: usize = 64;
/// See [`MAX_REFERRERS`].
pub const MAX_REFERRER_BYTES: u64 = 128 << 20;

/// One document attached to an image.
#[derive(Debug, Clone)]
pub struct Artifact {
    manifest: Manifest,
    manifest_bytes: Arc<[u8]>,
    digest: Digest,
    document: Arc<[u8]>,
}

impl Artifact {
    /// Wraps `document` (of media type `artifact_type`) as an artifact
    /// about `subject`; `created` is its only timestamp.
    pub fn new(artifact_type: &str, subject: &Descriptor, document: Vec<u8>, created: Timestamp) -> Artifact {
        let doc_desc = Descriptor::new(artifact_type, Digest::of(&document), document.len() as u64);
        // Only what identifies the subject: annotations and platform belong to
        // the index that lists it, not to the link.
        let subject = Descriptor::new(subject.media_type.clone(), subject.digest.clone(), subject.size);
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
            artifact_type: Some(artifact_type.into()),
            config: empty_descriptor(),
            layers: vec![doc_desc],
            subject: Some(subject),
            annotations: [(ANNOTATION_CREATED.to_string(), created.rfc3339())].into(),
        };
        let bytes = canonical_json(&manifest);
        Artifact {
            digest: Digest::of(&bytes),
            manifest,
            manifest_bytes: bytes.into(),
            document: document.into(),
        }
    }

    /// An artifact read back: its manifest bytes and the document, checked
    /// against each other.
    pub fn from_parts(manifest_bytes: Vec<u8>, document: Vec<u8>) -> Result<Artifact> {
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| Error::format("artifact manifest", format!("not an OCI manifest: {e}")))?;
        let layer = match manifest.layers.as_slice() {
            [one] => one,
            _ => {
                return Err(Error::format(
                    "artifact manifest",
                    "kiln reads artifacts with exactly one layer",
                ));
            }
        };
        // The shape kiln writes (an artifactType naming the layer's type, the
        // empty config, a subject): what kiln copies on is always complete.
        let empty = empty_descriptor();
        if manifest.config.digest != empty.digest || manifest.config.media_type != empty.media_type {
            return Err(Error::format(
                "artifact manifest",
                "its config is not the empty descriptor",
            ));
        }
        if manifest.artifact_type.as_deref() != Some(layer.media_type.as_str()) || manifest.subject.is_none() {
            return Err(Error::format(
                "artifact manifest",
                "it needs an artifactType naming its one layer's type, and a subject",
            ));
        }
        if layer.digest != Digest::of(&document) || layer.size != document.len() as u64 {
            return Err(Error::DigestMismatch {
                what: "attached document".into(),
                expected: layer.digest.to_string(),
                found: Digest::of(&document).to_string(),
            });
        }
        Ok(Artifact {
            digest: Digest::of(&manifest_bytes),
            manifest,
            manifest_bytes: manifest_bytes.into(),
            document: document.into(),
        })
    }

    /// What the document is (its media type).
    pub fn artifact_type(&self) -> &str {
        self.manifest
            .artifact_type
            .as_deref()
            .unwrap_or(self.manifest.config.media_type.as_str())
    }
    /// The manifest this one is about.
    pub fn subject(&self) -> Option<&Descriptor> {
        self.manifest.subject.as_ref()
    }
    /// The artifact manifest's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
    /// Its exact manifest bytes.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }
    /// The parsed manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    /// The document.
    pub fn document(&self) -> &[u8] {
        &self.document
    }

    /// A descriptor of the artifact manifest as a referrers index lists it:
    /// with `artifactType` and the manifest's annotations.
    pub fn descriptor(&self) -> Descriptor {
        let mut d = Descriptor::new(
            oci::MEDIA_TYPE_MANIFEST,
            self.digest.clone(),
            self.manifest_bytes.len() as u64,
        );
        d.artifact_type = Some(self.artifact_type().to_string());
        d.annotations = self.manifest.annotations.clone();
        d
    }

    /// The blobs it needs besides its manifest: the empty config, the document.
    pub fn blobs(&self) -> Vec<(Descriptor, &[u8])> {
        vec![
            (empty_descriptor(), oci::EMPTY_JSON),
            (self.manifest.layers[0].clone(), &self.document[..]),
        ]
    }
}

/// What an image holds and loads, for its SBOM: the Debian packages in
/// `view` (the image's final filesystem), the libraries `report` (kiln
/// scan of the entrypoint) resolved — interpreter included — each tied to
/// the package that installed it, and the crates when kiln built it.
pub fn inventory(
    image: &Image,
    view: &View,
    report: &crate::scan::Report,
    name: &str,
    crates: Option<crates::CrateGraph>,
    tools: Vec<(String, String)>,
    created: Timestamp,
) -> sbom::Inventory {
    let packages = dpkg::packages(view);
    let entry: BTreeSet<&str> = report.entrypoint.first().map(String::as_str).into_iter().collect();
    let mut loaded: BTreeSet<String> = BTreeSet::new();
    for res in report.objects.values() {
        if let Some(interp) = &res.interp
            && let Ok((real, _)) = view.resolve(interp)
        {
            loaded.insert(format!("/{real}"));
        }
        loaded.extend(res.needed.values().flatten().cloned());
    }
    loaded.retain(|p| !entry.contains(p.as_str()));
    let loaded: Vec<String> = loaded.into_iter().collect();
    let owners = dpkg::owners(view, &packages, &loaded);
    sbom::Inventory {
        name: name.to_string(),
        digest: image.digest().clone(),
        platform: image.platform().to_string(),
        crates,
        distro: dpkg::Distro::of(view),
        loaded: loaded.iter().map(|p| (p.clone(), owners.get(p).copied())).collect(),
        packages,
        tools,
        created,
    }
}

/// The OCI empty descriptor: config of an artifact that has none.
pub fn empty_descriptor() -> Descriptor {
    Descriptor::new(
        oci::MEDIA_TYPE_EMPTY,
        Digest::of(oci::EMPTY_JSON),
        oci::EMPTY_JSON.len() as u64,
    )
}

/// The referrers tag of a subject (the distribution spec's fallback for
/// registries without the referrers API): `sha256-<hex>`.
pub fn referrers_tag(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm(), subject.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_points_at_its_subject_and_round_trips() {
        let subject = Descriptor::new(oci::MEDIA_TYPE_MANIFEST, Digest::of(b"img"), 3);
        let a = Artifact::new("application/spdx+json", &subject, b"{}\n".to_vec(), Timestamp(0));
        let m: serde_json::Value = serde_json::from_slice(a.manifest_bytes()).unwrap();
        assert_eq!(m["artifactType"], "application/spdx+json");
        assert_eq!(m["subject"]["digest"], subject.digest.to_string());
        assert_eq!(m["config"]["mediaType"], oci::MEDIA_TYPE_EMPTY);
        assert_eq!(
            m["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        let back = Artifact::from_parts(a.manifest_bytes().to_vec(), a.document().to_vec()).unwrap();
        assert_eq!(back.digest(), a.digest());
        assert!(Artifact::from_parts(a.manifest_bytes().to_vec(), b"other".to_vec()).is_err());
        assert_eq!(
            referrers_tag(&subject.digest),
            format!("sha256-{}", subject.digest.hex())
        );
        assert_eq!(a.descriptor().artifact_type.as_deref(), Some("application/spdx+json"));
    }
}
