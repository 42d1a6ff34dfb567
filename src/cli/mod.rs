//! Command-line types (clap) and dispatch. Each subcommand lives in its own
//! file and turns its arguments into library calls; no logic lives here.

mod assemble;
mod build;
mod inspect;
mod lock;
mod push;
pub mod scan;
mod verify;

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
    /// Allow plain HTTP to this registry (HOST[:PORT]) when it does not answer HTTPS; loopback ones always may. Repeatable.
    #[arg(long = "insecure-registry", global = true, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Registry user name (with --password-stdin); overrides docker's config.json.
    #[arg(long, global = true, value_name = "USER", requires = "password_stdin")]
    pub username: Option<String>,
    /// Read the registry password (or token) from standard input.
    #[arg(long, global = true)]
    pub password_stdin: bool,
    /// Upload blobs in chunks of this many bytes (resumable) instead of one streaming PUT.
    #[arg(long, global = true, value_name = "BYTES")]
    pub chunk_size: Option<u64>,
    /// Log every registry request (method, URL, status; never credentials).
    #[arg(long = "debug-registry", global = true)]
    pub debug_registry: bool,
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
    /// Check that an image will start: libraries, symbol versions, interpreter, user, CA bundle.
    Scan(scan::Args),
    /// Rebuild under deliberate variation and prove the bytes are identical, or explain why not.
    Verify(verify::VerifyArgs),
    /// Compare two images top-down and explain every difference.
    Diff(verify::DiffArgs),
    /// Push an image to a registry.
    Push(push::PushArgs),
    /// Pull an image from a registry, verifying every blob.
    Pull(push::PullArgs),
}

/// Runs the command; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let progress = kiln::progress::Progress::new(cli.quiet || cli.json);
    let mut opts = kiln::store::registry::Options {
        insecure: cli.insecure_registry.clone(),
        chunk_size: cli.chunk_size,
        verbose: cli.debug_registry,
        ..Default::default()
    };
    if let Some(user) = &cli.username {
        let mut password = String::new();
        std::io::stdin().read_line(&mut password)?;
        let password = password.trim_end_matches(['\n', '\r']).to_string();
        if password.is_empty() {
            anyhow::bail!(
                "--password-stdin: nothing on standard input; pipe the password in, e.g. `cat pw | kiln ... --password-stdin`"
            );
        }
        opts.credentials = Some(kiln::store::registry::auth::Credentials::Basic {
            username: user.clone(),
            password: kiln::store::registry::auth::Secret::new(password),
        });
    } else if cli.password_stdin {
        anyhow::bail!("--password-stdin needs --username");
    }
    if let Some(cs) = cli.chunk_size
        && cs == 0
    {
        anyhow::bail!("--chunk-size must be at least 1 byte");
    }
    kiln::store::registry::set_options(opts);
    match cli.command {
        Command::Assemble(a) => assemble::run(*a, cli.json, cli.quiet, &progress),
        Command::Build(a) => build::run(*a, cli.json, cli.quiet, &progress),
        Command::Lock(a) => lock::run(a, cli.json),
        Command::Inspect(a) => inspect::run(a, cli.json),
        Command::Scan(a) => scan::run(a, cli.json, cli.quiet, &progress),
        Command::Verify(a) => verify::verify(a, cli.json, &progress),
        Command::Diff(a) => verify::diff(a, cli.json),
        Command::Push(a) => push::push(a, cli.json, cli.quiet),
        Command::Pull(a) => push::pull(a, cli.json, cli.quiet),
    }
}
