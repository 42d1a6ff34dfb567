//! Registry references with Docker's normalization: `docker.io` is served by
//! `registry-1.docker.io`, single-name repositories get `library/`, the tag
//! defaults to `latest`; `name@sha256:…` and `name:tag@sha256:…` pin a digest.

use std::fmt;

use crate::digest::Digest;
use crate::reference::valid_tag;
use crate::{Error, Result};

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
    /// Parses `[HOST[:PORT]/]PATH[:TAG][@sha256:HEX]`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |r: &str| Error::invalid("registry reference", s, r.to_string());
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
        let (registry, path) = match name.split_once('/') {
            Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => (h.to_string(), p.to_string()),
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" {
            "docker.io".to_string()
        } else {
            registry
        };
        let path = if registry == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
        };
        if path.is_empty() || !path.split('/').all(component_ok) {
            return Err(bad(
                "repository components are lowercase letters, digits and . _ - separated by /",
            ));
        }
        Ok(RegistryRef {
            registry,
            repository: path,
            tag: if tag.is_none() && digest.is_none() {
                Some("latest".into())
            } else {
                tag
            },
            digest,
        })
    }

    /// The host that serves the API (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }

    /// Whether the registry is on this machine (plain HTTP is allowed there).
    pub fn is_loopback(&self) -> bool {
        let host = host_only(&self.registry);
        host == "localhost" || host == "::1" || host == "[::1]" || host.starts_with("127.")
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
}
