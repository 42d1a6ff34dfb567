//! A small async HTTP service on real crates (tokio, serde, serde_json),
//! shaped like one that ships: it validates its required configuration
//! first (`DATABASE_URL`), serves `/health`, and stops gracefully on
//! SIGTERM (as PID 1 in a container nothing does that for it). `PORT`
//! picks the port (default 8080); `with-deps --once` prints the JSON
//! greeting and exits.

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Serialize)]
struct Greeting<'a> {
    message: &'a str,
    app: &'a str,
    version: &'a str,
}

fn body() -> String {
    let g = Greeting {
        message: "hello from kiln",
        app: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
    };
    serde_json::to_string(&g).expect("serializable")
}

/// Required configuration, checked before anything else: a service that
/// starts without it fails later, on a request, far from the cause.
fn database_url() -> Result<String, String> {
    match std::env::var("DATABASE_URL") {
        Ok(v) if v.contains("://") => Ok(v),
        Ok(v) if v.is_empty() => Err("DATABASE_URL is empty: set it to the database's URL, e.g. postgres://app@db:5432/app".into()),
        Ok(_) => Err("DATABASE_URL is not a URL: expected e.g. postgres://app@db:5432/app".into()),
        Err(_) => Err("DATABASE_URL is not set: set it to the database's URL, e.g. postgres://app@db:5432/app".into()),
    }
}

async fn serve(mut sock: tokio::net::TcpStream) {
    let mut buf = [0u8; 4096];
    let n = sock.read(&mut buf).await.unwrap_or(0);
    let path = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|r| r.split_whitespace().nth(1))
        .unwrap_or("/");
    let b = if path == "/health" { "{\"status\":\"ok\"}\n".to_string() } else { body() + "\n" };
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
        b.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--once") {
        println!("{}", body());
        return;
    }
    if let Err(e) = database_url() {
        eprintln!("with-deps: {e}");
        std::process::exit(2);
    }
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("with-deps: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        eprintln!("with-deps: cannot install signal handlers");
        std::process::exit(1);
    };
    eprintln!("with-deps: listening on port {port}");
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((sock, _)) = accepted {
                    inflight.spawn(serve(sock));
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    // Stop accepting, let the requests in flight finish (bounded), exit 0.
    eprintln!("with-deps: stopping");
    drop(listener);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while inflight.join_next().await.is_some() {}
    })
    .await;
}
