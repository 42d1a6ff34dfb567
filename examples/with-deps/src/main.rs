//! A small async HTTP server on real crates (tokio, serde, serde_json):
//! answers every request with a JSON greeting. `PORT` picks the port
//! (default 8080); `with-deps --once` prints the JSON and exits.

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

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

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--once") {
        println!("{}", body());
        return;
    }
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("with-deps: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("with-deps: listening on port {port}");
    loop {
        let Ok((mut sock, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let b = body() + "\n";
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{b}",
                b.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
        });
    }
}
