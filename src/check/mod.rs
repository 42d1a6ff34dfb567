//! `kiln check`: the deployment checklist, run against the real image on
//! the engine before it ships. Nine items, each pass, fail or skip with its
//! evidence and a fix:
//!
//! 1. scan: it will load (libraries, symbol versions, interpreter, user, CA);
//! 2. start: it stays up with production-like settings (see `engine`);
//! 3. ports: its declared ports answer from outside, nothing else listens;
//! 4. health: the health endpoint (or the image's healthcheck) answers;
//! 5. required-env: without each required variable it refuses to start, naming it;
//! 6. stop: the stop signal ends it promptly with status 0 (or 128+signal);
//! 7. writes: it writes nothing outside /tmp and its volumes;
//! 8. secrets: no credentials in its config or layers;
//! 9. pinned: Cargo.lock committed, kiln.lock matches.
//!
//! Containers and the network it makes are removed on success, failure and Ctrl-C.

mod containers;
pub mod dotenv;
mod engine;
pub mod pinned;
mod probe;
pub mod secrets;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{KilnToml, Source};
use crate::context::Context;
use crate::image::Image;
use crate::{Error, Result};

/// An item's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

/// Short names of the nine items, by number.
pub const NAMES: [&str; 9] = [
    "scan",
    "start",
    "ports",
    "health",
    "required-env",
    "stop",
    "writes",
    "secrets",
    "pinned",
];

/// One checklist item.
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    pub id: u8,
    pub name: &'static str,
    pub status: Status,
    pub summary: String,
    pub evidence: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

impl Item {
    pub fn new(
        id: u8,
        status: Status,
        summary: impl Into<String>,
        evidence: Vec<String>,
        fix: impl Into<String>,
    ) -> Item {
        Item {
            id,
            name: NAMES[usize::from(id) - 1],
            status,
            summary: summary.into(),
            evidence,
            fix: fix.into(),
        }
    }
}

/// What `kiln check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub image: String,
    pub digest: String,
    pub platform: String,
    pub passed: bool,
    pub items: Vec<Item>,
    pub seconds: f64,
}

impl Report {
    /// The failed items.
    pub fn failures(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.status == Status::Fail)
    }
}

/// How to run and probe the image.
#[derive(Debug, Clone)]
pub struct Options {
    /// The environment of the run (env file first, then `--env`; later wins).
    pub env: Vec<(String, String)>,
    /// HTTP path for the health probe.
    pub health: Option<String>,
    /// Port for the health probe (default: the first exposed TCP port).
    pub port: Option<u16>,
    pub required_env: Vec<String>,
    pub settle: Duration,
    pub ready_timeout: Duration,
    pub stop_timeout: Duration,
    /// The project, for item 9 (skipped without one).
    pub project: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            env: Vec::new(),
            health: None,
            port: None,
            required_env: Vec::new(),
            settle: Duration::from_secs(1),
            ready_timeout: Duration::from_secs(10),
            stop_timeout: Duration::from_secs(10),
            project: None,
        }
    }
}

impl Options {
    /// The project's `[check]` (positions in errors), with the env file read.
    pub fn from_project(project: &Path) -> Result<Options> {
        let path = project.join("kiln.toml");
        let (cfg, text) = KilnToml::load(&path)?;
        let src = Source {
            file: &path,
            text: &text,
        };
        let c = cfg.check;
        let mut o = Options {
            project: Some(project.to_path_buf()),
            ..Default::default()
        };
        let dur = |v: &Option<toml::Spanned<String>>, key: &'static str, default: Duration| -> Result<Duration> {
            match v {
                None => Ok(default),
                Some(s) => crate::settings::parse_duration(s.get_ref(), key)
                    .map(Duration::from_nanos)
                    .map_err(|e| e.to_string())
                    .and_then(|d| capped(d, key))
                    .map_err(|m| Error::Config(src.error(s.span(), m))),
            }
        };
        o.settle = dur(&c.settle, "[check] settle", o.settle)?;
        o.ready_timeout = dur(&c.ready_timeout, "[check] ready_timeout", o.ready_timeout)?;
        o.stop_timeout = dur(&c.stop_timeout, "[check] stop_timeout", o.stop_timeout)?;
        if let Some(h) = &c.health {
            o.health = Some(health_path(h.get_ref()).map_err(|m| Error::Config(src.error(h.span(), m)))?);
        }
        if let Some(p) = &c.port {
            let port = u16::try_from(*p.get_ref())
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| Error::Config(src.error(p.span(), "expected a port number 1..65535")))?;
            o.port = Some(port);
        }
        for name in &c.required_env {
            let n = name.get_ref();
            if !var_name(n) {
                return Err(Error::Config(src.error(name.span(), "expected a variable name")));
            }
            o.required_env.push(n.clone());
        }
        if let Some(f) = &c.env_file {
            // kiln.toml is the project's, and the project is untrusted: its
            // env file must be inside it (the values go into the container).
            let rel = Path::new(f.get_ref());
            let inside = rel.components().all(|c| matches!(c, std::path::Component::Normal(_)));
            if !inside {
                return Err(Error::Config(src.error(
                    f.span(),
                    "expected a path inside the project (relative, no `..`); pass a file from elsewhere with --env-file",
                )));
            }
            let file = project.join(rel);
            let real_project = std::fs::canonicalize(project).map_err(Error::read(project))?;
            match std::fs::canonicalize(&file) {
                Ok(real) if real.starts_with(&real_project) && real.is_file() => o.env = dotenv::load(&real)?,
                Ok(_) => {
                    return Err(Error::Config(src.error(
                        f.span(),
                        "the env file leads out of the project (a symlink) or is not a file",
                    )));
                }
                Err(_) => {
                    return Err(Error::Config(src.error(
                        f.span(),
                        format!(
                            "env file {} does not exist (paths are relative to the project)",
                            file.display()
                        ),
                    )));
                }
            }
        }
        Ok(o)
    }
}

/// The longest wait kiln check accepts (an untrusted kiln.toml must not stall CI).
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// A duration within [`MAX_WAIT`].
pub fn capped(d: Duration, what: &str) -> std::result::Result<Duration, String> {
    if d > MAX_WAIT {
        Err(format!("{what}: at most {} s", MAX_WAIT.as_secs()))
    } else {
        Ok(d)
    }
}

/// A variable name as `[check] required_env` and `--env` take it.
pub fn var_name(n: &str) -> bool {
    !n.is_empty()
        && !n
            .bytes()
            .any(|b| b == b'=' || b.is_ascii_whitespace() || b.is_ascii_control())
}

/// A health path must be an absolute HTTP path.
pub fn health_path(p: &str) -> std::result::Result<String, String> {
    if p.starts_with('/') && !p.bytes().any(|b| b.is_ascii_whitespace() || b.is_ascii_control()) {
        Ok(p.to_string())
    } else {
        Err(format!(
            "`{p}` is not an HTTP path: expected one starting with `/`, like /health"
        ))
    }
}

/// Runs the checklist on `image`. `scan` is a scan already made of it
/// (`kiln build --check`), else it is scanned here. `others` are images
/// that are not run but ship with it (an index's other platforms): their
/// layers are searched for secrets too.
pub fn check(
    ctx: &Context,
    image: &Image,
    others: &[&Image],
    name: &str,
    opts: &Options,
    scan: Option<&crate::scan::Report>,
) -> Result<Report> {
    let started = Instant::now();
    let mut items = Vec::new();

    // 1. scan
    let scanned;
    let scan = match scan {
        Some(s) => s,
        None => {
            scanned = crate::scan::scan(image, crate::scan::Options::default())?;
            &scanned
        }
    };
    items.push(scan_item(scan));

    // 8. secrets (static, before anything runs)
    let (mut secrets, mut total) = secrets::find(image)?;
    for other in others {
        let (more, n) = secrets::find(other)?;
        total += n;
        secrets.extend(more.into_iter().map(|mut s| {
            s.place = format!("{} ({})", s.place, other.platform());
            s
        }));
    }
    secrets.truncate(secrets::MAX_FINDINGS);
    items.push(if secrets.is_empty() {
        Item::new(
            8,
            Status::Pass,
            "nothing that looks like a credential",
            vec![format!(
                "config Env and every file of {} layer(s) looked at (names, and contents up to {} MiB)",
                image.layers().len(),
                secrets::MAX_CONTENT >> 20
            )],
            "",
        )
    } else {
        let first = &secrets[0];
        Item::new(
            8,
            Status::Fail,
            format!("{} in {}: {}", first.what, first.place, first.why),
            secrets
                .iter()
                .map(|s| format!("{}: {}: {}", s.place, s.what, s.why))
                .chain((total > secrets.len()).then(|| format!("… and {} more", total - secrets.len())))
                .collect(),
            "keep secrets out of the image: pass them at run time (env, mounted files, a secret store); \
             a file deleted by a later layer is still in the pushed bytes, so rebuild without it and rotate it",
        )
    });

    // 9. pinned
    items.push(match &opts.project {
        None => Item::new(
            9,
            Status::Skip,
            "no project to look at (pass --project DIR)",
            vec![],
            "",
        ),
        Some(dir) => {
            let p = pinned::check(ctx, dir);
            if p.problems.is_empty() {
                Item::new(
                    9,
                    Status::Pass,
                    "Cargo.lock and kiln.lock pin the inputs",
                    p.evidence,
                    "",
                )
            } else {
                let mut ev = p.evidence;
                ev.extend(p.problems.iter().map(|(w, _)| w.clone()));
                Item::new(
                    9,
                    Status::Fail,
                    p.problems[0].0.clone(),
                    ev,
                    p.problems
                        .iter()
                        .map(|(_, f)| f.as_str())
                        .collect::<Vec<_>>()
                        .join("; "),
                )
            }
        }
    });

    // 2–7, on the engine.
    items.extend(run_on_engine(ctx, image, opts)?);
    items.sort_by_key(|i| i.id);
    let passed = items.iter().all(|i| i.status != Status::Fail);
    Ok(Report {
        image: name.to_string(),
        digest: image.digest().to_string(),
        platform: image.platform().to_string(),
        passed,
        items,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn scan_item(scan: &crate::scan::Report) -> Item {
    use crate::scan::Severity;
    let errors: Vec<&crate::scan::Finding> = scan.findings.iter().filter(|f| f.severity == Severity::Error).collect();
    let mut ev: Vec<String> = vec![format!(
        "{} ELF object(s) checked, entrypoint {:?}",
        scan.objects.len(),
        scan.entrypoint
    )];
    ev.extend(scan.findings.iter().map(|f| {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        format!("{sev}: {}: {}", f.file, f.message)
    }));
    if errors.is_empty() {
        Item::new(1, Status::Pass, "it will load (kiln scan: no errors)", ev, "")
    } else {
        Item::new(
            1,
            Status::Fail,
            format!("{}: {}", errors[0].file, errors[0].message),
            ev,
            errors[0].fix.clone(),
        )
    }
}

/// Loads the image into the engine (unless it has it), runs items 2–7,
/// and removes what it made, whatever happens: success, failure, Ctrl-C,
/// SIGTERM or SIGHUP (a cancelled CI job), a panic.
fn run_on_engine(ctx: &Context, image: &Image, opts: &Options) -> Result<Vec<Item>> {
    use crate::store::Sink as _;
    use futures_util::FutureExt as _;
    use tokio::signal::unix::{SignalKind, signal};
    let config = image.manifest().config.digest.clone();
    let id = config.to_string();
    let rc = image.config().config.clone().unwrap_or_default();
    // The probes come from this host: a remote engine's container addresses
    // are not this host's to reach (they may even be another machine's here).
    if !ctx.engine.is_local() {
        return Err(Error::Engine {
            message: format!(
                "kiln check probes the containers from this host, and {} is another host: run kiln check there, \
                 or through a local engine",
                ctx.engine
            ),
        });
    }
    let rt = crate::store::daemon::runtime()?;
    // Every call of the check is short: a wedged engine is an error, not a hang.
    let docker = crate::store::daemon::connect(&ctx.engine)?.with_timeout(Duration::from_secs(120));
    let present = rt.block_on(async {
        crate::store::engine::ping(&docker, &ctx.engine).await?;
        Ok::<_, Error>(docker.inspect_image(&id).await.is_ok())
    })?;
    // The engine's image ID is the config digest: equal IDs, equal image.
    let loaded = if present {
        None
    } else {
        let hex = config.hex();
        let name = crate::reference::DockerName::parse(&format!("kiln-check:{}", &hex[..16]))?;
        crate::store::daemon::DaemonSink::new(ctx.engine.clone(), name.clone()).put(image)?;
        Some(name)
    };
    let created = containers::tracker();
    let (r, left) = rt.block_on(async {
        let flow = std::panic::AssertUnwindSafe(engine::run(&docker, &id, &rc, opts, &created)).catch_unwind();
        let stop = async {
            let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
        };
        let r = tokio::select! {
            r = flow => r,
            _ = stop => Ok(Err(Error::Interrupted)),
        };
        let left = containers::cleanup(&docker, &created).await;
        if let Some(name) = &loaded {
            // Untagging the image kiln loaded leaves the engine as it was.
            let _ = docker
                .remove_image(
                    &name.to_string(),
                    None::<bollard::query_parameters::RemoveImageOptions>,
                    None,
                )
                .await;
        }
        (r, left)
    });
    for l in left {
        ctx.progress.warn(&format!("kiln check could not remove {l}"));
    }
    match r {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
