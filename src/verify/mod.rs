//! `kiln verify`: build the project N times from clean caches, all but the
//! first under deliberate variation, and compare each result with the first
//! (or N varied builds with an image someone published), byte for byte. On a difference, [`diff`] explains it
//! and [`hints`] adds what kiln knows about Rust builds.

pub mod diff;
pub mod render;

use diff::Looks;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::builder::{self, BuildRequest, Variation};
use crate::context::Context;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Vary {
    /// The checkout elsewhere on the host and the source elsewhere in the builder.
    Path,
    /// TZ, LANG, LC_ALL and an unrelated variable in the build.
    Env,
    Hostname,
    /// CARGO_BUILD_JOBS.
    Jobs,
    Umask,
    /// A warm rebuild (shared cache volumes) as the last one.
    Cache,
}

impl Vary {
    /// Everything kiln knows how to vary.
    pub const ALL: [Vary; 6] = [
        Vary::Path,
        Vary::Env,
        Vary::Hostname,
        Vary::Jobs,
        Vary::Umask,
        Vary::Cache,
    ];

    /// The name users type (`--vary path,env`).
    pub fn name(self) -> &'static str {
        match self {
            Vary::Path => "path",
            Vary::Env => "env",
            Vary::Hostname => "hostname",
            Vary::Jobs => "jobs",
            Vary::Umask => "umask",
            Vary::Cache => "cache",
        }
    }

    /// One line on what it varies.
    pub fn help(self) -> &'static str {
        match self {
            Vary::Path => "the checkout copied elsewhere and the source at another path in the builder",
            Vary::Env => "TZ, LANG, LC_ALL and an unrelated variable in the build",
            Vary::Hostname => "the builder's hostname",
            Vary::Jobs => "CARGO_BUILD_JOBS",
            Vary::Umask => "the build's umask",
            Vary::Cache => "one warm rebuild (shared cache volumes) as the last build",
        }
    }
}

/// The variation of rebuild `i` (1-based).
pub fn variation(i: usize, vary: &[Vary]) -> Variation {
    let on = |k: Vary| vary.contains(&k);
    let mut v = Variation::default();
    if on(Vary::Path) {
        v.src_dir = Some(format!("/kiln/src-variant-{i}/nested/checkout"));
    }
    if on(Vary::Env) {
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
    if on(Vary::Hostname) {
        v.hostname = Some(format!("rebuild-{i}.example"));
    }
    if on(Vary::Jobs) {
        v.jobs = Some(if i % 2 == 1 { 1 } else { 3 });
    }
    if on(Vary::Umask) {
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
            for s in f.sections.iter().filter(|s| s.name != ".note.gnu.build-id") {
                match s.looks_like {
                    Looks::DateTime => h.push(format!(
                        "{}: section {} holds a date/time ({:?} vs {:?}): a build script or proc macro embeds the build time; make it use SOURCE_DATE_EPOCH (kiln sets it) instead of the clock",
                        f.path, s.name, s.sample_a, s.sample_b
                    )),
                    Looks::AbsolutePath => h.push(format!(
                        "{}: section {} holds a build path ({:?} vs {:?}): an absolute path escapes remapping, e.g. env!(\"CARGO_MANIFEST_DIR\") or a path written by build.rs; use paths relative to the crate, or include_bytes!/include_str! instead of reading at run time",
                        f.path, s.name, s.sample_a, s.sample_b
                    )),
                    Looks::Random => h.push(format!(
                        "{}: section {} differs in random-looking bytes: HashMap iteration order or randomness in a build script or proc macro, or codegen sensitive to parallelism (pin codegen-units)",
                        f.path, s.name
                    )),
                    Looks::Other => {}
                }
            }
            let build_id = |s: &diff::SectionDiff| s.name == ".note.gnu.build-id";
            if !f.sections.is_empty() && f.sections.iter().all(build_id) {
                h.push(format!(
                    "{}: only the build-id differs: the linker saw different inputs that left no other section different (e.g. debug info stripped later); look at the object files",
                    f.path
                ));
            } else if f.sections.iter().any(build_id) {
                let causes: Vec<&str> = f
                    .sections
                    .iter()
                    .filter(|s| !build_id(s))
                    .map(|s| s.name.as_str())
                    .collect();
                h.push(format!(
                    "{}: .note.gnu.build-id differs as a consequence, not a cause: it is a hash of what was linked; the cause is in {}",
                    f.path,
                    causes.join(", ")
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
    pub vary: Vec<Vary>,
    pub builder: Option<String>,
    /// Platforms to build (empty: `[build] platforms`, else the host's).
    pub platforms: Vec<crate::oci::Platform>,
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

/// Runs the rebuilds and compares. No build result is written anywhere:
/// the images are compared as values.
pub fn verify(ctx: &Context, req: &VerifyRequest) -> Result<VerifyReport> {
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
        timestamp: ctx.timestamp,
        proxy_env: ctx.proxy_env.clone(),
        ca_bundle: ctx.ca_bundle.clone(),
        platforms: req.platforms.clone(),
        ..Default::default()
    };
    // The reference: the published image, or the first of the N builds,
    // made from clean caches under normal conditions.
    let (reference_label, reference, first_varied) = match &req.against {
        Some(r) => ("published".to_string(), crate::store::open_any(ctx, r)?, 1),
        None => {
            let r = builder::build_all(
                ctx,
                &BuildRequest {
                    fresh: true,
                    ..base.clone()
                },
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
        let project = if req.vary.contains(&Vary::Path) {
            let p = work.path().join(format!("checkout-{i}/somewhere/else"));
            copy_tree(&req.project, &p)?;
            described.insert(0, format!("checkout copied to {}", p.display()));
            p
        } else {
            req.project.clone()
        };
        // Clean caches always; "cache" adds a warm rebuild as the last one.
        let warm = req.vary.contains(&Vary::Cache) && i == last && i > first_varied;
        described.push(if warm {
            "warm: the shared cache volumes".into()
        } else {
            "cold: empty cache volumes".into()
        });
        let r = builder::build_all(
            ctx,
            &BuildRequest {
                project,
                fresh: !warm,
                variation: Some(v),
                ..base.clone()
            },
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
            // An index is compared platform by platform.
            for (platform, a, b) in crate::image::pair_by_platform(&reference, img)? {
                if a.digest() == b.digest() {
                    continue;
                }
                let d = diff::diff(a, b)?;
                let h = hints(&d);
                differences.push(Difference {
                    build: match platform {
                        Some(p) => format!("{label} ({p})"),
                        None => label.clone(),
                    },
                    diff: d,
                    hints: h,
                });
            }
        }
    }
    Ok(VerifyReport {
        identical: differences.is_empty(),
        reference: format!("{reference_label} {}", reference.digest()),
        builds,
        differences,
    })
}
