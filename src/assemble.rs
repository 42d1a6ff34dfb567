//! Assembly: files and settings become an [`Image`] on top of a base
//! (scratch or an image read from a source). All inputs that shape the bytes
//! are explicit fields of [`AssembleSpec`]; nothing is read from the host
//! except the files named.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::context::Context;
use crate::image::{self, Image, Layer};
use crate::layer::{self, AddSpec, LayerOptions, Tree};
use crate::oci::{Empty, Platform, RuntimeConfig};
use crate::reference::ImageRef;
use crate::settings::{Port, Signal, User};
use crate::{Error, Result};

/// The default user of images kiln makes: non-root (distroless' `nonroot`).
pub const DEFAULT_USER: &str = "65532:65532";
/// PATH for images built on scratch.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything that decides an assembled image.
#[derive(Debug, Clone)]
pub struct AssembleSpec {
    pub base: ImageRef,
    pub platform: Platform,
    pub adds: Vec<AddSpec>,
    /// Extra layer content kiln generates itself (passwd, CA bundle, ...).
    pub extra: Tree,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<(String, String)>,
    pub user: Option<User>,
    /// With no `user`: keep the base's user (on scratch none, i.e. root)
    /// instead of kiln's non-root default.
    pub base_user: bool,
    pub workdir: Option<String>,
    pub labels: Vec<(String, String)>,
    pub ports: Vec<Port>,
    pub stop_signal: Option<Signal>,
    pub healthcheck: Option<crate::oci::Healthcheck>,
    pub layer: LayerOptions,
}

impl AssembleSpec {
    /// A spec with defaults: scratch, host platform, SOURCE_DATE_EPOCH-less time 0.
    pub fn new(platform: Platform) -> Self {
        AssembleSpec {
            base: ImageRef::Scratch,
            platform,
            adds: Vec::new(),
            extra: Tree::new(),
            entrypoint: None,
            cmd: None,
            env: Vec::new(),
            user: None,
            base_user: false,
            workdir: None,
            labels: Vec::new(),
            ports: Vec::new(),
            stop_signal: None,
            healthcheck: None,
            layer: LayerOptions::default(),
        }
    }
}

/// Parses `KEY=VALUE` for env and labels.
pub fn parse_key_value(what: &'static str, s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.chars().any(char::is_whitespace) => Ok((k.to_string(), v.to_string())),
        _ => Err(Error::invalid(
            what,
            s,
            "expected KEY=VALUE with a non-empty KEY without spaces, e.g. RUST_LOG=info",
        )),
    }
}

/// Parses an argv option: a JSON array (`["/app","--flag"]`) or one string.
pub fn parse_argv(what: &'static str, values: &[String]) -> Result<Option<Vec<String>>> {
    match values {
        [] => Ok(None),
        [one] if one.trim_start().starts_with('[') => serde_json::from_str::<Vec<String>>(one)
            .map(Some)
            .map_err(|e| Error::invalid(what, one.as_str(), format!("not a JSON array of strings: {e}"))),
        many => Ok(Some(many.to_vec())),
    }
}

/// Assembles the image. Layer blobs are staged in a temporary directory kept
/// alive by the returned image: inside `staging` when given (an output
/// layout, so the blob can be hardlinked into place instead of copied), else
/// the system's temp directory.
pub fn assemble(ctx: &Context, spec: &AssembleSpec, staging: Option<&std::path::Path>) -> Result<Image> {
    let progress = &ctx.progress;
    let (mut config, mut layers) = match &spec.base {
        ImageRef::Scratch => {
            let mut c = image::scratch_config(&spec.platform, spec.layer.timestamp);
            let rc = c.config.get_or_insert_with(RuntimeConfig::default);
            rc.env.push(DEFAULT_PATH.into());
            if !spec.base_user {
                rc.user = Some(DEFAULT_USER.into());
            }
            (c, Vec::new())
        }
        other => {
            let base = crate::store::open(ctx, other, Some(&spec.platform))?;
            let bp = base.platform();
            if bp.os != spec.platform.os || bp.architecture != spec.platform.architecture {
                return Err(Error::invalid(
                    "--from",
                    other.to_string(),
                    format!(
                        "the base is {bp} but the image is for {}; pass --platform {bp} or pick another base",
                        spec.platform
                    ),
                ));
            }
            (base.config().clone(), base.layers().to_vec())
        }
    };

    // Host files first: reading their metadata fails early, before any work.
    let mut tree = spec.extra.clone();
    for add in &spec.adds {
        tree.add(add)?;
    }
    if !tree.is_empty() {
        let mut builder = tempfile::Builder::new();
        builder.prefix(".kiln-tmp-");
        let staging = Arc::new(
            match staging {
                // A failing concurrent writer of a new layout may remove the
                // `blobs/` it created between our look and this: stage in the
                // temp directory instead (a copy, not a hardlink, later).
                Some(dir) => builder.tempdir_in(dir).or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => builder.tempdir(),
                    _ => Err(e),
                }),
                None => builder.tempdir(),
            }
            .map_err(|e| Error::Io {
                context: "creating a staging directory".into(),
                source: e,
            })?,
        );
        let path = staging.path().join("layer");
        let bar = progress.bytes(tree.content_bytes(), "layer");
        let info = layer::write_layer(&tree, &spec.layer, &path, &|n| bar.set_position(n))?;
        bar.finish_and_clear();
        image::push_history(&mut config, spec.layer.timestamp, "kiln assemble");
        layers.push(Layer::from_written(info, path, Some(staging)));
    }

    config.created = Some(spec.layer.timestamp.rfc3339());
    let rc = config.config.get_or_insert_with(RuntimeConfig::default);
    if let Some(e) = &spec.entrypoint {
        // An empty entrypoint is none at all (Docker's null), not `[]`.
        rc.entrypoint = (!e.is_empty()).then(|| e.clone());
        // Docker semantics: a new entrypoint resets the base's cmd.
        if spec.cmd.is_none() {
            rc.cmd = None;
        }
    }
    if let Some(c) = &spec.cmd {
        rc.cmd = Some(c.clone());
    }
    for (k, v) in &spec.env {
        let prefix = format!("{k}=");
        rc.env.retain(|e| !e.starts_with(&prefix));
        rc.env.push(format!("{k}={v}"));
    }
    if let Some(u) = &spec.user {
        rc.user = Some(u.to_string());
    }
    if let Some(w) = &spec.workdir {
        rc.working_dir = Some(w.clone());
    }
    for (k, v) in &spec.labels {
        rc.labels.insert(k.clone(), v.clone());
    }
    for p in &spec.ports {
        rc.exposed_ports.insert(p.to_string(), Empty {});
    }
    if let Some(h) = &spec.healthcheck {
        rc.healthcheck = Some(h.clone());
    }
    if let Some(s) = &spec.stop_signal {
        rc.stop_signal = Some(s.to_string());
    }
    Image::new(config, layers, BTreeMap::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_directory_removed_by_a_concurrent_writer_falls_back_to_temp() {
        let d = tempfile::tempdir().unwrap();
        let ctx = Context::quiet(crate::cache::Cache::new(d.path().join("cache")));
        let mut spec = AssembleSpec::new(Platform::host());
        spec.extra.add_bytes("/f", b"x".to_vec(), 0o644, "test").unwrap();
        // The `blobs/` a failing writer created and removed again.
        let gone = d.path().join("out/blobs");
        let image = assemble(&ctx, &spec, Some(&gone)).unwrap();
        assert_eq!(image.layers().len(), 1);
        assert!(!gone.exists());
    }
}
