//! Shared helpers for integration tests: the [`Sandbox`] every run of the
//! real `kiln` binary goes through (working dir, stripped environment,
//! failure messages that say what ran where), [`EngineObjects`] guards, the
//! dev-env (engine, registry), and the one `validate()` that every test
//! producing an image calls.
#![allow(dead_code)]

pub mod registry;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The kiln binary under test. Run it through [`Sandbox::kiln`].
const KILN: &str = env!("CARGO_BIN_EXE_kiln");

/// Host variables a kiln run may see; everything else is stripped.
const PASSED_ENV: &[&str] = &["PATH", "HOME", "DOCKER_HOST", "KILN_CERTS_DIR"];

/// A test's own directory (after ripgrep's `tests/util.rs` `Dir`): a temp
/// working dir, and a kiln cache beside it; both removed on drop.
pub struct Sandbox {
    root: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let root = tempfile::tempdir().expect("a temp dir");
        std::fs::create_dir(root.path().join("work")).unwrap();
        Sandbox { root }
    }

    /// The working directory of every command from [`Sandbox::kiln`].
    pub fn path(&self) -> PathBuf {
        self.root.path().join("work")
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path().join(rel)
    }

    /// The KILN_CACHE_DIR kiln gets unless a test sets another.
    pub fn cache(&self) -> PathBuf {
        self.root.path().join("cache")
    }

    /// kiln in the sandbox: the working dir set, the host environment
    /// stripped to PATH, HOME, DOCKER_HOST and KILN_CERTS_DIR (when set),
    /// KILN_CACHE_DIR in the sandbox, the dev-env's registries.conf; no
    /// SOURCE_DATE_EPOCH. A test adds
    /// what else it wants with `.env()`.
    pub fn kiln(&self) -> Command {
        let mut c = Command::new(KILN);
        self.isolate(&mut c);
        c
    }

    /// [`Sandbox::kiln`] run by `sh` under `umask`; append kiln's arguments.
    pub fn kiln_with_umask(&self, umask: &str) -> Command {
        let mut c = Command::new("sh");
        self.isolate(&mut c);
        c.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(KILN);
        c
    }

    /// `bash -eo pipefail -c SCRIPT` with kiln's isolated environment (for
    /// scripts that call kiln, such as the CI example's steps).
    pub fn shell(&self, script: &str) -> Command {
        let mut c = Command::new("bash");
        self.isolate(&mut c);
        c.args(["-eo", "pipefail", "-c", script]);
        c
    }

    fn isolate(&self, c: &mut Command) {
        c.current_dir(self.path()).env_clear();
        for k in PASSED_ENV {
            if let Some(v) = std::env::var_os(k) {
                c.env(k, v);
            }
        }
        c.env("KILN_CACHE_DIR", self.cache());
        // The dev-env's registries.conf (official names → the loopback
        // mirror), as a user sets CONTAINERS_REGISTRIES_CONF; absent when
        // the dev-env is not up, and then tests needing it fail on their own.
        if let Some(conf) = registries_conf() {
            c.env("CONTAINERS_REGISTRIES_CONF", conf);
        }
    }
}

/// The dev-env's registries.conf, when written.
pub fn registries_conf() -> Option<PathBuf> {
    let state = std::env::var("KILN_DEV_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/kiln-dev"));
    let conf = state.join("registries.conf");
    conf.is_file().then_some(conf)
}

/// Every path below `dir` (not following symlinks), sorted, at most `limit`.
fn walk_limited(dir: &Path, limit: usize, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if out.len() >= limit {
            return;
        }
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            walk_limited(&p, limit, out);
        }
    }
}

/// Every path below `dir` (not following symlinks), sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk_limited(dir, usize::MAX, &mut out);
    out
}

/// What a failure message says about a command: the command (with its
/// environment), its status, its working dir and a listing of it, stdout, stderr.
pub fn explain(cmd: &Command, out: &Output) -> String {
    const SHOWN: usize = 60;
    let cwd = cmd
        .get_current_dir()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| std::env::current_dir().unwrap());
    let mut listed = Vec::new();
    walk_limited(&cwd, SHOWN + 1, &mut listed);
    let mut listing: Vec<String> = listed
        .iter()
        .take(SHOWN)
        .map(|p| {
            let dir = if p.is_dir() { "/" } else { "" };
            format!("  {}{dir}", p.strip_prefix(&cwd).unwrap_or(p).display())
        })
        .collect();
    if listed.len() > SHOWN {
        listing.push("  …".into());
    }
    format!(
        "command: {cmd:?}\nstatus: {}\ncwd: {}\nlisting of cwd:\n{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        cwd.display(),
        listing.join("\n"),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a command to the end, whatever its status.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command, returns its output; panics with [`explain`] if it fails.
#[track_caller]
pub fn ok(cmd: &mut Command) -> Output {
    let out = output(cmd);
    assert!(out.status.success(), "command failed\n{}", explain(cmd, &out));
    out
}

/// Runs kiln, expects failure with exit code 2 and no panic; returns stderr.
#[track_caller]
pub fn fails(cmd: &mut Command) -> String {
    let out = output(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "expected exit 2\n{}", explain(cmd, &out));
    assert!(!stderr.contains("panicked"), "kiln panicked\n{}", explain(cmd, &out));
    stderr
}

/// stdout as a trimmed string.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The dev-env's test builder image, by tag.
pub fn builder() -> String {
    format!("{}/kiln-test/rust-builder:latest", dev_env()["KILN_REGISTRY"])
}

/// Copies the project at `src` (without target/ and kiln.lock) to `dest`.
pub fn copy_project(src: &Path, dest: &Path) -> PathBuf {
    std::fs::create_dir_all(dest).unwrap();
    ok(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && tar --exclude=./target --exclude=./kiln.lock -cf - . | tar -xf - -C '{}'",
        src.display(),
        dest.display()
    )));
    dest.to_path_buf()
}

/// Engine objects a test made, removed on drop (also when the test fails):
/// containers first, then images, then volumes.
#[derive(Default)]
pub struct EngineObjects {
    containers: Vec<String>,
    images: Vec<String>,
    volumes: Vec<String>,
    /// `docker ps`/`docker volume ls` name filters for objects kiln names itself.
    container_filters: Vec<String>,
    volume_filters: Vec<String>,
}

impl EngineObjects {
    pub fn new() -> EngineObjects {
        EngineObjects::default()
    }

    /// Registers a container name; returns it.
    pub fn container(&mut self, name: impl Into<String>) -> String {
        let name = name.into();
        self.containers.push(name.clone());
        name
    }

    /// Registers an image reference; returns it.
    pub fn image(&mut self, reference: impl Into<String>) -> String {
        let reference = reference.into();
        self.images.push(reference.clone());
        reference
    }

    /// Registers a volume name; returns it.
    pub fn volume(&mut self, name: impl Into<String>) -> String {
        let name = name.into();
        self.volumes.push(name.clone());
        name
    }

    /// Also removes the containers whose names match `filter` (docker's
    /// `name=` filter), e.g. those kiln names after its pid.
    pub fn containers_named(&mut self, filter: impl Into<String>) {
        self.container_filters.push(filter.into());
    }

    /// Also removes the volumes whose names match `filter`.
    pub fn volumes_named(&mut self, filter: impl Into<String>) {
        self.volume_filters.push(filter.into());
    }
}

fn docker_names(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(str::to_string).collect())
        .unwrap_or_default()
}

impl Drop for EngineObjects {
    fn drop(&mut self) {
        let mut containers = self.containers.clone();
        for f in &self.container_filters {
            containers.extend(docker_names(&["ps", "-aq", "--filter", &format!("name={f}")]));
        }
        let mut volumes = self.volumes.clone();
        for f in &self.volume_filters {
            volumes.extend(docker_names(&["volume", "ls", "-q", "--filter", &format!("name={f}")]));
        }
        let remove = |args: &[&str], names: &[String]| {
            if !names.is_empty() {
                let _ = Command::new("docker").args(args).args(names).output();
            }
        };
        remove(&["rm", "-f", "-v"], &containers);
        remove(&["rmi", "-f"], &self.images);
        remove(&["volume", "rm", "-f"], &volumes);
    }
}

/// Values from the dev-env's env file (scripts/dev-env.sh up writes it).
pub fn dev_env() -> &'static BTreeMap<String, String> {
    static ENV: OnceLock<BTreeMap<String, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let state = std::env::var("KILN_DEV_STATE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/kiln-dev"));
        let file = state.join("env");
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "{}: {e}: the test environment is not up; run scripts/dev-env.sh up (scripts/test.sh does)",
                file.display()
            )
        });
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    })
}

/// Fails (never skips) when the engine does not answer.
pub fn require_engine() {
    let out = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "the Docker engine does not answer ({}); run scripts/dev-env.sh up",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!("docker CLI not found ({e}); run scripts/dev-env.sh up"),
    }
}

/// Fails when a validator tool is missing.
pub fn require_tool(name: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .map(|o| o.status.success());
    assert!(
        found.unwrap_or(false),
        "{name} is not installed; run scripts/dev-env.sh up"
    );
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn digest_hex(d: &str) -> &str {
    d.strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {d}"))
}

struct SchemaDir(PathBuf);

impl jsonschema::Retrieve for SchemaDir {
    fn retrieve(&self, uri: &jsonschema::Uri<String>) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let s = uri.as_str();
        let name = s.rsplit('/').next().unwrap_or(s).split('#').next().unwrap_or_default();
        let text = std::fs::read_to_string(self.0.join(name)).map_err(|e| format!("{s}: {e}"))?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// Validates `doc` against one of the official OCI schemas in tests/oci-schema.
pub fn schema_check(schema_file: &str, doc: &[u8], what: &str) {
    let dir = repo().join("tests/oci-schema");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(schema_file)).unwrap()).unwrap();
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .with_retriever(SchemaDir(dir))
        .build(&schema)
        .unwrap_or_else(|e| panic!("schema {schema_file}: {e}"));
    let instance: Value = serde_json::from_slice(doc).unwrap_or_else(|e| panic!("{what} is not JSON: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what} fails {schema_file}: {errors:#?}");
}

/// What validate() learned about one image.
#[derive(Debug, Clone)]
pub struct Checked {
    pub digest: String,
    pub manifest: Value,
    pub config: Value,
    /// Per layer: the uncompressed tar.
    pub layer_tars: Vec<Vec<u8>>,
}

fn decompress(media_type: &str, blob: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip") {
        // An independent decoder: flate2's reader, not kiln's writer.
        flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut out)
            .expect("gzip layer decodes");
    } else if media_type.ends_with("+zstd") {
        zstd::stream::read::Decoder::new(blob)
            .unwrap()
            .read_to_end(&mut out)
            .expect("zstd layer decodes");
    } else {
        out = blob.to_vec();
    }
    out
}

/// The invariant checker for an OCI layout: schemas for oci-layout, index,
/// manifests and configs; every descriptor matches its blob's size and
/// digest; diff_ids match the uncompressed layers; media types consistent;
/// no stray temp files in blobs/. Returns what it read, per index entry.
pub fn validate(layout: &Path) -> Vec<Checked> {
    let layout_bytes = std::fs::read(layout.join("oci-layout")).expect("oci-layout present");
    schema_check("image-layout-schema.json", &layout_bytes, "oci-layout");
    let index_bytes = std::fs::read(layout.join("index.json")).expect("index.json present");
    schema_check("image-index-schema.json", &index_bytes, "index.json");
    let index: Value = serde_json::from_slice(&index_bytes).unwrap();
    let blob = |d: &Value| -> Vec<u8> {
        let digest = d["digest"].as_str().unwrap();
        let bytes = std::fs::read(layout.join("blobs/sha256").join(digest_hex(digest)))
            .unwrap_or_else(|e| panic!("blob {digest}: {e}"));
        assert_eq!(bytes.len() as u64, d["size"].as_u64().unwrap(), "size of {digest}");
        assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), digest, "digest of blob");
        bytes
    };
    // Every file in blobs/sha256 is a complete blob named by its digest.
    for e in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            e.file_name().to_string_lossy(),
            "stray or partial blob {:?}",
            e.path()
        );
    }
    let mut out = Vec::new();
    for m in index["manifests"].as_array().unwrap() {
        assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
        let manifest_bytes = blob(m);
        if let Some(kind) = m["artifactType"].as_str() {
            // An attached document: OCI 1.1 artifact manifest, empty
            // config, one layer (the document), a subject in this layout.
            schema_check("image-manifest-schema.json", &manifest_bytes, "artifact manifest");
            let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
            assert_eq!(manifest["artifactType"], kind);
            assert_eq!(manifest["config"]["mediaType"], "application/vnd.oci.empty.v1+json");
            assert_eq!(blob(&manifest["config"]), b"{}");
            assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
            assert_eq!(manifest["layers"][0]["mediaType"], kind);
            let doc = blob(&manifest["layers"][0]);
            serde_json::from_slice::<Value>(&doc).expect("an attached document is JSON");
            let subject = manifest["subject"]["digest"].as_str().expect("a subject");
            let subject_bytes = std::fs::read(layout.join("blobs/sha256").join(digest_hex(subject)))
                .unwrap_or_else(|e| panic!("the subject {subject} of an attached document is not in the layout: {e}"));
            assert_eq!(format!("sha256:{}", sha256_hex(&subject_bytes)), subject);
            assert!(
                m.get("annotations")
                    .and_then(|a| a.get("org.opencontainers.image.ref.name"))
                    .is_none()
            );
            continue;
        }
        schema_check("image-manifest-schema.json", &manifest_bytes, "manifest");
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        assert_eq!(manifest["mediaType"], m["mediaType"]);
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        let config_bytes = blob(&manifest["config"]);
        schema_check("config-schema.json", &config_bytes, "config");
        let config: Value = serde_json::from_slice(&config_bytes).unwrap();
        if !m["platform"].is_null() {
            assert_eq!(m["platform"]["architecture"], config["architecture"]);
            assert_eq!(m["platform"]["os"], config["os"]);
        }
        let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(diff_ids.len(), layers.len(), "one diff_id per layer");
        assert_eq!(config["rootfs"]["type"], "layers");
        if let Some(h) = config["history"].as_array() {
            let non_empty = h.iter().filter(|e| e["empty_layer"] != true).count();
            assert_eq!(non_empty, layers.len(), "one history entry per layer");
        }
        let mut layer_tars = Vec::new();
        for (l, diff_id) in layers.iter().zip(diff_ids) {
            let mt = l["mediaType"].as_str().unwrap();
            assert!(
                mt.starts_with("application/vnd.oci.image.layer.v1.tar"),
                "layer media type {mt}"
            );
            let tar = decompress(mt, &blob(l));
            assert_eq!(
                format!("sha256:{}", sha256_hex(&tar)),
                diff_id.as_str().unwrap(),
                "diff_id of {}",
                l["digest"]
            );
            assert!(
                tar.len().is_multiple_of(512) && tar.len() >= 1024,
                "tar ends on a block with the end marker"
            );
            assert!(
                tar[tar.len() - 1024..].iter().all(|&b| b == 0),
                "tar ends with two zero blocks"
            );
            layer_tars.push(tar);
        }
        out.push(Checked {
            digest: m["digest"].as_str().unwrap().to_string(),
            manifest,
            config,
            layer_tars,
        });
    }
    out
}

/// One entry of a layer as an independent reader (the tar crate) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TarEntry {
    pub path: String,
    pub kind: char,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub link: Option<String>,
    pub content: Vec<u8>,
}

pub fn tar_entries(tar: &[u8]) -> Vec<TarEntry> {
    let mut ar = tar::Archive::new(tar);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let h = e.header().clone();
            let mut content = Vec::new();
            e.read_to_end(&mut content).unwrap();
            TarEntry {
                path: e.path().unwrap().to_string_lossy().into_owned(),
                kind: match h.entry_type() {
                    tar::EntryType::Regular => 'f',
                    tar::EntryType::Directory => 'd',
                    tar::EntryType::Symlink => 'l',
                    tar::EntryType::Link => 'h',
                    _ => '?',
                },
                mode: h.mode().unwrap(),
                uid: h.uid().unwrap(),
                gid: h.gid().unwrap(),
                mtime: h.mtime().unwrap(),
                link: e.link_name().unwrap().map(|l| l.to_string_lossy().into_owned()),
                content,
            }
        })
        .collect()
}

/// A static hello binary built once per test run from examples/hello-http
/// (host cargo, +crt-static), shared by tests that run images.
pub fn static_hello() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| static_binary(&repo().join("examples/hello-http"), "hello-http"))
        .clone()
}

/// A static glibc binary of the project at `dir` (host cargo, +crt-static,
/// `--locked`), built into target/test-examples.
pub fn static_binary(dir: &Path, bin: &str) -> PathBuf {
    let target = repo().join("target/test-examples");
    ok(Command::new("cargo")
        .current_dir(dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "build",
            "--quiet",
            "--release",
            "--locked",
            "--target",
            "x86_64-unknown-linux-gnu",
        ]));
    target.join("x86_64-unknown-linux-gnu/release").join(bin)
}

/// A unique name for engine objects made by tests.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// GET / on a loopback port until it answers 200 or `deadline` passes:
/// the whole response, or None.
pub fn http_get(port: u16, deadline: std::time::Duration) -> Option<String> {
    use std::io::Write;
    let end = std::time::Instant::now() + deadline;
    while std::time::Instant::now() < end {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            if s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_ok() {
                let mut r = String::new();
                if s.read_to_string(&mut r).is_ok() && r.starts_with("HTTP/1.1 200") {
                    return Some(r);
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    None
}
