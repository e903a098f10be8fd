//! Network namespaces made ahead of the starts that take them.
//!
//! Making a network namespace (its loopback, its sysctl tables) and a veth
//! pair is ~15% of the CPU a start costs the container's init (`perf
//! record` of `scripts/bench start`). The launcher keeps a small pool of
//! them, made by a helper process of its own (`hydra-netpool`, forked once
//! from the single-threaded launcher) on the other CPU while nothing
//! starts; a start takes one and its init joins it with `setns` instead of
//! cloning a new one.
//!
//! - Each namespace is used by one container only, never again: it dies with
//!   the container's last process, as one cloned for it would.
//! - With host networking an entry also holds the container's veth: `eth0`
//!   inside, its peer in the host's namespace under a random `hy…` name,
//!   without IPv6 addresses (and `eth0` with IPv6 disabled, as an
//!   init-made one), already a port of the bridge, isolated, but **down**:
//!   a down port forwards nothing, and nothing but the pool holds the
//!   other end. Joining a bridge walks all its ports (`br_add_if`: 2 ms of
//!   a start at 1,000 containers), so it is done here, ahead; the init
//!   only sets the port up (and joins it itself if the bridge was made
//!   anew since), and gives `eth0` its address.
//! - Nothing outlives the launcher: entries not taken travel as fds in the
//!   socket between the two processes (or sit in the helper while it makes
//!   them), so when either dies they are closed and the kernel removes the
//!   namespaces and their veths. The helper is killed with the launcher
//!   (parent-death signal).
//! - An empty pool (a burst of starts, a helper that died) costs nothing
//!   but the time saved: the start clones its namespace as before, and a
//!   dead helper is replaced at the next start.
//!
//! Protocol over a `SOCK_SEQPACKET` socket pair: the launcher sends one byte
//! per entry wanted (a credit); the helper answers each with one message,
//! the namespace's fd (`SCM_RIGHTS`) and the peer's name (`-`: no veth).
//! The credit for a taken entry is sent once its start is over: making an
//! entry holds the kernel's network lock, which the start's own network
//! setup needs.

use crate::network::netlink::Netlink;
use nix::sched::CloneFlags;
use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use nix::unistd::{ForkResult, Pid};
use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// What the pool holds: how many entries, with a veth each (and the
/// bridge its host end joins) or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSpec {
    pub size: u32,
    pub veth: bool,
    /// The bridge the host ends join ahead (down); None: they wait
    /// outside, and the init joins them.
    pub bridge: Option<String>,
}

impl PoolSpec {
    /// The launcher's argument for it (`--netns-pool=4,veth,docker0`).
    pub fn to_arg(&self) -> String {
        let mut a = format!("--netns-pool={}", self.size);
        if self.veth {
            a.push_str(",veth");
            if let Some(b) = &self.bridge {
                a.push(',');
                a.push_str(b);
            }
        }
        a
    }

    pub fn from_args(mut args: impl Iterator<Item = String>) -> Option<PoolSpec> {
        let v = args.find_map(|a| a.strip_prefix("--netns-pool=").map(String::from))?;
        let mut parts = v.splitn(3, ',');
        let size = parts.next()?.parse().ok().filter(|s| *s > 0)?;
        let (veth, bridge) = match (parts.next(), parts.next()) {
            (None, _) => (false, None),
            (Some("veth"), b) => (true, b.filter(|b| !b.is_empty()).map(String::from)),
            (Some(_), _) => return None,
        };
        Some(PoolSpec { size, veth, bridge })
    }
}

/// A namespace made ahead, and the host's end of its veth (if any).
#[derive(Debug)]
pub struct Entry {
    pub ns: OwnedFd,
    pub peer: Option<String>,
}

/// The launcher's side of the pool.
pub struct Pool {
    spec: PoolSpec,
    sock: OwnedFd,
    helper: Pid,
    /// Credits for entries taken, sent by [`Pool::settle`].
    owed: u32,
}

impl Pool {
    /// Forks the helper and asks for `spec.size` entries.
    ///
    /// # Safety
    /// The caller must be single-threaded (the launcher): the helper is a
    /// fork of it.
    pub unsafe fn start(spec: PoolSpec) -> io::Result<Pool> {
        let (ours, theirs) = socket::socketpair(
            socket::AddressFamily::Unix,
            socket::SockType::SeqPacket,
            None,
            socket::SockFlag::SOCK_CLOEXEC,
        )?;
        let launcher = nix::unistd::getpid();
        // SAFETY: the caller promises a single-threaded process.
        match unsafe { crate::sys::fork_single_threaded() }? {
            ForkResult::Child => {
                drop(ours);
                helper(theirs, &spec, launcher)
            }
            ForkResult::Parent { child } => {
                drop(theirs);
                let size = spec.size;
                let pool = Pool {
                    spec,
                    sock: ours,
                    helper: child,
                    owed: 0,
                };
                for _ in 0..size {
                    pool.credit()?;
                }
                Ok(pool)
            }
        }
    }

    fn credit(&self) -> io::Result<()> {
        nix::unistd::write(&self.sock, b"+")
            .map(drop)
            .map_err(io::Error::from)
    }

    /// Whether this pool's entries suit a start (a veth exactly when the
    /// container has host networking).
    pub fn suits(&self, net: bool) -> bool {
        self.spec.veth == net
    }

    /// An entry if one is ready (never waits); its replacement is asked
    /// for by [`Pool::settle`]. A helper found dead is replaced (the start
    /// at hand clones its namespace).
    pub fn take(&mut self) -> Option<Entry> {
        match receive(self.sock.as_fd()) {
            Ok(Some(e)) => {
                self.owed += 1;
                Some(e)
            }
            Ok(None) => None,
            Err(e) => {
                eprintln!(
                    "hydra launcher: the namespace pool's helper is gone ({e}); making a new one"
                );
                self.replace();
                None
            }
        }
    }

    /// Asks for the entries taken since the last call (after a start, so
    /// the making of the next one does not compete with it).
    pub fn settle(&mut self) {
        while self.owed > 0 && self.credit().is_ok() {
            self.owed -= 1;
        }
    }

    fn replace(&mut self) {
        let _ = nix::sys::signal::kill(self.helper, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.helper, None);
        // SAFETY: a pool lives in the single-threaded launcher only.
        match unsafe { Pool::start(self.spec.clone()) } {
            Ok(p) => *self = p,
            Err(e) => eprintln!("hydra launcher: cannot start the namespace pool's helper: {e}"),
        }
    }
}

/// One entry from the helper: `Ok(None)` if none is ready, an error if the
/// helper is gone.
fn receive(sock: std::os::fd::BorrowedFd) -> io::Result<Option<Entry>> {
    let mut buf = [0u8; 32];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = match socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Err(nix::errno::Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(e.into()),
        Ok(m) => m,
    };
    let fd = msg.cmsgs()?.find_map(|c| match c {
        ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
        _ => None,
    });
    let len = msg.bytes;
    let Some(fd) = fd else {
        return Err(io::Error::other("the helper closed its socket"));
    };
    // SAFETY: the kernel just installed this fd for us (SCM_RIGHTS).
    let ns = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = String::from_utf8_lossy(&buf[..len]).into_owned();
    Ok(Some(Entry {
        ns,
        peer: (name != "-").then_some(name),
    }))
}

/// The helper: makes one entry per credit until the launcher goes.
fn helper(sock: OwnedFd, spec: &PoolSpec, launcher: Pid) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    if nix::unistd::getppid() != launcher {
        std::process::exit(0);
    }
    crate::sys::set_process_name("hydra-netpool");
    if let Ok(null) = File::open("/dev/null") {
        let _ = nix::unistd::dup2(null.as_raw_fd(), 0);
        let _ = nix::unistd::dup2(null.as_raw_fd(), 1);
    }
    // SAFETY: a fresh fork of the single-threaded launcher; it keeps only
    // the socket (and stdio): the launcher's pipes to the agent must not be
    // held open by us.
    unsafe { crate::sys::close_fds_except(&[sock.as_raw_fd()]) };
    let host = match File::open("/proc/self/ns/net") {
        Ok(f) => f,
        Err(e) => {
            eprintln!("hydra-netpool: open the host's namespace: {e}");
            std::process::exit(1)
        }
    };
    let mut host_nl = spec
        .veth
        .then(Netlink::new)
        .transpose()
        .unwrap_or_else(|e| {
            eprintln!("hydra-netpool: netlink: {e}");
            std::process::exit(1)
        });
    let mut credit = [0u8; 1];
    while nix::unistd::read(sock.as_raw_fd(), &mut credit).is_ok_and(|n| n == 1) {
        let mut warned = false;
        let (ns, peer) = loop {
            match make(&host, host_nl.as_mut(), spec.bridge.as_deref()) {
                Ok(e) => break e,
                Err(e) if !warned => {
                    eprintln!("hydra-netpool: cannot make a namespace ({e}); retrying each second");
                    warned = true;
                }
                Err(_) => {}
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        };
        let name = peer.unwrap_or_else(|| "-".into());
        let fds = [ns.as_raw_fd()];
        let sent = socket::sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(name.as_bytes())],
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        );
        if sent.is_err() {
            break;
        }
    }
    std::process::exit(0)
}

/// A new namespace with its loopback up and, with `host_nl`, a veth: made
/// from inside (the helper enters it and comes back).
fn make(
    host: &File,
    host_nl: Option<&mut Netlink>,
    bridge: Option<&str>,
) -> io::Result<(File, Option<String>)> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
    let inside = (|| {
        let ns = File::open("/proc/self/ns/net")?;
        crate::sys::loopback_up()?;
        let peer = match host_nl {
            Some(h) => Some(make_veth(host, h, bridge)?),
            None => None,
        };
        Ok::<_, io::Error>((ns, peer))
    })();
    if let Err(e) = nix::sched::setns(host.as_fd(), CloneFlags::CLONE_NEWNET) {
        // in the wrong namespace for good: the launcher makes a new helper
        eprintln!("hydra-netpool: cannot return to the host's namespace: {e}");
        std::process::exit(1);
    }
    inside
}

fn make_veth(host: &File, host_nl: &mut Netlink, bridge: Option<&str>) -> io::Result<String> {
    // eth0 without IPv6, as the init makes it (from this namespace's
    // defaults; /proc/sys/net is the opener's namespace); lo keeps ::1
    match std::fs::write("/proc/sys/net/ipv6/conf/default/disable_ipv6", "1") {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut rnd = [0u8; 6];
    std::io::Read::read_exact(&mut File::open("/dev/urandom")?, &mut rnd)?;
    let name = format!("hy{}", hex::encode(rnd));
    Netlink::new()?.create_veth("eth0", &name, host.as_fd())?;
    let idx = host_nl
        .link_index(&name)?
        .ok_or_else(|| io::Error::other(format!("{name} not found after its creation")))?;
    host_nl.no_ipv6_addresses(idx);
    // into the bridge, down and isolated (a bridge not there yet: the init
    // joins it)
    if let Some(br) = bridge.map(|b| host_nl.link_index(b)).transpose()?.flatten() {
        host_nl.set_controller(idx, br)?;
        host_nl.set_port_isolated(idx)?;
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launcher_argument_round_trips() {
        for spec in [
            PoolSpec {
                size: 4,
                veth: true,
                bridge: Some("docker0".into()),
            },
            PoolSpec {
                size: 4,
                veth: true,
                bridge: None,
            },
            PoolSpec {
                size: 1,
                veth: false,
                bridge: None,
            },
        ] {
            assert_eq!(
                PoolSpec::from_args([spec.to_arg()].into_iter()),
                Some(spec.clone())
            );
        }
        let parse = |a: &str| PoolSpec::from_args([a.to_string()].into_iter());
        assert_eq!(parse("--netns-pool=0"), None);
        assert_eq!(parse("--netns-pool=2,bridge"), None);
        assert_eq!(parse("--netns-pool=2,veth,").unwrap().bridge, None);
        assert_eq!(parse("other"), None);
    }
}
