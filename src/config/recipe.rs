//! Built-in recipes (recipes/*.toml, compiled into the binary): named,
//! versioned defaults for the target, flags, base image, user and the files
//! kiln adds. kiln.toml picks one and overrides fields.

use serde::Deserialize;

use crate::{Error, Result};

/// A recipe.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub text: &'static str,
    pub description: String,
    /// `scratch` or an image reference (pinned by digest in kiln.lock).
    pub base: String,
    /// The C library: `gnu` or `musl`; the target is `<arch>-unknown-linux-<libc>`.
    pub libc: String,
    pub rustflags: Vec<String>,
    pub user: String,
    /// Add /etc/passwd and /etc/group naming the non-root user.
    pub passwd: bool,
    /// Add the builder's CA bundle at /etc/ssl/certs/ca-certificates.crt.
    pub ca_bundle: bool,
    /// Add /tmp with mode 1777.
    pub tmp: bool,
    /// Where the binary goes.
    pub bin_dir: String,
}

const BUILTIN: &[(&str, &str)] = &[
    ("scratch-static", include_str!("../../recipes/scratch-static.toml")),
    (
        "distroless-static",
        include_str!("../../recipes/distroless-static.toml"),
    ),
    ("distroless-cc", include_str!("../../recipes/distroless-cc.toml")),
    ("debian-slim", include_str!("../../recipes/debian-slim.toml")),
    ("scratch-musl", include_str!("../../recipes/scratch-musl.toml")),
];

impl Recipe {
    /// The Rust target triple for `platform`.
    pub fn target(&self, platform: &crate::oci::Platform) -> Result<String> {
        Ok(format!("{}-unknown-linux-{}", platform.rust_arch()?, self.libc))
    }
}

/// Names of the built-in recipes.
pub fn names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// The recipe called `name`.
pub fn get(name: &str) -> Result<Recipe> {
    let (n, text) = BUILTIN.iter().find(|(n, _)| *n == name).ok_or_else(|| {
        Error::invalid(
            "recipe",
            name,
            format!("no such recipe; built-in recipes: {}", names().join(", ")),
        )
    })?;
    let mut r: Recipe = toml::from_str(text).expect("built-in recipes parse (tested)");
    r.name = n.to_string();
    r.text = text;
    Ok(r)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_builtin_parses() {
        for n in super::names() {
            let r = super::get(n).unwrap();
            assert_eq!(r.name, n);
            assert!(r.bin_dir.starts_with('/'));
            assert!(["gnu", "musl"].contains(&r.libc.as_str()), "{n}");
        }
        assert!(super::get("alpine").unwrap_err().to_string().contains("scratch-static"));
    }
}
