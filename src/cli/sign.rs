//! `kiln sign`, `kiln verify-signature`, `kiln generate-key-pair`:
//! cosign-compatible key-based signatures (see `kiln::sign`). The private
//! key's password comes from COSIGN_PASSWORD, as with cosign.

use std::path::{Path, PathBuf};

use kiln::sign::{self, IdentityRule, PrivateKey};

#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The image in a registry: HOST[:PORT]/REPO:TAG (or @DIGEST).
    #[arg(value_name = "REF")]
    pub image: String,
    /// cosign private key file (password in COSIGN_PASSWORD).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The name the signature vouches for [default: REF as given, normalized].
    #[arg(long, value_name = "REF")]
    identity: Option<String>,
    /// Sign only the image (or index) and its platforms, not the attached SBOMs and provenance.
    #[arg(long)]
    no_attached: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The image in a registry: HOST[:PORT]/REPO:TAG (or @DIGEST).
    #[arg(value_name = "REF")]
    pub image: String,
    /// cosign public key file (PEM PUBLIC KEY).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// Accept any identity in the image's repository (cosign signs HOST/REPO alone);
    /// by default a tag reference needs a signature for exactly HOST/REPO:TAG.
    #[arg(long)]
    match_repository: bool,
    /// Also require signatures on the attached SBOMs and provenance.
    #[arg(long)]
    attached: bool,
}

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Write PREFIX.key (encrypted with COSIGN_PASSWORD, mode 0600) and PREFIX.pub.
    #[arg(long, default_value = "cosign", value_name = "PREFIX")]
    output_prefix: PathBuf,
}

/// COSIGN_PASSWORD, as cosign reads it (set and empty is an empty password).
fn password(what: &str) -> anyhow::Result<Vec<u8>> {
    match std::env::var_os("COSIGN_PASSWORD") {
        Some(p) => Ok(p.into_encoded_bytes()),
        None => Err(kiln::Error::invalid(
            "COSIGN_PASSWORD",
            "(unset)",
            format!("set COSIGN_PASSWORD to the password of {what} (an empty value means no password)"),
        )
        .into()),
    }
}

/// Loads the signing key named on the command line.
pub fn load_key(path: &Path) -> anyhow::Result<PrivateKey> {
    let pw = password(&path.display().to_string())?;
    Ok(sign::load_private(path, &pw)?)
}

pub fn run_sign(ctx: &kiln::context::Context, a: SignArgs, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let r = super::push::registry_ref("image", &a.image)?;
    let key = load_key(&a.key)?;
    let identity = a.identity.unwrap_or_else(|| sign::identity_of(&r));
    let subjects = sign::subjects(ctx, &r, !a.no_attached)?;
    let (signed, added) = sign::sign(ctx, &r, &key, &identity, subjects)?;
    if json {
        #[derive(serde::Serialize)]
        struct Report<'a> {
            identity: &'a str,
            signed: &'a [sign::Signed],
            added: usize,
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&Report {
                identity: &identity,
                signed: &signed,
                added
            })?
        );
        return Ok(0);
    }
    for s in &signed {
        outln!("{}  {}", s.subject.digest, kiln::text::escape_controls(&s.subject.what));
    }
    if !quiet {
        eprintln!(
            "signed {} manifest(s) as {identity} ({added} new signature(s), stored under sha256-<hex>.sig tags)",
            signed.len()
        );
    }
    Ok(0)
}

pub fn run_verify(ctx: &kiln::context::Context, a: VerifyArgs, json: bool, quiet: bool) -> anyhow::Result<u8> {
    let r = super::push::registry_ref("image", &a.image)?;
    let key = sign::load_public(&a.key)?;
    let rule = if a.match_repository {
        IdentityRule::Repository
    } else {
        IdentityRule::RepoDigestOrExact
    };
    let checked = sign::verify(ctx, &r, &key, rule, a.attached)?;
    let ok = checked.iter().all(|c| c.valid > 0);
    if json {
        outln!("{}", serde_json::to_string_pretty(&checked)?);
    } else {
        for c in &checked {
            let verdict = if c.valid > 0 { "verified" } else { "NOT SIGNED" };
            outln!(
                "{verdict:<10} {}  {}",
                c.subject.digest,
                kiln::text::escape_controls(&c.subject.what)
            );
            if c.valid == 0 && !quiet {
                for why in &c.rejected {
                    eprintln!("  a signature was rejected: {}", kiln::text::escape_controls(why));
                }
            }
        }
    }
    if !ok && !quiet {
        eprintln!(
            "kiln: not every manifest of {r} has a valid signature from {}",
            a.key.display()
        );
    }
    Ok(if ok { 0 } else { 1 })
}

pub fn run_keygen(a: KeygenArgs, quiet: bool) -> anyhow::Result<u8> {
    let pw = password("the new key")?;
    let (key_path, pub_path) = sign::generate_key_files(&a.output_prefix, &pw)?;
    if !quiet {
        eprintln!(
            "wrote {} (private, encrypted with COSIGN_PASSWORD) and {} (public)",
            key_path.display(),
            pub_path.display()
        );
    }
    Ok(0)
}
