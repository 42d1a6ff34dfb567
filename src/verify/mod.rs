//! `kiln verify`: build the project N times from clean caches, all but the
//! first under deliberate variation, and compare each result with the first
//! (or N varied builds with an image someone published), byte for byte. On a difference, [`diff`] explains it
//! and [`hints`] adds what kiln knows about Rust builds.

pub mod diff;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::build::{self, BuildRequest, Variation};
use crate::progress::Progress;
use crate::reference::ImageRef;
use crate::{Error, Result};

/// One build of a verify run.
#[derive(Debug, Clone, Serialize)]
pub struct BuildRecord {
    pub label: String,
    pub variation: Vec<String>,
    pub digest: String,
}

/// A verify run's result.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub identical: bool,
    pub reference: String,
    pub builds: Vec<BuildRecord>,
    pub differences: Vec<Difference>,
}

/// A build that differs from the reference, explained.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub build: String,
    pub diff: diff::Report,
    pub hints: Vec<String>,
}

/// What kiln varies between rebuilds.
pub const ALL_VARIATIONS: &[&str] = &["path", "env", "hostname", "jobs", "umask", "cache"];

/// The variation of rebuild `i` (1-based).
pub fn variation(i: usize, vary: &[String]) -> Variation {
    let on = |k: &str| vary.iter().any(|v| v == k);
    let mut v = Variation::default();
    if on("path") {
        v.src_dir = Some(format!("/kiln/src-variant-{i}/nested/checkout"));
    }
    if on("env") {
        let (tz, lang) = [
            ("Pacific/Chatham", "fr_FR.UTF-8"),
            ("America/St_Johns", "ja_JP.UTF-8"),
            ("Asia/Kathmandu", "de_DE.UTF-8"),
        ][i % 3];
        v.env = vec![
            ("TZ".into(), tz.into()),
            ("LANG".into(), lang.into()),
            ("LC_ALL".into(), lang.into()),
            (format!("KILN_VERIFY_UNRELATED_{i}"), format!("noise-{i}")),
        ];
    }
    if on("hostname") {
        v.hostname = Some(format!("rebuild-{i}.example"));
    }
    if on("jobs") {
        v.jobs = Some(if i % 2 == 1 { 1 } else { 3 });
    }
    if on("umask") {
        v.umask = Some(if i % 2 == 1 { "077".into() } else { "002".into() });
    }
    v
}

/// Suggestions drawn from what differs.
pub fn hints(d: &diff::Report) -> Vec<String> {
    let mut h = Vec::new();
    for l in &d.layers {
        if l.diff_id_equal {
            h.push("only the compression differs: the same tar compressed differently (a different kiln version or --compression)".into());
        }
        for f in &l.files {
            for s in &f.sections {
                match s.looks_like.as_str() {
                    "a date/time" => h.push(format!(
                        "{}: section {} holds a date/time ({:?} vs {:?}): a build script or proc macro embeds the build time; make it use SOURCE_DATE_EPOCH (kiln sets it) instead of the clock",
                        f.path, s.name, s.sample_a, s.sample_b
                    )),
                    "an absolute path" => h.push(format!(
                        "{}: section {} holds a build path ({:?} vs {:?}): an absolute path escapes remapping, e.g. env!(\"CARGO_MANIFEST_DIR\") or a path written by build.rs; use paths relative to the crate, or include_bytes!/include_str! instead of reading at run time",
                        f.path, s.name, s.sample_a, s.sample_b
                    )),
                    "a random-looking run" => h.push(format!(
                        "{}: section {} differs in random-looking bytes: HashMap iteration order or randomness in a build script or proc macro, or codegen sensitive to parallelism (pin codegen-units)",
                        f.path, s.name
                    )),
                    _ => {}
                }
            }
            if !f.sections.is_empty() && f.sections.iter().all(|s| s.name == ".note.gnu.build-id") {
                h.push(format!(
                    "{}: only the build-id differs: the linker saw different inputs; look at the object files",
                    f.path
                ));
            }
            if f.path.ends_with("Cargo.lock") {
                h.push("Cargo.lock differs: a dependency changed despite the lock".into());
            }
        }
    }
    if d.config.iter().any(|f| f.field == "created") {
        h.push("`created` differs: the builds used different SOURCE_DATE_EPOCH values (set it, or commit so the git time is the same)".into());
    }
    h.dedup();
    h
}

/// What to verify.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    pub project: PathBuf,
    pub rebuilds: usize,
    pub against: Option<ImageRef>,
    pub vary: Vec<String>,
    pub builder: Option<String>,
}

fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("mkdir -p \"$2\" && cd \"$1\" && tar --exclude=./target -cf - . | tar -xf - -C \"$2\"")
        .arg("sh")
        .arg(src)
        .arg(dest)
        .status()
        .map_err(|e| Error::Io {
            context: "copying the project".into(),
            source: e,
        })?;
    if !status.success() {
        return Err(Error::Io {
            context: format!("copying {} to {}", src.display(), dest.display()),
            source: std::io::Error::other("tar failed"),
        });
    }
    Ok(())
}

/// Runs the rebuilds and compares.
pub fn verify(req: &VerifyRequest, progress: &Progress) -> Result<VerifyReport> {
    let work = tempfile::tempdir().map_err(|e| Error::Io {
        context: "temp dir".into(),
        source: e,
    })?;
    let mut builds = Vec::new();
    let mut images = Vec::new();
    let base = BuildRequest {
        project: req.project.clone(),
        builder: req.builder.clone(),
        no_cache: true,
        allow_scan_failures: true,
        ..Default::default()
    };
    // The reference: the published image, or the first of the N builds,
    // made from clean caches under normal conditions.
    let (reference_label, reference, first_varied) = match &req.against {
        Some(r) => ("published".to_string(), crate::store::open(r, None)?, 1),
        None => {
            let out = ImageRef::Oci {
                dir: work.path().join("build-1"),
                tag: None,
            };
            let r = build::build(
                &BuildRequest {
                    outs: vec![out],
                    fresh: true,
                    ..base.clone()
                },
                progress,
            )?;
            builds.push(BuildRecord {
                label: "build 1".into(),
                variation: vec!["the project as it is, clean caches".into()],
                digest: r.image.digest().to_string(),
            });
            ("build 1".to_string(), r.image, 2)
        }
    };
    let last = if req.against.is_some() {
        req.rebuilds
    } else {
        req.rebuilds.max(2)
    };
    for i in first_varied..=last {
        let v = variation(i, &req.vary);
        let mut described = v.describe();
        // A different checkout path on the host too: the source copied elsewhere.
        let project = if req.vary.iter().any(|x| x == "path") {
            let p = work.path().join(format!("checkout-{i}/somewhere/else"));
            copy_tree(&req.project, &p)?;
            described.insert(0, format!("checkout copied to {}", p.display()));
            p
        } else {
            req.project.clone()
        };
        // Clean caches always; "cache" adds a warm rebuild as the last one.
        let warm = req.vary.iter().any(|x| x == "cache") && i == last && i > first_varied;
        described.push(if warm {
            "warm: the shared cache volumes".into()
        } else {
            "cold: empty cache volumes".into()
        });
        let out = ImageRef::Oci {
            dir: work.path().join(format!("build-{i}")),
            tag: None,
        };
        let r = build::build(
            &BuildRequest {
                project,
                outs: vec![out],
                fresh: !warm,
                variation: Some(v),
                ..base.clone()
            },
            progress,
        )?;
        builds.push(BuildRecord {
            label: format!("build {i}"),
            variation: described,
            digest: r.image.digest().to_string(),
        });
        images.push((format!("build {i}"), r.image));
    }
    let mut differences = Vec::new();
    for (label, img) in &images {
        if img.digest() != reference.digest() {
            let d = diff::diff(&reference, img)?;
            let h = hints(&d);
            differences.push(Difference {
                build: label.clone(),
                diff: d,
                hints: h,
            });
        }
    }
    Ok(VerifyReport {
        identical: differences.is_empty(),
        reference: format!("{reference_label} {}", reference.digest()),
        builds,
        differences,
    })
}
