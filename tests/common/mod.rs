//! Harness for root integration tests: each test runs its own agent under a
//! temp `--root` and a unique cgroup parent, and cleans up (containers,
//! shims, cgroups, files) even when the test fails, then checks for leaks.
#![allow(dead_code)]

use hydra_agent::api::client::{Client, ClientError};
use hydra_agent::api::{ContainerInfo, ExitStatus};
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

/// A simulated host: network and mount namespaces held by a sleeping
/// process, so they outlive agent restarts. Bridges, veths and iptables rules
/// made in it never touch the machine's own namespaces; dropping it kills the
/// holder and the namespaces go with it.
pub struct Host {
    holder: Child,
}

impl Host {
    pub fn new() -> Host {
        let holder = Command::new("unshare")
            .args([
                "--net",
                "--mount",
                "--propagation",
                "private",
                "--",
                "sleep",
                "100000",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let pid = holder.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        // wait until the holder has exec'd sleep inside its new namespaces
        while std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
            == std::fs::read_link("/proc/self/ns/net").ok()
        {
            assert!(Instant::now() < deadline, "unshare did not start");
            std::thread::sleep(Duration::from_millis(5));
        }
        let h = Host { holder };
        h.sh("ip link set lo up");
        h
    }

    pub fn pid(&self) -> u32 {
        self.holder.id()
    }

    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }

    /// A command run inside the host's namespaces.
    pub fn command(&self, prog: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/proc/{}/ns/net", self.pid()))
            .arg(format!("--mount=/proc/{}/ns/mnt", self.pid()))
            .arg("--")
            .arg(prog);
        c
    }

    /// Runs a shell command inside; panics with its output if it fails.
    pub fn sh(&self, script: &str) -> String {
        let out = self
            .command("sh")
            .args(["-c", script])
            .output()
            .expect("nsenter");
        assert!(
            out.status.success(),
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Another simulated machine wired to this host: a netns with a veth,
    /// `10.99.<n>.2/24` on its side, `10.99.<n>.1/24` on the host's.
    pub fn peer(&self, n: u8) -> Host {
        let p = Host::new();
        self.sh(&format!(
            "ip link add p{n} type veth peer name eth0 netns {} && ip addr add 10.99.{n}.1/24 dev p{n} && ip link set p{n} up",
            p.pid()
        ));
        p.sh(&format!("ip addr add 10.99.{n}.2/24 dev eth0 && ip link set eth0 up && ip route add default via 10.99.{n}.1"));
        p
    }
}

/// A background process group (a shell and its children), killed whole on
/// drop, also when a test fails; its output goes nowhere.
pub struct Bg(Child);

impl Bg {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGTERM to the group, then waits (polling) until the leader has exited.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-(self.0.id() as i32)),
            nix::sys::signal::SIGTERM,
        );
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-(self.0.id() as i32)),
            nix::sys::signal::SIGKILL,
        );
        let _ = self.0.wait();
    }
}

impl Host {
    /// Runs `script` in the background inside this host's namespaces.
    pub fn spawn_bg(&self, script: &str) -> Bg {
        use std::os::unix::process::CommandExt;
        let child = self
            .command("sh")
            .args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn");
        Bg(child)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

pub struct Agent {
    pub host: Host,
    pub root: tempfile::TempDir,
    pub parent: String,
    pub config: PathBuf,
    pub child: Option<Child>,
    pub client: Client,
}

impl Agent {
    /// Starts an agent with `extra` appended to its config file.
    pub async fn start(extra: &str) -> Agent {
        Agent::start_on(Host::new(), extra).await
    }

    /// Starts an agent on a host prepared by the caller (e.g. running dockerd).
    pub async fn start_on(host: Host, extra: &str) -> Agent {
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
        let mut a = Agent {
            host,
            client: Client::new(&socket),
            root,
            parent,
            config,
            child: None,
        };
        a.spawn().await;
        a
    }

    /// The agent binary, to run in this agent's host namespaces.
    pub fn agent_command(&self) -> Command {
        let mut c = self.host.command(env!("CARGO_BIN_EXE_hydra-agent"));
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
        let deadline = Instant::now() + Duration::from_secs(20);
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
        self.client
            .call("GET", &format!("/v1/containers/{name}"), None)
            .await
            .expect("inspect")
    }

    pub async fn wait(&self, name: &str) -> ExitStatus {
        tokio::time::timeout(
            Duration::from_secs(60),
            self.client
                .call("GET", &format!("/v1/containers/{name}/wait"), None),
        )
        .await
        .expect("wait timed out")
        .expect("wait")
    }

    pub async fn logs(&self, name: &str) -> Vec<hydra_agent::telemetry::logs::Record> {
        let mut out = Vec::new();
        self.client
            .stream(&format!("/v1/containers/{name}/logs"), |l| {
                out.push(serde_json::from_str(l).expect("log record"));
                true
            })
            .await
            .expect("logs");
        out
    }

    pub async fn stats(&self, name: &str) -> hydra_agent::cgroup::Stats {
        self.client
            .call("GET", &format!("/v1/containers/{name}/stats"), None)
            .await
            .expect("stats")
    }

    pub fn layout() -> hydra_agent::cgroup::Layout {
        hydra_agent::cgroup::detect().expect("cgroups")
    }

    /// What a rejected request must not change: cgroups, mounts, processes
    /// and files under the agent's root.
    pub fn snapshot(&self) -> Snapshot {
        let layout = Self::layout();
        let mut files: Vec<String> = walk(&self.state());
        files.sort();
        Snapshot {
            cgroups: layout.children(&self.parent),
            mounts: std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap()
                .lines()
                .filter(|l| l.contains("hydra"))
                .map(String::from)
                .collect(),
            processes: processes_mentioning(self.root.path()),
            files,
        }
    }
}

#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub cgroups: Vec<String>,
    pub mounts: Vec<String>,
    pub processes: Vec<i32>,
    pub files: Vec<String>,
}

fn walk(d: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            // the layer store only grows (content-addressed, shared)
            if p.ends_with("layers") {
                continue;
            }
            out.push(p.display().to_string());
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
            if let Err(e) = layout.container(&self.parent, &name).remove() {
                errors.push(e.to_string());
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

/// A shell line for a container (busybox nc: its static wget crashes without
/// NSS) printing `HOST:PORT=open` if anything HTTP answers there, else
/// `HOST:PORT=closed`.
pub fn open_or_closed(target: &str) -> String {
    let (h, p) = target.split_once(':').unwrap();
    format!("if echo GET | nc -w 2 {h} {p} 2>/dev/null | grep -q HTTP/; then echo {target}=open; else echo {target}=closed; fi")
}

/// Polls `f` until it is true or `secs` pass.
pub async fn eventually(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// OCI layouts for image tests

pub fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// A tar with the given (path, content) entries; content None is a directory.
pub fn tar(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match content {
            Some(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, path, c.as_bytes()).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn write_layout(dir: &Path, layers: &[Vec<u8>], base: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = sha(b);
        std::fs::write(blobs.join(&d), b).unwrap();
        d
    };
    // the busybox rootfs as the first layer, so the test can run commands
    let mut bb = tar::Builder::new(Vec::new());
    bb.follow_symlinks(false);
    bb.append_dir_all(".", base).unwrap();
    let bb = bb.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &bb).unwrap();
    let bbgz = gz.finish().unwrap();
    let mut descs = vec![
        serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{}", put(&bbgz)), "size": bbgz.len()}),
    ];
    let mut diff_ids = vec![format!("sha256:{}", sha(&bb))];
    for l in layers {
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{}", put(l)), "size": l.len()}));
        diff_ids.push(format!("sha256:{}", sha(l)));
    }
    let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh", "-c", "echo default-cmd"], "Env": ["PATH=/bin", "FROM_IMAGE=yes"], "WorkingDir": "/data"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", put(&config)), "size": config.len()},
        "layers": descs}))
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", put(&manifest)), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

impl Host {
    /// An HTTP/1.0 request to `addr` (e.g. `127.0.0.1:9090`) made inside this
    /// host's network namespace (from a thread that enters it); (status, body).
    pub fn http(&self, method: &str, addr: &str, path: &str, body: &[u8]) -> (u16, String) {
        use std::io::{Read, Write};
        let ns = std::fs::File::open(self.netns()).unwrap();
        let (method, addr, path, body) = (
            method.to_string(),
            addr.to_string(),
            path.to_string(),
            body.to_vec(),
        );
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let Ok(mut s) = std::net::TcpStream::connect(&addr) else {
                return (0, String::new());
            };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let head = format!(
                "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            if s.write_all(head.as_bytes())
                .and_then(|_| s.write_all(&body))
                .is_err()
            {
                return (0, String::new());
            }
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            let text = String::from_utf8_lossy(&out).into_owned();
            let status = text
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let body = text
                .split_once("\r\n\r\n")
                .map(|(_, b)| b.to_string())
                .unwrap_or_default();
            (status, body)
        })
        .join()
        .unwrap()
    }
}

/// Percent-encodes a URL query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
