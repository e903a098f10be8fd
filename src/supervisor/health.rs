//! HTTP health checks run inside the container's network namespace: a
//! short-lived thread joins it with setns (per-thread for network
//! namespaces) and GETs `http://127.0.0.1:PORT/PATH`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One probe; Ok when the answer's status is 2xx or 3xx.
pub fn probe(pid: i32, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let path = path.to_string();
    std::thread::Builder::new()
        .name("hydra-health".into())
        .spawn(move || {
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
                .map_err(|e| format!("open netns: {e}"))?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns: {e}"))?;
            let addr: SocketAddr = ([127, 0, 0, 1], port).into();
            let mut s = TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("connect :{port}: {e}"))?;
            s.set_read_timeout(Some(timeout)).ok();
            s.set_write_timeout(Some(timeout)).ok();
            write!(
                s,
                "GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: hydra-agent-health\r\n\r\n"
            )
            .map_err(|e| format!("send: {e}"))?;
            let mut head = [0u8; 32];
            let n = s.read(&mut head).map_err(|e| format!("read: {e}"))?;
            let line = String::from_utf8_lossy(&head[..n]);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or("not an HTTP answer")?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP {code}"))
            }
        })
        .map_err(|e| format!("thread: {e}"))?
        .join()
        .map_err(|_| "health probe panicked".to_string())?
}
