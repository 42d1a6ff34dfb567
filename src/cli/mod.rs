//! Command-line types (clap) and dispatch. Each subcommand lives in its own
//! file and turns its arguments into library calls; no logic lives here.

mod assemble;
mod build;
mod inspect;
mod lock;

use clap::{Parser, Subcommand};

/// kiln: minimal, byte-for-byte reproducible container images for Rust projects.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, max_term_width = 100)]
pub struct Cli {
    /// Print nothing on stderr but errors.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Print results as JSON on stdout (implies no progress bars).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Assemble an image from files onto scratch or a base, without a daemon.
    Assemble(Box<assemble::Args>),
    /// Build the project in its pinned builder and assemble a reproducible image.
    Build(Box<build::Args>),
    /// Pin the builder and base images to digests in kiln.lock.
    Lock(lock::Args),
    /// Show an image's manifest, config and layers.
    Inspect(inspect::Args),
}

/// Runs the command; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let progress = kiln::progress::Progress::new(cli.quiet || cli.json);
    match cli.command {
        Command::Assemble(a) => assemble::run(*a, cli.json, cli.quiet, &progress),
        Command::Build(a) => build::run(*a, cli.json, cli.quiet, &progress),
        Command::Lock(a) => lock::run(a, cli.json),
        Command::Inspect(a) => inspect::run(a, cli.json),
    }
}
