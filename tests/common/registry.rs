//! Real registries for tests: the CNCF distribution registry (Debian's
//! `docker-registry`) started on a free loopback port in three set-ups —
//! plain HTTP, TLS with a generated CA plus htpasswd basic auth, and token
//! auth with a small token server that signs real JWTs (RS256, x5c) — and
//! a fault-injecting HTTP proxy to put between kiln and a registry.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::ok;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running distribution registry; stopped on drop.
pub struct TestRegistry {
    pub addr: String,
    /// For KILN_CERTS_DIR / skopeo --cert-dir: holds `ADDR/ca.crt` when TLS is on.
    pub certs_dir: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    child: Child,
    pub dir: tempfile::TempDir,
    pub token_server: Option<TokenServer>,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: tempfile::TempDir, config: String, port: u16) -> (Child, tempfile::TempDir) {
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, config).unwrap();
    let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("docker-registry is installed (scripts/dev-env.sh up)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "registry did not start: {}",
            std::fs::read_to_string(dir.path().join("registry.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, dir)
}

fn storage(dir: &Path) -> String {
    format!(
        "storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n",
        dir.join("data").display()
    )
}

/// Plain HTTP, no auth.
pub fn plain() -> TestRegistry {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\n{}http:\n  addr: 127.0.0.1:{port}\n",
        storage(dir.path())
    );
    let (child, dir) = start(dir, config, port);
    TestRegistry {
        addr: format!("127.0.0.1:{port}"),
        certs_dir: None,
        ca_file: None,
        child,
        dir,
        token_server: None,
    }
}

/// Makes a CA and a server certificate for 127.0.0.1 in `dir`.
fn make_tls(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let sh = |cmd: &str| ok(Command::new("sh").current_dir(dir).arg("-c").arg(cmd));
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=kiln-test-ca 2>/dev/null",
    );
    sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null");
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    sh(
        "openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile ext 2>/dev/null",
    );
    (dir.join("ca.crt"), dir.join("server.crt"), dir.join("server.key"))
}

/// TLS with a generated CA, and htpasswd (bcrypt) basic auth for `user`/`password`.
pub fn tls_basic(user: &str, password: &str) -> TestRegistry {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let (ca, crt, key) = make_tls(dir.path());
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("htpasswd (apache2-utils)");
    assert!(out.status.success());
    std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\n{}auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls:\n    certificate: {}\n    key: {}\n",
        storage(dir.path()),
        dir.path().join("htpasswd").display(),
        crt.display(),
        key.display()
    );
    let certs = dir.path().join("certs.d");
    let addr = format!("127.0.0.1:{port}");
    std::fs::create_dir_all(certs.join(&addr)).unwrap();
    std::fs::copy(&ca, certs.join(&addr).join("ca.crt")).unwrap();
    let (child, dir) = start(dir, config, port);
    TestRegistry {
        addr,
        certs_dir: Some(certs),
        ca_file: Some(ca),
        child,
        dir,
        token_server: None,
    }
}

/// Token auth: the registry trusts JWTs signed by the token server, which
/// grants what it is asked for to `user`/`password` (Basic on GET) or to
/// `refresh` (an identity token, OAuth2 POST), and nothing to anonymous.
pub fn token(user: &str, password: &str, refresh: &str) -> TestRegistry {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let sh = |cmd: &str| ok(Command::new("sh").current_dir(dir.path()).arg("-c").arg(cmd));
    sh(
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout token.key -out token.crt -days 2 -subj /CN=kiln-test-token 2>/dev/null",
    );
    let ts = TokenServer::start(dir.path(), user, password, refresh);
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\n{}auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: kiln-test-registry\n    issuer: kiln-test-issuer\n    rootcertbundle: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        storage(dir.path()),
        ts.port,
        dir.path().join("token.crt").display()
    );
    let (child, dir) = start(dir, config, port);
    TestRegistry {
        addr: format!("127.0.0.1:{port}"),
        certs_dir: None,
        ca_file: None,
        child,
        dir,
        token_server: Some(ts),
    }
}

/// A token server fixture; every token it issued is recorded (to check none leaks).
pub struct TokenServer {
    pub port: u16,
    pub issued: Arc<Mutex<Vec<String>>>,
    pub requests: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl TokenServer {
    fn start(dir: &Path, user: &str, password: &str, refresh: &str) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued: Arc<Mutex<Vec<String>>> = Arc::default();
        let requests = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let expected_basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let refresh = refresh.to_string();
        let key = dir.join("token.key");
        let cert_pem = std::fs::read_to_string(dir.join("token.crt")).unwrap();
        let der_b64: String = cert_pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let (issued2, requests2, stop2) = (issued.clone(), requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(mut conn) = conn else { continue };
                requests2.fetch_add(1, Ordering::SeqCst);
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut auth = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if lower.starts_with("authorization:") {
                        auth = line["authorization:".len()..].trim().to_string();
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                let mut parts = request_line.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let target = parts.next().unwrap_or("").to_string();
                let query = if method == "POST" {
                    String::from_utf8_lossy(&body).into_owned()
                } else {
                    target.split_once('?').map(|(_, q)| q.to_string()).unwrap_or_default()
                };
                let pairs: Vec<(String, String)> = query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (percent_decode(k), percent_decode(v)))
                    .collect();
                let granted = if method == "POST" {
                    pairs.iter().any(|(k, v)| k == "refresh_token" && *v == refresh)
                        || (pairs
                            .iter()
                            .any(|(k, v)| k == "username" && *v == user_of(&expected_basic))
                            && pairs
                                .iter()
                                .any(|(k, v)| k == "password" && *v == password_of(&expected_basic)))
                } else {
                    auth == expected_basic
                };
                if !granted {
                    let _ =
                        conn.write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    continue;
                }
                let mut access = Vec::new();
                for (k, v) in &pairs {
                    if k != "scope" {
                        continue;
                    }
                    for one in v.split(' ') {
                        let f: Vec<&str> = one.split(':').collect();
                        if f.len() >= 3 {
                            let actions: Vec<&str> = f[f.len() - 1].split(',').collect();
                            let name = f[1..f.len() - 1].join(":");
                            access.push(serde_json::json!({"type": f[0], "name": name, "actions": actions}));
                        }
                    }
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [der_b64]});
                let claims = serde_json::json!({
                    "iss": "kiln-test-issuer", "sub": "kiln", "aud": "kiln-test-registry",
                    "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", rand_u64()),
                    "access": access,
                });
                let signing_input = format!(
                    "{}.{}",
                    b64url(header.to_string().as_bytes()),
                    b64url(claims.to_string().as_bytes())
                );
                let mut child = Command::new("openssl")
                    .args(["dgst", "-sha256", "-sign"])
                    .arg(&key)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap();
                child.stdin.take().unwrap().write_all(signing_input.as_bytes()).unwrap();
                let sig = child.wait_with_output().unwrap().stdout;
                let jwt = format!("{signing_input}.{}", b64url(&sig));
                issued2.lock().unwrap().push(jwt.clone());
                let body = serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": 300}).to_string();
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer {
            port,
            issued,
            requests,
            stop,
        }
    }
}

fn user_of(basic: &str) -> String {
    let d = base64::engine::general_purpose::STANDARD
        .decode(basic.trim_start_matches("Basic "))
        .unwrap();
    String::from_utf8(d).unwrap().split_once(':').unwrap().0.to_string()
}

fn password_of(basic: &str) -> String {
    let d = base64::engine::general_purpose::STANDARD
        .decode(basic.trim_start_matches("Basic "))
        .unwrap();
    String::from_utf8(d).unwrap().split_once(':').unwrap().1.to_string()
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish()
}

/// Faults the proxy can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Close the connection after reading part of the request (mid-upload).
    DropRequest,
    /// Forward, then close after half of the response body (mid-download).
    DropResponse,
    /// Answer 500, 502 or 503 without forwarding.
    ServerError(u16),
    /// Answer 429 with `Retry-After: 1`.
    TooMany,
    /// Forward, but flip a byte in a blob body (a wrong digest).
    Corrupt,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// The request target: path and query.
    pub path: String,
    /// The Content-Range header, if any (chunked uploads).
    pub content_range: Option<String>,
    /// The fault injected into this request, if any.
    pub fault: Option<Fault>,
}

/// A fault-injecting HTTP/1.1 proxy in front of `upstream` (127.0.0.1:PORT).
/// `choose(method, path)` decides the fault for each request; every request
/// is recorded, in the order the proxy read them.
pub struct FaultProxy {
    pub addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

type Chooser = Arc<dyn Fn(&str, &str) -> Option<Fault> + Send + Sync>;
type Log = Arc<Mutex<Vec<Seen>>>;

impl FaultProxy {
    pub fn start(upstream: &str, choose: impl Fn(&str, &str) -> Option<Fault> + Send + Sync + 'static) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Log = Arc::default();
        let choose: Chooser = Arc::new(choose);
        let (stop2, seen2, upstream) = (stop.clone(), seen.clone(), upstream.to_string());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (choose, seen, upstream) = (choose.clone(), seen2.clone(), upstream.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &upstream, &choose, &seen);
                });
            }
        });
        FaultProxy { addr, seen, stop }
    }

    /// Every request seen so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many faults were injected so far.
    pub fn faults(&self) -> usize {
        self.seen().iter().filter(|s| s.fault.is_some()).count()
    }

    /// How many times each (method, path) was seen, the path as the client
    /// means it: an upload session's id and state (chosen by the registry,
    /// new for every session) left out, the blob digest kept. A retry in a
    /// new session counts as the same request.
    pub fn by_request(&self) -> BTreeMap<(String, String), u64> {
        let mut m = BTreeMap::new();
        for s in self.seen() {
            *m.entry((s.method, logical_path(&s.path))).or_default() += 1;
        }
        m
    }
}

/// `/v2/R/blobs/uploads/ID?_state=S&digest=D` → `/v2/R/blobs/uploads/…?digest=D`.
fn logical_path(path: &str) -> String {
    match path.split_once("/blobs/uploads/") {
        Some((repo, session)) if !session.is_empty() && !session.starts_with('?') => {
            let query = session.split_once('?').map_or("", |(_, q)| q);
            let digest: Vec<&str> = query.split('&').filter(|kv| kv.starts_with("digest=")).collect();
            format!("{repo}/blobs/uploads/…?{}", digest.join("&"))
        }
        _ => path.to_string(),
    }
}

/// Requests by method.
pub fn by_method(seen: &[Seen]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for s in seen {
        *m.entry(s.method.clone()).or_default() += 1;
    }
    m
}

type Head = (String, Vec<(String, String)>);

fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Head>> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let first = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Some((first, headers)))
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a body (content-length or chunked, re-encoded as raw bytes).
fn read_body(r: &mut BufReader<TcpStream>, h: &[(String, String)]) -> std::io::Result<Vec<u8>> {
    if let Some(len) = header(h, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        let mut b = vec![0u8; len];
        r.read_exact(&mut b)?;
        return Ok(b);
    }
    if header(h, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut out = Vec::new();
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line)?;
            let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&chunk[..size]);
        }
    }
    Ok(Vec::new())
}

fn serve(conn: TcpStream, upstream: &str, choose: &Chooser, seen: &Log) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut client = conn;
    // One request per connection: the proxy answers `connection: close`.
    let Some((first, headers)) = read_head(&mut reader)? else {
        return Ok(());
    };
    let mut it = first.split_whitespace();
    let method = it.next().unwrap_or("").to_string();
    let path = it.next().unwrap_or("").to_string();
    let fault = choose(&method, &path);
    let index = {
        let mut seen = seen.lock().unwrap();
        seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            content_range: header(&headers, "content-range").map(str::to_string),
            fault,
        });
        seen.len() - 1
    };
    // A fault that turns out not to apply (nothing to corrupt or cut) is not counted.
    let not_applied = || seen.lock().unwrap()[index].fault = None;
    match fault {
        Some(Fault::DropRequest) => {
            // Take part of the body (if any), then hang up mid-request.
            if header(&headers, "content-length").is_some_and(|l| l != "0")
                || header(&headers, "transfer-encoding").is_some()
            {
                let mut part = vec![0u8; 1024];
                let _ = reader.read(&mut part);
            }
            client.shutdown(Shutdown::Both)?;
            return Ok(());
        }
        Some(Fault::ServerError(code)) => {
            let _ = read_body(&mut reader, &headers);
            write!(
                client,
                "HTTP/1.1 {code} Injected\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
            )?;
            return Ok(());
        }
        Some(Fault::TooMany) => {
            let _ = read_body(&mut reader, &headers);
            write!(
                client,
                "HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )?;
            return Ok(());
        }
        _ => {}
    }
    let body = read_body(&mut reader, &headers)?;
    let mut up = TcpStream::connect(upstream)?;
    write!(up, "{first}\r\n")?;
    for (k, v) in &headers {
        if k.eq_ignore_ascii_case("connection")
            || k.eq_ignore_ascii_case("transfer-encoding")
            || k.eq_ignore_ascii_case("content-length")
        {
            continue;
        }
        write!(up, "{k}: {v}\r\n")?;
    }
    if !body.is_empty() || matches!(method.as_str(), "PUT" | "POST" | "PATCH") {
        write!(up, "content-length: {}\r\n", body.len())?;
    }
    write!(up, "connection: close\r\n\r\n")?;
    up.write_all(&body)?;
    let mut upr = BufReader::new(up);
    let Some((status_line, rh)) = read_head(&mut upr)? else {
        return Ok(());
    };
    let mut rbody = Vec::new();
    if method != "HEAD" {
        if header(&rh, "content-length").is_some() || header(&rh, "transfer-encoding").is_some() {
            rbody = read_body(&mut upr, &rh)?;
        } else {
            upr.read_to_end(&mut rbody)?;
        }
    }
    if fault == Some(Fault::Corrupt) {
        if path.contains("/blobs/sha256:") && !rbody.is_empty() {
            let i = rbody.len() / 2;
            rbody[i] ^= 0xff;
        } else {
            not_applied();
        }
    }
    write!(client, "{status_line}\r\n")?;
    for (k, v) in &rh {
        if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        write!(client, "{k}: {v}\r\n")?;
    }
    if method != "HEAD" && header(&rh, "content-length").is_none() {
        write!(client, "content-length: {}\r\n", rbody.len())?;
    }
    write!(client, "connection: close\r\n\r\n")?;
    if fault == Some(Fault::DropResponse) {
        if rbody.len() > 1 {
            client.write_all(&rbody[..rbody.len() / 2])?;
            client.shutdown(Shutdown::Both)?;
            return Ok(());
        }
        not_applied();
    }
    client.write_all(&rbody)?;
    Ok(())
}
