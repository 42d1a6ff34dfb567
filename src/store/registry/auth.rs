//! Registry authentication: the `WWW-Authenticate` challenge (a real
//! quoted-string parser: scopes contain commas), credentials from the places
//! people already keep them (docker config.json `auths`, `credHelpers`,
//! `credsStore` through `docker-credential-*` helpers, or given on the
//! command line), and bearer tokens (GET form, OAuth2 POST for identity
//! tokens). Secrets live in [`Secret`], which never prints.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use crate::{Error, Result};

/// A string that never shows up in Debug or Display output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for building a request header and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Credentials for one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    Anonymous,
    Basic {
        username: String,
        password: Secret,
    },
    /// An identity (refresh) token, exchanged with OAuth2 POST.
    IdentityToken(Secret),
}

/// One challenge from `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// Lowercased scheme: `bearer` or `basic`.
    pub scheme: String,
    pub params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` value (RFC 7235: auth-params with tokens or
/// quoted strings, which may hold commas and escaped quotes).
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let b = header.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && (b[*i] == b' ' || b[*i] == b'\t' || b[*i] == b',') {
            *i += 1;
        }
    };
    let token = |i: &mut usize| -> String {
        let start = *i;
        while *i < b.len() && !b" \t,=\"".contains(&b[*i]) {
            *i += 1;
        }
        header[start..*i].to_string()
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            break;
        }
        let word = token(&mut i);
        if word.is_empty() {
            i += 1;
            continue;
        }
        // A word followed by '=' is a parameter of the current challenge.
        let mut j = i;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if j < b.len() && b[j] == b'=' && !out.is_empty() {
            i = j + 1;
            while i < b.len() && b[i] == b' ' {
                i += 1;
            }
            let value = if i < b.len() && b[i] == b'"' {
                i += 1;
                let mut v = String::new();
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' && i + 1 < b.len() {
                        i += 1;
                    }
                    let ch = header[i..].chars().next().expect("in bounds");
                    v.push(ch);
                    i += ch.len_utf8();
                }
                i += 1;
                v
            } else {
                token(&mut i)
            };
            out.last_mut()
                .expect("checked")
                .params
                .insert(word.to_ascii_lowercase(), value);
        } else {
            out.push(Challenge {
                scheme: word.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
    }
    out
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperReply {
    username: String,
    secret: String,
}

/// Keys a registry may be filed under in config.json.
fn config_keys(registry: &str) -> Vec<String> {
    let mut keys = vec![
        registry.to_string(),
        format!("https://{registry}"),
        format!("http://{registry}"),
    ];
    if registry == "docker.io" {
        keys.insert(0, "https://index.docker.io/v1/".into());
        keys.push("index.docker.io".into());
        keys.push("registry-1.docker.io".into());
    }
    keys
}

/// Looks up credentials for `registry` the way docker does: `credHelpers`
/// for the host, then `credsStore`, then `auths`, in `config` (the CLI
/// resolves `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`).
/// Anonymous when none.
pub fn lookup(registry: &str, config: Option<&std::path::Path>) -> Result<Credentials> {
    let Some(path) = config.map(std::path::Path::to_path_buf) else {
        return Ok(Credentials::Anonymous);
    };
    let cfg: DockerConfig = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::format(path.display().to_string(), format!("not a docker config file: {e}")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Credentials::Anonymous),
        Err(e) => return Err(Error::Read { path, source: e }),
    };
    let keys = config_keys(registry);
    if let Some(helper) = keys.iter().find_map(|k| cfg.cred_helpers.get(k)) {
        return run_helper(helper, registry, &path);
    }
    if let Some(store) = &cfg.creds_store {
        match run_helper(store, registry, &path) {
            Ok(Credentials::Anonymous) => {}
            other => return other,
        }
    }
    for k in &keys {
        if let Some(e) = cfg.auths.get(k) {
            if let Some(t) = &e.identitytoken
                && !t.is_empty()
            {
                return Ok(Credentials::IdentityToken(Secret::new(t.clone())));
            }
            if let Some(a) = &e.auth
                && !a.is_empty()
            {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .ok_or_else(|| {
                        Error::format(
                            path.display().to_string(),
                            format!("auths[\"{k}\"].auth is not base64 of USER:PASSWORD; run `docker login` again"),
                        )
                    })?;
                let (u, p) = decoded.split_once(':').ok_or_else(|| {
                    Error::format(path.display().to_string(), format!("auths[\"{k}\"].auth has no `:`"))
                })?;
                return Ok(Credentials::Basic {
                    username: u.into(),
                    password: Secret::new(p),
                });
            }
            if let (Some(u), Some(p)) = (&e.username, &e.password) {
                return Ok(Credentials::Basic {
                    username: u.clone(),
                    password: Secret::new(p.clone()),
                });
            }
        }
    }
    Ok(Credentials::Anonymous)
}

/// Runs `docker-credential-NAME get` with the server URL on stdin.
fn run_helper(name: &str, registry: &str, config: &std::path::Path) -> Result<Credentials> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{name}");
    let server = if registry == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    };
    let mut child = Command::new(&program)
        .arg("get")
        // The signing key's password is kiln's, not a helper's to see.
        .env_remove("COSIGN_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::invalid(
                "credential helper",
                program.clone(),
                format!("cannot run it ({e}); install it or remove it from {}", config.display()),
            )
        })?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(server.as_bytes())
        .map_err(|e| Error::Io {
            context: format!("talking to {program}"),
            source: e,
        })?;
    let out = child.wait_with_output().map_err(|e| Error::Io {
        context: format!("running {program}"),
        source: e,
    })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        if msg.contains("credentials not found") {
            return Ok(Credentials::Anonymous);
        }
        // The helper's message is its own; it never contains the secret it failed to find.
        return Err(Error::invalid(
            "credential helper",
            program,
            format!("failed: {}", msg.trim()),
        ));
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout).map_err(|_| {
        Error::invalid(
            "credential helper",
            program.clone(),
            "did not answer with {Username, Secret} JSON",
        )
    })?;
    Ok(if reply.username == "<token>" {
        Credentials::IdentityToken(Secret::new(reply.secret))
    } else {
        Credentials::Basic {
            username: reply.username,
            password: Secret::new(reply.secret),
        }
    })
}

/// `Authorization: Basic …` for a username and password.
pub fn basic_header(username: &str, password: &Secret) -> String {
    let raw = format!("{username}:{}", password.expose());
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_with_commas_in_scope() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push repository:c:pull",error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example/token");
        assert_eq!(c[0].params["scope"], "repository:a/b:pull,push repository:c:pull");
        assert_eq!(c[0].params["error"], "insufficient_scope");
    }

    #[test]
    fn parses_several_challenges_and_escapes() {
        let c = parse_challenges(r#"Basic realm="Registry \"Realm\"", Bearer realm="r", service=svc"#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].params["realm"], "Registry \"Realm\"");
        assert_eq!(c[1].params["service"], "svc");
        assert!(parse_challenges("").is_empty());
        assert_eq!(parse_challenges("Bearer").len(), 1);
    }

    #[test]
    fn secret_never_prints() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn basic_header_encodes() {
        assert_eq!(basic_header("a", &Secret::new("b:c")), "Basic YTpiOmM=");
    }
}
