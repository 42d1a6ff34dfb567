//! Which container engine kiln talks to, chosen the way the docker CLI
//! chooses: `DOCKER_HOST` (with `DOCKER_TLS_VERIFY` and `DOCKER_CERT_PATH`
//! for TLS), else `DOCKER_CONTEXT`, else config.json's `currentContext`
//! (the context store under `~/.docker/contexts`), else the local socket.
//! Endpoints: `unix://`, `tcp://` (plain or TLS with the given CA and a
//! client certificate, never the system roots), and `ssh://[user@]host[:port]`
//! (`ssh … docker system dial-stdio`, as the docker CLI does it). Nothing in
//! a build depends on the engine sharing kiln's filesystem.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

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
}

impl Default for Engine {
    fn default() -> Self {
        Engine {
            endpoint: Endpoint::Unix("/var/run/docker.sock".into()),
            chosen_by: "the default socket".into(),
            ssh_config: None,
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
const MAX_META: u64 = 1 << 20;

impl Engine {
    /// Picks the engine as the docker CLI does.
    pub fn resolve(env: &EngineEnv) -> Result<Engine> {
        let mut e = if let Some(host) = &env.docker_host {
            let tls = match env.docker_tls_verify.as_deref() {
                Some(v) if !v.is_empty() && v != "0" => {
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
                ssh_config: None,
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
    if let Some(a) = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("https://")) {
        let a = a.trim_end_matches('/');
        if a.is_empty() || a.contains('/') {
            return Err(bad("expected tcp://HOST:PORT"));
        }
        let addr = if a.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) && !a.ends_with(']') {
            a.to_string()
        } else {
            // Docker's defaults: 2376 with TLS, 2375 without.
            format!("{a}:{}", if tls.is_some() { 2376 } else { 2375 })
        };
        return Ok(Endpoint::Tcp { addr, tls });
    }
    if let Some(a) = host.strip_prefix("ssh://") {
        let a = a.trim_end_matches('/');
        let (dest, port) = match a.rsplit_once(':') {
            Some((d, p)) if !d.contains(']') || d.ends_with(']') => match p.parse::<u16>() {
                Ok(p) => (d.to_string(), Some(p)),
                Err(_) => return Err(bad("expected ssh://[USER@]HOST[:PORT]")),
            },
            _ => (a.to_string(), None),
        };
        // Never something ssh would read as an option.
        if dest.is_empty() || dest.starts_with('-') || dest.contains(char::is_whitespace) || dest.contains('/') {
            return Err(bad("expected ssh://[USER@]HOST[:PORT]"));
        }
        return Ok(Endpoint::Ssh {
            destination: dest,
            port,
        });
    }
    Err(bad("expected unix://PATH, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT]"))
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
    let bytes = crate::image::read_regular(path, MAX_META)?;
    if bytes.len() as u64 > MAX_META {
        return Err(Error::format(path.display().to_string(), "larger than 1 MiB"));
    }
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
    let tls = tls_dir.join("ca.pem").is_file().then(|| Tls {
        ca: tls_dir.join("ca.pem"),
        cert: tls_dir.join("cert.pem"),
        key: tls_dir.join("key.pem"),
    });
    Ok(Engine {
        endpoint: parse_host(host, tls, "docker context Host")?,
        chosen_by: format!("docker context `{name}` ({origin})"),
        ssh_config: None,
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

/// Connects to the engine (no request is made yet).
pub fn connect(engine: &Engine, timeout_secs: u64) -> Result<bollard::Docker> {
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
            let server_name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| {
                Error::invalid("DOCKER_HOST", addr.as_str(), format!("not a host name or address: {e}"))
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
            argv.extend([
                "-o".into(),
                "BatchMode=yes".into(),
                "-o".into(),
                "ConnectTimeout=30".into(),
                "-T".into(),
            ]);
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

/// The client side of docker's TLS: the engine's certificate must chain to
/// the given CA (the system's roots are not asked), and kiln presents the
/// client certificate.
fn tls_config(tls: &Tls) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &Path| -> Result<Vec<u8>> {
        let b = crate::image::read_regular(p, MAX_META).map_err(|e| Error::Engine {
            message: format!("TLS for the engine: {e}; DOCKER_CERT_PATH (or the context's tls directory) must hold ca.pem, cert.pem and key.pem"),
        })?;
        Ok(b)
    };
    let bad = |p: &Path, what: &str| Error::Engine {
        message: format!("TLS for the engine: {} holds no {what} (PEM)", p.display()),
    };
    let mut roots = rustls::RootCertStore::empty();
    let ca = read(&tls.ca)?;
    for c in CertificateDer::pem_slice_iter(&ca) {
        let c = c.map_err(|_| bad(&tls.ca, "certificate"))?;
        roots.add(c).map_err(|e| Error::Engine {
            message: format!("TLS for the engine: {}: {e}", tls.ca.display()),
        })?;
    }
    if roots.is_empty() {
        return Err(bad(&tls.ca, "certificate"));
    }
    let cert = read(&tls.cert)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad(&tls.cert, "certificate"))?;
    if certs.is_empty() {
        return Err(bad(&tls.cert, "certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&tls.key)?).map_err(|_| bad(&tls.key, "private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Engine {
            message: format!("TLS for the engine: {e}"),
        })?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| Error::Engine {
            message: format!("TLS for the engine: {}/{}: {e}", tls.cert.display(), tls.key.display()),
        })?;
    Ok(Arc::new(config))
}

/// How one connection to the engine is made.
enum Dial {
    Tls {
        addr: String,
        server_name: rustls::pki_types::ServerName<'static>,
        config: Arc<rustls::ClientConfig>,
    },
    Ssh {
        argv: Vec<String>,
    },
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// One connection, for hyper.
struct Conn(hyper_util::rt::TokioIo<Box<dyn Stream>>);

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl hyper_util::client::legacy::connect::Connection for Conn {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// An ssh child's stdout and stdin as one stream (the child dies with it).
struct ChildStream {
    _child: tokio::process::Child,
    stdout: tokio::process::ChildStdout,
    stdin: tokio::process::ChildStdin,
}

impl tokio::io::AsyncRead for ChildStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stdout).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for ChildStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut TaskContext<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stdin).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stdin).poll_shutdown(cx)
    }
}

#[derive(Clone)]
struct Dialer(Arc<Dial>);

impl tower_service::Service<hyper::Uri> for Dialer {
    type Response = Conn;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = std::io::Result<Conn>> + Send>>;

    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let dial = self.0.clone();
        Box::pin(async move {
            let stream: Box<dyn Stream> = match &*dial {
                Dial::Tls {
                    addr,
                    server_name,
                    config,
                } => {
                    let tcp = tokio::net::TcpStream::connect(addr.as_str()).await?;
                    let tls = tokio_rustls::TlsConnector::from(config.clone())
                        .connect(server_name.clone(), tcp)
                        .await?;
                    Box::new(tls)
                }
                Dial::Ssh { argv } => {
                    let mut child = tokio::process::Command::new(&argv[0])
                        .args(&argv[1..])
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::inherit())
                        .kill_on_drop(true)
                        .spawn()
                        .map_err(|e| std::io::Error::new(e.kind(), format!("running ssh: {e}")))?;
                    let stdout = child.stdout.take().expect("piped");
                    let stdin = child.stdin.take().expect("piped");
                    Box::new(ChildStream {
                        _child: child,
                        stdout,
                        stdin,
                    })
                }
            };
            Ok(Conn(hyper_util::rt::TokioIo::new(stream)))
        })
    }
}

fn custom(dial: Dial, timeout_secs: u64) -> Result<bollard::Docker> {
    let client =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(Dialer(Arc::new(dial)));
    let client = Arc::new(client);
    bollard::Docker::connect_with_custom_transport(
        move |req: bollard::BollardRequest| {
            let client = client.clone();
            Box::pin(async move { client.request(req).await.map_err(bollard::errors::Error::from) })
        },
        Some("http://engine"),
        timeout_secs,
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|e| Error::Engine {
        message: format!("cannot set up the engine connection: {e}"),
    })
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
            ..env
        })
        .unwrap();
        assert_eq!(e, Engine::default());
    }
}
