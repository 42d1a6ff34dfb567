//! `kiln push SRC DEST`: an image (or a whole index) from any source to a
//! registry, with the credentials people already have.

use kiln::context::Context;
use kiln::reference::{ImageRef, RegistryRef};
use kiln::store::registry;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image to push: oci:DIR[:TAG], docker-archive:FILE, docker-daemon:NAME, or a registry reference.
    #[arg(value_name = "SRC")]
    src: String,
    /// Where: HOST[:PORT]/REPO[:TAG].
    #[arg(value_name = "DEST")]
    pub dest: String,
    /// Also tag the pushed manifest with these tags. Repeatable.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// After the push, sign the image, its platforms and its attached
    /// documents with this cosign key (password in COSIGN_PASSWORD), as DEST.
    #[arg(long, value_name = "FILE")]
    sign_key: Option<std::path::PathBuf>,
}

/// A registry reference, or an error that says where else to write.
pub fn registry_ref(what: &'static str, s: &str) -> anyhow::Result<RegistryRef> {
    match ImageRef::parse(s)? {
        ImageRef::Registry(r) => Ok(r),
        other => Err(kiln::Error::invalid(
            what,
            other.to_string(),
            "push goes to a registry: HOST[:PORT]/REPO[:TAG]; to write elsewhere use kiln assemble --from SRC --out REF",
        )
        .into()),
    }
}

pub fn run(ctx: &Context, a: Args, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let started = std::time::Instant::now();
    let dest = registry_ref("destination", &a.dest)?;
    for t in &a.tags {
        if !kiln::reference::valid_tag(t) {
            return Err(
                kiln::Error::invalid("--tag", t.as_str(), "1-128 of [A-Za-z0-9_.-], not starting with . or -").into(),
            );
        }
    }
    // A tag that names an index is pushed whole: children, then the index.
    // What is attached to it (SBOMs, provenance) goes along.
    let src = ImageRef::parse(&a.src)?;
    let what = kiln::store::open_any(ctx, &src)?;
    let attached = kiln::store::attached_to(ctx, &src, &what)?;
    // The key is read (and its password checked) before anything moves.
    let key = a.sign_key.as_deref().map(super::sign::load_key).transpose()?;
    let report = registry::push_attached(ctx, &what, &attached, &dest, &a.tags)?;
    if let Some(key) = &key {
        let pushed = match &dest.tag {
            Some(_) => dest.clone(),
            None => dest.by_digest(what.digest()),
        };
        let subjects = kiln::sign::pushed_subjects(&what, &attached);
        let (signed, added) = kiln::sign::sign(ctx, &pushed, key, &kiln::sign::identity_of(&pushed), subjects)?;
        if !quiet {
            eprintln!(
                "signed {} manifest(s) as {pushed} ({added} new signature(s))",
                signed.len()
            );
        }
    }
    if json {
        /// What `kiln push --json` prints: the push report, where, how long.
        #[derive(serde::Serialize)]
        struct Report<'a> {
            #[serde(flatten)]
            push: &'a registry::PushReport,
            destination: String,
            seconds: f64,
        }
        let out = Report {
            push: &report,
            destination: dest.to_string(),
            seconds: started.elapsed().as_secs_f64(),
        };
        outln!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        outln!("{}", report.digest);
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
