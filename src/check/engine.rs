//! Items 2–7: the image runs on the engine the way production would run it
//! and is watched from outside. One container ("main") gets the production
//! settings: an internal network (no egress), a read-only root with a tmpfs
//! /tmp, every capability dropped, no-new-privileges, the image's own user.
//! Beside it, at the same time: a "twin" with a writable root, whose
//! container diff shows where the app writes (a read-only root only shows
//! that a write failed, never where), and one container per required
//! variable, started without it. Ports and health are probed from this
//! side of the network, at the container's address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::KillContainerOptionsBuilder;

use super::containers::{LABEL, RUN_LABEL, Spec, Tracker, engine_err, exited_within, logs, start, state, tail};
use super::probe::{connect_until, declared, http_get, loopback, proc_view};
use super::{Item, Options, Status};
use crate::Result;
use crate::oci::RuntimeConfig;

/// Signal numbers for 128+N exit codes.
pub fn signal_number(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    Some(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "WINCH" => 28,
        _ => return None,
    })
}

fn is_root(user: Option<&str>) -> bool {
    let u = user.unwrap_or("");
    let name = u.split(':').next().unwrap_or("");
    name.is_empty() || name == "0" || name == "root"
}

fn item(id: u8, status: Status, summary: impl Into<String>, evidence: Vec<String>, fix: impl Into<String>) -> Item {
    Item::new(id, status, summary, evidence, fix)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Runs items 2–7 against `image` (an ID or name the engine has).
pub async fn run(
    docker: &Docker,
    image: &str,
    rc: &RuntimeConfig,
    opts: &Options,
    created: &Tracker,
) -> Result<Vec<Item>> {
    let run = created.lock().expect("tracker").run.clone();
    let network = format!("kiln-check-{run}");
    let req = NetworkCreateRequest {
        name: network.clone(),
        driver: Some("bridge".into()),
        internal: Some(true),
        labels: Some(HashMap::from([
            (LABEL.to_string(), "network".to_string()),
            (RUN_LABEL.to_string(), run.clone()),
        ])),
        ..Default::default()
    };
    docker
        .create_network(req)
        .await
        .map_err(engine_err("creating an internal network"))?;
    created.lock().expect("tracker").networks.push(network.clone());

    // Later values win, as in a shell; one pass, whatever the file's size.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut at: HashMap<&str, usize> = HashMap::new();
    for (k, v) in &opts.env {
        match at.get(k.as_str()) {
            Some(&i) => env[i].1 = v.clone(),
            None => {
                at.insert(k, env.len());
                env.push((k.clone(), v.clone()));
            }
        }
    }
    let env_list = |without: Option<&str>| -> Vec<String> {
        env.iter()
            .filter(|(k, _)| Some(k.as_str()) != without)
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    };
    let baked: Vec<&str> = rc.env.iter().map(|kv| kv.split('=').next().unwrap_or("")).collect();

    let t0 = Instant::now();
    let spec = |role, read_only, without: Option<&str>| Spec {
        run: &run,
        role,
        image,
        env: env_list(without),
        network: &network,
        read_only,
    };
    let main = start(docker, spec("main", true, None), created).await?;
    let twin = start(docker, spec("twin", false, None), created).await?;
    let mut required = Vec::new();
    for name in &opts.required_env {
        if baked.contains(&name.as_str()) {
            required.push((name.clone(), None));
        } else {
            let id = start(docker, spec("without-env", true, Some(name)), created).await?;
            required.push((name.clone(), Some(id)));
        }
    }

    // 2. It stays up past the settle time.
    let early_exit = exited_within(docker, &main, opts.settle).await?;
    let (main_state, ip) = state(docker, &main).await?;
    let pid = main_state.pid.unwrap_or(0);
    let seen = if early_exit.is_none() {
        proc_view(pid, &main)
    } else {
        None
    };
    let up = early_exit.is_none();
    let mut items = Vec::new();
    let user = rc.user.clone().unwrap_or_default();
    let mut start_evidence = vec![format!(
        "ran as user {user:?} on an internal network (no egress), read-only root with a tmpfs /tmp, all capabilities dropped, no-new-privileges"
    )];
    // The UID the process really has, when visible, over what the name says.
    let root = match seen.as_ref().and_then(|p| p.euid) {
        Some(uid) => {
            start_evidence.push(format!("its process runs with UID {uid} (from /proc)"));
            uid == 0
        }
        None => is_root(rc.user.as_deref()),
    };
    let start_item = if let Some(code) = early_exit {
        let log = logs(docker, &main).await;
        start_evidence.extend(tail(&log, 12));
        let twin_up = state(docker, &twin).await?.0.running.unwrap_or(false);
        if twin_up {
            start_evidence.push("with a writable root filesystem it stays up: see item 7".into());
        }
        item(
            2,
            Status::Fail,
            format!("exited with status {code} within {} of starting", secs(t0.elapsed())),
            start_evidence,
            "run it with the same settings (`docker run --read-only --tmpfs /tmp --cap-drop ALL --network none IMAGE`) and read its output",
        )
    } else if root {
        item(
            2,
            Status::Fail,
            "it runs as root",
            start_evidence,
            "run as a non-root user: [image] user = \"65532:65532\" (or a user the base defines)",
        )
    } else {
        item(
            2,
            Status::Pass,
            format!("up after {}", secs(opts.settle)),
            start_evidence,
            "",
        )
    };
    items.push(start_item);

    // 3. Declared ports answer from outside; nothing else listens.
    let ports = declared(rc);
    let deadline = t0 + opts.ready_timeout;
    if !up {
        items.push(item(3, Status::Skip, "it did not start (item 2)", vec![], ""));
    } else {
        let mut ev = Vec::new();
        let mut bad = Vec::new();
        let mut fixes = Vec::new();
        match ip {
            None => bad.push("the container has no address on the check network (did it exit?)".to_string()),
            Some(ip) => {
                for (port, proto) in &ports {
                    if proto != "tcp" {
                        ev.push(format!("{port}/{proto} declared: only TCP is probed"));
                        continue;
                    }
                    match connect_until((ip, *port).into(), deadline).await {
                        Ok(d) => ev.push(format!(
                            "{port}/tcp answers from outside at {ip}:{port} ({} after the settle)",
                            secs(d)
                        )),
                        Err(e) => {
                            bad.push(format!("{port}/tcp does not answer from outside at {ip}:{port} ({e})"));
                            fixes.push(format!(
                                "listen on 0.0.0.0:{port} (not 127.0.0.1), or declare the port it uses"
                            ));
                        }
                    }
                }
            }
        }
        // Listeners, read again now that the ports had time to open.
        match proc_view(pid, &main).or(seen) {
            Some(p) => {
                let mut distinct = std::collections::BTreeSet::new();
                let mut undeclared = 0usize;
                for l in &p.listeners {
                    if !distinct.insert((l.addr, l.port)) {
                        continue;
                    }
                    let is_declared = ports.iter().any(|(pt, pr)| *pt == l.port && pr == "tcp");
                    if loopback(&l.addr) {
                        if is_declared {
                            bad.push(format!(
                                "{}/tcp listens on {} only: unreachable from outside",
                                l.port, l.addr
                            ));
                        }
                        continue;
                    }
                    if !is_declared {
                        undeclared += 1;
                        if undeclared <= MAX_LISTED {
                            bad.push(format!(
                                "listens on {}:{}/tcp, which the image does not declare",
                                l.addr, l.port
                            ));
                            fixes.push(format!(
                                "declare it ([image] ports = [..., {}]) or stop listening on it",
                                l.port
                            ));
                        }
                    }
                }
                if undeclared > MAX_LISTED {
                    bad.push(format!("… and {} more undeclared listeners", undeclared - MAX_LISTED));
                }
                ev.push(format!(
                    "listening sockets (from the container's /proc): {}",
                    distinct.len()
                ));
            }
            None => {
                ev.push("undeclared listeners not checked: the engine's processes are not visible from here".into())
            }
        }
        if ports.is_empty() && bad.is_empty() {
            items.push(item(
                3,
                Status::Skip,
                "it declares no ports and listens on none",
                ev,
                "",
            ));
        } else if bad.is_empty() {
            items.push(item(3, Status::Pass, "listens on its declared ports", ev, ""));
        } else {
            let summary = bad.join("; ");
            ev.extend(bad);
            fixes.dedup();
            items.push(item(3, Status::Fail, summary, ev, fixes.join("; ")));
        }
    }

    // 4. Health.
    items.push(health(docker, &main, rc, opts, up, ip, &ports, deadline).await?);

    // The twin gets the same requests, so writes made while serving show in its diff.
    if let (Ok((_, Some(twin_ip))), true) = (state(docker, &twin).await, up) {
        for (port, proto) in &ports {
            if proto == "tcp" {
                let _ = connect_until((twin_ip, *port).into(), Instant::now()).await;
            }
        }
        let port = opts
            .port
            .or_else(|| ports.iter().find(|(_, p)| p == "tcp").map(|(p, _)| *p));
        if let (Some(path), Some(port)) = (&opts.health, port) {
            let _ = http_get((twin_ip, port).into(), path).await;
        }
    }

    // 6. Graceful stop (before 5's verdicts, which only wait).
    let signal = rc.stop_signal.clone().unwrap_or_else(|| "SIGTERM".into());
    let n = signal_number(&signal);
    let stop_item = if !up {
        item(6, Status::Skip, "it did not start (item 2)", vec![], "")
    } else if matches!(n, Some(9) | Some(19)) {
        item(
            6,
            Status::Fail,
            format!("its stop signal is {signal}, which no program can handle: every stop cuts requests off"),
            vec![],
            "set [image] stop_signal = \"SIGTERM\" (or leave it unset) and handle it",
        )
    } else if let Some(code) = exited_within(docker, &main, Duration::ZERO).await? {
        item(
            6,
            Status::Fail,
            format!(
                "it exited on its own with status {code}, {} after starting, before any stop signal",
                secs(t0.elapsed())
            ),
            tail(&logs(docker, &main).await, 8),
            "a service keeps running until it is told to stop; read its output for why it ended",
        )
    } else {
        let ko = KillContainerOptionsBuilder::default().signal(&signal).build();
        let sent = Instant::now();
        // An error here means it exited in between: the wait below says how.
        let _ = docker.kill_container(&main, Some(ko)).await;
        match exited_within(docker, &main, opts.stop_timeout).await? {
            Some(code) => {
                let by_signal = n.and_then(|n| n.checked_add(128)) == Some(code);
                let mut ev = vec![format!(
                    "{signal} sent; exited with status {code} after {}",
                    secs(sent.elapsed())
                )];
                if by_signal {
                    ev.push(format!(
                        "status {code} is 128+{}: ended by the signal's default action (an init process forwarded it); an app that handles it exits 0",
                        code - 128
                    ));
                }
                if code == 0 || by_signal {
                    item(
                        6,
                        Status::Pass,
                        format!("{signal} ends it in {}", secs(sent.elapsed())),
                        ev,
                        "",
                    )
                } else {
                    item(
                        6,
                        Status::Fail,
                        format!("{signal} ends it with status {code}, not 0"),
                        ev,
                        format!("on {signal}, finish in-flight work and exit with status 0"),
                    )
                }
            }
            None => {
                let ko = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
                let _ = docker.kill_container(&main, Some(ko)).await;
                item(
                    6,
                    Status::Fail,
                    format!(
                        "still running {} after {signal}: the engine would kill it (SIGKILL), cutting requests off",
                        secs(opts.stop_timeout)
                    ),
                    vec![
                        "as PID 1 in a container a process gets no default signal handling: it must handle the stop signal itself"
                            .into(),
                    ],
                    format!(
                        "handle {signal} (e.g. tokio::signal::unix) and exit; or raise [check] stop_timeout if it needs longer"
                    ),
                )
            }
        }
    };

    // 5. Each required variable, missing, stops it promptly with its name.
    let req_item = if opts.required_env.is_empty() {
        item(
            5,
            Status::Skip,
            "no required variables configured ([check] required_env)",
            vec![],
            "",
        )
    } else {
        let mut ev = Vec::new();
        let mut bad = Vec::new();
        for (name, id) in &required {
            let Some(id) = id else {
                bad.push(format!(
                    "{name} is set in the image's config Env, so a start without it cannot happen"
                ));
                continue;
            };
            let left = (t0 + opts.ready_timeout).saturating_duration_since(Instant::now());
            match exited_within(docker, id, left).await? {
                None => bad.push(format!(
                    "without {name} it starts anyway (still running after {})",
                    secs(opts.ready_timeout)
                )),
                Some(0) => bad.push(format!("without {name} it exits with status 0, as if all were well")),
                Some(code) => {
                    let log = logs(docker, id).await;
                    if log.contains(name.as_str()) {
                        let line = log.lines().find(|l| l.contains(name.as_str())).unwrap_or("");
                        ev.push(format!("without {name}: exit {code}, output: {}", line.trim()));
                    } else {
                        bad.push(format!(
                            "without {name} it exits {code} but its output does not name {name}"
                        ));
                        ev.extend(tail(&log, 5));
                    }
                }
            }
        }
        if bad.is_empty() {
            item(
                5,
                Status::Pass,
                "each required variable is validated at startup",
                ev,
                "",
            )
        } else {
            let summary = bad.join("; ");
            ev.extend(bad);
            item(
                5,
                Status::Fail,
                summary,
                ev,
                "validate required configuration first thing at startup: exit non-zero with a message naming the variable",
            )
        }
    };
    items.push(req_item);
    items.push(stop_item);

    // 7. Writes: the twin's container diff, and the main run's read-only failures.
    let ko = KillContainerOptionsBuilder::default().signal("SIGKILL").build();
    let _ = docker.kill_container(&twin, Some(ko)).await;
    let changes = docker
        .container_changes(&twin)
        .await
        .map_err(engine_err("reading the container's changes"))?
        .unwrap_or_default();
    let volumes: Vec<&String> = rc.volumes.keys().collect();
    let mut written: Vec<String> = changes
        .iter()
        .filter(|c| {
            let p = &c.path;
            !p.starts_with("/tmp/")
                && p != "/tmp"
                && !volumes
                    .iter()
                    .any(|v| p == *v || p.starts_with(&format!("{}/", v.trim_end_matches('/'))))
        })
        .map(|c| {
            let kind = match c.kind as u8 {
                0 => "changed",
                1 => "added",
                _ => "deleted",
            };
            format!("{} ({kind})", c.path)
        })
        .collect();
    written.sort();
    let main_log = logs(docker, &main).await;
    let erofs: Vec<String> = main_log
        .lines()
        .filter(|l| l.contains("Read-only file system") || l.contains("os error 30") || l.contains("EROFS"))
        .take(5)
        .map(|l| format!("read-only root: {}", l.trim()))
        .collect();
    let writes_item = if written.is_empty() && erofs.is_empty() {
        item(
            7,
            Status::Pass,
            "wrote nothing outside /tmp",
            vec!["container diff of a writable-root run beside it: empty".into()],
            "",
        )
    } else {
        let mut ev: Vec<String> = written.iter().take(20).map(|w| format!("writes {w}")).collect();
        if written.len() > 20 {
            ev.push(format!("… and {} more", written.len() - 20));
        }
        ev.extend(erofs.clone());
        let summary = match written.first() {
            Some(first) => format!(
                "writes outside /tmp: {}; a read-only root refuses it",
                first.split(" (").next().unwrap_or(first)
            ),
            None => "a write failed on the read-only root".to_string(),
        };
        item(
            7,
            Status::Fail,
            summary,
            ev,
            "write only under /tmp (a tmpfs in production), or to a volume declared for that path",
        )
    };
    items.push(writes_item);
    items.sort_by_key(|i| i.id);
    // What the app printed may repeat its configuration: the values given
    // for the run never reach the report (nor a CI log through it).
    for i in &mut items {
        i.summary = redact_values(&i.summary, &env);
        for e in &mut i.evidence {
            *e = redact_values(e, &env);
        }
    }
    Ok(items)
}

/// Most undeclared listeners listed (the rest are counted).
const MAX_LISTED: usize = 20;

/// `text` with every value of `env` (4 characters or more) replaced by `‹NAME›`.
pub fn redact_values(text: &str, env: &[(String, String)]) -> String {
    let mut out = text.to_string();
    let mut by_len: Vec<&(String, String)> = env.iter().filter(|(_, v)| v.chars().count() >= 4).collect();
    // Longest first, so a value that contains another is replaced whole.
    by_len.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for (k, v) in by_len {
        if out.contains(v.as_str()) {
            out = out.replace(v.as_str(), &format!("‹{k}›"));
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
async fn health(
    docker: &Docker,
    main: &str,
    rc: &RuntimeConfig,
    opts: &Options,
    up: bool,
    ip: Option<IpAddr>,
    ports: &[(u16, String)],
    deadline: Instant,
) -> Result<Item> {
    let image_check = rc
        .healthcheck
        .as_ref()
        .filter(|h| h.test.first().is_some_and(|t| t != "NONE"));
    if opts.health.is_none() && image_check.is_none() {
        return Ok(item(
            4,
            Status::Skip,
            "no health endpoint configured",
            vec![],
            "set [check] health = \"/health\" (or --health PATH), or give the image a healthcheck",
        ));
    }
    if !up {
        return Ok(item(4, Status::Skip, "it did not start (item 2)", vec![], ""));
    }
    if let Some(path) = &opts.health {
        let port = opts
            .port
            .or_else(|| ports.iter().find(|(_, p)| p == "tcp").map(|(p, _)| *p));
        let (Some(port), Some(ip)) = (port, ip) else {
            return Ok(item(
                4,
                Status::Fail,
                "no port to probe: the image declares no TCP port",
                vec![],
                "declare the port ([image] ports) or set [check] port",
            ));
        };
        let addr = std::net::SocketAddr::from((ip, port));
        let t = Instant::now();
        let mut last;
        loop {
            last = http_get(addr, path).await;
            match &last {
                Ok(code) if (200..300).contains(code) => {
                    return Ok(item(
                        4,
                        Status::Pass,
                        format!("GET {path} answered {code}"),
                        vec![format!("GET http://{addr}{path} → {code} after {}", secs(t.elapsed()))],
                        "",
                    ));
                }
                // A definite answer that is not 2xx (and not "busy"): no use waiting.
                Ok(code) if *code < 500 => break,
                _ => {}
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let what = match &last {
            Ok(code) => format!("GET {path} answered {code}"),
            Err(e) => format!("GET {path} got no answer ({e})"),
        };
        return Ok(item(
            4,
            Status::Fail,
            what.clone(),
            vec![format!("http://{addr}{path}: {what} after {}", secs(t.elapsed()))],
            format!("serve {path} with 200 when the app can take traffic, or set [check] health to the path it serves"),
        ));
    }
    // The image's own healthcheck, run by the engine: its first run comes
    // after the interval, so the wait covers that (capped).
    let h = image_check.expect("checked above");
    let first = Duration::from_nanos(
        h.interval
            .unwrap_or(30_000_000_000)
            .saturating_add(h.timeout.unwrap_or(30_000_000_000)),
    );
    let limit = (opts.ready_timeout.max(first + Duration::from_secs(1))).min(Duration::from_secs(120));
    let t = Instant::now();
    loop {
        let (s, _) = state(docker, main).await?;
        let health = s.health.unwrap_or_default();
        let status = health.status.map(|s| s.to_string()).unwrap_or_default();
        let last_out = health
            .log
            .unwrap_or_default()
            .last()
            .and_then(|l| l.output.clone())
            .unwrap_or_default();
        if status == "healthy" {
            return Ok(item(
                4,
                Status::Pass,
                "the image's healthcheck reports healthy",
                vec![format!("healthy after {}", secs(t.elapsed()))],
                "",
            ));
        }
        if status == "unhealthy" || t.elapsed() >= limit {
            return Ok(item(
                4,
                Status::Fail,
                format!(
                    "the image's healthcheck reports {}",
                    if status.is_empty() { "nothing" } else { &status }
                ),
                vec![format!("last output: {}", last_out.trim())],
                "make the healthcheck command succeed when the app is ready (it runs inside the container, with the same restrictions)",
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_given_never_reach_the_report() {
        let env = vec![
            ("DATABASE_URL".to_string(), "postgres://u:pw@db/app".to_string()),
            ("PW".to_string(), "pw".to_string()),
        ];
        assert_eq!(
            redact_values("connecting to postgres://u:pw@db/app failed", &env),
            "connecting to ‹DATABASE_URL› failed"
        );
    }

    #[test]
    fn signals_and_users() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("INT"), Some(2));
        assert_eq!(signal_number("15"), Some(15));
        assert_eq!(signal_number("SIGRTMIN"), None);
        assert!(is_root(None));
        assert!(is_root(Some("root:root")));
        assert!(is_root(Some("0")));
        assert!(!is_root(Some("65532:65532")));
        assert!(!is_root(Some("app")));
    }
}
