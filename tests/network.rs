//! Host networking against the real kernel, in simulated hosts (network
//! namespaces the tests create): the agent's host, a "central" machine on an
//! allowlisted network and a "stranger" on another, wired to it by veths.

mod common;
use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const CENTRAL: &str = "10.99.1.0/24";

fn reach(from: &Host, addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    match hydra_agent::runtime::probe::probe_from(
        &from.netns(),
        addr,
        "/heartbeat",
        // long enough for TCP's own SYN retransmission (after 1 s): on a
        // loaded machine a first SYN can be lost, and a client retries it
        Duration::from_millis(2500),
    ) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("reach {addr} from {:?}: {e}: {e:?}", from.netns());
            false
        }
    }
}

async fn host_port(a: &Agent, name: &str) -> u16 {
    a.inspect(name).await.ports[0].host_port
}

/// A tiny HTTP responder on `port` inside `host` (a "host service").
fn serve(host: &Host, port: u16) -> Bg {
    host.spawn_bg(&format!("while true; do printf 'HTTP/1.0 200 OK\\r\\n\\r\\nhost-{port}' | busybox nc -l -p {port}; done"))
}

#[tokio::test(flavor = "multi_thread")]
async fn only_allowlisted_sources_reach_container_ports() {
    require_root!();
    let a = Agent::start(&format!("[network]\nallowlist = [\"{CENTRAL}\"]\n")).await;
    let central = a.host.peer(1);
    let stranger = a.host.peer(2);
    let info = a
        .run(json!({"name": "web", "image": demo(), "ports": [{"container_port": 8080}], "limits": {"memory": "64Mi"}}))
        .await
        .unwrap();
    let ip = info.ip.clone().expect("an address on the bridge");
    assert!(ip.starts_with("172.17."), "{ip}");
    let hp = info.ports[0].host_port;
    assert!((20000..=29999).contains(&hp));
    // the container has eth0 with its address, a default route, /etc/hosts and resolv.conf
    let pid = info.pid.unwrap();
    let root = format!("/proc/{pid}/root");
    let hosts = std::fs::read_to_string(format!("{root}/etc/hosts")).unwrap();
    assert!(hosts.contains(&format!("{ip}\tweb")), "{hosts}");
    assert!(std::path::Path::new(&format!("{root}/etc/resolv.conf")).exists());
    eventually(10, "app up", async || reach(&a.host, &format!("{ip}:8080"))).await;

    let central_url = format!("10.99.1.1:{hp}");
    let stranger_url = format!("10.99.2.1:{hp}");
    assert!(
        reach(&central, &central_url),
        "central reaches the heartbeat through the host port"
    );
    assert!(!reach(&stranger, &stranger_url), "a stranger does not");
    // the host itself, through its own addresses and localhost (hairpin)
    assert!(reach(&a.host, &format!("10.99.1.1:{hp}")));
    assert!(reach(&a.host, &format!("127.0.0.1:{hp}")));

    // allowlist changes take effect at once
    let put = |cidrs: Vec<&str>| serde_json::to_vec(&json!({ "cidrs": cidrs })).unwrap();
    let got: serde_json::Value = a
        .client
        .call(
            "PUT",
            "/v1/firewall/allowlist",
            Some(put(vec![CENTRAL, "10.99.2.0/24"])),
        )
        .await
        .unwrap();
    assert_eq!(got["cidrs"], json!([CENTRAL, "10.99.2.0/24"]));
    assert!(reach(&stranger, &stranger_url), "allowed now");
    let _: serde_json::Value = a
        .client
        .call("PUT", "/v1/firewall/allowlist", Some(put(vec![CENTRAL])))
        .await
        .unwrap();
    assert!(!reach(&stranger, &stranger_url), "denied again");
    assert!(reach(&central, &central_url));
    let (st, body) = a
        .client
        .raw(
            "PUT",
            "/v1/firewall/allowlist",
            Some(put(vec!["10.0.0.0/33"])),
        )
        .await
        .unwrap();
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("cidrs[0]"));

    // the allowlist and the mapping survive an agent restart
    let mut a = a;
    a.kill9();
    a.spawn().await;
    let got: serde_json::Value = a
        .client
        .call("GET", "/v1/firewall/allowlist", None)
        .await
        .unwrap();
    assert_eq!(got["cidrs"], json!([CENTRAL]));
    assert!(reach(&central, &central_url));
    assert!(!reach(&stranger, &stranger_url));
    assert_eq!(host_port(&a, "web").await, hp);

    // removal takes the mapping, the veth and the allocations away
    let (st, _) = a
        .client
        .raw("DELETE", "/v1/containers/web?force=true", None)
        .await
        .unwrap();
    assert_eq!(st, 204);
    assert!(!reach(&central, &central_url));
    let rules = a.host.sh("iptables-save -t nat");
    assert!(!rules.contains(&format!("--dport {hp}")), "{rules}");
    eventually(10, "veth gone", async || {
        !a.host.sh("ip -o link").contains("hy")
    })
    .await;
    let ports: hydra_agent::api::PortsInfo = a.client.call("GET", "/v1/ports", None).await.unwrap();
    assert!(ports.allocated.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_reach_only_what_is_allowed() {
    require_root!();
    let a = Agent::start("[network]\nhost_ports = [3128]\n").await;
    let central = a.host.peer(1);
    let _proxy = serve(&a.host, 3128);
    let _other_service = serve(&a.host, 7000);
    let _central_service = serve(&central, 80);
    let other = a
        .run(json!({"name": "other", "image": demo()}))
        .await
        .unwrap();
    let other_ip = other.ip.clone().unwrap();
    eventually(10, "other up", async || {
        reach(&a.host, &format!("{other_ip}:8080"))
    })
    .await;
    // busybox's static wget crashes on getaddrinfo without NSS; nc does not.
    // Any HTTP answer (the demo app says 404 to a bare GET) counts as open.
    let check = open_or_closed;
    let script = [
        check("172.17.0.1:3128"),
        check("172.17.0.1:7000"),
        check(&format!("{other_ip}:8080")),
        check("10.99.1.2:80"),
        check("10.99.1.1:7000"),
    ]
    .join("; ");
    a.run(json!({"name": "probe", "image": busybox(), "command": ["sh", "-c", script]}))
        .await
        .unwrap();
    assert_eq!(a.wait("probe").await.exit_code, Some(0));
    let lines: Vec<String> = a.logs("probe").await.into_iter().map(|r| r.line).collect();
    assert_eq!(
        lines,
        vec![
            "172.17.0.1:3128=open".to_string(),
            "172.17.0.1:7000=closed".into(),
            format!("{other_ip}:8080=closed"),
            "10.99.1.2:80=closed".into(),
            "10.99.1.1:7000=closed".into(),
        ],
        "the proxy only: not other host services, not another container, not private networks"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn port_inventory_and_port_errors() {
    require_root!();
    let a = Agent::start("[network]\nport_range = \"20000-20002\"\n").await;
    // another process on the host listens on a pool port
    let squatter = a.host.spawn_bg("exec busybox nc -l -p 20001");
    eventually(10, "squatter listening", async || {
        a.host
            .sh("cat /proc/net/tcp /proc/net/tcp6")
            .contains(":4E21 ")
    })
    .await;
    let p: hydra_agent::api::PortsInfo = a.client.call("GET", "/v1/ports", None).await.unwrap();
    assert_eq!((p.range.start, p.range.end, p.free), (20000, 20002, 2));
    assert_eq!(p.taken_by_others.len(), 1);
    assert_eq!(p.taken_by_others[0].port, 20001);
    assert_eq!(p.taken_by_others[0].pid, Some(squatter.pid() as i32));
    assert_eq!(p.taken_by_others[0].process.as_deref(), Some("busybox"));

    let spec = |name: &str, hp: Option<u16>| {
        serde_json::to_vec(
            &json!({"name": name, "image": busybox(), "command": ["sleep", "100000"],
                                   "ports": [{"container_port": 8080, "host_port": hp}]}),
        )
        .unwrap()
    };
    for (hp, why) in [
        (Some(20001), "in use by another process"),
        (Some(80), "outside the pool"),
    ] {
        let before = a.snapshot();
        let (st, body) = a
            .client
            .raw("POST", "/v1/containers", Some(spec("x", hp)))
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_eq!(st, 409, "{body}");
        assert!(
            body.contains(why) && body.contains("\"field\":\"ports\""),
            "{body}"
        );
        assert_eq!(a.snapshot(), before);
    }
    // the next free port skips the squatter
    let c1: hydra_agent::api::ContainerInfo = a
        .client
        .call("POST", "/v1/containers", Some(spec("c1", None)))
        .await
        .unwrap();
    let c2: hydra_agent::api::ContainerInfo = a
        .client
        .call("POST", "/v1/containers", Some(spec("c2", None)))
        .await
        .unwrap();
    assert_eq!(
        (c1.ports[0].host_port, c2.ports[0].host_port),
        (20000, 20002)
    );
    let (st, body) = a
        .client
        .raw("POST", "/v1/containers", Some(spec("c3", Some(20000))))
        .await
        .unwrap();
    assert_eq!(
        st,
        409,
        "allocated to c1: {}",
        String::from_utf8_lossy(&body)
    );
    // pool exhausted: a clear error and nothing allocated
    let before = a.snapshot();
    let (st, body) = a
        .client
        .raw("POST", "/v1/containers", Some(spec("c3", None)))
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body).into_owned();
    assert_eq!(st, 409);
    assert!(body.contains("no free host port"), "{body}");
    assert_eq!(a.snapshot(), before);
    let p: hydra_agent::api::PortsInfo = a.client.call("GET", "/v1/ports", None).await.unwrap();
    assert_eq!(p.free, 0);
    assert_eq!(
        p.allocated
            .iter()
            .map(|x| (x.host_port, x.container.as_str()))
            .collect::<Vec<_>>(),
        vec![(20000, "c1"), (20002, "c2")]
    );
    drop(squatter);
}

#[tokio::test(flavor = "multi_thread")]
async fn firewall_never_opens_during_a_restart_and_drift_is_restored() {
    require_root!();
    let mut a = Agent::start(&format!(
        "[network]\nallowlist = [\"{CENTRAL}\"]\ndrift_interval_s = 1\n"
    ))
    .await;
    let central = a.host.peer(1);
    let stranger = a.host.peer(2);
    let info = a
        .run(json!({"name": "web", "image": demo(), "ports": [{"container_port": 8080}]}))
        .await
        .unwrap();
    let hp = info.ports[0].host_port;
    let central_url = format!("10.99.1.1:{hp}");
    eventually(10, "central reaches", async || {
        reach(&central, &central_url)
    })
    .await;
    // a stranger hammers the port while the agent is killed and restarted
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s2, ns) = (stop.clone(), stranger.netns());
    let prober = std::thread::spawn(move || {
        let (mut tries, mut wins) = (0u32, 0u32);
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            tries += 1;
            let addr: SocketAddr = format!("10.99.2.1:{hp}").parse().unwrap();
            if hydra_agent::runtime::probe::probe_from(
                &ns,
                addr,
                "/heartbeat",
                Duration::from_millis(100),
            )
            .is_ok()
            {
                wins += 1;
            }
        }
        (tries, wins)
    });
    // restarts until the prober has made plenty of attempts across them
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        a.kill9();
        tokio::time::sleep(Duration::from_millis(100)).await;
        a.spawn().await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (tries, wins) = prober.join().unwrap();
    assert!(tries >= 10, "the prober ran ({tries} tries)");
    assert_eq!(wins, 0, "a stranger got through during restarts");
    assert!(reach(&central, &central_url));

    // someone flushes our chains: the drift check (every second) notices
    // and restores them (whether a probe could see the gap in between
    // depends on where in the second the flush lands, so it is not asserted)
    let restores = |metrics: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("hydra_firewall_drift_restores_total "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let metrics = || async {
        String::from_utf8(
            a.client
                .raw("GET", "/metrics", None)
                .await
                .unwrap()
                .1
                .to_vec(),
        )
        .unwrap()
    };
    let before = restores(&metrics().await);
    a.host.sh("iptables -F HYDRA-FORWARD && iptables -t nat -F HYDRA-DNAT && iptables -D INPUT -i docker0 -j HYDRA-INPUT");
    let t0 = Instant::now();
    eventually(10, "the drift counted and restored", async || {
        restores(&metrics().await) > before && reach(&central, &central_url)
    })
    .await;
    eprintln!("drift restored in {:?}", t0.elapsed());
    assert!(
        !reach(&stranger, &format!("10.99.2.1:{hp}")),
        "and the allowlist with them"
    );
    assert!(a.host.sh("iptables -S INPUT").contains("HYDRA-INPUT"));
    assert!(a.log().contains("restored"));
}
