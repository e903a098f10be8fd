//! HTTP health checks run inside the container's network namespace: a
//! short-lived thread joins it with setns (per-thread for network
//! namespaces) and GETs `http://127.0.0.1:PORT/PATH`.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// Why a probe failed.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot enter the network namespace {path}")]
    Netns {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("connect :{port}")]
    Connect {
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("not an HTTP answer")]
    NotHttp,
    #[error("HTTP {0}")]
    Status(u16),
}

/// One probe of the container whose init is `pid`; Ok when the answer's status is 2xx or 3xx.
pub fn probe(pid: i32, port: u16, path: &str, timeout: Duration) -> Result<(), ProbeError> {
    let ns = std::path::PathBuf::from(format!("/proc/{pid}/ns/net"));
    probe_from(&ns, ([127, 0, 0, 1], port).into(), path, timeout)
}

/// GET `path` from `addr`, connecting from inside the network namespace `netns`.
pub fn probe_from(
    netns: &Path,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let path = path.to_string();
    let netns = netns.to_path_buf();
    let io = |what| move |source| ProbeError::Io { what, source };
    std::thread::Builder::new()
        .name("hydra-health".into())
        .spawn(move || {
            let enter = std::fs::File::open(&netns).and_then(|ns| {
                nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
            });
            if let Err(source) = enter {
                return Err(ProbeError::Netns {
                    path: netns,
                    source,
                });
            }
            get(addr, &path, timeout)
        })
        .map_err(io("start the probe thread"))?
        .join()
        .unwrap_or(Err(ProbeError::NotHttp))
}

fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), ProbeError> {
    let port = addr.port();
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| ProbeError::Connect { port, source })?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: localhost\r\nUser-Agent: hydra-agent-health\r\n\r\n"
    )
    .map_err(|source| ProbeError::Io {
        what: "send",
        source,
    })?;
    // the status line may arrive in pieces
    let mut head = Vec::new();
    let mut buf = [0u8; 64];
    while !head.contains(&b'\n') && head.len() < 256 {
        let n = s.read(&mut buf).map_err(|source| ProbeError::Io {
            what: "read",
            source,
        })?;
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
        .ok_or(ProbeError::NotHttp)?;
    match code {
        200..=399 => Ok(()),
        _ => Err(ProbeError::Status(code)),
    }
}
