//! Signatures others can check with cosign's tools: key-based cosign
//! signatures (ECDSA P-256 over the "simple signing" payload), stored the
//! way cosign and containers/image store them (`sha256-HEX.sig` tags).
//! kiln signs the image or index, every platform's image (skopeo checks
//! the one it pulls) and the documents attached to them (SBOMs,
//! provenance). Signatures are deterministic (RFC 6979, no timestamp in
//! the payload): signing twice adds nothing.
//!
//! Keyless signing (Fulcio certificates, Rekor transparency log) needs
//! those services; kiln does key-based signing only.

pub mod key;
pub mod payload;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use crate::context::Context;
use crate::digest::Digest;
use crate::reference::RegistryRef;
use crate::store::registry;
use crate::{Error, Result};
pub use key::{PrivateKey, PublicKey};

/// One manifest kiln signs or checks: its digest and what it is.
#[derive(Debug, Clone, Serialize)]
pub struct Subject {
    pub digest: Digest,
    /// `image`, `index`, `linux/arm64/v8`, or the artifactType of a document.
    pub what: String,
}

/// The manifests that make up `r` at its registry (never a mirror):
/// itself, each child of an index, and (with `attached`) each document
/// attached to them that kiln reads as one — fetched and checked to be
/// about that manifest, since a referrers list is written by whoever can
/// push and signing what it names unread would sign anything.
pub fn subjects(ctx: &Context, r: &RegistryRef, attached: bool) -> Result<Vec<Subject>> {
    let registry::pull::Manifests { top, children } = registry::pull::manifest_digests(ctx, r)?;
    let mut out = vec![Subject {
        digest: top.clone(),
        what: if children.is_empty() {
            "image".into()
        } else {
            "index".into()
        },
    }];
    for (d, p) in children {
        out.push(Subject {
            digest: d,
            what: p.map(|p| p.to_string()).unwrap_or_else(|| "child".into()),
        });
    }
    if attached {
        let images: Vec<Digest> = out.iter().map(|s| s.digest.clone()).collect();
        let at = crate::reference::ImageRef::Registry(r.clone());
        for d in images {
            for a in crate::store::referrers(ctx, &at, &d)? {
                out.push(Subject {
                    digest: a.digest().clone(),
                    what: a.artifact_type().to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// The subjects of what kiln itself just pushed: the image or index, its
/// children, and the documents it attached (kiln's own values: nothing is
/// re-resolved from the registry, so a concurrent push or a stale mirror
/// cannot change what gets signed).
pub fn pushed_subjects(what: &crate::image::AnyImage, attached: &[crate::attest::Artifact]) -> Vec<Subject> {
    let mut out = vec![Subject {
        digest: what.digest().clone(),
        what: match what {
            crate::image::AnyImage::Image(_) => "image".into(),
            crate::image::AnyImage::Index(_) => "index".into(),
        },
    }];
    if let crate::image::AnyImage::Index(_) = what {
        out.extend(what.images().iter().map(|i| Subject {
            digest: i.digest().clone(),
            what: i.platform().to_string(),
        }));
    }
    out.extend(attached.iter().map(|a| Subject {
        digest: a.digest().clone(),
        what: a.artifact_type().to_string(),
    }));
    out
}

/// The identity a signature vouches for: the reference as pushed, normalized
/// (`host/repo:tag`, or `host/repo@digest`), as skopeo's default
/// `matchRepoDigestOrExact` expects.
pub fn identity_of(r: &RegistryRef) -> String {
    r.to_string()
}

/// What signing did for one subject.
#[derive(Debug, Clone, Serialize)]
pub struct Signed {
    #[serde(flatten)]
    pub subject: Subject,
    /// The signature tag it is stored under.
    pub tag: String,
}

/// Signs `subjects` with `key`, vouching for `identity`, and stores the
/// signatures in `r`'s repository. Returns what was signed and how many
/// signatures were new.
pub fn sign(
    ctx: &Context,
    r: &RegistryRef,
    key: &PrivateKey,
    identity: &str,
    subjects: Vec<Subject>,
) -> Result<(Vec<Signed>, usize)> {
    let per: Vec<_> = subjects
        .iter()
        .map(|s| {
            let p = payload::payload(identity, &s.digest);
            let signature = STANDARD.encode(key.sign(&p));
            (
                s.digest.clone(),
                vec![registry::signatures::NewSignature { payload: p, signature }],
            )
        })
        .collect();
    let added = registry::push_signatures(ctx, r, &per)?;
    Ok((
        subjects
            .into_iter()
            .map(|s| Signed {
                tag: registry::signatures::tag(&s.digest),
                subject: s,
            })
            .collect(),
        added,
    ))
}

/// Which identities a verification accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityRule {
    /// skopeo's default: by tag, the exact `host/repo:tag`; by digest, the repository.
    RepoDigestOrExact,
    /// Any reference in the same repository (cosign signs `host/repo` alone).
    Repository,
}

/// Whether a claimed reference passes `rule` for the image `r`.
pub fn identity_matches(rule: IdentityRule, r: &RegistryRef, claimed: &str) -> bool {
    let Ok(c) = RegistryRef::parse(claimed) else {
        return false;
    };
    let same_repo = c.registry == r.registry && c.repository == r.repository;
    // A bare name (no tag, no digest) is no identity for the exact rule
    // (parsing would default its tag to `latest`).
    let explicit = claimed.contains('@') || claimed.rsplit('/').next().is_some_and(|last| last.contains(':'));
    match rule {
        IdentityRule::Repository => same_repo,
        IdentityRule::RepoDigestOrExact if r.digest.is_some() => same_repo && explicit,
        IdentityRule::RepoDigestOrExact => same_repo && explicit && c.digest.is_none() && c.tag == r.tag,
    }
}

/// The check of one subject.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    #[serde(flatten)]
    pub subject: Subject,
    /// Signatures that verify with the key and vouch for this digest and an accepted identity.
    pub valid: usize,
    /// Why each other signature was not accepted.
    pub rejected: Vec<String>,
}

/// Checks the signatures of every subject of `r` against `key`.
pub fn verify(
    ctx: &Context,
    r: &RegistryRef,
    key: &PublicKey,
    rule: IdentityRule,
    attached: bool,
) -> Result<Vec<Checked>> {
    let mut out = Vec::new();
    for s in subjects(ctx, r, attached)? {
        let mut valid = 0;
        let mut rejected = Vec::new();
        for stored in registry::signatures::read(ctx, r, &s.digest)? {
            match check(&stored, &s.digest, key, rule, r) {
                Ok(()) => valid += 1,
                Err(why) => rejected.push(why),
            }
        }
        out.push(Checked {
            subject: s,
            valid,
            rejected,
        });
    }
    Ok(out)
}

fn check(
    stored: &registry::signatures::Stored,
    digest: &Digest,
    key: &PublicKey,
    rule: IdentityRule,
    r: &RegistryRef,
) -> std::result::Result<(), String> {
    let b64 = stored
        .signature
        .as_deref()
        .ok_or("no dev.cosignproject.cosign/signature annotation")?;
    let der = STANDARD
        .decode(b64.trim().as_bytes())
        .map_err(|_| "the signature annotation is not base64".to_string())?;
    if !key.verify(&stored.payload, &der) {
        return Err("not made by this key (or the payload was changed)".into());
    }
    let claim = payload::parse(&stored.payload).map_err(|e| e.to_string())?;
    if &claim.digest != digest {
        return Err(format!("signs {}, not this manifest", claim.digest));
    }
    if !identity_matches(rule, r, &claim.reference) {
        return Err(format!(
            "vouches for {}, not {r}{}",
            claim.reference,
            if rule == IdentityRule::RepoDigestOrExact {
                " (a repository-only identity, as cosign signs by default, needs --match-repository)"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

/// Makes a key pair: PREFIX.key (encrypted with `password`, mode 0600)
/// and PREFIX.pub. Existing files are never replaced.
pub fn generate_key_files(
    prefix: &std::path::Path,
    password: &[u8],
) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let key_path = prefix.with_extension("key");
    let pub_path = prefix.with_extension("pub");
    for p in [&key_path, &pub_path] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(Error::invalid(
                "output",
                p.display().to_string(),
                "exists; kiln does not overwrite keys (remove it or pick another --output-prefix)",
            ));
        }
    }
    let key = PrivateKey::generate();
    let pem = key.encrypt(password)?;
    write_new(&key_path, pem.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&pub_path, key.public().to_pem().as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    Ok((key_path, pub_path))
}

/// Creates `path` with `mode` (never replacing a file), writes, syncs.
fn write_new(path: &std::path::Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(Error::write(path))?;
    f.write_all(bytes).map_err(Error::write(path))?;
    f.sync_all().map_err(Error::write(path))?;
    Ok(())
}

/// Reads a private key file with `password` (bounded read).
pub fn load_private(path: &std::path::Path, password: &[u8]) -> Result<PrivateKey> {
    let text = read_key_file(path)?;
    PrivateKey::decrypt(&text, password, &path.display().to_string())
}

/// Reads a public key file (bounded read).
pub fn load_public(path: &std::path::Path) -> Result<PublicKey> {
    let text = read_key_file(path)?;
    PublicKey::from_pem(&text, &path.display().to_string())
}

fn read_key_file(path: &std::path::Path) -> Result<String> {
    let bytes = crate::image::read_regular(path, key::MAX_KEY_FILE)?;
    if bytes.len() as u64 > key::MAX_KEY_FILE {
        return Err(Error::invalid(
            "key",
            path.display().to_string(),
            "larger than a key file can be",
        ));
    }
    String::from_utf8(bytes).map_err(|_| Error::invalid("key", path.display().to_string(), "not a text (PEM) file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_rules_follow_containers_image() {
        let by_tag = RegistryRef::parse("127.0.0.1:5000/a/b:1").unwrap();
        let rule = IdentityRule::RepoDigestOrExact;
        assert!(identity_matches(rule, &by_tag, "127.0.0.1:5000/a/b:1"));
        assert!(!identity_matches(rule, &by_tag, "127.0.0.1:5000/a/b:2"));
        assert!(!identity_matches(rule, &by_tag, "127.0.0.1:5000/a/b"));
        assert!(!identity_matches(rule, &by_tag, "127.0.0.1:5000/a/c:1"));
        assert!(identity_matches(
            IdentityRule::Repository,
            &by_tag,
            "127.0.0.1:5000/a/b"
        ));
        let by_digest = by_tag.by_digest(&Digest::of(b"x"));
        assert!(identity_matches(rule, &by_digest, "127.0.0.1:5000/a/b:other"));
        assert!(!identity_matches(rule, &by_digest, "127.0.0.1:5000/a/b"));
        assert!(!identity_matches(rule, &by_tag, "not a reference at all"));
    }
}
