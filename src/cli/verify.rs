//! `kiln verify`: rebuild under variation and prove the bytes identical, or
//! explain the difference. Exit codes: 0 identical, 1 different, 2 error.

use std::path::PathBuf;

use kiln::reference::ImageRef;
use kiln::verify::{self, Vary};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The project directory.
    #[arg(long, default_value = ".", value_name = "DIR")]
    project: PathBuf,
    /// How many builds: the first is the reference, the others are varied
    /// (with --against, N varied builds are compared with that image).
    #[arg(long, default_value_t = 2, value_name = "N")]
    rebuilds: usize,
    /// Compare with this image (e.g. the one CI published) instead of a first build.
    #[arg(long, value_name = "REF")]
    pub against: Option<String>,
    /// What to vary, comma-separated [default: all].
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    vary: Vec<VaryArg>,
    /// Builder image, overriding [build] builder.
    #[arg(long, value_name = "REF")]
    builder: Option<String>,
    /// Build these platforms (repeatable) [default: [build] platforms, else the host's].
    #[arg(long = "platform", value_name = "OS/ARCH")]
    platforms: Vec<String>,
}

/// `--vary`: the library's [`Vary`], offered to clap with its own names
/// and help (one list, kept in the library).
#[derive(Debug, Clone, Copy)]
pub struct VaryArg(Vary);

impl clap::ValueEnum for VaryArg {
    fn value_variants<'a>() -> &'a [Self] {
        const ALL: [VaryArg; 6] = [
            VaryArg(Vary::ALL[0]),
            VaryArg(Vary::ALL[1]),
            VaryArg(Vary::ALL[2]),
            VaryArg(Vary::ALL[3]),
            VaryArg(Vary::ALL[4]),
            VaryArg(Vary::ALL[5]),
        ];
        &ALL
    }
    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0.name()).help(self.0.help()))
    }
}

pub fn run(ctx: &kiln::context::Context, a: Args, json: bool) -> anyhow::Result<u8> {
    let vary: Vec<Vary> = if a.vary.is_empty() {
        Vary::ALL.to_vec()
    } else {
        a.vary.iter().map(|v| v.0).collect()
    };
    if a.rebuilds == 0 {
        return Err(kiln::Error::invalid("--rebuilds", "0", "at least 1 rebuild").into());
    }
    let against = a.against.as_deref().map(ImageRef::parse).transpose()?;
    let req = verify::VerifyRequest {
        project: a.project,
        rebuilds: a.rebuilds,
        against,
        vary,
        builder: a.builder,
        platforms: a
            .platforms
            .iter()
            .map(|p| kiln::oci::Platform::parse(p))
            .collect::<Result<_, _>>()?,
    };
    let report = verify::verify(ctx, &req)?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        outln!(
            "{}",
            if report.identical {
                "identical"
            } else {
                "NOT reproducible"
            }
        );
        outln!("  reference: {}", report.reference);
        for b in &report.builds {
            outln!("  {}: {}", b.label, b.digest);
            for v in &b.variation {
                outln!("      {v}");
            }
        }
        for d in &report.differences {
            outln!("\n{} differs from the reference:", d.build);
            for line in verify::render::render(&d.diff).lines() {
                outln!("  {line}");
            }
            for h in &d.hints {
                outln!("  hint: {h}");
            }
        }
    }
    Ok(if report.identical { 0 } else { 1 })
}
