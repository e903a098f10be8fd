//! Allocations under SIGKILLs mid-create: no address or host port handed
//! out twice across agent restarts, nothing left after removal; and the
//! long-lived iptables-restore reporting a bad transaction and recovering.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn allocations_never_handed_out_twice_across_restarts() {
    require_root!();
    let mut a = Agent::start("[network]\nport_range = \"21000-21300\"\n").await;
    let mut created = 0;
    // 200 creates across 10 agent restarts, 5 of them SIGKILLs mid-create
    for round in 0..10 {
        for i in 0..20 {
            let spec = serde_json::to_vec(&json!({"name": format!("r{round}-{i}"), "image": busybox(), "command": ["sleep", "100000"],
                                                  "ports": [{"container_port": 8080}]}))
            .unwrap();
            if i == 19 && round % 2 == 0 {
                // SIGKILL the agent in the middle of a create
                let c = a.client.clone();
                let t =
                    tokio::spawn(async move { c.raw("POST", "/v1/containers", Some(spec)).await });
                tokio::time::sleep(Duration::from_millis(3)).await;
                a.kill9();
                let _ = t.await;
            } else {
                let (st, body) = a
                    .client
                    .raw("POST", "/v1/containers", Some(spec))
                    .await
                    .unwrap();
                assert_eq!(st, 201, "{}", String::from_utf8_lossy(&body));
                created += 1;
            }
        }
        if a.child.is_some() {
            a.kill9();
        }
        a.spawn().await;
        // remove a few, so freed addresses and ports are in play
        let _ = a
            .client
            .raw(
                "DELETE",
                &format!("/v1/containers/r{round}-0?force=true"),
                None,
            )
            .await
            .unwrap();
    }
    let list: Vec<hydra_agent::api::ContainerInfo> =
        a.client.call("GET", "/v1/containers", None).await.unwrap();
    assert!(
        list.len() >= created - 10,
        "{} containers for {created} creates",
        list.len()
    );
    let mut ips: Vec<String> = list.iter().map(|c| c.ip.clone().unwrap()).collect();
    let mut ports: Vec<u16> = list.iter().map(|c| c.ports[0].host_port).collect();
    let (n_ips, n_ports) = (ips.len(), ports.len());
    ips.sort();
    ips.dedup();
    ports.sort();
    ports.dedup();
    assert_eq!(
        (ips.len(), ports.len()),
        (n_ips, n_ports),
        "no duplicate address or host port"
    );
    // every record's mapping is installed exactly once; nothing else is
    let nat = a.host.sh("iptables-save -t nat");
    let dnat: Vec<&str> = nat
        .lines()
        .filter(|l| l.starts_with("-A HYDRA-DNAT") && l.contains("-j DNAT"))
        .collect();
    assert_eq!(dnat.len(), list.len(), "{nat}");
    for c in &list {
        let hp = c.ports[0].host_port;
        assert_eq!(
            dnat.iter()
                .filter(|l| l.contains(&format!("--dport {hp} ")))
                .count(),
            1
        );
        // and the running ones answer on their address (their veth is plugged in)
        assert_eq!(c.state, "running");
    }
    let veths = a
        .host
        .sh("ip -o link show type veth")
        .lines()
        .filter(|l| l.contains(": hy") && l.contains(" master "))
        .count();
    assert_eq!(
        veths,
        list.len(),
        "one host veth in the bridge per container, none leaked"
    );
    // remove everything: nothing left
    for c in &list {
        let (st, _) = a
            .client
            .raw(
                "DELETE",
                &format!("/v1/containers/{}?force=true", c.name),
                None,
            )
            .await
            .unwrap();
        assert_eq!(st, 204);
    }
    let nat = a.host.sh("iptables-save -t nat");
    assert!(
        !nat.lines().any(|l| l.starts_with("-A HYDRA-DNAT")),
        "no DNAT or dispatch rule left: {nat}"
    );
    assert!(
        !nat.lines().any(|l| l.starts_with(":HYDRA-DNAT-")),
        "no bucket chain left: {nat}"
    );
    // (the namespace pool's veths wait down)
    eventually(10, "veths gone", async || {
        a.host
            .sh("ip -o link show type veth")
            .lines()
            .all(|l| !l.contains(": hy") || !l.contains(",UP"))
    })
    .await;
    let p: hydra_agent::api::PortsInfo = a.client.call("GET", "/v1/ports", None).await.unwrap();
    assert_eq!(p.free, 301);
}

/// The long-lived iptables-restore: a bad transaction fails with iptables'
/// own words and changes nothing; the next one works (a new child is started)
/// and is visible as soon as `apply` returns. In a network namespace of this
/// test's thread (the child inherits it).
#[test]
fn restorer_reports_errors_and_recovers() {
    require_root!();
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        use hydra_agent::network::restore::apply;
        let save = || {
            let out = std::process::Command::new("iptables-save")
                .args(["-t", "nat"])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        apply("*nat\n:HYDRA-T - [0:0]\n-A HYDRA-T -p tcp -m tcp --dport 1 -j ACCEPT\nCOMMIT\n")
            .expect("first");
        assert!(save().contains("-A HYDRA-T -p tcp -m tcp --dport 1 -j ACCEPT"));
        let err =
            apply("*nat\n-A HYDRA-T -p tcp --dport 2 -j ACCEPT\n-A HYDRA-NOPE -j ACCEPT\nCOMMIT\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("line 3 failed") && err.contains("(-A HYDRA-NOPE -j ACCEPT)"),
            "iptables-restore's words, with the failing line of this transaction: {err}"
        );
        assert!(
            !save().contains("--dport 2 "),
            "nothing of a failed transaction"
        );
        apply("*nat\n-A HYDRA-T -p tcp -m tcp --dport 3 -j ACCEPT\nCOMMIT\n")
            .expect("after a failure");
        assert!(save().contains("--dport 3 "));
        // two tables, one input: both committed before it returns
        apply("*filter\n:HYDRA-F - [0:0]\n-A HYDRA-F -j DROP\nCOMMIT\n*nat\n-F HYDRA-T\nCOMMIT\n")
            .expect("two blocks");
        assert!(!save().contains("-A HYDRA-T"));
    })
    .join()
    .unwrap();
}
