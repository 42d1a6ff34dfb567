//! `kiln push` and `kiln pull` against real registries (plain HTTP, TLS +
//! htpasswd, token auth with a real JWT flow), skopeo as the independent
//! client both ways, and a fault-injecting proxy for drops, 5xx, 429 and
//! corrupted bodies. Credentials must never show up anywhere.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::registry::{self, Fault, FaultProxy};
use common::*;

/// kiln in the sandbox, also isolated from the host's docker config, with short retry delays.
fn k(sb: &Sandbox) -> Command {
    let mut c = sb.kiln();
    c.env("DOCKER_CONFIG", sb.join("docker"))
        .env("KILN_RETRY_BASE_MS", "10");
    c
}

/// Assembles a small image with `seed` in it; returns (oci ref, digest).
fn make_image(sb: &Sandbox, name: &str, seed: &str, bytes: usize) -> (String, String) {
    let src = sb.join(format!("{name}-files"));
    fs::create_dir_all(&src).unwrap();
    // Poorly compressible content so uploads carry real bytes.
    let mut data = Vec::with_capacity(bytes);
    let mut x: u64 = seed
        .bytes()
        .fold(1469598103934665603, |h, b| (h ^ b as u64).wrapping_mul(1099511628211));
    while data.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    fs::write(src.join("data"), &data).unwrap();
    fs::write(src.join("seed"), seed).unwrap();
    let layout = sb.join(format!("{name}-layout"));
    let r = format!("oci:{}:{name}", layout.display());
    let d = stdout(&ok(sb
        .kiln()
        .args(["assemble", "--quiet", "--add"])
        .arg(format!("{}:/data", src.display()))
        .args(["--out", &r])));
    (r, d)
}

fn run_with_stdin(c: &mut Command, input: &str) -> Output {
    c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn skopeo_digest(reference: &str, extra: &[&str]) -> Option<String> {
    let out = Command::new("skopeo")
        .arg("inspect")
        .args(extra)
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["Digest"].as_str().map(str::to_string)
}

#[test]
fn plain_http_round_trips_with_skopeo_both_ways() {
    require_tool("skopeo");
    let reg = registry::plain();
    let sb = Sandbox::new();
    let (src, digest) = make_image(&sb, "one", "plain", 300_000);
    // kiln pushes (two tags), skopeo reads.
    let out = ok(k(&sb).args([
        "push",
        "--json",
        &src,
        &format!("{}/kiln/one:v1", reg.addr),
        "--tag",
        "also",
    ]));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["digest"], digest.as_str());
    assert_eq!(report["uploaded"], 2);
    for tag in ["v1", "also"] {
        assert_eq!(
            skopeo_digest(&format!("{}/kiln/one:{tag}", reg.addr), &["--tls-verify=false"]).as_deref(),
            Some(digest.as_str())
        );
    }
    let copied = sb.join("skopeo-copy");
    ok(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/kiln/one:v1", reg.addr))
        .arg(format!("oci:{}:x", copied.display())));
    assert_eq!(
        validate(&copied)[0].digest,
        digest,
        "skopeo got the exact bytes kiln pushed"
    );

    // Re-push: nothing uploaded, only HEADs.
    let out = ok(k(&sb).args(["push", "--json", &src, &format!("{}/kiln/one:v1", reg.addr)]));
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(again["uploaded"], 0);
    assert_eq!(
        again["requests"],
        serde_json::json!({"HEAD": 3}),
        "re-push is HEADs only"
    );
    // A second repository on the same registry: blobs are mounted, not uploaded.
    let out = ok(k(&sb).args(["push", "--json", &src, &format!("{}/kiln/two:v1", reg.addr)]));
    let mounted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (mounted["mounted"].as_u64(), mounted["uploaded"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(
        skopeo_digest(&format!("{}/kiln/two:v1", reg.addr), &["--tls-verify=false"]).as_deref(),
        Some(digest.as_str())
    );

    // skopeo pushes, kiln pulls and verifies.
    let (src2, digest2) = make_image(&sb, "three", "skopeo-side", 200_000);
    ok(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(&src2)
        .arg(format!("docker://{}/kiln/three:v1", reg.addr)));
    let pulled = sb.join("pulled");
    let out = ok(k(&sb)
        .args(["pull", &format!("{}/kiln/three:v1", reg.addr), "--out"])
        .arg(format!("oci:{}:p", pulled.display())));
    assert_eq!(stdout(&out), digest2);
    assert_eq!(validate(&pulled)[0].digest, digest2);
    // By digest too.
    ok(k(&sb)
        .args(["pull", &format!("{}/kiln/three@{digest2}", reg.addr), "--out"])
        .arg(format!("oci:{}:bydigest", pulled.display())));
}

#[test]
fn tls_with_basic_auth_from_stdin_config_json_and_a_credential_helper() {
    require_tool("skopeo");
    let password = "p@ss w:rd\"'$%ü";
    let reg = registry::tls_basic("kiln", password);
    let sb = Sandbox::new();
    let certs = reg.certs_dir.clone().unwrap();
    let (src, digest) = make_image(&sb, "sec", "tls", 100_000);
    let dest = format!("{}/kiln/sec:v1", reg.addr);

    // Without credentials: a clear error, nothing pushed.
    let mut c = k(&sb);
    c.env("KILN_CERTS_DIR", &certs).args(["push", &src, &dest]);
    let err = fails(&mut c);
    assert!(
        err.contains("authentication required") && err.contains("docker login"),
        "{err}"
    );
    // Without the CA: TLS fails, with a message.
    let err = fails(k(&sb).args(["push", &src, &dest]));
    assert!(err.contains(&reg.addr), "{err}");

    // 1. --username + --password-stdin.
    let mut c = k(&sb);
    c.env("KILN_CERTS_DIR", &certs)
        .args(["push", "--username", "kiln", "--password-stdin", &src, &dest]);
    let out = run_with_stdin(&mut c, &format!("{password}\n"));
    assert!(out.status.success(), "{}", explain(&c, &out));
    assert_eq!(stdout(&out), digest);

    // 2. config.json auths.
    let docker_dir = sb.join("docker");
    fs::create_dir_all(&docker_dir).unwrap();
    let auth = base64_encode(&format!("kiln:{password}"));
    fs::write(
        docker_dir.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let pulled = sb.join("pulled");
    ok(k(&sb)
        .env("KILN_CERTS_DIR", &certs)
        .args(["pull", &dest, "--out"])
        .arg(format!("oci:{}:a", pulled.display())));
    assert_eq!(validate(&pulled)[0].digest, digest);

    // 3. a credential helper on PATH named by credHelpers.
    let bin = sb.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-kilntest");
    let reply = serde_json::json!({"ServerURL": reg.addr, "Username": "kiln", "Secret": password}).to_string();
    fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread server\necho \"$server\" > {}/helper-called\ncat <<'EOF'\n{reply}\nEOF\n",
            sb.path().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&helper, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(
        docker_dir.join("config.json"),
        format!(r#"{{"credHelpers":{{"{}":"kilntest"}}}}"#, reg.addr),
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let (src2, digest2) = make_image(&sb, "helper", "via-helper", 50_000);
    ok(k(&sb).env("KILN_CERTS_DIR", &certs).env("PATH", &path).args([
        "push",
        &src2,
        &format!("{}/kiln/helper:v1", reg.addr),
    ]));
    assert_eq!(fs::read_to_string(sb.join("helper-called")).unwrap().trim(), reg.addr);
    let skopeo = skopeo_digest(
        &format!("{}/kiln/helper:v1", reg.addr),
        &[
            "--cert-dir",
            &certs.join(&reg.addr).display().to_string(),
            "--creds",
            &format!("kiln:{password}"),
        ],
    );
    assert_eq!(skopeo.as_deref(), Some(digest2.as_str()));
}

fn base64_encode(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn token_auth_runs_the_real_bearer_flow() {
    require_tool("skopeo");
    let password = "t0ken-p@ss";
    let refresh = "refresh-token-for-kiln";
    let reg = registry::token("kiln", password, refresh);
    let sb = Sandbox::new();
    let (src, digest) = make_image(&sb, "tok", "token", 100_000);
    let dest = format!("{}/kiln/tok:v1", reg.addr);
    let err = fails(k(&sb).args(["push", &src, &dest]));
    assert!(
        err.contains("token server refused") || err.contains("authentication"),
        "{err}"
    );
    let mut c = k(&sb);
    c.args(["push", "--username", "kiln", "--password-stdin", &src, &dest]);
    let out = run_with_stdin(&mut c, password);
    assert!(out.status.success(), "{}", explain(&c, &out));
    assert!(
        !reg.token_server.as_ref().unwrap().issued.lock().unwrap().is_empty(),
        "tokens were issued"
    );
    // An identity token in config.json goes through the OAuth2 POST form.
    let docker_dir = sb.join("docker");
    fs::create_dir_all(&docker_dir).unwrap();
    fs::write(
        docker_dir.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"identitytoken":"{refresh}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let pulled = sb.join("pulled");
    ok(k(&sb)
        .args(["pull", &dest, "--out"])
        .arg(format!("oci:{}:t", pulled.display())));
    assert_eq!(validate(&pulled)[0].digest, digest);
    // skopeo agrees through the same token server.
    let got = skopeo_digest(&dest, &["--tls-verify=false", "--creds", &format!("kiln:{password}")]);
    assert_eq!(got.as_deref(), Some(digest.as_str()));
}

/// Every regular file below `dir`, as bytes.
fn all_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    walk(dir)
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect()
}

#[test]
fn passwords_and_tokens_appear_nowhere() {
    let password = "Sup3r$ecret:with spaces\"and'quotes\\ü%";
    let reg = registry::token("kiln", password, "unused-refresh");
    let basic = registry::tls_basic("kiln", password);
    let sb = Sandbox::new();
    let (src, _) = make_image(&sb, "leak", "leak", 100_000);
    let mut transcript = Vec::new();
    for (dest, certs) in [
        (format!("{}/kiln/leak:v1", reg.addr), None),
        (format!("{}/kiln/leak:v1", basic.addr), basic.certs_dir.clone()),
    ] {
        for args in [vec!["push", "--json", &src, &dest], vec!["push", &src, &dest]] {
            let mut c = k(&sb);
            if let Some(cd) = &certs {
                c.env("KILN_CERTS_DIR", cd);
            }
            c.args(["--debug-registry", "--username", "kiln", "--password-stdin"])
                .args(&args);
            let out = run_with_stdin(&mut c, password);
            assert!(out.status.success(), "{}", explain(&c, &out));
            transcript.extend_from_slice(&out.stdout);
            transcript.extend_from_slice(&out.stderr);
        }
        // A failing run (wrong password) must not echo the secret either.
        let mut c = k(&sb);
        if let Some(cd) = &certs {
            c.env("KILN_CERTS_DIR", cd);
        }
        c.args([
            "--debug-registry",
            "push",
            "--username",
            "kiln",
            "--password-stdin",
            &src,
            &dest,
        ]);
        let wrong = format!("{password}-wrong");
        let out = run_with_stdin(&mut c, &wrong);
        assert!(!out.status.success(), "{}", explain(&c, &out));
        transcript.extend_from_slice(&out.stdout);
        transcript.extend_from_slice(&out.stderr);
    }
    let text = String::from_utf8_lossy(&transcript);
    assert!(text.contains("registry: PUT"), "debug logging was on: {text}");
    let mut secrets: Vec<String> = vec![password.to_string(), base64_encode(&format!("kiln:{password}"))];
    secrets.extend(
        reg.token_server
            .as_ref()
            .unwrap()
            .issued
            .lock()
            .unwrap()
            .iter()
            .cloned(),
    );
    assert!(secrets.len() > 2, "tokens were issued");
    let mut files = all_files(&sb.path());
    files.extend(all_files(&sb.cache()));
    for s in &secrets {
        assert!(!text.contains(s.as_str()), "a secret leaked to the output");
        for (p, bytes) in &files {
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                "a secret leaked into {}",
                p.display()
            );
        }
    }
}

#[test]
fn random_faults_end_in_a_valid_image_or_a_clean_error() {
    require_tool("skopeo");
    let reg = registry::plain();
    let seed = std::sync::atomic::AtomicU64::new(0x9e3779b97f4a7c15);
    // Percent of requests that get a fault: moderate for the first 25 pushes
    // (retries should carry them), harsh for the last 25 (some must fail).
    let rate = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(13));
    let rate2 = rate.clone();
    let proxy = FaultProxy::start(&reg.addr, move |method, path| {
        // xorshift: reproducible sequence of faults.
        let mut x = seed.load(std::sync::atomic::Ordering::SeqCst);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seed.store(x, std::sync::atomic::Ordering::SeqCst);
        if path.contains("/token") {
            return None;
        }
        let r = rate2.load(std::sync::atomic::Ordering::SeqCst);
        let roll = x % 1000;
        if roll >= r * 10 {
            return None;
        }
        // Among faults: drops, 5xx, dropped responses, rarely a 429 (it costs a second).
        match (x / 1000) % 20 {
            0..=7 => Some(Fault::DropRequest),
            8..=14 => Some(Fault::ServerError([500u16, 502, 503][(x as usize / 20_000) % 3])),
            15..=18 if method == "GET" => Some(Fault::DropResponse),
            19 => Some(Fault::TooMany),
            _ => Some(Fault::ServerError(503)),
        }
    });
    let sb = Sandbox::new();
    let (mut ok_count, mut err_count) = (0, 0);
    let mut previous: Option<String> = None;
    for i in 0..50 {
        if i == 25 {
            rate.store(65, std::sync::atomic::Ordering::SeqCst);
        }
        let (src, digest) = make_image(&sb, &format!("f{i}"), &format!("fault-{i}"), 150_000);
        let dest = format!("{}/kiln/faults:latest", proxy.addr);
        let out = k(&sb).args(["push", &src, &dest]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        let now = skopeo_digest(&format!("{}/kiln/faults:latest", reg.addr), &["--tls-verify=false"]);
        if out.status.success() {
            ok_count += 1;
            assert_eq!(
                now.as_deref(),
                Some(digest.as_str()),
                "push {i} succeeded: the tag names the new image"
            );
            // The whole image is there: skopeo can copy it (every blob verified).
            let copy = sb.join(format!("copy{i}"));
            ok(Command::new("skopeo")
                .args(["copy", "--src-tls-verify=false"])
                .arg(format!("docker://{}/kiln/faults:latest", reg.addr))
                .arg(format!("oci:{}:c", copy.display())));
            assert_eq!(validate(&copy)[0].digest, digest);
            previous = Some(digest);
        } else {
            err_count += 1;
            assert_eq!(out.status.code(), Some(2));
            assert!(
                stderr.contains("kiln: error:") && stderr.contains("registry"),
                "a clear error: {stderr}"
            );
            assert_eq!(now, previous, "push {i} failed: the tag did not move");
        }
    }
    let injected = proxy.faults_injected.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "50 pushes through the fault proxy: {ok_count} complete, {err_count} clean failures, {injected} faults injected"
    );
    assert!(injected >= 20, "the proxy injected faults ({injected})");
    assert!(ok_count >= 25, "retries carry most pushes through ({ok_count} of 50)");
    assert!(
        err_count >= 1,
        "the harsh half produced clean failures too ({err_count})"
    );
}

#[test]
fn a_wrong_digest_from_the_registry_fails_the_pull_and_stores_nothing() {
    let reg = registry::plain();
    let sb = Sandbox::new();
    let (src, _) = make_image(&sb, "bad", "corrupt-me", 100_000);
    ok(k(&sb).args(["push", &src, &format!("{}/kiln/bad:v1", reg.addr)]));
    let proxy = FaultProxy::start(&reg.addr, |m, p| {
        (m == "GET" && p.contains("/blobs/")).then_some(Fault::Corrupt)
    });
    let fresh = Sandbox::new();
    let out_dir = fresh.join("out");
    let err = fails(
        k(&fresh)
            .args(["pull", &format!("{}/kiln/bad:v1", proxy.addr), "--out"])
            .arg(format!("oci:{}", out_dir.display())),
    );
    assert!(
        err.contains("expected sha256:") && err.contains("found sha256:"),
        "{err}"
    );
    assert!(!out_dir.exists(), "no output");
    let store = fresh.cache().join("blobs/sha256");
    let stored: Vec<_> = fs::read_dir(&store)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(stored.is_empty(), "nothing stored in the content store: {stored:?}");
}

#[test]
fn retry_after_is_honoured_and_chunked_uploads_resume() {
    let reg = registry::plain();
    let sb = Sandbox::new();
    // One 429 (Retry-After: 1) on the first blob HEAD.
    let first = std::sync::atomic::AtomicBool::new(true);
    let proxy = FaultProxy::start(&reg.addr, move |m, p| {
        (m == "HEAD" && p.contains("/blobs/") && first.swap(false, std::sync::atomic::Ordering::SeqCst))
            .then_some(Fault::TooMany)
    });
    let (src, digest) = make_image(&sb, "ra", "retry-after", 50_000);
    let started = Instant::now();
    ok(k(&sb).args(["push", &src, &format!("{}/kiln/ra:v1", proxy.addr)]));
    assert!(started.elapsed() >= Duration::from_secs(1), "waited for Retry-After");
    assert_eq!(
        skopeo_digest(&format!("{}/kiln/ra:v1", reg.addr), &["--tls-verify=false"]).as_deref(),
        Some(digest.as_str())
    );

    // Chunked: the second PATCH is dropped mid-body; kiln asks for the Range and resumes.
    let n = std::sync::atomic::AtomicU32::new(0);
    let proxy = FaultProxy::start(&reg.addr, move |m, _| {
        (m == "PATCH" && n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 1).then_some(Fault::DropRequest)
    });
    let (src, digest) = make_image(&sb, "ch", "chunked", 400_000);
    let out = ok(k(&sb).args([
        "push",
        "--debug-registry",
        "--chunk-size",
        "65536",
        &src,
        &format!("{}/kiln/ch:v1", proxy.addr),
    ]));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("PATCH") && log.contains("registry: GET"),
        "resumed via a status GET: {log}"
    );
    assert_eq!(
        skopeo_digest(&format!("{}/kiln/ch:v1", reg.addr), &["--tls-verify=false"]).as_deref(),
        Some(digest.as_str())
    );
}

#[test]
fn a_multi_platform_index_is_pushed_after_its_children() {
    require_tool("skopeo");
    let reg = registry::plain();
    let sb = Sandbox::new();
    fs::write(sb.join("f"), "multi\n").unwrap();
    let layout = sb.join("layout");
    let l = layout.display();
    let amd = stdout(&ok(sb.kiln().args([
        "assemble",
        "--quiet",
        "--add",
        "f:/f",
        "--platform",
        "linux/amd64",
        "--out",
        &format!("oci:{l}:amd"),
    ])));
    let arm = stdout(&ok(sb.kiln().args([
        "assemble",
        "--quiet",
        "--add",
        "f:/f",
        "--platform",
        "linux/arm64",
        "--out",
        &format!("oci:{l}:arm"),
    ])));
    // An index of both, written as a blob and tagged `multi` in the layout.
    let index_path = layout.join("index.json");
    let mut top: serde_json::Value = serde_json::from_slice(&fs::read(&index_path).unwrap()).unwrap();
    let mut children: Vec<serde_json::Value> = top["manifests"].as_array().unwrap().clone();
    for c in &mut children {
        c.as_object_mut().unwrap().remove("annotations");
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": children});
    let bytes = serde_json::to_vec(&index).unwrap();
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    fs::write(layout.join("blobs/sha256").join(&digest[7..]), &bytes).unwrap();
    top["manifests"].as_array_mut().unwrap().push(serde_json::json!({
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}
    }));
    fs::write(&index_path, serde_json::to_vec(&top).unwrap()).unwrap();

    let dest = format!("{}/kiln/multi:v1", reg.addr);
    let out = ok(k(&sb).args(["push", &format!("oci:{l}:multi"), &dest]));
    assert_eq!(stdout(&out), digest, "the index is pushed as stored");
    let raw = ok(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{dest}")));
    assert_eq!(raw.stdout, bytes, "the registry holds the index bytes exactly");
    // Both children are in the registry, by digest, each a complete image.
    for want in [&amd, &arm] {
        let child = format!("{}/kiln/multi@{want}", reg.addr);
        assert_eq!(
            skopeo_digest(&child, &["--tls-verify=false"]).as_deref(),
            Some(want.as_str())
        );
        let copy = sb.join(format!("copy-{}", &want[7..19]));
        ok(Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{child}"))
            .arg(format!("oci:{}:c", copy.display())));
        assert_eq!(validate(&copy)[0].digest, *want);
    }
    // kiln pulls the platform it is asked for.
    let pulled = sb.join("pulled");
    let out = ok(k(&sb)
        .args(["pull", "--platform", "linux/arm64", &dest, "--out"])
        .arg(format!("oci:{}:p", pulled.display())));
    assert_eq!(stdout(&out), arm);
}
