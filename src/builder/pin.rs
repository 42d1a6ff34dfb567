//! Pinning: the builder and base references of a plan resolved to digests
//! through kiln.lock (created on the first build like Cargo.lock; `--locked`
//! refuses to create or change it).

use std::path::Path;

use serde::Serialize;

use super::PinnedImage;
use super::plan::Plan;
use crate::config::lock::Lock;
use crate::context::Context;
use crate::digest::Digest;
use crate::oci::Platform;
use crate::reference::{ImageRef, RegistryRef};
use crate::store::registry;
use crate::{Error, Result};

/// Resolves a tag to a digest: through the registry (kiln's own client,
/// with its mirrors), else through what the engine already holds.
fn resolve_reference(ctx: &Context, reference: &str, platform: &Platform) -> Result<Digest> {
    let via_registry = RegistryRef::parse(reference).and_then(|r| registry::resolve(ctx, &r, Some(platform)));
    match via_registry {
        Ok(d) => Ok(d),
        Err(registry_err) => {
            let rt = crate::store::daemon::runtime()?;
            rt.block_on(async {
                let d = crate::store::daemon::connect(&ctx.engine)?;
                super::docker::resolve(&d, reference).await
            })
            .map_err(|engine_err| {
                Error::invalid(
                    "image reference",
                    reference,
                    format!(
                        "cannot resolve it to a digest: {registry_err}; nor from the engine's images: {engine_err}"
                    ),
                )
            })
        }
    }
}

/// Pins one reference through the lock; `None` when it needs no pin.
#[allow(clippy::too_many_arguments)]
fn pin_one(
    ctx: &Context,
    lock: &mut Lock,
    role: &str,
    reference: &str,
    platform: &Platform,
    locked: bool,
    update: bool,
    lock_path: &Path,
) -> Result<Digest> {
    if let Some((_, d)) = reference.split_once('@') {
        return d.parse();
    }
    let key = platform.to_string();
    if let Some(d) = lock.get(role, reference, &key)
        && !update
    {
        return Ok(d.clone());
    }
    if locked {
        return Err(Error::invalid(
            "kiln.lock",
            lock_path.display().to_string(),
            format!("{role} `{reference}` is not pinned and --locked forbids changing the lock; run `kiln lock`"),
        ));
    }
    let digest = resolve_reference(ctx, reference, platform)?;
    lock.set(role, reference, &key, digest.clone());
    Ok(digest)
}

/// What pinning did to kiln.lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockState {
    /// No lock and nothing to pin.
    None,
    Created,
    Unchanged,
    Updated,
}

impl std::fmt::Display for LockState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockState::None => "none",
            LockState::Created => "created",
            LockState::Unchanged => "unchanged",
            LockState::Updated => "updated",
        })
    }
}

/// Pins the builder and the base through kiln.lock (resolving and recording
/// them when allowed). Returns the lock state.
pub fn pin(ctx: &Context, plan: &mut Plan, builder_ref: Option<&str>, locked: bool, update: bool) -> Result<LockState> {
    let lock_path = plan.project.join("kiln.lock");
    let existing = Lock::load(&lock_path)?;
    let mut lock = existing.clone().unwrap_or_default();
    // The builder runs here; the base is the image's platform's.
    let platform = Platform::host();
    let image_platform = plan.platform.clone();
    if let Some(r) = builder_ref {
        let digest = pin_one(ctx, &mut lock, "builder", r, &platform, locked, update, &lock_path).map_err(|e| {
            match &plan.builder_origin {
                // kiln chose it: say why, and how to choose another.
                Some(origin) => Error::invalid(
                    "default builder",
                    r,
                    format!(
                        "kiln's choice from {origin}: {e}. Make it reachable (a registries.conf mirror), or name \
                             another with [build] builder in kiln.toml or --builder"
                    ),
                ),
                None => e,
            }
        })?;
        plan.builder = Some(PinnedImage {
            reference: r.to_string(),
            digest,
        });
    }
    let base = plan.image.base.clone();
    let base_is_registry = matches!(ImageRef::parse(&base), Ok(ImageRef::Registry(_)));
    if base_is_registry {
        plan.image.base_digest = Some(pin_one(
            ctx,
            &mut lock,
            "base",
            &base,
            &image_platform,
            locked,
            update,
            &lock_path,
        )?);
    }
    // Pins no longer used go away, so the lock says exactly what the build uses.
    let used_builder = plan.builder.as_ref().map(|b| b.reference.clone());
    lock.retain(|i| match i.role.as_str() {
        "builder" => Some(&i.reference) == used_builder.as_ref(),
        "base" => base_is_registry && i.reference == base,
        _ => true,
    });
    let state = match &existing {
        None if lock.images.is_empty() => LockState::None,
        None => LockState::Created,
        Some(old) if *old == lock => LockState::Unchanged,
        Some(_) => LockState::Updated,
    };
    if matches!(state, LockState::Created | LockState::Updated) {
        if locked {
            return Err(Error::invalid(
                "kiln.lock",
                lock_path.display().to_string(),
                "the lock would change and --locked forbids it; run `kiln lock` and commit kiln.lock",
            ));
        }
        lock.save(&lock_path)?;
    }
    Ok(state)
}
