//! Which container engine kiln talks to, chosen the way the docker CLI
//! chooses: `DOCKER_HOST` (with `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`
//! for TLS), else `DOCKER_CONTEXT`, else config.json's `currentContext`
//! (the context store under `~/.docker/contexts`), else the local socket.
//! Endpoints: `unix://`, `tcp://` (plain or TLS with the given CA and a
//! client certificate, never the system roots), and `ssh://[user@]host[:port]`
//! (`ssh … docker system dial-stdio`, as the docker CLI does it). Nothing in
//! a build depends on the engine sharing kiln's filesystem. How a TLS or
//! ssh connection is made is `transport`'s.

use std::path::{Path, PathBuf};

use super::transport::{Dial, custom, tls_config};
use crate::{Error, Result};

/// TLS material for a `tcp://` engine (docker's ca.pem, cert.pem, key.pem).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Where the engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { addr: String, tls: Option<Tls> },
    Ssh { destination: String, port: Option<u16> },
}

/// The engine and what chose it (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    pub endpoint: Endpoint,
    pub chosen_by: String,
    /// An ssh_config for `ssh://` engines (`KILN_SSH_CONFIG`).
    pub ssh_config: Option<PathBuf>,
    /// Why the engine settings could not be used: said when a command
    /// needs the engine, so commands that do not (pull, push, a cache hit)
    /// are not stopped by a broken context.
    pub unusable: Option<String>,
}

impl Engine {
    /// An engine whose settings are broken; `connect` reports `why`.
    pub fn unusable(why: String) -> Engine {
        Engine {
            unusable: Some(why),
            ..Engine::default()
        }
    }

    /// Whether kiln's probes from this host reach the engine's containers:
    /// the engine runs here (a socket, or TCP on a loopback address).
    pub fn is_local(&self) -> bool {
        match &self.endpoint {
            Endpoint::Unix(_) => true,
            Endpoint::Tcp { addr, .. } => {
                let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
            Endpoint::Ssh { .. } => false,
        }
    }

    /// A plain-TCP engine off this host: the API is root on that machine,
    /// and everything kiln sends it (source, proxy settings) goes in clear.
    pub fn plaintext_remote(&self) -> bool {
        matches!(self.endpoint, Endpoint::Tcp { tls: None, .. }) && !self.is_local()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            endpoint: Endpoint::Unix("/var/run/docker.sock".into()),
            chosen_by: "the default socket".into(),
            ssh_config: None,
            unusable: None,
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.endpoint {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display())?,
            Endpoint::Tcp { addr, tls } => write!(f, "tcp://{addr}{}", if tls.is_some() { " (TLS)" } else { "" })?,
            Endpoint::Ssh { destination, port } => match port {
                Some(p) => write!(f, "ssh://{destination}:{p}")?,
                None => write!(f, "ssh://{destination}")?,
            },
        }
        write!(f, " (from {})", self.chosen_by)
    }
}

/// What the environment says about the engine (read by the CLI only).
#[derive(Debug, Clone, Default)]
pub struct EngineEnv {
    pub docker_host: Option<String>,
    pub docker_tls_verify: Option<String>,
    pub docker_cert_path: Option<PathBuf>,
    pub docker_context: Option<String>,
    /// The docker config directory (`DOCKER_CONFIG`, else `~/.docker`).
    pub config_dir: Option<PathBuf>,
    pub ssh_config: Option<PathBuf>,
}

/// Largest context or config file read.
pub(super) const MAX_META: u64 = 1 << 20;

impl Engine {
    /// Picks the engine as the docker CLI does.
    pub fn resolve(env: &EngineEnv) -> Result<Engine> {
        let mut e = if let Some(host) = &env.docker_host {
            // Like the docker CLI: any non-empty DOCKER_TLS_VERIFY means on.
            let tls = match env.docker_tls_verify.as_deref() {
                Some(v) if !v.is_empty() => {
                    let dir = env
                        .docker_cert_path
                        .clone()
                        .or_else(|| env.config_dir.clone())
                        .ok_or_else(|| {
                            Error::invalid(
                                "DOCKER_CERT_PATH",
                                "(unset)",
                                "DOCKER_TLS_VERIFY needs the directory of ca.pem, cert.pem and key.pem",
                            )
                        })?;
                    Some(Tls {
                        ca: dir.join("ca.pem"),
                        cert: dir.join("cert.pem"),
                        key: dir.join("key.pem"),
                    })
                }
                _ => None,
            };
            Engine {
                endpoint: parse_host(host, tls, "DOCKER_HOST")?,
                chosen_by: "DOCKER_HOST".into(),
                ..Engine::default()
            }
        } else {
            let name = match &env.docker_context {
                Some(c) => Some((c.clone(), "DOCKER_CONTEXT")),
                None => current_context(env.config_dir.as_deref())?.map(|c| (c, "config.json's currentContext")),
            };
            match name {
                None => Engine::default(),
                Some((name, _)) if name == "default" => Engine::default(),
                Some((name, origin)) => from_context(env.config_dir.as_deref(), &name, origin)?,
            }
        };
        e.ssh_config = env.ssh_config.clone();
        Ok(e)
    }
}

fn parse_host(host: &str, tls: Option<Tls>, origin: &'static str) -> Result<Endpoint> {
    let bad = |why: &str| Error::invalid(origin, host, why.to_string());
    if let Some(p) = host.strip_prefix("unix://") {
        return Ok(Endpoint::Unix(PathBuf::from(p)));
    }
    let https = host.starts_with("https://");
    if let Some(a) = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("https://")) {
        if https && tls.is_none() {
            return Err(bad(
                "https:// needs TLS material: set DOCKER_TLS_VERIFY=1 and DOCKER_CERT_PATH",
            ));
        }
        let a = a.trim_end_matches('/');
        let (h, port) = split_host_port(a).ok_or_else(|| bad("expected tcp://HOST[:PORT]"))?;
        // Docker's defaults: 2376 with TLS, 2375 without.
        let port = port.unwrap_or(if tls.is_some() { 2376 } else { 2375 });
        let addr = if h.contains(':') {
            format!("[{h}]:{port}")
        } else {
            format!("{h}:{port}")
        };
        return Ok(Endpoint::Tcp { addr, tls });
    }
    if let Some(a) = host.strip_prefix("ssh://") {
        let a = a.trim_end_matches('/');
        let (user, rest) = match a.split_once('@') {
            Some((u, r)) => (Some(u), r),
            None => (None, a),
        };
        let (h, port) = split_host_port(rest).ok_or_else(|| bad("expected ssh://[USER@]HOST[:PORT]"))?;
        // Names only: nothing ssh could read as an option, nothing a shell
        // (a ProxyCommand's %h) could read as syntax.
        let plain = |s: &str| {
            !s.is_empty() && !s.starts_with('-') && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        let host_ok = plain(h) || h.parse::<std::net::Ipv6Addr>().is_ok();
        if !host_ok || user.is_some_and(|u| !plain(u)) {
            return Err(bad(
                "expected ssh://[USER@]HOST[:PORT] with plain names (letters, digits, `.`, `_`, `-`)",
            ));
        }
        let destination = match user {
            Some(u) => format!("{u}@{h}"),
            None => h.to_string(),
        };
        return Ok(Endpoint::Ssh { destination, port });
    }
    Err(bad("expected unix://PATH, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT]"))
}

/// `HOST[:PORT]`, `[V6]` or `[V6]:PORT`: the host (no brackets) and the port.
fn split_host_port(a: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = a.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        return match after {
            "" => Some((h, None)),
            p => Some((h, Some(p.strip_prefix(':')?.parse().ok().filter(|p| *p > 0)?))),
        };
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => {
            Some((h, Some(p.parse().ok().filter(|p| *p > 0)?))).filter(|(h, _)| !h.is_empty())
        }
        Some(_) => None,
        None if a.is_empty() || a.contains('/') => None,
        None => Some((a, None)),
    }
}

/// Reads one of the user's own files (config.json, a context, PEMs):
/// symlinks are followed (dotfile managers, mounted secrets), but it must
/// be a regular file within `max` bytes.
pub(super) fn read_user_file(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(Error::read(path))?;
    let meta = f.metadata().map_err(Error::read(path))?;
    if !meta.is_file() {
        return Err(Error::format(path.display().to_string(), "not a regular file"));
    }
    let mut b = Vec::new();
    f.take(max + 1).read_to_end(&mut b).map_err(Error::read(path))?;
    if b.len() as u64 > max {
        return Err(Error::format(
            path.display().to_string(),
            format!("larger than {} KiB", max >> 10),
        ));
    }
    Ok(b)
}

/// config.json's `currentContext`.
fn current_context(config_dir: Option<&Path>) -> Result<Option<String>> {
    let Some(dir) = config_dir else { return Ok(None) };
    let path = dir.join("config.json");
    if !path.exists() {
        return Ok(None);
    }
    let v = read_json(&path)?;
    Ok(v.get("currentContext")
        .and_then(|c| c.as_str())
        .filter(|c| !c.is_empty())
        .map(String::from))
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = read_user_file(path, MAX_META)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::format(path.display().to_string(), format!("not JSON: {e}")))
}

/// A context from the store: `contexts/meta/<sha256(name)>/meta.json`, TLS
/// files in `contexts/tls/<sha256(name)>/docker/`.
fn from_context(config_dir: Option<&Path>, name: &str, origin: &str) -> Result<Engine> {
    use sha2::Digest as _;
    let dir = config_dir.ok_or_else(|| {
        Error::invalid(
            "docker context",
            name,
            "no HOME or DOCKER_CONFIG to find the context store in",
        )
    })?;
    let id = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    let meta = dir.join("contexts/meta").join(&id).join("meta.json");
    if !meta.is_file() {
        return Err(Error::NotFound {
            what: format!("docker context `{name}` (named by {origin})"),
            location: dir.join("contexts/meta").display().to_string(),
            hint:
                "; `docker context ls` lists the contexts, `docker context use default` goes back to the local engine"
                    .into(),
        });
    }
    let v = read_json(&meta)?;
    let ep = &v["Endpoints"]["docker"];
    let host = ep["Host"]
        .as_str()
        .ok_or_else(|| Error::format(meta.display().to_string(), "the context has no Endpoints.docker.Host"))?;
    if ep["SkipTLSVerify"].as_bool() == Some(true) {
        return Err(Error::invalid(
            "docker context",
            name,
            "it skips TLS verification; kiln does not talk to an engine it cannot authenticate: give the context a CA",
        ));
    }
    let tls_dir = dir.join("contexts/tls").join(&id).join("docker");
    let files = ["ca.pem", "cert.pem", "key.pem"].map(|f| tls_dir.join(f));
    // Any TLS file means TLS (never a quiet fall back to plain TCP); kiln
    // asks only the context's CA, so it must be there.
    let tls = if files.iter().any(|f| f.exists()) {
        if !files[0].exists() {
            return Err(Error::invalid(
                "docker context",
                name,
                format!(
                    "it has TLS files but no {}: kiln trusts only the context's own CA",
                    files[0].display()
                ),
            ));
        }
        Some(Tls {
            ca: files[0].clone(),
            cert: files[1].clone(),
            key: files[2].clone(),
        })
    } else {
        None
    };
    Ok(Engine {
        endpoint: parse_host(host, tls, "docker context Host")?,
        chosen_by: format!("docker context `{name}` ({origin})"),
        ..Engine::default()
    })
}

/// An engine error with its causes (TLS and connection failures are in
/// the sources, not in the top message).
pub fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// Asks the engine whether it is there (30 s at most): the first request,
/// whose failure says which engine, what chose it and why.
pub async fn ping(docker: &bollard::Docker, engine: &Engine) -> Result<()> {
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), docker.ping()).await;
    let why = match answer {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(e)) => describe(&e),
        Err(_) => "no answer within 30 s".to_string(),
    };
    Err(Error::Engine {
        message: format!(
            "{engine} does not answer ({why}); start it, or choose another with DOCKER_HOST or a Docker context"
        ),
    })
}

/// Connects to the engine (no request is made yet).
pub fn connect(engine: &Engine, timeout_secs: u64) -> Result<bollard::Docker> {
    if let Some(why) = &engine.unusable {
        return Err(Error::Engine { message: why.clone() });
    }
    let err = |e: bollard::errors::Error| Error::Engine {
        message: format!("cannot connect to {engine}: {e}"),
    };
    match &engine.endpoint {
        Endpoint::Unix(p) => {
            bollard::Docker::connect_with_unix(&p.to_string_lossy(), timeout_secs, bollard::API_DEFAULT_VERSION)
                .map_err(err)
        }
        Endpoint::Tcp { addr, tls: None } => {
            bollard::Docker::connect_with_http(&format!("tcp://{addr}"), timeout_secs, bollard::API_DEFAULT_VERSION)
                .map_err(err)
        }
        Endpoint::Tcp { addr, tls: Some(tls) } => {
            let config = tls_config(tls)?;
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let server_name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| Error::Engine {
                message: format!("{engine}: `{host}` is not a host name or address: {e}"),
            })?;
            custom(
                Dial::Tls {
                    addr: addr.clone(),
                    server_name,
                    config,
                },
                timeout_secs,
            )
        }
        Endpoint::Ssh { destination, port } => {
            let mut argv = vec!["ssh".to_string()];
            if let Some(c) = &engine.ssh_config {
                argv.extend(["-F".into(), c.display().to_string()]);
            }
            argv.extend(
                [
                    "BatchMode=yes",
                    "ConnectTimeout=30",
                    "ServerAliveInterval=15",
                    "ServerAliveCountMax=3",
                ]
                .iter()
                .flat_map(|o| ["-o".to_string(), o.to_string()]),
            );
            argv.push("-T".into());
            if let Some(p) = port {
                argv.extend(["-p".into(), p.to_string()]);
            }
            argv.extend([
                "--".into(),
                destination.clone(),
                "docker".into(),
                "system".into(),
                "dial-stdio".into(),
            ]);
            custom(Dial::Ssh { argv }, timeout_secs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse_like_the_docker_cli() {
        assert_eq!(
            parse_host("unix:///run/user/1000/docker.sock", None, "DOCKER_HOST").unwrap(),
            Endpoint::Unix("/run/user/1000/docker.sock".into())
        );
        assert_eq!(
            parse_host("tcp://10.0.0.5", None, "DOCKER_HOST").unwrap(),
            Endpoint::Tcp {
                addr: "10.0.0.5:2375".into(),
                tls: None
            }
        );
        assert_eq!(
            parse_host("ssh://ci@builder:2222", None, "DOCKER_HOST").unwrap(),
            Endpoint::Ssh {
                destination: "ci@builder".into(),
                port: Some(2222)
            }
        );
        assert!(parse_host("ssh://-oProxyCommand=x", None, "DOCKER_HOST").is_err());
        assert!(parse_host("ssh://a;b@host", None, "DOCKER_HOST").is_err());
        assert!(parse_host("ssh://host$(id)", None, "DOCKER_HOST").is_err());
        assert_eq!(
            parse_host("ssh://[::1]:2222", None, "DOCKER_HOST").unwrap(),
            Endpoint::Ssh {
                destination: "::1".into(),
                port: Some(2222)
            }
        );
        assert!(parse_host("tcp://h:99999", None, "DOCKER_HOST").is_err());
        assert!(parse_host("https://h", None, "DOCKER_HOST").is_err());
        assert_eq!(
            parse_host("tcp://[::1]:2376", None, "DOCKER_HOST").unwrap(),
            Endpoint::Tcp {
                addr: "[::1]:2376".into(),
                tls: None
            }
        );
        assert!(parse_host("npipe:////./pipe/docker", None, "DOCKER_HOST").is_err());
    }

    #[test]
    fn contexts_come_from_the_store() {
        use sha2::Digest as _;
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), r#"{"currentContext":"remote"}"#).unwrap();
        let id = hex::encode(sha2::Sha256::digest(b"remote"));
        let meta = d.path().join("contexts/meta").join(&id);
        std::fs::create_dir_all(&meta).unwrap();
        std::fs::write(
            meta.join("meta.json"),
            r#"{"Name":"remote","Metadata":{},"Endpoints":{"docker":{"Host":"tcp://127.0.0.1:2376","SkipTLSVerify":false}}}"#,
        )
        .unwrap();
        let tls = d.path().join("contexts/tls").join(&id).join("docker");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::write(tls.join("ca.pem"), "x").unwrap();
        let env = EngineEnv {
            config_dir: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        let e = Engine::resolve(&env).unwrap();
        assert!(e.chosen_by.contains("remote"), "{e}");
        assert!(matches!(&e.endpoint, Endpoint::Tcp { addr, tls: Some(_) } if addr == "127.0.0.1:2376"));
        // DOCKER_HOST wins over the context; DOCKER_CONTEXT over currentContext.
        let e = Engine::resolve(&EngineEnv {
            docker_host: Some("unix:///x.sock".into()),
            ..env.clone()
        })
        .unwrap();
        assert_eq!(e.endpoint, Endpoint::Unix("/x.sock".into()));
        let err = Engine::resolve(&EngineEnv {
            docker_context: Some("gone".into()),
            ..env.clone()
        })
        .unwrap_err();
        assert!(err.to_string().contains("docker context `gone`"), "{err}");
        let e = Engine::resolve(&EngineEnv {
            docker_context: Some("default".into()),
            ..env.clone()
        })
        .unwrap();
        assert_eq!(e, Engine::default());
        // TLS files without the CA: refused, never plain TCP.
        std::fs::remove_file(tls.join("ca.pem")).unwrap();
        std::fs::write(tls.join("cert.pem"), "x").unwrap();
        let err = Engine::resolve(&env).unwrap_err();
        assert!(
            err.to_string().contains("no ") && err.to_string().contains("ca.pem"),
            "{err}"
        );
        // DOCKER_TLS_VERIFY=0 is on, as for docker.
        let e = Engine::resolve(&EngineEnv {
            docker_host: Some("tcp://10.1.2.3".into()),
            docker_tls_verify: Some("0".into()),
            docker_cert_path: Some("/certs".into()),
            ..Default::default()
        })
        .unwrap();
        assert!(
            matches!(&e.endpoint, Endpoint::Tcp { addr, tls: Some(_) } if addr == "10.1.2.3:2376"),
            "{e}"
        );
        assert!(!e.is_local() && !e.plaintext_remote());
    }
}
