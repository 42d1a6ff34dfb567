//! Command-line types (clap) and dispatch. Each subcommand lives in its own
//! file and turns its arguments into library calls; no logic lives here.

/// Writes a result line to stdout. A reader that went away (`kiln … | head`)
/// ends kiln quietly with success, like any Unix filter: SIGPIPE stays
/// ignored (a registry closing a connection must not kill kiln), so the
/// broken pipe arrives here as an error instead.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout().lock(), $($arg)*) {
            $crate::cli::stdout_failed(e);
        }
    }};
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::cli::stdout_failed(e);
        }
    }};
}

/// A write to stdout failed: a closed pipe ends kiln quietly, anything
/// else is reported.
pub fn stdout_failed(e: std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("kiln: error: writing to standard output: {e}");
    std::process::exit(2);
}

mod assemble;
mod build;
mod cache;
mod check;
mod completions;
mod diff;
mod history;
mod index;
mod init;
mod inspect;
mod lock;
mod man;
mod pull;
mod push;
mod referrers;
mod sbom;
pub mod scan;
mod sign;
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
    /// Write a kiln.toml for this project (from Cargo.toml, or carried over from a Dockerfile).
    Init(init::Args),
    /// Assemble an image from files onto scratch or a base, without a daemon.
    Assemble(Box<assemble::Args>),
    /// Build the project in its pinned builder and assemble a reproducible image.
    Build(Box<build::Args>),
    /// Put per-platform images under one OCI image index.
    Index(index::Args),
    /// Pin the builder and base images to digests in kiln.lock.
    Lock(lock::Args),
    /// Show an image's manifest, config and layers.
    Inspect(inspect::Args),
    /// Check that an image will start: libraries, symbol versions, interpreter, user, CA bundle.
    Scan(scan::Args),
    /// Start the image as production would and run the deployment checklist (ports, health, stop, secrets, …).
    Check(check::Args),
    /// Rebuild under deliberate variation and prove the bytes are identical, or explain why not.
    Verify(verify::Args),
    /// Compare two images top-down and explain every difference.
    Diff(diff::Args),
    /// Push an image to a registry.
    Push(push::Args),
    /// Pull an image from a registry, verifying every blob.
    Pull(pull::Args),
    /// Print an image's SBOM (CycloneDX or SPDX): the one attached at build, else made from the image.
    Sbom(sbom::Args),
    /// List the documents attached to an image (SBOMs, provenance) and its signatures.
    Referrers(referrers::Args),
    /// Sign an image in a registry (and its platforms and attached documents), cosign-compatible.
    Sign(sign::SignArgs),
    /// Check an image's cosign signatures against a public key.
    VerifySignature(sign::VerifyArgs),
    /// Make a cosign key pair (PREFIX.key encrypted with COSIGN_PASSWORD, PREFIX.pub).
    GenerateKeyPair(sign::KeygenArgs),
    /// Show a tag's release history (every move kiln made), kept in the registry.
    History(history::HistoryArgs),
    /// Point a tag back at an earlier release, byte for byte, and record it.
    Rollback(history::RollbackArgs),
    /// Manage a registry build cache (`kiln cache prune REPO`).
    Cache(cache::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::Args),
    /// Print the man page (roff) for kiln or one subcommand.
    Man(man::Args),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The one place kiln reads its environment: flags and variables become the
/// library's explicit [`kiln::context::Context`].
fn context(cli: &Cli) -> anyhow::Result<kiln::context::Context> {
    use kiln::store::registry::{Options, RetryPolicy, auth};
    let progress = kiln::progress::Progress::new(cli.quiet || cli.json, env("NO_COLOR").is_none());
    let home = env("HOME");
    let mut retry = RetryPolicy::default();
    if let Some(ms) = env("KILN_RETRY_BASE_MS") {
        retry.base = std::time::Duration::from_millis(
            ms.parse()
                .map_err(|_| kiln::Error::invalid("KILN_RETRY_BASE_MS", ms.as_str(), "expected milliseconds"))?,
        );
    }
    let certs_dirs = match env("KILN_CERTS_DIR") {
        Some(v) => v.split(':').filter(|s| !s.is_empty()).map(Into::into).collect(),
        None => {
            let mut d: Vec<std::path::PathBuf> = vec!["/etc/docker/certs.d".into(), "/etc/containers/certs.d".into()];
            if let Some(h) = &home {
                d.push(std::path::PathBuf::from(h).join(".config/kiln/certs.d"));
            }
            d
        }
    };
    let docker_config_dir = match (env("DOCKER_CONFIG"), &home) {
        (Some(d), _) => Some(std::path::PathBuf::from(d)),
        (None, Some(h)) => Some(std::path::PathBuf::from(h).join(".docker")),
        (None, None) => None,
    };
    let docker_config = docker_config_dir.as_ref().map(|d| d.join("config.json"));
    // The engine, chosen as the docker CLI chooses it.
    // Broken engine settings stop only the commands that use the engine.
    let engine = kiln::store::engine::Engine::resolve(&kiln::store::engine::EngineEnv {
        docker_host: env("DOCKER_HOST"),
        docker_tls_verify: env("DOCKER_TLS_VERIFY"),
        docker_cert_path: env("DOCKER_CERT_PATH").map(Into::into),
        docker_context: env("DOCKER_CONTEXT"),
        config_dir: docker_config_dir.clone(),
        ssh_config: env("KILN_SSH_CONFIG").map(Into::into),
    })
    .unwrap_or_else(|e| kiln::store::engine::Engine::unusable(e.to_string()));
    if engine.plaintext_remote() {
        progress.warn(&format!(
            "the engine {engine} is reached over plain TCP: the source and the proxy settings go in clear, and whoever is on the path controls the build; use TLS (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) or ssh://"
        ));
    }
    // Pull mirrors the way podman/skopeo (registries.conf) and Docker
    // (daemon.json) read them, so one setup serves every tool.
    let registries_conf = env("CONTAINERS_REGISTRIES_CONF").map(std::path::PathBuf::from);
    let mirrors = kiln::store::registry::mirrors::Mirrors::load(
        &kiln::store::registry::mirrors::conf_files(
            registries_conf.as_deref(),
            home.as_deref().map(std::path::Path::new),
        ),
        Some(std::path::Path::new("/etc/docker/daemon.json")),
    );
    let mut registry = Options {
        mirrors,
        insecure: cli.insecure_registry.clone(),
        chunk_size: cli.chunk_size,
        verbose: cli.debug_registry,
        retry,
        certs_dirs,
        docker_config,
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
        registry.credentials = Some(auth::Credentials::Basic {
            username: user.clone(),
            password: auth::Secret::new(password),
        });
    } else if cli.password_stdin {
        anyhow::bail!("--password-stdin needs --username");
    }
    if cli.chunk_size == Some(0) {
        anyhow::bail!("--chunk-size must be at least 1 byte");
    }
    let timestamp = env("SOURCE_DATE_EPOCH")
        .map(|v| kiln::time::Timestamp::parse(&v))
        .transpose()?;
    let proxy_env = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "http_proxy",
        "https_proxy",
        "no_proxy",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect();
    let cache = kiln::cache::Cache::from_env(
        env("KILN_CACHE_DIR").as_deref(),
        env("XDG_CACHE_HOME").as_deref(),
        home.as_deref(),
    );
    Ok(kiln::context::Context {
        registry,
        cache,
        progress,
        timestamp,
        proxy_env,
        ca_bundle: env("KILN_CA_BUNDLE").map(Into::into),
        engine,
    })
}

/// The registries (HOST[:PORT]) among `refs`: where `--username` applies.
pub fn registries_of<'a>(refs: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    refs.into_iter()
        .filter_map(|s| match kiln::reference::ImageRef::parse(s) {
            Ok(kiln::reference::ImageRef::Registry(r)) => Some(r.registry),
            _ => None,
        })
        .collect()
}

/// Runs the command; returns the exit code.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let mut ctx = context(&cli)?;
    // Credentials from the command line go only to the registries the
    // command itself names, never to a base's, a builder's or a mirror's.
    ctx.registry.credentials_for = match &cli.command {
        Command::Push(a) => registries_of([&a.dest]),
        Command::Pull(a) => registries_of([&a.image]),
        Command::Build(a) => registries_of(a.outs.iter().chain(&a.push).chain(&a.cache)),
        Command::Verify(a) => registries_of(&a.against),
        Command::Scan(a) => registries_of([&a.image]),
        Command::Check(a) => registries_of([&a.image]),
        Command::Inspect(a) => registries_of([&a.image]),
        Command::Sbom(a) => registries_of([&a.image]),
        Command::Referrers(a) => registries_of([&a.image]),
        Command::Sign(a) => registries_of([&a.image]),
        Command::VerifySignature(a) => registries_of([&a.image]),
        Command::History(a) => registries_of([&a.image]),
        Command::Rollback(a) => registries_of([&a.image]),
        Command::Cache(a) => match &a.action {
            cache::Action::Prune(p) => registries_of([&p.repo]),
        },
        Command::Diff(a) => registries_of([&a.a, &a.b]),
        Command::Assemble(a) => registries_of(std::iter::once(&a.from).chain(&a.outs)),
        Command::Index(a) => registries_of(a.images.iter().chain(&a.outs)),
        _ => Vec::new(),
    };
    let (json, quiet) = (cli.json, cli.quiet);
    match cli.command {
        Command::Init(a) => init::run(a, json, quiet),
        Command::Assemble(a) => assemble::run(&ctx, *a, json, quiet),
        Command::Index(a) => index::run(&ctx, a, json, quiet),
        Command::Build(a) => build::run(&ctx, *a, json, quiet),
        Command::Lock(a) => lock::run(&ctx, a, json),
        Command::Inspect(a) => inspect::run(&ctx, a, json),
        Command::Sbom(a) => sbom::run(&ctx, a, quiet),
        Command::Referrers(a) => referrers::run(&ctx, a, json),
        Command::Sign(a) => sign::run_sign(&ctx, a, json, quiet),
        Command::VerifySignature(a) => sign::run_verify(&ctx, a, json, quiet),
        Command::GenerateKeyPair(a) => sign::run_keygen(a, quiet),
        Command::History(a) => history::run_history(&ctx, a, json),
        Command::Rollback(a) => history::run_rollback(&ctx, a, json, quiet),
        Command::Cache(a) => cache::run(&ctx, a, json, quiet),
        Command::Scan(a) => scan::run(&ctx, a, json, quiet),
        Command::Check(a) => check::run(&ctx, a, json, quiet),
        Command::Verify(a) => verify::run(&ctx, a, json),
        Command::Diff(a) => diff::run(&ctx, a, json),
        Command::Push(a) => push::run(&ctx, a, json, quiet),
        Command::Pull(a) => pull::run(&ctx, a, json, quiet),
        Command::Completions(a) => completions::run(a),
        Command::Man(a) => man::run(a),
    }
}
