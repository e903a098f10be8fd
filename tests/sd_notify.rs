//! systemd's notify protocol, spoken to a datagram socket the test owns
//! (what systemd does for `Type=notify`): `READY=1` only once the API
//! answers, `STATUS=` with the container counts, `WATCHDOG=1` while the
//! agent's health check passes and never while it fails (its directory of
//! records replaced), again once it passes. The booted-Debian VM test
//! (scripts/vm --boot) checks the same against systemd itself.

mod common;
use common::*;
use serde_json::json;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// Datagrams received so far, polled with a deadline.
struct Notify {
    sock: UnixDatagram,
    seen: Vec<String>,
}

impl Notify {
    fn take(&mut self) -> Vec<String> {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.sock.recv(&mut buf) {
            self.seen
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        std::mem::take(&mut self.seen)
    }

    /// Waits for a datagram containing `what`; returns it and those before.
    fn wait_for(&mut self, secs: u64, what: &str) -> Vec<String> {
        let deadline = Instant::now() + scaled(secs);
        let mut all = Vec::new();
        loop {
            all.extend(self.take());
            if all.iter().any(|m| m.contains(what)) {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "no {what:?} from the agent within {secs}s; got {all:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_status_and_a_watchdog_tied_to_health() {
    require_root!();
    let mut a = Agent::unstarted(Host::new(), "", None);
    let path = a.root.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut n = Notify { sock, seen: vec![] };
    let log = std::fs::File::create(a.root.path().join("agent.log")).unwrap();
    // WATCHDOG_PID is the agent's own pid: the shell execs into it
    let child = a
        .host
        .command("sh")
        .arg("-c")
        .arg("export WATCHDOG_PID=$$; exec \"$@\"")
        .arg("sh")
        .arg(&a.bin)
        .arg("--root")
        .arg(a.root.path())
        .arg("--config")
        .arg(&a.config)
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    a.child = Some(child);

    let first = n.wait_for(30, "READY=1");
    let ready = first.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains("STATUS=0 containers"), "{ready}");
    // ready means serving: the socket answers at once
    let (st, _) = a.client.raw("GET", "/healthz", None).await.unwrap();
    assert_eq!(st, 200);
    n.wait_for(10, "WATCHDOG=1");
    n.wait_for(10, "WATCHDOG=1");

    a.run(json!({"name": "w", "image": busybox(), "command": ["sleep", "1000"]}))
        .await
        .unwrap();
    n.wait_for(10, "STATUS=1 containers: 1 running");

    // the records' directory replaced: the health check fails, no ping
    let containers = a.state().join("containers");
    let moved = a.state().join("containers.away");
    std::fs::rename(&containers, &moved).unwrap();
    std::fs::create_dir(&containers).unwrap();
    eventually(10, "the health check fails", async || {
        a.log().contains("health check failed")
    })
    .await;
    n.take();
    let failures = |a: &Agent| a.log().matches("health check failed").count();
    let seen = failures(&a);
    eventually(10, "two more failed checks", async || {
        failures(&a) >= seen + 2
    })
    .await;
    let during = n.take();
    assert!(
        !during.iter().any(|m| m.contains("WATCHDOG=1")),
        "pinged while unhealthy: {during:?}"
    );
    // back: pings resume, the container never noticed
    std::fs::remove_dir(&containers).unwrap();
    std::fs::rename(&moved, &containers).unwrap();
    n.wait_for(10, "WATCHDOG=1");
    assert_eq!(a.inspect("w").await.state, "running");

    // SIGTERM: STOPPING=1, the container keeps running
    assert!(a.term().success());
    n.wait_for(10, "STOPPING=1");
}
