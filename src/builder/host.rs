//! The `host` builder backend: the host's own cargo with the same
//! normalization as the container (fixed flags, path remapping,
//! SOURCE_DATE_EPOCH, fetch then offline build). The toolchain is whatever
//! the host has: the output says so, because it is not pinned.

use std::process::{Command, Stdio};

use super::{Artifacts, Builder, Plan};
use crate::layer::Tree;
use crate::progress::Progress;
use crate::{Error, Result};

/// The host backend: the host's cargo, reading the project in place.
pub struct HostBuilder {
    progress: Progress,
}

impl HostBuilder {
    pub fn new(progress: &Progress) -> Self {
        HostBuilder { progress: *progress }
    }
}

impl Builder for HostBuilder {
    fn compile(&self, plan: &Plan, _source: &Tree) -> Result<Artifacts> {
        build(plan, &self.progress)
    }
}

/// `rustc -vV` of the host toolchain (its identity: version, commit, host,
/// LLVM), part of the plan's inputs so a toolchain update is a cache miss.
pub fn toolchain_identity() -> Result<String> {
    let out = Command::new("rustc").arg("-vV").output().map_err(|e| Error::Build {
        message: format!("cannot run the host's rustc ({e}); install Rust or use the docker backend"),
        output: String::new(),
    })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Builds with the host's cargo.
fn build(plan: &Plan, progress: &Progress) -> Result<Artifacts> {
    let target_dir = plan.project.join("target/kiln/host");
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_else(|_| "/root".into())));
    let project = plan.project.canonicalize().map_err(Error::read(&plan.project))?;
    let manifest = project.join("Cargo.toml");
    let run = |args: Vec<String>, offline: bool, what: &str| -> Result<()> {
        let sp = progress.spinner(what);
        let mut c = Command::new("cargo");
        c.args(&args).current_dir(&project);
        c.env_remove("RUSTFLAGS").env_remove("CARGO_BUILD_RUSTFLAGS");
        for kv in plan.base_env(&cargo_home, &target_dir.display().to_string()) {
            let (k, v) = kv.split_once('=').expect("KEY=VALUE");
            c.env(k, v);
        }
        if offline {
            let flags = plan.rustflags_for(&project.display().to_string(), &cargo_home);
            c.env("CARGO_ENCODED_RUSTFLAGS", flags.join("\x1f"));
        }
        c.stdin(Stdio::null());
        let out = c.output().map_err(|e| Error::Build {
            message: format!("cannot run the host's cargo ({e}); install Rust or use the docker backend"),
            output: String::new(),
        })?;
        sp.finish_and_clear();
        if !out.status.success() {
            let text = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = text
                .lines()
                .rev()
                .take(80)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(Error::Build {
                message: format!(
                    "`cargo {}` failed on the host ({}); cargo said:",
                    args.first().map(String::as_str).unwrap_or(""),
                    out.status
                ),
                output: tail.join("\n"),
            });
        }
        if plan.verbose {
            for line in String::from_utf8_lossy(&out.stderr).lines() {
                crate::progress::echo(None, line);
            }
        }
        Ok(())
    };
    let mut fetch = plan.fetch_args(&manifest.display().to_string());
    fetch.remove(0);
    run(fetch, false, "fetching dependencies (host cargo)")?;
    run(plan.build_args(), true, "compiling (host cargo, toolchain not pinned)")?;
    let bin = target_dir.join(&plan.target).join(plan.profile_dir()).join(&plan.bin);
    let binary = std::fs::read(&bin).map_err(Error::read(&bin))?;
    let toolchain = Command::new("rustc")
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let metadata = {
        let mut c = Command::new("cargo");
        c.args(plan.metadata_args()).current_dir(&project).stdin(Stdio::null());
        for kv in plan.base_env(&cargo_home, &target_dir.display().to_string()) {
            let (k, v) = kv.split_once('=').expect("KEY=VALUE");
            c.env(k, v);
        }
        match c.output() {
            Ok(o) if o.status.success() => Some(o.stdout),
            _ => {
                progress.warn("cargo metadata failed on the host: the SBOM will list no crates");
                None
            }
        }
    };
    let ca = std::fs::read("/etc/ssl/certs/ca-certificates.crt").ok();
    Ok(Artifacts {
        binary,
        ca_bundle: ca,
        toolchain: format!("{toolchain} (host, not pinned)"),
        metadata,
        phases: Vec::new(),
        deps_cache: None,
        deps_layer: None,
    })
}
