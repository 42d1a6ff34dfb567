//! The CI example (docs/ci/github-actions.yml) runs here as written: every
//! `run:` step but "Install kiln", in order, on a new Cargo project, with
//! the registry on loopback. A step that stops working fails this test.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

/// (step name, script) for each `run:` step of a workflow, in order.
fn run_steps(yaml: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut steps = Vec::new();
    let mut name = String::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        let t = l.trim_start();
        if let Some(n) = t.strip_prefix("- name: ") {
            name = n.trim().to_string();
        }
        if let Some(rest) = t.strip_prefix("run:") {
            let rest = rest.trim();
            if rest == "|" {
                let indent = l.len() - t.len();
                let mut script = String::new();
                i += 1;
                while i < lines.len() {
                    let b = lines[i];
                    let bi = b.len() - b.trim_start().len();
                    if !b.trim().is_empty() && bi <= indent {
                        break;
                    }
                    script.push_str(b.get(indent + 2..).unwrap_or("").trim_end());
                    script.push('\n');
                    i += 1;
                }
                steps.push((name.clone(), script));
                continue;
            }
            steps.push((name.clone(), rest.to_string()));
        }
        i += 1;
    }
    steps
}

#[test]
fn the_workflow_parses_into_the_steps_it_shows() {
    let yaml = std::fs::read_to_string(repo().join("docs/ci/github-actions.yml")).unwrap();
    let steps = run_steps(&yaml);
    let names: Vec<&str> = steps.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "Install kiln",
            "Build",
            "Will it start",
            "Rebuild byte for byte",
            "Push",
            "The published image is what this source builds"
        ]
    );
    assert!(steps[1].1.contains("kiln build --locked"), "{:?}", steps[1]);
    // GitHub substitutes `${{ }}` before the shell runs; the steps keep
    // them in `env:` so the scripts run the same here.
    assert!(!steps.iter().any(|(_, s)| s.contains("${{")), "{steps:?}");
}

#[test]
fn the_ci_example_builds_verifies_pushes_and_verifies_the_published_image() {
    require_engine();
    let registry = &dev_env()["KILN_REGISTRY"];
    let yaml = std::fs::read_to_string(repo().join("docs/ci/github-actions.yml")).unwrap();
    let sb = Sandbox::new();
    ok(Command::new("cargo")
        .current_dir(sb.path())
        .args(["new", "--quiet", "--bin", "ci-app"]));
    let project = sb.join("ci-app");
    ok(Command::new("cargo")
        .current_dir(&project)
        .args(["generate-lockfile", "--offline"]));
    // What a user does once before committing: pin the builder.
    ok(sb.kiln().current_dir(&project).arg("lock"));
    for args in [
        &["add", "-A"][..],
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "commit",
            "-qm",
            "init",
        ],
    ] {
        ok(Command::new("git").current_dir(&project).args(args));
    }
    let kiln_dir = Path::new(env!("CARGO_BIN_EXE_kiln")).parent().unwrap().to_path_buf();
    let path = format!("{}:{}", kiln_dir.display(), std::env::var("PATH").unwrap());
    let image = unique("kiln-test/ci");
    let sha = unique("sha");
    for (name, script) in run_steps(&yaml) {
        if name == "Install kiln" {
            continue;
        }
        let mut c = sb.shell(&script);
        // The same isolated environment as every kiln run, plus what the
        // workflow's env and GitHub give a step.
        c.current_dir(&project)
            .env("PATH", &path)
            .env("REGISTRY", registry)
            .env("IMAGE", &image)
            .env("GITHUB_SHA", &sha)
            .env("REGISTRY_USER", "ci")
            .env("REGISTRY_PASSWORD", "not-checked-by-a-loopback-registry");
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "step `{name}` failed:\n{script}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The pushed image is there under both tags and runs.
    let mut engine = EngineObjects::new();
    let pulled = engine.image(format!("{registry}/{image}:latest"));
    ok(Command::new("docker").args(["pull", "-q", &pulled]));
    let run = ok(Command::new("docker").args(["run", "--rm", &pulled]));
    assert_eq!(stdout(&run).trim(), "Hello, world!");
}
