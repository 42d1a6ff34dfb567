//! Looking at a running container from outside: TCP connects and a plain
//! HTTP GET at its address, and its listening sockets and UID from /proc
//! when the engine runs on this host.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::oci::RuntimeConfig;
/// One listening TCP socket in the container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    pub addr: IpAddr,
    pub port: u16,
}

/// What /proc shows of the container's process when the engine runs on
/// this host: its listening TCP sockets and effective UID.
pub(super) struct Proc {
    pub(super) listeners: Vec<Listener>,
    pub(super) euid: Option<u32>,
}

/// Reads /proc/PID/{net/tcp,net/tcp6,status}; `None` when the container's
/// processes are not visible here (a remote engine) or the PID is not (or
/// no longer) the container's: its cgroup must name the container before
/// and after the reads, so a reused PID is never read as the container.
pub(super) fn proc_view(pid: i64, container_id: &str) -> Option<Proc> {
    if pid <= 0 {
        return None;
    }
    let base = std::path::Path::new("/proc").join(pid.to_string());
    let read = |rel: &str| -> Option<String> {
        use std::io::Read;
        let f = std::fs::File::open(base.join(rel)).ok()?;
        let mut text = String::new();
        f.take(8 << 20).read_to_string(&mut text).ok()?;
        Some(text)
    };
    let ours = || read("cgroup").is_some_and(|c| c.contains(container_id));
    if !ours() {
        return None;
    }
    let mut listeners = Vec::new();
    for (file, v6) in [("net/tcp", false), ("net/tcp6", true)] {
        if let Some(text) = read(file) {
            listeners.extend(parse_proc_net(&text, v6));
        }
    }
    let euid = read("status").and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    });
    ours().then_some(Proc { listeners, euid })
}

/// LISTEN (state 0A) sockets of a /proc/net/tcp table.
pub fn parse_proc_net(text: &str, v6: bool) -> Vec<Listener> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || f[3] != "0A" {
            continue;
        }
        let Some((ip, port)) = f[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        let addr = if v6 {
            if ip.len() != 32 || !ip.is_ascii() {
                continue;
            }
            let mut b = [0u8; 16];
            let mut ok = true;
            for w in 0..4 {
                match u32::from_str_radix(&ip[w * 8..w * 8 + 8], 16) {
                    Ok(word) => b[w * 4..w * 4 + 4].copy_from_slice(&word.to_ne_bytes()),
                    Err(_) => ok = false,
                }
            }
            if !ok {
                continue;
            }
            IpAddr::from(b)
        } else {
            let Ok(word) = u32::from_str_radix(ip, 16) else {
                continue;
            };
            IpAddr::from(word.to_ne_bytes())
        };
        // Docker's embedded DNS resolver on user networks, not the app.
        if addr == IpAddr::from([127, 0, 0, 11]) {
            continue;
        }
        out.push(Listener { addr, port });
    }
    out
}

pub(super) fn loopback(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_loopback(),
        IpAddr::V6(v) => v.is_loopback() || v.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

/// The declared ports: (port, protocol).
pub(super) fn declared(rc: &RuntimeConfig) -> Vec<(u16, String)> {
    rc.exposed_ports
        .keys()
        .filter_map(|k| {
            let (p, proto) = k.split_once('/').unwrap_or((k, "tcp"));
            Some((p.parse().ok()?, proto.to_ascii_lowercase()))
        })
        .collect()
}

/// Connects until it answers or the deadline passes.
pub(super) async fn connect_until(
    addr: std::net::SocketAddr,
    deadline: Instant,
) -> std::result::Result<Duration, String> {
    let t = Instant::now();
    loop {
        match tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => return Ok(t.elapsed()),
            Ok(Err(e)) if Instant::now() >= deadline => return Err(e.to_string()),
            Err(_) if Instant::now() >= deadline => return Err("timed out".into()),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A plain HTTP/1.1 GET: the status code, or why there is none.
pub(super) async fn http_get(addr: std::net::SocketAddr, path: &str) -> std::result::Result<u16, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kiln-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 8192 {
            let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.lines().next().unwrap_or("");
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next().and_then(|c| c.parse::<u16>().ok())) {
            (Some(v), Some(code)) if v.starts_with("HTTP/") => Ok(code),
            _ => Err(format!(
                "not an HTTP response: {:?}",
                line.chars().take(80).collect::<String>()
            )),
        }
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .unwrap_or_else(|_| Err("no answer within 2 s".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_listeners() {
        let v4 = "  sl  local_address rem_address   st\n   0: 00000000:1F90 00000000:0000 0A 0\n   1: 0B00007F:98C9 00000000:0000 0A 0\n   2: 0100007F:2382 00000000:0000 0A 0\n   3: 020012AC:1F90 010012AC:D0A2 01 0\n";
        let l = parse_proc_net(v4, false);
        assert_eq!(
            l,
            vec![
                Listener {
                    addr: IpAddr::from([0, 0, 0, 0]),
                    port: 8080
                },
                Listener {
                    addr: IpAddr::from([127, 0, 0, 1]),
                    port: 9090
                },
            ]
        );
        let v6 = "  sl  local_address\n   0: 00000000000000000000000000000000:2382 00000000000000000000000000000000:0000 0A 0\n   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 0\n";
        let l = parse_proc_net(v6, true);
        assert_eq!(l[0].addr, "::".parse::<IpAddr>().unwrap());
        assert_eq!(l[0].port, 9090);
        assert_eq!(l[1].addr, "::1".parse::<IpAddr>().unwrap());
    }
}
