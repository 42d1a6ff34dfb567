//! `kiln push SRC DEST` and `kiln pull REF --out REF`: move images between
//! any source and a registry, with the credentials people already have.

use kiln::reference::ImageRef;
use kiln::store::registry::{self, RegistryRef};

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The image to push: oci:DIR[:TAG], docker-archive:FILE, or a registry reference.
    #[arg(value_name = "SRC")]
    src: String,
    /// Where: HOST[:PORT]/REPO[:TAG].
    #[arg(value_name = "DEST")]
    dest: String,
    /// Also tag the pushed manifest with these tags. Repeatable.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// HOST[:PORT]/REPO[:TAG][@DIGEST].
    #[arg(value_name = "REF")]
    image: String,
    /// Where to write it (oci:DIR[:TAG], docker-archive:FILE, docker-daemon:NAME).
    #[arg(long = "out", value_name = "REF", required = true)]
    outs: Vec<String>,
    /// Platform to pick from a multi-platform image [default: the host's].
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
}

fn registry_ref(s: &str) -> anyhow::Result<RegistryRef> {
    match ImageRef::parse(s)? {
        ImageRef::Registry(r) => Ok(r),
        other => Err(kiln::Error::invalid(
            "destination",
            other.to_string(),
            "push goes to a registry: HOST[:PORT]/REPO[:TAG]; to write elsewhere use kiln assemble --from SRC --out REF",
        )
        .into()),
    }
}

pub fn push(a: PushArgs, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let dest = registry_ref(&a.dest)?;
    for t in &a.tags {
        if !kiln::reference::valid_tag(t) {
            return Err(
                kiln::Error::invalid("--tag", t.as_str(), "1-128 of [A-Za-z0-9_.-], not starting with . or -").into(),
            );
        }
    }
    let src = ImageRef::parse(&a.src)?;
    // A layout tag that names an index is pushed whole: children, then the index.
    let multi = match &src {
        ImageRef::Oci { dir, tag } => kiln::store::layout::read_multi(dir, tag.as_deref())?,
        _ => None,
    };
    let report = match multi {
        Some(m) => registry::push_index(&m, &dest, &a.tags)?,
        None => {
            let image = kiln::store::open(&src, None)?;
            registry::push(&image, &dest, &a.tags)?
        }
    };
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["destination"] = dest.to_string().into();
        v["seconds"] = started.elapsed().as_secs_f64().into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{}", report.digest);
        if !quiet {
            eprintln!(
                "pushed {dest}: {} blobs uploaded ({} bytes), {} already there, {} mounted, in {:.1}s",
                report.uploaded,
                report.bytes_uploaded,
                report.skipped,
                report.mounted,
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(0)
}

pub fn pull(a: PullArgs, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let r = registry_ref(&a.image)?;
    let platform = a.platform.as_deref().map(kiln::oci::Platform::parse).transpose()?;
    let (outs, sinks) = kiln::store::outputs(&a.outs)?;
    let image = registry::pull(&r, platform.as_ref())?;
    for s in &sinks {
        s.put(&image)?;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "digest": image.digest().to_string(),
                "platform": image.platform().to_string(),
                "size": image.total_size(),
                "outputs": outs.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
            }))?
        );
    } else {
        println!("{}", image.digest());
        if !quiet {
            for o in &outs {
                eprintln!("wrote {o}");
            }
        }
    }
    Ok(0)
}
