//! `kiln inspect`: manifest, config and layers of any readable image.

use kiln::image::Image;
use kiln::reference::ImageRef;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: oci:DIR[:TAG] or docker-archive:FILE.
    #[arg(value_name = "REF")]
    pub image: String,
    /// Also list the files of each layer.
    #[arg(long)]
    files: bool,
    /// From a multi-platform index, show this platform's image [default: the host's].
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
}

/// An index's child in `kiln inspect --json`.
#[derive(serde::Serialize)]
struct Child {
    platform: String,
    digest: String,
    size: u64,
}

pub fn run(ctx: &kiln::context::Context, a: Args, json: bool) -> anyhow::Result<u8> {
    let r = ImageRef::parse(&a.image)?;
    let platform = a.platform.as_deref().map(kiln::oci::Platform::parse).transpose()?;
    // An index is listed, then one of its images is shown.
    let any = kiln::store::open_any(ctx, &r)?;
    let (index, image) = match &any {
        kiln::image::AnyImage::Image(i) => (None, i.clone()),
        kiln::image::AnyImage::Index(ix) => {
            let want = platform.clone().unwrap_or_else(kiln::oci::Platform::host);
            let children: Vec<Child> = any
                .images()
                .iter()
                .map(|c| Child {
                    platform: c.platform().to_string(),
                    digest: c.digest().to_string(),
                    size: c.total_size(),
                })
                .collect();
            let chosen = any
                .images()
                .into_iter()
                .find(|c| c.platform().satisfies(&want))
                .or_else(|| any.images().into_iter().next())
                .cloned()
                .ok_or_else(|| kiln::Error::invalid("image", r.to_string(), "an index with no image"))?;
            (Some((ix.digest().to_string(), children)), chosen)
        }
    };
    let files = if a.files {
        Some(
            image
                .layers()
                .iter()
                .map(list_files)
                .collect::<anyhow::Result<Vec<_>>>()?,
        )
    } else {
        None
    };
    if json {
        let report = Report {
            index: index.as_ref().map(|(d, c)| IndexReport {
                digest: d.clone(),
                children: c,
            }),
            reference: r.to_string(),
            digest: image.digest().to_string(),
            media_type: image.manifest().media_type.clone(),
            manifest: serde_json::from_slice(image.manifest_bytes())?,
            config: serde_json::from_slice(image.config_bytes())?,
            layers: image
                .layers()
                .iter()
                .enumerate()
                .map(|(i, l)| LayerReport {
                    digest: l.descriptor.digest.to_string(),
                    diff_id: l.diff_id.to_string(),
                    size: l.descriptor.size,
                    media_type: l.descriptor.media_type.clone(),
                    files: files.as_ref().map(|f| &f[i][..]),
                })
                .collect(),
            size: image.total_size(),
        };
        outln!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    if let Some((d, children)) = &index {
        outln!("{r}");
        outln!("  index       {d} ({} platforms)", children.len());
        for c in children {
            let shown = if c.digest == image.digest().to_string() {
                "  (shown below)"
            } else {
                ""
            };
            outln!("    {:<14} {} {} bytes{shown}", c.platform, c.digest, c.size);
        }
    }
    print_human(&r, &image, files.as_deref());
    Ok(0)
}

/// The index a multi-platform reference names.
#[derive(serde::Serialize)]
struct IndexReport<'a> {
    digest: String,
    children: &'a [Child],
}

/// What `kiln inspect --json` prints.
#[derive(serde::Serialize)]
struct Report<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<IndexReport<'a>>,
    reference: String,
    digest: String,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifest: serde_json::Value,
    config: serde_json::Value,
    layers: Vec<LayerReport<'a>>,
    size: u64,
}

#[derive(serde::Serialize)]
struct LayerReport<'a> {
    digest: String,
    diff_id: String,
    size: u64,
    #[serde(rename = "mediaType")]
    media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<&'a [FileEntry]>,
}

#[derive(serde::Serialize)]
struct FileEntry {
    path: String,
    kind: &'static str,
    mode: String,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<String>,
}

fn list_files(layer: &kiln::image::Layer) -> anyhow::Result<Vec<FileEntry>> {
    use kiln::layer::read;
    let mut out = Vec::new();
    let what = format!("layer {}", layer.descriptor.digest);
    read::layer_entries(layer, &read::Limits::default(), &what, |m, _| {
        out.push(FileEntry {
            path: m.path.trim_start_matches("./").trim_end_matches('/').to_string(),
            kind: m.kind.name(),
            mode: format!("{:04o}", m.mode),
            uid: m.uid,
            gid: m.gid,
            size: m.size,
            mtime: m.mtime,
            link: m.link.clone(),
        });
        Ok(())
    })?;
    Ok(out)
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn print_human(r: &ImageRef, image: &Image, files: Option<&[Vec<FileEntry>]>) {
    // Env, labels, paths and links come from the image: never raw escape
    // sequences on the terminal.
    let esc = |s: &str| kiln::text::escape_controls(s).into_owned();
    let c = image.config();
    outln!("{r}");
    outln!("  digest      {}", image.digest());
    outln!("  platform    {}", image.platform());
    outln!("  created     {}", c.created.as_deref().unwrap_or("-"));
    outln!(
        "  config      {} ({} bytes)",
        image.manifest().config.digest,
        image.config_bytes().len()
    );
    outln!("  size        {}", human_size(image.total_size()));
    if let Some(rc) = &c.config {
        let argv = |v: &Option<Vec<String>>| {
            v.as_ref()
                .map(|v| serde_json::to_string(v).expect("strings"))
                .unwrap_or_else(|| "-".into())
        };
        outln!("  entrypoint  {}", argv(&rc.entrypoint));
        outln!("  cmd         {}", argv(&rc.cmd));
        outln!("  user        {}", esc(rc.user.as_deref().unwrap_or("- (root)")));
        outln!("  workdir     {}", esc(rc.working_dir.as_deref().unwrap_or("-")));
        for e in &rc.env {
            outln!("  env         {}", esc(e));
        }
        for p in rc.exposed_ports.keys() {
            outln!("  expose      {}", esc(p));
        }
        for (k, v) in &rc.labels {
            outln!("  label       {}={}", esc(k), esc(v));
        }
        if let Some(h) = &rc.healthcheck {
            let secs = |n: Option<u64>| n.map(|n| format!("{}s", n as f64 / 1e9)).unwrap_or_else(|| "-".into());
            outln!(
                "  healthcheck {} (interval {}, timeout {}, start period {}, retries {})",
                esc(&serde_json::to_string(&h.test).expect("strings")),
                secs(h.interval),
                secs(h.timeout),
                secs(h.start_period),
                h.retries.map(|r| r.to_string()).unwrap_or_else(|| "-".into())
            );
        }
        if let Some(s) = &rc.stop_signal {
            outln!("  stop signal {}", esc(s));
        }
    }
    outln!("  layers      {}", image.layers().len());
    for (i, l) in image.layers().iter().enumerate() {
        outln!(
            "    {:>2}  {}  {:>9}  {}",
            i + 1,
            l.descriptor.digest,
            human_size(l.descriptor.size),
            l.descriptor.media_type
        );
        outln!("        diff_id {}", l.diff_id);
        if let Some(files) = files {
            for f in &files[i] {
                let link = f.link.as_ref().map(|l| format!(" -> {}", esc(l))).unwrap_or_default();
                outln!(
                    "        {} {:>4} {:>5}:{:<5} {:>10}  /{}{}",
                    &f.kind[..1],
                    f.mode,
                    f.uid,
                    f.gid,
                    f.size,
                    esc(&f.path),
                    link
                );
            }
        }
    }
}
