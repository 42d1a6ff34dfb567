//! `kiln completions SHELL`: shell completion scripts, from the clap
//! definitions (so they never drift from the real flags).

use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum, value_name = "SHELL")]
    shell: clap_complete::Shell,
}

pub fn run(a: Args) -> anyhow::Result<u8> {
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "kiln", &mut out);
    out!("{}", String::from_utf8_lossy(&out));
    Ok(0)
}
