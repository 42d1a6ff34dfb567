//! Image references in the style of skopeo transports: where an image is
//! read from or written to.

use std::fmt;
use std::path::PathBuf;

use crate::{Error, Result};

/// A Docker-style `NAME:TAG`, normalized (tag defaults to `latest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerName {
    pub repository: String,
    pub tag: String,
}

impl DockerName {
    /// Parses `NAME[:TAG]` (e.g. `kiln/hello:1.0`, `localhost:5000/app`).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |r: &str| Error::invalid("image name", s, r.to_string());
        let (repo, tag) = match s.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (s, "latest"),
        };
        if repo.is_empty() {
            return Err(bad("the name is empty; use NAME[:TAG], e.g. kiln/hello:1.0"));
        }
        if repo.contains('@') {
            return Err(bad("digests are not accepted here; give NAME:TAG"));
        }
        let path = match repo.split_once('/') {
            Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => rest,
            _ => repo,
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                && c.as_bytes()[0].is_ascii_alphanumeric()
                && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
        };
        if !path.split('/').all(component_ok) {
            return Err(bad(
                "repository components are lowercase letters, digits and . _ - separated by /, e.g. kiln/hello",
            ));
        }
        if !valid_tag(tag) {
            return Err(bad("a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -"));
        }
        Ok(DockerName {
            repository: repo.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The fully qualified name containerd uses (`docker.io/library/x:tag`).
    pub fn qualified(&self) -> String {
        let first = self.repository.split('/').next().unwrap_or_default();
        let repo = if !self.repository.contains('/') {
            format!("docker.io/library/{}", self.repository)
        } else if first.contains('.') || first.contains(':') || first == "localhost" {
            self.repository.clone()
        } else {
            format!("docker.io/{}", self.repository)
        };
        format!("{repo}:{}", self.tag)
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
    Registry(crate::store::registry::RegistryRef),
}

const TRANSPORTS: &str = "oci:DIR[:TAG], docker-archive:FILE[:NAME[:TAG]], docker-daemon:NAME[:TAG], or a registry reference HOST/REPO[:TAG][@DIGEST]";

impl ImageRef {
    /// Parses a reference such as `oci:out:1.0` or `docker-daemon:app:1.0`.
    pub fn parse(s: &str) -> Result<Self> {
        if s == "scratch" {
            return Ok(ImageRef::Scratch);
        }
        if let Some(r) = s.strip_prefix("docker://") {
            return Ok(ImageRef::Registry(crate::store::registry::RegistryRef::parse(r)?));
        }
        let Some((transport, rest)) = s.split_once(':') else {
            if s.contains('/') {
                return Ok(ImageRef::Registry(crate::store::registry::RegistryRef::parse(s)?));
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
                Ok(ImageRef::Registry(crate::store::registry::RegistryRef::parse(s)?))
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
}
