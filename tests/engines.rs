//! Remote engines: a second dockerd on this machine, on a loopback TCP port
//! with TLS (its own data root, exec root, pid file and bridge; certificates
//! made here), reached through DOCKER_HOST + DOCKER_TLS_VERIFY +
//! DOCKER_CERT_PATH and through a Docker context. The build there gives the
//! same digest as on the local socket; wrong certificates give a clear error.
//! Also the registry build cache: hits without an engine, and the compiled
//! dependencies restored on a fresh runner, byte-identical to a cold build.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A dockerd of its own, stopped and cleaned up on drop.
struct SecondEngine {
    dir: PathBuf,
    exec_root: PathBuf,
    bridge: String,
    child: std::process::Child,
    port: u16,
}

impl SecondEngine {
    fn sock(&self) -> String {
        format!("unix://{}", self.dir.join("sock").display())
    }

    /// `docker` against this engine's unix socket (the test's own view).
    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", self.sock());
        c
    }
}

impl Drop for SecondEngine {
    fn drop(&mut self) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
        let _ = std::fs::remove_dir_all(&self.exec_root);
    }
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as
/// docker's TLS setup wants them: DIR/{ca,server,server-key}.pem and
/// DIR/client/{ca,cert,key}.pem.
fn certificates(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir.join("client")).unwrap();
    let script = format!(
        r#"set -e
cd '{dir}'
key() {{ openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }}
key ca-key.pem
openssl req -x509 -new -key ca-key.pem -out ca.pem -days 2 -subj '/CN={name} test CA' \
  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
key server-key.pem
openssl req -new -key server-key.pem -out server.csr -subj /CN=127.0.0.1
printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out server.pem -days 2 -extfile server.ext 2>/dev/null
key client/key.pem
openssl req -new -key client/key.pem -out client.csr -subj /CN=kiln-test-client
printf 'extendedKeyUsage=clientAuth\n' > client.ext
openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out client/cert.pem -days 2 -extfile client.ext 2>/dev/null
cp ca.pem client/ca.pem
"#,
        dir = dir.display()
    );
    ok(Command::new("sh").arg("-c").arg(script));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a dockerd with TLS on a loopback port. Its bridge is its own (a
/// second daemon must never touch docker0); no iptables, no NAT: builds
/// there need no network (hello-http has no dependencies).
fn second_engine(sb: &Sandbox) -> SecondEngine {
    require_engine();
    let dir = sb.join("engine2");
    certificates(&dir.join("tls"), "engine2");
    let pid = std::process::id();
    // Socket paths have a length limit: the exec root stays short.
    let exec_root = PathBuf::from(format!("/tmp/kiln-e2-{pid}"));
    let bridge = format!("kb{pid}");
    ok(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]));
    ok(Command::new("ip").args(["addr", "add", "10.213.0.1/24", "dev", &bridge]));
    ok(Command::new("ip").args(["link", "set", &bridge, "up"]));
    let port = free_port();
    let tls = dir.join("tls");
    let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
    let child = Command::new("dockerd")
        .arg("--data-root")
        .arg(dir.join("data"))
        .arg("--exec-root")
        .arg(&exec_root)
        .arg("--pidfile")
        .arg(dir.join("dockerd.pid"))
        .arg("-H")
        .arg(format!("unix://{}", dir.join("sock").display()))
        .arg("-H")
        .arg(format!("tcp://127.0.0.1:{port}"))
        .arg("--tlsverify")
        .arg("--tlscacert")
        .arg(tls.join("ca.pem"))
        .arg("--tlscert")
        .arg(tls.join("server.pem"))
        .arg("--tlskey")
        .arg(tls.join("server-key.pem"))
        .args(["--bridge", &bridge, "--iptables=false", "--ip-masq=false"])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let e = SecondEngine {
        dir,
        exec_root,
        bridge,
        child,
        port,
    };
    let t = std::time::Instant::now();
    while !e.docker().args(["version"]).output().unwrap().status.success() {
        assert!(
            t.elapsed().as_secs() < 60,
            "the second dockerd did not start: {}",
            std::fs::read_to_string(e.dir.join("dockerd.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    e
}

fn build_digest(sb: &Sandbox, project: &Path, cache: &str, env: &[(&str, String)], extra: &[&str]) -> String {
    let mut c = sb.kiln();
    c.current_dir(project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("KILN_CACHE_DIR", sb.join(cache))
        .args(["build", "--json", "--builder", &builder()])
        .args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = ok(&mut c);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["cache"], "miss", "a cold build was answered from a cache");
    r["digest"].as_str().unwrap().to_string()
}

#[test]
fn a_tls_engine_by_docker_host_and_by_context_builds_the_same_digest() {
    let sb = Sandbox::new();
    let e2 = second_engine(&sb);
    let project = copy_project(&repo().join("examples/hello-http"), &sb.join("hello-http"));
    let out = format!("oci:{}", sb.join("layout-local").display());
    let local = build_digest(&sb, &project, "cache-local", &[], &["--out", &out]);

    // DOCKER_HOST + DOCKER_TLS_VERIFY + DOCKER_CERT_PATH, as the docker CLI reads them.
    let tls_env = vec![
        ("DOCKER_HOST", format!("tcp://127.0.0.1:{}", e2.port)),
        ("DOCKER_TLS_VERIFY", "1".to_string()),
        ("DOCKER_CERT_PATH", e2.dir.join("tls/client").display().to_string()),
    ];
    let out = format!("oci:{}", sb.join("layout-remote").display());
    let remote = build_digest(&sb, &project, "cache-remote", &tls_env, &["--out", &out]);
    assert_eq!(remote, local, "the remote engine built other bytes");
    // It really ran there: kiln's cache volumes are on the second engine.
    let volumes = stdout(&ok(e2.docker().args([
        "volume",
        "ls",
        "-q",
        "--filter",
        "label=dev.kiln.owner=cache",
    ])));
    assert!(!volumes.is_empty(), "no kiln volumes on the second engine");

    // Wrong certificates: a client certificate from another CA.
    certificates(&sb.join("wrong"), "wrong");
    let mut c = sb.kiln();
    c.current_dir(&project)
        .env("KILN_CACHE_DIR", sb.join("cache-wrong"))
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", e2.port))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", sb.join("wrong/client"))
        .args([
            "build",
            "--builder",
            &builder(),
            "--out",
            &format!("oci:{}", sb.join("x").display()),
        ]);
    let err = fails(&mut c);
    assert!(
        err.contains(&format!("tcp://127.0.0.1:{} (TLS) (from DOCKER_HOST)", e2.port)) && err.contains("certificate"),
        "{err}"
    );
    // Missing files name the directory to fix.
    let mut c = sb.kiln();
    c.current_dir(&project)
        .env("DOCKER_HOST", format!("tcp://127.0.0.1:{}", e2.port))
        .env("DOCKER_TLS_VERIFY", "1")
        .env("DOCKER_CERT_PATH", sb.join("nowhere"))
        .args([
            "build",
            "--builder",
            &builder(),
            "--out",
            &format!("oci:{}", sb.join("y").display()),
        ]);
    let err = fails(&mut c);
    assert!(err.contains("DOCKER_CERT_PATH") && err.contains("ca.pem"), "{err}");

    // A Docker context selecting the TCP engine (config.json's currentContext).
    use sha2::Digest as _;
    let config = sb.join("docker-config");
    let id = hex::encode(sha2::Sha256::digest(b"engine2"));
    let meta = config.join("contexts/meta").join(&id);
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("meta.json"),
        serde_json::json!({
            "Name": "engine2",
            "Metadata": {},
            "Endpoints": {"docker": {"Host": format!("tcp://127.0.0.1:{}", e2.port), "SkipTLSVerify": false}}
        })
        .to_string(),
    )
    .unwrap();
    let tls = config.join("contexts/tls").join(&id).join("docker");
    std::fs::create_dir_all(&tls).unwrap();
    for f in ["ca.pem", "cert.pem", "key.pem"] {
        std::fs::copy(e2.dir.join("tls/client").join(f), tls.join(f)).unwrap();
    }
    std::fs::write(config.join("config.json"), r#"{"currentContext": "engine2"}"#).unwrap();
    let ctx_env = vec![("DOCKER_CONFIG", config.display().to_string())];
    let name = unique("kiln-test/engine2");
    let by_context = build_digest(
        &sb,
        &project,
        "cache-context",
        &ctx_env,
        &["--out", &format!("docker-daemon:{name}:1")],
    );
    assert_eq!(by_context, local);
    ok(e2.docker().args(["image", "inspect", &format!("{name}:1")]));
    let on_local = Command::new("docker")
        .args(["image", "inspect", &format!("{name}:1")])
        .output()
        .unwrap();
    assert!(
        !on_local.status.success(),
        "the context's image went to the local engine"
    );

    // kiln check through the context: the image runs on the second engine.
    let mut c = sb.kiln();
    c.env("DOCKER_CONFIG", &config)
        .args(["check", "--json", &format!("docker-daemon:{name}:1")]);
    let out = output(&mut c);
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", explain(&c, &out)));
    assert_eq!(report["items"][1]["status"], "pass", "{report}");
    assert_eq!(report["items"][2]["status"], "pass", "{report}");
}

/// An sshd of its own on a loopback port, for root with a test key; killed on drop.
struct Sshd {
    child: std::process::Child,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_ssh_engine_builds_the_same_digest() {
    require_engine();
    let sb = Sandbox::new();
    let d = sb.join("ssh");
    std::fs::create_dir_all(&d).unwrap();
    ok(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("host_key")));
    ok(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(d.join("id")));
    std::fs::copy(d.join("id.pub"), d.join("authorized_keys")).unwrap();
    std::fs::create_dir_all("/run/sshd").unwrap();
    let port = free_port();
    std::fs::write(
        d.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {dir}/host_key\nAuthorizedKeysFile {dir}/authorized_keys\n\
             PidFile {dir}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n",
            dir = d.display()
        ),
    )
    .unwrap();
    let _sshd = Sshd {
        child: Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .unwrap(),
    };
    let host_pub = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
    std::fs::write(d.join("known_hosts"), format!("[127.0.0.1]:{port} {host_pub}")).unwrap();
    // The user's side: an ssh_config naming the key and the known host.
    std::fs::write(
        d.join("ssh_config"),
        format!(
            "Host kiln-test-engine\n  HostName 127.0.0.1\n  Port {port}\n  User root\n  IdentityFile {dir}/id\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile {dir}/known_hosts\n  StrictHostKeyChecking yes\n",
            dir = d.display()
        ),
    )
    .unwrap();
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t.elapsed().as_secs() < 30, "sshd did not start");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let project = copy_project(&repo().join("examples/hello-http"), &sb.join("hello-http"));
    let out = format!("oci:{}", sb.join("layout-local").display());
    let local = build_digest(&sb, &project, "cache-local", &[], &["--out", &out]);
    let ssh_env = vec![
        ("DOCKER_HOST", "ssh://kiln-test-engine".to_string()),
        ("KILN_SSH_CONFIG", d.join("ssh_config").display().to_string()),
    ];
    let out = format!("oci:{}", sb.join("layout-ssh").display());
    let remote = build_digest(&sb, &project, "cache-ssh", &ssh_env, &["--out", &out]);
    assert_eq!(remote, local);
    let log = std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default();
    assert!(
        log.contains("Accepted publickey for root"),
        "the build did not go through ssh: {log}"
    );

    // A host key that does not match is refused by ssh, and kiln says which engine.
    std::fs::write(
        d.join("known_hosts"),
        format!(
            "[127.0.0.1]:{port} {}",
            std::fs::read_to_string(d.join("id.pub")).unwrap()
        ),
    )
    .unwrap();
    let mut c = sb.kiln();
    c.current_dir(&project)
        .env("KILN_CACHE_DIR", sb.join("cache-bad"))
        .env("DOCKER_HOST", "ssh://kiln-test-engine")
        .env("KILN_SSH_CONFIG", d.join("ssh_config"))
        .args([
            "build",
            "--builder",
            &builder(),
            "--out",
            &format!("oci:{}", sb.join("z").display()),
        ]);
    let err = fails(&mut c);
    assert!(
        err.contains("ssh://kiln-test-engine (from DOCKER_HOST) does not answer"),
        "{err}"
    );
}

#[test]
fn a_registry_cache_hit_needs_no_engine_and_read_mode_never_writes() {
    require_engine();
    let sb = Sandbox::new();
    let project = copy_project(&repo().join("examples/hello-http"), &sb.join("hello-http"));
    let cache = format!("{}/{}", dev_env()["KILN_REGISTRY"], unique("kiln-test/build-cache"));
    let tags = || -> Vec<String> {
        let out = Command::new("skopeo")
            .args(["list-tags", "--tls-verify=false", &format!("docker://{cache}")])
            .output()
            .unwrap();
        if !out.status.success() {
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    // The project names the cache, but which cache a runner uses and
    // whether it writes is the runner's decision. Machine A writes: --cache.
    let toml = std::fs::read_to_string(project.join("kiln.toml")).unwrap();
    std::fs::write(
        project.join("kiln.toml"),
        format!("{toml}\n[build]\ncache = \"{cache}\"\n"),
    )
    .unwrap();
    let a = build_digest(&sb, &project, "cache-a", &[], &["--cache", &cache]);
    let mut written = tags();
    written.sort();
    assert_eq!(
        written.len(),
        2,
        "the image entry and the dependency layer: {written:?}"
    );
    assert!(written[0].starts_with("kiln-cache-"), "{written:?}");
    assert!(written[1].starts_with("kiln-deps-"), "{written:?}");
    // A project cannot make the runner write where it says.
    let mut c = sb.kiln();
    c.current_dir(&project).env("KILN_CACHE_DIR", sb.join("cache-x")).args([
        "build",
        "--builder",
        &builder(),
        "--cache-mode",
        "readwrite",
    ]);
    let err = fails(&mut c);
    assert!(err.contains("kiln.toml:") && err.contains("--cache REF"), "{err}");

    // Machine B: an empty local cache and no engine at all. Without
    // --cache-mode the project's cache is not used (so it needs an engine);
    // with --cache-mode read it is, and a hit needs no engine.
    let no_engine = format!("unix://{}", sb.join("no-engine.sock").display());
    let mut c = sb.kiln();
    c.current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("KILN_CACHE_DIR", sb.join("cache-b0"))
        .env("DOCKER_HOST", &no_engine)
        .args(["build", "--builder", &builder()]);
    let err = fails(&mut c);
    assert!(
        err.contains("used only with --cache-mode read") && err.contains("no-engine.sock"),
        "{err}"
    );
    let mut c = sb.kiln();
    c.current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("KILN_CACHE_DIR", sb.join("cache-b"))
        .env("DOCKER_HOST", &no_engine)
        .args(["build", "--json", "--builder", &builder(), "--cache-mode", "read"]);
    let out = ok(&mut c);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["cache"], "hit", "{r}");
    assert_eq!(r["cache_source"], "registry", "{r}");
    assert_eq!(r["digest"], a.as_str());
    assert!(!r["attached"].as_array().unwrap().is_empty());
    // Its provenance says where the image came from: the cache entry.
    let layout = project.join("target/kiln/image");
    // (Machine A wrote its own, built, provenance to the same layout.)
    let provs: Vec<String> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .filter(|t| t.contains("\"predicateType\"") && t.contains("slsa.dev/provenance"))
        .collect();
    assert_eq!(provs.len(), 2, "one built, one from the cache");
    assert!(
        provs.iter().any(|p| p.contains("build-cache") && p.contains(&cache)),
        "{provs:?}"
    );

    // A one-line change, read mode: built here, never written to the cache.
    let main = project.join("src/main.rs");
    let src = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, src.replace("hello from kiln", "hello again from kiln")).unwrap();
    let changed = build_digest(&sb, &project, "cache-c", &[], &["--cache-mode", "read"]);
    assert_ne!(changed, a);
    let mut now = tags();
    now.sort();
    assert_eq!(now, written, "a read-only build wrote the cache");
    remove_writer_volume(&cache);
}

/// Removes the target volume a cache writer of `cache` compiled in (named
/// by the cache: `…-cache-writer-<sha256(cache)[..12]>`), so test runs
/// leave none behind.
fn remove_writer_volume(cache: &str) {
    let suffix = format!("-cache-writer-{}", &sha256_hex(cache.as_bytes())[..12]);
    let out = ok(Command::new("docker").args(["volume", "ls", "-q", "--filter", "label=dev.kiln.owner=cache"]));
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|v| v.ends_with(&suffix))
        .map(str::to_string)
        .collect();
    assert!(
        !names.is_empty(),
        "no writer volume ending {suffix}: is the writer's volume keyed by its cache?"
    );
    for v in names {
        let _ = Command::new("docker").args(["volume", "rm", &v]).output();
    }
}

/// The kiln target volumes the local engine has.
fn target_volumes() -> std::collections::BTreeSet<String> {
    let out = ok(Command::new("docker").args(["volume", "ls", "-q", "--filter", "label=dev.kiln.owner=cache"]));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|v| v.starts_with("kiln-target-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_fresh_runner_restores_compiled_dependencies_and_builds_the_same_bytes() {
    require_engine();
    let sb = Sandbox::new();
    let project = copy_project(&repo().join("examples/with-deps"), &sb.join("with-deps"));
    // A package name of its own: its target volumes are new to this engine,
    // as on a fresh runner (the crate-source volume is shared, as a runner's
    // fetch would be).
    let name = unique("deps-cache").replace('/', "-");
    for f in ["Cargo.toml", "Cargo.lock"] {
        let p = project.join(f);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.matches("name = \"with-deps\"").count(), 1, "{f}");
        std::fs::write(&p, text.replace("name = \"with-deps\"", &format!("name = \"{name}\""))).unwrap();
    }
    let cache = format!("{}/{}", dev_env()["KILN_REGISTRY"], unique("kiln-test/deps-cache"));
    let before = target_volumes();
    let build = |dir: &str, extra: &[&str]| -> (serde_json::Value, String) {
        let mut c = sb.kiln();
        c.current_dir(&project)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env("KILN_CACHE_DIR", sb.join(dir))
            .args(["build", "--json", "--verbose", "--builder", &builder(), "--out"])
            .arg(format!("oci:{}", sb.join(format!("out-{dir}")).display()))
            .args(extra);
        let out = ok(&mut c);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["cache"], "miss", "{r}");
        (r, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let compiled = |log: &str| -> Vec<String> {
        log.lines()
            .filter_map(|l| l.trim().strip_prefix("Compiling "))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect()
    };

    // Machine A writes the cache: the image entry and the dependency layer.
    let (a, log) = build("a", &["--cache", &cache]);
    assert_eq!(a["deps_cache"], "stored", "{a}");
    assert!(
        compiled(&log).contains(&"serde".to_string()),
        "a cold build compiles the dependencies"
    );
    let tags = ok(Command::new("skopeo").args(["list-tags", "--tls-verify=false", &format!("docker://{cache}")]));
    let tags: serde_json::Value = serde_json::from_slice(&tags.stdout).unwrap();
    let tags: Vec<&str> = tags["Tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let deps_tag = tags
        .iter()
        .find(|t| t.starts_with("kiln-deps-"))
        .expect("a dependency entry");
    assert_eq!(
        tags.len(),
        2,
        "an image entry and a dependency entry, no release history: {tags:?}"
    );
    let raw = ok(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{cache}:{deps_tag}"),
    ]));
    let m: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(m["layers"].as_array().unwrap().len(), 1, "{m}");

    // A one-line change in the package.
    let main = project.join("src/main.rs");
    let src = std::fs::read_to_string(&main).unwrap();
    let changed = src.replacen("hello from kiln", "hello again from kiln", 1);
    assert_ne!(changed, src, "the fixture's one line to change");
    std::fs::write(&main, changed).unwrap();

    // Machine B: an empty local cache and a target volume it never had.
    let (b, log) = build("b", &["--cache", &cache, "--cache-mode", "read"]);
    assert_eq!(b["deps_cache"], "restored", "{b}");
    assert_eq!(
        compiled(&log),
        vec![name.clone()],
        "only the package compiles after the restore"
    );
    // The same bytes as a cold build with no cache at all.
    let (cold, log) = build("cold", &["--fresh"]);
    assert!(compiled(&log).len() > 10, "the cold build compiles everything");
    assert_eq!(
        b["digest"], cold["digest"],
        "a restored dependency layer changed the image"
    );
    assert_ne!(b["digest"], a["digest"]);

    // B again, warm: its own volume wins over the layer; read mode never writes.
    std::fs::write(&main, src.replacen("hello from kiln", "hello once more from kiln", 1)).unwrap();
    let (again, _) = build("b", &["--cache", &cache, "--cache-mode", "read"]);
    assert!(again.get("deps_cache").is_none(), "{again}");
    let after = ok(Command::new("skopeo").args(["list-tags", "--tls-verify=false", &format!("docker://{cache}")]));
    let after: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    assert_eq!(
        after["Tags"].as_array().unwrap().len(),
        2,
        "a read-only build wrote the cache"
    );

    // Only this test's volumes: those holding its package's fingerprints
    // (another test may have made a volume meanwhile).
    for v in target_volumes().difference(&before) {
        let out = ok(Command::new("docker").args(["volume", "inspect", "-f", "{{.Mountpoint}}", v]));
        let mount = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let has = |dir: PathBuf| {
            std::fs::read_dir(dir.join("release/.fingerprint"))
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with(&format!("{name}-")))
                })
                .unwrap_or(false)
        };
        let ours = std::fs::read_dir(&mount)
            .map(|d| d.flatten().any(|e| has(e.path())))
            .unwrap_or(false);
        if ours {
            let _ = Command::new("docker").args(["volume", "rm", v]).output();
        }
    }
}

#[test]
fn cache_prune_keeps_the_newest_entries_and_deletes_images_only_in_a_cache_only_repository() {
    require_engine();
    let sb = Sandbox::new();
    let project = copy_project(&repo().join("examples/hello-http"), &sb.join("hello-http"));
    let cache = format!("{}/{}", dev_env()["KILN_REGISTRY"], unique("kiln-test/prune-cache"));
    let tags = || -> Vec<String> {
        let out = ok(Command::new("skopeo").args(["list-tags", "--tls-verify=false", &format!("docker://{cache}")]));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut t: Vec<String> = v["Tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        t.sort();
        t
    };
    let entries = |t: &[String]| t.iter().filter(|t| t.starts_with("kiln-cache-")).count();
    let exists = |digest: &str| {
        Command::new("skopeo")
            .args([
                "inspect",
                "--tls-verify=false",
                "--raw",
                &format!("docker://{cache}@{digest}"),
            ])
            .output()
            .unwrap()
            .status
            .success()
    };
    // Three commits, three entries, one second apart (entries are dated in seconds).
    let main = project.join("src/main.rs");
    let src = std::fs::read_to_string(&main).unwrap();
    let mut digests = Vec::new();
    for i in 0..3 {
        std::fs::write(&main, src.replace("hello from kiln", &format!("hello {i} from kiln"))).unwrap();
        digests.push(build_digest(
            &sb,
            &project,
            &format!("cache-{i}"),
            &[],
            &["--cache", &cache],
        ));
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let before = tags();
    assert_eq!(entries(&before), 3, "{before:?}");
    assert_eq!(
        before.iter().filter(|t| t.starts_with("kiln-deps-")).count(),
        1,
        "{before:?}"
    );
    let prune = |keep: &str, extra: &[&str]| -> serde_json::Value {
        let out = ok(sb
            .kiln()
            .args(["--json", "cache", "prune", &cache, "--keep", keep])
            .args(extra));
        serde_json::from_slice(&out.stdout).unwrap()
    };

    // A repository of cache entries only: the oldest entry goes with its image.
    let dry = prune("2", &["--dry-run"]);
    assert_eq!(dry["deleted"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(dry["deleted"][0]["subject"], digests[0].as_str(), "{dry}");
    assert_eq!(dry["deleted_images"], serde_json::json!([digests[0]]), "{dry}");
    assert_eq!(tags(), before, "a dry run deleted something");
    let r = prune("2", &[]);
    assert_eq!(r["deleted"], dry["deleted"], "{r}");
    assert_eq!(entries(&tags()), 2);
    assert!(!exists(&digests[0]), "the oldest entry's image is gone");
    assert!(exists(&digests[1]) && exists(&digests[2]));

    // The middle image is also a release: with another tag in the
    // repository, entries go but no image does.
    ok(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{cache}@{}", digests[1]),
        &format!("docker://{cache}:release"),
    ]));
    let r = prune("1", &[]);
    assert_eq!(r["deleted"][0]["subject"], digests[1].as_str(), "{r}");
    assert!(r["deleted_images"].as_array().unwrap().is_empty(), "{r}");
    assert!(r["images_kept_because"].as_str().unwrap().contains("release"), "{r}");
    let after = tags();
    assert_eq!(entries(&after), 1, "{after:?}");
    assert!(
        after.iter().any(|t| t.starts_with("kiln-deps-")),
        "the dependency layer stays: {after:?}"
    );
    assert!(
        after.contains(&"release".to_string()) && exists(&digests[1]),
        "{after:?}"
    );
    assert_eq!(
        r["kept"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["tag"].as_str().unwrap().starts_with("kiln-cache-"))
            .unwrap()["subject"],
        digests[2].as_str()
    );
    // The kept entry still answers a fresh runner with no engine.
    let mut c = sb.kiln();
    c.current_dir(&project)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("KILN_CACHE_DIR", sb.join("cache-fresh"))
        .env("DOCKER_HOST", format!("unix://{}", sb.join("no-engine.sock").display()))
        .args([
            "build",
            "--json",
            "--builder",
            &builder(),
            "--cache",
            &cache,
            "--cache-mode",
            "read",
        ]);
    let out = ok(&mut c);
    let hit: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hit["cache_source"], "registry", "{hit}");
    assert_eq!(hit["digest"], digests[2].as_str());
    // Pruning again deletes nothing.
    let again = prune("1", &[]);
    assert!(again["deleted"].as_array().unwrap().is_empty(), "{again}");
    remove_writer_volume(&cache);
}
