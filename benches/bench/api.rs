//! `pki DIR`: a CA, the agent's server certificate and an admin client's.
//! `api SOCKET URL PKI_DIR IMAGE AGENT_PID ROUNDS`: `GET /v1/containers/{name}`
//! over the Unix socket and over mutual TLS, each on one kept-alive
//! connection, rounds alternated in one run; then full mTLS handshakes
//! (connect, handshake, one request) per second with the agent pinned to
//! one core and this client on the other.

#[path = "../../tests/api_tls/pki.rs"]
#[allow(dead_code)]
mod pki;

use super::{ms, pct};
use hydra_agent::api::client::{Client, Session};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

pub fn make_pki(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let p = pki::Pki::new(dir);
    for (from, to) in [(&p.admin.cert, "client.pem"), (&p.admin.key, "client.key")] {
        std::fs::copy(from, dir.join(to)).unwrap();
    }
}

async fn gets(s: &mut Session, path: &str, n: usize, out: &mut Vec<f64>) -> Duration {
    let t = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        let (st, _) = s.raw("GET", path, None).await.unwrap();
        assert_eq!(st, 200);
        out.push(ms(t0.elapsed()) * 1000.0);
    }
    t.elapsed()
}

fn pin(pid: i32, cpus: &str) {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "taskset {cpus} {pid}");
}

/// GETs of `path` on one plain-HTTP TCP connection (the metrics listener).
async fn plain_gets(addr: &str, path: &str, n: usize, out: &mut Vec<f64>) -> Duration {
    use http_body_util::{BodyExt, Empty};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let t = Instant::now();
    for _ in 0..n {
        let t0 = Instant::now();
        s.ready().await.unwrap();
        let req = hyper::Request::get(path)
            .header("host", "a")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = s.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
        out.push(ms(t0.elapsed()) * 1000.0);
    }
    t.elapsed()
}

/// `/healthz` (the cheapest route) on the three transports, alternated:
/// what TCP and what TLS each add.
async fn transports(unix: &Client, tls: &Client, plain: &str, rounds: usize) {
    let n = 2000;
    let (mut su, mut st) = (unix.session().await.unwrap(), tls.session().await.unwrap());
    let mut l = [Vec::new(), Vec::new(), Vec::new()];
    let mut d = [Duration::ZERO; 3];
    for _ in 0..rounds {
        d[0] += gets(&mut su, "/healthz", n, &mut l[0]).await;
        d[1] += plain_gets(plain, "/healthz", n, &mut l[1]).await;
        d[2] += gets(&mut st, "/healthz", n, &mut l[2]).await;
    }
    println!("| GET /healthz, one kept-alive connection, {} requests each, alternated | req/s | p50 µs | p99 µs |", rounds * n);
    println!("|---|---|---|---|");
    for (i, what) in [
        "Unix socket",
        "TCP, plain HTTP (the metrics listener)",
        "TCP, mutual TLS 1.3",
    ]
    .iter()
    .enumerate()
    {
        let r = (rounds * n) as f64 / d[i].as_secs_f64();
        println!(
            "| {what} | {r:.0} | {:.0} | {:.0} |",
            pct(&mut l[i], 0.5),
            pct(&mut l[i], 0.99)
        );
    }
    println!();
    println!(
        "Per request, TLS adds {:.1}% to plain TCP; TCP with TLS adds {:.1}% to the Unix socket.",
        (d[2].as_secs_f64() / d[1].as_secs_f64() - 1.0) * 100.0,
        (d[2].as_secs_f64() / d[0].as_secs_f64() - 1.0) * 100.0
    );
    println!();
}

pub async fn api(socket: &str, url: &str, dir: &Path, image: &str, agent: i32, rounds: usize) {
    let unix = Client::new(socket);
    let cfg = hydra_agent::api::tls::client_config(
        &dir.join("ca.pem"),
        &dir.join("client.pem"),
        &dir.join("client.key"),
    )
    .unwrap();
    let tls = Client::tls(url, cfg).unwrap();
    let spec =
        serde_json::json!({"name": "bench-api", "image": image, "command": ["sleep", "100000"]});
    let (st, b) = unix
        .raw(
            "POST",
            "/v1/containers",
            Some(serde_json::to_vec(&spec).unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    let path = "/v1/containers/bench-api";
    let (mut su, mut st_) = (unix.session().await.unwrap(), tls.session().await.unwrap());
    let (mut lu, mut lt) = (Vec::new(), Vec::new());
    let (mut du, mut dt) = (Duration::ZERO, Duration::ZERO);
    let n = 2000;
    // warm-up, then alternated rounds
    gets(&mut su, path, 200, &mut Vec::new()).await;
    gets(&mut st_, path, 200, &mut Vec::new()).await;
    for _ in 0..rounds {
        du += gets(&mut su, path, n, &mut lu).await;
        dt += gets(&mut st_, path, n, &mut lt).await;
    }
    let total = (rounds * n) as f64;
    let (ru, rt) = (total / du.as_secs_f64(), total / dt.as_secs_f64());
    println!("| GET /v1/containers/{{name}}, one kept-alive connection, {} requests each, alternated | req/s | p50 µs | p99 µs |", rounds * n);
    println!("|---|---|---|---|");
    println!(
        "| Unix socket | {ru:.0} | {:.0} | {:.0} |",
        pct(&mut lu, 0.5),
        pct(&mut lu, 0.99)
    );
    println!(
        "| TCP, mutual TLS 1.3 | {rt:.0} | {:.0} | {:.0} |",
        pct(&mut lt, 0.5),
        pct(&mut lt, 0.99)
    );
    println!();
    println!(
        "Per request, TCP with TLS takes {:.1}% longer than the Unix socket (mean times); the next table splits that into TCP and TLS.",
        (ru / rt - 1.0) * 100.0
    );
    println!();
    drop((su, st_));
    transports(&unix, &tls, "127.0.0.1:9464", rounds).await;

    // full handshakes: the agent on CPU 0, this client on CPU 1
    pin(agent, "0");
    let secs = 5.0;
    let t = Instant::now();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let c = tls.clone();
            tokio::spawn(async move {
                let mut k = 0u64;
                while t.elapsed().as_secs_f64() < secs {
                    let mut s = c.session().await.unwrap();
                    let (st, _) = s.raw("GET", "/healthz", None).await.unwrap();
                    assert_eq!(st, 200);
                    k += 1;
                }
                k
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    let el = t.elapsed().as_secs_f64();
    pin(agent, "0-1023");
    println!("| full mutual-TLS handshakes (ECDSA P-256, TLS 1.3, + GET /healthz), agent pinned to one core | per second |");
    println!("|---|---|");
    println!(
        "| 4 clients on the other core, {el:.1} s | {:.0} |",
        total as f64 / el
    );
    let _ = unix
        .raw("DELETE", "/v1/containers/bench-api?force=true", None)
        .await;
}
