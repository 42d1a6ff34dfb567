//! Registry mirrors, read the ecosystem's way, so the same references work
//! air-gapped: containers-registries.conf(5) (`[[registry]]` with `prefix`,
//! `location`, `insecure`, `blocked`, `mirror-by-digest-only` and
//! `[[registry.mirror]]` entries) and Docker's daemon.json
//! `registry-mirrors` (docker.io only). Mirrors serve pulls only: a push
//! always goes to the name the user gave. Whatever a mirror answers is
//! checked against the digest asked for, and kiln.lock keeps the canonical
//! name, so a mirror changes where bytes come from, never which bytes.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::RegistryRef;
use crate::config::Source;
use crate::{Error, Result};

/// Largest configuration file read (registries.conf, daemon.json).
const MAX_FILE: u64 = 1 << 20;

/// Where a pull of one reference may go, in the order to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The reference rewritten for this endpoint (tag and digest kept).
    pub reference: RegistryRef,
    /// Plain HTTP allowed (`insecure = true`, or an `http://` mirror).
    pub insecure: bool,
    /// A mirror, not the registry itself; with the file that named it.
    pub mirror_from: Option<PathBuf>,
}

#[derive(Debug, Clone)]
struct Mirror {
    location: String,
    insecure: bool,
    digest_only: bool,
    tag_only: bool,
}

#[derive(Debug, Clone)]
struct Rule {
    prefix: String,
    /// Empty: the prefix itself (the only choice for wildcard prefixes).
    location: String,
    insecure: bool,
    blocked: bool,
    mirrors: Vec<Mirror>,
    file: PathBuf,
}

/// The mirror and location rules in effect.
#[derive(Debug, Clone, Default)]
pub struct Mirrors {
    rules: Vec<Rule>,
    /// A file that could not be read or parsed: reported at the first pull
    /// (not at start-up, so commands that pull nothing still run).
    problem: Option<String>,
    /// The files read, in order (for messages).
    files: Vec<PathBuf>,
}

#[derive(Deserialize)]
struct ConfFile {
    #[serde(default)]
    registry: Vec<Spanned<RegistryEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RegistryEntry {
    prefix: Option<String>,
    location: Option<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<MirrorEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct MirrorEntry {
    location: String,
    #[serde(default)]
    insecure: bool,
    /// `all` (default), `digest-only` or `tag-only`.
    pull_from_mirror: Option<String>,
}

/// The files containers-registries.conf(5) names, in the order read:
/// `$CONTAINERS_REGISTRIES_CONF` alone when set; else the user's file
/// (`$HOME/.config/containers/registries.conf`) or, without one, the
/// system's, then the drop-in directories (`registries.conf.d/*.conf`,
/// sorted), each overriding earlier entries with the same prefix.
pub fn conf_files(override_file: Option<&Path>, home: Option<&Path>) -> Vec<PathBuf> {
    if let Some(f) = override_file {
        return vec![f.to_path_buf()];
    }
    let user = home.map(|h| h.join(".config/containers/registries.conf"));
    let mut files = match user {
        Some(u) if u.is_file() => vec![u],
        _ => vec![PathBuf::from("/etc/containers/registries.conf")],
    };
    let mut dirs = vec![PathBuf::from("/etc/containers/registries.conf.d")];
    if let Some(h) = home {
        dirs.push(h.join(".config/containers/registries.conf.d"));
    }
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        let mut found: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf"))
            .collect();
        found.sort();
        files.extend(found);
    }
    files
}

impl Mirrors {
    /// Reads registries.conf files (missing ones are skipped) and Docker's
    /// daemon.json. A bad file is remembered and reported by
    /// [`Mirrors::endpoints`].
    pub fn load(conf_files: &[PathBuf], daemon_json: Option<&Path>) -> Mirrors {
        let mut m = Mirrors::default();
        for f in conf_files {
            match read_small(f) {
                Ok(None) => {}
                Ok(Some(text)) => match parse_conf(f, &text) {
                    Ok(rules) => {
                        m.files.push(f.clone());
                        for r in rules {
                            m.rules.retain(|old| old.prefix != r.prefix);
                            m.rules.push(r);
                        }
                    }
                    Err(e) => m.problem = Some(e.to_string()),
                },
                Err(e) => m.problem = Some(e.to_string()),
            }
        }
        if let Some(f) = daemon_json {
            match read_small(f).and_then(|t| t.map(|t| parse_daemon_json(f, &t)).transpose()) {
                Ok(None) => {}
                Ok(Some(None)) => {}
                Ok(Some(Some(rule))) => {
                    m.files.push(f.to_path_buf());
                    // registries.conf speaks for docker.io when it names it.
                    if !m.rules.iter().any(|r| r.prefix == "docker.io") {
                        m.rules.push(rule);
                    }
                }
                Err(e) => m.problem = Some(e.to_string()),
            }
        }
        m
    }

    /// The files that set the rules in effect.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Where to pull `r` from, in order: its mirrors, then its location
    /// (unless blocked). Errors when a configuration file is bad or every
    /// way is blocked.
    pub fn endpoints(&self, r: &RegistryRef) -> Result<Vec<Endpoint>> {
        if let Some(p) = &self.problem {
            return Err(Error::invalid(
                "registries configuration",
                p.as_str(),
                "fix the file (containers-registries.conf(5), or daemon.json's registry-mirrors) or point \
                 CONTAINERS_REGISTRIES_CONF at another",
            ));
        }
        let name = format!("{}/{}", r.registry, r.repository);
        let Some(rule) = self.matching(&name) else {
            return Ok(vec![Endpoint {
                reference: r.clone(),
                insecure: false,
                mirror_from: None,
            }]);
        };
        // What follows the matched prefix (for a wildcard, the host).
        let matched = if rule.prefix.starts_with("*.") {
            r.registry.len()
        } else {
            rule.prefix.len()
        };
        let rest = &name[matched.min(name.len())..];
        let rewrite = |location: &str| -> Result<RegistryRef> {
            let mut out = if location.is_empty() {
                r.clone()
            } else {
                RegistryRef::parse(&format!("{location}{rest}")).map_err(|e| {
                    Error::invalid(
                        "registry location",
                        format!("{location}{rest}"),
                        format!("from {}: {e}", rule.file.display()),
                    )
                })?
            };
            out.tag = r.tag.clone();
            out.digest = r.digest.clone();
            Ok(out)
        };
        let by_digest = r.digest.is_some();
        let mut out = Vec::new();
        for m in &rule.mirrors {
            if (m.digest_only && !by_digest) || (m.tag_only && by_digest) {
                continue;
            }
            out.push(Endpoint {
                reference: rewrite(&m.location)?,
                insecure: m.insecure,
                mirror_from: Some(rule.file.clone()),
            });
        }
        if !rule.blocked {
            out.push(Endpoint {
                reference: rewrite(&rule.location)?,
                insecure: rule.insecure,
                mirror_from: None,
            });
        }
        if out.is_empty() {
            return Err(Error::invalid(
                "image reference",
                r.to_string(),
                format!(
                    "{} blocks `{}` and names no mirror for this pull{}; add a [[registry.mirror]] or pull by digest",
                    rule.file.display(),
                    rule.prefix,
                    if rule.mirrors.is_empty() {
                        ""
                    } else {
                        " (its mirrors serve digests only)"
                    }
                ),
            ));
        }
        Ok(out)
    }

    /// The rule with the longest prefix matching `name` on a path boundary;
    /// wildcard host prefixes (`*.example.com`) only when no other matches.
    fn matching(&self, name: &str) -> Option<&Rule> {
        let exact = self
            .rules
            .iter()
            .filter(|r| !r.prefix.starts_with("*.") && prefix_matches(&r.prefix, name))
            .max_by_key(|r| r.prefix.len());
        exact.or_else(|| {
            let host = name.split('/').next().unwrap_or("");
            let host = host.split(':').next().unwrap_or(host);
            self.rules
                .iter()
                .filter(|r| r.prefix.strip_prefix('*').is_some_and(|suffix| host.ends_with(suffix)))
                .max_by_key(|r| r.prefix.len())
        })
    }
}

fn prefix_matches(prefix: &str, name: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A file's text, or None when it does not exist; bounded.
fn read_small(path: &Path) -> Result<Option<String>> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Read {
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    let mut text = String::new();
    f.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::Read {
            path: path.to_path_buf(),
            source: e,
        })?;
    if text.len() as u64 > MAX_FILE {
        return Err(Error::invalid(
            "registries configuration",
            path.display().to_string(),
            "larger than 1 MiB; this is not a registries.conf or daemon.json",
        ));
    }
    Ok(Some(text))
}

/// Strips a scheme and trailing slashes from a location.
fn bare(location: &str) -> &str {
    location
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
}

/// A location must start with a registry host (`host.domain`, `host:port`
/// or `localhost`): without one, Docker's naming would read it as a Docker
/// Hub repository and the pull would go to Docker Hub.
fn check_location(location: &str) -> std::result::Result<(), &'static str> {
    if location.is_empty() {
        return Ok(());
    }
    if location.contains('@') {
        return Err("must not hold credentials or a digest");
    }
    let host = location.split('/').next().unwrap_or("");
    if host.contains('.') || host.contains(':') || host == "localhost" {
        Ok(())
    } else {
        Err("must begin with a registry host (HOST.DOMAIN, HOST:PORT or localhost)")
    }
}

fn parse_conf(file: &Path, text: &str) -> Result<Vec<Rule>> {
    let src = Source { file, text };
    let conf: ConfFile = src.parse().map_err(Error::Config)?;
    let mut rules = Vec::new();
    for entry in conf.registry {
        let span = entry.span();
        let e = entry.into_inner();
        let at = |msg: String| Error::Config(src.error(span.clone(), msg));
        let prefix = match (&e.prefix, &e.location) {
            (Some(p), _) => bare(p).to_string(),
            (None, Some(l)) => bare(l).to_string(),
            (None, None) => return Err(at("a [[registry]] needs a prefix or a location".into())),
        };
        if prefix.is_empty() || prefix.contains(['@', ' ']) {
            return Err(at(format!(
                "prefix `{prefix}`: write HOST[:PORT][/NAMESPACE…] or *.DOMAIN (tag and digest prefixes are not supported)"
            )));
        }
        if prefix.contains('*') && (!prefix.starts_with("*.") || prefix[1..].contains(['*', '/'])) {
            return Err(at(format!(
                "prefix `{prefix}`: a wildcard is only `*.DOMAIN`, a host name with no path"
            )));
        }
        let location = e.location.as_deref().map(bare).unwrap_or("").to_string();
        check_location(&location).map_err(|m| at(format!("location `{location}`: {m}")))?;
        if prefix.starts_with("*.") && !location.is_empty() {
            return Err(at(format!(
                "prefix `{prefix}` is a wildcard: it cannot have a location (containers-registries.conf(5))"
            )));
        }
        let mut mirrors = Vec::new();
        for m in e.mirror {
            if m.pull_from_mirror.is_some() && e.mirror_by_digest_only {
                return Err(at(
                    "pull-from-mirror and mirror-by-digest-only cannot be combined (containers-registries.conf(5))"
                        .into(),
                ));
            }
            let (digest_only, tag_only) = match m.pull_from_mirror.as_deref() {
                None | Some("all") => (e.mirror_by_digest_only, false),
                Some("digest-only") => (true, false),
                Some("tag-only") => (false, true),
                Some(other) => {
                    return Err(at(format!(
                        "pull-from-mirror = \"{other}\": write \"all\", \"digest-only\" or \"tag-only\""
                    )));
                }
            };
            let location = bare(&m.location).to_string();
            check_location(&location).map_err(|msg| at(format!("mirror location `{location}`: {msg}")))?;
            if location.is_empty() {
                return Err(at("a [[registry.mirror]] needs a location".into()));
            }
            mirrors.push(Mirror {
                insecure: m.insecure || m.location.starts_with("http://"),
                location,
                digest_only,
                tag_only,
            });
        }
        rules.push(Rule {
            prefix,
            location,
            insecure: e.insecure,
            blocked: e.blocked,
            mirrors,
            file: file.to_path_buf(),
        });
    }
    Ok(rules)
}

/// Docker's daemon.json: `registry-mirrors` apply to docker.io only.
fn parse_daemon_json(file: &Path, text: &str) -> Result<Option<Rule>> {
    #[derive(Deserialize)]
    struct Daemon {
        #[serde(default, rename = "registry-mirrors")]
        registry_mirrors: Vec<String>,
    }
    let d: Daemon = serde_json::from_str(text).map_err(|e| {
        Error::invalid(
            "daemon.json",
            format!("{}:{}:{}", file.display(), e.line(), e.column()),
            format!("{e}; registry-mirrors must be a list of URLs"),
        )
    })?;
    if d.registry_mirrors.is_empty() {
        return Ok(None);
    }
    let mut mirrors = Vec::new();
    for u in &d.registry_mirrors {
        let location = bare(u).to_string();
        check_location(&location).map_err(|m| {
            Error::invalid(
                "daemon.json registry-mirrors",
                file.display().to_string(),
                format!("a mirror URL {m}; write e.g. https://mirror.example.com"),
            )
        })?;
        mirrors.push(Mirror {
            insecure: u.starts_with("http://"),
            location,
            digest_only: false,
            tag_only: false,
        });
    }
    Ok(Some(Rule {
        prefix: "docker.io".into(),
        location: String::new(),
        insecure: false,
        blocked: false,
        mirrors,
        file: file.to_path_buf(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(conf: &str, daemon: Option<&str>) -> (tempfile::TempDir, Mirrors) {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("registries.conf");
        std::fs::write(&c, conf).unwrap();
        let d = dir.path().join("daemon.json");
        if let Some(t) = daemon {
            std::fs::write(&d, t).unwrap();
        }
        let m = Mirrors::load(&[c, dir.path().join("missing.conf")], daemon.map(|_| d.as_path()));
        (dir, m)
    }

    fn ways(m: &Mirrors, r: &str) -> Vec<String> {
        m.endpoints(&RegistryRef::parse(r).unwrap())
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}{}{}",
                    e.reference,
                    if e.insecure { " insecure" } else { "" },
                    if e.mirror_from.is_some() { " mirror" } else { "" }
                )
            })
            .collect()
    }

    const CONF: &str = r#"
unqualified-search-registries = ["docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "127.0.0.1:5000/mirror/docker.io"
insecure = true
[[registry.mirror]]
location = "mirror.example.com/hub"
pull-from-mirror = "digest-only"

[[registry]]
prefix = "gcr.io/distroless"
location = "127.0.0.1:5000/mirror/gcr.io/distroless"
blocked = false

[[registry]]
prefix = "quay.io"
blocked = true

[[registry]]
prefix = "*.corp.example"
insecure = true

[aliases]
"rust" = "docker.io/library/rust"
"#;

    #[test]
    fn mirrors_come_first_and_keep_tag_and_digest() {
        let (_d, m) = load(CONF, None);
        assert_eq!(
            ways(&m, "rust:1.96-slim-bookworm"),
            [
                "127.0.0.1:5000/mirror/docker.io/library/rust:1.96-slim-bookworm insecure mirror",
                "docker.io/library/rust:1.96-slim-bookworm",
            ]
        );
        let digest = "sha256:".to_string() + &"a".repeat(64);
        let w = ways(&m, &format!("docker.io/library/rust@{digest}"));
        assert_eq!(w.len(), 3, "{w:?}");
        assert_eq!(w[1], format!("mirror.example.com/hub/library/rust@{digest} mirror"));
    }

    #[test]
    fn location_rewrites_on_path_boundaries_only() {
        let (_d, m) = load(CONF, None);
        assert_eq!(
            ways(&m, "gcr.io/distroless/cc-debian12:nonroot"),
            ["127.0.0.1:5000/mirror/gcr.io/distroless/cc-debian12:nonroot"]
        );
        // gcr.io/distroless-other is not under gcr.io/distroless.
        assert_eq!(ways(&m, "gcr.io/distroless-other/x:1"), ["gcr.io/distroless-other/x:1"]);
        assert_eq!(ways(&m, "a.corp.example/app:1"), ["a.corp.example/app:1 insecure"]);
    }

    #[test]
    fn blocked_without_mirror_is_an_error_naming_the_file() {
        let (_d, m) = load(CONF, None);
        let e = m
            .endpoints(&RegistryRef::parse("quay.io/x/y:1").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("registries.conf blocks `quay.io`"), "{e}");
    }

    #[test]
    fn daemon_json_mirrors_docker_hub_unless_registries_conf_does() {
        let (_d, m) = load(
            "",
            Some(r#"{"registry-mirrors": ["http://127.0.0.1:5001/"], "debug": true}"#),
        );
        assert_eq!(
            ways(&m, "debian:12"),
            [
                "127.0.0.1:5001/library/debian:12 insecure mirror",
                "docker.io/library/debian:12"
            ]
        );
        assert_eq!(ways(&m, "gcr.io/x/y:1"), ["gcr.io/x/y:1"]);
        let (_d, m) = load(CONF, Some(r#"{"registry-mirrors": ["https://other.example"]}"#));
        assert!(ways(&m, "debian:12")[0].starts_with("127.0.0.1:5000/mirror/docker.io/"));
    }

    #[test]
    fn bad_files_are_reported_with_position_when_used() {
        let (_d, m) = load("[[registry]]\nprefix = \"docker.io\"\nblocked = \"yes\"\n", None);
        let e = m
            .endpoints(&RegistryRef::parse("debian:12").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("registries.conf:3:"), "{e}");
        let (_d, m) = load("[[registry]]\nprefix = \"*.x.org\"\nlocation = \"y\"\n", None);
        assert!(m.endpoints(&RegistryRef::parse("a.x.org/b:1").unwrap()).is_err());
        let (_d, m) = load("", Some("{not json"));
        let e = m
            .endpoints(&RegistryRef::parse("debian:12").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("daemon.json:1:"), "{e}");
    }

    #[test]
    fn a_location_without_a_host_is_refused_not_sent_to_docker_hub() {
        for conf in [
            "[[registry]]\nprefix = \"docker.io\"\n[[registry.mirror]]\nlocation = \"regmirror/docker.io\"\n",
            "[[registry]]\nprefix = \"quay.io\"\nlocation = \"internal/quay\"\n",
            "[[registry]]\nprefix = \"docker.io\"\n[[registry.mirror]]\nlocation = \"u:p@m.example\"\n",
            "[[registry]]\nprefix = \"a*.example.com\"\n",
            "[[registry]]\nprefix = \"*.example.com/ns\"\n",
        ] {
            let (_d, m) = load(conf, None);
            let e = m.endpoints(&RegistryRef::parse("docker.io/library/debian:12").unwrap());
            assert!(e.is_err(), "{conf}");
        }
        let (_d, m) = load("", Some(r#"{"registry-mirrors": ["https://mirror"]}"#));
        assert!(m.endpoints(&RegistryRef::parse("debian:12").unwrap()).is_err());
    }

    #[test]
    fn wildcard_rules_use_their_mirrors_and_tag_only_mirrors_skip_digests() {
        let conf = "[[registry]]\nprefix = \"*.corp.example\"\n[[registry.mirror]]\nlocation = \"m.example/corp\"\n\n\
                    [[registry]]\nprefix = \"docker.io\"\n[[registry.mirror]]\nlocation = \"t.example\"\npull-from-mirror = \"tag-only\"\n";
        let (_d, m) = load(conf, None);
        assert_eq!(
            ways(&m, "a.corp.example/team/app:1"),
            ["m.example/corp/team/app:1 mirror", "a.corp.example/team/app:1"]
        );
        assert_eq!(ways(&m, "debian:12")[0], "t.example/library/debian:12 mirror");
        let digest = "sha256:".to_string() + &"b".repeat(64);
        assert_eq!(
            ways(&m, &format!("debian@{digest}")),
            [format!("docker.io/library/debian@{digest}")]
        );
        let (_d, m) = load(
            "[[registry]]\nprefix = \"docker.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"t.example\"\npull-from-mirror = \"all\"\n",
            None,
        );
        assert!(m.endpoints(&RegistryRef::parse("debian:12").unwrap()).is_err());
    }

    #[test]
    fn later_files_override_the_same_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.conf");
        let b = dir.path().join("b.conf");
        std::fs::write(&a, "[[registry]]\nprefix = \"docker.io\"\nblocked = true\n").unwrap();
        std::fs::write(&b, "[[registry]]\nprefix = \"docker.io\"\nlocation = \"hub.local\"\n").unwrap();
        let m = Mirrors::load(&[a, b], None);
        assert_eq!(ways(&m, "debian:12"), ["hub.local/library/debian:12"]);
    }

    #[test]
    fn conf_files_follow_the_override() {
        let f = PathBuf::from("/x/registries.conf");
        assert_eq!(conf_files(Some(&f), Some(Path::new("/root"))), [f]);
    }
}
