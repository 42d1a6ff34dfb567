//! SBOMs of a built image, in CycloneDX 1.6 JSON and SPDX 2.3 JSON, from
//! what kiln knows rather than what a file scan guesses: the crates cargo
//! compiled for this target ([`CrateGraph`]), the base's Debian packages
//! (dpkg's database in the image), and the shared libraries the loader
//! actually resolves for the entrypoint (kiln scan), tied to the package
//! that installed each. Deterministic by construction: identifiers derive
//! from the image digest, the one timestamp is SOURCE_DATE_EPOCH, every
//! list is sorted, and JSON objects serialize with sorted keys.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::crates::{CrateGraph, CrateSource};
use super::dpkg::{DebPackage, Distro};
use crate::digest::Digest;
use crate::time::Timestamp;

/// Everything an SBOM says about one image (one platform).
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The image's name (the package it was built from, or the reference).
    pub name: String,
    /// The image manifest's digest: the SBOM's subject.
    pub digest: Digest,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// The crates, when kiln built the image (None for an image from elsewhere).
    pub crates: Option<CrateGraph>,
    pub packages: Vec<DebPackage>,
    pub distro: Distro,
    /// Libraries the entrypoint loads (absolute paths), with the index of
    /// the package that installed each.
    pub loaded: Vec<(String, Option<usize>)>,
    /// Tools that made the image: (name, version or digest).
    pub tools: Vec<(String, String)>,
    pub created: Timestamp,
}

/// The SBOM formats kiln writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    CycloneDx,
    Spdx,
}

impl Format {
    /// The media type (and artifactType) of the document.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::CycloneDx => "application/vnd.cyclonedx+json",
            Format::Spdx => "application/spdx+json",
        }
    }

    /// Parses `cyclonedx` or `spdx`.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "cyclonedx" | "cdx" => Some(Format::CycloneDx),
            "spdx" => Some(Format::Spdx),
            _ => None,
        }
    }

    /// Both, in a fixed order.
    pub const ALL: [Format; 2] = [Format::CycloneDx, Format::Spdx];
}

/// Percent-encodes a purl component: RFC 3986 unreserved characters and
/// `:` stay (the purl spec never encodes `:`, so Debian epochs read `1:2.3`).
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A cargo purl: `pkg:cargo/NAME@VERSION`, with where it came from when not crates.io.
fn crate_purl(name: &str, version: &str, source: &CrateSource) -> String {
    let base = format!("pkg:cargo/{}@{}", pct(name), pct(version));
    match source {
        s if s.is_crates_io() => base,
        CrateSource::Registry { index } => format!("{base}?repository_url={}", pct(index)),
        CrateSource::Git { url, commit } => format!("{base}?vcs_url={}", pct(&format!("git+{url}@{commit}"))),
        CrateSource::Path => base,
    }
}

fn deb_purl(p: &DebPackage, distro: &Distro) -> String {
    let ns = distro.id.as_deref().unwrap_or("debian");
    let mut q = vec![format!("arch={}", pct(&p.architecture))];
    if let Some(v) = &distro.version_id {
        q.push(format!("distro={}", pct(&format!("{ns}-{v}"))));
    }
    if let Some(src) = &p.source {
        q.push(format!("upstream={}", pct(src)));
    }
    format!(
        "pkg:deb/{}/{}@{}?{}",
        pct(ns),
        pct(&p.name),
        pct(&p.version),
        q.join("&")
    )
}

fn image_purl(name: &str, digest: &Digest, platform: &str) -> String {
    let arch = platform.split('/').nth(1).unwrap_or("");
    format!(
        "pkg:oci/{}@{}?arch={}",
        pct(name.rsplit('/').next().unwrap_or(name)),
        pct(&digest.to_string()),
        pct(arch)
    )
}

/// A crate's license as a valid SPDX expression: cargo's legacy `A/B` means
/// `A OR B`; anything else that is not an expression is left unasserted.
pub fn license_expression(license: Option<&str>) -> Option<String> {
    let l = license?.trim();
    let l = if l.contains('/') && !l.contains(" OR ") && !l.contains(" AND ") {
        l.split('/').map(str::trim).collect::<Vec<_>>().join(" OR ")
    } else {
        l.to_string()
    };
    let mut depth = 0i32;
    let mut expect_id = true;
    for tok in l.replace('(', " ( ").replace(')', " ) ").split_whitespace() {
        match tok {
            "(" if expect_id => depth += 1,
            ")" if !expect_id => {
                depth -= 1;
                if depth < 0 {
                    return None;
                }
            }
            "AND" | "OR" | "WITH" if !expect_id => expect_id = true,
            id if expect_id
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+')) =>
            {
                expect_id = false
            }
            _ => return None,
        }
    }
    (depth == 0 && !expect_id).then_some(l)
}

/// A UUID (version 5 layout) derived from the image digest and a label:
/// the same image always gets the same serial number.
fn uuid_of(label: &str, digest: &Digest) -> String {
    let h = Digest::of(format!("kiln {label} {digest}").as_bytes());
    let mut b = hex::decode(h.hex()).expect("hex");
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(&b[..16]);
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

/// Serializes a document: pretty, keys sorted (serde_json's map is
/// ordered), one trailing newline. These exact bytes are attached.
fn to_bytes(v: &Value) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("a Value always serializes");
    out.push(b'\n');
    out
}

impl Inventory {
    /// The document in `format`.
    pub fn render(&self, format: Format) -> Vec<u8> {
        match format {
            Format::CycloneDx => to_bytes(&self.cyclonedx()),
            Format::Spdx => to_bytes(&self.spdx()),
        }
    }

    fn deb_ref(&self, i: usize) -> String {
        let p = &self.packages[i];
        format!("deb:{}:{}", p.name, p.architecture)
    }

    /// CycloneDX 1.6: the image is metadata.component; crates, packages
    /// and unowned loaded libraries are components; the dependency graph
    /// runs image → root crate → crates, and root crate → the packages
    /// whose libraries it loads.
    pub fn cyclonedx(&self) -> Value {
        let image_ref = "image".to_string();
        let mut components = Vec::new();
        let mut deps: Vec<Value> = Vec::new();
        let mut image_deps: Vec<String> = Vec::new();
        let mut loaded_by_pkg: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
        let mut unowned: Vec<&str> = Vec::new();
        for (path, owner) in &self.loaded {
            match owner {
                Some(i) => loaded_by_pkg.entry(*i).or_default().push(path),
                None => unowned.push(path),
            }
        }
        let mut root_loads: Vec<String> = loaded_by_pkg.keys().map(|i| self.deb_ref(*i)).collect();
        if let Some(g) = &self.crates {
            for c in &g.crates {
                let mut comp = json!({
                    "type": if c.key == g.root { "application" } else { "library" },
                    "bom-ref": format!("crate:{}", c.key),
                    "name": c.name,
                    "version": c.version,
                    "purl": crate_purl(&c.name, &c.version, &c.source),
                    "scope": if c.proc_macro { "excluded" } else { "required" },
                });
                if let Some(sum) = &c.checksum {
                    comp["hashes"] = json!([{"alg": "SHA-256", "content": sum}]);
                }
                if let Some(l) = license_expression(c.license.as_deref()) {
                    comp["licenses"] = json!([{"expression": l}]);
                }
                let mut props = vec![];
                if !c.features.is_empty() {
                    props.push(json!({"name": "kiln:features", "value": c.features.join(",")}));
                }
                if c.proc_macro {
                    props.push(json!({"name": "kiln:proc-macro", "value": "true"}));
                }
                if !props.is_empty() {
                    comp["properties"] = Value::Array(props);
                }
                if let CrateSource::Git { url, commit } = &c.source {
                    comp["externalReferences"] = json!([{"type": "vcs", "url": format!("{url}#{commit}")}]);
                }
                components.push(comp);
                let mut on: Vec<String> = c.deps.iter().map(|d| format!("crate:{d}")).collect();
                if c.key == g.root {
                    on.append(&mut root_loads);
                    on.extend(unowned.iter().map(|p| format!("file:{p}")));
                    image_deps.push(format!("crate:{}", c.key));
                }
                on.sort();
                deps.push(json!({"ref": format!("crate:{}", c.key), "dependsOn": on}));
            }
        }
        for (i, p) in self.packages.iter().enumerate() {
            let mut comp = json!({
                "type": "library",
                "bom-ref": self.deb_ref(i),
                "name": p.name,
                "version": p.version,
                "purl": deb_purl(p, &self.distro),
            });
            if let Some(paths) = loaded_by_pkg.get(&i) {
                comp["properties"] = Value::Array(
                    paths
                        .iter()
                        .map(|f| json!({"name": "kiln:loaded", "value": f}))
                        .collect(),
                );
            }
            components.push(comp);
            image_deps.push(self.deb_ref(i));
        }
        for f in &unowned {
            components.push(json!({
                "type": "file",
                "bom-ref": format!("file:{f}"),
                "name": f,
                "properties": [{"name": "kiln:loaded", "value": f}],
            }));
            image_deps.push(format!("file:{f}"));
        }
        if self.crates.is_none() {
            // No crate graph: the image still shows which packages load.
            image_deps.extend(root_loads);
        }
        image_deps.sort();
        image_deps.dedup();
        deps.push(json!({"ref": image_ref, "dependsOn": image_deps}));
        for i in 0..self.packages.len() {
            deps.push(json!({"ref": self.deb_ref(i), "dependsOn": []}));
        }
        for f in &unowned {
            deps.push(json!({"ref": format!("file:{f}"), "dependsOn": []}));
        }
        deps.sort_by(|a, b| a["ref"].as_str().cmp(&b["ref"].as_str()));
        let tools: Vec<Value> = self
            .tools
            .iter()
            .map(|(n, v)| json!({"type": "application", "name": n, "version": v}))
            .collect();
        json!({
            "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
            "bomFormat": "CycloneDX",
            "specVersion": "1.6",
            "serialNumber": format!("urn:uuid:{}", uuid_of("cyclonedx", &self.digest)),
            "version": 1,
            "metadata": {
                "timestamp": self.created.rfc3339(),
                "tools": {"components": tools},
                "component": {
                    "type": "container",
                    "bom-ref": image_ref,
                    "name": self.name,
                    "version": self.digest.to_string(),
                    "purl": image_purl(&self.name, &self.digest, &self.platform),
                    "hashes": [{"alg": "SHA-256", "content": self.digest.hex()}],
                    "properties": [{"name": "kiln:platform", "value": self.platform}],
                },
            },
            "components": components,
            "dependencies": deps,
        })
    }

    /// SPDX 2.3: the image package DESCRIBED by the document CONTAINS the
    /// root crate and every Debian package; crates DEPEND_ON crates; the
    /// root crate DYNAMIC_LINKs the packages whose libraries it loads (the
    /// relationship comment names the library).
    pub fn spdx(&self) -> Value {
        let mut ids = SpdxIds::default();
        let mut packages = Vec::new();
        let mut rels: Vec<Value> = Vec::new();
        let image_id = ids.id("Image", &self.name);
        rels.push(rel("SPDXRef-DOCUMENT", "DESCRIBES", &image_id, None));
        packages.push(json!({
            "SPDXID": image_id,
            "name": self.name,
            "versionInfo": self.digest.to_string(),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "CONTAINER",
            "checksums": [{"algorithm": "SHA256", "checksumValue": self.digest.hex()}],
            "externalRefs": [purl_ref(&image_purl(&self.name, &self.digest, &self.platform))],
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
            "comment": format!("platform {}", self.platform),
        }));
        let mut deb_ids = Vec::new();
        for p in &self.packages {
            let id = ids.id("Deb", &format!("{}-{}", p.name, p.architecture));
            packages.push(json!({
                "SPDXID": id,
                "name": p.name,
                "versionInfo": p.version,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "primaryPackagePurpose": "LIBRARY",
                "externalRefs": [purl_ref(&deb_purl(p, &self.distro))],
                "licenseConcluded": "NOASSERTION",
                "licenseDeclared": "NOASSERTION",
                "copyrightText": "NOASSERTION",
                "supplier": "NOASSERTION",
            }));
            rels.push(rel(&image_id, "CONTAINS", &id, None));
            deb_ids.push(id);
        }
        let mut root_id = None;
        if let Some(g) = &self.crates {
            let mut crate_ids = BTreeMap::new();
            for c in &g.crates {
                crate_ids.insert(c.key.as_str(), ids.id("Crate", &c.key));
            }
            for c in &g.crates {
                let id = &crate_ids[c.key.as_str()];
                let download = match &c.source {
                    s if s.is_crates_io() => {
                        format!("https://crates.io/api/v1/crates/{}/{}/download", c.name, c.version)
                    }
                    CrateSource::Git { url, commit } => format!("git+{url}@{commit}"),
                    _ => "NOASSERTION".into(),
                };
                let mut pkg = json!({
                    "SPDXID": id,
                    "name": c.name,
                    "versionInfo": c.version,
                    "downloadLocation": download,
                    "filesAnalyzed": false,
                    "primaryPackagePurpose": if c.key == g.root { "APPLICATION" } else { "LIBRARY" },
                    "externalRefs": [purl_ref(&crate_purl(&c.name, &c.version, &c.source))],
                    "licenseConcluded": "NOASSERTION",
                    "licenseDeclared": license_expression(c.license.as_deref()).unwrap_or_else(|| "NOASSERTION".into()),
                    "copyrightText": "NOASSERTION",
                    "supplier": "NOASSERTION",
                });
                if let Some(sum) = &c.checksum {
                    pkg["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sum}]);
                }
                let mut notes = Vec::new();
                if !c.features.is_empty() {
                    notes.push(format!("features: {}", c.features.join(",")));
                }
                if c.proc_macro {
                    notes.push("procedural macro: runs at build time, not linked".to_string());
                }
                if !notes.is_empty() {
                    pkg["comment"] = json!(notes.join("; "));
                }
                packages.push(pkg);
                for d in &c.deps {
                    if let Some(did) = crate_ids.get(d.as_str()) {
                        rels.push(rel(id, "DEPENDS_ON", did, None));
                    }
                }
            }
            if let Some(rid) = crate_ids.get(g.root.as_str()).cloned() {
                rels.push(rel(&image_id, "CONTAINS", &rid, None));
                root_id = Some(rid);
            }
        }
        let linker = root_id.clone().unwrap_or_else(|| image_id.clone());
        for (path, owner) in &self.loaded {
            match owner {
                Some(i) => rels.push(rel(
                    &linker,
                    "DYNAMIC_LINK",
                    &deb_ids[*i],
                    Some(&format!("loads {path}")),
                )),
                None => {
                    let id = ids.id("File", path);
                    packages.push(json!({
                        "SPDXID": id,
                        "name": path,
                        "downloadLocation": "NOASSERTION",
                        "filesAnalyzed": false,
                        "primaryPackagePurpose": "FILE",
                        "licenseConcluded": "NOASSERTION",
                        "licenseDeclared": "NOASSERTION",
                        "copyrightText": "NOASSERTION",
                        "comment": "a library the entrypoint loads that no package installed",
                    }));
                    rels.push(rel(&image_id, "CONTAINS", &id, None));
                    rels.push(rel(&linker, "DYNAMIC_LINK", &id, Some(&format!("loads {path}"))));
                }
            }
        }
        let mut creators: Vec<String> = self.tools.iter().map(|(n, v)| format!("Tool: {n}-{v}")).collect();
        creators.sort();
        json!({
            "spdxVersion": "SPDX-2.3",
            "dataLicense": "CC0-1.0",
            "SPDXID": "SPDXRef-DOCUMENT",
            "name": format!("{} {}", self.name, self.platform),
            "documentNamespace": format!(
                "https://spdx.org/spdxdocs/kiln-{}-{}",
                pct(self.name.rsplit('/').next().unwrap_or(&self.name)),
                uuid_of("spdx", &self.digest)
            ),
            "creationInfo": {"created": self.created.rfc3339(), "creators": creators},
            "packages": packages,
            "relationships": rels,
        })
    }
}

fn purl_ref(purl: &str) -> Value {
    json!({"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl})
}

fn rel(a: &str, kind: &str, b: &str, comment: Option<&str>) -> Value {
    let mut r = json!({"spdxElementId": a, "relationshipType": kind, "relatedSpdxElement": b});
    if let Some(c) = comment {
        r["comment"] = json!(c);
    }
    r
}

/// SPDX element IDs: `SPDXRef-` and `[A-Za-z0-9.-]`, unique in the document.
#[derive(Default)]
struct SpdxIds {
    used: std::collections::BTreeSet<String>,
}

impl SpdxIds {
    fn id(&mut self, kind: &str, name: &str) -> String {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let base = format!("SPDXRef-{kind}-{}", clean.trim_matches('-'));
        // Sanitizing can map two names to one ID (`a_b`, `a-b`), and a
        // suffixed ID can equal another name's: the first unused one wins.
        let mut id = base.clone();
        let mut n = 1;
        while self.used.contains(&id) {
            n += 1;
            id = format!("{base}-{n}");
        }
        self.used.insert(id.clone());
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::crates::Crate;

    fn inventory() -> Inventory {
        let c = |key: &str, deps: &[&str], source: CrateSource| {
            let (name, version) = key.split_once('@').unwrap();
            Crate {
                key: key.into(),
                name: name.into(),
                version: version.into(),
                source,
                checksum: Some("ab".repeat(32)),
                license: Some("MIT/Apache-2.0".into()),
                features: vec!["default".into()],
                proc_macro: false,
                deps: deps.iter().map(|d| d.to_string()).collect(),
            }
        };
        let io = CrateSource::Registry {
            index: "https://github.com/rust-lang/crates.io-index".into(),
        };
        Inventory {
            name: "app".into(),
            digest: Digest::of(b"image"),
            platform: "linux/amd64".into(),
            crates: Some(CrateGraph {
                root: "app@0.1.0".into(),
                crates: vec![
                    c("app@0.1.0", &["serde@1.0.0"], CrateSource::Path),
                    c("serde@1.0.0", &[], io),
                ],
            }),
            packages: vec![DebPackage {
                name: "libssl3".into(),
                version: "1:3.0.15-1~deb12u1+b1".into(),
                architecture: "amd64".into(),
                source: Some("openssl".into()),
                files: vec![],
            }],
            distro: Distro {
                id: Some("debian".into()),
                version_id: Some("12".into()),
            },
            loaded: vec![
                ("/usr/lib/x86_64-linux-gnu/libssl.so.3".into(), Some(0)),
                ("/opt/libx.so".into(), None),
            ],
            tools: vec![("kiln".into(), "0.1.0".into())],
            created: Timestamp(1_700_000_000),
        }
    }

    #[test]
    fn spdx_ids_never_collide() {
        let mut ids = SpdxIds::default();
        let a = ids.id("Crate", "a_b");
        let b = ids.id("Crate", "a-b");
        let c = ids.id("Crate", "a-b-2");
        let d = ids.id("Crate", "a b");
        let all = [a, b, c, d];
        let set: std::collections::BTreeSet<&String> = all.iter().collect();
        assert_eq!(set.len(), 4, "{all:?}");
    }

    #[test]
    fn purls_are_percent_encoded() {
        let i = inventory();
        assert_eq!(
            deb_purl(&i.packages[0], &i.distro),
            "pkg:deb/debian/libssl3@1:3.0.15-1~deb12u1%2Bb1?arch=amd64&distro=debian-12&upstream=openssl"
        );
        let git = CrateSource::Git {
            url: "https://e.com/x".into(),
            commit: "abc".into(),
        };
        assert_eq!(
            crate_purl("x", "0.1.0", &git),
            "pkg:cargo/x@0.1.0?vcs_url=git%2Bhttps:%2F%2Fe.com%2Fx%40abc"
        );
    }

    #[test]
    fn licenses_are_expressions_or_nothing() {
        assert_eq!(
            license_expression(Some("MIT/Apache-2.0")).as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(
            license_expression(Some("(MIT OR Apache-2.0) AND Unicode-3.0")).as_deref(),
            Some("(MIT OR Apache-2.0) AND Unicode-3.0")
        );
        assert_eq!(
            license_expression(Some("Apache-2.0 WITH LLVM-exception")).as_deref(),
            Some("Apache-2.0 WITH LLVM-exception")
        );
        for bad in ["", "MIT OR", "(MIT", "MIT)", "see LICENSE file", "MIT AND AND X"] {
            assert_eq!(license_expression(Some(bad)), None, "{bad}");
        }
    }

    #[test]
    fn documents_are_deterministic_and_link_loaded_libraries_to_packages() {
        let a = inventory();
        for f in Format::ALL {
            assert_eq!(a.render(f), inventory().render(f), "{f:?}");
        }
        let cdx = a.cyclonedx();
        let ssl = cdx["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "libssl3")
            .unwrap();
        assert_eq!(ssl["properties"][0]["value"], "/usr/lib/x86_64-linux-gnu/libssl.so.3");
        let root = cdx["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["ref"] == "crate:app@0.1.0")
            .unwrap();
        assert_eq!(
            root["dependsOn"],
            json!(["crate:serde@1.0.0", "deb:libssl3:amd64", "file:/opt/libx.so"])
        );
        let serial = cdx["serialNumber"].as_str().unwrap();
        assert_eq!(&serial[9 + 14..9 + 15], "5", "{serial}");
        let spdx = a.spdx();
        let links: Vec<&Value> = spdx["relationships"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["relationshipType"] == "DYNAMIC_LINK")
            .collect();
        assert_eq!(links.len(), 2);
        assert_eq!(links[0]["relatedSpdxElement"], "SPDXRef-Deb-libssl3-amd64");
        // Another image digest, another namespace and serial number.
        let mut b = inventory();
        b.digest = Digest::of(b"other");
        assert_ne!(b.spdx()["documentNamespace"], spdx["documentNamespace"]);
        assert_ne!(b.cyclonedx()["serialNumber"], cdx["serialNumber"]);
    }
}
