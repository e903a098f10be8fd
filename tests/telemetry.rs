//! Stats to Prometheus: a real Prometheus (Debian's `prometheus`) scrapes the
//! agent's metrics listener and receives its remote-write, both on loopback in
//! the test's own network namespace; the test queries Prometheus' HTTP API
//! for each container's series.

mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const METRICS: &str = "127.0.0.1:19464";
const PROM: &str = "127.0.0.1:19090";
const MIB: f64 = 1048576.0;

/// Starts Prometheus in the agent's host namespaces (scraping the agent
/// every second, accepting remote-write), storing in `dir`.
fn prometheus(a: &Agent, dir: &std::path::Path) -> Bg {
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hydra\n    static_configs:\n      - targets: ['{METRICS}']\n"
        ),
    )
    .unwrap();
    let bg = a.host.spawn_bg(&format!(
        "exec prometheus --config.file={} --storage.tsdb.path={}/data --web.listen-address={PROM} --web.enable-remote-write-receiver --log.level=warn",
        cfg.display(),
        dir.display()
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.host.http("GET", PROM, "/-/ready", b"").0 != 200 {
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    bg
}

/// Prometheus instant query: the result vector.
fn query(a: &Agent, q: &str, at: Option<f64>) -> Vec<serde_json::Value> {
    let mut path = format!("/api/v1/query?query={}", urlencode(q));
    if let Some(t) = at {
        path.push_str(&format!("&time={t:.3}"));
    }
    let (st, body) = a.host.http("GET", PROM, &path, b"");
    assert_eq!(st, 200, "{q}: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn value(r: &serde_json::Value) -> f64 {
    r["value"][1].as_str().unwrap().parse().unwrap()
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_and_receives_each_containers_series() {
    require_root!();
    if lacks("prometheus", "--version") {
        return;
    }
    let a = Agent::start(&format!(
        "[api]\nmetrics = \"{METRICS}\"\n[collector]\nstats_interval_s = 1\nremote_write = \"http://{PROM}/api/v1/write\"\n"
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut prom = prometheus(&a, dir.path());
    // a container holding 50 MiB (tmpfs pages are charged to its cgroup)
    // and one burning CPU
    a.run(json!({"name": "hog", "app": "shop", "version": "v7", "image": busybox(),
                 "command": ["sh", "-c", "head -c 52428800 /dev/zero > /dev/shm/fill && exec sleep 100000"]}))
        .await
        .unwrap();
    a.run(
        json!({"name": "spin", "app": "shop", "version": "v8", "image": busybox(),
                 "command": ["sh", "-c", "while :; do :; done"]}),
    )
    .await
    .unwrap();
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned();

    // scraped: right labels, plausible values
    let mut mem = Vec::new();
    eventually(60, "scraped memory of hog at ~50 MiB", async || {
        mem = query(
            &a,
            "hydra_container_memory_bytes{job=\"hydra\",container=\"hog\"}",
            None,
        );
        mem.len() == 1 && value(&mem[0]) > 49.0 * MIB
    })
    .await;
    let m = &mem[0]["metric"];
    assert_eq!(
        (m["app"].as_str(), m["version"].as_str(), m["host"].as_str()),
        (Some("shop"), Some("v7"), Some(host.as_str())),
        "{m}"
    );
    let v = value(&mem[0]);
    assert!(v < 64.0 * MIB, "hog uses {v} bytes");
    let shmem = query(
        &a,
        "hydra_container_memory_stat_bytes{job=\"hydra\",container=\"hog\",type=\"shmem\"}",
        None,
    );
    assert!(value(&shmem[0]) >= 50.0 * MIB, "{shmem:?}");
    let mut cpu = Vec::new();
    eventually(30, "spin's CPU time grows", async || {
        cpu = query(
            &a,
            "hydra_container_cpu_usage_seconds_total{job=\"hydra\",container=\"spin\"}",
            None,
        );
        cpu.len() == 1 && value(&cpu[0]) > 1.0
    })
    .await;
    assert_eq!(cpu[0]["metric"]["version"].as_str(), Some("v8"));
    let hog_cpu = query(
        &a,
        "hydra_container_cpu_usage_seconds_total{job=\"hydra\",container=\"hog\"}",
        None,
    );
    assert!(value(&hog_cpu[0]) < 1.0, "hog is idle: {hog_cpu:?}");
    // the agent's own series
    for q in [
        "hydra_containers{job=\"hydra\",state=\"running\"}",
        "hydra_stats_passes_total{job=\"hydra\"}",
        "hydra_api_requests_total{job=\"hydra\",method=\"POST\",code=\"201\"}",
    ] {
        let r = query(&a, q, None);
        assert!(r.len() == 1 && value(&r[0]) >= 1.0, "{q}: {r:?}");
    }

    // remote-written (no job label): the same series, same labels
    let mut rw = Vec::new();
    eventually(30, "remote-written memory of hog", async || {
        rw = query(
            &a,
            "hydra_container_memory_bytes{job=\"\",container=\"hog\"}",
            None,
        );
        rw.len() == 1 && value(&rw[0]) > 49.0 * MIB
    })
    .await;
    assert_eq!(rw[0]["metric"]["app"].as_str(), Some("shop"));
    assert_eq!(rw[0]["metric"]["host"].as_str(), Some(host.as_str()));

    // Prometheus away for ~4 s: the agent keeps the samples and delivers
    // them, in order, when it is back
    assert!(prom.terminate(Duration::from_secs(30)), "prometheus stops");
    let down = now_s();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let up = now_s();
    prom = prometheus(&a, dir.path());
    let window = (up - down - 1.0).floor() as u64;
    let mut got = Vec::new();
    eventually(60, "samples taken while Prometheus was away", async || {
        got = query(
            &a,
            &format!("hydra_container_memory_bytes{{job=\"\",container=\"hog\"}}[{window}s]"),
            Some(up),
        );
        got.len() == 1
            && got[0]["values"]
                .as_array()
                .is_some_and(|v| v.len() as u64 >= window - 1)
    })
    .await;
    let ts: Vec<f64> = got[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_f64().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "in order: {ts:?}");
    let (st, text) = a.host.http("GET", METRICS, "/metrics", b"");
    assert_eq!(st, 200);
    assert!(
        metric(&text, "hydra_remote_write_retries_total").unwrap() >= 1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "hydra_remote_write_dropped_container_samples_total"),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &text,
            "hydra_remote_write_samples_total{result=\"rejected\"}"
        ),
        Some(0.0)
    );
    // the metrics listener serves nothing else
    assert_eq!(a.host.http("GET", METRICS, "/v1/containers", b"").0, 404);
    assert_eq!(
        a.host.http("DELETE", METRICS, "/v1/containers/hog", b"").0,
        404
    );
    drop(prom);
}
