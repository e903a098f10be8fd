//! Root integration tests of the container lifecycle against the real kernel.

mod common;
use common::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn lifecycle_limits_and_heartbeat() {
    require_root!();
    let a = Agent::start("").await;
    let info = a
        .run(
            json!({"name": "app1-v2-0", "app": "app1", "version": "v2", "image": demo(),
                    "limits": {"memory": "64Mi", "cpus": 0.5, "pids": 64, "cpu_weight": 200}}),
        )
        .await
        .expect("create");
    assert_eq!(info.state, "running");
    let pid = info.pid.expect("pid");
    // limits as the kernel holds them
    let l = Agent::layout();
    let host: hydra_agent::api::HostInfo = a.client.call("GET", "/v1/host", None).await.unwrap();
    assert_eq!(
        host.cgroup_mode,
        l.mode.as_str(),
        "v2 in the VM, hybrid on the development hosts"
    );
    assert_eq!(info.limits.memory, Some(64 << 20));
    assert_eq!(info.limits.pids, Some(64));
    assert_eq!(info.limits.cpus, Some(0.5));
    match l.mode {
        hydra_agent::cgroup::Mode::V2 => {
            assert_eq!(
                read_cg(&l, &a.parent, "app1-v2-0", "memory", "memory.max"),
                (64u64 << 20).to_string()
            );
            assert_eq!(
                read_cg(&l, &a.parent, "app1-v2-0", "cpu", "cpu.max"),
                "50000 100000"
            );
            assert_eq!(
                read_cg(&l, &a.parent, "app1-v2-0", "cpu", "cpu.weight"),
                "200"
            );
            assert_eq!(
                read_cg(&l, &a.parent, "app1-v2-0", "memory", "memory.oom.group"),
                "1"
            );
        }
        hydra_agent::cgroup::Mode::Hybrid => {
            assert_eq!(
                read_cg(
                    &l,
                    &a.parent,
                    "app1-v2-0",
                    "memory",
                    "memory.limit_in_bytes"
                ),
                (64u64 << 20).to_string()
            );
            assert_eq!(
                read_cg(&l, &a.parent, "app1-v2-0", "cpu", "cpu.cfs_quota_us"),
                "50000"
            );
            assert_eq!(
                info.limits.cpu_shares,
                Some(hydra_agent::cgroup::shares_from_weight(200))
            );
        }
    }
    assert_eq!(
        read_cg(&l, &a.parent, "app1-v2-0", "pids", "pids.max"),
        "64"
    );
    let procs = read_cg(&l, &a.parent, "app1-v2-0", "memory", "cgroup.procs");
    assert!(
        procs.lines().any(|p| p == pid.to_string()),
        "container pid in its cgroup: {procs}"
    );
    // namespaces: not the host's
    for ns in ["mnt", "pid", "net", "uts", "ipc", "cgroup"] {
        let mine = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        assert_ne!(mine, theirs, "{ns} namespace must be new");
    }
    // the app answers its heartbeat inside its network namespace
    eventually(10, "heartbeat", async || {
        hydra_agent::runtime::probe::probe(pid, 8080, "/heartbeat", Duration::from_secs(1)).is_ok()
    })
    .await;
    // the image's env and hostname reached the process
    let env = String::from_utf8(std::fs::read(format!("/proc/{pid}/environ")).unwrap()).unwrap();
    assert!(
        env.contains("PORT=8080") && env.contains("HOSTNAME=app1-v2-0"),
        "{env}"
    );
    // the agent's own filesystem is not visible inside
    let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
    assert_eq!(root, std::path::Path::new("/"));
    assert!(!std::path::Path::new(&format!("/proc/{pid}/root{}", a.state().display())).exists());
    assert!(std::path::Path::new(&format!("/proc/{pid}/root/dev/null")).exists());

    // list, stop (SIGTERM is ignored by the app as pid 1, so SIGKILL after 1 s)
    let list: Vec<hydra_agent::api::ContainerInfo> =
        a.client.call("GET", "/v1/containers", None).await.unwrap();
    assert_eq!(list.len(), 1);
    let stopped: hydra_agent::api::ContainerInfo = a
        .client
        .call("POST", "/v1/containers/app1-v2-0/stop?timeout=1", None)
        .await
        .unwrap();
    assert_eq!(stopped.state, "exited");
    assert_eq!(stopped.signal, Some(9));
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    // start again, then remove with force
    let again: hydra_agent::api::ContainerInfo = a
        .client
        .call("POST", "/v1/containers/app1-v2-0/start", None)
        .await
        .unwrap();
    assert_eq!(again.state, "running");
    assert_ne!(again.pid, Some(pid));
    let (st, _) = a
        .client
        .raw("DELETE", "/v1/containers/app1-v2-0", None)
        .await
        .unwrap();
    assert_eq!(st, 409, "a running container is not removed without force");
    let (st, _) = a
        .client
        .raw("DELETE", "/v1/containers/app1-v2-0?force=true", None)
        .await
        .unwrap();
    assert_eq!(st, 204);
    assert!(l.children(&a.parent).is_empty(), "cgroup removed");
    assert!(
        !a.state().join("containers/app1-v2-0").exists(),
        "state removed"
    );
    let (st, _) = a
        .client
        .raw("GET", "/v1/containers/app1-v2-0", None)
        .await
        .unwrap();
    assert_eq!(st, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn survives_agent_sigkill_without_losing_output() {
    require_root!();
    let mut a = Agent::start("").await;
    a.run(json!({"name": "counter", "image": busybox(),
                 "command": ["sh", "-c", "i=0; while [ $i -lt 300 ]; do echo $i; i=$((i+1)); sleep 0.01; done; exit 3"]}))
        .await
        .unwrap();
    let pid = a.inspect("counter").await.pid.unwrap();
    eventually(30, "some output before the agent dies", async || {
        a.logs("counter").await.len() >= 20
    })
    .await;
    a.kill9();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container survives the agent"
    );
    // the agent stays away for a while (a fault window, not a wait for
    // something): the container goes on printing meanwhile
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.spawn().await;
    let info = a.inspect("counter").await;
    assert!(
        info.state == "running" || info.exit_code == Some(3),
        "{info:?}"
    );
    let st = a.wait("counter").await;
    assert_eq!(st.exit_code, Some(3));
    let nums: Vec<u32> = a
        .logs("counter")
        .await
        .iter()
        .filter(|r| r.stream == "stdout")
        .map(|r| r.line.parse().unwrap())
        .collect();
    assert_eq!(nums, (0..300).collect::<Vec<_>>(), "every number, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_while_agent_is_down_is_recorded() {
    require_root!();
    let mut a = Agent::start("").await;
    a.run(json!({"name": "brief", "image": busybox(), "command": ["sh", "-c", "sleep 0.5; echo bye; exit 7"]})).await.unwrap();
    a.run(json!({"name": "stays", "image": busybox(), "command": ["sleep", "100000"]}))
        .await
        .unwrap();
    let stays_pid = a.inspect("stays").await.pid.unwrap();
    a.kill9();
    let root = a.root.path().to_path_buf();
    // wait (poll) until the short container's shim has written its status and gone
    eventually(20, "the brief container's exit file", async || {
        root.join("var/lib/hydra-agent/containers/brief/exit.json")
            .exists()
    })
    .await;
    a.spawn().await;
    let st = a.wait("brief").await;
    assert_eq!(st.exit_code, Some(7));
    let info = a.inspect("stays").await;
    assert_eq!(
        (info.state.as_str(), info.pid),
        ("running", Some(stays_pid)),
        "re-adopted, untouched"
    );
    assert!(a.logs("brief").await.iter().any(|r| r.line == "bye"));
    // the re-adopted container is still managed: stop works
    let st: hydra_agent::api::ContainerInfo = a
        .client
        .call("POST", "/v1/containers/stays/stop?timeout=1", None)
        .await
        .unwrap();
    assert_eq!(st.state, "exited");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_leaves_containers_running() {
    require_root!();
    let mut a = Agent::start("").await;
    a.run(json!({"name": "bg", "image": busybox(), "command": ["sleep", "100000"]}))
        .await
        .unwrap();
    let pid = a.inspect("bg").await.pid.unwrap();
    let st = a.term();
    assert!(st.success(), "clean exit on SIGTERM: {st}");
    assert!(!a.socket().exists(), "socket removed on clean stop");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    a.spawn().await;
    assert_eq!(a.inspect("bg").await.pid, Some(pid));
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_policy_on_failure_with_max_retries() {
    require_root!();
    let a = Agent::start("").await;
    a.run(
        json!({"name": "flaky", "image": busybox(), "command": ["sh", "-c", "echo try; exit 1"],
                 "restart": {"policy": "on-failure", "max_retries": 2}}),
    )
    .await
    .unwrap();
    eventually(20, "two restarts then exited", async || {
        let i = a.inspect("flaky").await;
        i.restart_count == 2 && i.state == "exited"
    })
    .await;
    // an absence cannot be polled for: a window longer than the policy's
    // first backoffs (100, 200 ms) in which a third restart would show
    tokio::time::sleep(Duration::from_millis(600)).await;
    let i = a.inspect("flaky").await;
    assert_eq!(
        (i.restart_count, i.exit_code),
        (2, Some(1)),
        "no third restart"
    );
    assert_eq!(
        a.logs("flaky")
            .await
            .iter()
            .filter(|r| r.line == "try")
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_check_reports_healthy_and_unhealthy() {
    require_root!();
    let a = Agent::start("").await;
    a.run(json!({"name": "web", "image": demo(), "health": {"http_path": "/heartbeat", "interval_s": 1, "retries": 2}})).await.unwrap();
    a.run(
        json!({"name": "mute", "image": busybox(), "command": ["sleep", "100000"],
                 "health": {"http_path": "/heartbeat", "interval_s": 1, "retries": 2}}),
    )
    .await
    .unwrap();
    eventually(15, "web healthy", async || {
        a.inspect("web").await.health.status == hydra_agent::model::HealthStatus::Healthy
    })
    .await;
    eventually(15, "mute unhealthy", async || {
        a.inspect("mute").await.health.status == hydra_agent::model::HealthStatus::Unhealthy
    })
    .await;
    assert!(a.inspect("mute").await.health.failures >= 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_rotate_and_follow_across_rotation() {
    require_root!();
    let a = Agent::start("[logs]\nmax_file_size = 8192\nmax_files = 50\n").await;
    a.run(json!({"name": "chatty", "image": busybox(),
                 "command": ["sh", "-c", "sleep 0.3; i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done; head -c 40000 /dev/zero | tr '\\0' x; echo"]}))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut long = 0usize;
    let mut partial = 0;
    a.client
        .stream_path("/v1/containers/chatty/logs?follow=true", |l| {
            let r: hydra_agent::telemetry::logs::Record = serde_json::from_str(l).unwrap();
            if let Some(n) = r.line.strip_prefix("line-") {
                seen.push(n.parse::<u32>().unwrap());
            } else {
                long += r.line.len();
                partial += r.partial as usize;
            }
            true
        })
        .await
        .unwrap();
    assert_eq!(
        seen,
        (0..2000).collect::<Vec<_>>(),
        "followed every line across rotations, in order"
    );
    assert_eq!(long, 40000, "the 40 KB line arrives whole, split in pieces");
    assert_eq!(partial, 2, "its first two 16 KiB pieces are marked partial");
    let files = std::fs::read_dir(a.state().join("containers/chatty/logs"))
        .unwrap()
        .count();
    assert!(files > 3, "rotated into {files} files");
    // tail
    let mut tail = Vec::new();
    a.client
        .stream_path("/v1/containers/chatty/logs?tail=4", |l| {
            tail.push(l.to_string());
            true
        })
        .await
        .unwrap();
    assert_eq!(
        tail.len(),
        4,
        "the last line and the three pieces of the long one"
    );
    assert!(tail[0].contains("line-1999"), "{}", tail[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_mode_sighup_reload_and_socket_flag() {
    require_root!();
    use std::os::unix::fs::PermissionsExt;
    let mut a = Agent::start("").await;
    let mode = std::fs::metadata(a.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660);
    // SIGHUP: a new log level and log settings are applied and reported
    std::fs::write(
        &a.config,
        format!(
            "[cgroup]\nparent = \"{}\"\n[agent]\nlog_level = \"debug\"\n[logs]\nmax_files = 5\n[network]\nallowlist = [\"192.0.2.0/24\"]\n",
            a.parent
        ),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.agent_pid()),
        nix::sys::signal::SIGHUP,
    )
    .unwrap();
    eventually(10, "reload logged", async || {
        a.log().contains("configuration reloaded")
    })
    .await;
    let log = a.log();
    let line = log
        .lines()
        .find(|l| l.contains("configuration reloaded"))
        .unwrap();
    assert!(
        line.contains("log_level") && line.contains("logs"),
        "{line}"
    );
    assert!(line.contains("network.allowlist"), "{line}");
    let al: serde_json::Value = a
        .client
        .call("GET", "/v1/firewall/allowlist", None)
        .await
        .unwrap();
    assert_eq!(
        al["cidrs"],
        serde_json::json!(["192.0.2.0/24"]),
        "SIGHUP applied the allowlist"
    );
    assert!(a
        .host
        .sh("iptables -S HYDRA-ALLOW")
        .contains("-A HYDRA-ALLOW -s 192.0.2.0/24 -j ACCEPT"));
    // the new level is in force: requests are now logged at debug
    a.client.raw("GET", "/v1/host", None).await.unwrap();
    eventually(10, "debug lines", async || a.log().contains("DEBUG")).await;
    // an invalid config on SIGHUP keeps the old one and says so
    std::fs::write(&a.config, "[bogus]\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.agent_pid()),
        nix::sys::signal::SIGHUP,
    )
    .unwrap();
    eventually(10, "invalid config logged", async || {
        a.log().contains("keeping the old one")
    })
    .await;
    let (st, _) = a.client.raw("GET", "/healthz", None).await.unwrap();
    assert_eq!(st, 200);
    a.term();
    // --socket puts the API elsewhere
    std::fs::write(&a.config, format!("[cgroup]\nparent = \"{}\"\n", a.parent)).unwrap();
    let alt = a.root.path().join("alt.sock");
    let mut child = a
        .agent_command()
        .arg("--root")
        .arg(a.root.path())
        .arg("--config")
        .arg(&a.config)
        .arg("--socket")
        .arg(&alt)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let c = hydra_agent::api::client::Client::new(&alt);
    eventually(10, "agent on --socket", async || {
        c.raw("GET", "/healthz", None).await.is_ok()
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_raises_its_open_file_limit() {
    require_root!();
    // the sampler keeps ~14 files open per container: the agent lifts its
    // soft limit to its hard one (to 2^20 where it may raise that too)
    let a = Agent::start("").await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", a.agent_pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let v: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (v[3], v[4]);
    assert_eq!(soft, hard, "{line}");
    // a container still gets security.nofile (1024)
    a.run(
        serde_json::json!({"name": "n", "image": busybox(), "command": ["sh", "-c", "ulimit -n"]}),
    )
    .await
    .unwrap();
    a.wait("n").await;
    let lines: Vec<String> = a.logs("n").await.into_iter().map(|r| r.line).collect();
    assert_eq!(lines, ["1024"]);
}
