//! Typed errors of the kiln library. Every variant a user can cause says what
//! was wrong, where, and what to do; the binary adds context with anyhow.

use std::path::PathBuf;

/// Result with kiln's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An input given by the user is malformed; `what` names the flag or field.
    #[error("invalid {what} `{value}`: {reason}")]
    Invalid {
        what: &'static str,
        value: String,
        reason: String,
    },

    /// A file or directory to read could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An output could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Two inputs want to put something at the same path in a layer.
    #[error(
        "duplicate destination `{path}` in the image: {first} and {second} both add it; give each a distinct destination"
    )]
    DuplicateDestination {
        path: String,
        first: String,
        second: String,
    },

    /// A file changed while it was being added to a layer.
    #[error("{} changed while it was being read (size was {expected}, now {found}); do not modify inputs during assembly", path.display())]
    ChangedWhileReading { path: PathBuf, expected: u64, found: u64 },

    /// Bytes read do not match the digest or size that describes them.
    #[error("{what}: expected {expected}, found {found}; the content is corrupt or was modified")]
    DigestMismatch {
        what: String,
        expected: String,
        found: String,
    },

    /// An image, layout or archive is not in a form kiln can read.
    #[error("{what}: {reason}")]
    Format { what: String, reason: String },

    /// An image or tag was not found in a source.
    #[error("{what} not found in {location}{hint}")]
    NotFound {
        what: String,
        location: String,
        hint: String,
    },

    /// The container engine failed or could not be reached.
    #[error("container engine: {message}")]
    Engine { message: String },

    /// A configuration file is wrong (file:line:column in the message).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),

    /// The build failed; `output` holds the compiler's own last lines.
    #[error("{message}\n{output}")]
    Build { message: String, output: String },

    /// A registry refused or failed a request.
    #[error("registry {registry}: {message}{}", if *status > 0 { format!(" (HTTP {status}{}{code})", if code.is_empty() { "" } else { ", " }) } else { String::new() })]
    Registry {
        registry: String,
        status: u16,
        code: String,
        message: String,
        retryable: bool,
    },

    /// `kiln build` refused an image that would not start (see the findings).
    #[error(
        "the image would not start ({count} error(s) found by scan); nothing was written or pushed. Fix them, or pass --allow-scan-failures"
    )]
    ScanFailed {
        count: usize,
        report: Box<crate::scan::Report>,
    },

    /// The user interrupted the command (Ctrl-C); everything was cleaned up.
    #[error("interrupted; containers removed")]
    Interrupted,

    /// An I/O error with no path to name (pipes, threads).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(what: &'static str, value: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            what,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Shorthand for [`Error::Format`].
    pub fn format(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Format {
            what: what.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn read(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Read { path, source }
    }

    pub(crate) fn write(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Write { path, source }
    }
}
