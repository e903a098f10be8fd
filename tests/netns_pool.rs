//! Network namespaces made ahead (`agent.netns_pool`, default 4): each
//! container gets a namespace of its own, never one another had; the pool's
//! veths wait down, already isolated ports of the bridge (a down port
//! forwards nothing); a killed helper is replaced
//! and costs no start; nothing of the pool outlives the agent.

mod common;
use common::*;
use serde_json::json;

/// The host's veth ends: (name, in the bridge, up).
fn veths(a: &Agent) -> Vec<(String, bool, bool)> {
    a.host
        .sh("ip -o link show type veth")
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?.split('@').next()?.to_string();
            Some((name, l.contains("master docker0"), l.contains(",UP")))
        })
        .collect()
}

/// Pool entries waiting: veths down, in the bridge.
fn waiting(a: &Agent) -> usize {
    veths(a).iter().filter(|(_, br, up)| *br && !up).count()
}

/// Whether the bridge port `name` is isolated (talks to the host only).
fn isolated(a: &Agent, name: &str) -> bool {
    a.host
        .sh(&format!("ip -d -o link show dev {name}"))
        .contains("isolated on")
}

/// Pids of processes named `comm` below `ancestor`.
fn descendants_named(ancestor: i32, comm: &str) -> Vec<i32> {
    let parent = |pid: i32| -> Option<i32> {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        s.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm)
        })
        .filter(|p| {
            let mut cur = *p;
            while let Some(pp) = parent(cur).filter(|pp| *pp > 1) {
                if pp == ancestor {
                    return true;
                }
                cur = pp;
            }
            false
        })
        .collect()
}

fn netns_of(pid: i32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .unwrap()
        .display()
        .to_string()
}

async fn sleeper(a: &Agent, name: &str) -> ContainerInfo {
    a.run(json!({"name": name, "image": busybox(), "command": ["sleep", "1000"]}))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn namespaces_made_ahead_are_used_once_and_leave_nothing() {
    require_root!();
    let mut a = Agent::start("").await;
    let first = sleeper(&a, "c0").await;
    eventually(30, "4 namespaces waiting in the pool", async || {
        waiting(&a) == 4
    })
    .await;
    let helpers = descendants_named(a.agent_pid(), "hydra-netpool");
    assert_eq!(helpers.len(), 1, "{helpers:?}");
    // waiting ports are isolated already, and none is anywhere but down in
    // the bridge
    let all = veths(&a);
    for (n, br, _) in &all {
        assert!(isolated(&a, n), "{n} is not an isolated port");
        assert!(br, "{n} is outside the bridge");
    }
    assert_eq!(
        all.iter().filter(|v| v.2).count(),
        1,
        "only c0's is up: {all:?}"
    );

    // each container in a namespace of its own, its eth0 addressed and its
    // host end in the bridge; the pool refills
    let mut seen = vec![netns_of(first.pid.unwrap())];
    for i in 1..6 {
        eventually(30, "an entry waiting", async || waiting(&a) > 0).await;
        let pooled: Vec<String> = veths(&a)
            .into_iter()
            .filter(|(_, br, up)| *br && !up)
            .map(|v| v.0)
            .collect();
        let c = sleeper(&a, &format!("c{i}")).await;
        // its host end is one the pool made ahead
        assert!(
            veths(&a)
                .iter()
                .any(|(n, br, up)| *br && *up && pooled.contains(n)),
            "container c{i} did not take a pooled namespace"
        );
        let ns = netns_of(c.pid.unwrap());
        assert!(!seen.contains(&ns), "namespace {ns} used twice");
        seen.push(ns);
        let ip = c.ip.clone().expect("an address");
        let addr = std::process::Command::new("nsenter")
            .arg(format!("--net=/proc/{}/ns/net", c.pid.unwrap()))
            .args(["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&addr.stdout).contains(&format!("{ip}/")));
    }
    eventually(30, "the pool refilled", async || waiting(&a) == 4).await;
    assert_eq!(veths(&a).iter().filter(|(_, br, up)| *br && *up).count(), 6);

    // a killed helper: starts go on, a new helper refills the pool
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helpers[0]),
        nix::sys::signal::SIGKILL,
    )
    .unwrap();
    for i in 6..12 {
        let c = sleeper(&a, &format!("c{i}")).await;
        assert!(!seen.contains(&netns_of(c.pid.unwrap())));
        seen.push(netns_of(c.pid.unwrap()));
    }
    eventually(30, "a new helper", async || {
        let h = descendants_named(a.agent_pid(), "hydra-netpool");
        h.len() == 1 && h[0] != helpers[0]
    })
    .await;
    eventually(30, "the pool refilled by it", async || waiting(&a) == 4).await;

    // the agent goes: the pool's namespaces and veths go with it (the
    // containers' stay)
    a.term();
    eventually(30, "no pool veth left", async || waiting(&a) == 0).await;
    assert_eq!(
        veths(&a).iter().filter(|(_, br, up)| *br && *up).count(),
        12
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_pool_each_start_makes_its_namespace() {
    require_root!();
    let a = Agent::start("[agent]\nnetns_pool = 0\n").await;
    let c = sleeper(&a, "solo").await;
    assert!(c.ip.is_some());
    assert_eq!(waiting(&a), 0);
    assert!(descendants_named(a.agent_pid(), "hydra-netpool").is_empty());
}
