//! Image references: the one name grammar (Docker's: `[HOST[:PORT]/]PATH
//! [:TAG][@DIGEST]`, Docker Hub normalization) and the skopeo-style
//! transports that say where an image is read from or written to.
//!
//! One file on purpose (~410 lines of code, the rest tests): the grammar and
//! the three name types built on it belong together, so no second grammar grows.

use std::fmt;
use std::path::PathBuf;

use crate::digest::Digest;
use crate::{Error, Result};

/// The parts of `[DOMAIN/]PATH[:TAG][@DIGEST]`, checked against Docker's
/// reference grammar (distribution/reference): the one grammar every
/// transport, the builder code and kiln.lock use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts {
    domain: Option<String>,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            x if x.is_ascii_lowercase() || x.is_ascii_digit() => i += 1,
            b'.' => {
                if !b[i + 1].is_ascii_alphanumeric() {
                    return false;
                }
                i += 1;
            }
            b'_' => {
                let n = if b.get(i + 1) == Some(&b'_') { 2 } else { 1 };
                if !b[i + n].is_ascii_alphanumeric() {
                    return false;
                }
                i += n;
            }
            b'-' => {
                while b[i] == b'-' {
                    i += 1;
                }
                if !b[i].is_ascii_alphanumeric() {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

/// `host[:port]`: DNS labels or an IPv4 address, or `[IPv6]`, optional port.
fn domain_ok(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => {
                if h.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (
                    None,
                    p.strip_prefix(':')
                        .map(Some)
                        .unwrap_or(if p.is_empty() { None } else { Some("x") }),
                )
            }
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    port_ok && host_ok
}

fn parse_parts(s: &str, what: &'static str) -> Result<Parts> {
    let bad = |r: &str| Error::invalid(what, s, r.to_string());
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?)),
        None => (s, None),
    };
    let (name, tag) = match rest.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
        _ => (rest, None),
    };
    if let Some(t) = &tag
        && !valid_tag(t)
    {
        return Err(bad(
            "the tag is not valid: 1-128 of [A-Za-z0-9_.-], not starting with . or -",
        ));
    }
    if name.is_empty() {
        return Err(bad(
            "the name is empty; use [HOST[:PORT]/]NAME[:TAG], e.g. kiln/hello:1.0",
        ));
    }
    let (domain, path) = match name.split_once('/') {
        Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" || h.starts_with('[') => {
            if !domain_ok(h) {
                return Err(bad("the registry host is not a valid HOST[:PORT]"));
            }
            (Some(h.to_string()), p)
        }
        _ => (None, name),
    };
    if name.len() > 255 {
        return Err(bad("the name is longer than 255 characters"));
    }
    if !path.split('/').all(path_component_ok) {
        return Err(bad(
            "repository components are lowercase letters and digits, separated by . _ __ or -, joined by /; e.g. kiln/hello",
        ));
    }
    Ok(Parts {
        domain,
        path: path.to_string(),
        tag,
        digest,
    })
}

/// A Docker-style `NAME:TAG` for the engine and archives, as written
/// (tag defaults to `latest`; no digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerName {
    pub repository: String,
    pub tag: String,
}

impl DockerName {
    /// Parses `NAME[:TAG]` (e.g. `kiln/hello:1.0`, `localhost:5000/app`).
    pub fn parse(s: &str) -> Result<Self> {
        let p = parse_parts(s, "image name")?;
        if p.digest.is_some() {
            return Err(Error::invalid(
                "image name",
                s,
                "digests are not accepted here; give NAME:TAG",
            ));
        }
        Ok(DockerName {
            repository: match &p.domain {
                Some(d) => format!("{d}/{}", p.path),
                None => p.path,
            },
            tag: p.tag.unwrap_or_else(|| "latest".into()),
        })
    }

    /// The fully qualified name containerd uses (`docker.io/library/x:tag`).
    pub fn qualified(&self) -> String {
        let r = RegistryRef::parse(&self.to_string()).expect("a DockerName is a valid reference");
        format!("{}/{}:{}", r.registry, r.repository, self.tag)
    }
}

impl fmt::Display for DockerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

/// Whether `t` is a valid tag.
pub fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && t.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !t.starts_with('.')
        && !t.starts_with('-')
}

/// Where an image lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    /// The empty image.
    Scratch,
    /// An OCI image layout directory, optionally a tag in it.
    Oci { dir: PathBuf, tag: Option<String> },
    /// A `docker load`-able tar file.
    DockerArchive { file: PathBuf, name: Option<DockerName> },
    /// The Docker engine's image store.
    DockerDaemon { name: DockerName },
    /// An image in an OCI registry.
    Registry(RegistryRef),
}

const TRANSPORTS: &str = "oci:DIR[:TAG], docker-archive:FILE[:NAME[:TAG]], docker-daemon:NAME[:TAG], or a registry reference HOST/REPO[:TAG][@DIGEST]";

impl ImageRef {
    /// Parses a reference such as `oci:out:1.0` or `docker-daemon:app:1.0`.
    pub fn parse(s: &str) -> Result<Self> {
        if s == "scratch" {
            return Ok(ImageRef::Scratch);
        }
        if let Some(r) = s.strip_prefix("docker://") {
            return Ok(ImageRef::Registry(RegistryRef::parse(r)?));
        }
        let Some((transport, rest)) = s.split_once(':') else {
            if s.contains('/') {
                return Ok(ImageRef::Registry(RegistryRef::parse(s)?));
            }
            return Err(Error::invalid(
                "image reference",
                s,
                format!("no transport; use one of {TRANSPORTS}"),
            ));
        };
        match transport {
            "oci" => {
                let (dir, tag) = match rest.rsplit_once(':') {
                    Some((d, t)) if !d.is_empty() && !t.contains('/') => {
                        if !valid_tag(t) {
                            return Err(Error::invalid(
                                "image reference",
                                s,
                                "the tag after the last `:` is not valid: 1-128 of [A-Za-z0-9_.-]",
                            ));
                        }
                        (d, Some(t.to_string()))
                    }
                    _ => (rest, None),
                };
                if dir.is_empty() {
                    return Err(Error::invalid(
                        "image reference",
                        s,
                        "oci: needs a directory, e.g. oci:out/image",
                    ));
                }
                Ok(ImageRef::Oci {
                    dir: PathBuf::from(dir),
                    tag,
                })
            }
            "docker-archive" => {
                let (file, name) = match rest.split_once(':') {
                    Some((f, n)) => (f, Some(DockerName::parse(n)?)),
                    None => (rest, None),
                };
                if file.is_empty() {
                    return Err(Error::invalid(
                        "image reference",
                        s,
                        "docker-archive: needs a file, e.g. docker-archive:app.tar",
                    ));
                }
                Ok(ImageRef::DockerArchive {
                    file: PathBuf::from(file),
                    name,
                })
            }
            "docker-daemon" => Ok(ImageRef::DockerDaemon {
                name: DockerName::parse(rest)?,
            }),
            t if t.contains('.') || t.contains('/') || t == "localhost" => {
                Ok(ImageRef::Registry(RegistryRef::parse(s)?))
            }
            t => Err(Error::invalid(
                "image reference",
                s,
                format!("unknown transport `{t}`; use one of {TRANSPORTS}"),
            )),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Scratch => write!(f, "scratch"),
            ImageRef::Oci { dir, tag: Some(t) } => write!(f, "oci:{}:{t}", dir.display()),
            ImageRef::Oci { dir, tag: None } => write!(f, "oci:{}", dir.display()),
            ImageRef::DockerArchive { file, name: Some(n) } => write!(f, "docker-archive:{}:{n}", file.display()),
            ImageRef::DockerArchive { file, name: None } => write!(f, "docker-archive:{}", file.display()),
            ImageRef::DockerDaemon { name } => write!(f, "docker-daemon:{name}"),
            ImageRef::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// An image in a registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryRef {
    /// The registry as the user names it (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// The repository path (`library/debian`, `kiln/hello`).
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

impl RegistryRef {
    /// Parses `[HOST[:PORT]/]PATH[:TAG][@sha256:HEX]` with Docker's
    /// normalization: `docker.io` for no host (`index.docker.io` too),
    /// `library/` for single-name Hub repositories, tag `latest` when
    /// neither tag nor digest is given.
    pub fn parse(s: &str) -> Result<Self> {
        let p = parse_parts(s, "registry reference")?;
        let registry = match p.domain.as_deref() {
            None | Some("index.docker.io") => "docker.io".to_string(),
            Some(d) => d.to_string(),
        };
        let repository = if registry == "docker.io" && !p.path.contains('/') {
            format!("library/{}", p.path)
        } else {
            p.path
        };
        Ok(RegistryRef {
            registry,
            repository,
            tag: if p.tag.is_none() && p.digest.is_none() {
                Some("latest".into())
            } else {
                p.tag
            },
            digest: p.digest,
        })
    }

    /// The same repository pinned to `digest` (no tag): what runs.
    pub fn by_digest(&self, digest: &Digest) -> Self {
        RegistryRef {
            tag: None,
            digest: Some(digest.clone()),
            ..self.clone()
        }
    }

    /// The host that serves the API (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on this machine (plain HTTP is allowed there):
    /// `localhost` or a loopback IP address, parsed as an address (a name
    /// like `127.evil.example` is not loopback).
    pub fn is_loopback(&self) -> bool {
        let host = host_only(&self.registry);
        let ip = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost" || ip.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
    }

    /// The tag or digest to ask the registry for.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".into(),
        }
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Self {
        RegistryRef {
            tag: Some(tag.into()),
            digest: None,
            ..self.clone()
        }
    }
}

/// `host:port` → `host` (IPv6 brackets kept).
pub fn host_only(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry
            .split(']')
            .next()
            .map(|h| &registry[..h.len() + 1])
            .unwrap_or(registry);
    }
    registry.split(':').next().unwrap_or(registry)
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transports() {
        assert_eq!(
            ImageRef::parse("oci:out/img:1.0").unwrap(),
            ImageRef::Oci {
                dir: "out/img".into(),
                tag: Some("1.0".into())
            }
        );
        assert_eq!(
            ImageRef::parse("oci:out").unwrap(),
            ImageRef::Oci {
                dir: "out".into(),
                tag: None
            }
        );
        let a = ImageRef::parse("docker-archive:a.tar:kiln/hello:2").unwrap();
        assert_eq!(a.to_string(), "docker-archive:a.tar:kiln/hello:2");
        let d = ImageRef::parse("docker-daemon:localhost:5000/app").unwrap();
        assert_eq!(d.to_string(), "docker-daemon:localhost:5000/app:latest");
        assert!(matches!(ImageRef::parse("docker://x").unwrap(), ImageRef::Registry(_)));
        assert!(matches!(
            ImageRef::parse("127.0.0.1:5000/a/b:c").unwrap(),
            ImageRef::Registry(_)
        ));
        assert!(
            ImageRef::parse("http://x")
                .unwrap_err()
                .to_string()
                .contains("unknown transport `http`")
        );
        assert!(ImageRef::parse("ftp:x").is_err());
        assert!(ImageRef::parse("plain").is_err());
        assert!(ImageRef::parse("oci:").is_err());
        assert!(ImageRef::parse("oci:dir:bad tag").is_err());
        assert!(ImageRef::parse("docker-daemon:UPPER").is_err());
    }

    #[test]
    fn qualified_names() {
        assert_eq!(
            DockerName::parse("hello").unwrap().qualified(),
            "docker.io/library/hello:latest"
        );
        assert_eq!(
            DockerName::parse("kiln/hello:1").unwrap().qualified(),
            "docker.io/kiln/hello:1"
        );
        assert_eq!(
            DockerName::parse("127.0.0.1:5000/a:b").unwrap().qualified(),
            "127.0.0.1:5000/a:b"
        );
    }

    #[test]
    fn docker_normalization() {
        let r = RegistryRef::parse("debian").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("docker.io", "library/debian", Some("latest"))
        );
        assert_eq!(r.api_host(), "registry-1.docker.io");
        let r = RegistryRef::parse("docker.io/kiln/app:1").unwrap();
        assert_eq!(r.repository, "kiln/app");
        let r = RegistryRef::parse("index.docker.io/debian:12").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("docker.io", "library/debian")
        );
        let r = RegistryRef::parse("127.0.0.1:5000/a/b:c").unwrap();
        assert!(r.is_loopback());
        assert_eq!(r.to_string(), "127.0.0.1:5000/a/b:c");
        let r = RegistryRef::parse("localhost/x").unwrap();
        assert_eq!((r.registry.as_str(), r.repository.as_str()), ("localhost", "x"));
        assert!(!RegistryRef::parse("ghcr.io/o/r").unwrap().is_loopback());
    }

    #[test]
    fn digests_and_tags() {
        let d = Digest::of(b"x");
        let r = RegistryRef::parse(&format!("reg.example:443/app@{d}")).unwrap();
        assert_eq!((r.tag.as_deref(), r.digest.as_ref()), (None, Some(&d)));
        assert_eq!(r.reference(), d.to_string());
        let r = RegistryRef::parse(&format!("reg.example/app:1.0@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.0"));
        assert_eq!(r.reference(), d.to_string(), "the digest wins");
        assert!(RegistryRef::parse("reg.example/App").is_err());
        assert!(RegistryRef::parse("reg.example/app@sha256:zz").is_err());
        assert!(RegistryRef::parse("reg.example/app:-bad").is_err());
    }

    #[test]
    fn one_grammar_for_every_name() {
        assert!(RegistryRef::parse("127.evil.example/x").is_ok_and(|r| !r.is_loopback()));
        assert!(RegistryRef::parse("[::1]:5000/x").unwrap().is_loopback());
        for bad in ["a/B", "a//b", "a/b-", "a/.b", "-a", "a/b__", "host:99999x/a"] {
            assert!(RegistryRef::parse(bad).is_err(), "{bad}");
            assert!(DockerName::parse(bad).is_err(), "{bad}");
        }
        for good in [
            "a/b-c",
            "a/b__c",
            "a/b.c",
            "a--b",
            "localhost/a",
            "reg.example:5000/a/b",
        ] {
            assert!(RegistryRef::parse(good).is_ok(), "{good}");
            assert!(DockerName::parse(good).is_ok(), "{good}");
        }
    }
}
