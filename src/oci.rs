//! OCI image-spec types (manifest, index, config, descriptor) as kiln writes
//! them. Maps are BTreeMaps and JSON goes through [`canonical_json`], so the
//! bytes depend only on the values. Absent and null are different bytes:
//! optional fields are skipped when empty, on purpose.
//!
//! Why not the `oci-spec` crate (measured against 0.10.0, issue 9): through
//! [`canonical_json`] its types give the same bytes as these for everything
//! kiln writes (the golden image's index.json, manifest and config, and
//! synthetic manifests, configs and indexes), so its HashMaps (oci-spec-rs
//! issue 249) are not the obstacle. It costs clarity: private fields behind
//! derive_builder/getset turn literals into builders whose missing required
//! fields fail at run time, and edits into clone/modify/set (assemble's
//! 29-line config edit becomes 41); `Option<Vec>`/HashMap fields need
//! empty-vs-absent and ordering handled by hand; diff_ids are untyped
//! strings beside a second Digest type; `ImageConfiguration::default()` fills
//! in the host's architecture. It also changes bytes kiln re-serializes from a
//! base: `armbe` becomes `arm64be`, platform `os.version`/`os.features`
//! become `os_version`/`os_features`, and derived configs would keep
//! `"empty_layer":false` and empty `{}`/`[]` (new digests for images built
//! on a base). Neither keeps unknown fields, so foreign documents are kept
//! as the bytes read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::{Error, Result};

/// `application/vnd.oci.image.manifest.v1+json`
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.index.v1+json`
pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.config.v1+json`
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// gzip-compressed layer.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// zstd-compressed layer.
pub const MEDIA_TYPE_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Uncompressed layer.
pub const MEDIA_TYPE_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// Docker schema2 manifest, accepted when reading.
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list, accepted when reading.
pub const MEDIA_TYPE_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker config, accepted when reading.
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip layer, accepted when reading.
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// The OCI empty descriptor's media type (an artifact's config).
pub const MEDIA_TYPE_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// The OCI empty descriptor's content, `{}`.
pub const EMPTY_JSON: &[u8] = b"{}";
/// The annotation that names a tag in an OCI layout's index.json.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd (and Docker ≥ 25) reads for the image name.
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

/// Serializes a value to JSON with keys sorted at every level, no whitespace.
/// These are the bytes that are hashed, stored and sent: serialize once.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    // serde_json's Map is a BTreeMap (preserve_order is never enabled), so a
    // round trip through Value sorts every object's keys, struct fields too.
    let v = serde_json::to_value(value).expect("kiln's OCI types always serialize");
    serde_json::to_vec(&v).expect("a Value always serializes")
}

/// Target platform of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`, e.g. `linux/amd64`, `linux/arm64/v8`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = |r: &str| Error::invalid("platform", s, r.to_string());
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad("expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8"));
        }
        if parts[0] != "linux" {
            return Err(bad("kiln builds linux images only; use linux/ARCH"));
        }
        const ARCHES: &[&str] = &["amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64"];
        if !ARCHES.contains(&parts[1]) {
            return Err(bad(&format!("unknown architecture; use one of {}", ARCHES.join(", "))));
        }
        Ok(Platform {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// Whether an index entry's platform `self` serves a request for `want`
    /// (a request without a variant accepts any variant).
    pub fn satisfies(&self, want: &Platform) -> bool {
        self.os == want.os
            && self.architecture == want.architecture
            && (want.variant.is_none() || self.variant == want.variant)
    }

    /// The Rust target architecture for this platform (kiln builds amd64
    /// and arm64).
    pub fn rust_arch(&self) -> Result<&'static str> {
        match self.architecture.as_str() {
            "amd64" => Ok("x86_64"),
            "arm64" => Ok("aarch64"),
            other => Err(Error::invalid(
                "platform",
                self.to_string(),
                format!("kiln builds linux/amd64 and linux/arm64; {other} has no recipe target yet"),
            )),
        }
    }

    /// The platform as image indexes name it: arm64 is arm64/v8, the
    /// variant containerd and Docker write.
    pub fn normalized(&self) -> Self {
        let mut p = self.clone();
        if p.architecture == "arm64" && p.variant.is_none() {
            p.variant = Some("v8".into());
        }
        p
    }

    /// The platform of the machine kiln runs on.
    pub fn host() -> Self {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// The artifact type of the manifest it points at (OCI 1.1: referrers
    /// indexes carry it so clients filter without fetching each manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor with no platform or annotations.
    pub fn new(media_type: impl Into<String>, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.into(),
            digest,
            size,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }
}

/// An image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// OCI 1.1: what an artifact manifest holds (absent on images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// OCI 1.1: the manifest this one is about (an SBOM's image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// An image index (also the shape of an OCI layout's index.json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// An empty OCI index.
    pub fn empty() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_INDEX.into()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
        }
    }
}

/// The image config blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<RuntimeConfig>,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub history: Vec<History>,
}

impl ImageConfig {
    /// The platform this config declares.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
        }
    }
}

/// The execution parameters of a container (the config's `config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub exposed_ports: BTreeMap<String, Empty>,
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub volumes: BTreeMap<String, Empty>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Docker's health check (Docker and Podman run it; OCI runtimes and
    /// Kubernetes ignore it). Absent unless set, so images without one keep
    /// their bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
}

/// The config's `Healthcheck`, the way Docker writes it: `Test` is
/// `["CMD", arg…]`, durations are nanoseconds, zero values are omitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "null_as_default")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u64>,
}

fn null_as_default<'de, D, T>(d: D) -> std::result::Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `{}` in JSON (ExposedPorts and Volumes values).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The config's `rootfs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

/// One entry of the config's `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_everywhere() {
        let d = Descriptor::new(MEDIA_TYPE_CONFIG, Digest::of(b"x"), 1);
        let s = String::from_utf8(canonical_json(&d)).unwrap();
        assert!(s.starts_with("{\"digest\":"), "{s}");
        assert!(s.find("mediaType").unwrap() < s.find("size").unwrap());
    }

    #[test]
    fn platform_parsing() {
        assert_eq!(Platform::parse("linux/amd64").unwrap().to_string(), "linux/amd64");
        assert_eq!(
            Platform::parse("linux/arm64/v8").unwrap().variant.as_deref(),
            Some("v8")
        );
        assert!(Platform::parse("windows/amd64").is_err());
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/z80").is_err());
    }
}
