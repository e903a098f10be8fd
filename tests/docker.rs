//! Coexistence with Docker: dockerd (docker.io) runs on the simulated host and
//! owns docker0; the agent uses that bridge as it is, hooks its FORWARD rules
//! through DOCKER-USER, and keeps the firewall closed across a dockerd restart.

mod common;
use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;

fn reach(from: &Host, addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    hydra_agent::supervisor::health::probe_from(
        &from.netns(),
        addr,
        "/heartbeat",
        Duration::from_millis(700),
    )
    .is_ok()
}

fn start_dockerd(host: &Host, dir: &std::path::Path) -> Bg {
    let d = dir.display();
    let bg = host.spawn_bg(&format!(
        "exec dockerd --data-root {d}/data --exec-root {d}/exec --host unix://{d}/docker.sock --pidfile {d}/docker.pid --fixed-cidr 172.17.0.0/17 >> {d}/dockerd.log 2>&1"
    ));
    let sock = dir.join("docker.sock");
    let t0 = std::time::Instant::now();
    let ready = || {
        sock.exists()
            && host
                .sh("iptables -S DOCKER-USER 2>/dev/null || true")
                .contains("-N DOCKER-USER")
            && host
                .sh("ip -4 -o addr show docker0 2>/dev/null || true")
                .contains("172.17.0.1/16")
    };
    while !ready() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "dockerd did not start: {}",
            std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    bg
}

#[tokio::test(flavor = "multi_thread")]
async fn coexists_with_dockerd_owning_docker0() {
    require_root!();
    if std::process::Command::new("dockerd")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: dockerd (docker.io) is not installed here (scripts/test installs it on the host; the VM has none)");
        return;
    }
    let host = Host::new();
    let ddir = tempfile::Builder::new()
        .prefix("hydra-test-docker-")
        .tempdir()
        .unwrap();
    let mut dockerd = start_dockerd(&host, ddir.path());
    let docker_addr = host.sh("ip -4 -o addr show docker0");
    assert!(
        docker_addr.contains("172.17.0.1/16"),
        "Docker made docker0: {docker_addr}"
    );
    let a = Agent::start_on(
        host,
        "[network]\nallowlist = [\"10.99.1.0/24\"]\ndrift_interval_s = 1\nip_range = \"172.17.128.0/17\"\n",
    ).await;
    let central = a.host.peer(1);
    let stranger = a.host.peer(2);
    // our hook went into DOCKER-USER, Docker's bridge was used as it is
    assert!(a
        .host
        .sh("iptables -S DOCKER-USER")
        .contains("-A DOCKER-USER -j HYDRA-FORWARD"));
    assert_eq!(a.host.sh("ip -4 -o addr show docker0"), docker_addr);
    let info = a
        .run(json!({"name": "web", "image": demo(), "ports": [{"container_port": 8080}]}))
        .await
        .unwrap();
    let hp = info.ports[0].host_port;
    assert!(
        info.ip.as_deref().unwrap().starts_with("172.17.1"),
        "our half of Docker's subnet (ip_range): {:?}",
        info.ip
    );
    let (c, s) = (format!("10.99.1.1:{hp}"), format!("10.99.2.1:{hp}"));
    eventually(20, "central reaches", async || reach(&central, &c)).await;
    assert!(
        !reach(&stranger, &s),
        "a stranger does not, Docker's ACCEPTs notwithstanding"
    );

    // dockerd restarts and rewrites its chains: ours survive (or are restored)
    assert!(
        dockerd.terminate(Duration::from_secs(60)),
        "dockerd stopped on SIGTERM"
    );
    drop(dockerd);
    dockerd = start_dockerd(&a.host, ddir.path());
    eventually(10, "hook in DOCKER-USER again", async || {
        a.host
            .sh("iptables -S DOCKER-USER")
            .contains("HYDRA-FORWARD")
    })
    .await;
    eventually(
        10,
        "central reaches after the dockerd restart",
        async || reach(&central, &c),
    )
    .await;
    assert!(!reach(&stranger, &s));
    drop(dockerd);
}
