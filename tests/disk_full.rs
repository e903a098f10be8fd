//! A full disk costs log lines, counted, never a tenant's process: the
//! agent's state on a small ext4 loop filesystem (mounted in the test
//! host's mount namespace) is filled up while containers run and log.

mod common;
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};

/// A path of the test host's mount namespace, seen from here.
fn inside(a: &Agent, p: &Path) -> PathBuf {
    PathBuf::from(format!("/proc/{}/root{}", a.host.pid(), p.display()))
}

fn counter(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/root/dev/shm/n"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_costs_log_lines_never_processes() {
    require_root!();
    // the VM carries no e2fsprogs; the host suite (CI) has them
    if lacks("mkfs.ext4", "-V") {
        return;
    }
    let shipping = !lacks("rsyslogd", "-v");
    let img = tempfile::NamedTempFile::new().unwrap();
    img.as_file().set_len(64 << 20).unwrap();
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0"])
        .arg(img.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = match shipping {
        true => format!("[collector]\nrelp = \"{RELP}\"\nlog_rate_lines = 0\n"),
        false => String::new(),
    };
    let mut a = Agent::unstarted(Host::new(), &cfg, None);
    let state = a.state();
    a.host.sh(&format!(
        "mkdir -p {s} && mount -o loop {i} {s}",
        s = state.display(),
        i = img.path().display()
    ));
    a.spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let mut rs = Rsyslog::new(dir.path());
    if shipping {
        rs.start(&a);
    }
    let ticker = a
        .run(
            json!({"name": "ticker", "image": busybox(), "command": ["sh", "-c",
            "i=0; while true; do i=$((i+1)); echo n=$i; echo $i > /dev/shm/n; usleep 5000; done"]}),
        )
        .await
        .unwrap();
    let waiter = a
        .run(
            json!({"name": "waiter", "image": busybox(), "command": ["sh", "-c",
            "while [ ! -e /dev/shm/go ]; do usleep 20000; done; exit 7"]}),
        )
        .await
        .unwrap();
    let (tpid, wpid) = (ticker.pid.unwrap(), waiter.pid.unwrap());
    eventually(20, "ticker logging", async || {
        a.logs("ticker").await.len() > 20
    })
    .await;

    // fill the filesystem to the last block
    let s = state.display();
    a.host.sh(&format!("dd if=/dev/zero of={s}/filler bs=1M 2>/dev/null; dd if=/dev/zero of={s}/filler2 bs=4k 2>/dev/null; true"));
    let n0 = counter(tpid);
    eventually(
        30,
        "the ticker goes on while the disk is full",
        async || counter(tpid) > n0 + 200,
    )
    .await;
    assert_eq!(a.inspect("ticker").await.state, "running");
    // a create cannot be stored: 507 naming the filesystem, nothing left
    let spec = json!({"name": "late", "image": busybox(), "command": ["true"]});
    let (st, body) = a
        .client
        .raw(
            "POST",
            "/v1/containers",
            Some(serde_json::to_vec(&spec).unwrap()),
        )
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(st, 507, "{body}");
    assert!(
        body.contains("no_space") && body.contains(&s.to_string()),
        "{body}"
    );
    assert!(!inside(&a, &state.join("containers/late")).exists());
    assert!(!Agent::layout()
        .children(&a.parent)
        .contains(&"late".to_string()));
    // an exit while the disk is full: reported now, written when it can be
    std::fs::write(format!("/proc/{wpid}/root/dev/shm/go"), b"1").unwrap();
    assert_eq!(a.wait("waiter").await.exit_code, Some(7));

    // space comes back: the log resumes, the lost lines counted in a note
    a.host.sh(&format!("rm -f {s}/filler {s}/filler2"));
    let mut recs = Vec::new();
    eventually(30, "a note of the lines lost", async || {
        recs = a.logs("ticker").await;
        recs.iter().any(|r| r.stream == "hydra")
            && recs.last().is_some_and(|r| r.stream == "stdout")
    })
    .await;
    let lost: u64 = recs.iter().filter_map(|r| r.dropped).sum();
    let seen: Vec<u64> = recs
        .iter()
        .filter_map(|r| r.line.strip_prefix("n=")?.parse().ok())
        .collect();
    let last = *seen.last().unwrap();
    assert!(lost > 0, "lines were lost while the disk was full");
    assert_eq!(
        last - seen.len() as u64,
        lost,
        "every number not in the log is counted in a note"
    );
    for w in recs.windows(2) {
        let gap = w[1].seq - w[0].seq - 1;
        assert_eq!(gap, w[1].dropped.unwrap_or(0), "{:?} {:?}", w[0], w[1]);
    }
    assert_eq!(
        a.inspect("ticker").await.pid,
        Some(tpid),
        "the same process"
    );
    let rec = inside(&a, &state.join("containers/waiter/container.json"));
    eventually(20, "the exit written once there is room", async || {
        std::fs::read_to_string(&rec).is_ok_and(|t| t.contains("\"exit_code\": 7"))
    })
    .await;
    if shipping {
        let dropped = |text: &str| -> u64 {
            text.lines()
                .find(|l| {
                    l.starts_with("hydra_log_records_dropped_total{")
                        && l.contains("container=\"ticker\"")
                        && l.contains("reason=\"disk_full\"")
                })
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0)
        };
        eventually(30, "the loss counted by the shipper", async || {
            let (_, body) = a.client.raw("GET", "/metrics", None).await.unwrap();
            dropped(&String::from_utf8_lossy(&body)) == lost
        })
        .await;
        eventually(30, "and announced", async || {
            rs.received().iter().any(|(id, _, m)| {
                id == "event" && m.contains("logs_dropped") && m.contains("disk_full")
            })
        })
        .await;
        rs.stop();
    }
    a.run(spec).await.unwrap();
}
