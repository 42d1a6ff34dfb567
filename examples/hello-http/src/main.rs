//! A tiny HTTP server with the standard library only: answers every request
//! with a greeting. `PORT` picks the port (default 8080); `hello-http --once`
//! prints the greeting and exits (for smoke tests without a network).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

const GREETING: &str = "hello from kiln";

fn main() {
    if std::env::args().any(|a| a == "--once") {
        println!("{GREETING}");
        return;
    }
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello-http: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("hello-http: listening on port {port}");
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let mut reader = BufReader::new(&stream);
        let mut request_line = String::new();
        let _ = reader.read_line(&mut request_line);
        // Drain the headers so the client sees a clean close.
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let body = format!("{GREETING}\n");
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
