//! Coexistence with Docker: dockerd (docker.io) runs on the simulated host and
//! owns docker0; the agent uses that bridge as it is, hooks its FORWARD rules
//! through DOCKER-USER, and keeps the firewall closed across a dockerd restart.

mod common;
#[path = "docker/dockerd.rs"]
mod dockerd;
use common::*;
use dockerd::*;
use serde_json::json;
use std::net::SocketAddr;

use std::time::Duration;

fn reach(from: &Host, addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    hydra_agent::runtime::probe::probe_from(
        &from.netns(),
        addr,
        "/heartbeat",
        // TCP's own SYN retransmission (after 1 s) fits: a loaded
        // machine can lose a first SYN
        Duration::from_millis(2500),
    )
    .is_ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn coexists_with_dockerd_owning_docker0() {
    require_root!();
    let Some((host, mut env)) = docker_env() else {
        return;
    };
    let dockerd = &mut env.dockerd;
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
    assert!(dockerd.terminate(), "dockerd stopped on SIGTERM");
    dockerd.spawn(&a.host);
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
    drop(env);
}

/// Docker's own containers on the same docker0: no address or port clash,
/// Docker's containers keep Docker's behaviour (publishing, talking to each
/// other), and tenants on either side cannot reach each other.
#[tokio::test(flavor = "multi_thread")]
async fn docker_containers_live_alongside_ours() {
    require_root!();
    let Some((host, env)) = docker_env() else {
        return;
    };
    let d = env.dir.path();
    let _ = demo(); // builds build/images (docker-demo included)
    let ctx = repo().join("build/images/docker-demo");
    docker(
        &host,
        d,
        &format!("build -q -t hydra-demo {}", ctx.display()),
    );
    docker(&host, d, "run -d --name dweb -p 20500:8080 hydra-demo");
    let dip = docker(&host, d, "inspect -f '{{.NetworkSettings.IPAddress}}' dweb");
    assert!(
        dip.starts_with("172.17.0."),
        "Docker's half (--fixed-cidr): {dip}"
    );

    let a = Agent::start_on(
        host,
        "[network]\nallowlist = [\"10.99.1.0/24\"]\nip_range = \"172.17.128.0/17\"\n",
    )
    .await;
    let central = a.host.peer(1);
    let stranger = a.host.peer(2);
    let ours = a
        .run(json!({"name": "web", "image": demo(), "ports": [{"container_port": 8080}]}))
        .await
        .unwrap();
    let (ip, hp) = (ours.ip.clone().unwrap(), ours.ports[0].host_port);
    assert!(ip.starts_with("172.17.1"), "our half: {ip}");

    // Docker's published port is in our pool: seen as taken, never handed out
    eventually(10, "docker-proxy seen in the inventory", async || {
        let p: hydra_agent::api::PortsInfo = a.client.call("GET", "/v1/ports", None).await.unwrap();
        p.taken_by_others
            .iter()
            .any(|t| t.port == 20500 && t.process.as_deref() == Some("docker-proxy"))
    })
    .await;
    let err = a
        .run(json!({"name": "clash", "image": demo(), "ports": [{"container_port": 8080, "host_port": 20500}]}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("20500"), "{err}");

    // both answer the allowlisted central; a stranger gets only Docker's
    // (our allowlist guards our addresses; Docker's published ports keep
    // Docker's behaviour, as DOCKER-USER rules of the operator decide)
    for port in [hp, 20500] {
        let c = format!("10.99.1.1:{port}");
        eventually(20, "central reaches", async || reach(&central, &c)).await;
    }
    assert!(
        !reach(&stranger, &format!("10.99.2.1:{hp}")),
        "a stranger, ours"
    );
    assert!(reach(&stranger, "10.99.2.1:20500"), "a stranger, Docker's");

    // tenants cannot reach across: ours -> Docker's, Docker's -> ours
    // (any HTTP answer counts as open)
    let check = open_or_closed;
    a.run(json!({"name": "probe", "image": busybox(), "command": ["sh", "-c", check(&format!("{dip}:8080"))]}))
        .await
        .unwrap();
    assert_eq!(a.wait("probe").await.exit_code, Some(0));
    let lines: Vec<String> = a.logs("probe").await.into_iter().map(|r| r.line).collect();
    assert_eq!(
        lines,
        vec![format!("{dip}:8080=closed")],
        "ours cannot reach Docker's"
    );
    let from_docker = docker(
        &a.host,
        d,
        &format!(
            "run --rm --entrypoint /bin/sh hydra-demo -c '{}'",
            check(&format!("{ip}:8080"))
        ),
    );
    assert_eq!(
        from_docker,
        format!("{ip}:8080=closed"),
        "Docker's cannot reach ours"
    );
    // and a Docker container still reaches another Docker container (Docker's
    // default, not ours to change)
    let docker_to_docker = docker(
        &a.host,
        d,
        &format!(
            "run --rm --entrypoint /bin/sh hydra-demo -c '{}'",
            check(&format!("{dip}:8080"))
        ),
    );
    assert_eq!(docker_to_docker, format!("{dip}:8080=open"));
    docker(&a.host, d, "rm -f dweb");
    drop(env);
}
