//! OCI registries as a sink (push) and a source (pull), on kiln's own client.
//!
//! - [`client`]: one registry, auth, the one retry policy, capped bodies;
//! - [`auth`]: challenges, tokens, docker config.json and credential helpers;
//! - [`push`]: blobs in parallel, HEAD skip, cross-repository mount, one
//!   streaming PUT or resumable chunks, then manifest bytes exactly as hashed;
//! - [`pull`]: the registry as a [`crate::store::read::BlobFetch`]: blobs are
//!   verified as they stream into the content store, then read through the
//!   one read path;
//! - [`locations`]: which repositories hold a blob (for mounts);
//! - [`mirrors`]: registries.conf and daemon.json mirrors for pulls.

pub mod auth;
pub mod cache;
pub mod client;
pub mod history;
pub mod locations;
pub mod mirrors;
pub mod prune;
pub mod pull;
pub mod push;
pub mod referrers;
pub mod signatures;

pub use crate::reference::RegistryRef;
pub use client::{Client, Options, RetryPolicy};
pub use pull::{pull, pull_any, resolve};
pub use push::{PushReport, RegistrySink, push, push_any, push_attached};
pub use signatures::push as push_signatures;

/// What kiln accepts for a manifest GET.
pub(crate) const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
