//! Project configuration: `kiln.toml` (what to build and how the image looks),
//! `kiln.lock` (every image input pinned by digest) and the built-in recipes.
//! Every error names the file, line and column, and what to write instead.

pub mod lock;
pub mod recipe;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// An error in a configuration file, with its position.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Line and column (1-based) of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, column)
}

/// Positions errors inside one file.
pub struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
}

impl Source<'_> {
    /// An error at a span.
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.text, span.start);
        ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    /// Parses TOML into `T`, turning toml's error into a positioned one.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let msg = e.message().trim().to_string();
            let hint = if msg.contains("unknown field") {
                " (see the README's kiln.toml reference for every field)"
            } else {
                ""
            };
            self.error(span, format!("{msg}{hint}"))
        })
    }
}

/// `kiln.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KilnToml {
    #[serde(default)]
    pub build: BuildSection,
    #[serde(default)]
    pub image: ImageSection,
    #[serde(default)]
    pub check: CheckSection,
}

/// `[check]`: how `kiln check` starts and probes the image.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSection {
    /// HTTP path answered 2xx when healthy, e.g. `/health`.
    pub health: Option<Spanned<String>>,
    /// Port for the health probe (default: the first exposed TCP port).
    pub port: Option<Spanned<i64>>,
    /// Variables the app must refuse to start without.
    #[serde(default)]
    pub required_env: Vec<Spanned<String>>,
    /// Dotenv file with the production-like environment (relative to the project).
    pub env_file: Option<Spanned<String>>,
    /// How long it must stay up (default 1s).
    pub settle: Option<Spanned<String>>,
    /// How long ports and health may take to answer (default 10s).
    pub ready_timeout: Option<Spanned<String>>,
    /// How long the stop signal may take to end it (default 10s).
    pub stop_timeout: Option<Spanned<String>>,
}

/// `[build]`: how the binary is built.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    /// Builder image reference (tag or digest); pinned in kiln.lock.
    pub builder: Option<Spanned<String>>,
    /// `docker` (default) or `host`.
    pub backend: Option<Spanned<String>>,
    /// Cargo package to build (for workspaces).
    pub package: Option<Spanned<String>>,
    /// Binary target to build and put in the image.
    pub bin: Option<Spanned<String>>,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub no_default_features: bool,
    /// Cargo profile (default `release`).
    pub profile: Option<Spanned<String>>,
    /// Rust target triple (default from the recipe and the platform).
    pub target: Option<Spanned<String>>,
    /// Platforms to build (`linux/amd64`, `linux/arm64`): one image each,
    /// under one index (default: the host's).
    #[serde(default)]
    pub platforms: Vec<Spanned<String>>,
    /// Extra RUSTFLAGS, appended to the recipe's and kiln's own.
    #[serde(default)]
    pub rustflags: Vec<String>,
    /// CA bundle for the fetch phase (default: the host's bundle when present).
    pub ca_bundle: Option<Spanned<String>>,
    /// Environment passed to both phases of the build.
    #[serde(default)]
    pub env: BTreeMap<String, Spanned<String>>,
    /// A build cache shared through a registry: `REGISTRY/REPO`. Read only,
    /// unless the command line says `--cache-mode readwrite`.
    pub cache: Option<Spanned<String>>,
}

/// `[image]`: how the image looks.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    /// Recipe name (default `scratch-static`).
    pub recipe: Option<Spanned<String>>,
    /// Base image override (`scratch`, `oci:DIR[:TAG]`, or a registry reference).
    pub base: Option<Spanned<String>>,
    /// Where the binary goes in the image (default `<recipe bin_dir>/<bin>`).
    pub binary: Option<Spanned<String>>,
    /// Default `[binary]`; `[]` for none (Docker's null: only `cmd` runs).
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `UID[:GID]` or `NAME[:GROUP]`; `""` keeps the base's user (root on scratch).
    pub user: Option<Spanned<String>>,
    pub workdir: Option<Spanned<String>>,
    #[serde(default)]
    pub ports: Vec<Spanned<PortValue>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub stop_signal: Option<Spanned<String>>,
    #[serde(default)]
    pub files: Vec<Spanned<ExtraFile>>,
    /// Docker's HEALTHCHECK: `{ cmd = [...], interval = "30s", timeout = "5s", start_period = "10s", retries = 3 }`.
    pub healthcheck: Option<Spanned<HealthcheckValue>>,
}

/// `[image] healthcheck`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthcheckValue {
    /// The command: a list is the exec form (`CMD`), a string the shell
    /// form (`CMD-SHELL`, needs /bin/sh in the image).
    pub cmd: HealthCmd,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub retries: Option<u32>,
}

/// A healthcheck command, as Docker's HEALTHCHECK takes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HealthCmd {
    Exec(Vec<String>),
    Shell(String),
}

/// A port as a number (`8080`) or a string (`"53/udp"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PortValue {
    Number(i64),
    Text(String),
}

/// An extra file or directory from the project put into the image.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraFile {
    /// Path relative to the project directory.
    pub src: String,
    /// Absolute path in the image.
    pub dest: String,
    /// Octal mode string, e.g. "0644".
    pub mode: Option<String>,
}

impl KilnToml {
    /// Reads and parses `path`; a missing file is the default configuration.
    pub fn load(path: &Path) -> crate::Result<(Self, String)> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((KilnToml::default(), String::new())),
            Err(e) => {
                return Err(crate::Error::Read {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        };
        let cfg: KilnToml = Source {
            file: path,
            text: &text,
        }
        .parse()
        .map_err(crate::Error::Config)?;
        Ok((cfg, text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<KilnToml, ConfigError> {
        Source {
            file: Path::new("kiln.toml"),
            text,
        }
        .parse()
    }

    #[test]
    fn positions_unknown_keys_and_bad_types() {
        let e = parse("[build]\nbuidler = \"x\"\n").unwrap_err();
        assert_eq!((e.line, e.column), (2, 1), "{e}");
        assert!(
            e.to_string().starts_with("kiln.toml:2:1: unknown field `buidler`"),
            "{e}"
        );
        let e = parse("[image]\nports = [8080, true]\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse("[image\n").unwrap_err();
        assert_eq!(e.line, 1, "{e}");
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            r#"
[build]
builder = "127.0.0.1:5000/kiln-test/rust-builder:latest"
bin = "app"
features = ["a"]
rustflags = ["-C", "debuginfo=0"]
env = { RUST_LOG = "info" }

[image]
recipe = "scratch-static"
entrypoint = ["/usr/local/bin/app"]
ports = [8080, "53/udp"]
labels = { "org.opencontainers.image.source" = "https://example.com" }
files = [{ src = "static", dest = "/srv/static", mode = "0644" }]

[check]
health = "/health"
port = 8080
required_env = ["DATABASE_URL"]
env_file = ".env.production"
settle = "2s"
ready_timeout = "10s"
stop_timeout = "5s"
"#,
        )
        .unwrap();
        assert_eq!(c.build.bin.unwrap().into_inner(), "app");
        assert_eq!(c.image.ports.len(), 2);
        assert_eq!(c.image.files[0].get_ref().dest, "/srv/static");
        assert_eq!(c.check.required_env[0].get_ref(), "DATABASE_URL");
        let e = parse("[check]\nhealth = \"/h\"\nsettle = 3\n").unwrap_err();
        assert_eq!((e.line, e.column), (3, 10), "{e}");
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("a\nbc\n", 0), (1, 1));
        assert_eq!(line_col("a\nbc\n", 3), (2, 2));
    }
}
