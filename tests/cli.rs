//! The CLI's own documents: completions and man pages come from the clap
//! definitions, so they list the real subcommands and flags.

mod common;

use std::process::Command;

use common::*;

#[test]
fn completions_load_in_bash_and_name_the_real_flags() {
    let sb = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&ok(sb.kiln().args(["completions", shell])));
        for word in ["build", "verify", "platform", "ca-bundle"] {
            assert!(script.contains(word), "{shell} completion names {word}");
        }
    }
    let script = sb.join("kiln.bash");
    std::fs::write(&script, stdout(&ok(sb.kiln().args(["completions", "bash"])))).unwrap();
    let out = ok(Command::new("bash")
        .arg("-c")
        .arg(format!("source '{}' && complete -p kiln", script.display())));
    assert!(
        stdout(&out).contains("_kiln"),
        "bash registered the completion: {}",
        stdout(&out)
    );
    let err = fails(sb.kiln().args(["completions", "tcsh"]));
    assert!(err.contains("invalid value 'tcsh'"), "{err}");
}

#[test]
fn man_pages_cover_kiln_and_each_subcommand() {
    let sb = Sandbox::new();
    let page = stdout(&ok(sb.kiln().arg("man")));
    assert!(page.contains(".TH kiln 1"), "{page}");
    for sub in ["build", "scan", "verify", "push", "pull", "completions"] {
        assert!(page.contains(sub), "the main page lists {sub}");
    }
    let build = stdout(&ok(sb.kiln().args(["man", "build"])));
    assert!(
        build.contains("ca\\-bundle") && build.contains("allow\\-scan\\-failures"),
        "{build}"
    );
    let err = fails(sb.kiln().args(["man", "nope"]));
    assert!(err.contains("choose one of") && err.contains("build"), "{err}");
}
