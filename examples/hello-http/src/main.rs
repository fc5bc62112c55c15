//! hello-http: the smallest useful HTTP app for Tabbify's microVM and container runtimes.
//!
//! Listens on `0.0.0.0:$PORT` (default 8080) and answers `GET /` (and `HEAD /`) with a fixed
//! body, any other path with 404 and any other method with 405. One thread per connection, one
//! request per connection. It prints one line when it listens, so a console log shows it started.
//!
//! `GET /dial?to=ADDR:PORT` opens a TCP connection from the app to ADDR:PORT and says whether it
//! could (200) or not (502): how the tests see what a sandboxed app can reach.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// The body of `GET /`.
const BODY: &str = "hello from tabbify hello-http\n";
/// Longest request head read.
const MAX_HEAD: usize = 16 * 1024;

fn main() {
    let port = match std::env::var("PORT") {
        Err(_) => 8080,
        Ok(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => {
                eprintln!("hello-http: PORT={p:?} is not a port number");
                std::process::exit(2);
            }
        },
    };
    let listener = match TcpListener::bind(("0.0.0.0", port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("hello-http: cannot listen on port {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("hello-http listening on 0.0.0.0:{port}");
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream) {
                        eprintln!("hello-http: connection: {e}");
                    }
                });
            }
            Err(e) => eprintln!("hello-http: accept: {e}"),
        }
    }
}

fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(()); // a bare connect (a readiness probe): nothing to answer
    }
    // Drain the rest of the head so the client is not reset while it still sends.
    let mut seen = request_line.len();
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        seen += n;
        if n == 0 || line == "\r\n" || line == "\n" || seen > MAX_HEAD {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body): (&str, String) = match (method, path) {
        ("GET" | "HEAD", "/") => ("200 OK", BODY.to_string()),
        ("GET", p) if p.starts_with("/dial?to=") => dial(&p["/dial?to=".len()..]),
        ("GET" | "HEAD", _) => ("404 Not Found", "not found\n".to_string()),
        _ => ("405 Method Not Allowed", "method not allowed\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// Tries a TCP connection to `target` (`addr:port`) for at most two seconds.
fn dial(target: &str) -> (&'static str, String) {
    let Ok(addr) = target.parse::<std::net::SocketAddr>() else {
        return ("400 Bad Request", format!("{target:?} is not addr:port\n"));
    };
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(_) => ("200 OK", format!("connected to {addr}\n")),
        Err(e) => ("502 Bad Gateway", format!("cannot reach {addr}: {e}\n")),
    }
}
