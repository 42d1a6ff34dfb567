//! The containers of a check: created with the production settings and a
//! per-run label, watched (state, exit, bounded logs), and removed whatever
//! happens.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerState, HostConfig};
use bollard::query_parameters::{CreateContainerOptionsBuilder, LogsOptionsBuilder};
use futures_util::StreamExt;

use crate::{Error, Result};
/// Label on everything `kiln check` creates (so a crash's leftovers can be found).
pub const LABEL: &str = "dev.kiln.check";

/// Bytes of a container's output kept (its tail).
const MAX_LOG: usize = 64 << 10;

/// Memory (and memory+swap) of each container (SECURITY.md, section 5).
const MEMORY: i64 = 2 << 30;

/// Label whose value names one run: cleanup also finds what a create
/// call made but never reported (interrupted while the engine answered).
pub const RUN_LABEL: &str = "dev.kiln.check.run";

/// What the run created, for cleanup whatever happens.
#[derive(Default)]
pub struct Created {
    pub run: String,
    pub containers: Vec<String>,
    pub networks: Vec<String>,
}

pub type Tracker = Arc<Mutex<Created>>;

/// A tracker for a new run.
pub fn tracker() -> Tracker {
    Arc::new(Mutex::new(Created {
        run: suffix(),
        ..Default::default()
    }))
}

pub(super) fn engine_err(what: &str) -> impl FnOnce(bollard::errors::Error) -> Error + '_ {
    move |e| Error::Engine {
        message: format!("{what}: {e}"),
    }
}

/// Removes what the run created; returns what could not be removed.
pub async fn cleanup(docker: &Docker, created: &Tracker) -> Vec<String> {
    let (run, mut containers, mut networks) = {
        let mut c = created.lock().expect("tracker");
        (
            c.run.clone(),
            std::mem::take(&mut c.containers),
            std::mem::take(&mut c.networks),
        )
    };
    let filter = HashMap::from([("label".to_string(), vec![format!("{RUN_LABEL}={run}")])]);
    let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filter)
        .build();
    if let Ok(list) = docker.list_containers(Some(opts)).await {
        containers.extend(list.into_iter().filter_map(|c| c.id));
    }
    let opts = bollard::query_parameters::ListNetworksOptionsBuilder::default()
        .filters(&filter)
        .build();
    if let Ok(list) = docker.list_networks(Some(opts)).await {
        networks.extend(list.into_iter().filter_map(|n| n.name));
    }
    containers.sort();
    containers.dedup();
    networks.sort();
    networks.dedup();
    let mut left = Vec::new();
    for id in containers {
        let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = docker.remove_container(&id, Some(opts)).await
            && !e.to_string().contains("No such container")
        {
            left.push(format!("container {id} ({e}): `docker rm -f {id}`"));
        }
    }
    for n in networks {
        if let Err(e) = docker.remove_network(&n).await
            && !e.to_string().contains("not found")
        {
            left.push(format!("network {n} ({e}): `docker network rm {n}`"));
        }
    }
    left
}

pub(super) fn suffix() -> String {
    crate::store::daemon::name_suffix()
}

pub(super) struct Spec<'a> {
    pub(super) run: &'a str,
    pub(super) role: &'a str,
    pub(super) image: &'a str,
    pub(super) env: Vec<String>,
    pub(super) network: &'a str,
    pub(super) read_only: bool,
}

pub(super) async fn start(docker: &Docker, s: Spec<'_>, created: &Tracker) -> Result<String> {
    let name = format!("kiln-check-{}-{}", s.role, suffix());
    let body = ContainerCreateBody {
        image: Some(s.image.to_string()),
        env: Some(s.env),
        labels: Some(HashMap::from([
            (LABEL.to_string(), s.role.to_string()),
            (RUN_LABEL.to_string(), s.run.to_string()),
        ])),
        host_config: Some(HostConfig {
            network_mode: Some(s.network.to_string()),
            // Bounds on what an untrusted image may take from the host.
            memory: Some(MEMORY),
            memory_swap: Some(MEMORY),
            // Open files stay at the engine's own limit (asking for more than
            // it has fails the start).
            log_config: Some(bollard::models::HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "10m".to_string()),
                    ("max-file".to_string(), "1".to_string()),
                ])),
            }),
            readonly_rootfs: Some(s.read_only),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                "rw,nosuid,nodev,size=64m".to_string(),
            )])),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            pids_limit: Some(4096),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptionsBuilder::default().name(&name).build();
    let c = docker
        .create_container(Some(opts), body)
        .await
        .map_err(engine_err("creating a container for the check"))?;
    created.lock().expect("tracker").containers.push(c.id.clone());
    docker
        .start_container(&c.id, None)
        .await
        .map_err(engine_err("starting the image"))?;
    Ok(c.id)
}

pub(super) async fn state(docker: &Docker, id: &str) -> Result<(ContainerState, Option<IpAddr>)> {
    let info = docker
        .inspect_container(id, None)
        .await
        .map_err(engine_err("inspecting the container"))?;
    let ip = info
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|n| n.into_values().find_map(|e| e.ip_address.filter(|a| !a.is_empty())))
        .and_then(|a| a.parse().ok());
    Ok((info.state.unwrap_or_default(), ip))
}

/// Waits until the container is not running, up to `limit`: its exit code.
pub(super) async fn exited_within(docker: &Docker, id: &str, limit: Duration) -> Result<Option<i64>> {
    let t = Instant::now();
    loop {
        let (s, _) = state(docker, id).await?;
        if !s.running.unwrap_or(false) {
            return Ok(Some(s.exit_code.unwrap_or(-1)));
        }
        if t.elapsed() >= limit {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn logs(docker: &Docker, id: &str) -> String {
    let opts = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail("500")
        .build();
    let mut s = docker.logs(id, Some(opts));
    let mut out: Vec<u8> = Vec::new();
    let read = async {
        while let Some(Ok(chunk)) = s.next().await {
            out.extend_from_slice(&chunk.into_bytes());
            if out.len() > 2 * MAX_LOG {
                out.drain(..out.len() - MAX_LOG);
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), read).await;
    if out.len() > MAX_LOG {
        out.drain(..out.len() - MAX_LOG);
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn tail(log: &str, n: usize) -> Vec<String> {
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let from = lines.len().saturating_sub(n);
    lines[from..]
        .iter()
        .map(|l| format!("output: {}", l.chars().take(300).collect::<String>()))
        .collect()
}
