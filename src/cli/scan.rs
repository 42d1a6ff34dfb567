//! `kiln scan REF`: will this image start? Exit 0 clean, 1 errors found, 2 could not scan.

use kiln::reference::ImageRef;
use kiln::scan::{self, Report, Severity};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image: oci:DIR[:TAG], docker-archive:FILE, or a registry reference.
    #[arg(value_name = "REF")]
    pub image: String,
    /// Check every ELF file in the image, not only the entrypoint and what it loads.
    #[arg(long)]
    all: bool,
    /// Platform to pick from a multi-platform image [default: every platform].
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
}

/// One platform's scan in `kiln scan --json` of an index.
#[derive(serde::Serialize)]
struct PlatformScan {
    platform: String,
    digest: String,
    report: Report,
}

pub fn run(ctx: &kiln::context::Context, a: Args, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let r = ImageRef::parse(&a.image)?;
    let platform = a.platform.as_deref().map(kiln::oci::Platform::parse).transpose()?;
    let sp = ctx.progress.spinner(&format!("scanning {r}"));
    let opts = scan::Options { all: a.all };
    // One platform asked for (or a plain image): one report, as before.
    let any = match &platform {
        Some(p) => kiln::image::AnyImage::Image(kiln::store::open(ctx, &r, Some(p))?),
        None => kiln::store::open_any(ctx, &r)?,
    };
    if let kiln::image::AnyImage::Image(image) = &any {
        let report = scan::scan(image, opts)?;
        sp.finish_and_clear();
        if json {
            outln!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&r.to_string(), &report, quiet, false);
        }
        return Ok(if report.failed() { 1 } else { 0 });
    }
    // An index: every platform, each with the loader paths of its machine.
    let mut scans = Vec::new();
    for image in any.images() {
        scans.push(PlatformScan {
            platform: image.platform().to_string(),
            digest: image.digest().to_string(),
            report: scan::scan(image, opts)?,
        });
    }
    sp.finish_and_clear();
    let failed = scans.iter().any(|s| s.report.failed());
    if json {
        outln!("{}", serde_json::to_string_pretty(&scans)?);
    } else {
        for s in &scans {
            print_report(&format!("{r} ({})", s.platform), &s.report, quiet, false);
        }
    }
    Ok(if failed { 1 } else { 0 })
}

/// Prints findings for people, most severe first (on stderr when the
/// command's result on stdout is something else, like build's digest).
pub fn print_report(name: &str, report: &Report, quiet: bool, stderr: bool) {
    let out = |line: String| {
        if stderr { eprintln!("{line}") } else { outln!("{line}") }
    };
    if report.findings.is_empty() {
        if !quiet {
            out(format!(
                "{name}: will start: {} ELF object(s) checked, entrypoint {:?}, no findings",
                report.objects.len(),
                report.entrypoint
            ));
        }
        return;
    }
    out(format!("{name}: {} finding(s)", report.findings.len()));
    for f in &report.findings {
        let sev = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        };
        // Paths and messages carry names from the image: no raw control characters.
        let esc = |s: &str| kiln::text::escape_controls(s).into_owned();
        out(format!("  {sev}: {}: {}", esc(&f.file), esc(&f.message)));
        out(format!("    fix: {}", esc(&f.fix)));
    }
}
