//! `kiln man`: the man page (roff), from the clap definitions. Install with
//! `kiln man > /usr/local/share/man/man1/kiln.1`.

use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A subcommand's page instead of the main one (e.g. `build`).
    #[arg(value_name = "SUBCOMMAND")]
    subcommand: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let cmd = super::Cli::command();
    let page = match &a.subcommand {
        None => cmd,
        Some(name) => {
            let names: Vec<String> = cmd.get_subcommands().map(|c| c.get_name().to_string()).collect();
            cmd.get_subcommands()
                .find(|c| c.get_name() == name)
                .cloned()
                .ok_or_else(|| {
                    kiln::Error::invalid(
                        "subcommand",
                        name.as_str(),
                        format!("choose one of {}", names.join(", ")),
                    )
                })?
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page).render(&mut out)?;
    out!("{}", String::from_utf8_lossy(&out));
    Ok(0)
}
