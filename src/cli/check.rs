//! `kiln check REF`: the deployment checklist. Exit 0 every item passed (or
//! was skipped), 1 findings, 2 could not check.

use std::path::PathBuf;
use std::time::Duration;

use kiln::check::{self, Options, Report, Status};
use kiln::reference::ImageRef;

/// The flags shared by `kiln check` and `kiln build --check`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct CheckFlags {
    /// Dotenv file with the production-like environment [default: [check] env_file].
    #[arg(long, value_name = "FILE")]
    pub env_file: Option<PathBuf>,
    /// Environment variable for the run (after the env file). Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// HTTP path that answers 2xx when healthy [default: [check] health].
    #[arg(long, value_name = "PATH")]
    pub health: Option<String>,
    /// Port of the health endpoint [default: [check] port, else the first exposed TCP port].
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// A variable it must refuse to start without. Repeatable [default: [check] required_env].
    #[arg(long = "required-env", value_name = "NAME")]
    pub required_env: Vec<String>,
    /// How long it must stay up [default: [check] settle, else 1s].
    #[arg(long, value_name = "DURATION")]
    pub settle: Option<String>,
    /// How long ports and health may take [default: [check] ready_timeout, else 10s].
    #[arg(long, value_name = "DURATION")]
    pub ready_timeout: Option<String>,
    /// How long the stop signal may take [default: [check] stop_timeout, else 10s].
    #[arg(long, value_name = "DURATION")]
    pub stop_timeout: Option<String>,
}

impl CheckFlags {
    /// The project's `[check]`, overridden by these flags.
    pub fn options(&self, project: Option<&std::path::Path>) -> anyhow::Result<Options> {
        let mut o = match project {
            Some(p) => Options::from_project(p)?,
            None => Options::default(),
        };
        if let Some(f) = &self.env_file {
            o.env = check::dotenv::load(f)?;
        }
        for kv in &self.env {
            let (k, v) = kv
                .split_once('=')
                .filter(|(k, _)| check::var_name(k))
                .ok_or_else(|| kiln::Error::invalid("--env", kv.as_str(), "expected KEY=VALUE"))?;
            o.env.push((k.to_string(), v.to_string()));
        }
        if let Some(h) = &self.health {
            o.health = Some(check::health_path(h).map_err(|m| kiln::Error::invalid("--health", h.as_str(), m))?);
        }
        if let Some(p) = self.port {
            if p == 0 {
                return Err(kiln::Error::invalid("--port", "0", "expected a port number 1..65535").into());
            }
            o.port = Some(p);
        }
        if !self.required_env.is_empty() {
            if let Some(bad) = self.required_env.iter().find(|n| !check::var_name(n)) {
                return Err(kiln::Error::invalid("--required-env", bad.as_str(), "expected a variable name").into());
            }
            o.required_env = self.required_env.clone();
        }
        let dur = |v: &Option<String>, flag: &'static str, d: Duration| -> anyhow::Result<Duration> {
            Ok(match v {
                Some(s) => check::capped(Duration::from_nanos(kiln::settings::parse_duration(s, flag)?), flag)
                    .map_err(|m| kiln::Error::invalid(flag, s.as_str(), m))?,
                None => d,
            })
        };
        o.settle = dur(&self.settle, "--settle", o.settle)?;
        o.ready_timeout = dur(&self.ready_timeout, "--ready-timeout", o.ready_timeout)?;
        o.stop_timeout = dur(&self.stop_timeout, "--stop-timeout", o.stop_timeout)?;
        Ok(o)
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: oci:DIR[:TAG], docker-archive:FILE, docker-daemon:NAME, or a registry reference.
    #[arg(value_name = "REF")]
    pub image: String,
    /// The project, for [check] and item 9 (pinned inputs) [default: the
    /// current directory when it has a kiln.toml or Cargo.toml].
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// Platform to run from a multi-platform image [default: the host's].
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
    #[command(flatten)]
    flags: CheckFlags,
}

pub fn run(ctx: &kiln::context::Context, a: Args, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let r = ImageRef::parse(&a.image)?;
    let platform = match &a.platform {
        Some(p) => kiln::oci::Platform::parse(p)?,
        None => kiln::oci::Platform::host(),
    };
    let project = a.project.clone().or_else(|| {
        let here = PathBuf::from(".");
        (here.join("kiln.toml").is_file() || here.join("Cargo.toml").is_file()).then_some(here)
    });
    let opts = a.flags.options(project.as_deref())?;
    let sp = ctx.progress.spinner(&format!("checking {r}"));
    let image = kiln::store::open(ctx, &r, Some(&platform))?;
    let report = check::check(ctx, &image, &[], &r.to_string(), &opts, None)?;
    sp.finish_and_clear();
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, quiet, false);
    }
    Ok(if report.passed { 0 } else { 1 })
}

/// Prints the checklist for people (on stderr when stdout carries another result).
pub fn print_report(report: &Report, quiet: bool, stderr: bool) {
    let out = |line: String| {
        if stderr { eprintln!("{line}") } else { outln!("{line}") }
    };
    if !quiet {
        out(format!(
            "kiln check {} ({}, {})",
            report.image, report.digest, report.platform
        ));
    }
    for i in &report.items {
        if quiet && i.status != Status::Fail {
            continue;
        }
        let mark = match i.status {
            Status::Pass => "✓",
            Status::Fail => "✗",
            Status::Skip => "-",
        };
        let skipped = if i.status == Status::Skip { "skipped: " } else { "" };
        // Summaries and evidence carry what the image and the app printed:
        // control characters are shown escaped, never sent to the terminal.
        let esc = kiln::text::escape_controls;
        out(format!("  {mark} {} {:<12} {skipped}{}", i.id, i.name, esc(&i.summary)));
        if i.status == Status::Fail {
            for e in &i.evidence {
                out(format!("        {}", esc(e)));
            }
            if !i.fix.is_empty() {
                out(format!("      fix: {}", i.fix));
            }
        }
    }
    if !quiet {
        let failed = report.failures().count();
        out(if failed == 0 {
            format!("all items passed ({:.1} s)", report.seconds)
        } else {
            format!("{failed} item(s) failed ({:.1} s)", report.seconds)
        });
    }
}
