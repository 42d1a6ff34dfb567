//! Hostile peers and inputs, through the real binary: a malicious registry
//! on loopback (endless bodies, absurd tokens, an upload Location on another
//! host) and hostile layers (huge long-name records, very many entries),
//! each with kiln's peak RSS measured by `/usr/bin/time -f %M`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;

/// Peak RSS every hostile input must stay under.
const MAX_RSS_KB: u64 = 256 * 1024;

/// What the evil server answers.
enum Reply {
    /// Status, headers, body.
    Full(u16, Vec<(&'static str, String)>, Vec<u8>),
    /// Status and headers, then bytes until the client hangs up.
    Endless(u16, Vec<(&'static str, String)>, &'static [u8]),
    /// Close the connection before reading the request body (mid-upload).
    Hangup,
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    authorization: Option<String>,
}

/// (method, path, whether the request carried Authorization) → reply.
type Handler = dyn Fn(&str, &str, bool) -> Reply + Send + Sync;

/// A loopback HTTP/1.1 server with a handler per request; records requests.
struct Evil {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Evil {
    fn start(handler: impl Fn(&str, &str, bool) -> Reply + Send + Sync + 'static) -> Evil {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let handler: Arc<Handler> = Arc::new(handler);
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (s, h) = (s.clone(), handler.clone());
                std::thread::spawn(move || serve(conn, &s, &*h));
            }
        });
        Evil { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve(conn: TcpStream, seen: &Mutex<Vec<Seen>>, handler: &Handler) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    // kiln probes loopback registries with TLS first: hang up on a
    // ClientHello (0x16) at once, as a plain-HTTP server effectively does.
    if r.fill_buf().map(|b| b.first() == Some(&0x16)).unwrap_or(true) {
        return;
    }
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let (mut len, mut auth) = (0usize, None);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "authorization" => auth = Some(v.trim().to_string()),
                _ => {}
            }
        }
        let has_auth = auth.is_some();
        seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization: auth,
        });
        let reply = handler(&method, &path, has_auth);
        if matches!(reply, Reply::Hangup) {
            return;
        }
        let mut body = vec![0u8; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        match reply {
            Reply::Hangup => unreachable!("handled above"),
            Reply::Full(status, headers, body) => {
                let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                if w.write_all(head.as_bytes()).is_err() || (method != "HEAD" && w.write_all(&body).is_err()) {
                    return;
                }
            }
            Reply::Endless(status, headers, chunk) => {
                let mut head = format!("HTTP/1.1 {status} X\r\nConnection: close\r\n");
                for (k, v) in headers {
                    head.push_str(&format!("{k}: {v}\r\n"));
                }
                head.push_str("\r\n");
                let _ = w.write_all(head.as_bytes());
                let big = chunk.repeat((1 << 16) / chunk.len().max(1) + 1);
                while w.write_all(&big).is_ok() {}
                return;
            }
        }
    }
}

/// kiln under `/usr/bin/time -f %M` in the sandbox: its output and peak RSS in KiB.
fn measured(sb: &Sandbox, args: &[&str]) -> (Output, u64) {
    require_tool("/usr/bin/time");
    let k = sb.kiln();
    let mut c = Command::new("/usr/bin/time");
    c.current_dir(sb.path()).env_clear();
    for (key, v) in k.get_envs() {
        if let Some(v) = v {
            c.env(key, v);
        }
    }
    c.args(["-f", "RSS_KB=%M", "--"]).arg(k.get_program()).args(args);
    let out = output(&mut c);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rss = stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("RSS_KB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no RSS from /usr/bin/time\n{}", explain(&c, &out)));
    (out, rss)
}

fn refused(out: &Output, rss: u64, says: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{what}: exit 2 expected: {stderr}");
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(stderr.contains(says), "{what}: the error says `{says}`: {stderr}");
    assert!(rss < MAX_RSS_KB, "{what}: peak RSS {rss} KiB, bound {MAX_RSS_KB} KiB");
    eprintln!("{what}: refused, peak RSS {} MiB", rss / 1024);
}

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// `kiln pull EVIL/evil/img:x --out oci:OUT`, measured.
fn pull_measured(sb: &Sandbox, evil: &Evil, out_dir: &Path) -> (Output, u64) {
    let from = format!("{}/evil/img:x", evil.addr);
    let to = format!("oci:{}", out_dir.display());
    measured(sb, &["pull", &from, "--out", &to])
}

#[test]
fn endless_and_huge_registry_bodies_are_cut_off_while_they_stream() {
    let sb = Sandbox::new();
    // An endless manifest.
    let evil = Evil::start(|_, path, _| match path {
        "/v2/" => Reply::Full(200, vec![], b"{}".to_vec()),
        _ => Reply::Endless(
            200,
            vec![("Content-Type", OCI_MANIFEST.into())],
            b"{\"a\":\"xxxxxxxx\",".as_slice(),
        ),
    });
    let out_dir = sb.join("out");
    let (out, rss) = pull_measured(&sb, &evil, &out_dir);
    refused(&out, rss, "larger than 16777216 bytes", "endless manifest");
    assert!(!out_dir.exists());

    // A token server that never stops talking.
    let realm = Arc::new(Mutex::new(String::new()));
    let r2 = realm.clone();
    let evil = Evil::start(move |_, path, _| match path {
        "/v2/" | "/v2/evil/img/manifests/x" => Reply::Full(
            401,
            vec![(
                "WWW-Authenticate",
                format!("Bearer realm=\"{}\",service=\"evil\"", r2.lock().unwrap()),
            )],
            Vec::new(),
        ),
        _ => Reply::Endless(
            200,
            vec![("Content-Type", "application/json".into())],
            b"{\"token\":\"aaaa".as_slice(),
        ),
    });
    *realm.lock().unwrap() = format!("http://{}/token", evil.addr);
    let (out, rss) = pull_measured(&sb, &evil, &out_dir);
    refused(&out, rss, "reply is larger than", "endless token reply");

    // An endless error body.
    let evil = Evil::start(|_, path, _| match path {
        "/v2/" => Reply::Full(200, vec![], b"{}".to_vec()),
        _ => Reply::Endless(
            404,
            vec![("Content-Type", "application/json".into())],
            b"{\"errors\":[".as_slice(),
        ),
    });
    let (out, rss) = pull_measured(&sb, &evil, &out_dir);
    refused(&out, rss, "HTTP 404", "endless error body");
}

#[test]
fn an_absurd_token_lifetime_is_clamped_not_a_panic() {
    let sb = Sandbox::new();
    let realm = Arc::new(Mutex::new(String::new()));
    let r2 = realm.clone();
    let evil = Evil::start(move |_, path, _| {
        if path.starts_with("/token") {
            let body = json!({"token": "t0k3n", "expires_in": u64::MAX}).to_string();
            return Reply::Full(
                200,
                vec![("Content-Type", "application/json".into())],
                body.into_bytes(),
            );
        }
        Reply::Full(
            401,
            vec![(
                "WWW-Authenticate",
                format!("Bearer realm=\"{}\",service=\"evil\"", r2.lock().unwrap()),
            )],
            Vec::new(),
        )
    });
    *realm.lock().unwrap() = format!("http://{}/token", evil.addr);
    let err = fails(sb.kiln().args([
        "pull",
        &format!("{}/evil/img:x", evil.addr),
        "--out",
        &format!("oci:{}", sb.join("o").display()),
    ]));
    assert!(err.contains("authentication required or refused"), "{err}");
    assert!(
        evil.seen().iter().any(|s| s.path.starts_with("/token")),
        "the token was fetched (and its lifetime parsed)"
    );
}

#[test]
fn credentials_never_follow_an_upload_location_to_another_host() {
    let sb = Sandbox::new();
    // The other host: takes whatever is sent and says it is stored.
    let other = Evil::start(|_, _, _| Reply::Full(201, vec![], Vec::new()));
    let other_addr = other.addr.clone();
    // The registry: basic auth, and every upload session "lives" elsewhere.
    let registry = Evil::start(move |method, path, auth| match (method, path) {
        _ if !auth => Reply::Full(
            401,
            vec![("WWW-Authenticate", "Basic realm=\"evil\"".into())],
            Vec::new(),
        ),
        ("HEAD", _) => Reply::Full(404, vec![], Vec::new()),
        ("POST", _) => Reply::Full(
            202,
            vec![("Location", format!("http://{other_addr}/upload/session-1"))],
            Vec::new(),
        ),
        _ => Reply::Full(201, vec![], Vec::new()),
    });
    std::fs::write(sb.join("f"), b"payload").unwrap();
    let layout = sb.join("img");
    ok(sb
        .kiln()
        .args(["assemble", "--add", "f:/f", "--out"])
        .arg(format!("oci:{}:t", layout.display())));
    let mut c = sb.kiln();
    c.args([
        "push",
        "--username",
        "kiln",
        "--password-stdin",
        &format!("oci:{}:t", layout.display()),
        &format!("{}/evil/img:t", registry.addr),
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("panicked"),
        "{}",
        explain(&c, &out)
    );
    let there = registry.seen();
    assert!(
        there
            .iter()
            .any(|s| s.authorization.as_deref().is_some_and(|a| a.starts_with("Basic "))),
        "the registry itself got the credentials: {there:?}"
    );
    let elsewhere = other.seen();
    assert!(
        elsewhere.iter().any(|s| s.method == "PUT"),
        "the uploads went to the Location host: {elsewhere:?}"
    );
    assert!(
        elsewhere.iter().all(|s| s.authorization.is_none()),
        "no Authorization to another host: {elsewhere:?}"
    );
}

/// Writes an OCI layout holding one image whose only layer is `layer_gz`
/// (gzip bytes; `diff_id` as given, unchecked by readers that stop early).
fn hostile_layout(dir: &Path, layer_gz: &[u8], diff_id: &str) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> String {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    };
    let layer = put(layer_gz);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/app"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    })
    .to_string();
    let config_digest = put(config.as_bytes());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_gz.len()}],
    })
    .to_string();
    let manifest_digest = put(manifest.as_bytes());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "t"}}],
    })
    .to_string();
    std::fs::write(dir.join("index.json"), index).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A raw ustar header block.
fn header(name: &str, flag: u8, size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::new(flag));
    h.set_cksum();
    h.as_bytes().to_vec()
}

#[test]
fn hostile_layers_are_refused_or_read_within_bounded_memory() {
    use flate2::{Compression, write::GzEncoder};
    let sb = Sandbox::new();

    // ~1 MB of gzip that expands to a 1 GiB GNU long-name record, then a PAX one.
    for (flag, what) in [(b'L', "GNU long-name"), (b'x', "PAX")] {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        let size = 1u64 << 30;
        gz.write_all(&header("././@LongLink", flag, size)).unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..(size >> 20) {
            gz.write_all(&chunk).unwrap();
        }
        gz.write_all(&header("x", b'0', 0)).unwrap();
        gz.write_all(&[0u8; 1024]).unwrap();
        let bytes = gz.finish().unwrap();
        let dir = sb.join(format!("huge-{}", flag as char));
        hostile_layout(&dir, &bytes, &format!("sha256:{}", "0".repeat(64)));
        let r = format!("oci:{}:t", dir.display());
        for cmd in [vec!["scan", r.as_str()], vec!["inspect", "--files", r.as_str()]] {
            let (out, rss) = measured(&sb, &cmd);
            refused(
                &out,
                rss,
                &format!("{what} record of {size} bytes"),
                &format!("{what} {}", cmd[0]),
            );
        }
        let other = sb.join("other");
        if !other.exists() {
            std::fs::write(sb.join("f"), b"f").unwrap();
            ok(sb
                .kiln()
                .args(["assemble", "--add", "f:/app", "--out"])
                .arg(format!("oci:{}:t", other.display())));
        }
        let (out, rss) = measured(&sb, &["diff", &format!("oci:{}:t", other.display()), &r]);
        refused(
            &out,
            rss,
            &format!("{what} record of {size} bytes"),
            &format!("{what} diff"),
        );
    }

    // 100,000 tiny entries: read, within bounds, by scan and diff.
    let mut tar = Vec::new();
    for i in 0..100_000 {
        tar.extend_from_slice(&header(&format!("d/f{i:06}"), b'0', 0));
    }
    tar.extend_from_slice(&[0u8; 1024]);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar).unwrap();
    let bytes = gz.finish().unwrap();
    let dir = sb.join("many");
    hostile_layout(&dir, &bytes, &format!("sha256:{}", sha256_hex(&tar)));
    let r = format!("oci:{}:t", dir.display());
    let (out, rss) = measured(&sb, &["scan", "--json", &r]);
    assert!(
        out.status.code() != Some(2),
        "scan reads it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rss < MAX_RSS_KB, "scan of 100k entries: {rss} KiB");
    eprintln!("100k entries scan: peak RSS {} MiB", rss / 1024);
    let (out, rss) = measured(
        &sb,
        &["diff", "--json", &format!("oci:{}:t", sb.join("other").display()), &r],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "diff reads it: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(rss < MAX_RSS_KB, "diff of 100k entries: {rss} KiB");
    eprintln!("100k entries diff: peak RSS {} MiB", rss / 1024);
}

#[test]
fn a_ten_thousand_deep_index_chain_is_refused_not_a_crash() {
    let sb = Sandbox::new();
    let dir = sb.join("deep");
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let mut desc = json!({"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", "0".repeat(64)), "size": 2,
                          "platform": {"architecture": "amd64", "os": "linux"}});
    for _ in 0..10_000 {
        let index =
            json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [desc]})
                .to_string();
        let hex = sha256_hex(index.as_bytes());
        std::fs::write(blobs.join(&hex), &index).unwrap();
        desc = json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": format!("sha256:{hex}"),
                      "size": index.len(), "platform": {"architecture": "amd64", "os": "linux"},
                      "annotations": {"org.opencontainers.image.ref.name": "t"}});
    }
    std::fs::write(
        dir.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [desc]}).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let r = format!("oci:{}:t", dir.display());
    for cmd in [vec!["inspect", r.as_str()], vec!["scan", r.as_str()]] {
        let err = fails(sb.kiln().args(&cmd));
        assert!(err.contains("indexes nest deeper than 8 levels"), "{err}");
    }
    let reg = &dev_env()["KILN_REGISTRY"];
    let err = fails(sb.kiln().args(["push", &r, &format!("{reg}/kiln-test/deep:t")]));
    assert!(err.contains("indexes nest deeper than 8 levels"), "{err}");
}

#[test]
fn a_registry_that_hangs_up_mid_upload_is_an_error_not_a_signal() {
    let sb = Sandbox::new();
    let registry = Evil::start(|method, path, _| match (method, path) {
        (_, "/v2/") => Reply::Full(200, vec![], b"{}".to_vec()),
        ("HEAD", _) => Reply::Full(404, vec![], Vec::new()),
        ("POST", _) => Reply::Full(
            202,
            vec![("Location", "/v2/evil/img/blobs/uploads/s1".into())],
            Vec::new(),
        ),
        ("PUT", _) => Reply::Hangup,
        _ => Reply::Full(500, vec![], Vec::new()),
    });
    // A large blob, so kiln is still writing when the server closes.
    let data = sb.join("big");
    std::fs::write(&data, vec![7u8; 8 << 20]).unwrap();
    let layout = sb.join("img");
    ok(sb
        .kiln()
        .args(["assemble", "--compression", "none", "--add", "big:/big", "--out"])
        .arg(format!("oci:{}:t", layout.display())));
    let mut c = sb.kiln();
    c.env("KILN_RETRY_BASE_MS", "10").args([
        "push",
        &format!("oci:{}:t", layout.display()),
        &format!("{}/evil/img:t", registry.addr),
    ]);
    let out = output(&mut c);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        None,
        "not killed by a signal\n{}",
        explain(&c, &out)
    );
    assert_eq!(out.status.code(), Some(2), "{}", explain(&c, &out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("registry"), "{stderr}");
    let mut per_blob: std::collections::BTreeMap<String, usize> = Default::default();
    for s in registry.seen().iter().filter(|s| s.method == "PUT") {
        *per_blob.entry(s.path.clone()).or_default() += 1;
    }
    assert!(!per_blob.is_empty());
    assert!(
        per_blob.values().all(|n| (2..=6).contains(n)),
        "each upload retried, within the attempts: {per_blob:?}"
    );
}

#[test]
fn a_closed_stdout_ends_kiln_quietly() {
    let sb = Sandbox::new();
    std::fs::write(sb.join("f"), b"x").unwrap();
    let layout = sb.join("img");
    ok(sb
        .kiln()
        .args(["assemble", "--add", "f:/f", "--out"])
        .arg(format!("oci:{}:t", layout.display())));
    let mut c = sb.kiln();
    c.args(["inspect", "--files"])
        .arg(format!("oci:{}:t", layout.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    drop(child.stdout.take()); // the reader goes away before kiln writes
    let out = child.wait_with_output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), None, "no SIGPIPE death");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "quiet: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn diff_recomputes_diff_ids_and_lists_layers_only_one_side_has() {
    use flate2::{Compression, write::GzEncoder};
    let sb = Sandbox::new();
    let tar_of = |content: &[u8]| {
        let mut t = header("app", b'0', content.len() as u64);
        t.extend_from_slice(content);
        t.resize(t.len().div_ceil(512) * 512 + 1024, 0);
        let mut gz = GzEncoder::new(Vec::new(), Compression::default());
        gz.write_all(&t).unwrap();
        gz.finish().unwrap()
    };
    // Two images whose configs claim the same diff_id, with different /app.
    let same = format!("sha256:{}", "1".repeat(64));
    let (a, b) = (sb.join("a"), sb.join("b"));
    hostile_layout(&a, &tar_of(b"one"), &same);
    hostile_layout(&b, &tar_of(b"two"), &same);
    let out = output(sb.kiln().args([
        "diff",
        &format!("oci:{}:t", a.display()),
        &format!("oci:{}:t", b.display()),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        !text.contains("compression-only"),
        "the claimed diff_ids are not trusted: {text}"
    );
    assert!(text.contains("changed /app"), "{text}");

    // A second layer only B has: its files are listed.
    std::fs::write(sb.join("extra"), b"e").unwrap();
    let c = sb.join("c");
    ok(sb
        .kiln()
        .args(["assemble", "--add", "extra:/extra", "--out"])
        .arg(format!("oci:{}:t", c.display())));
    let d = sb.join("d");
    ok(sb
        .kiln()
        .args(["assemble", "--from"])
        .arg(format!("oci:{}:t", c.display()))
        .args(["--add", "extra:/more/extra2", "--out"])
        .arg(format!("oci:{}:t", d.display())));
    let out = output(sb.kiln().args([
        "diff",
        &format!("oci:{}:t", c.display()),
        &format!("oci:{}:t", d.display()),
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("added /more/extra2"), "{text}");
}

#[test]
fn a_planted_blob_of_the_right_size_never_reaches_an_output() {
    let sb = Sandbox::new();
    let reg = &dev_env()["KILN_REGISTRY"];
    std::fs::write(sb.join("f"), vec![3u8; 100_000]).unwrap();
    let layout = sb.join("img");
    ok(sb
        .kiln()
        .args(["assemble", "--add", "f:/f", "--out"])
        .arg(format!("oci:{}:t", layout.display())));
    let dest = format!("{reg}/kiln-test/planted-{}:t", std::process::id());
    ok(sb.kiln().args(["push", &format!("oci:{}:t", layout.display()), &dest]));
    ok(sb
        .kiln()
        .args(["pull", &dest, "--out", &format!("oci:{}:x", sb.join("p1").display())]));
    // Replace every blob in the content store by bytes of the same size.
    let store = sb.cache().join("blobs/sha256");
    for e in std::fs::read_dir(&store).unwrap().flatten() {
        let len = std::fs::metadata(e.path()).unwrap().len() as usize;
        std::fs::write(e.path(), vec![b'!'; len]).unwrap();
    }
    let p2 = sb.join("p2");
    ok(sb
        .kiln()
        .args(["pull", &dest, "--out", &format!("oci:{}:x", p2.display())]));
    validate(&p2);
}

#[test]
fn without_home_kiln_refuses_a_shared_cache_but_needs_none_to_assemble() {
    let sb = Sandbox::new();
    std::fs::write(sb.join("f"), b"x").unwrap();
    let mut c = sb.kiln();
    c.env_remove("HOME").env_remove("KILN_CACHE_DIR");
    c.args(["assemble", "--add", "f:/f", "--out"])
        .arg(format!("oci:{}:t", sb.join("img").display()));
    ok(&mut c);
    let mut c = sb.kiln();
    c.env_remove("HOME").env_remove("KILN_CACHE_DIR").args([
        "pull",
        "127.0.0.1:1/x/y:z",
        "--out",
        &format!("oci:{}:t", sb.join("o").display()),
    ]);
    let err = fails(&mut c);
    assert!(
        err.contains("HOME is not set") && err.contains("KILN_CACHE_DIR"),
        "{err}"
    );
    assert!(!std::path::Path::new("/tmp/.cache/kiln").exists(), "no cache in /tmp");
}

#[test]
fn a_failing_writer_never_removes_a_concurrent_writers_new_layout() {
    let sb = Sandbox::new();
    std::fs::write(sb.join("f"), vec![5u8; 200_000]).unwrap();
    // A base whose layer blob is corrupt (right size, wrong bytes): copying
    // it into a new layout fails midway.
    let bad = sb.join("bad");
    ok(sb
        .kiln()
        .args(["assemble", "--add", "f:/f", "--out"])
        .arg(format!("oci:{}:t", bad.display())));
    let checked = validate(&bad);
    let layer = checked[0].manifest["layers"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let blob = bad.join("blobs/sha256").join(&layer);
    let len = std::fs::metadata(&blob).unwrap().len() as usize;
    std::fs::write(&blob, vec![0u8; len]).unwrap();
    for round in 0..15 {
        let out = sb.join(format!("new-{round}"));
        let mut failing = sb.kiln();
        failing
            .args(["assemble", "--from"])
            .arg(format!("oci:{}:t", bad.display()))
            .args(["--add", "f:/g", "--out"])
            .arg(format!("oci:{}:failing", out.display()));
        let mut healthy = sb.kiln();
        healthy
            .args(["assemble", "--add", "f:/h", "--out"])
            .arg(format!("oci:{}:healthy", out.display()));
        let f = failing
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let h = healthy.output().unwrap();
        let f = f.wait_with_output().unwrap();
        assert!(
            h.status.success(),
            "round {round}: the healthy writer failed\n{}",
            explain(&healthy, &h)
        );
        assert!(!f.status.success(), "round {round}: the corrupt base must fail");
        let tags: Vec<String> = serde_json::from_slice::<serde_json::Value>(
            &std::fs::read(out.join("index.json")).unwrap(),
        )
        .unwrap()["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(tags, vec!["healthy".to_string()], "round {round}");
        validate(&out);
    }
}

#[test]
fn command_line_credentials_never_go_to_a_mirror() {
    // A mirror that asks everyone for Basic credentials: kiln must not
    // answer with the ones given for docker.io on the command line.
    let mirror = Evil::start(|_, _, _| {
        Reply::Full(
            401,
            vec![("WWW-Authenticate", "Basic realm=\"mirror\"".to_string())],
            b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"who are you\"}]}".to_vec(),
        )
    });
    let sb = Sandbox::new();
    let conf = sb.join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"docker.io\"\nblocked = true\n[[registry.mirror]]\nlocation = \"{}\"\n",
            mirror.addr
        ),
    )
    .unwrap();
    let mut c = sb.kiln();
    c.env("CONTAINERS_REGISTRIES_CONF", &conf)
        .args([
            "pull",
            "--username",
            "hub-user",
            "--password-stdin",
            "docker.io/library/debian:12",
            "--out",
        ])
        .arg(format!("oci:{}", sb.join("out").display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"hub-secret\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", explain(&c, &out));
    let seen = mirror.seen();
    assert!(
        seen.iter().any(|s| s.path.contains("/manifests/")),
        "the mirror was asked: {seen:?}"
    );
    assert!(
        seen.iter().all(|s| s.authorization.is_none()),
        "credentials for docker.io went to the mirror: {seen:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("mirror {}/library/debian:12", mirror.addr)),
        "{err}"
    );
}
