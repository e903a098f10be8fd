//! Simulated hosts: network and mount namespaces held by a sleeping
//! process; commands, background process groups and HTTP requests inside
//! them.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

/// A shell line for a container (busybox nc: its static wget crashes without
/// NSS) printing `HOST:PORT=open` if anything HTTP answers there, else
/// `HOST:PORT=closed`.
pub fn open_or_closed(target: &str) -> String {
    let (h, p) = target.split_once(':').unwrap();
    format!("if echo GET | nc -w 2 {h} {p} 2>/dev/null | grep -q HTTP/; then echo {target}=open; else echo {target}=closed; fi")
}
