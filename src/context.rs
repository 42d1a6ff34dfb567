//! The explicit context of one kiln invocation, built once at the edge
//! (`cli::run`) from flags and the environment and passed down: registry
//! options and credentials, the cache, the progress/warning sink and the
//! one timestamp. The library reads no process globals and, apart from the
//! builder backends' own tools, no environment variables.

use crate::cache::Cache;
use crate::progress::Progress;
use crate::store::registry::Options as RegistryOptions;
use crate::time::Timestamp;

/// Everything a command needs besides its own arguments.
#[derive(Debug, Clone)]
pub struct Context {
    /// How registries are reached (insecure hosts, credentials, retries).
    pub registry: RegistryOptions,
    /// kiln's cache directory.
    pub cache: Cache,
    /// Progress bars and warnings on stderr.
    pub progress: Progress,
    /// SOURCE_DATE_EPOCH as the user set it (None: each command's default).
    pub timestamp: Option<Timestamp>,
    /// HTTP(S)_PROXY/NO_PROXY from the environment: given to the build's
    /// fetch phase only.
    pub proxy_env: Vec<(String, String)>,
    /// KILN_CA_BUNDLE: a CA bundle for the fetch phase, from the user's side.
    pub ca_bundle: Option<std::path::PathBuf>,
    /// The container engine (DOCKER_HOST, a Docker context, or the local socket).
    pub engine: crate::store::engine::Engine,
}

impl Context {
    /// A context for tests and library callers: no output, default registry
    /// options, the given cache.
    pub fn quiet(cache: Cache) -> Self {
        Context {
            registry: RegistryOptions::default(),
            cache,
            progress: Progress::hidden(),
            timestamp: None,
            proxy_env: Vec::new(),
            ca_bundle: None,
            engine: Default::default(),
        }
    }
}
