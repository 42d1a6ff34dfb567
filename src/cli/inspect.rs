//! `kiln inspect`: manifest, config and layers of any readable image.

use std::io::Read;

use kiln::image::Image;
use kiln::reference::ImageRef;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: oci:DIR[:TAG] or docker-archive:FILE.
    #[arg(value_name = "REF")]
    image: String,
    /// Also list the files of each layer.
    #[arg(long)]
    files: bool,
}

pub fn run(a: Args, json: bool) -> anyhow::Result<u8> {
    let r = ImageRef::parse(&a.image)?;
    let image = kiln::store::open(&r, None)?;
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
        let mut v = serde_json::json!({
            "reference": r.to_string(),
            "digest": image.digest().to_string(),
            "mediaType": image.manifest().media_type,
            "manifest": serde_json::from_slice::<serde_json::Value>(image.manifest_bytes())?,
            "config": serde_json::from_slice::<serde_json::Value>(image.config_bytes())?,
            "layers": image.layers().iter().enumerate().map(|(i, l)| {
                let mut o = serde_json::json!({
                    "digest": l.descriptor.digest.to_string(),
                    "diff_id": l.diff_id.to_string(),
                    "size": l.descriptor.size,
                    "mediaType": l.descriptor.media_type,
                });
                if let Some(f) = &files {
                    o["files"] = serde_json::to_value(&f[i]).expect("serializable");
                }
                o
            }).collect::<Vec<_>>(),
        });
        v["size"] = image.total_size().into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    print_human(&r, &image, files.as_deref());
    Ok(0)
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
    let raw = layer.source.open()?;
    let mut r = std::io::BufReader::new(raw);
    let mut magic = [0u8; 4];
    let reader: Box<dyn Read> = {
        use std::io::BufRead;
        let buf = r.fill_buf()?;
        magic[..buf.len().min(4)].copy_from_slice(&buf[..buf.len().min(4)]);
        if magic[..2] == [0x1f, 0x8b] {
            Box::new(flate2::read::GzDecoder::new(r))
        } else if magic == [0x28, 0xb5, 0x2f, 0xfd] {
            Box::new(zstd::stream::read::Decoder::with_buffer(r)?)
        } else {
            Box::new(r)
        }
    };
    let mut ar = tar::Archive::new(reader);
    let mut out = Vec::new();
    for e in ar.entries()? {
        let e = e?;
        let h = e.header();
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => "file",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            tar::EntryType::Char => "char",
            tar::EntryType::Block => "block",
            tar::EntryType::Fifo => "fifo",
            _ => "other",
        };
        out.push(FileEntry {
            path: e.path()?.to_string_lossy().trim_end_matches('/').to_string(),
            kind,
            mode: format!("{:04o}", h.mode()? & 0o7777),
            uid: h.uid()?,
            gid: h.gid()?,
            size: h.size()?,
            mtime: h.mtime()?,
            link: e.link_name()?.map(|l| l.to_string_lossy().into_owned()),
        });
    }
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
    let c = image.config();
    println!("{r}");
    println!("  digest      {}", image.digest());
    println!("  platform    {}", image.platform());
    println!("  created     {}", c.created.as_deref().unwrap_or("-"));
    println!(
        "  config      {} ({} bytes)",
        image.manifest().config.digest,
        image.config_bytes().len()
    );
    println!("  size        {}", human_size(image.total_size()));
    if let Some(rc) = &c.config {
        let argv = |v: &Option<Vec<String>>| {
            v.as_ref()
                .map(|v| serde_json::to_string(v).expect("strings"))
                .unwrap_or_else(|| "-".into())
        };
        println!("  entrypoint  {}", argv(&rc.entrypoint));
        println!("  cmd         {}", argv(&rc.cmd));
        println!("  user        {}", rc.user.as_deref().unwrap_or("- (root)"));
        println!("  workdir     {}", rc.working_dir.as_deref().unwrap_or("-"));
        for e in &rc.env {
            println!("  env         {e}");
        }
        for p in rc.exposed_ports.keys() {
            println!("  expose      {p}");
        }
        for (k, v) in &rc.labels {
            println!("  label       {k}={v}");
        }
        if let Some(s) = &rc.stop_signal {
            println!("  stop signal {s}");
        }
    }
    println!("  layers      {}", image.layers().len());
    for (i, l) in image.layers().iter().enumerate() {
        println!(
            "    {:>2}  {}  {:>9}  {}",
            i + 1,
            l.descriptor.digest,
            human_size(l.descriptor.size),
            l.descriptor.media_type
        );
        println!("        diff_id {}", l.diff_id);
        if let Some(files) = files {
            for f in &files[i] {
                let link = f.link.as_ref().map(|l| format!(" -> {l}")).unwrap_or_default();
                println!(
                    "        {} {:>4} {:>5}:{:<5} {:>10}  /{}{}",
                    &f.kind[..1],
                    f.mode,
                    f.uid,
                    f.gid,
                    f.size,
                    f.path,
                    link
                );
            }
        }
    }
}
