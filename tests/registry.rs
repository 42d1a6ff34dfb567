//! `kiln push` and `kiln pull` against real registries (plain HTTP, TLS +
//! htpasswd, token auth with a real JWT flow), skopeo as the independent
//! client both ways, and a fault-injecting proxy for drops, 5xx, 429 and
//! corrupted bodies. Credentials must never show up anywhere.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
    // Without the CA: the untrusted certificate is the error (a loopback
    // registry that speaks TLS is never retried over plain HTTP).
    let err = fails(k(&sb).args(["push", &src, &dest]));
    assert!(
        err.contains(&reg.addr) && err.contains("TLS certificate is not trusted") && err.contains("certs.d"),
        "{err}"
    );

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
    assert_eq!(
        encoded_forms(password).len(),
        8,
        "the password has eight distinct forms"
    );
    let mut files = all_files(&sb.path());
    files.extend(all_files(&sb.cache()));
    assert!(!files.is_empty());
    for (i, secret) in secrets.iter().enumerate() {
        for form in encoded_forms(secret) {
            let found = |bytes: &[u8]| bytes.windows(form.len()).any(|w| w == form.as_bytes());
            // Name the secret by its index only: the message must not print it.
            assert!(!found(&transcript), "secret {i} leaked to the output in some form");
            for (p, bytes) in &files {
                assert!(!found(bytes), "secret {i} leaked into {} in some form", p.display());
            }
        }
    }
}

/// The forms a secret can take on its way out: as is, JSON-escaped (also
/// with non-ASCII as `\uXXXX`, either case), percent-encoded (upper- or
/// lower-case hex, space as `%20` or `+`).
fn encoded_forms(secret: &str) -> Vec<String> {
    let json = serde_json::to_string(secret).unwrap();
    let json = json[1..json.len() - 1].to_string();
    let json_ascii = |upper: bool| -> String {
        json.chars()
            .map(|c| match (c.is_ascii(), upper) {
                (true, _) => c.to_string(),
                (false, false) => format!("\\u{:04x}", c as u32),
                (false, true) => format!("\\u{:04X}", c as u32),
            })
            .collect()
    };
    let percent = |space_plus: bool, upper: bool| -> String {
        secret
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
                b' ' if space_plus => "+".to_string(),
                _ if upper => format!("%{b:02X}"),
                _ => format!("%{b:02x}"),
            })
            .collect()
    };
    let mut forms = vec![
        secret.to_string(),
        json_ascii(false),
        json_ascii(true),
        json.clone(),
        percent(false, false),
        percent(false, true),
        percent(true, false),
        percent(true, true),
    ];
    forms.sort();
    forms.dedup();
    forms
}

/// kiln's `--json` `requests` field: requests made, by method.
fn reported_requests(out: &Output) -> BTreeMap<String, u64> {
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(report["requests"].clone()).unwrap()
}

#[test]
fn random_faults_end_in_a_valid_image_or_a_clean_error() {
    require_tool("skopeo");
    let reg = registry::plain();
    let seed = AtomicU64::new(0x9e3779b97f4a7c15);
    // Percent of requests that get a fault: moderate for the first 25 pushes
    // (retries should carry them), harsh for the last 25 (some must fail).
    let rate = Arc::new(AtomicU64::new(13));
    let rate2 = rate.clone();
    let proxy = FaultProxy::start(&reg.addr, move |method, path| {
        // xorshift: reproducible sequence of faults.
        let mut x = seed.load(Ordering::SeqCst);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        seed.store(x, Ordering::SeqCst);
        if path.contains("/token") {
            return None;
        }
        let r = rate2.load(Ordering::SeqCst);
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
    let mut moderate = 0; // requests seen in the moderate half
    for i in 0..50 {
        if i == 25 {
            moderate = proxy.seen().len();
            rate.store(65, Ordering::SeqCst);
        }
        let (src, digest) = make_image(&sb, &format!("f{i}"), &format!("fault-{i}"), 150_000);
        let dest = format!("{}/kiln/faults:latest", proxy.addr);
        let before = proxy.seen().len();
        let mut c = k(&sb);
        let out = output(c.args(["push", "--json", &src, &dest]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{}", explain(&c, &out));
        let now = skopeo_digest(&format!("{}/kiln/faults:latest", reg.addr), &["--tls-verify=false"]);
        if out.status.success() {
            ok_count += 1;
            assert_eq!(
                now.as_deref(),
                Some(digest.as_str()),
                "push {i} succeeded: the tag names the new image"
            );
            // Every request kiln counted (retries included) reached the proxy, and no other.
            assert_eq!(
                reported_requests(&out),
                registry::by_method(&proxy.seen()[before..]),
                "push {i}: kiln's count vs the proxy's"
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
            assert_eq!(out.status.code(), Some(2), "{}", explain(&c, &out));
            assert!(
                stderr.contains("kiln: error:") && stderr.contains("registry"),
                "a clear error\n{}",
                explain(&c, &out)
            );
            assert_eq!(now, previous, "push {i} failed: the tag did not move");
        }
    }
    // How many faults the proxy injected, of which kind, in each half.
    let seen = proxy.seen();
    let faults = |rs: &[registry::Seen]| rs.iter().filter(|r| r.fault.is_some()).count();
    let (first, second) = seen.split_at(moderate);
    let (f1, f2) = (faults(first), faults(second));
    let kinds = |want: fn(&Fault) -> bool| seen.iter().filter(|r| r.fault.as_ref().is_some_and(want)).count();
    let dropped = kinds(|f| *f == Fault::DropRequest);
    let errors = kinds(|f| matches!(f, Fault::ServerError(_)));
    let cut = kinds(|f| *f == Fault::DropResponse);
    let too_many = kinds(|f| *f == Fault::TooMany);
    eprintln!(
        "50 pushes through the fault proxy: {ok_count} complete, {err_count} clean failures; \
         faults: {f1} of {} requests (moderate half), {f2} of {} (harsh half); \
         {dropped} dropped requests, {errors} 5xx, {cut} cut responses, {too_many} 429",
        first.len(),
        second.len()
    );
    assert_eq!(f1 + f2, dropped + errors + cut + too_many);
    let share = |f: usize, n: usize| f as f64 / n as f64;
    assert!(
        (0.05..=0.25).contains(&share(f1, first.len())),
        "about 13% faults in the moderate half: {f1} of {}",
        first.len()
    );
    assert!(
        (0.55..=0.80).contains(&share(f2, second.len())),
        "about 65% faults in the harsh half: {f2} of {}",
        second.len()
    );
    assert!(
        dropped > 0 && errors > 0 && too_many > 0,
        "every kind of request fault was injected"
    );
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
    let manifest = stdout(&ok(k(&sb).args(["push", &src, &format!("{}/kiln/bad:v1", reg.addr)])));
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
    let blob_gets: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
        .collect();
    assert_eq!(
        (proxy.faults(), blob_gets.len()),
        (1, 1),
        "one blob (the config) corrupted, and the pull stops there: {blob_gets:?}"
    );
    assert!(!out_dir.exists(), "no output");
    let store = fresh.cache().join("blobs/sha256");
    let stored: Vec<_> = fs::read_dir(&store)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    // The manifest (served intact, verified against its digest) is kept;
    // no blob that failed verification is.
    let manifest_hex = manifest.strip_prefix("sha256:").unwrap().to_string();
    assert_eq!(
        stored,
        vec![std::ffi::OsString::from(&manifest_hex)],
        "only the verified manifest is in the content store"
    );
    let bytes = fs::read(store.join(&manifest_hex)).unwrap();
    assert_eq!(sha256_hex(&bytes), manifest_hex);
}

#[test]
fn retry_after_is_honoured_and_chunked_uploads_resume() {
    let reg = registry::plain();
    let sb = Sandbox::new();
    // One 429 (Retry-After: 1) on the first blob HEAD.
    let first = AtomicBool::new(true);
    let proxy = FaultProxy::start(&reg.addr, move |m, p| {
        (m == "HEAD" && p.contains("/blobs/") && first.swap(false, Ordering::SeqCst)).then_some(Fault::TooMany)
    });
    let (src, digest) = make_image(&sb, "ra", "retry-after", 50_000);
    let started = Instant::now();
    ok(k(&sb).args(["push", &src, &format!("{}/kiln/ra:v1", proxy.addr)]));
    assert!(started.elapsed() >= Duration::from_secs(1), "waited for Retry-After");
    assert_eq!(proxy.faults(), 1, "one 429 injected");
    assert_eq!(
        skopeo_digest(&format!("{}/kiln/ra:v1", reg.addr), &["--tls-verify=false"]).as_deref(),
        Some(digest.as_str())
    );

    // Chunked: the second PATCH of an upload session is dropped mid-body
    // (once); kiln asks for the Range and resumes.
    let upload = |p: &str| p.split('?').next().unwrap().to_string();
    let patches: Mutex<BTreeMap<String, u32>> = Mutex::default();
    let done = AtomicBool::new(false);
    let proxy = FaultProxy::start(&reg.addr, move |m, p| {
        if m != "PATCH" {
            return None;
        }
        let mut patches = patches.lock().unwrap();
        let n = patches.entry(upload(p)).or_default();
        *n += 1;
        (*n == 2 && !done.swap(true, Ordering::SeqCst)).then_some(Fault::DropRequest)
    });
    let (src, digest) = make_image(&sb, "ch", "chunked", 400_000);
    ok(k(&sb).args([
        "push",
        "--chunk-size",
        "65536",
        &src,
        &format!("{}/kiln/ch:v1", proxy.addr),
    ]));
    assert_eq!(proxy.faults(), 1, "one PATCH dropped");
    let seen = proxy.seen();
    let dropped = seen.iter().find(|r| r.fault.is_some()).unwrap();
    // The registry kept the first chunk (0-65535) and never saw the second:
    // a status GET of the session, then the second chunk again from byte 65536.
    let session: Vec<(&str, Option<&str>)> = seen
        .iter()
        .filter(|r| upload(&r.path) == upload(&dropped.path))
        .map(|r| (r.method.as_str(), r.content_range.as_deref()))
        .collect();
    assert!(session.len() >= 4, "{session:#?}");
    assert_eq!(
        session[..4],
        [
            ("PATCH", Some("0-65535")),
            ("PATCH", Some("65536-131071")),
            ("GET", None),
            ("PATCH", Some("65536-131071"))
        ],
        "resumed at the offset the registry reported: {session:#?}"
    );
    assert_eq!(
        skopeo_digest(&format!("{}/kiln/ch:v1", reg.addr), &["--tls-verify=false"]).as_deref(),
        Some(digest.as_str())
    );
}

/// A layout in the sandbox holding an amd64 and an arm64 image and an index
/// of both tagged `multi`; returns (the layout's ref for `multi`, the index
/// digest and bytes, the two children's digests).
fn make_index_layout(sb: &Sandbox) -> (String, String, Vec<u8>, [String; 2]) {
    fs::write(sb.join("f"), "multi\n").unwrap();
    let layout = sb.join("layout");
    let l = layout.display();
    let assemble = |platform: &str, tag: &str| {
        stdout(&ok(sb.kiln().args([
            "assemble",
            "--quiet",
            "--add",
            "f:/f",
            "--platform",
            platform,
            "--out",
            &format!("oci:{l}:{tag}"),
        ])))
    };
    let amd = assemble("linux/amd64", "amd");
    let arm = assemble("linux/arm64", "arm");
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
    (format!("oci:{l}:multi"), digest, bytes, [amd, arm])
}

#[test]
fn a_multi_platform_index_is_pushed_after_its_children() {
    require_tool("skopeo");
    let reg = registry::plain();
    let sb = Sandbox::new();
    let (src, digest, bytes, [amd, arm]) = make_index_layout(&sb);
    let dest = format!("{}/kiln/multi:v1", reg.addr);
    let out = ok(k(&sb).args(["push", &src, &dest]));
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

/// Pushes `src` to `repo` through `proxy`; returns the requests the proxy
/// saw during the push, by method, and kiln's own count.
fn push_counted(sb: &Sandbox, proxy: &FaultProxy, src: &str, repo: &str) -> [BTreeMap<String, u64>; 2] {
    let before = proxy.seen().len();
    let out = ok(k(sb).args(["push", "--json", src, &format!("{}/{repo}", proxy.addr)]));
    [registry::by_method(&proxy.seen()[before..]), reported_requests(&out)]
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(m, n)| (m.to_string(), *n)).collect()
}

#[test]
fn a_push_makes_exactly_the_requests_it_made_before() {
    let reg = registry::plain();
    let sb = Sandbox::new();
    // One layer and a config.
    let (src, _) = make_image(&sb, "count", "count-requests", 100_000);
    let proxy = FaultProxy::start(&reg.addr, |_, _| None);
    // New repository: per blob a HEAD, a POST and a PUT; the manifest's HEAD
    // and PUT; then the tag's release history (a GET of it, the empty blob's
    // HEAD, POST and PUT, the history manifest's HEAD and PUT).
    let [seen, reported] = push_counted(&sb, &proxy, &src, "kiln/count:v1");
    let want = counts(&[("GET", 1), ("HEAD", 5), ("POST", 3), ("PUT", 5)]);
    assert_eq!(seen, want, "a new push");
    assert_eq!(reported, want, "a new push, as kiln reports it");
    // Unchanged: HEADs only.
    let [seen, reported] = push_counted(&sb, &proxy, &src, "kiln/count:v1");
    let want = counts(&[("HEAD", 3)]);
    assert_eq!((&seen, &reported), (&want, &want), "a re-push");
    // Another repository on the same registry: blobs mounted (one POST
    // each), and the new tag's history as above.
    let [seen, reported] = push_counted(&sb, &proxy, &src, "kiln/count-two:v1");
    let want = counts(&[("GET", 1), ("HEAD", 5), ("POST", 3), ("PUT", 3)]);
    assert_eq!((&seen, &reported), (&want, &want), "a push to a second repository");
    assert_eq!(proxy.faults(), 0);
}

#[test]
fn an_index_push_reports_its_childrens_requests() {
    let reg = registry::plain();
    let sb = Sandbox::new();
    let (src, _, _, _) = make_index_layout(&sb);
    let proxy = FaultProxy::start(&reg.addr, |_, _| None);
    let [seen, reported] = push_counted(&sb, &proxy, &src, "kiln/multi-count:v1");
    assert_eq!(reported, seen, "kiln's count includes the children's requests");
}

#[test]
fn no_request_is_sent_more_often_than_the_client_attempts() {
    const ATTEMPTS: u64 = 6;
    let reg = registry::plain();
    let sb = Sandbox::new();
    // Two images that share their layer: once `a` is in the repository, a
    // push of `b` has exactly one blob to upload (its config).
    let (a, _) = make_image(&sb, "a", "attempts", 50_000);
    ok(k(&sb).args(["push", &a, &format!("{}/kiln/attempts:a", reg.addr)]));
    let b = format!("oci:{}:b", sb.join("b-layout").display());
    ok(sb
        .kiln()
        .args(["assemble", "--quiet", "--from", &a, "--env", "B=1", "--out", &b]));
    // Every upload's final PUT fails with a 503.
    let proxy = FaultProxy::start(&reg.addr, |m, p| {
        (m == "PUT" && p.contains("/blobs/uploads/")).then_some(Fault::ServerError(503))
    });
    let err = fails(k(&sb).args(["push", &b, &format!("{}/kiln/attempts:b", proxy.addr)]));
    assert!(err.contains("HTTP 503"), "{err}");
    assert_eq!(
        skopeo_digest(&format!("{}/kiln/attempts:b", reg.addr), &["--tls-verify=false"]),
        None,
        "no tag for a failed push"
    );
    let per_request = proxy.by_request();
    let puts: Vec<u64> = per_request
        .iter()
        .filter(|((m, _), _)| m == "PUT")
        .map(|(_, n)| *n)
        .collect();
    assert_eq!(puts.len(), 1, "one blob was uploaded: {per_request:#?}");
    assert!(puts[0] > 1, "the failing upload was retried: {per_request:#?}");
    let over: Vec<_> = per_request.iter().filter(|(_, n)| **n > ATTEMPTS).collect();
    assert!(
        over.is_empty(),
        "requests sent more than {ATTEMPTS} times: {over:?} (all: {per_request:#?})"
    );
}
