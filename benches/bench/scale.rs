//! `scale AGENT_SOCKET AGENT_PID IMAGE SIZES PROBES`: the cost of one more
//! container as the host fills up. At each size of SIZES (e.g.
//! 0,100,500,1000 containers running `sleep`, each with networking and a
//! mapped port), PROBES containers are created (timed) and removed, then the
//! read API is timed: list, inspect, /metrics, PROBES times each. Prints a
//! Markdown table and the agent's RSS at each size. The restart-to-ready
//! time is measured by scripts/bench around `ready`.

use hydra_agent::api::client::Client;
use std::time::{Duration, Instant};

use super::{kb, ms, pct};

fn spec(name: &str, image: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "name": name, "image": image, "command": ["sleep", "36000"],
        "ports": [{"container_port": 8080}]
    }))
    .unwrap()
}

async fn create(c: &Client, name: &str, image: &str) -> f64 {
    let t0 = Instant::now();
    let (st, body) = c
        .raw("POST", "/v1/containers", Some(spec(name, image)))
        .await
        .unwrap();
    let d = ms(t0.elapsed());
    assert_eq!(st, 201, "{name}: {}", String::from_utf8_lossy(&body));
    d
}

async fn remove(c: &Client, name: &str) {
    let (st, body) = c
        .raw("DELETE", &format!("/v1/containers/{name}?force=true"), None)
        .await
        .unwrap();
    assert_eq!(st, 204, "{name}: {}", String::from_utf8_lossy(&body));
}

/// p99 ms of `n` GETs of `path`.
async fn get_p99(c: &Client, path: &str, n: usize) -> f64 {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        let (st, _) = c.raw("GET", path, None).await.unwrap();
        v.push(ms(t0.elapsed()));
        assert_eq!(st, 200, "GET {path}");
    }
    pct(&mut v, 0.99)
}

pub async fn scale(sock: &str, agent_pid: i32, image: &str, sizes: &[usize], probes: usize) {
    let c = Client::new(sock);
    println!("| running containers | create p50 ms | create p99 ms | list p99 ms | inspect p99 ms | /metrics p99 ms | agent RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    let mut running = 0;
    let mut base = None;
    for &size in sizes {
        while running < size {
            create(&c, &format!("fill-{running}"), image).await;
            running += 1;
        }
        // let the fill's background work (samplers, health, refills) settle
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut t = Vec::with_capacity(probes);
        for i in 0..probes {
            let name = format!("probe-{i}");
            t.push(create(&c, &name, image).await);
            remove(&c, &name).await;
            // a removal's teardown (netns, RCU) is not the next create's
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (p50, p99) = (pct(&mut t, 0.5), pct(&mut t, 0.99));
        base.get_or_insert(p50);
        let list = get_p99(&c, "/v1/containers", probes).await;
        let inspect = match size {
            0 => f64::NAN,
            _ => get_p99(&c, "/v1/containers/fill-0", probes).await,
        };
        let metrics = get_p99(&c, "/metrics", probes).await;
        let rss = kb(agent_pid, "status", "VmRSS:") as f64 / 1024.0;
        println!(
            "| {size} | {p50:.1} ({:.2}x) | {p99:.1} | {list:.1} | {inspect:.1} | {metrics:.1} | {rss:.1} |",
            p50 / base.unwrap()
        );
    }
}

/// Waits until the (just restarted) agent lists `n` running containers;
/// prints nothing (scripts/bench times the whole from the agent's start).
pub async fn ready(sock: &str, n: usize) {
    let c = Client::new(sock);
    loop {
        if let Ok(list) = c.list().await {
            if list.iter().filter(|c| c.state == "running").count() >= n {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
