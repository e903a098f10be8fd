//! dockerd (docker.io) on a simulated host, for the tests that compare
//! with Docker or use it as a peer: its own data root, exec root and
//! socket; dropping it removes what it made.
#![allow(dead_code)] // each test binary uses a part of it

use crate::common::{Bg, Host};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn have_dockerd() -> bool {
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
pub fn docker(host: &Host, dir: &Path, args: &str) -> String {
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
pub struct Dockerd {
    bg: Option<Bg>,
    dir: PathBuf,
    cgroup: String,
    /// More dockerd flags (e.g. `--insecure-registry`).
    extra: String,
}

impl Dockerd {
    pub fn start(host: &Host, dir: &Path) -> Dockerd {
        Dockerd::start_with(host, dir, "")
    }

    pub fn start_with(host: &Host, dir: &Path, extra: &str) -> Dockerd {
        let cgroup = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut d = Dockerd {
            bg: None,
            dir: dir.to_path_buf(),
            cgroup,
            extra: extra.into(),
        };
        d.spawn(host);
        d
    }

    pub fn spawn(&mut self, host: &Host) {
        let (d, cg, extra) = (self.dir.display(), &self.cgroup, &self.extra);
        self.bg = Some(host.spawn_bg(&format!(
            "exec dockerd --data-root {d}/data --exec-root {d}/exec --host unix://{d}/docker.sock --pidfile {d}/docker.pid --fixed-cidr 172.17.0.0/17 --cgroup-parent {cg} {extra} >> {d}/dockerd.log 2>&1"
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
    pub fn terminate(&mut self) -> bool {
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
pub struct DockerEnv {
    pub dockerd: Dockerd,
    pub dir: tempfile::TempDir,
}

pub fn docker_env() -> Option<(Host, DockerEnv)> {
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
