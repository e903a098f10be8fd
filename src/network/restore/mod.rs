//! One long-lived `iptables-restore --noflush`, fed a transaction at a time
//! and acknowledged by the kernel's "new generation" announcement (the
//! nftables multicast group carries the pid of the process that committed).
//!
//! Why not a process per change: a process that deleted rules pays for their
//! release when it exits (closing a netfilter netlink socket flushes
//! nf_tables' destroy work, an RCU grace period: ~15 ms on these machines,
//! whatever the table size), plus the spawn. iptables-restore applies each
//! `COMMIT` block as it reads it, so one child serves every change; iptables
//! stays the tool (what hosts running Docker use), only its lifetime changes.
//!
//! The pid announced is the kernel's (the initial pid namespace's): an agent
//! in a pid namespace of its own learns its child's from a probe, a chain
//! with a unique name made and removed, whose commit is announced right
//! after the chain's own messages (one transaction's announcements are sent
//! together, under the commit lock).
//!
//! Hand-written: the parse of three netlink message types (NFT_MSG_NEWGEN,
//! NEWCHAIN, DELCHAIN). The netlink-packet-* crates have no nftables family.

mod nfnl;

use super::iptables::FirewallError;
use nfnl::{notes, Note, NFNLGRP_NFTABLES};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recv, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, ChildStderr, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CMD: &str = "iptables-restore --noflush -w 5";
/// How long one transaction may take before the child is killed.
const TIMEOUT: Duration = Duration::from_secs(20);

struct Restorer {
    child: Child,
    /// None once closed (the child then finishes and exits).
    stdin: Option<ChildStdin>,
    stderr: ChildStderr,
    /// Subscribed to the nftables group: sees every commit in this netns.
    mon: OwnedFd,
    /// Lines written to the child so far: its error messages count from its
    /// first input line, ours from the transaction's.
    fed: usize,
    /// The child's pid as the kernel announces it (learnt by the probe).
    kpid: u32,
}

static RESTORER: Mutex<Option<Restorer>> = Mutex::new(None);

/// Set when this host gives no usable announcements (a legacy iptables
/// sends none): every transaction then gets a process of its own,
/// acknowledged by its exit status.
static NO_ACKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Drop for Restorer {
    /// A replaced or failed child is killed and reaped, never left mid-way
    /// (its late commits would be counted for the next transaction).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_err(source: std::io::Error) -> FirewallError {
    FirewallError::Spawn {
        cmd: CMD.into(),
        source,
    }
}

impl Restorer {
    fn spawn() -> Result<Restorer, FirewallError> {
        // subscribe before the child exists, so no commit of it is missed
        let mon = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            SockProtocol::NetlinkNetFilter,
        )
        .map_err(|e| spawn_err(e.into()))?;
        let _ = setsockopt(&mon, sockopt::RcvBuf, &(1 << 20));
        bind(
            mon.as_raw_fd(),
            &NetlinkAddr::new(0, 1 << (NFNLGRP_NFTABLES - 1)),
        )
        .map_err(|e| spawn_err(e.into()))?;
        let mut child = spawn_restore()?;
        let stdin = child.stdin.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        nix::fcntl::fcntl(
            stderr.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .map_err(|e| spawn_err(e.into()))?;
        Ok(Restorer {
            child,
            stdin: Some(stdin),
            stderr,
            mon,
            fed: 0,
            kpid: 0,
        })
    }

    /// Whether this child's commits are announced, and with which pid: a
    /// probe transaction (a chain of a unique name made and removed) must be
    /// seen within 2 s. Sets `kpid`.
    fn acknowledges(&mut self) -> bool {
        static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("HYDRA-PROBE-{}-{n}", std::process::id());
        let probe = format!("*filter\n:{name} - [0:0]\n-X {name}\nCOMMIT\n");
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        if stdin
            .write_all(probe.as_bytes())
            .and_then(|()| stdin.flush())
            .is_err()
        {
            return false;
        }
        self.fed += probe.lines().count();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut after_probe = false;
        while Instant::now() < deadline {
            let mut fds = [PollFd::new(self.mon.as_fd(), PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(100u16));
            let Ok(notes) = self.notes() else {
                return false;
            };
            for note in notes {
                match note {
                    Note::Chain(c) => after_probe |= c == name.as_bytes(),
                    Note::Gen(pid) if after_probe => {
                        self.kpid = pid;
                        return true;
                    }
                    Note::Gen(_) => {}
                }
            }
        }
        false
    }

    /// Reads the announcements queued on the monitor socket: how many were
    /// commits of this child. Err(()) if some were lost (the socket
    /// overflowed).
    fn count_commits(&self) -> Result<usize, ()> {
        let pid = self.kpid;
        Ok(self
            .notes()?
            .iter()
            .filter(|n| matches!(n, Note::Gen(p) if *p == pid))
            .count())
    }

    /// Every announcement queued on the monitor socket, in order. Err(()) if
    /// some were lost.
    fn notes(&self) -> Result<Vec<Note>, ()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = Vec::new();
        loop {
            match recv(self.mon.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(len) => out.extend(notes(&buf[..len])),
                Err(nix::errno::Errno::EAGAIN) => return Ok(out),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return Err(()),
            }
        }
    }

    /// Writes `input` to the child; returns how many lines it had been fed
    /// before (its error messages count lines from its first).
    fn feed(&mut self, input: &str) -> (usize, std::io::Result<()>) {
        let wrote = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(input.as_bytes())
                .and_then(|()| stdin.flush()),
            None => Err(std::io::ErrorKind::BrokenPipe.into()),
        };
        let fed = self.fed;
        self.fed += input.lines().count();
        (fed, wrote)
    }

    /// Waits at most `left` (and a minute) for the monitor socket or the
    /// child's stderr: whether each is ready.
    fn wait_ready(&self, left: Duration) -> Result<(bool, bool), FirewallError> {
        let mut fds = [
            PollFd::new(self.mon.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.stderr.as_fd(), PollFlags::POLLIN),
        ];
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(spawn_err(e.into())),
        }
        Ok((
            fds[0].revents().is_some_and(|f| !f.is_empty()),
            fds[1].revents().is_some_and(|f| !f.is_empty()),
        ))
    }

    /// A failed block ends iptables-restore: the child is killed and reaped
    /// and its words collected, line numbers counted from `input`'s (`fed`
    /// lines were written before it).
    fn failure(&mut self, stderr: &mut Vec<u8>, input: &str, fed: usize) -> FirewallError {
        let _ = self.child.kill();
        let _ = self.child.wait();
        read_stderr(&mut self.stderr, stderr);
        FirewallError::Failed {
            cmd: CMD.into(),
            stderr: relative_lines(&String::from_utf8_lossy(stderr), input, fed),
        }
    }
}

/// Reads what a non-blocking pipe has; true at end of file (the child is
/// exiting).
fn read_stderr(pipe: &mut ChildStderr, into: &mut Vec<u8>) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

/// iptables-restore's "line N failed" counts from the child's first line:
/// rewritten to count from this input's, with the line itself appended.
fn relative_lines(stderr: &str, input: &str, fed: usize) -> String {
    let text = stderr.trim();
    let Some(at) = text.find("line ") else {
        return text.to_string();
    };
    let digits: String = text[at + 5..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let Some(k) = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_sub(fed))
    else {
        return text.to_string();
    };
    let rest = &text[at + 5 + digits.len()..];
    match input.lines().nth(k.wrapping_sub(1)) {
        Some(line) if k > 0 => format!("{}line {k}{rest} ({line})", &text[..at]),
        _ => text.to_string(),
    }
}

/// How many `*table ... COMMIT` blocks of `input` change something (an empty
/// block commits nothing, so nothing would be announced).
fn commits_in(input: &str) -> usize {
    let mut n = 0;
    let mut lines_in_block = 0;
    for l in input.lines().map(str::trim) {
        if l.starts_with('*') {
            lines_in_block = 0;
        } else if l == "COMMIT" {
            n += usize::from(lines_in_block > 0);
        } else if !l.is_empty() && !l.starts_with('#') {
            lines_in_block += 1;
        }
    }
    n
}

/// Applies an `iptables-restore --noflush` input (one or more `*table ...
/// COMMIT` blocks, none of them empty) and returns once the kernel has
/// committed every block, or with iptables-restore's error.
pub fn apply(input: &str) -> Result<(), FirewallError> {
    let blocks = commits_in(input);
    if blocks == 0 {
        return Ok(());
    }
    let mut guard = RESTORER.lock().unwrap_or_else(|e| e.into_inner());
    if NO_ACKS.load(std::sync::atomic::Ordering::Relaxed) {
        return apply_once(input);
    }
    let Some(r) = running(&mut guard)? else {
        return apply_once(input);
    };
    // what is queued is about earlier commits (ours were all counted)
    if r.count_commits().is_err() {
        *guard = None;
        return apply_once(input);
    }
    let mut stderr = Vec::new();
    match transaction(r, input, blocks, &mut stderr) {
        Ok(Waited::Acknowledged) => {}
        // announcements were lost: the exit status decides
        Ok(Waited::Lost) => return exit_status(guard.take().expect("set"), &mut stderr),
        Err(e) => {
            // a failed or stuck child is not used again
            *guard = None;
            return Err(e);
        }
    }
    if !stderr.is_empty() {
        tracing::warn!(stderr = %String::from_utf8_lossy(&stderr).trim(), "iptables-restore");
    }
    Ok(())
}

/// The child to feed: the one in `slot` while it runs, else a new one
/// (put in `slot`). None when a new one's commits turn out not to be
/// announced: NO_ACKS is then set, and no child kept.
fn running(slot: &mut Option<Restorer>) -> Result<Option<&mut Restorer>, FirewallError> {
    if let Some(r) = slot.as_mut() {
        if !matches!(r.child.try_wait(), Ok(None)) {
            *slot = None;
        }
    }
    if slot.is_none() {
        if is_legacy() {
            NO_ACKS.store(true, std::sync::atomic::Ordering::Relaxed);
            return Ok(None);
        }
        let mut r = Restorer::spawn()?;
        if !r.acknowledges() {
            tracing::warn!("iptables-restore commits are not announced with its pid here: one process per firewall change");
            NO_ACKS.store(true, std::sync::atomic::Ordering::Relaxed);
            drop(r);
            return Ok(None);
        }
        *slot = Some(r);
    }
    Ok(slot.as_mut())
}

/// Whether iptables-restore is the legacy one (its commits are not
/// announced: no probe is waited for).
fn is_legacy() -> bool {
    Command::new("iptables-restore")
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("legacy"))
}

/// How a transaction's wait ended without an error: every block's commit
/// announced, or announcements lost (the monitor socket overflowed).
enum Waited {
    Acknowledged,
    Lost,
}

/// Feeds `input` (`blocks` blocks) to the child and waits for the kernel to
/// announce that many commits of it. An error leaves the child killed (or
/// gone): it must not be used again.
fn transaction(
    r: &mut Restorer,
    input: &str,
    blocks: usize,
    stderr: &mut Vec<u8>,
) -> Result<Waited, FirewallError> {
    let (fed, wrote) = r.feed(input);
    let deadline = Instant::now() + TIMEOUT;
    if wrote.is_err() {
        // the child had exited (a broken pipe): its stderr says why
        return Err(r.failure(stderr, input, fed));
    }
    let mut seen = 0;
    while seen < blocks {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let e = r.failure(stderr, input, fed);
            return Err(FirewallError::Other(format!(
                "{CMD}: no commit announced within {TIMEOUT:?} ({e})"
            )));
        }
        let (mon_ready, err_ready) = r.wait_ready(left)?;
        if mon_ready {
            match r.count_commits() {
                Ok(n) => seen += n,
                Err(()) => return Ok(Waited::Lost),
            }
        }
        if err_ready && seen < blocks && read_stderr(&mut r.stderr, stderr) {
            return Err(r.failure(stderr, input, fed));
        }
    }
    Ok(Waited::Acknowledged)
}

/// The outcome of a child whose announcements were lost: its input closed,
/// it finishes and its exit status says whether everything was committed.
fn exit_status(mut g: Restorer, stderr: &mut Vec<u8>) -> Result<(), FirewallError> {
    drop(g.stdin.take());
    let st = g.child.wait().map_err(spawn_err)?;
    read_stderr(&mut g.stderr, stderr);
    match st.success() {
        true => Ok(()),
        false => Err(failed(stderr)),
    }
}

/// A failed run of the child, in its own words.
fn failed(stderr: &[u8]) -> FirewallError {
    FirewallError::Failed {
        cmd: CMD.into(),
        stderr: String::from_utf8_lossy(stderr).trim().to_string(),
    }
}

/// `iptables-restore --noflush` with its stdin and stderr piped.
fn spawn_restore() -> Result<Child, FirewallError> {
    Command::new("iptables-restore")
        .args(["--noflush", "-w", "5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)
}

/// A process for this input alone (the fallback when announcements were lost).
fn apply_once(input: &str) -> Result<(), FirewallError> {
    let mut child = spawn_restore()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input.as_bytes())
        .map_err(spawn_err)?;
    let out = child.wait_with_output().map_err(spawn_err)?;
    if !out.status.success() {
        return Err(failed(&out.stderr));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
