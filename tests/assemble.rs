//! `kiln assemble` and `kiln inspect` through the real binary: golden
//! digests, host independence, independent validators (OCI schemas, skopeo,
//! umoci, docker load/run), bad input, and interrupted writes.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

/// Pinned digest of the golden tree below. It changes only when kiln's output
/// bytes change for the same input: bump kiln::ASSEMBLY_FORMAT_VERSION with it.
const GOLDEN_DIGEST: &str = "sha256:85549c6ba790cccd18eb4ba92a866e22352afe9708cde4ca16115c723ddb7558";

/// A fixed tree: files, an executable, a symlink, a hardlink, nested and
/// long names. `variant` changes only host-side properties: creation order,
/// permission bits a umask would change, mtimes, atimes and owner.
fn make_tree(root: &Path, variant: u32) {
    let long_dir = "deep/".repeat(30);
    let files: Vec<(String, &[u8], bool)> = vec![
        ("bin/app".into(), b"#!/bin/sh\necho golden\n", true),
        ("etc/app/config.toml".into(), b"[server]\nport = 8080\n", false),
        ("share/doc/README".into(), b"kiln golden tree\n", false),
        (format!("{long_dir}leaf.txt"), b"long path\n", false),
        ("empty".into(), b"", false),
    ];
    let mut order: Vec<usize> = (0..files.len()).collect();
    if variant % 2 == 1 {
        order.reverse();
    }
    for i in order {
        let (p, content, exec) = &files[i];
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
        let umask_bits = if variant % 2 == 1 { 0o002 } else { 0o022 };
        let mode = if *exec { 0o777 } else { 0o666 } & !umask_bits;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    }
    fs::create_dir_all(root.join("var/empty-dir")).unwrap();
    symlink("app", root.join("bin/app-link")).unwrap();
    symlink("/etc/app/config.toml", root.join("etc/config-abs")).unwrap();
    fs::hard_link(root.join("share/doc/README"), root.join("share/doc/README.hardlink")).unwrap();
    // Host-only differences: mtimes and atimes, owner.
    let stamp = if variant % 2 == 1 { "@1000000000" } else { "@1600000000" };
    ok(Command::new("find")
        .arg(root)
        .args(["-exec", "touch", "-h", "-d", stamp, "{}", "+"]));
    if variant % 2 == 1 {
        ok(Command::new("chown").args(["-R", "-h", "1234:5678"]).arg(root));
        ok(Command::new("chmod").args(["-R", "g+w"]).arg(root.join("var")));
    }
}

fn assemble_tree(sb: &Sandbox, src: &Path, out: &str, extra_env: &[(&str, &str)]) -> String {
    let mut c = sb.kiln();
    c.env("SOURCE_DATE_EPOCH", "1700000000")
        .args(["assemble", "--platform", "linux/amd64", "--add"])
        .arg(format!("{}:/srv", src.display()))
        .args([
            "--entrypoint",
            "/srv/bin/app",
            "--env",
            "MODE=golden",
            "--label",
            "org.example=kiln",
        ])
        .args([
            "--expose",
            "8080",
            "--workdir",
            "/srv",
            "--stop-signal",
            "SIGTERM",
            "--quiet",
            "--out",
            out,
        ]);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    stdout(&ok(&mut c))
}

#[test]
fn golden_tree_assembles_to_the_pinned_digest() {
    let sb = Sandbox::new();
    let src = sb.join("tree");
    make_tree(&src, 0);
    let out = sb.join("layout");
    let digest = assemble_tree(&sb, &src, &format!("oci:{}:golden", out.display()), &[]);
    let checked = validate(&out);
    assert_eq!(checked[0].digest, digest);
    assert_eq!(
        digest, GOLDEN_DIGEST,
        "the golden digest changed: if kiln's output bytes changed on purpose, bump ASSEMBLY_FORMAT_VERSION and update GOLDEN_DIGEST"
    );
}

#[test]
fn same_content_from_different_hosts_gives_the_same_digest() {
    let a = Sandbox::new();
    let b = Sandbox::new();
    make_tree(&a.join("one/place"), 0);
    make_tree(&b.join("somewhere/else/entirely"), 1);
    // Relative source paths from different working directories, other TZ,
    // LANG, umask of kiln itself and unrelated env.
    let d1 = assemble_tree(&a, Path::new("one/place"), "oci:out", &[("TZ", "UTC"), ("LANG", "C")]);
    let d2 = stdout(&ok(b
        .kiln_with_umask("077")
        .env("TZ", "Asia/Kathmandu")
        .env("LANG", "de_DE.UTF-8")
        .env("UNRELATED", "x")
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .args([
            "assemble",
            "--platform",
            "linux/amd64",
            "--add",
            "somewhere/else/entirely:/srv",
            "--entrypoint",
            "/srv/bin/app",
            "--env",
            "MODE=golden",
            "--label",
            "org.example=kiln",
            "--expose",
            "8080",
            "--workdir",
            "/srv",
            "--stop-signal",
            "SIGTERM",
            "--quiet",
            "--out",
            "oci:out",
        ])));
    assert_eq!(d1, d2, "host-side differences leaked into the image");
    let ca = validate(&a.join("out"));
    let cb = validate(&b.join("out"));
    assert_eq!(ca[0].layer_tars, cb[0].layer_tars);

    // And what is in the layer is exactly the normalized tree.
    let entries = tar_entries(&ca[0].layer_tars[0]);
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort_by(|x, y| {
        x.trim_end_matches('/')
            .as_bytes()
            .cmp(y.trim_end_matches('/').as_bytes())
    });
    assert_eq!(paths, sorted, "entries in bytewise order");
    for e in &entries {
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 1_700_000_000), "{}", e.path);
        let want = match (e.kind, e.path.as_str()) {
            ('d', _) => 0o755,
            ('l', _) => 0o777,
            (_, "srv/bin/app") => 0o755,
            _ => 0o644,
        };
        assert_eq!(e.mode, want, "mode of {}", e.path);
    }
    let link = entries
        .iter()
        .find(|e| e.path == "srv/share/doc/README.hardlink")
        .unwrap();
    assert_eq!((link.kind, link.link.as_deref()), ('h', Some("srv/share/doc/README")));
    let abs = entries.iter().find(|e| e.path == "srv/etc/config-abs").unwrap();
    assert_eq!(
        abs.link.as_deref(),
        Some("/etc/app/config.toml"),
        "symlinks kept verbatim"
    );
    assert!(
        entries
            .iter()
            .any(|e| e.path.starts_with("srv/deep/deep/") && e.path.ends_with("leaf.txt"))
    );
    assert_eq!(entries[0].path, "srv/", "the destination directory comes first");
}

#[test]
fn independent_validators_accept_every_output_and_docker_runs_it() {
    require_engine();
    require_tool("skopeo");
    require_tool("umoci");
    let hello = static_hello();
    let sb = Sandbox::new();
    let files = sb.join("files");
    fs::create_dir_all(files.join("conf")).unwrap();
    fs::write(files.join("conf/app.toml"), "x = 1\n").unwrap();
    symlink("app.toml", files.join("conf/current.toml")).unwrap();
    let layout = sb.join("layout");
    let archive = sb.join("image.tar");
    let name = unique("kiln-test/validators");
    let mut engine = EngineObjects::new();
    let archive_image = engine.image(format!("{name}-archive:v1"));
    let daemon_image = engine.image(format!("{name}-daemon:v1"));
    let digest = stdout(&ok(sb
        .kiln()
        .args(["assemble", "--quiet", "--add"])
        .arg(format!("{}:/usr/local/bin/hello:0755", hello.display()))
        .arg("--add")
        .arg(format!("{}:/etc/hello", files.display()))
        .args(["--entrypoint", "/usr/local/bin/hello", "--cmd", "--once"])
        .arg("--out")
        .arg(format!("oci:{}:v1", layout.display()))
        .arg("--out")
        .arg(format!("docker-archive:{}:{archive_image}", archive.display()))
        .arg("--out")
        .arg(format!("docker-daemon:{daemon_image}"))));

    // 1. Our own invariant checker and the official schemas.
    let checked = validate(&layout);
    assert_eq!(checked[0].digest, digest);
    assert_eq!(
        checked[0].config["config"]["User"], "65532:65532",
        "non-root by default"
    );

    // 2. skopeo reads it and agrees on the digest.
    let out = ok(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("oci:{}:v1", layout.display())));
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());

    // 3. umoci unpacks exactly the files, modes and symlinks given.
    let bundle = sb.join("bundle");
    ok(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:v1", layout.display()))
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let mode = |p: &str| fs::symlink_metadata(rootfs.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        fs::read(rootfs.join("usr/local/bin/hello")).unwrap(),
        fs::read(&hello).unwrap()
    );
    assert_eq!(mode("usr/local/bin/hello"), 0o755);
    assert_eq!(mode("usr/local/bin"), 0o755);
    assert_eq!(
        fs::read_to_string(rootfs.join("etc/hello/conf/app.toml")).unwrap(),
        "x = 1\n"
    );
    assert_eq!(mode("etc/hello/conf/app.toml"), 0o644);
    assert_eq!(
        fs::read_link(rootfs.join("etc/hello/conf/current.toml")).unwrap(),
        Path::new("app.toml")
    );
    let found: Vec<String> = walk(&rootfs)
        .iter()
        .map(|e| e.strip_prefix(&rootfs).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        found,
        [
            "etc",
            "etc/hello",
            "etc/hello/conf",
            "etc/hello/conf/app.toml",
            "etc/hello/conf/current.toml",
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/hello"
        ]
    );

    // 4. The docker-archive holds a valid OCI layout too, and docker loads and runs it.
    let extracted = sb.join("archive-layout");
    fs::create_dir_all(&extracted).unwrap();
    ok(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&extracted));
    assert_eq!(validate(&extracted)[0].digest, digest);
    ok(Command::new("docker").arg("load").arg("-i").arg(&archive));
    for image in [&archive_image, &daemon_image] {
        let run = ok(Command::new("docker").args(["run", "--rm", image]));
        assert_eq!(stdout(&run), "hello from kiln", "docker run {image}");
        let id = stdout(&ok(
            Command::new("docker").args(["image", "inspect", "--format", "{{.Id}}", image])
        ));
        assert_eq!(
            id,
            checked[0].manifest["config"]["digest"].as_str().unwrap(),
            "image ID is the config digest"
        );
        let user = stdout(&ok(Command::new("docker").args([
            "run",
            "--rm",
            "--entrypoint",
            "/usr/local/bin/hello",
            image,
            "--once",
        ])));
        assert_eq!(user, "hello from kiln");
    }
}

#[test]
fn several_tags_share_one_layout_and_a_base_is_reused() {
    let sb = Sandbox::new();
    fs::write(sb.join("a.txt"), "a\n").unwrap();
    fs::write(sb.join("b.txt"), "b\n").unwrap();
    let layout = sb.join("layout");
    let l = layout.display();
    let base = stdout(&ok(sb
        .kiln()
        .args([
            "assemble",
            "--quiet",
            "--add",
            "a.txt:/a.txt",
            "--entrypoint",
            "/a",
            "--env",
            "A=1",
        ])
        .arg("--out")
        .arg(format!("oci:{l}:base"))));
    let top = stdout(&ok(sb
        .kiln()
        .args(["assemble", "--quiet", "--add", "b.txt:/b.txt", "--env", "B=2"])
        .arg("--from")
        .arg(format!("oci:{l}:base"))
        .arg("--out")
        .arg(format!("oci:{l}:top"))));
    // Writing the same tag again replaces it rather than adding an entry.
    let again = stdout(&ok(sb
        .kiln()
        .args([
            "assemble",
            "--quiet",
            "--add",
            "a.txt:/a.txt",
            "--entrypoint",
            "/a",
            "--env",
            "A=1",
        ])
        .arg("--out")
        .arg(format!("oci:{l}:base"))));
    assert_eq!(base, again);
    let checked = validate(&layout);
    assert_eq!(checked.len(), 2);
    let top_img = checked.iter().find(|c| c.digest == top).unwrap();
    let base_img = checked.iter().find(|c| c.digest == base).unwrap();
    assert_eq!(
        top_img.manifest["layers"][0], base_img.manifest["layers"][0],
        "base layer reused byte for byte"
    );
    assert_eq!(top_img.manifest["layers"].as_array().unwrap().len(), 2);
    assert_eq!(
        top_img.config["config"]["Entrypoint"][0], "/a",
        "config inherited from the base"
    );
    let env: Vec<&str> = top_img.config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"A=1") && env.contains(&"B=2"), "{env:?}");
    assert_eq!(top_img.config["history"].as_array().unwrap().len(), 2);

    // inspect reads it back, by tag, as text and JSON.
    let text = stdout(&ok(sb.kiln().args(["inspect", "--files"]).arg(format!("oci:{l}:top"))));
    assert!(
        text.contains(&top) && text.contains("/b.txt") && text.contains("/a.txt"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&ok(sb.kiln().args(["inspect", "--json"]).arg(format!("oci:{l}:top"))).stdout).unwrap();
    assert_eq!(json["digest"], top.as_str());
    assert_eq!(json["layers"].as_array().unwrap().len(), 2);
    // Without a tag, a layout with two images is ambiguous: a clear error.
    let err = fails(sb.kiln().arg("inspect").arg(format!("oci:{l}")));
    assert!(
        err.contains("several images") && err.contains("base") && err.contains("top"),
        "{err}"
    );
}

#[test]
fn other_compressions_are_valid_and_deterministic() {
    let sb = Sandbox::new();
    fs::write(sb.join("f"), "data ".repeat(100_000)).unwrap();
    let mut digests = Vec::new();
    for c in ["gzip", "gzip:9", "zstd", "none", "zstd"] {
        let out = sb.join(format!("out-{}", c.replace(':', "-")));
        let d = stdout(&ok(sb
            .kiln()
            .args(["assemble", "--quiet", "--add", "f:/f", "--compression", c])
            .arg("--out")
            .arg(format!("oci:{}", out.display()))));
        let checked = validate(&out);
        let mt = checked[0].manifest["layers"][0]["mediaType"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            mt.ends_with(if c.starts_with("gzip") {
                "tar+gzip"
            } else if c == "none" {
                "tar"
            } else {
                "tar+zstd"
            }),
            "{mt}"
        );
        digests.push(d);
    }
    assert_eq!(digests[2], digests[4], "zstd is deterministic");
    assert_ne!(digests[0], digests[1], "the level is part of the bytes");
    // Uncompressed: the blob digest is the diff_id.
    let none = validate(&sb.join("out-none"));
    assert_eq!(
        none[0].manifest["layers"][0]["digest"],
        none[0].config["rootfs"]["diff_ids"][0]
    );
}

#[test]
fn bad_input_gives_a_clear_error_and_leaves_nothing_behind() {
    let sb = Sandbox::new();
    let t = &sb.path();
    fs::write(t.join("f"), "x").unwrap();
    symlink("loop-b", t.join("loop-a")).unwrap();
    symlink("loop-a", t.join("loop-b")).unwrap();
    fs::write(t.join("a-file"), "not a dir").unwrap();
    ok(Command::new("mkfifo").arg(t.join("fifo")));
    let cases: &[(&[&str], &str)] = &[
        (&["--add", "missing:/x"], "cannot read missing"),
        (&["--add", "fifo:/x"], "neither a regular file nor a directory"),
        (&["--add", "f:relative/x"], "must be an absolute path"),
        (&["--add", "f:/a/../x"], "must not contain `..`"),
        (&["--add", "f:/x", "--add", "f:/x"], "duplicate destination `/x`"),
        (&["--add", "f:/x", "--add", "f:/x/y"], "duplicate destination `/x`"),
        (&["--add", "loop-a:/x"], "symlink loop"),
        (&["--add", "f"], "expected SRC:DEST"),
        (&["--add", "f:/x:999"], "octal"),
        (&["--add", "f:/x", "--env", "=v"], "invalid --env `=v`"),
        (&["--add", "f:/x", "--env", "NOVALUE"], "KEY=VALUE"),
        (&["--add", "f:/x", "--label", "bad key=v"], "invalid --label"),
        (&["--add", "f:/x", "--expose", "70000"], "invalid --expose `70000`"),
        (&["--add", "f:/x", "--expose", "80/icmp"], "tcp|udp|sctp"),
        (&["--add", "f:/x", "--user", "root user"], "invalid --user"),
        (&["--add", "f:/x", "--workdir", "rel"], "absolute"),
        (&["--add", "f:/x", "--stop-signal", "TERM"], "SIGTERM"),
        (&["--add", "f:/x", "--platform", "linux/z80"], "unknown architecture"),
        (&["--add", "f:/x", "--compression", "brotli"], "gzip"),
        (
            &["--add", "f:/x", "--source-date-epoch", "yesterday"],
            "SOURCE_DATE_EPOCH",
        ),
        (&[], "at least one layer"),
        (
            &["--add", "f:/x", "--from", "oci:no-such-layout"],
            "index.json not found",
        ),
    ];
    for (args, want) in cases {
        let out = t.join("out");
        let err = fails(sb.kiln().arg("assemble").args(*args).arg("--out").arg("oci:out"));
        assert!(err.contains(want), "args {args:?}: expected `{want}` in: {err}");
        assert!(!out.exists(), "args {args:?} left {out:?} behind");
    }
    // Output errors: unknown transport, an output below a file, scratch as output.
    for (o, want) in [
        ("ftp:x", "unknown transport `ftp`"),
        ("http://x", "unknown transport `http`"),
        ("oci:a-file/sub", "cannot write a-file/sub"),
        ("scratch", "scratch is an input"),
        ("docker-daemon:Upper/Case", "lowercase"),
        ("docker-archive:/proc/kiln-test/x.tar", "cannot write"),
    ] {
        let err = fails(sb.kiln().args(["assemble", "--add", "f:/x", "--out", o]));
        assert!(err.contains(want), "--out {o}: expected `{want}` in: {err}");
    }
    // Nothing but our inputs is left in the directory.
    let mut names: Vec<String> = fs::read_dir(t)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["a-file", "f", "fifo", "loop-a", "loop-b"]);
    // A non-empty directory that is not a layout is not written into.
    fs::create_dir(t.join("notes")).unwrap();
    fs::write(t.join("notes/keep.txt"), "mine").unwrap();
    let err = fails(sb.kiln().args(["assemble", "--add", "f:/x", "--out", "oci:notes"]));
    assert!(err.contains("not an OCI layout"), "{err}");
    assert_eq!(fs::read_dir(t.join("notes")).unwrap().count(), 1);
}

#[test]
fn a_kill_mid_write_leaves_no_partial_blob_or_index_entry() {
    let sb = Sandbox::new();
    let t = &sb.path();
    fs::write(t.join("small"), "small\n").unwrap();
    let layout = t.join("layout");
    let first = stdout(&ok(sb.kiln().args([
        "assemble",
        "--quiet",
        "--add",
        "small:/small",
        "--out",
        "oci:layout:keep",
    ])));
    // ~160 MB of poorly compressible data takes long enough to be interrupted.
    let big = t.join("big");
    fs::create_dir(&big).unwrap();
    ok(Command::new("sh").arg("-c").arg(format!(
        "for i in 1 2 3 4; do head -c 40000000 /dev/urandom > {}/part$i; done",
        big.display()
    )));
    let mut killed_running = 0;
    for delay_ms in [150u64, 400, 900] {
        let mut child = sb
            .kiln()
            .args(["assemble", "--quiet", "--add", "big:/big", "--out", "oci:layout:big"])
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            killed_running += 1;
        }
        let _ = child.kill(); // SIGKILL: no cleanup code runs
        let _ = child.wait();
        assert_eq!(
            layout_root(&layout),
            ["blobs/", "index.json", "oci-layout"],
            "after a kill at {delay_ms} ms the layout root holds only the layout"
        );
        let checked = validate(&layout); // every file in blobs/ is complete
        let digests: Vec<&str> = checked.iter().map(|c| c.digest.as_str()).collect();
        assert!(digests.contains(&first.as_str()), "the earlier image is intact");
        // Either the kill came first (only "keep"), or kiln finished (both valid).
        let tags: Vec<String> = layout_tags(&layout).into_keys().collect();
        assert!(
            tags == ["keep"] || tags == ["big", "keep"],
            "after a kill at {delay_ms} ms: tags {tags:?}"
        );
    }
    assert!(
        killed_running > 0,
        "no kill hit a running kiln: the data is too small to interrupt"
    );
    // A later run completes normally in the same layout.
    ok(sb.kiln().args([
        "assemble",
        "--quiet",
        "--add",
        "small:/again",
        "--out",
        "oci:layout:again",
    ]));
    assert_eq!(layout_root(&layout), ["blobs/", "index.json", "oci-layout"]);
    let tags = layout_tags(&layout);
    assert_eq!(validate(&layout).len(), tags.len());
    assert!(tags.contains_key("keep") && tags.contains_key("again"), "{tags:?}");
}

/// The names in a layout's root, directories with a trailing `/`, sorted.
fn layout_root(layout: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(layout)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let slash = if e.file_type().unwrap().is_dir() { "/" } else { "" };
            format!("{}{slash}", e.file_name().to_string_lossy())
        })
        .collect();
    names.sort();
    names
}

/// A layout's tags and the digests they name, from index.json.
fn layout_tags(layout: &Path) -> BTreeMap<String, String> {
    let index: serde_json::Value = serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let tag = m["annotations"]["org.opencontainers.image.ref.name"].as_str();
            let tag = tag.unwrap_or_else(|| panic!("an index entry without a tag: {m}"));
            (tag.to_string(), m["digest"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn concurrent_writers_to_one_layout_keep_every_tag() {
    let sb = Sandbox::new();
    let t = &sb.path();
    for i in 0..6 {
        fs::write(t.join(format!("f{i}")), format!("{i}\n")).unwrap();
    }
    let mut want = BTreeMap::new();
    let t0 = stdout(&ok(sb.kiln().args([
        "assemble",
        "--quiet",
        "--add",
        "f0:/f",
        "--out",
        "oci:layout:t0",
    ])));
    want.insert("t0".to_string(), t0);
    let children: Vec<_> = (1..6)
        .map(|i| {
            let child = sb
                .kiln()
                .args([
                    "assemble",
                    "--quiet",
                    "--add",
                    &format!("f{i}:/f"),
                    "--out",
                    &format!("oci:layout:t{i}"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (format!("t{i}"), child)
        })
        .collect();
    for (tag, c) in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "writer {tag} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        want.insert(tag, stdout(&out));
    }
    let layout = t.join("layout");
    assert_eq!(layout_tags(&layout), want, "every tag, each naming its writer's image");
    let mut checked: Vec<String> = validate(&layout).into_iter().map(|c| c.digest).collect();
    checked.sort();
    let mut digests: Vec<String> = want.into_values().collect();
    digests.sort();
    assert_eq!(checked, digests);
}
