//! `kiln assemble`: files and settings → image → one or more outputs.

use anyhow::Context;
use kiln::assemble::{self, AssembleSpec};
use kiln::layer::{AddSpec, Compression, LayerOptions};
use kiln::oci::Platform;
use kiln::reference::ImageRef;
use kiln::settings::{Port, Signal, User};
use kiln::store::Sink as _;
use kiln::time::Timestamp;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base image: `scratch` or an image reference such as oci:DIR[:TAG].
    #[arg(long, default_value = "scratch", value_name = "REF")]
    pub from: String,
    /// Add a host file or directory at an absolute image path; MODE (octal)
    /// sets every added file's mode. Repeatable.
    #[arg(long = "add", value_name = "SRC:DEST[:MODE]")]
    adds: Vec<String>,
    /// Entrypoint: repeat for each argument, or one JSON array.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    entrypoint: Vec<String>,
    /// Default arguments: repeat for each argument, or one JSON array.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    cmd: Vec<String>,
    /// Environment variable. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// User to run as [default on scratch: 65532:65532, non-root].
    #[arg(long, value_name = "UID[:GID]")]
    user: Option<String>,
    /// Working directory (absolute).
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// Image label. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    label: Vec<String>,
    /// Port to declare, e.g. 8080 or 53/udp. Repeatable.
    #[arg(long, value_name = "PORT[/PROTO]")]
    expose: Vec<String>,
    /// Signal that stops the container, e.g. SIGTERM.
    #[arg(long, value_name = "SIGNAL")]
    stop_signal: Option<String>,
    /// Target platform [default: the host's, e.g. linux/amd64].
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
    /// Layer compression: gzip[:LEVEL], zstd[:LEVEL] or none.
    #[arg(long, default_value = "gzip", value_name = "ALGO")]
    compression: String,
    /// Owner of every file in the new layer.
    #[arg(long, default_value = "0:0", value_name = "UID:GID")]
    owner: String,
    /// The one timestamp (seconds since 1970) for mtimes and `created`.
    /// [default: $SOURCE_DATE_EPOCH, else 0]
    #[arg(long, value_name = "SECONDS")]
    source_date_epoch: Option<String>,
    /// Where to write: oci:DIR[:TAG], docker-archive:FILE[:NAME[:TAG]],
    /// docker-daemon:NAME[:TAG]. Repeatable.
    #[arg(long = "out", value_name = "REF", required = true)]
    pub outs: Vec<String>,
}

/// What `kiln assemble --json` prints.
#[derive(serde::Serialize)]
struct Report {
    digest: String,
    config: String,
    platform: String,
    size: u64,
    layers: Vec<LayerReport>,
    outputs: Vec<String>,
    seconds: f64,
}

#[derive(serde::Serialize)]
struct LayerReport {
    digest: String,
    diff_id: String,
    size: u64,
    #[serde(rename = "mediaType")]
    media_type: String,
}

pub fn run(ctx: &kiln::context::Context, a: Args, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let progress = &ctx.progress;
    let started = std::time::Instant::now();
    let platform = match &a.platform {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    };
    // --source-date-epoch, else SOURCE_DATE_EPOCH (read once, in the context), else 0.
    let timestamp = match a.source_date_epoch.as_deref() {
        Some(v) if !v.is_empty() => Timestamp::parse(v)?,
        _ => ctx.timestamp.unwrap_or_default(),
    };
    let (uid, gid) = a
        .owner
        .split_once(':')
        .and_then(|(u, g)| Some((u.parse().ok()?, g.parse().ok()?)))
        .ok_or_else(|| kiln::Error::invalid("--owner", a.owner.as_str(), "expected numeric UID:GID, e.g. 0:0"))?;
    let mut spec = AssembleSpec::new(platform);
    spec.base = ImageRef::parse(&a.from)?;
    spec.adds = a.adds.iter().map(|s| AddSpec::parse(s)).collect::<Result<_, _>>()?;
    spec.entrypoint = assemble::parse_argv("--entrypoint", &a.entrypoint)?;
    spec.cmd = assemble::parse_argv("--cmd", &a.cmd)?;
    spec.env = a
        .env
        .iter()
        .map(|s| assemble::parse_key_value("--env", s))
        .collect::<Result<_, _>>()?;
    spec.labels = a
        .label
        .iter()
        .map(|s| assemble::parse_key_value("--label", s))
        .collect::<Result<_, _>>()?;
    spec.ports = a
        .expose
        .iter()
        .map(|s| Port::parse(s, "--expose"))
        .collect::<Result<_, _>>()?;
    if let Some(u) = &a.user {
        spec.user = Some(User::parse(u, "--user")?);
    }
    if let Some(w) = &a.workdir {
        if !w.starts_with('/') {
            return Err(kiln::Error::invalid("--workdir", w.as_str(), "must be an absolute path, e.g. /app").into());
        }
        spec.workdir = Some(w.clone());
    }
    if let Some(s) = &a.stop_signal {
        spec.stop_signal = Some(Signal::parse(s, "--stop-signal")?);
    }
    spec.layer = LayerOptions {
        timestamp,
        uid,
        gid,
        compression: Compression::parse(&a.compression)?,
    };
    let outputs = kiln::store::Outputs::parse(ctx, &a.outs)?;
    let outs = outputs.refs().to_vec();

    // Stage the new layer inside an existing output layout's blobs/ (never
    // its root): the finished blob is then hardlinked into place, not copied.
    let staging = outs.iter().find_map(|o| match o {
        ImageRef::Oci { dir, .. } if dir.join("blobs").is_dir() => Some(dir.join("blobs")),
        _ => None,
    });
    let image = assemble::assemble(ctx, &spec, staging.as_deref())?;
    let sp = progress.spinner("writing");
    outputs.put(&image).with_context(|| {
        format!(
            "writing {}",
            outs.iter().map(|o| o.to_string()).collect::<Vec<_>>().join(", ")
        )
    })?;
    sp.finish_and_clear();
    let digest = image.digest().to_string();
    if json {
        let report = Report {
            digest,
            config: image.manifest().config.digest.to_string(),
            platform: image.platform().to_string(),
            size: image.total_size(),
            layers: image
                .layers()
                .iter()
                .map(|l| LayerReport {
                    digest: l.descriptor.digest.to_string(),
                    diff_id: l.diff_id.to_string(),
                    size: l.descriptor.size,
                    media_type: l.descriptor.media_type.clone(),
                })
                .collect(),
            outputs: outs.iter().map(|o| o.to_string()).collect(),
            seconds: started.elapsed().as_secs_f64(),
        };
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!("{digest}");
        if !quiet {
            for o in &outs {
                eprintln!("wrote {o}");
            }
        }
    }
    Ok(0)
}
