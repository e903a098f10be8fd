//! Limits enforced by the kernel, not just written: a memory hog OOM-killed,
//! a fork bomb held at `pids`, a busy loop near half a CPU, IO throttled on
//! the state disk.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn memory_hog_is_oom_killed() {
    require_root!();
    let a = Agent::start("").await;
    a.run(json!({"name": "hog", "image": busybox(), "limits": {"memory": "32Mi"},
                 "command": ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"]}))
        .await
        .unwrap();
    let st = a.wait("hog").await;
    assert!(st.oom_killed, "{st:?}");
    assert_eq!(st.signal, Some(9));
    assert!(!a.logs("hog").await.iter().any(|r| r.line == "survived"));
    assert!(a.inspect("hog").await.oom_killed);
    assert!(a.stats("hog").await.memory.oom_kill >= 1);
    // a container that stays under its limit is not flagged
    a.run(json!({"name": "fine", "image": busybox(), "limits": {"memory": "32Mi"}, "command": ["true"]})).await.unwrap();
    let st = a.wait("fine").await;
    assert_eq!((st.exit_code, st.oom_killed), (Some(0), false));
}

#[tokio::test(flavor = "multi_thread")]
async fn fork_bomb_stops_at_pids() {
    require_root!();
    let a = Agent::start("").await;
    a.run(json!({"name": "bomb", "image": busybox(), "limits": {"pids": 16},
                 "command": ["sh", "-c", "trap '' TERM; for i in $(seq 1 100); do sleep 60 & done; echo unreachable"]}))
        .await
        .unwrap();
    let st = a.wait("bomb").await;
    assert_ne!(st.exit_code, Some(0));
    let logs = a.logs("bomb").await;
    assert!(
        logs.iter()
            .any(|r| r.stream == "stderr" && r.line.contains("can't fork")),
        "{logs:?}"
    );
    assert!(!logs.iter().any(|r| r.line == "unreachable"));
    let s = a.stats("bomb").await;
    assert!(
        s.pids.limit_hits >= 1,
        "pids.events max counted: {:?}",
        s.pids
    );
    assert_eq!(s.pids.max, Some(16));
    // the agent stays responsive
    let (st, _) = a.client.raw("GET", "/v1/host", None).await.unwrap();
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_loop_held_near_half_a_cpu() {
    require_root!();
    let a = Agent::start("").await;
    a.run(json!({"name": "spin", "image": busybox(), "limits": {"cpus": 0.5}, "command": ["sh", "-c", "while :; do :; done"]}))
        .await
        .unwrap();
    // the window starts once the loop spins (it has used CPU time)
    eventually(30, "the loop spinning", async || {
        a.stats("spin").await.cpu.usage_usec > 100_000
    })
    .await;
    let s0 = a.stats("spin").await;
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s1 = a.stats("spin").await;
    let cpus = (s1.cpu.usage_usec - s0.cpu.usage_usec) as f64 / t0.elapsed().as_micros() as f64;
    assert!(cpus < 0.6, "a busy loop under cpus=0.5 used {cpus:.2} CPUs");
    assert!(
        cpus > 0.3,
        "a busy loop under cpus=0.5 used only {cpus:.2} CPUs"
    );
    assert!(
        s1.cpu.nr_throttled > s0.cpu.nr_throttled,
        "throttled: {:?}",
        s1.cpu
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn io_limits_apply_to_the_state_disk() {
    require_root!();
    let a = Agent::start("").await;
    let info = a
        .run(
            json!({"name": "io", "image": busybox(), "command": ["sleep", "60"],
                    "limits": {"io": {"read_bps": "10Mi", "write_bps": "5Mi"}}}),
        )
        .await
        .unwrap();
    let (maj, min) =
        hydra_agent::cgroup::block_device_of(&a.state(), std::path::Path::new("/sys")).unwrap();
    assert_eq!(info.limits.io.len(), 1, "{:?}", info.limits);
    assert_eq!(info.limits.io[0].device, format!("{maj}:{min}"));
    assert_eq!(info.limits.io[0].read_bps, Some(10 << 20));
    assert_eq!(info.limits.io[0].write_bps, Some(5 << 20));
    let l = Agent::layout();
    let file = match l.mode {
        hydra_agent::cgroup::Mode::V2 => read_cg(&l, &a.parent, "io", "io", "io.max"),
        hydra_agent::cgroup::Mode::Hybrid => read_cg(
            &l,
            &a.parent,
            "io",
            "blkio",
            "blkio.throttle.read_bps_device",
        ),
    };
    assert!(
        file.contains(&format!("{maj}:{min}")) && file.contains(&(10u64 << 20).to_string()),
        "{file}"
    );
}

/// Runtimes (the JVM, Node, Go, .NET) read their limits from
/// /sys/fs/cgroup: the container's own cgroup is there, read-only, on both
/// cgroup modes, and nothing of other containers; /etc/hosts always exists.
#[tokio::test(flavor = "multi_thread")]
async fn a_container_sees_its_own_limits_in_sys_fs_cgroup() {
    require_root!();
    let a = Agent::start("[network]\nenabled = false\n").await;
    a.run(json!({"name": "other", "image": busybox(), "command": ["sleep", "100000"]}))
        .await
        .unwrap();
    let script = "cat /proc/self/cgroup; echo ---; ls /sys/fs/cgroup; echo ---; \
        for f in memory/memory.limit_in_bytes memory.max cpu/cpu.cfs_quota_us cpu.max pids/pids.max pids.max; do \
          [ -e /sys/fs/cgroup/$f ] && echo \"$f=$(cat /sys/fs/cgroup/$f)\"; done; \
        echo ---; ls /sys/fs/cgroup/memory /sys/fs/cgroup 2>/dev/null | grep -c other; \
        (echo 1 > /sys/fs/cgroup/pids/pids.max || echo 1 > /sys/fs/cgroup/pids.max) 2>/dev/null && echo WROTE; \
        echo ---; cat /etc/hosts";
    let out = output(
        &a,
        "seer",
        json!({"image": busybox(), "limits": {"memory": "64Mi", "cpus": 0.5, "pids": 77},
               "command": ["sh", "-c", script]}),
    )
    .await;
    let text = out.join("\n");
    let parts: Vec<&str> = text.split("---").collect();
    // in its cgroup namespace, its cgroup is the root
    assert!(
        parts[0]
            .lines()
            .filter(|l| !l.is_empty())
            .all(|l| l.ends_with(":/")),
        "{text}"
    );
    let has = |k: &str| parts[2].lines().any(|l| l.trim() == k);
    match Agent::layout().mode {
        hydra_agent::cgroup::Mode::Hybrid => {
            assert!(
                parts[1].contains("memory") && parts[1].contains("pids"),
                "{text}"
            );
            assert!(has("memory/memory.limit_in_bytes=67108864"), "{text}");
            assert!(has("cpu/cpu.cfs_quota_us=50000"), "{text}");
            assert!(has("pids/pids.max=77"), "{text}");
            assert!(
                !parts[1].contains("devices"),
                "the shared devices cgroup is not shown: {text}"
            );
        }
        hydra_agent::cgroup::Mode::V2 => {
            assert!(has("memory.max=67108864"), "{text}");
            assert!(has("cpu.max=50000 100000"), "{text}");
            assert!(has("pids.max=77"), "{text}");
        }
    }
    assert_eq!(
        parts[3].lines().find(|l| !l.is_empty()),
        Some("0"),
        "no other container in sight: {text}"
    );
    assert!(!text.contains("WROTE"), "read-only: {text}");
    assert!(
        parts[4].contains("127.0.0.1\tlocalhost") && parts[4].contains("\tseer"),
        "{text}"
    );
}
