//! An HTTP client for one registry: the distribution API's seven endpoints,
//! authentication on demand (challenge → token per scope, cached, refreshed
//! on a new challenge, also mid-upload), redirects followed by hand so
//! Authorization never goes to another host, and every body read with a cap
//! while it streams.
//!
//! Retries live here and only here, under one [`RetryPolicy`]: backoff with
//! jitter, Retry-After honoured, at most `attempts` tries of any request or
//! operation, and a per-client budget of retries so a failing registry is
//! not hammered. Callers never loop: a multi-request operation (start an
//! upload, then PUT it) is retried whole through [`Client::retrying`].
//! (Model: go-containerregistry's `transport.NewRetry`.)
//!
//! One file on purpose (~670 lines): authentication, retries and transport
//! errors all act on the same request loop; splitting them would expose the
//! client's token and retry state to other modules.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Deserialize;

use super::auth::{self, Challenge, Credentials, Secret};
use crate::reference::RegistryRef;
use crate::{Error, Result};

/// How often and how patiently requests are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries of one request or operation, the first included.
    pub attempts: u32,
    /// Base delay of the exponential backoff.
    pub base: Duration,
    /// Retries one client may make in all (a budget shared by every request).
    pub budget: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(200),
            budget: 100,
        }
    }
}

/// How kiln talks to registries (resolved once at the edge from flags and
/// the environment; see [`crate::context::Context`]).
#[derive(Debug, Clone)]
pub struct Options {
    /// Hosts (`host[:port]`) reached over plain HTTP besides loopback ones.
    pub insecure: Vec<String>,
    /// Credentials given on the command line (override config.json)...
    pub credentials: Option<Credentials>,
    /// ...for these registries (`HOST[:PORT]`) only: the ones the command
    /// names. Any other registry gets config.json's credentials for itself.
    pub credentials_for: Vec<String>,
    /// The docker config.json to read credentials from (None: none).
    pub docker_config: Option<PathBuf>,
    /// Directories in Docker's certs.d layout (`HOST[:PORT]/*.crt`).
    pub certs_dirs: Vec<PathBuf>,
    /// Upload in chunks of this many bytes (None: one streaming PUT).
    pub chunk_size: Option<u64>,
    /// Blobs uploaded at once.
    pub parallel: usize,
    /// Log every request (method, URL without query, status) on stderr.
    pub verbose: bool,
    /// The one retry policy.
    pub retry: RetryPolicy,
    /// Where pulls go (registries.conf, daemon.json); pushes ignore it.
    pub mirrors: super::mirrors::Mirrors,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            insecure: Vec::new(),
            credentials: None,
            credentials_for: Vec::new(),
            docker_config: None,
            certs_dirs: Vec::new(),
            chunk_size: None,
            parallel: 4,
            verbose: false,
            retry: RetryPolicy::default(),
            mirrors: Default::default(),
        }
    }
}

/// A registry error body: `{"errors":[{"code","message","detail"}]}`.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Debug, Deserialize)]
struct ErrorItem {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Whether a status is worth retrying.
pub fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// Requests made, by method (the benchmark counts them).
#[derive(Debug, Default)]
pub struct Stats {
    counts: Mutex<BTreeMap<String, u64>>,
    pub bytes_up: AtomicU64,
}

impl Stats {
    fn count(&self, m: &Method) {
        *self.counts.lock().expect("stats").entry(m.to_string()).or_default() += 1;
    }
    /// Requests by method.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("stats").clone()
    }
}

/// A client for one registry.
pub struct Client {
    http: reqwest::Client,
    pub registry: String,
    base: Url,
    creds: Credentials,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, (Secret, Instant)>>,
    pub opts: Options,
    pub stats: Stats,
    /// Retries left in this client's budget.
    retries_left: AtomicU32,
}

/// Largest token-server reply kiln reads.
const MAX_TOKEN_REPLY: u64 = 1 << 20;
/// Largest error body kiln reads (only its start is shown).
const MAX_ERROR_BODY: u64 = 64 << 10;
/// Longest a bearer token is trusted, whatever the server says.
const MAX_TOKEN_TTL: u64 = 24 * 3600;

impl Client {
    /// A client for the registry of `r`, with credentials from `opts` or the
    /// docker config. CA certificates for the registry are read, like
    /// Docker does, from `certs.d/HOST[:PORT]/*.crt` in `opts.certs_dirs`.
    pub async fn connect(r: &RegistryRef, opts: &Options) -> Result<Self> {
        let host = r.api_host().to_string();
        // Loopback and --insecure-registry hosts may speak plain HTTP: like
        // Docker, try HTTPS first and fall back when no TLS answers.
        let may_be_plain = r.is_loopback() || opts.insecure.iter().any(|h| h == &r.registry || h == &host);
        let base = Url::parse(&format!("https://{host}/v2/"))
            .map_err(|e| Error::invalid("registry", r.registry.clone(), e.to_string()))?;
        // ring as rustls' crypto: aws-lc's entropy self-test costs ~30 ms of
        // CPU per process, most of a small push.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")));
        let mut certs = Vec::new();
        for dir in &opts.certs_dirs {
            let d = dir.join(&r.registry);
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    let p = e.path();
                    if p.extension().is_some_and(|x| x == "crt") {
                        let pem = std::fs::read(&p).map_err(Error::read(&p))?;
                        let c = reqwest::Certificate::from_pem(&pem)
                            .map_err(|e| Error::invalid("CA certificate", p.display().to_string(), e.to_string()))?;
                        certs.push(c);
                    }
                }
            }
        }
        if may_be_plain {
            // A loopback or insecure registry is never vouched for by a public
            // CA: trust only its certs.d, and skip loading the system roots
            // (most of a small push's CPU time).
            builder = builder.tls_certs_only(certs);
        } else if !certs.is_empty() {
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| Error::invalid("registry client", r.registry.clone(), e.to_string()))?;
        let creds = match &opts.credentials {
            Some(c) if opts.credentials_for.iter().any(|h| h == &r.registry) => c.clone(),
            _ => auth::lookup(&r.registry, opts.docker_config.as_deref())?,
        };
        let mut base = base;
        if may_be_plain {
            let probe = http.get(base.clone()).timeout(Duration::from_secs(5)).send().await;
            match probe.as_ref().err().map(certificate_problem) {
                // A server that speaks TLS with a certificate kiln does not
                // trust is a problem to report, not a reason to drop to HTTP.
                Some(Some(problem)) => {
                    return Err(Error::Registry {
                        registry: r.registry.clone(),
                        status: 0,
                        code: "TLS".into(),
                        message: format!(
                            "the registry's TLS certificate is not trusted ({}); put its CA in certs.d/{}/ca.crt (KILN_CERTS_DIR, /etc/docker/certs.d)",
                            problem, r.registry
                        ),
                        retryable: false,
                    });
                }
                Some(None) => base.set_scheme("http").expect("http is a valid scheme"),
                None => {}
            }
        }
        Ok(Client {
            http,
            registry: r.registry.clone(),
            base,
            creds,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            opts: opts.clone(),
            stats: Stats::default(),
            retries_left: AtomicU32::new(opts.retry.budget),
        })
    }

    /// `BASE/v2/{path}`.
    pub fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("valid path")
    }

    /// Resolves a Location header against the request URL.
    pub fn resolve_location(&self, from: &Url, resp: &Response) -> Result<Url> {
        let loc = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.protocol_error("the registry answered without a Location header"))?;
        from.join(loc)
            .map_err(|e| self.protocol_error(&format!("bad Location `{loc}`: {e}")))
    }

    pub fn protocol_error(&self, msg: &str) -> Error {
        Error::Registry {
            registry: self.registry.clone(),
            status: 0,
            code: String::new(),
            message: msg.into(),
            retryable: false,
        }
    }

    fn log(&self, method: &Method, url: &Url, status: Option<StatusCode>, note: &str) {
        if self.opts.verbose {
            // Never the query (upload state) and never a header.
            let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
            let line = match status {
                Some(s) => format!("registry: {method} {shown} -> {}{note}", s.as_u16()),
                None => format!("registry: {method} {shown} -> {note}"),
            };
            crate::progress::echo(None, &line);
        }
    }

    fn auth_header(&self, scopes: &[String]) -> Option<String> {
        let challenge = self.challenge.lock().expect("challenge").clone()?;
        match challenge.scheme.as_str() {
            "basic" => match &self.creds {
                Credentials::Basic { username, password } => Some(auth::basic_header(username, password)),
                _ => None,
            },
            "bearer" => {
                let tokens = self.tokens.lock().expect("tokens");
                let (t, exp) = tokens.get(&scopes.join(" "))?;
                (Instant::now() < *exp).then(|| format!("Bearer {}", t.expose()))
            }
            _ => None,
        }
    }

    /// Fetches a bearer token for `scopes` from the challenge's realm.
    async fn fetch_token(&self, challenge: &Challenge, scopes: &[String]) -> Result<()> {
        let realm = challenge
            .params
            .get("realm")
            .ok_or_else(|| self.protocol_error("bearer challenge without realm"))?;
        let realm_url = Url::parse(realm).map_err(|e| self.protocol_error(&format!("bad realm `{realm}`: {e}")))?;
        if realm_url.scheme() != "https" && self.base.scheme() == "https" {
            return Err(self.protocol_error(&format!(
                "the registry speaks HTTPS but names a plain-HTTP token realm `{realm}`; kiln will not send credentials there"
            )));
        }
        let service = challenge.params.get("service").cloned().unwrap_or_default();
        #[derive(Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let attempt = |use_post: bool| {
            let mut req = if use_post {
                let mut form: Vec<(String, String)> =
                    vec![("service".into(), service.clone()), ("client_id".into(), "kiln".into())];
                match &self.creds {
                    Credentials::IdentityToken(t) => {
                        form.push(("grant_type".into(), "refresh_token".into()));
                        form.push(("refresh_token".into(), t.expose().to_string()));
                    }
                    Credentials::Basic { username, password } => {
                        form.push(("grant_type".into(), "password".into()));
                        form.push(("username".into(), username.clone()));
                        form.push(("password".into(), password.expose().to_string()));
                    }
                    Credentials::Anonymous => {}
                }
                form.push(("scope".into(), scopes.join(" ")));
                let body = form
                    .iter()
                    .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
                    .collect::<Vec<_>>()
                    .join("&");
                self.http
                    .post(realm_url.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            } else {
                let mut u = realm_url.clone();
                {
                    let mut q = u.query_pairs_mut();
                    if !service.is_empty() {
                        q.append_pair("service", &service);
                    }
                    for s in scopes {
                        q.append_pair("scope", s);
                    }
                }
                self.http.get(u)
            };
            if let (false, Credentials::Basic { username, password }) = (use_post, &self.creds) {
                req = req.header(AUTHORIZATION, auth::basic_header(username, password));
            }
            req
        };
        let use_post_first = matches!(self.creds, Credentials::IdentityToken(_));
        let mut resp = self.send_raw(|| attempt(use_post_first)).await?;
        if !use_post_first
            && matches!(resp.status().as_u16(), 404 | 405)
            && !matches!(self.creds, Credentials::Anonymous)
        {
            // Some token servers only speak the OAuth2 POST form.
            resp = self.send_raw(|| attempt(true)).await?;
        }
        let status = resp.status();
        if !status.is_success() {
            return Err(Error::Registry {
                registry: self.registry.clone(),
                status: status.as_u16(),
                code: "UNAUTHORIZED".into(),
                message: format!(
                    "the token server refused {} ({}); check the credentials (docker login {}, or --username/--password-stdin)",
                    scopes.join(" "),
                    status,
                    self.registry
                ),
                retryable: false,
            });
        }
        let body = self
            .read_capped(resp, MAX_TOKEN_REPLY, "the token server's reply")
            .await?;
        let reply: TokenReply =
            serde_json::from_slice(&body).map_err(|_| self.protocol_error("the token server's reply is not JSON"))?;
        let token = reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.protocol_error("the token server's reply has no token"))?;
        let ttl = reply.expires_in.unwrap_or(60).clamp(10, MAX_TOKEN_TTL);
        // Renew a little early so a token does not expire mid-request.
        let exp = Instant::now() + Duration::from_secs(ttl - ttl / 10);
        self.tokens
            .lock()
            .expect("tokens")
            .insert(scopes.join(" "), (Secret::new(token), exp));
        Ok(())
    }

    /// Sends one request with retries on transport errors and retryable statuses; no auth.
    async fn send_raw(&self, build: impl Fn() -> RequestBuilder) -> Result<Response> {
        self.send_raw_n(build, None, self.opts.retry.attempts).await
    }

    /// Sends with retries; `auth` is attached only when the request goes to
    /// the registry's own scheme, host and port (never to a host an upload
    /// Location or a redirect names).
    async fn send_raw_n(
        &self,
        build: impl Fn() -> RequestBuilder,
        auth: Option<&str>,
        attempts: u32,
    ) -> Result<Response> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = build().build().map_err(|e| self.protocol_error(&e.to_string()))?;
            if let Some(h) = auth
                && req.url().origin() == self.base.origin()
            {
                let v = reqwest::header::HeaderValue::from_str(h)
                    .map_err(|_| self.protocol_error("the credentials are not a valid header value"))?;
                req.headers_mut().insert(AUTHORIZATION, v);
            }
            let (m, u) = (req.method().clone(), req.url().clone());
            self.stats.count(&m);
            match self.http.execute(req).await {
                Ok(resp) if retryable(resp.status()) && attempt < attempts && self.take_retry() => {
                    self.log(&m, &u, Some(resp.status()), " (retrying)");
                    tokio::time::sleep(self.delay(attempt, resp.headers())).await;
                }
                Ok(resp) => {
                    self.log(&m, &u, Some(resp.status()), "");
                    return Ok(resp);
                }
                Err(e) if attempt < attempts && self.take_retry() => {
                    self.log(&m, &u, None, &format!("{} (retrying)", transport_kind(&e)));
                    tokio::time::sleep(self.delay(attempt, &HeaderMap::new())).await;
                }
                Err(e) => return Err(self.transport_error(&e)),
            }
        }
    }

    /// Takes one retry from the budget; false when it is spent.
    fn take_retry(&self) -> bool {
        self.retries_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Runs a multi-request operation, retrying it whole on a retryable
    /// error under the same policy and budget as single requests. The
    /// operation's own requests are sent with [`Self::send_once`].
    pub async fn retrying<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match op().await {
                Err(e) if is_retryable(&e) && attempt < self.opts.retry.attempts && self.take_retry() => {
                    tokio::time::sleep(self.delay(attempt, &HeaderMap::new())).await;
                }
                r => return r,
            }
        }
    }

    /// Reads a response body, failing as soon as it passes `max` bytes
    /// (never buffering an endless or huge body first).
    pub async fn read_capped(&self, resp: Response, max: u64, what: &str) -> Result<Bytes> {
        use futures_util::StreamExt;
        if resp.content_length().is_some_and(|n| n > max) {
            return Err(self.protocol_error(&format!("{what} is larger than {max} bytes")));
        }
        let mut out = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.transport_error(&e))?;
            if out.len() as u64 + chunk.len() as u64 > max {
                return Err(self.protocol_error(&format!("{what} is larger than {max} bytes")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    pub fn transport_error(&self, e: &reqwest::Error) -> Error {
        let hint = if e.is_connect() {
            "; is the registry running and the address right? (plain HTTP is used only for loopback and --insecure-registry hosts)"
        } else {
            ""
        };
        Error::Registry {
            registry: self.registry.clone(),
            status: 0,
            code: "TRANSPORT".into(),
            message: format!("{}{hint}", transport_kind(e)),
            retryable: true,
        }
    }

    /// Backoff with jitter; Retry-After (seconds) wins when the registry sends it.
    pub fn delay(&self, attempt: u32, headers: &HeaderMap) -> Duration {
        if let Some(s) = headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return Duration::from_secs(s.min(60));
        }
        let base = self.opts.retry.base.as_millis() as u64 * (1u64 << (attempt - 1).min(6));
        let jitter = rand::random_range(0..=base / 2 + 1);
        Duration::from_millis(base + jitter)
    }

    /// Sends a request for `scopes`, authenticating on a 401 challenge (again
    /// on any new challenge), retrying what is retryable. `build` is called
    /// again for each attempt, so bodies are re-created.
    pub async fn send(&self, scopes: &[String], build: impl Fn() -> RequestBuilder) -> Result<Response> {
        self.send_n(scopes, build, self.opts.retry.attempts).await
    }

    /// Like [`Self::send`] but a dropped connection or 5xx is returned at
    /// once (the chunked upload resumes from the registry's Range instead).
    pub async fn send_once(&self, scopes: &[String], build: impl Fn() -> RequestBuilder) -> Result<Response> {
        self.send_n(scopes, build, 1).await
    }

    async fn send_n(&self, scopes: &[String], build: impl Fn() -> RequestBuilder, attempts: u32) -> Result<Response> {
        let mut auth_attempts = 0;
        loop {
            let header = self.auth_header(scopes);
            let resp = self.send_raw_n(&build, header.as_deref(), attempts).await?;
            // Only the registry itself may challenge: a 401 from another
            // host (an upload Location elsewhere) never makes kiln fetch a
            // token with the registry's credentials.
            if resp.status() != StatusCode::UNAUTHORIZED
                || auth_attempts >= 2
                || resp.url().origin() != self.base.origin()
            {
                return Ok(resp);
            }
            auth_attempts += 1;
            let challenges = resp
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(auth::parse_challenges)
                .collect::<Vec<_>>();
            let Some(ch) = challenges
                .iter()
                .find(|c| c.scheme == "bearer")
                .or_else(|| challenges.first())
                .cloned()
            else {
                return Ok(resp);
            };
            match ch.scheme.as_str() {
                "bearer" => {
                    *self.challenge.lock().expect("challenge") = Some(ch.clone());
                    self.tokens.lock().expect("tokens").remove(&scopes.join(" "));
                    self.fetch_token(&ch, scopes).await?;
                }
                "basic" => {
                    if matches!(self.creds, Credentials::Anonymous) || auth_attempts > 1 {
                        return Err(self.unauthorized());
                    }
                    *self.challenge.lock().expect("challenge") = Some(ch);
                }
                _ => return Ok(resp),
            }
        }
    }

    fn unauthorized(&self) -> Error {
        Error::Registry {
            registry: self.registry.clone(),
            status: 401,
            code: "UNAUTHORIZED".into(),
            message: format!(
                "authentication required or refused; log in (docker login {}) or pass --username with --password-stdin",
                self.registry
            ),
            retryable: false,
        }
    }

    /// Turns an unexpected response into a typed error with the registry's own code and message.
    pub async fn error_from(&self, what: &str, resp: Response) -> Error {
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED {
            return self.unauthorized();
        }
        let body = self
            .read_capped(resp, MAX_ERROR_BODY, "the error body")
            .await
            .unwrap_or_default();
        let parsed: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        let (code, message) = parsed
            .and_then(|b| b.errors.into_iter().next())
            .map(|e| (e.code, e.message))
            .unwrap_or_else(|| {
                (
                    String::new(),
                    String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string(),
                )
            });
        Error::Registry {
            registry: self.registry.clone(),
            status: status.as_u16(),
            code,
            message: format!("{what}: {message}"),
            retryable: retryable(status),
        }
    }

    /// GET a URL following redirects by hand: Authorization is sent only to
    /// the registry's own host, never to a redirect target elsewhere.
    /// `attempts` is the tries per request (1 inside an operation the caller
    /// retries whole).
    pub async fn get_following(
        &self,
        scopes: &[String],
        url: Url,
        accept: Option<&str>,
        attempts: u32,
    ) -> Result<Response> {
        let accept = accept.map(str::to_string);
        let mk = |u: Url| {
            let a = accept.clone();
            move || {
                let r = self.http.get(u.clone());
                match &a {
                    Some(a) => r.header(reqwest::header::ACCEPT, a),
                    None => r,
                }
            }
        };
        let mut resp = self.send_n(scopes, mk(url.clone()), attempts).await?;
        let mut hops = 0;
        let mut current = url;
        while resp.status().is_redirection() && hops < 5 {
            hops += 1;
            let next = self.resolve_location(&current, &resp)?;
            resp = if next.origin() == self.base.origin() {
                self.send_n(scopes, mk(next.clone()), attempts).await?
            } else {
                self.send_raw_n(mk(next.clone()), None, attempts).await?
            };
            current = next;
        }
        Ok(resp)
    }

    /// The raw HTTP client (for bodies the caller builds).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Bytes-body helper.
    pub fn bytes_body(b: &Bytes) -> reqwest::Body {
        reqwest::Body::from(b.clone())
    }
}

/// The certificate error inside a failed request, if that is what failed
/// (rustls reports it as `invalid peer certificate: …` somewhere down the
/// source chain; the wrapping differs between hyper versions, so the chain
/// is searched by type and by text).
fn certificate_problem(e: &reqwest::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(
            t @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType),
        ) = err.downcast_ref::<rustls::Error>()
        {
            return Some(t.to_string());
        }
        let text = err.to_string();
        if text.contains("certificate") {
            return Some(text);
        }
        cur = err.source();
    }
    None
}

fn transport_kind(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_body() || e.is_decode() {
        "connection dropped while transferring".into()
    } else {
        "request failed".into()
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether an error is worth another try.
pub fn is_retryable(e: &Error) -> bool {
    match e {
        Error::Registry { retryable, .. } => *retryable,
        Error::Io { .. } => true,
        _ => false,
    }
}

/// Scope strings for a repository.
pub fn scope(repo: &str, actions: &str) -> String {
    format!("repository:{repo}:{actions}")
}
