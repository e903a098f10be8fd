//! An upgrade with containers running: the previous release (built by
//! `scripts/build-previous` from its commit) makes containers, is stopped,
//! and this build starts on the same state. Records, log segments, shipping
//! cursors and allocations it wrote load here; its running containers are
//! adopted (same processes, addresses, ports), their logs continue without
//! a gap, their exits are recorded, shipping resumes where it stopped.

mod common;
use common::*;
use serde_json::json;

const CENTRAL: &str = "10.99.1.0/24";

fn previous_release() -> std::path::PathBuf {
    let out = std::process::Command::new(repo().join("scripts/build-previous"))
        .output()
        .expect("run scripts/build-previous");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = repo().join(String::from_utf8_lossy(&out.stdout).trim());
    assert!(bin.exists(), "{}", bin.display());
    bin
}

#[tokio::test(flavor = "multi_thread")]
async fn the_next_release_adopts_what_the_previous_one_made() {
    require_root!();
    if lacks("rsyslogd", "-v") {
        return;
    }
    let old = previous_release();
    let cfg = format!("[network]\nallowlist = [\"{CENTRAL}\"]\n[collector]\nrelp = \"{RELP}\"\nlog_rate_lines = 0\n");
    let mut a = Agent::start_with(Host::new(), &cfg, Some(old)).await;
    let dir = tempfile::tempdir().unwrap();
    let mut rs = Rsyslog::new(dir.path());
    rs.start(&a);
    let central = a.host.peer(1);
    let web = a
        .run(
            json!({"name": "web", "image": demo(), "ports": [{"container_port": 8080}],
                    "limits": {"memory": "64Mi"}}),
        )
        .await
        .unwrap();
    let ticker = a
        .run(
            json!({"name": "ticker", "image": busybox(), "command": ["sh", "-c",
                    "i=0; while true; do i=$((i+1)); echo n=$i; sleep 0.02; done"]}),
        )
        .await
        .unwrap();
    a.run(json!({"name": "done", "image": busybox(), "command": ["sh", "-c", "exit 3"]}))
        .await
        .unwrap();
    let url = format!("10.99.1.1:{}", web.ports[0].host_port);
    eventually(20, "the old release's mapping answers", async || {
        central.http("GET", &url, "/heartbeat", b"").0 == 200
    })
    .await;
    eventually(20, "lines shipped by the old release", async || {
        numbers(&rs.received(), "ticker").len() > 20
    })
    .await;
    assert_eq!(a.wait("done").await.exit_code, Some(3));

    // the upgrade: a clean stop (containers stay), this build on the same state
    assert!(a.term().success());
    let shipped_before = numbers(&rs.received(), "ticker").len();
    a.bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_hydra-agent"));
    a.spawn().await;
    let list: Vec<ContainerInfo> = a.client.list().await.unwrap();
    assert_eq!(list.len(), 3, "{list:?}");
    let now = a.inspect("web").await;
    assert_eq!(
        (now.state.as_str(), now.pid, &now.ip, &now.ports),
        ("running", web.pid, &web.ip, &web.ports)
    );
    assert_eq!(now.limits, web.limits);
    assert_eq!(a.inspect("ticker").await.pid, ticker.pid);
    assert_eq!(a.inspect("done").await.exit_code, Some(3));
    assert!(
        central.http("GET", &url, "/heartbeat", b"").0 == 200,
        "the mapping still answers"
    );
    let ports = a.client.ports().await.unwrap();
    assert!(ports
        .allocated
        .iter()
        .any(|p| p.container == "web" && p.host_port == web.ports[0].host_port));
    // a new container gets other allocations
    let other = a
        .run(json!({"name": "other", "image": demo(), "ports": [{"container_port": 8080}]}))
        .await
        .unwrap();
    assert_ne!(other.ip, web.ip);
    assert_ne!(other.ports[0].host_port, web.ports[0].host_port);

    // the log goes on in the same segments, numbered without a gap
    eventually(20, "lines written after the upgrade", async || {
        a.logs("ticker").await.len() > shipped_before + 20
    })
    .await;
    let recs = a.logs("ticker").await;
    for w in recs.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "{:?} then {:?}", w[0], w[1]);
    }
    // and shipping resumes from the old cursor: every line, in order
    let last: u64 = recs
        .last()
        .unwrap()
        .line
        .trim_start_matches("n=")
        .parse()
        .unwrap();
    let mut got = Vec::new();
    eventually(60, "the upgrade's lines shipped too", async || {
        got = numbers(&rs.received(), "ticker");
        got.contains(&last)
    })
    .await;
    let upto: Vec<u64> = got.iter().copied().filter(|n| *n <= last).collect();
    at_least_once_in_order(&upto, last).unwrap();

    // an exit recorded by the old release's shim reaches this agent (the
    // shell is its namespace's init and ignores SIGTERM: SIGKILL after 1 s)
    let stopped: ContainerInfo = a
        .client
        .send(&Request::Stop {
            name: "ticker".into(),
            timeout_s: 1,
        })
        .await
        .unwrap();
    assert_eq!(
        (stopped.state.as_str(), stopped.signal),
        ("exited", Some(9))
    );
    for name in ["web", "ticker", "done", "other"] {
        let () = a
            .client
            .send(&Request::Remove {
                name: name.into(),
                force: true,
            })
            .await
            .unwrap();
    }
    assert!(Agent::layout().children(&a.parent).is_empty());
    rs.stop();
}
