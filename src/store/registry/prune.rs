//! `kiln cache prune`: garbage collection of a registry build cache. Keeps
//! the newest K image entries (`kiln-cache-*`) and K' dependency layers
//! (`kiln-deps-*`) by the time their writer stored them (the entry
//! manifest's `org.opencontainers.image.created`; entries without one count
//! as oldest), and deletes the others' manifests by digest — with the image
//! an image entry names, unless something kept (a kept entry, any other tag)
//! still names it. The registry's own blob GC then frees the layers.
//! Registries have no transactions: an entry written meanwhile is newer
//! than any deleted one and is never touched (only tags listed at the start
//! are considered).

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

/// Tags read from one repository at most.
const MAX_TAGS: usize = 200_000;

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
            let deps = t.starts_with(cache::DEPS_PREFIX);
            let image = t.starts_with(cache::ENTRY_PREFIX);
            let Some(bytes) = get_optional(
                &client,
                &scopes,
                &format!("{repo}/manifests/{t}"),
                &format!("{},{}", oci::MEDIA_TYPE_MANIFEST, oci::MEDIA_TYPE_INDEX),
                &format!("the tag {t}"),
            )
            .await?
            else {
                continue; // deleted meanwhile
            };
            let digest = Digest::of(&bytes);
            if !(deps || image) {
                others.push(digest);
                continue;
            }
            let m: oci::Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| Error::format(format!("{}:{t}", cache.repo), format!("not an OCI manifest: {e}")))?;
            entries.entry(deps).or_default().push(Entry {
                tag: t.clone(),
                digest,
                created: m
                    .annotations
                    .get(crate::attest::ANNOTATION_CREATED)
                    .cloned()
                    .unwrap_or_default(),
                subject: if image { m.subject.map(|s| s.digest) } else { None },
            });
        }
        let mut report = Report {
            kept: Vec::new(),
            deleted: Vec::new(),
            deleted_images: Vec::new(),
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
        let named: BTreeSet<&Digest> = report
            .kept
            .iter()
            .flat_map(|e| std::iter::once(&e.digest).chain(e.subject.as_ref()))
            .chain(others.iter())
            .collect();
        let mut images: Vec<Digest> = report
            .deleted
            .iter()
            .filter_map(|e| e.subject.clone())
            .filter(|s| !named.contains(s))
            .collect();
        images.sort();
        images.dedup();
        report.deleted_images = images;
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

/// Every tag of `repo`, following the `Link` header's pages (same origin only).
async fn list_tags(client: &Client, scopes: &[String], repo: &str) -> Result<Vec<String>> {
    #[derive(serde::Deserialize)]
    struct Page {
        tags: Option<Vec<String>>,
    }
    let mut url = client.url(&format!("{repo}/tags/list?n=1000"));
    let mut tags = Vec::new();
    loop {
        let resp = client
            .get_following(scopes, url.clone(), None, client.opts.retry.attempts)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(tags); // no repository yet: nothing to prune
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
            .filter(|u| u.starts_with('/'));
        let body = client.read_capped(resp, 16 << 20, "the tag list").await?;
        let page: Page = serde_json::from_slice(&body)
            .map_err(|e| client.protocol_error(&format!("the tag list is not JSON: {e}")))?;
        tags.extend(page.tags.unwrap_or_default());
        if tags.len() > MAX_TAGS {
            return Err(client.protocol_error(&format!("more than {MAX_TAGS} tags in {repo}")));
        }
        match next {
            Some(n) => url = client.url(&n),
            None => return Ok(tags),
        }
    }
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
