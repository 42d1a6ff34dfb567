//! Progress reporting and warnings on stderr with indicatif. Hidden with
//! `--quiet`, `--json`, or when stderr is not a terminal; results go to
//! stdout. This is the library's one way to talk to the user while it works:
//! nothing else in the library prints.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How much the user wants to see on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    show: bool,
    /// Colour in bars (off when NO_COLOR is set: the CLI decides).
    color: bool,
}

impl Progress {
    /// `quiet` hides everything; bars also hide when stderr is not a terminal.
    pub fn new(quiet: bool, color: bool) -> Self {
        Progress { show: !quiet, color }
    }

    /// No output at all (library callers, tests).
    pub fn hidden() -> Self {
        Progress {
            show: false,
            color: false,
        }
    }

    /// A byte-count bar for `total` bytes.
    pub fn bytes(&self, total: u64, message: &str) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(total), self.target());
        let template = if !self.color {
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
        } else {
            "{msg} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} {eta}"
        };
        bar.set_style(
            ProgressStyle::with_template(template)
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_message(message.to_string());
        bar
    }

    /// A spinner with a message.
    pub fn spinner(&self, message: &str) -> ProgressBar {
        let bar = ProgressBar::with_draw_target(None, self.target());
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
        bar.set_message(message.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    }

    /// A warning the user should see (hidden by `--quiet`/`--json`).
    pub fn warn(&self, message: &str) {
        if self.show {
            eprintln!("kiln: warning: {}", crate::text::escape_controls(message));
        }
    }

    fn target(&self) -> ProgressDrawTarget {
        if self.show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        }
    }
}

/// A line the user asked for explicitly (`--verbose`, `--debug-registry`):
/// shown whatever the progress settings, above `bar` when one is drawing.
pub fn echo(bar: Option<&ProgressBar>, line: &str) {
    match bar {
        Some(b) => b.suspend(|| eprintln!("{line}")),
        None => eprintln!("{line}"),
    }
}
