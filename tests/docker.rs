//! Coexistence with Docker: dockerd (docker.io) runs on the simulated host and
//! owns docker0; the agent uses that bridge as it is, hooks its FORWARD rules
//! through DOCKER-USER, and keeps the firewall closed across a dockerd restart.

mod common;
use common::*;
use serde_json::json;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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

fn have_dockerd() -> bool {
    let ok = std::process::Command::new("dockerd")
        .arg("--version")
        .output()
        .is_ok();
    if !ok {
        eprintln!("SKIPPED: dockerd (docker.io) is not installed here (scripts/test installs it on the host; the VM has none)");
    }
    ok
}

/// Runs the docker CLI against the test's dockerd.
fn docker(host: &Host, dir: &Path, args: &str) -> String {
    host.sh(&format!(
        "DOCKER_BUILDKIT=0 docker -H unix://{}/docker.sock {args}",
        dir.display()
    ))
    .trim()
    .to_string()
}

/// A dockerd on the simulated host. Its containers' cgroups go under the
/// test's own (a relative `--cgroup-parent`). Dropping it removes its
/// containers, stops it, then kills by pid and removes whatever a failed test
/// left: shims (their cwd is under our exec root), container processes and
/// cgroups.
struct Dockerd {
    bg: Option<Bg>,
    dir: PathBuf,
    cgroup: String,
}

impl Dockerd {
    fn start(host: &Host, dir: &Path) -> Dockerd {
        let cgroup = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut d = Dockerd {
            bg: None,
            dir: dir.to_path_buf(),
            cgroup,
        };
        d.spawn(host);
        d
    }

    fn spawn(&mut self, host: &Host) {
        let (d, cg) = (self.dir.display(), &self.cgroup);
        self.bg = Some(host.spawn_bg(&format!(
            "exec dockerd --data-root {d}/data --exec-root {d}/exec --host unix://{d}/docker.sock --pidfile {d}/docker.pid --fixed-cidr 172.17.0.0/17 --cgroup-parent {cg} >> {d}/dockerd.log 2>&1"
        )));
        let sock = self.dir.join("docker.sock");
        let t0 = std::time::Instant::now();
        let ready = || {
            sock.exists()
                && host
                    .sh("iptables -S DOCKER-USER 2>/dev/null || true")
                    .contains("-N DOCKER-USER")
                && host
                    .sh("ip -4 -o addr show docker0 2>/dev/null || true")
                    .contains("172.17.0.1/16")
        };
        while !ready() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "dockerd did not start: {}",
                std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM and wait; true if it stopped.
    fn terminate(&mut self) -> bool {
        self.bg
            .take()
            .is_some_and(|mut bg| bg.terminate(Duration::from_secs(60)))
    }
}

fn cgroup_dirs_named(root: &Path, name: &str, depth: u32, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let p = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name() == name {
            out.push(p);
        } else if depth > 0 {
            cgroup_dirs_named(&p, name, depth - 1, out);
        }
    }
}

/// Kills every process in the cgroup tree at `dir`, then removes it.
fn kill_and_remove_cgroup(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            kill_and_remove_cgroup(&e.path());
        }
    }
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("could not remove {}", dir.display());
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let sock = format!("unix://{}/docker.sock", self.dir.display());
        if self.bg.is_some() {
            let ids = std::process::Command::new("docker")
                .args(["-H", &sock, "ps", "-aq"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["-H", &sock, "rm", "-f"])
                    .args(&ids)
                    .output();
            }
            self.terminate();
        }
        // dockerd's containerd and shims, if dockerd died without them
        let exec = self.dir.join("exec");
        if let Ok(pid) = std::fs::read_to_string(exec.join("containerd/containerd.pid")) {
            let pid = pid.trim().parse::<i32>().unwrap_or(0);
            // only if that pid is still containerd (pids are reused)
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if pid > 0 && comm.trim() == "containerd" {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if std::fs::read_link(e.path().join("cwd")).is_ok_and(|c| c.starts_with(&exec)) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
        let mut dirs = Vec::new();
        cgroup_dirs_named(Path::new("/sys/fs/cgroup"), &self.cgroup, 6, &mut dirs);
        for d in dirs {
            kill_and_remove_cgroup(&d);
        }
    }
}

/// A simulated host with dockerd running on it. Fields drop in order:
/// dockerd (and what it left) before its directory.
struct DockerEnv {
    dockerd: Dockerd,
    dir: tempfile::TempDir,
}

fn docker_env() -> Option<(Host, DockerEnv)> {
    if !have_dockerd() {
        return None;
    }
    let host = Host::new();
    let dir = tempfile::Builder::new()
        .prefix("hydra-test-docker-")
        .tempdir()
        .unwrap();
    let dockerd = Dockerd::start(&host, dir.path());
    Some((host, DockerEnv { dockerd, dir }))
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
