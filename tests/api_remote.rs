//! The TCP API from a remote operator's side: hydractl --host with an
//! observer certificate, and the limits that keep a client from holding the
//! agent's resources: handshake time, idle and slow heads, head size,
//! connections, an answer that is never read.

mod common;
#[path = "api_tls/netns.rs"]
mod netns;
#[path = "api_tls/pki.rs"]
#[allow(dead_code)]
mod pki;

use common::*;
use netns::run_in;
use pki::{Ident, Pki};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADDR: &str = "127.0.0.1:7443";
const URL: &str = "https://127.0.0.1:7443";

async fn start(extra: &str) -> (Agent, Pki, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let a = Agent::start(&format!("{}{extra}", pki.api_config(ADDR, None))).await;
    (a, pki, dir)
}

fn hydractl(a: &Agent, args: &[&str], env: &[(&str, &std::path::Path)]) -> (i32, String, String) {
    let mut c = a.host.command(env!("CARGO_BIN_EXE_hydractl"));
    // no socket to fall back on: everything goes over TCP
    c.env("HYDRA_SOCKET", "/nonexistent.sock").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn hydractl_reaches_a_remote_agent_with_an_observer_certificate() {
    require_root!();
    let (a, pki, _d) = start("").await;
    a.run(serde_json::json!({"name": "web", "image": busybox(), "command": ["sleep", "100000"]}))
        .await
        .unwrap();
    let o = &pki.observer;
    let flags = |cmd: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["--host", URL, "--cert"].map(String::from).to_vec();
        v.push(o.cert.display().to_string());
        v.push("--key".into());
        v.push(o.key.display().to_string());
        v.push("--cacert".into());
        v.push(pki.ca.display().to_string());
        v.extend(cmd.iter().map(|s| s.to_string()));
        v
    };
    let args = flags(&["ps"]);
    let (code, out, err) = hydractl(
        &a,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("web"), "{out}");
    // the observer may not act: exit 1, the refusal names the role
    let args = flags(&["rm", "-f", "web"]);
    let (code, out, err) = hydractl(
        &a,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("role observer may not call DELETE"), "{err}");
    assert!(a.client.inspect("web").await.is_ok());
    // the same through the environment
    let env = [
        ("HYDRA_CERT", o.cert.as_path()),
        ("HYDRA_KEY", o.key.as_path()),
        ("HYDRA_CACERT", pki.ca.as_path()),
        ("HYDRA_HOST", std::path::Path::new(URL)),
    ];
    let (code, out, err) = hydractl(&a, &["--json", "inspect", "web"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["name"],
        "web"
    );
    // a usage error names what is missing
    let (code, _, err) = hydractl(&a, &["--host", URL, "--cert", "x", "ps"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--key"), "{err}");
    // a certificate from another CA: refused, said so
    let f = &pki.foreign;
    let (code, _, err) = hydractl(
        &a,
        &["ps"],
        &[
            ("HYDRA_CERT", f.cert.as_path()),
            ("HYDRA_KEY", f.key.as_path()),
            ("HYDRA_CACERT", pki.ca.as_path()),
            ("HYDRA_HOST", std::path::Path::new(URL)),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("UnknownCA") || err.to_lowercase().contains("unknown ca"),
        "{err}"
    );
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls(pki: &Pki, id: &Ident) -> Tls {
    let cfg = hydra_agent::api::tls::client_config(&pki.ca, &id.cert, &id.key).unwrap();
    let tcp = tokio::net::TcpStream::connect(ADDR).await.unwrap();
    tokio_rustls::TlsConnector::from(cfg)
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

/// Reads until EOF (or an error), within `secs`; the bytes read.
async fn read_to_close<R: AsyncReadExt + Unpin>(r: &mut R, secs: u64) -> Vec<u8> {
    let mut all = Vec::new();
    let deadline = Instant::now() + scaled(secs);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, r.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the agent kept the connection open past {secs}s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn handshake_idle_head_and_header_limits_close_what_a_client_holds() {
    require_root!();
    let limits = "max_connections = 4\nhandshake_timeout_s = 2\nidle_timeout_s = 2\n";
    let (a, pki, _d) = start(limits).await;
    let pki = Arc::new(pki);
    let p = pki.clone();
    run_in(a.host.netns(), move || async move {
        // a TCP connection that never starts the handshake: closed after
        // handshake_timeout_s (2 s), not much later
        let t = Instant::now();
        let mut silent = tokio::net::TcpStream::connect(ADDR).await.unwrap();
        assert!(read_to_close(&mut silent, 30).await.is_empty());
        assert!(
            t.elapsed() >= Duration::from_millis(1900),
            "{:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < scaled(10), "{:?}", t.elapsed());
        // a head that never ends
        let mut s = tls(&p, &p.admin).await;
        s.write_all(b"GET /v1/host HTTP/1.1\r\nhost: a\r\n")
            .await
            .unwrap();
        read_to_close(&mut s, 30).await;
        // an idle keep-alive connection after an answer
        let mut s = tls(&p, &p.admin).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        let got = read_to_close(&mut s, 30).await;
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        // a head past max_header_bytes
        let mut s = tls(&p, &p.admin).await;
        let big = format!(
            "GET /healthz HTTP/1.1\r\nhost: a\r\nx-big: {}\r\n\r\n",
            "a".repeat(20 << 10)
        );
        let _ = s.write_all(big.as_bytes()).await;
        let got = read_to_close(&mut s, 30).await;
        assert!(
            got.starts_with(b"HTTP/1.1 431"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    })
    .await;
    let p = pki.clone();
    run_in(a.host.netns(), move || async move {
        // max_connections: four are held, a fifth is closed at once
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut s = tls(&p, &p.observer).await;
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: a\r\n\r\n")
                .await
                .unwrap();
            let mut b = [0u8; 12];
            s.read_exact(&mut b).await.unwrap();
            held.push(s);
        }
        let cfg = hydra_agent::api::tls::client_config(&p.ca, &p.admin.cert, &p.admin.key).unwrap();
        let c = hydra_agent::api::client::Client::tls(URL, cfg).unwrap();
        assert!(
            c.raw("GET", "/healthz", None).await.is_err(),
            "a fifth connection was served"
        );
        drop(held);
        let deadline = Instant::now() + scaled(20);
        while c.raw("GET", "/healthz", None).await.is_err() {
            assert!(Instant::now() < deadline, "connections were not given back");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        a.log().contains("api.max_connections reached"),
        "{}",
        a.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_never_read_is_dropped_after_the_idle_timeout() {
    require_root!();
    let (a, pki, _d) = start("idle_timeout_s = 2\n").await;
    // small socket buffers in this host, so a client that does not read
    // stalls the agent's writes soon
    a.host
        .sh("sysctl -qw net.ipv4.tcp_wmem='4096 4096 16384' net.ipv4.tcp_rmem='4096 4096 16384'");
    // ~2.7 MB of logs: more than hyper's, rustls' and the sockets' buffers
    a.run(serde_json::json!({"name": "chatty", "image": busybox(),
        "command": ["sh", "-c", "seq 1 400000; exec sleep 100000"]}))
        .await
        .unwrap();
    let c = &a.client;
    eventually(60, "all the logs are written", async || {
        let mut last = String::new();
        let req = hydra_agent::api::Request::Logs {
            name: "chatty".into(),
            follow: false,
            tail: Some(1),
        };
        c.stream(&req, |l| {
            last = l.to_string();
            true
        })
        .await
        .is_ok()
            && last.contains("\"400000\"")
    })
    .await;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let ns = a.host.netns();
    let reader = tokio::task::spawn_blocking(move || {
        netns::block_in(ns, move || async move {
            let mut s = tls(&pki, &pki.observer).await;
            s.write_all(b"GET /v1/containers/chatty/logs HTTP/1.1\r\nhost: a\r\n\r\n")
                .await
                .unwrap();
            // hold the connection, unread, until the test is done
            let _ = tokio::task::spawn_blocking(move || rx.recv()).await;
            drop(s);
        })
    });
    // the agent's end of the connection is closed with its data unsent
    // (FIN_WAIT1): its writes stalled for idle_timeout_s and it gave up
    let host = &a.host;
    let t0 = Instant::now();
    eventually(30, "the agent closes the unread connection", async || {
        !host
            .sh("ss -tnH state fin-wait-1 '( sport = :7443 )'")
            .trim()
            .is_empty()
    })
    .await;
    eprintln!("closed {:?} after the request", t0.elapsed());
    assert!(a.log().contains("did not read its answer"), "{}", a.log());
    tx.send(()).unwrap();
    reader.await.unwrap();
    a.client
        .send::<serde_json::Value>(&hydra_agent::api::Request::Remove {
            name: "chatty".into(),
            force: true,
        })
        .await
        .unwrap();
}
