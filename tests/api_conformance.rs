//! The TCP API against peers no one here wrote: schemathesis (PyPI) checks
//! every route against the published OpenAPI description with the admin
//! certificate, stateful phase included; slowhttptest (Debian) runs
//! slowloris and slow-read at the port while a real client keeps creating,
//! inspecting and removing containers.

mod common;
#[path = "api_tls/netns.rs"]
mod netns;
#[path = "api_tls/pki.rs"]
#[allow(dead_code)]
mod pki;

use common::*;
use hydra_agent::api::client::Client;
use pki::Pki;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

const ADDR: &str = "127.0.0.1:7443";
const URL: &str = "https://127.0.0.1:7443";

fn schemathesis() -> PathBuf {
    std::env::var_os("HYDRA_SCHEMATHESIS").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join(".cache/schemathesis-venv/bin/schemathesis")
        },
        PathBuf::from,
    )
}

async fn start(extra: &str) -> (Agent, Pki, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let a = Agent::start(&format!("{}{extra}", pki.api_config(ADDR, None))).await;
    (a, pki, dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_every_answer_conforming_and_no_server_error() {
    require_root!();
    let st = schemathesis();
    assert!(
        st.exists(),
        "{} is missing: run scripts/schemathesis",
        st.display()
    );
    let (a, pki, dir) = start("").await;
    // a container for the routes that act on one; it exits at once, so a
    // followed log or a wait ends (schemathesis restarts it at will)
    a.run(serde_json::json!({"name": "web", "image": busybox(), "command": ["echo", "hello"]}))
        .await
        .unwrap();
    let work = dir.path().join("st");
    std::fs::create_dir(&work).unwrap();
    let out = a
        .host
        .command("timeout")
        .arg("900")
        .arg(&st)
        .args(["run", &format!("{URL}/v1/openapi.json"), "--url", URL])
        .arg("--request-cert")
        .arg(&pki.admin.cert)
        .arg("--request-cert-key")
        .arg(&pki.admin.key)
        .arg("--tls-verify")
        .arg(&pki.ca)
        .args([
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,negative_data_rejection,unsupported_method,use_after_free,ensure_resource_availability",
            "--max-examples",
            "60",
            "--seed",
            "42",
            "--workers",
            "1",
            "--request-timeout",
            "20",
            "--generation-database",
            "none",
            "--no-color",
            // endless answers: the events stream, logs followed, waits on
            // running containers
            "--exclude-path",
            "/v1/events",
            "--exclude-path",
            "/v1/containers/{name}/wait",
        ])
        .env("HYPOTHESIS_STORAGE_DIRECTORY", work.join(".hypothesis"))
        .current_dir(&work)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "schemathesis failed:\n{text}\nagent log:\n{}",
        a.log()
    );
    // it did test something: operations and the stateful phase
    assert!(text.contains("Stateful"), "{text}");
    // nothing crashed behind the answers
    assert!(!a.log().contains("panicked"), "{}", a.log());
}

/// Open fds and resident memory (KiB) of a process.
fn fds_and_rss(pid: i32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    (fds, rss)
}

#[tokio::test(flavor = "multi_thread")]
async fn slowloris_and_slow_read_do_not_delay_a_real_client() {
    require_root!();
    if lacks("slowhttptest", "-h") {
        panic!("slowhttptest is missing (scripts/test installs it)");
    }
    let (a, pki, _d) = start("").await;
    let pid = a.agent_pid();
    let (fds0, rss0) = fds_and_rss(pid);
    // slowloris and slow read, 400 connections each, at once, for 25 s
    let mut attacks: Vec<_> = [
        "slowhttptest -H -c 400 -r 100 -i 5 -x 24 -p 3 -l 25 -u https://127.0.0.1:7443/v1/host",
        "slowhttptest -X -c 400 -r 100 -w 512 -y 1024 -n 5 -z 32 -k 3 -p 3 -l 25 -u https://127.0.0.1:7443/metrics",
    ]
    .into_iter()
    .map(|cmd| a.host.spawn_bg(&format!("{cmd} >/dev/null 2>&1")))
    .collect();
    // meanwhile a real client creates, inspects and removes containers
    let cfg = hydra_agent::api::tls::client_config(&pki.ca, &pki.operator.cert, &pki.operator.key)
        .unwrap();
    let c = Client::tls(URL, cfg).unwrap();
    let img = busybox();
    let mut peak = (0usize, 0u64);
    let started = Instant::now();
    let mut worst = Vec::new();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(25) {
        let (c2, img2) = (c.clone(), img.clone());
        let times = netns::run_in(a.host.netns(), move || async move {
            let name = format!("client-{i}");
            let spec =
                serde_json::json!({"name": name, "image": img2, "command": ["sleep", "1000"]});
            let mut t = Vec::new();
            for (m, p, b) in [
                (
                    "PUT",
                    format!("/v1/containers/{name}"),
                    Some(serde_json::to_vec(&spec).unwrap()),
                ),
                ("GET", format!("/v1/containers/{name}"), None),
                ("DELETE", format!("/v1/containers/{name}?force=true"), None),
            ] {
                let t0 = Instant::now();
                let (st, body) = c2.raw(m, &p, b).await.unwrap();
                assert!(st < 300, "{m} {p}: {st} {}", String::from_utf8_lossy(&body));
                t.push((m, t0.elapsed()));
            }
            t
        })
        .await;
        worst.extend(times);
        let (f, r) = fds_and_rss(pid);
        peak = (peak.0.max(f), peak.1.max(r));
        i += 1;
    }
    for bg in attacks.iter_mut() {
        bg.terminate(Duration::from_secs(5));
    }
    let max = worst.iter().map(|(_, d)| *d).max().unwrap();
    eprintln!(
        "{} requests, slowest {max:?}; agent fds {fds0} -> peak {}, RSS {rss0} KiB -> peak {} KiB",
        worst.len(),
        peak.0,
        peak.1
    );
    for (m, d) in &worst {
        assert!(*d < Duration::from_secs(1), "{m} took {d:?} under attack");
    }
    assert!(worst.len() >= 30, "only {} requests in 25 s", worst.len());
    // bounded: the attackers' connections never reach the handler
    assert!(peak.0 < fds0 + 200, "fds {fds0} -> {}", peak.0);
    assert!(peak.1 < rss0 + 64 * 1024, "RSS {rss0} -> {} KiB", peak.1);
    assert!(a.log().contains("TLS handshake refused"));
}
