//! cgroup v2 limits enforced by a real kernel. These need a pure v2 host;
//! on this project's hybrid development hosts they skip with a reason, and
//! `scripts/test` runs them inside the QEMU VM (`scripts/vm --suite`) where
//! cgroup2 is mounted alone.

mod common;
use common::*;
use hydra_agent::cgroup::Mode;
use serde_json::json;
use std::time::{Duration, Instant};

macro_rules! require_v2 {
    () => {
        require_root!();
        if Agent::layout().mode != Mode::V2 {
            eprintln!("SKIPPED: needs pure cgroup v2 (runs inside scripts/vm --suite)");
            return;
        }
    };
}

fn cg_file(a: &Agent, name: &str, file: &str) -> String {
    let cg = Agent::layout().container(&a.parent, name);
    std::fs::read_to_string(cg.dir("").unwrap().join(file)).unwrap_or_default()
}

fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_kill_counted_in_its_own_cgroup_and_kills_the_whole_group() {
    require_v2!();
    let a = Agent::start("").await;
    a.run(json!({"name": "bystander", "image": busybox(), "limits": {"memory": "32Mi"}, "command": ["sleep", "100000"]})).await.unwrap();
    // helpers in the background, then a hog in a child: memory.oom.group takes them all
    a.run(json!({"name": "hog", "image": busybox(), "limits": {"memory": "32Mi"},
                 "command": ["sh", "-c", "sleep 300 & sleep 300 & (x=$(head -c 200000000 /dev/zero | tr '\\0' a)); echo survived; sleep 100000"]}))
        .await
        .unwrap();
    assert_eq!(cg_file(&a, "hog", "memory.oom.group").trim(), "1");
    let st = a.wait("hog").await;
    assert!(st.oom_killed, "{st:?}");
    assert_eq!(st.signal, Some(9), "pid 1 died with the group: {st:?}");
    assert!(!a.logs("hog").await.iter().any(|r| r.line == "survived"));
    let ev = cg_file(&a, "hog", "memory.events");
    assert!(keyed(&ev, "oom_kill") >= 1, "{ev}");
    assert!(keyed(&ev, "oom_group_kill") >= 1, "{ev}");
    assert_eq!(
        cg_file(&a, "hog", "cgroup.procs").trim(),
        "",
        "every process of the container is gone"
    );
    let other = cg_file(&a, "bystander", "memory.events");
    assert_eq!(
        keyed(&other, "oom_kill"),
        0,
        "only the hog's cgroup counts it: {other}"
    );
    assert_eq!(a.inspect("bystander").await.state, "running");
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_high_throttles_without_killing() {
    require_v2!();
    let a = Agent::start("").await;
    // 48 MiB of page cache through a 16 MiB memory.high: reclaimed, not killed
    a.run(json!({"name": "cache", "image": busybox(), "limits": {"memory": "64Mi", "memory_high": "16Mi"},
                 "command": ["sh", "-c", "dd if=/dev/zero of=/tmp/f bs=1M count=48 2>/dev/null; cat /tmp/f > /dev/null; echo done"]}))
        .await
        .unwrap();
    let info = a.inspect("cache").await;
    assert_eq!(info.limits.memory_high, Some(16 << 20));
    let st = a.wait("cache").await;
    assert_eq!((st.exit_code, st.oom_killed), (Some(0), false), "{st:?}");
    let ev = cg_file(&a, "cache", "memory.events");
    assert!(keyed(&ev, "high") > 0, "memory.high was hit: {ev}");
    assert_eq!(keyed(&ev, "oom_kill"), 0, "{ev}");
    assert!(a.logs("cache").await.iter().any(|r| r.line == "done"));
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_bomb_gets_eagain_and_the_rest_stays_responsive() {
    require_v2!();
    let a = Agent::start("").await;
    a.run(
        json!({"name": "bomb", "image": busybox(), "limits": {"pids": 20},
                 "command": ["sh", "-c", "while :; do sleep 30 & done 2>/dev/null"]}),
    )
    .await
    .unwrap();
    eventually(30, "pids.max reached", async || {
        keyed(&cg_file(&a, "bomb", "pids.events"), "max") > 0
    })
    .await;
    let cur: u64 = cg_file(&a, "bomb", "pids.current")
        .trim()
        .parse()
        .unwrap_or(99);
    assert!(cur <= 20, "pids.current {cur} stays at the limit");
    // another container starts and runs, the API answers
    let t0 = Instant::now();
    a.run(json!({"name": "neighbour", "image": busybox(), "command": ["sh", "-c", "echo alive"]}))
        .await
        .unwrap();
    assert_eq!(a.wait("neighbour").await.exit_code, Some(0));
    assert!(t0.elapsed() < Duration::from_secs(30));
    let host: hydra_agent::api::HostInfo = a.client.call("GET", "/v1/host", None).await.unwrap();
    assert_eq!(host.cgroup_mode, "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_weight_splits_a_contended_cpu_in_proportion() {
    require_v2!();
    let a = Agent::start("").await;
    let cpus = std::thread::available_parallelism().unwrap().get();
    // each container runs one busy loop per CPU, so the two compete for every CPU
    let spin = format!("for i in $(seq 1 {cpus}); do (while :; do :; done) & done; wait");
    a.run(json!({"name": "light", "image": busybox(), "limits": {"cpu_weight": 100}, "command": ["sh", "-c", spin]})).await.unwrap();
    a.run(json!({"name": "heavy", "image": busybox(), "limits": {"cpu_weight": 300}, "command": ["sh", "-c", spin]})).await.unwrap();
    // the window starts once every loop of both runs and both have used CPU
    for name in ["light", "heavy"] {
        eventually(30, "the loops spinning", async || {
            let s = a.stats(name).await;
            s.pids.current > cpus as u64 && s.cpu.usage_usec > 100_000
        })
        .await;
    }
    let (l0, h0) = (
        a.stats("light").await.cpu.usage_usec,
        a.stats("heavy").await.cpu.usage_usec,
    );
    // the window: until the two have used 3 CPU-seconds per CPU between
    // them (a few seconds idle; longer when the VM's CPUs are starved by
    // a busy host, whose preemptions of one vCPU blur short windows)
    let (mut l1, mut h1) = (l0, h0);
    let need = 3_000_000 * cpus as u64;
    eventually(60, "3 CPU-seconds per CPU used", async || {
        (l1, h1) = (
            a.stats("light").await.cpu.usage_usec,
            a.stats("heavy").await.cpu.usage_usec,
        );
        (l1 - l0) + (h1 - h0) >= need
    })
    .await;
    let ratio = (h1 - h0) as f64 / (l1 - l0).max(1) as f64;
    // equal weights would give 1.0
    assert!(
        (1.8..4.5).contains(&ratio),
        "weights 300:100 should split about 3:1, got {ratio:.3} ({} against {} us)",
        h1 - h0,
        l1 - l0
    );
    assert_eq!(cg_file(&a, "heavy", "cpu.weight").trim(), "300");
}

#[tokio::test(flavor = "multi_thread")]
async fn io_max_holds_direct_io_near_the_limit() {
    require_v2!();
    let a = Agent::start("").await;
    // 4 MiB written then read with O_DIRECT at 1 MiB/s each way: about 4 s
    // each; timed by the log records' timestamps (taken by the shim as lines arrive)
    a.run(json!({"name": "disk", "image": busybox(), "limits": {"io": {"read_bps": "1Mi", "write_bps": "1Mi"}},
                 "command": ["sh", "-c", "echo start; dd if=/dev/zero of=/data.bin bs=64k count=64 oflag=direct 2>/dev/null; \
                              echo written; dd if=/data.bin of=/dev/null bs=64k iflag=direct 2>/dev/null; echo read"]}))
        .await
        .unwrap();
    let max = cg_file(&a, "disk", "io.max");
    assert!(
        max.contains("rbps=1048576") && max.contains("wbps=1048576"),
        "{max}"
    );
    let st = a.wait("disk").await;
    assert_eq!(st.exit_code, Some(0));
    let logs = a.logs("disk").await;
    let ts: Vec<chrono::DateTime<chrono::Utc>> =
        logs.iter().map(|r| r.ts.parse().unwrap()).collect();
    assert_eq!(
        logs.iter().map(|r| r.line.as_str()).collect::<Vec<_>>(),
        vec!["start", "written", "read"]
    );
    let ms = [
        (ts[1] - ts[0]).num_milliseconds(),
        (ts[2] - ts[1]).num_milliseconds(),
    ];
    // 4 MiB at 1 MiB/s: the throttle allows a small initial burst, so >= 2.5 s, and not far slower than the limit
    for (what, t) in [("write", ms[0]), ("read", ms[1])] {
        assert!(
            t >= 2500,
            "direct {what} of 4 MiB took {t} ms: faster than 1 MiB/s"
        );
        assert!(
            t <= 8000,
            "direct {what} of 4 MiB took {t} ms: far below the limit"
        );
    }
    let stat = cg_file(&a, "disk", "io.stat");
    assert!(
        stat.contains("wbytes=") && stat.contains("rbytes="),
        "{stat}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_in_a_delegated_cgroup_moves_into_a_leaf_and_removal_leaves_nothing() {
    require_v2!();
    // like systemd's Delegate=yes: the agent starts alone in a cgroup of its own
    let own = std::path::PathBuf::from(format!(
        "/sys/fs/cgroup/hydra-test-delegated-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&own).unwrap();
    // what the service manager does for a delegated unit: controllers available to it
    std::fs::write(
        "/sys/fs/cgroup/cgroup.subtree_control",
        "+cpu +memory +pids +io",
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let sock = root.path().join("run/hydra-agent/agent.sock");
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec {} --root {}",
            own.display(),
            env!("CARGO_BIN_EXE_hydra-agent"),
            root.path().display()
        ))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let c = hydra_agent::api::client::Client::new(&sock);
    let res = async {
        eventually(20, "agent up", async || c.raw("GET", "/healthz", None).await.is_ok()).await;
        let cg = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
        assert!(cg.trim().ends_with(&format!("{}/agent", own.file_name().unwrap().to_string_lossy())), "{cg}");
        let ctl = std::fs::read_to_string(own.join("cgroup.subtree_control")).unwrap();
        for want in ["cpu", "memory", "pids", "io"] {
            assert!(ctl.split_whitespace().any(|c| c == want), "{want} enabled in {ctl}");
        }
        let spec = serde_json::to_vec(&json!({"name": "leafy", "image": busybox(), "command": ["sleep", "100000"], "limits": {"memory": "16Mi"}})).unwrap();
        let info: hydra_agent::api::ContainerInfo = c.call("POST", "/v1/containers", Some(spec)).await.unwrap();
        let dir = own.join("hydra/leafy");
        assert_eq!(info.cgroup, dir.display().to_string());
        assert_eq!(std::fs::read_to_string(dir.join("memory.max")).unwrap().trim(), (16u64 << 20).to_string());
        let pid = info.pid.unwrap();
        let (st, _) = c.raw("DELETE", "/v1/containers/leafy?force=true", None).await.unwrap();
        assert_eq!(st, 204);
        assert!(!dir.exists(), "cgroup removed");
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process gone");
        // the removal answers before the store's trash thread unmounts the layer
        let under = root.path().display().to_string();
        eventually(10, "no mount left on the host", async || {
            !std::fs::read_to_string("/proc/self/mountinfo").unwrap().contains(&under)
        })
        .await;
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    for d in [own.join("hydra"), own.join("agent"), own.clone()] {
        for _ in 0..100 {
            if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    res
}
