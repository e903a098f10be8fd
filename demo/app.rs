//! The demo cloud-code app: HTTP on :8080 (or $PORT).
//! `GET /heartbeat` answers 200; `POST /functions/hello` answers JSON.
//! std only, built statically by scripts/build-images, so the image needs no libc.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

fn handle(mut s: TcpStream) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut first = String::new();
    r.read_line(&mut first)?;
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0).min(1 << 20);
            }
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, out) = match (method, path) {
        ("GET", "/heartbeat") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("POST", "/functions/hello") => {
            let text = String::from_utf8_lossy(&body);
            let name = text
                .split("\"name\"")
                .nth(1)
                .and_then(|rest| rest.split('"').nth(1))
                .unwrap_or("world")
                .replace(['\\', '"'], "");
            let host = std::env::var("HOSTNAME").unwrap_or_default();
            ("200 OK", "application/json", format!("{{\"message\":\"hello, {name}\",\"served_by\":\"{host}\"}}\n"))
        }
        _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
    };
    let resp = format!("HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{out}", out.len());
    s.write_all(resp.as_bytes())?;
    println!("{method} {path} -> {}", &status[..3]);
    Ok(())
}

fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let l = TcpListener::bind(format!("0.0.0.0:{port}")).expect("bind");
    println!("demo app listening on :{port}");
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = handle(s);
        });
    }
}
