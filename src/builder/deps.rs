//! The compiled-dependencies layer of the registry build cache: after a
//! build, the target directory's dependency artifacts (`deps/`, `build/`,
//! `.fingerprint/` of the build's target and of the host, minus every path
//! package: the workspace's own crates and path dependencies), stored under
//! a key of everything that decides them. A runner whose target volume is
//! new restores it before compiling, so its first build compiles only the
//! path crates.
//!
//! Why this cannot change the image: cargo itself decides what is fresh.
//! Registry crates are judged by their fingerprint (version, features,
//! profile, flags, toolchain), which is in the restored files and checked
//! like any other; path crates are not in the layer at all. The restored
//! files get one mtime, before the sources kiln touches, so cargo's mtime
//! checks see them as built after the crate sources they came from.

use std::collections::{BTreeSet, HashSet};
use std::io::Read;
use std::path::PathBuf;

use bollard::Docker;
use bollard::query_parameters::DownloadFromContainerOptionsBuilder;
use futures_util::StreamExt;

use super::PinnedImage;
use super::plan::Plan;
use crate::context::Context;
use crate::digest::{Digest, HashingWriter};
use crate::image::Layer;
use crate::layer::read::{Kind, Limits};
use crate::layer::tar::{EntryHeader, EntryKind, TarWriter};
use crate::layer::{Compression, LayerInfo, compress};
use crate::oci::Descriptor;
use crate::store::registry::cache::{self as registry_cache, Mode, RemoteCache};
use crate::{Error, Result};

/// The cache key of the dependency artifacts: the lockfile, the builder,
/// and what cargo is told (target, profile, features and package by the
/// command line, RUSTFLAGS, environment, source path). None without a
/// Cargo.lock (nothing to key on).
pub fn key(plan: &Plan, pinned: &PinnedImage, env: &[String], rustflags: &[String]) -> Option<Digest> {
    let lock = std::fs::read(plan.project.join("Cargo.lock")).ok()?;
    let doc = serde_json::json!({
        "kind": "kiln-cargo-deps-v1",
        "cargo_lock": Digest::of(&lock).to_string(),
        "builder": pinned.digest.to_string(),
        "target": plan.target,
        "profile": plan.profile,
        "cargo": plan.build_args(),
        // Not SOURCE_DATE_EPOCH (by default the commit's time: a new key per
        // commit); cargo does not rebuild a dependency for it either.
        "env": env.iter().filter(|e| !e.starts_with("SOURCE_DATE_EPOCH=")).collect::<Vec<_>>(),
        "rustflags": rustflags,
        "src": plan.src_dir(),
    });
    Some(Digest::of(&serde_json::to_vec(&doc).expect("serializable")))
}

/// What a docker build does with the dependency layer.
pub struct Job {
    pub key: Digest,
    pub cache: RemoteCache,
    /// The layer to restore into the (new) target volume.
    pub restore: Option<Layer>,
    /// Whether to export the layer after the build (a writer, and the
    /// cache has none for this key).
    pub export: bool,
}

/// Decides the dependency layer's part in a docker build: only with a
/// registry cache, for a plain build (not `--fresh`, not verify's
/// variations), restoring only into a target volume that does not exist
/// yet (a warm volume is already better than the layer).
pub fn prepare(ctx: &Context, plan: &Plan, pinned: &PinnedImage, env: &[String], rustflags: &[String]) -> Option<Job> {
    let cache = plan.remote_cache.clone()?;
    if plan.fresh.is_some() || plan.variation.is_some() {
        return None;
    }
    let key = key(plan, pinned, env, rustflags)?;
    let volume = plan.target_volume(pinned);
    let absent = crate::store::daemon::runtime().ok()?.block_on(async {
        let docker = crate::store::daemon::connect(&ctx.engine).ok()?;
        match docker.inspect_volume(&volume).await {
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Some(true),
            Ok(_) => Some(false),
            Err(_) => None,
        }
    })?;
    let writer = cache.mode == Mode::ReadWrite;
    let warn = |e: &Error| {
        ctx.progress.warn(&format!(
            "the registry cache {}'s dependency layer could not be read ({e}); compiling everything",
            cache.repo
        ))
    };
    let (restore, have) = if absent {
        let sp = ctx
            .progress
            .spinner("looking for compiled dependencies in the registry cache");
        let found = registry_cache::lookup_deps(ctx, &cache, &key, &plan.platform);
        sp.finish_and_clear();
        match found {
            Ok(l) => {
                let have = l.is_some();
                (l, have)
            }
            Err(e) => {
                warn(&e);
                (None, true)
            }
        }
    } else if writer {
        match registry_cache::deps_exist(ctx, &cache, &key) {
            Ok(have) => (None, have),
            Err(e) => {
                warn(&e);
                (None, true)
            }
        }
    } else {
        (None, true)
    };
    Some(Job {
        key,
        cache,
        restore,
        export: writer && !have,
    })
}

/// The line the build script prints last when it put a restored layer in
/// place (last: the log kiln keeps is its tail).
pub const RESTORED: &str = "kiln: restored the compiled dependencies";

/// The build script's last line: says [`RESTORED`] when the restore script set its mark.
pub fn report_restored() -> String {
    format!("if [ -n \"${{kiln_restored:-}}\" ]; then echo \"{RESTORED}\"; fi\n")
}

/// The staging directory (in the target volume) a restore is unpacked into.
pub fn staging_dir(nonce: &str) -> String {
    format!(".kiln-restore-{nonce}")
}

/// A tar of one directory entry, `dir/`.
pub fn dir_tar(dir: &str) -> Result<Vec<u8>> {
    small_tar(&format!("{dir}/"), tar::EntryType::Directory, 0o755)
}

/// A tar of the empty file `dir/.complete`: the mark that the layer arrived whole.
pub fn complete_tar(dir: &str) -> Result<Vec<u8>> {
    small_tar(&format!("{dir}/.complete"), tar::EntryType::Regular, 0o644)
}

fn small_tar(path: &str, kind: tar::EntryType, mode: u32) -> Result<Vec<u8>> {
    let bad = |e: std::io::Error| Error::format("restore staging", e.to_string());
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(0);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_path(path).map_err(bad)?;
    h.set_cksum();
    b.append(&h, std::io::empty()).map_err(bad)?;
    b.into_inner().map_err(bad)
}

/// Shell lines for the build phase, run under the target volume's lock:
/// a restore that arrived whole is moved into place (only what is not
/// there: a concurrent build of a new volume may have been first; renames,
/// so no half-written file is ever where cargo looks), every restored file
/// gets one mtime, now (whole seconds: newer than the crate sources the
/// fetch unpacked, older than the project sources kiln touches next), and
/// the staging directory goes, whole or not.
pub fn restore_script(target_dir: &str, nonce: &str, target: &str, profile: &str) -> String {
    let r = format!("{target_dir}/{}", staging_dir(nonce));
    format!(
        r#"if [ -f "{r}/.complete" ]; then
  rm -f "{r}/.complete"
  for d in "{r}"/* "{r}"/{target}/*; do
    case "$d" in "{r}/{target}") continue ;; esac
    [ -e "$d" ] || continue
    dest="{target_dir}/${{d#{r}/}}"
    if [ ! -e "$dest" ]; then mkdir -p "$(dirname "$dest")" && mv "$d" "$dest"; fi
  done
  t=$(date +%s)
  find {target_dir}/{target}/{profile} {target_dir}/{profile} -exec touch -c -h -d @$t {{}} + 2>/dev/null || true
  kiln_restored=1
fi
rm -rf "{r}"
"#
    )
}

/// Pushes an exported layer as the entry for `job`'s key.
pub fn store(ctx: &Context, plan: &Plan, job: &Job, info: LayerInfo, path: PathBuf) -> Result<()> {
    if info.descriptor.size > registry_cache::MAX_DEPS {
        return Err(Error::invalid(
            "dependency layer",
            format!("{} bytes", info.descriptor.size),
            format!(
                "over the {} bytes a reader accepts; not stored (is the target volume full of old builds? `docker volume rm` it)",
                registry_cache::MAX_DEPS
            ),
        ));
    }
    let layer = Layer::from_written(info, path, None);
    registry_cache::store_deps(ctx, &job.cache, &job.key, layer, &plan.platform)?;
    Ok(())
}

/// The path packages of a build (from `cargo metadata`): their package
/// names (`build/`, `.fingerprint/` entries) and crate names (`deps/`).
#[derive(Debug, Default, Clone)]
pub struct PathCrates {
    packages: BTreeSet<String>,
    crates: BTreeSet<String>,
}

/// The path packages `cargo metadata` lists (those without a source).
pub fn path_crates(metadata: &[u8]) -> Result<PathCrates> {
    #[derive(serde::Deserialize)]
    struct Meta {
        packages: Vec<Pkg>,
    }
    #[derive(serde::Deserialize)]
    struct Pkg {
        name: String,
        source: Option<String>,
        targets: Vec<Target>,
    }
    #[derive(serde::Deserialize)]
    struct Target {
        name: String,
    }
    let m: Meta =
        serde_json::from_slice(metadata).map_err(|e| Error::format("cargo metadata", format!("unreadable: {e}")))?;
    let mut pc = PathCrates::default();
    for p in m.packages.into_iter().filter(|p| p.source.is_none()) {
        pc.crates.extend(p.targets.iter().map(|t| t.name.replace('-', "_")));
        pc.packages.insert(p.name);
    }
    Ok(pc)
}

/// `name-<16 hex>` (with any `.ext`): the name.
fn hashed_name(entry: &str) -> Option<&str> {
    let base = entry.split_once('.').map_or(entry, |(b, _)| b);
    let (name, hash) = base.rsplit_once('-')?;
    (hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit())).then_some(name)
}

/// Whether a target-dir entry (relative path) goes into the layer: under
/// `<target>/<profile>/` or the host's `<profile>/`, in `deps/`, `build/` or
/// `.fingerprint/`, and not a path package's. Anything not recognised stays
/// out: cargo rebuilds what is missing, never what is present but wrong.
pub fn keep(rel: &str, target: &str, profile: &str, pc: &PathCrates) -> bool {
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    let rest = match parts.as_slice() {
        [t, p, rest @ ..] if *t == target && *p == profile => rest,
        [t] if *t == target => return true,
        [p, rest @ ..] if *p == profile => rest,
        _ => return false,
    };
    match rest {
        [] => true,
        [kind, ..] if !matches!(*kind, "deps" | "build" | ".fingerprint") => false,
        [_] => true,
        [kind, entry, ..] => match hashed_name(entry) {
            None => false,
            Some(name) if *kind == "deps" => {
                !(pc.crates.contains(name) || name.strip_prefix("lib").is_some_and(|n| pc.crates.contains(n)))
            }
            Some(name) => !pc.packages.contains(name),
        },
    }
}

/// The most a target directory may hold, uncompressed, for the export.
const MAX_TARGET: u64 = 64 << 30;

/// Writes the dependency layer of the target directory `target_dir`, read
/// from `container`'s volume through the engine's archive API (so it works
/// on a remote engine), into `out`: kept entries only, uid/gid 0, mtime 0,
/// gzip; hashed in the one pass.
pub async fn export(
    docker: &Docker,
    container: &str,
    target_dir: &str,
    keep: impl Fn(&str) -> bool + Send + 'static,
    out: PathBuf,
) -> Result<LayerInfo> {
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
    let writer = tokio::task::spawn_blocking(move || {
        write_layer(
            ChannelReader {
                rx,
                cur: bytes::Bytes::new(),
            },
            keep,
            &out,
        )
    });
    let opts = DownloadFromContainerOptionsBuilder::default().path(target_dir).build();
    let mut s = docker.download_from_container(container, Some(opts));
    let mut failed = None;
    while let Some(chunk) = s.next().await {
        match chunk {
            // A closed channel: the writer stopped (its error is the one to report).
            Ok(c) => {
                if tx.send(c).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failed = Some(Error::Engine {
                    message: format!("reading the target volume from the engine: {e}"),
                });
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| Error::Engine {
        message: format!("the dependency layer writer stopped: {e}"),
    })?;
    match failed {
        Some(e) => Err(e),
        None => written,
    }
}

/// After a writer's build: the dependency layer of its target volume in
/// `out`, or None, said as a warning (the image is built either way).
/// Without cargo's package list the path crates cannot be told apart: no
/// layer rather than one that carries the workspace's own crates.
pub async fn export_after_build(
    docker: &Docker,
    container: &str,
    target_dir: &str,
    plan: &Plan,
    metadata: Option<&[u8]>,
    out: &std::path::Path,
    progress: &crate::progress::Progress,
) -> Option<LayerInfo> {
    let Some(metadata) = metadata else {
        progress.warn("no cargo metadata: the compiled dependencies are not exported");
        return None;
    };
    let exported = match path_crates(metadata) {
        Ok(pc) => {
            let (target, profile) = (plan.target.clone(), plan.profile_dir().to_string());
            let keep = move |rel: &str| keep(rel, &target, &profile, &pc);
            export(docker, container, target_dir, keep, out.to_path_buf()).await
        }
        Err(e) => Err(e),
    };
    exported
        .map_err(|e| progress.warn(&format!("could not export the compiled dependencies ({e})")))
        .ok()
}

/// A blocking reader over chunks sent from the async side.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    cur: bytes::Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

fn write_layer(mut input: impl Read, keep: impl Fn(&str) -> bool, out: &std::path::Path) -> Result<LayerInfo> {
    let io_err = |source: std::io::Error| Error::Io {
        context: "writing the dependency layer".into(),
        source,
    };
    let file = std::fs::File::create(out).map_err(Error::write(out))?;
    let compression = Compression::default();
    let stored = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, file));
    let compressor = compress::Compressor::new(stored, compression).map_err(io_err)?;
    let mut tar = TarWriter::new(HashingWriter::new(compressor));
    let limits = Limits {
        max_total: MAX_TARGET,
        ..Limits::default()
    };
    let mut files: HashSet<String> = HashSet::new();
    let mut buf = vec![0u8; 256 * 1024];
    crate::layer::read::entries(&mut input, &limits, "the target volume", |meta, content| {
        // The archive's entries are `target/…` (the directory's own name first).
        let path = meta.path.trim_start_matches("./").trim_end_matches('/');
        let Some(("target", rel)) = path.split_once('/') else {
            return Ok(());
        };
        if !keep(rel) {
            return Ok(());
        }
        let kind = match meta.kind {
            Kind::File => EntryKind::File { size: meta.size },
            Kind::Dir => EntryKind::Dir,
            // cargo makes no symlinks there; one could point anywhere in a
            // reader's container.
            Kind::Symlink => return Ok(()),
            Kind::Hardlink => {
                let target = meta.link.as_deref().unwrap_or_default().trim_start_matches("./");
                match target.split_once('/') {
                    Some(("target", t)) if files.contains(t) => EntryKind::Hardlink { target: t.to_string() },
                    _ => return Ok(()),
                }
            }
            _ => return Ok(()),
        };
        tar.header(&EntryHeader {
            path: rel.to_string(),
            kind: kind.clone(),
            // Owned by root in every reader: no set-id or sticky bits.
            mode: meta.mode & 0o777,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: Default::default(),
        })
        .map_err(io_err)?;
        if let EntryKind::File { size } = kind {
            let mut left = size;
            while left > 0 {
                let want = left.min(buf.len() as u64) as usize;
                let n = content.read(&mut buf[..want]).map_err(io_err)?;
                if n == 0 {
                    return Err(io_err(std::io::ErrorKind::UnexpectedEof.into()));
                }
                tar.write_data(&buf[..n]).map_err(io_err)?;
                left -= n as u64;
            }
            tar.pad(size).map_err(io_err)?;
            files.insert(rel.to_string());
        }
        Ok(())
    })?;
    let (compressor, diff_id, tar_size) = tar.finish().map_err(io_err)?.finish();
    let stored = compressor.finish().map_err(io_err)?;
    let (w, digest, size) = stored.finish();
    w.into_inner()
        .map_err(|e| io_err(e.into_error()))?
        .sync_all()
        .map_err(Error::write(out))?;
    Ok(LayerInfo {
        descriptor: Descriptor::new(compression.media_type(), digest, size),
        diff_id,
        tar_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pc() -> PathCrates {
        let meta = br#"{"packages":[
            {"name":"my-app","source":null,"targets":[{"name":"my-app"},{"name":"build-script-build"}]},
            {"name":"my-lib","source":null,"targets":[{"name":"my_lib"}]},
            {"name":"serde","source":"registry+https://github.com/rust-lang/crates.io-index","targets":[{"name":"serde"}]}
        ]}"#;
        path_crates(meta).unwrap()
    }

    #[test]
    fn dependency_artifacts_are_kept_and_path_crates_left_out() {
        let pc = pc();
        let t = "x86_64-unknown-linux-gnu";
        let k = |p: &str| keep(p, t, "release", &pc);
        for p in [
            "x86_64-unknown-linux-gnu",
            "x86_64-unknown-linux-gnu/release",
            "x86_64-unknown-linux-gnu/release/deps",
            "x86_64-unknown-linux-gnu/release/deps/libserde-0123456789abcdef.rlib",
            "x86_64-unknown-linux-gnu/release/deps/serde-0123456789abcdef.d",
            "x86_64-unknown-linux-gnu/release/.fingerprint/serde-0123456789abcdef/lib-serde",
            "release/build/serde-fedcba9876543210/build-script-build",
            "release/deps/libserde_derive-0123456789abcdef.so",
        ] {
            assert!(k(p), "{p} kept");
        }
        for p in [
            // Path crates: the workspace's and path dependencies.
            "x86_64-unknown-linux-gnu/release/deps/my_app-0123456789abcdef",
            "x86_64-unknown-linux-gnu/release/deps/my_app-0123456789abcdef.d",
            "x86_64-unknown-linux-gnu/release/deps/libmy_lib-0123456789abcdef.rlib",
            "x86_64-unknown-linux-gnu/release/.fingerprint/my-app-0123456789abcdef/bin-my-app",
            "release/build/my-app-0123456789abcdef/build-script-build",
            // Uplifted outputs, other profiles and targets, cargo's own files.
            "x86_64-unknown-linux-gnu/release/my-app",
            "x86_64-unknown-linux-gnu/release/.cargo-lock",
            "x86_64-unknown-linux-gnu/release/incremental/x",
            "x86_64-unknown-linux-gnu/debug/deps/libserde-0123456789abcdef.rlib",
            "aarch64-unknown-linux-gnu/release/deps/libserde-0123456789abcdef.rlib",
            ".rustc_info.json",
            ".kiln-build-lock",
            // Not cargo's naming: left out rather than guessed at.
            "x86_64-unknown-linux-gnu/release/deps/serde-notahash.d",
        ] {
            assert!(!k(p), "{p} left out");
        }
    }

    #[test]
    fn the_restore_script_moves_only_a_whole_layer_and_never_over_what_is_there() {
        let d = tempfile::tempdir().unwrap();
        let target_dir = d.path().to_str().unwrap();
        let t = "x86_64-unknown-linux-gnu";
        let staging = d.path().join(staging_dir("n1"));
        let lib = format!("{t}/release/deps/libserde-0123456789abcdef.rlib");
        let fill = || {
            std::fs::create_dir_all(staging.join(format!("{t}/release/deps"))).unwrap();
            std::fs::write(staging.join(&lib), b"rlib").unwrap();
            std::fs::create_dir_all(staging.join("release/build/x")).unwrap();
        };
        let run = || {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(restore_script(target_dir, "n1", t, "release") + &report_restored())
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        // Cut short (no .complete): nothing moves, the staging goes.
        fill();
        assert!(!run().contains(RESTORED));
        assert!(!staging.exists() && !d.path().join(t).exists());
        // Whole: moved into place, but not over what a concurrent build made.
        fill();
        std::fs::write(staging.join(".complete"), b"").unwrap();
        std::fs::create_dir_all(d.path().join("release")).unwrap();
        std::fs::write(d.path().join("release/theirs"), b"").unwrap();
        assert!(run().contains(RESTORED));
        assert_eq!(std::fs::read(d.path().join(&lib)).unwrap(), b"rlib");
        assert!(d.path().join("release/theirs").exists() && !d.path().join("release/build").exists());
        assert!(!staging.exists());
    }

    #[test]
    fn the_layer_keeps_what_keep_says_with_fixed_metadata_and_links() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8], kind: tar::EntryType, link: Option<&str>| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_size(data.len() as u64);
            h.set_mode(0o755);
            h.set_uid(1000);
            h.set_mtime(1_700_000_000);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_path(path).unwrap();
            h.set_cksum();
            tar.append(&h, data).unwrap();
        };
        add("target/release/deps/", b"", tar::EntryType::Directory, None);
        add(
            "target/release/deps/keep-0123456789abcdef",
            b"kept",
            tar::EntryType::Regular,
            None,
        );
        add(
            "target/release/deps/drop-0123456789abcdef",
            b"dropped",
            tar::EntryType::Regular,
            None,
        );
        add(
            "target/release/deps/link-0123456789abcdef",
            b"",
            tar::EntryType::Link,
            Some("target/release/deps/keep-0123456789abcdef"),
        );
        add(
            "target/release/deps/gone-0123456789abcdef",
            b"",
            tar::EntryType::Link,
            Some("target/release/deps/drop-0123456789abcdef"),
        );
        let input = tar.into_inner().unwrap();
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("layer");
        let info = write_layer(&input[..], |p| !p.contains("drop") && !p.contains("gone"), &out).unwrap();
        let blob = std::fs::read(&out).unwrap();
        assert_eq!(Digest::of(&blob), info.descriptor.digest);
        let mut plain = Vec::new();
        flate2::read::MultiGzDecoder::new(&blob[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(Digest::of(&plain), info.diff_id);
        let mut seen = Vec::new();
        for e in tar::Archive::new(&plain[..]).entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert_eq!((h.uid().unwrap(), h.mtime().unwrap()), (0, 0));
            seen.push((
                e.path().unwrap().to_string_lossy().into_owned(),
                e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned()),
            ));
        }
        assert_eq!(
            seen,
            vec![
                ("release/deps/".to_string(), None),
                ("release/deps/keep-0123456789abcdef".to_string(), None),
                (
                    "release/deps/link-0123456789abcdef".to_string(),
                    Some("release/deps/keep-0123456789abcdef".to_string())
                ),
            ]
        );
    }
}
