//! Release history, kept in the registry next to the image so every
//! machine sees the same one. For a tag `T` of a repository, the tag
//! `kiln-history.T` (or `kiln-history.sha256-<32 hex of sha256(T)>` when
//! that would pass 128 characters) names an OCI artifact manifest
//! (artifactType `application/vnd.dev.kiln.release-history.v1+json`, the
//! empty descriptor as config and as its one layer) whose annotation
//! `dev.kiln.history.v1` holds
//! `{"tag": T, "moves": [{"from", "to", "mediaType", "at", "by", "action"}]}`:
//! every time kiln moved the tag (`push` or `rollback`), oldest first, the
//! last 1,000 kept (about 250 KB, inside any registry's manifest limit).
//! The history lives in the manifest itself so that recording a move
//! uploads no blob: `kiln rollback` puts two manifests (the tag's earlier
//! bytes exactly as stored, and the history) and nothing else.
//!
//! Registries have no compare-and-swap: kiln re-reads the tag right before
//! and right after it moves it, and reports a change it did not make.

use bytes::Bytes;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::client::{self, Client};
use super::push::{Session, push_bytes, put_manifest};
use super::referrers::get_optional;
use super::{ACCEPT_MANIFESTS, RegistryRef};
use crate::attest::empty_descriptor;
use crate::context::Context;
use crate::digest::Digest;
use crate::oci::{self, Manifest, canonical_json};
use crate::{Error, Result};

/// The artifactType of a release history.
pub const ARTIFACT_TYPE: &str = "application/vnd.dev.kiln.release-history.v1+json";
/// Moves kept per tag.
const MAX_MOVES: usize = 1000;
/// The annotation that holds the history document.
pub const ANNOTATION: &str = "dev.kiln.history.v1";

/// One move of a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Move {
    /// What the tag named before (None: it did not exist).
    pub from: Option<Digest>,
    pub to: Digest,
    /// The media type of `to` (a rollback puts it back with the same).
    pub media_type: String,
    /// When (RFC 3339, UTC, wall clock of the machine that moved it).
    pub at: String,
    /// `kiln VERSION`.
    pub by: String,
    /// `push` or `rollback`.
    pub action: String,
}

/// A tag's release history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub tag: String,
    pub moves: Vec<Move>,
}

/// The tag that holds the history of `tag`.
pub fn history_tag(tag: &str) -> String {
    let t = format!("kiln-history.{tag}");
    if t.len() <= 128 {
        t
    } else {
        format!("kiln-history.sha256-{}", &Digest::of(tag.as_bytes()).hex()[..32])
    }
}

/// What a tag names now: (digest, media type), None when it does not exist.
pub(super) async fn current(
    client: &Client,
    scopes: &[String],
    repo: &str,
    tag: &str,
) -> Result<Option<(Digest, String)>> {
    let resp = super::push::head_manifest(client, scopes, repo, tag).await?;
    match resp.status() {
        s if s.is_success() => {
            let digest = resp
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let mt = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.split(';').next().unwrap_or("").trim().to_string())
                .unwrap_or_default();
            match digest {
                Some(d) => Ok(Some((d, mt))),
                None => {
                    // No digest header: read the manifest to know it.
                    let body = get_optional(
                        client,
                        scopes,
                        &format!("{repo}/manifests/{tag}"),
                        ACCEPT_MANIFESTS,
                        "the tag",
                    )
                    .await?
                    .ok_or_else(|| client.protocol_error(&format!("{repo}:{tag} vanished while being read")))?;
                    Ok(Some((Digest::of(&body), mt)))
                }
            }
        }
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(client.error_from(&format!("looking up {repo}:{tag}"), resp).await),
    }
}

/// Reads the history of `tag` (empty when there is none).
pub(super) async fn read(client: &Client, scopes: &[String], repo: &str, tag: &str) -> Result<History> {
    let ht = history_tag(tag);
    let Some(body) = get_optional(
        client,
        scopes,
        &format!("{repo}/manifests/{ht}"),
        oci::MEDIA_TYPE_MANIFEST,
        &format!("the release history {ht}"),
    )
    .await?
    else {
        return Ok(History {
            tag: tag.to_string(),
            moves: Vec::new(),
        });
    };
    let bad = |m: String| Error::format(format!("{}/{repo}:{ht}", client.registry), m);
    let m: Manifest = serde_json::from_slice(&body).map_err(|e| bad(format!("not an OCI manifest: {e}")))?;
    let doc = m
        .annotations
        .get(ANNOTATION)
        .ok_or_else(|| bad(format!("no {ANNOTATION} annotation: not a kiln release history")))?;
    let mut h: History = serde_json::from_str(doc).map_err(|e| bad(format!("not a kiln release history: {e}")))?;
    if h.moves.len() > MAX_MOVES {
        let drop = h.moves.len() - MAX_MOVES;
        h.moves.drain(..drop);
    }
    if h.tag != tag {
        return Err(bad(format!("it is the history of `{}`, not `{tag}`", h.tag)));
    }
    Ok(h)
}

/// Appends `mv` to the history of `tag` and writes it back.
pub(super) async fn record(s: &Session<'_>, tag: &str, mv: Move) -> Result<()> {
    // A history that cannot be read (damaged, or not kiln's) is started
    // anew rather than blocking every later push of the tag.
    let mut h = match read(&s.client, &s.scopes, &s.repo, tag).await {
        Ok(h) => h,
        Err(Error::Format { .. }) | Err(Error::DigestMismatch { .. }) => History {
            tag: tag.to_string(),
            moves: Vec::new(),
        },
        Err(e) => return Err(e),
    };
    h.moves.push(mv);
    if h.moves.len() > MAX_MOVES {
        let drop = h.moves.len() - MAX_MOVES;
        h.moves.drain(..drop);
    }
    let doc = String::from_utf8(canonical_json(&h)).expect("JSON is UTF-8");
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(oci::MEDIA_TYPE_MANIFEST.into()),
        artifact_type: Some(ARTIFACT_TYPE.into()),
        config: empty_descriptor(),
        layers: vec![empty_descriptor()],
        subject: None,
        annotations: [
            ("dev.kiln.history.tag".to_string(), tag.to_string()),
            (ANNOTATION.to_string(), doc),
        ]
        .into(),
    };
    // The 2-byte empty blob: uploaded once per repository, then a HEAD.
    push_bytes(s, empty_descriptor(), Bytes::from_static(oci::EMPTY_JSON)).await?;
    let body = canonical_json(&manifest);
    let d = Digest::of(&body);
    put_manifest(
        &s.client,
        &s.repo,
        &s.scopes,
        &history_tag(tag),
        oci::MEDIA_TYPE_MANIFEST,
        &Bytes::from(body),
        &d,
    )
    .await?;
    Ok(())
}

/// A move kiln is about to record, stamped now.
pub fn new_move(from: Option<Digest>, to: Digest, media_type: &str, action: &str) -> Move {
    Move {
        from,
        to,
        media_type: media_type.to_string(),
        at: crate::time::Timestamp::at(std::time::SystemTime::now()).rfc3339(),
        by: format!("kiln {}", env!("CARGO_PKG_VERSION")),
        action: action.to_string(),
    }
}

/// The release history of `r`'s tag.
pub fn history(ctx: &Context, r: &RegistryRef) -> Result<History> {
    let tag = r
        .tag
        .clone()
        .ok_or_else(|| Error::invalid("image reference", r.to_string(), "name a tag: HOST/REPO:TAG"))?;
    let rt = crate::store::daemon::runtime()?;
    rt.block_on(async {
        let client = Client::connect(r, &ctx.registry).await?;
        let scopes = vec![client::scope(&r.repository, "pull")];
        read(&client, &scopes, &r.repository, &tag).await
    })
}

/// Where a rollback goes.
#[derive(Debug, Clone)]
pub enum Target {
    /// N releases back in the history (1: the one before the current).
    Steps(usize),
    /// A manifest digest of the repository.
    Digest(Digest),
}

/// What a rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct Rollback {
    pub tag: String,
    pub from: Option<Digest>,
    pub to: Digest,
    /// The tag named something kiln's history does not end with (pushed by
    /// another tool, or moved concurrently) when the rollback began.
    pub moved_outside_kiln: bool,
    /// Requests by method (no blob is uploaded).
    pub requests: std::collections::BTreeMap<String, u64>,
}

/// Re-points `r`'s tag at an earlier manifest, byte for byte, and records it.
pub fn rollback(ctx: &Context, r: &RegistryRef, target: Target) -> Result<Rollback> {
    let tag = r.tag.clone().ok_or_else(|| {
        Error::invalid(
            "image reference",
            r.to_string(),
            "name the tag to roll back: HOST/REPO:TAG",
        )
    })?;
    let rt = crate::store::daemon::runtime()?;
    let locations = super::locations::Locations::new(&ctx.cache);
    rt.block_on(async {
        let s = Session::connect(ctx, r, &locations).await?;
        let h = read(&s.client, &s.scopes, &s.repo, &tag).await?;
        let now = current(&s.client, &s.scopes, &s.repo, &tag).await?;
        let last = h.moves.last().map(|m| m.to.clone());
        let moved_outside_kiln = now.as_ref().map(|(d, _)| d.clone()) != last;
        let to = match &target {
            Target::Digest(d) => d.clone(),
            Target::Steps(0) => {
                return Err(Error::invalid("--steps", "0", "roll back at least 1 step"));
            }
            Target::Steps(n) => {
                let Some((current, _)) = &now else {
                    return Err(Error::invalid("tag", r.to_string(), "it names nothing; roll back with --to DIGEST"));
                };
                if moved_outside_kiln {
                    return Err(Error::invalid(
                        "tag",
                        r.to_string(),
                        format!(
                            "it names {current}, which its release history does not end with (moved by another tool, or right now); `kiln history` lists the releases, roll back with --to DIGEST"
                        ),
                    ));
                }
                // The releases pushed to the tag, oldest first (rollbacks
                // are not releases): N steps back from where the tag is, so
                // a repeated `--steps 1` keeps going back, never forward.
                let mut releases: Vec<&Digest> = Vec::new();
                for m in h.moves.iter().filter(|m| m.action == "push") {
                    if releases.last() != Some(&&m.to) {
                        releases.push(&m.to);
                    }
                }
                let pos = releases.iter().rposition(|d| *d == current).ok_or_else(|| {
                    Error::invalid(
                        "tag",
                        r.to_string(),
                        format!("it names {current}, which no recorded push put there; roll back with --to DIGEST"),
                    )
                })?;
                if *n > pos {
                    return Err(Error::invalid(
                        "--steps",
                        n.to_string(),
                        format!(
                            "{r} is at release {} of {} recorded, so at most {pos} step(s) back; `kiln history {r}` lists them",
                            pos + 1,
                            releases.len()
                        ),
                    ));
                }
                releases[pos - n].clone()
            }
        };
        // The manifest as stored: its exact bytes go back under the tag.
        let path = format!("{}/manifests/{to}", s.repo);
        let body = get_optional(&s.client, &s.scopes, &path, ACCEPT_MANIFESTS, &format!("the manifest {to}"))
            .await?
            .ok_or_else(|| Error::NotFound {
                what: format!("manifest {to}"),
                location: format!("{}/{}", s.client.registry, s.repo),
                hint: "; it was deleted, so the tag stays where it is. Push that release again to roll back to it".into(),
            })?;
        if Digest::of(&body) != to {
            return Err(Error::DigestMismatch {
                what: format!("manifest {to} from {}", s.client.registry),
                expected: to.to_string(),
                found: Digest::of(&body).to_string(),
            });
        }
        // The type from the bytes themselves, never from the (writable) history.
        let media_type = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("mediaType").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| {
                if crate::store::read::is_index("", &body) {
                    oci::MEDIA_TYPE_INDEX.to_string()
                } else {
                    oci::MEDIA_TYPE_MANIFEST.to_string()
                }
            });
        // No compare-and-swap: re-read right before moving it.
        let before = current(&s.client, &s.scopes, &s.repo, &tag).await?;
        if before != now {
            return Err(Error::invalid(
                "tag",
                r.to_string(),
                "it moved while kiln was preparing the rollback (another push?); nothing was changed, look again and retry",
            ));
        }
        put_manifest(&s.client, &s.repo, &s.scopes, &tag, &media_type, &body, &to).await?;
        let after = current(&s.client, &s.scopes, &s.repo, &tag).await?;
        if after.as_ref().map(|(d, _)| d) != Some(&to) {
            return Err(Error::invalid(
                "tag",
                r.to_string(),
                format!(
                    "right after kiln put {to} there, it names {}: someone else moved it concurrently",
                    after.map(|(d, _)| d.to_string()).unwrap_or_else(|| "nothing".into())
                ),
            ));
        }
        let from = now.map(|(d, _)| d);
        record(&s, &tag, new_move(from.clone(), to.clone(), &media_type, "rollback")).await?;
        Ok(Rollback {
            tag,
            from,
            to,
            moved_outside_kiln,
            requests: s.client.stats.snapshot(),
        })
    })
}
