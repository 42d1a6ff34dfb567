//! Item 8: nothing secret baked into the image. The config's Env, and every
//! file of every layer (a file deleted by a later layer is still in the
//! pushed bytes): private keys (PEM blocks with a body, files named like
//! id_rsa or *.key), `.env` files, cloud access-key IDs, `.git` directories,
//! credential files of common tools. Values are never printed whole.

use std::io::Read;

use memchr::memmem;

use crate::Result;
use crate::image::Image;
use crate::layer::read::{Kind, Limits, layer_entries, normalize};

/// Files larger than this are judged by name only.
pub const MAX_CONTENT: u64 = 16 << 20;

/// One thing that looks like a credential.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Secret {
    /// `config Env` or `layer N (sha256:…)`.
    pub place: String,
    /// Variable name or absolute path.
    pub what: String,
    pub why: String,
}

/// Env names that hold credentials (matched on the upper-cased name).
const SECRET_NAMES: &[&str] = &[
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "TOKEN",
    "PRIVATE_KEY",
    "API_KEY",
    "APIKEY",
    "ACCESS_KEY",
    "CREDENTIAL",
];

/// Files that hold credentials by their name alone.
const SECRET_FILES: &[&str] = &[
    "id_rsa",
    "id_dsa",
    "id_ecdsa",
    "id_ed25519",
    ".netrc",
    ".pgpass",
    ".npmrc",
    ".pypirc",
    ".git-credentials",
];

/// Most findings listed (the rest are counted).
pub const MAX_FINDINGS: usize = 50;

/// Why a named value looks secret, if it does.
fn named_value(name: &str, v: &str) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    let upper = name.to_ascii_uppercase();
    if let Some(n) = SECRET_NAMES.iter().find(|n| upper.contains(*n)) {
        return Some(format!("its name says {} and it has a value ({})", n, redact(v)));
    }
    content_secret(v.as_bytes()).or_else(|| url_password(v).then(|| "a URL with a password".to_string()))
}

/// Finds what looks secret in the image's config and layers: at most
/// [`MAX_FINDINGS`], and how many there were in all.
pub fn find(image: &Image) -> Result<(Vec<Secret>, usize)> {
    let mut out = Vec::new();
    let mut total = 0usize;
    let mut push = |out: &mut Vec<Secret>, s: Secret| {
        total += 1;
        if out.len() < MAX_FINDINGS {
            out.push(s);
        }
    };
    let rc = image.config().config.clone().unwrap_or_default();
    for kv in &rc.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if let Some(why) = named_value(k, v) {
            push(
                &mut out,
                Secret {
                    place: "config Env".into(),
                    what: k.to_string(),
                    why,
                },
            );
        }
    }
    for (k, v) in &rc.labels {
        if let Some(why) = named_value(k, v) {
            push(
                &mut out,
                Secret {
                    place: "config Labels".into(),
                    what: k.clone(),
                    why,
                },
            );
        }
    }
    // Arguments: `--password=…`, `--token …`, keys and URLs with passwords.
    let args: Vec<(&str, &String)> = rc
        .entrypoint
        .iter()
        .flatten()
        .map(|a| ("config Entrypoint", a))
        .chain(rc.cmd.iter().flatten().map(|a| ("config Cmd", a)))
        .collect();
    for (i, (place, a)) in args.iter().enumerate() {
        let why = match a.trim_start_matches('-').split_once('=') {
            Some((k, v)) if a.starts_with('-') => named_value(k, v),
            _ => {
                let prev_flag = i
                    .checked_sub(1)
                    .map(|j| args[j].1.as_str())
                    .filter(|p| p.starts_with('-'));
                match prev_flag {
                    Some(f) => named_value(f.trim_start_matches('-'), a),
                    None => named_value("", a),
                }
            }
        };
        if let Some(why) = why {
            push(
                &mut out,
                Secret {
                    place: place.to_string(),
                    what: format!("argument {}", i + 1),
                    why,
                },
            );
        }
    }
    // Build steps recorded in the history (a token passed as a build argument).
    for (i, h) in image.config().history.iter().enumerate() {
        let Some(step) = &h.created_by else { continue };
        if let Some(why) = content_secret(step.as_bytes()).or_else(|| {
            step.split_whitespace()
                .any(url_password)
                .then(|| "a URL with a password".to_string())
        }) {
            push(
                &mut out,
                Secret {
                    place: "config history".into(),
                    what: format!("step {}", i + 1),
                    why,
                },
            );
        }
    }
    let limits = Limits::default();
    let mut gits = std::collections::BTreeSet::new();
    for (i, layer) in image.layers().iter().enumerate() {
        let place = format!("layer {} ({})", i + 1, short(&layer.descriptor.digest.to_string()));
        layer_entries(layer, &limits, &place.clone(), |meta, r| {
            let path = format!("/{}", normalize(&meta.path));
            let name = path.rsplit('/').next().unwrap_or("");
            // A `.git` directory anywhere (once per repository).
            if let Some(at) = path
                .find("/.git/")
                .or_else(|| path.ends_with("/.git").then(|| path.len() - 5))
            {
                let repo = path[..at + 5].to_string();
                if gits.insert(repo.clone()) {
                    push(
                        &mut out,
                        Secret {
                            place: place.clone(),
                            what: repo,
                            why: "a .git directory (history, remotes and maybe credentials)".into(),
                        },
                    );
                }
                return Ok(());
            }
            if meta.kind != Kind::File || name.starts_with(".wh.") {
                return Ok(());
            }
            let by_name = if SECRET_FILES.contains(&name) {
                Some("a credential file by its name".to_string())
            } else if name.ends_with(".key") {
                Some("a key file (*.key)".to_string())
            } else if name == ".env" || (name.starts_with(".env.") && !is_env_template(name)) {
                Some("a dotenv file (configuration with secrets belongs outside the image)".to_string())
            } else if path.ends_with("/.aws/credentials") || path.ends_with("/.docker/config.json") {
                Some("a credential file of a CLI".to_string())
            } else {
                None
            };
            let by_content = if meta.size <= MAX_CONTENT && meta.size > 0 {
                let mut buf = Vec::with_capacity(meta.size as usize);
                r.take(MAX_CONTENT)
                    .read_to_end(&mut buf)
                    .map_err(|e| crate::Error::format(&place, e.to_string()))?;
                content_secret(&buf)
            } else {
                None
            };
            if let Some(why) = by_content.or(by_name) {
                push(
                    &mut out,
                    Secret {
                        place: place.clone(),
                        what: path.clone(),
                        why,
                    },
                );
            }
            Ok(())
        })?;
    }
    Ok((out, total))
}

fn is_env_template(name: &str) -> bool {
    ["example", "sample", "template", "dist"]
        .iter()
        .any(|s| name.ends_with(&format!(".{s}")))
}

fn short(d: &str) -> String {
    d.chars().take(19).collect()
}

/// No characters of the value: even a few give most of a short secret away.
fn redact(v: &str) -> String {
    format!("{} characters", v.chars().count())
}

/// A private key PEM block with a body, or an AWS access-key ID.
pub fn content_secret(b: &[u8]) -> Option<String> {
    let mut from = 0;
    while let Some(i) = memmem::find(&b[from..], b"PRIVATE KEY-----") {
        let at = from + i;
        // The header is short: look back a bounded distance (no quadratic scan).
        let floor = at.saturating_sub(64);
        let line_start = b[floor..at]
            .iter()
            .rposition(|&c| c == b'\n')
            .map(|p| floor + p + 1)
            .unwrap_or(floor);
        let head = &b[line_start..at];
        // A real block: `-----BEGIN [KIND ]PRIVATE KEY-----`, then base64 lines.
        if head.starts_with(b"-----BEGIN ") && head.len() < 40 {
            let body_start = at + "PRIVATE KEY-----".len();
            let body: Vec<u8> = b[body_start..]
                .iter()
                .take(400)
                .copied()
                .take_while(|c| c.is_ascii_alphanumeric() || b"+/=\r\n:-, ".contains(c))
                .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
                .collect();
            if body.len() >= 64 {
                return Some("a PEM private key".into());
            }
        }
        from = at + 1;
    }
    for prefix in [b"AKIA", b"ASIA"] {
        let mut from = 0;
        while let Some(i) = memmem::find(&b[from..], prefix) {
            let at = from + i;
            from = at + 1;
            let Some(id) = b.get(at..at + 20) else { break };
            let before_ok = at == 0 || !b[at - 1].is_ascii_alphanumeric();
            let after_ok = b.get(at + 20).is_none_or(|c| !c.is_ascii_alphanumeric());
            if before_ok && after_ok && id[4..].iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
                return Some(format!("an AWS access key ID ({}…)", String::from_utf8_lossy(&id[..8])));
            }
        }
    }
    None
}

/// `scheme://user:password@host`.
fn url_password(v: &str) -> bool {
    let Some((_, rest)) = v.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.split_once(':').is_some_and(|(_, p)| !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_blocks_need_a_body() {
        let key = b"x\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oDd4k0TyPCvXoAoGCCqGSM49\nAwEHoUQDQgAE\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(content_secret(key).as_deref(), Some("a PEM private key"));
        // A parser's string constants are not a key.
        assert_eq!(
            content_secret(b"\0-----BEGIN PRIVATE KEY-----\0-----END PRIVATE KEY-----\0"),
            None
        );
        assert_eq!(content_secret(b"-----BEGIN CERTIFICATE-----\nMIIB\n"), None);
    }

    #[test]
    fn aws_key_ids_need_boundaries() {
        assert!(content_secret(b"id=AKIAZ7Q3EXAMPLE2QXYW\n").is_some());
        assert!(content_secret(b"xAKIAZ7Q3EXAMPLE2QXYW").is_none());
        assert!(content_secret(b"AKIAZ7Q3EXAMPLE2QXYWZ").is_none());
        assert!(content_secret(b"AKIA short").is_none());
    }

    #[test]
    fn urls_with_passwords() {
        assert!(url_password("postgres://app:s3cret@db/app"));
        assert!(!url_password("postgres://app@db/app"));
        assert!(!url_password("https://example.com/a:b@c"));
        assert!(!url_password("plain"));
    }

    proptest::proptest! {
        #[test]
        fn content_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = content_secret(&b);
        }
    }
}
