//! The connections to a remote engine, as bollard custom transports over a
//! pooled hyper client: TLS that trusts only the engine's CA and presents
//! the client certificate, and `ssh … docker system dial-stdio` children
//! whose stdin/stdout are the stream.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use super::engine::{MAX_META, Tls, read_user_file};
use crate::{Error, Result};

/// The client side of docker's TLS: the engine's certificate must chain to
/// the given CA (the system's roots are not asked), and kiln presents the
/// client certificate.
pub(super) fn tls_config(tls: &Tls) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |p: &Path| -> Result<Vec<u8>> {
        let b = read_user_file(p, MAX_META).map_err(|e| Error::Engine {
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
pub(super) enum Dial {
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
                    // A silent network must not hang a build: 30 s to connect and shake hands.
                    let dial = async {
                        let tcp = tokio::net::TcpStream::connect(addr.as_str()).await?;
                        tokio_rustls::TlsConnector::from(config.clone())
                            .connect(server_name.clone(), tcp)
                            .await
                    };
                    let tls = tokio::time::timeout(std::time::Duration::from_secs(30), dial)
                        .await
                        .map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::TimedOut, "no TLS connection within 30 s")
                        })??;
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

pub(super) fn custom(dial: Dial, timeout_secs: u64) -> Result<bollard::Docker> {
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
