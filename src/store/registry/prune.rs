//! `kiln cache prune`: garbage collection of a registry build cache. Keeps
//! the newest K image entries (`kiln-cache-*`) and K' dependency layers
//! (`kiln-deps-*`) by the time their writer stored them (the entry
//! manifest's `org.opencontainers.image.created`; entries without one count
//! as oldest), and deletes the others' manifests by digest. The images the
//! deleted entries name go too, but only in a repository that holds nothing
//! but cache entries: kiln builds are reproducible, so a release pushed to
//! the same repository is the same manifest, and what may name it (an
//! index, a release history, a signature) cannot all be known. The
//! registry's own blob GC then frees the layers. Registries have no
//! transactions: the tags are listed again just before deleting, and an
//! image a new entry names is kept (a new tag of another kind keeps them all).

use std::collections::{BTreeMap, BTreeSet};

use reqwest::StatusCode;
use serde::Serialize;

use super::cache::{self, RemoteCache};
use super::client::{self, Client};
use super::referrers::get_optional;
use crate::context::Context;
use crate::digest::Digest;
use crate::oci;
use crate::{Error, Result};

/// Tags read from one repository at most, and the bytes and pages of the list.
const MAX_TAGS: usize = 200_000;
const MAX_LIST_BYTES: u64 = 64 << 20;
const MAX_PAGES: usize = 1_000;

/// What to keep.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// Image entries (`kiln-cache-*`).
    pub entries: usize,
    /// Dependency layers (`kiln-deps-*`).
    pub deps: usize,
}

/// One cache entry as the prune saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub tag: String,
    pub digest: Digest,
    /// When its writer stored it (RFC 3339; empty when it does not say).
    pub created: String,
    /// The image an image entry names (deleted with it unless still named).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<Digest>,
}

/// What a prune did (or, with `dry_run`, would do).
#[derive(Debug, Serialize)]
pub struct Report {
    pub kept: Vec<Entry>,
    pub deleted: Vec<Entry>,
    /// Images deleted with their entries.
    pub deleted_images: Vec<Digest>,
    /// Why the entries' images were left in place, when they were.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images_kept_because: Option<String>,
    pub dry_run: bool,
}

/// Prunes `cache` down to `keep`.
pub fn prune(ctx: &Context, cache: &RemoteCache, keep: Keep, dry_run: bool) -> Result<Report> {
    let rt = crate::store::daemon::runtime()?;
    rt.block_on(async {
        let client = Client::connect(&cache.repo, &ctx.registry).await?;
        let repo = &cache.repo.repository;
        let actions = if dry_run { "pull" } else { "pull,push,delete" };
        let scopes = vec![client::scope(repo, actions)];
        let tags = list_tags(&client, &scopes, repo).await?;
        let mut entries: BTreeMap<bool, Vec<Entry>> = BTreeMap::new();
        let mut others = Vec::new();
        for t in &tags {
            match read_entry(ctx, &client, &scopes, cache, t).await? {
                Some((deps, e)) => entries.entry(deps).or_default().push(e),
                None if is_entry_tag(t) => {} // gone meanwhile, or not kiln's shape
                None => others.push(t.clone()),
            }
        }
        let mut report = Report {
            kept: Vec::new(),
            deleted: Vec::new(),
            deleted_images: Vec::new(),
            images_kept_because: None,
            dry_run,
        };
        for (deps, mut list) in entries {
            // Newest first; RFC 3339 in UTC sorts as text. Ties by tag, so a
            // prune is the same on every machine.
            list.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.tag.cmp(&b.tag)));
            let n = if deps { keep.deps } else { keep.entries };
            let old = list.split_off(n.min(list.len()));
            report.kept.extend(list);
            report.deleted.extend(old);
        }
        // Just before deleting: entries written since the listing name
        // images too.
        let mut late = Vec::new();
        if !dry_run && !report.deleted.is_empty() {
            for t in list_tags(&client, &scopes, repo).await? {
                if tags.contains(&t) {
                    continue;
                }
                match read_entry(ctx, &client, &scopes, cache, &t).await? {
                    Some((_, e)) => late.push(e),
                    None if is_entry_tag(&t) => {}
                    None => others.push(t),
                }
            }
        }
        let named: BTreeSet<&Digest> = report
            .kept
            .iter()
            .chain(late.iter())
            .flat_map(|e| std::iter::once(&e.digest).chain(e.subject.as_ref()))
            .collect();
        if others.is_empty() {
            let mut images: Vec<Digest> = report
                .deleted
                .iter()
                .filter_map(|e| e.subject.clone())
                .filter(|s| !named.contains(s))
                .collect();
            images.sort();
            images.dedup();
            report.deleted_images = images;
        } else if report.deleted.iter().any(|e| e.subject.is_some()) {
            others.sort();
            let shown: Vec<&str> = others.iter().take(3).map(String::as_str).collect();
            report.images_kept_because = Some(format!(
                "the repository has {} other tag(s) ({}{}), so its images may be releases too; keep the cache in a repository of its own",
                others.len(),
                shown.join(", "),
                if others.len() > shown.len() { ", …" } else { "" }
            ));
        }
        if !dry_run {
            let doomed: Vec<Digest> = report
                .deleted
                .iter()
                .map(|e| e.digest.clone())
                .filter(|d| !named.contains(d))
                .chain(report.deleted_images.iter().cloned())
                .collect();
            for d in doomed {
                delete_manifest(&client, &scopes, repo, &d).await?;
            }
        }
        Ok(report)
    })
}

fn is_entry_tag(t: &str) -> bool {
    t.starts_with(cache::ENTRY_PREFIX) || t.starts_with(cache::DEPS_PREFIX)
}

/// The cache entry a tag names: (is a dependency layer, the entry); None
/// for a tag that is not an entry, is gone, or is not what kiln writes
/// (`kiln-cache-`/`kiln-deps-` and 64 hex digits, an OCI manifest).
async fn read_entry(
    ctx: &Context,
    client: &Client,
    scopes: &[String],
    cache: &RemoteCache,
    t: &str,
) -> Result<Option<(bool, Entry)>> {
    let deps = t.starts_with(cache::DEPS_PREFIX);
    let hex = t
        .strip_prefix(cache::DEPS_PREFIX)
        .or_else(|| t.strip_prefix(cache::ENTRY_PREFIX));
    if !hex.is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))) {
        return Ok(None);
    }
    let Some(bytes) = get_optional(
        client,
        scopes,
        &format!("{}/manifests/{t}", cache.repo.repository),
        oci::MEDIA_TYPE_MANIFEST,
        &format!("the tag {t}"),
    )
    .await?
    else {
        return Ok(None);
    };
    let m: oci::Manifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            ctx.progress
                .warn(&format!("{}:{t} is not an OCI manifest ({e}); left alone", cache.repo));
            return Ok(None);
        }
    };
    Ok(Some((
        deps,
        Entry {
            tag: t.to_string(),
            digest: Digest::of(&bytes),
            created: m
                .annotations
                .get(crate::attest::ANNOTATION_CREATED)
                .cloned()
                .unwrap_or_default(),
            subject: if deps { None } else { m.subject.map(|s| s.digest) },
        },
    )))
}

/// Every tag of `repo` (valid tag names, no duplicates), following the
/// `Link` header's pages: the same origin and path only, bounded in pages,
/// tags and bytes.
async fn list_tags(client: &Client, scopes: &[String], repo: &str) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Page {
        tags: Option<Vec<String>>,
    }
    let first = client.url(&format!("{repo}/tags/list?n=1000"));
    let mut url = first.clone();
    let mut tags = BTreeSet::new();
    let mut bytes = 0u64;
    for _ in 0..MAX_PAGES {
        let resp = client
            .get_following(scopes, url.clone(), None, client.opts.retry.attempts)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(tags.into_iter().collect()); // no repository yet: nothing to prune
        }
        if !resp.status().is_success() {
            return Err(client.error_from("listing the cache's tags", resp).await);
        }
        let next = resp
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| {
                l.split_once('<')
                    .and_then(|(_, r)| r.split_once('>'))
                    .map(|(u, _)| u.to_string())
            })
            .map(|u| {
                url.join(&u)
                    .ok()
                    .filter(|n| n.origin() == first.origin() && n.path() == first.path())
                    .ok_or_else(|| {
                        client.protocol_error(&format!("the tag list's next page `{u}` is not this repository's"))
                    })
            })
            .transpose()?;
        let body = client.read_capped(resp, 16 << 20, "the tag list").await?;
        bytes += body.len() as u64;
        let page: Page = serde_json::from_slice(&body)
            .map_err(|e| client.protocol_error(&format!("the tag list is not JSON: {e}")))?;
        tags.extend(
            page.tags
                .unwrap_or_default()
                .into_iter()
                .filter(|t| crate::reference::valid_tag(t)),
        );
        if tags.len() > MAX_TAGS || bytes > MAX_LIST_BYTES {
            return Err(client.protocol_error(&format!(
                "more than {MAX_TAGS} tags or {MAX_LIST_BYTES} bytes of tag list in {repo}"
            )));
        }
        match next {
            Some(n) if n != url => url = n,
            _ => return Ok(tags.into_iter().collect()),
        }
    }
    Err(client.protocol_error(&format!("more than {MAX_PAGES} pages of tags in {repo}")))
}

async fn delete_manifest(client: &Client, scopes: &[String], repo: &str, d: &Digest) -> Result<()> {
    let url = client.url(&format!("{repo}/manifests/{d}"));
    let resp = client.send(scopes, || client.http().delete(url.clone())).await?;
    match resp.status() {
        s if s.is_success() => Ok(()),
        StatusCode::NOT_FOUND => Ok(()), // gone already: what a prune wants
        StatusCode::METHOD_NOT_ALLOWED => Err(Error::Registry {
            registry: client.registry.clone(),
            status: 405,
            code: "UNSUPPORTED".into(),
            message: format!(
                "deleting {repo}@{d}: the registry does not allow deleting manifests (distribution: `storage: delete: enabled: true`); use its retention policy instead"
            ),
            retryable: false,
        }),
        _ => Err(client.error_from(&format!("deleting {repo}@{d}"), resp).await),
    }
}
