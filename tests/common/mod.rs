//! Harness for root integration tests: each test runs its own agent under a
//! temp `--root` and a unique cgroup parent, and cleans up (containers,
//! shims, cgroups, files) even when the test fails, then checks for leaks.
#![allow(dead_code)]

mod host;
mod layouts;
mod raw;
mod rsyslog;
#[allow(unused_imports)]
pub use host::*;
#[allow(unused_imports)]
pub use layouts::*;
#[allow(unused_imports)]
pub use raw::*;
#[allow(unused_imports)]
pub use rsyslog::*;

pub use hydra_agent::api::client::{Client, ClientError};
pub use hydra_agent::api::{ContainerInfo, ExitStatus, Request};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Skips the test (with a printed reason) when not root. CI is root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("SKIPPED: this test needs root (namespaces, cgroups, overlayfs)");
            return;
        }
    };
}

static N: AtomicU32 = AtomicU32::new(0);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the test images once (scripts/build-images) if they are missing.
pub fn images() -> (String, String) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    let dir = repo().join("build/images");
    ONCE.call_once(|| {
        if !dir.join("demo/index.json").exists()
            || !dir.join("busybox/bin/busybox").exists()
            || !dir.join("docker-demo/Dockerfile").exists()
            || !dir.join("busybox/bin/hydra-probe").exists()
        {
            let st = Command::new(repo().join("scripts/build-images"))
                .status()
                .expect("run scripts/build-images");
            assert!(st.success(), "scripts/build-images failed");
        }
    });
    (
        format!("rootfs:{}", dir.join("busybox").display()),
        format!("oci-layout:{}:latest", dir.join("demo").display()),
    )
}

pub fn busybox() -> String {
    images().0
}
pub fn demo() -> String {
    images().1
}

pub struct Agent {
    pub host: Host,
    pub root: tempfile::TempDir,
    pub parent: String,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub client: Client,
    /// The agent binary [`Agent::spawn`] runs (this build's, unless a test
    /// runs another release).
    pub bin: PathBuf,
}

impl Agent {
    /// Starts an agent with `extra` appended to its config file.
    pub async fn start(extra: &str) -> Agent {
        Agent::start_on(Host::new(), extra).await
    }

    /// Starts an agent on a host prepared by the caller (e.g. running dockerd).
    pub async fn start_on(host: Host, extra: &str) -> Agent {
        Agent::start_with(host, extra, None).await
    }

    /// Starts the agent binary `bin` (another release's), or this build's.
    pub async fn start_with(host: Host, extra: &str, bin: Option<PathBuf>) -> Agent {
        let mut a = Agent::unstarted(host, extra, bin);
        a.spawn().await;
        a
    }

    /// An agent set up but not started (a test prepares its host first,
    /// e.g. mounts a small filesystem as its state dir), then [`Agent::spawn`].
    pub fn unstarted(host: Host, extra: &str, bin: Option<PathBuf>) -> Agent {
        let root = tempfile::Builder::new()
            .prefix("hydra-test-")
            .tempdir()
            .expect("tempdir");
        let parent = format!(
            "hydra-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let config = root.path().join("agent.toml");
        std::fs::write(
            &config,
            format!("[cgroup]\nparent = \"{parent}\"\n{extra}\n"),
        )
        .unwrap();
        let socket = root.path().join("run/hydra-agent/agent.sock");
        Agent {
            host,
            client: Client::new(&socket),
            root,
            parent,
            config,
            child: None,
            bin: bin.unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_hydra-agent"))),
        }
    }

    /// The agent binary, to run in this agent's host namespaces.
    pub fn agent_command(&self) -> Command {
        let mut c = self.host.command(self.bin.to_str().expect("a UTF-8 path"));
        c.stdin(Stdio::null());
        c
    }

    pub fn socket(&self) -> PathBuf {
        self.root.path().join("run/hydra-agent/agent.sock")
    }
    pub fn state(&self) -> PathBuf {
        self.root.path().join("var/lib/hydra-agent")
    }

    /// (Re)starts the agent process and waits until it answers.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.path().join("agent.log"))
            .unwrap();
        let child = self
            .agent_command()
            .arg("--root")
            .arg(self.root.path())
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn agent");
        self.child = Some(child);
        let deadline = Instant::now() + scaled(20);
        loop {
            if let Ok((200, _)) = self.client.raw("GET", "/healthz", None).await {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("agent exited during start ({st}); log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "agent did not come up; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("agent.log")).unwrap_or_default()
    }

    pub fn agent_pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// SIGKILLs the agent (containers must not notice).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: a clean stop.
    pub fn term(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running agent");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(c.id() as i32),
            nix::sys::signal::SIGTERM,
        )
        .unwrap();
        c.wait().unwrap()
    }

    pub async fn run(&self, spec: serde_json::Value) -> Result<ContainerInfo, ClientError> {
        self.client
            .call(
                "POST",
                "/v1/containers",
                Some(serde_json::to_vec(&spec).unwrap()),
            )
            .await
    }

    pub async fn inspect(&self, name: &str) -> ContainerInfo {
        self.client.inspect(name).await.expect("inspect")
    }

    pub async fn wait(&self, name: &str) -> ExitStatus {
        tokio::time::timeout(scaled(60), self.client.wait(name))
            .await
            .expect("wait timed out")
            .expect("wait")
    }

    pub async fn logs(&self, name: &str) -> Vec<hydra_agent::telemetry::logs::Record> {
        let mut out = Vec::new();
        let req = Request::Logs {
            name: name.into(),
            follow: false,
            tail: None,
        };
        self.client
            .stream(&req, |l| {
                out.push(serde_json::from_str(l).expect("log record"));
                true
            })
            .await
            .expect("logs");
        out
    }

    pub async fn stats(&self, name: &str) -> hydra_agent::cgroup::Stats {
        self.client.stats(name).await.expect("stats")
    }

    pub fn layout() -> hydra_agent::cgroup::Layout {
        hydra_agent::cgroup::detect().expect("cgroups")
    }

    /// What a rejected request must not change: cgroups, mounts, processes
    /// and files under the agent's root.
    /// Taken once removed containers' directories have been deleted (the
    /// trash, emptied in the background: waited for, 10 s at most).
    pub fn snapshot(&self) -> Snapshot {
        let trash = self.state().join("trash");
        let deadline = std::time::Instant::now() + scaled(10);
        while std::fs::read_dir(&trash).is_ok_and(|mut d| d.next().is_some()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the trash was not emptied"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let layout = Self::layout();
        let mut files: Vec<String> = walk(&self.state());
        files.sort();
        let root = self.root.path().display().to_string();
        // the agent's mounts are in its host's mount namespace
        let mountinfo = format!("/proc/{}/mountinfo", self.host.pid());
        Snapshot {
            cgroups: layout.children(&self.parent),
            mounts: std::fs::read_to_string(mountinfo)
                .unwrap()
                .lines()
                .filter(|l| l.contains("hydra"))
                .map(String::from)
                .collect(),
            processes: processes_mentioning(self.root.path()),
            files,
            loop_devices: loop_devices_of(&root),
        }
    }
}

#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub cgroups: Vec<String>,
    pub mounts: Vec<String>,
    pub processes: Vec<i32>,
    pub files: Vec<String>,
    /// Loop devices whose backing file is under the agent's root (the
    /// layers' images; not the pool's).
    pub loop_devices: Vec<String>,
}

pub fn loop_devices_of(root: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .filter(|b| b.contains(root) && !b.contains("/disk-pool/"))
        .collect();
    v.sort();
    v
}

fn walk(d: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.display().to_string());
            // the layer store only grows (content-addressed, shared); the
            // pool of prepared layer images is the agent's to refill, and
            // a layer template is made at the first layer of its size
            if p.ends_with("layers") || p.ends_with("disk-pool") || p.ends_with("disk-templates") {
                continue;
            }
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk(&p));
            }
        }
    }
    out
}

/// Pids whose command line mentions `path` (the shims carry their plan path).
pub fn processes_mentioning(path: &Path) -> Vec<i32> {
    let needle = path.display().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) {
            if String::from_utf8_lossy(&cmd).contains(&needle)
                && !String::from_utf8_lossy(&cmd).contains("--root")
            {
                out.push(pid);
            }
        }
    }
    out.sort();
    out
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
        let layout = Self::layout();
        let mut errors = Vec::new();
        for name in layout.children(&self.parent) {
            let cg = layout.container(&self.parent, &name);
            if let Err(e) = cg.remove() {
                let who: Vec<String> = cg
                    .pids()
                    .iter()
                    .map(|p| {
                        let st =
                            std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
                        format!("{p}: {st}")
                    })
                    .collect();
                errors.push(format!("{e}: {who:?}"));
            }
        }
        // Shims end by themselves once their container is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !processes_mentioning(self.root.path()).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        for pid in processes_mentioning(self.root.path()) {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
            errors.push(format!("leaked shim {pid}"));
        }
        // the shared devices cgroup (v1) empties once the launcher and the
        // shims killed above have fully exited: retry for a while
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            layout.remove_parent(&self.parent);
            let busy = layout
                .devices_cgroup(&self.parent)
                .is_some_and(|d| d.exists());
            if !busy || Instant::now() > deadline {
                if busy {
                    errors.push(format!("devices cgroup of {} left", self.parent));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let left = layout.children(&self.parent);
        if !std::thread::panicking() {
            assert!(errors.is_empty(), "cleanup: {errors:?}");
            assert!(left.is_empty(), "cgroups left: {left:?}");
        }
    }
}

/// A file of container `name`'s cgroup, trimmed.
pub fn read_cg(
    layout: &hydra_agent::cgroup::Layout,
    parent: &str,
    name: &str,
    ctl: &str,
    file: &str,
) -> String {
    let cg = layout.container(parent, name);
    std::fs::read_to_string(cg.dir(ctl).expect("controller").join(file))
        .expect("cgroup file")
        .trim()
        .to_string()
}

/// Runs `spec` as container `name` to its end; its output lines.
pub async fn output(a: &Agent, name: &str, spec: serde_json::Value) -> Vec<String> {
    let mut spec = spec;
    spec["name"] = serde_json::json!(name);
    a.run(spec).await.unwrap();
    a.wait(name).await;
    a.logs(name).await.into_iter().map(|r| r.line).collect()
}

/// The value after `key:` or `key=` in `lines`.
pub fn field(lines: &[String], key: &str) -> String {
    lines
        .iter()
        .find_map(|l| {
            l.strip_prefix(key)
                .and_then(|r| r.strip_prefix([':', '=']))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no {key} in {lines:?}"))
}

/// Status and field of an API error.
pub fn api_field(e: &ClientError) -> (u16, Option<String>) {
    match e {
        ClientError::Api { status, body } => (*status, body.error.field.clone()),
        other => panic!("not an API error: {other}"),
    }
}

/// `secs`, times `HYDRA_TEST_TIME_SCALE` (default 1): scripts/vm sets it,
/// since an emulated VM on a busy host runs several times slower. Deadlines
/// only; no test waits a fixed time for something to happen.
pub fn scaled(secs: u64) -> Duration {
    let k: u64 = std::env::var("HYDRA_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    Duration::from_secs(secs * k.max(1))
}

/// Polls `f` until it is true or `secs` (scaled) pass.
pub async fn eventually(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + scaled(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True, after saying SKIPPED, when `prog` (a real peer: rsyslog,
/// Prometheus, openssl) is not installed here. scripts/test installs them
/// on the host; the VM carries only what the suite copies in.
pub fn lacks(prog: &str, version_arg: &str) -> bool {
    let missing = Command::new(prog)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err();
    if missing {
        eprintln!("SKIPPED: {prog} is not installed here (the VM carries none)");
    }
    missing
}

/// Bytes `dd bs=64k` wrote, from `N+M records out` (the partial one is < 64 KiB).
pub fn dd_copied(lines: &[String]) -> u64 {
    lines
        .iter()
        .find_map(|l| {
            let n: u64 = l
                .strip_suffix(" records out")?
                .split('+')
                .next()?
                .parse()
                .ok()?;
            Some(n * 65536)
        })
        .unwrap_or_else(|| panic!("no dd summary in {lines:?}"))
}
