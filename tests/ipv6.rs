//! No IPv6 side door: a container reaches no host service over IPv6, not
//! through the bridge's link-local address nor any other address the host
//! has, also when IPv6 is turned on in its namespace from outside (then the
//! ip6tables chains drop it), and across an agent SIGKILL and restart.

mod common;
use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// A host service on `[::]:port` (dual stack) in the test host, counting
/// the connections it accepts until `stop`.
fn listen_v6(netns: PathBuf, port: u16) -> (Arc<AtomicUsize>, Arc<AtomicBool>) {
    let (n, stop) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (n2, stop2) = (n.clone(), stop.clone());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ns = std::fs::File::open(netns).unwrap();
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let l = std::net::TcpListener::bind(("::", port)).unwrap();
        l.set_nonblocking(true).unwrap();
        ready_tx.send(()).unwrap();
        while !stop2.load(Ordering::Relaxed) {
            match l.accept() {
                Ok(_) => {
                    n2.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    });
    ready_rx.recv().unwrap();
    (n, stop)
}

/// The bridge's IPv6 link-local address.
fn link_local(a: &Agent, dev: &str) -> String {
    let out = a
        .host
        .sh(&format!("ip -6 -o addr show dev {dev} scope link"));
    out.split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no link-local address on {dev}: {out}"))
        .to_string()
}

/// Runs a container that, once /dev/shm/go exists, tries each target and
/// says whether it connected.
async fn prober(a: &Agent, name: &str, targets: &[String]) -> i32 {
    let tries: Vec<String> = targets
        .iter()
        .map(|t| format!("if nc -w 2 {t} 9999 </dev/null; then echo CONNECTED {t}; else echo refused {t}; fi"))
        .collect();
    let script = format!(
        "while [ ! -e /dev/shm/go ]; do usleep 20000; done; {}; echo done",
        tries.join("; ")
    );
    let c = a
        .run(json!({"name": name, "image": busybox(), "command": ["sh", "-c", script]}))
        .await
        .unwrap();
    c.pid.unwrap()
}

async fn probe(a: &Agent, name: &str, pid: i32) -> String {
    std::fs::write(format!("/proc/{pid}/root/dev/shm/go"), b"1").unwrap();
    a.wait(name).await;
    a.logs(name)
        .await
        .into_iter()
        .map(|r| r.line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Turns IPv6 on in a container's network namespace from outside and
/// waits until its link-local address is usable.
fn enable_ipv6(pid: i32) {
    let ns = |cmd: &str| {
        std::process::Command::new("nsenter")
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .args(["sh", "-c", cmd])
            .output()
            .unwrap()
    };
    ns("echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = String::from_utf8_lossy(&ns("ip -6 -o addr show dev eth0 scope link").stdout)
            .into_owned();
        if out.contains("fe80") && !out.contains("tentative") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no link-local address: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn containers_reach_no_host_service_over_ipv6() {
    require_root!();
    let mut a = Agent::start("").await;
    let (accepted, stop) = listen_v6(a.host.netns(), 9999);
    a.host.sh("ip -6 addr add fd00:99::1/64 dev docker0 nodad");
    let ll = link_local(&a, "docker0");
    let targets = vec![
        format!("{ll}%eth0"),
        "fd00:99::1".to_string(),
        "::1".to_string(),
    ];

    // no IPv6 on the container's interface at all
    let p1 = prober(&a, "p1", &targets).await;
    let v6 = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{p1}/ns/net"))
        .args(["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v6.stdout).trim(),
        "1",
        "IPv6 disabled on eth0"
    );
    // nor on the host's end of its veth (no link-local route per container)
    let ends = a.host.sh("ip -o link show type veth");
    let names: Vec<&str> = ends
        .lines()
        .filter_map(|l| l.split(": ").nth(1)?.split('@').next())
        .collect();
    assert!(!names.is_empty(), "{ends}");
    for n in names {
        let addrs = a.host.sh(&format!("ip -6 -o addr show dev {n}"));
        assert!(
            addrs.trim().is_empty(),
            "IPv6 on the host's end {n}: {addrs}"
        );
    }
    let out = probe(&a, "p1", p1).await;
    assert!(!out.contains("CONNECTED"), "{out}");

    // IPv6 turned on from outside: the firewall still drops it
    let p2 = prober(&a, "p2", &targets[..1]).await;
    enable_ipv6(p2);
    let out = probe(&a, "p2", p2).await;
    assert!(
        out.contains("refused") && !out.contains("CONNECTED"),
        "{out}"
    );

    // and while the agent is down (SIGKILL), and after its restart
    let p3 = prober(&a, "p3", &targets[..1]).await;
    a.kill9();
    enable_ipv6(p3);
    std::fs::write(format!("/proc/{p3}/root/dev/shm/go"), b"1").unwrap();
    eventually(20, "p3 probed while the agent was down", async || {
        !std::path::Path::new(&format!("/proc/{p3}")).exists()
    })
    .await;
    a.spawn().await;
    let out = probe_done(&a, "p3").await;
    assert!(
        out.contains("refused") && !out.contains("CONNECTED"),
        "{out}"
    );
    let p4 = prober(&a, "p4", &targets[..1]).await;
    enable_ipv6(p4);
    let out = probe(&a, "p4", p4).await;
    assert!(
        out.contains("refused") && !out.contains("CONNECTED"),
        "{out}"
    );
    stop.store(true, Ordering::Relaxed);
    assert_eq!(
        accepted.load(Ordering::Relaxed),
        0,
        "the host service was reached"
    );
    assert!(a.host.sh("ip6tables -S INPUT").contains("HYDRA-INPUT"));
}

async fn probe_done(a: &Agent, name: &str) -> String {
    a.wait(name).await;
    a.logs(name)
        .await
        .into_iter()
        .map(|r| r.line)
        .collect::<Vec<_>>()
        .join("\n")
}
