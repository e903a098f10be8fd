//! HTTP health checks run inside the container's network namespace: a
//! short-lived thread joins it with setns (per-thread for network
//! namespaces) and GETs `http://127.0.0.1:PORT/PATH`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One probe of the container whose init is `pid`; Ok when the answer's status is 2xx or 3xx.
pub fn probe(pid: i32, port: u16, path: &str, timeout: Duration) -> Result<(), String> {
    let ns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    probe_from(&ns, ([127, 0, 0, 1], port).into(), path, timeout)
}

/// GET `path` from `addr`, connecting from inside the network namespace `netns`.
pub fn probe_from(
    netns: &std::path::Path,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(), String> {
    let path = path.to_string();
    let netns = netns.to_path_buf();
    std::thread::Builder::new()
        .name("hydra-health".into())
        .spawn(move || {
            let ns = std::fs::File::open(&netns).map_err(|e| format!("open netns: {e}"))?;
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| format!("setns: {e}"))?;
            let port = addr.port();
            let mut s = TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("connect :{port}: {e}"))?;
            s.set_read_timeout(Some(timeout)).ok();
            s.set_write_timeout(Some(timeout)).ok();
            write!(
                s,
                "GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: hydra-agent-health\r\n\r\n"
            )
            .map_err(|e| format!("send: {e}"))?;
            // the status line may arrive in pieces
            let mut head = Vec::new();
            let mut buf = [0u8; 64];
            while !head.contains(&b'\n') && head.len() < 256 {
                let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let line = String::from_utf8_lossy(&head);
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
