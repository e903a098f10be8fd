//! The per-container shim: a small single-threaded process (no tokio) that
//! outlives the agent. It clones the container's init, puts it in its cgroup,
//! reports readiness, copies stdout/stderr into the log files and writes the
//! exit status file when the container ends.

mod exit;
mod relay;

use super::netpool::{Entry, Pool, PoolSpec};
use super::{init, start_time, Launch, Ready};
use exit::{record_exit, reserve_exit_file};
use nix::fcntl::OFlag;
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::{dup2, pipe2, setsid, ForkResult, Pid};
use relay::copy_logs;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;

/// Entry point for `hydra-agent __launcher STATE_DIR`: a single-threaded
/// helper, exec'd once by the agent, that forks one shim per request. Forking
/// a small process is much cheaper than exec'ing the agent binary per
/// container. Requests on stdin: u32 length (little endian) + plan JSON;
/// answers on stdout: one [`Ready`] JSON line each. Exits at EOF (the agent
/// is gone); the shims it made are detached and live on.
pub fn launcher_main() -> ! {
    crate::sys::ignore_signals(&[Signal::SIGHUP, Signal::SIGINT, Signal::SIGPIPE]);
    // compiled once here, inherited by every shim and container init forked
    // from us; a failure is reported by each start that needs it
    if let Err(e) = super::security::prepare() {
        eprintln!("hydra launcher: {e}");
    }
    let mut pool = PoolSpec::from_args(std::env::args()).and_then(|s| {
        // SAFETY: the launcher is single-threaded.
        unsafe { Pool::start(s) }
            .map_err(|e| eprintln!("hydra launcher: no namespace pool: {e}"))
            .ok()
    });
    let mut stdin = std::io::stdin().lock();
    loop {
        let mut len = [0u8; 4];
        if stdin.read_exact(&mut len).is_err() {
            std::process::exit(0);
        }
        let mut plan = vec![0u8; u32::from_le_bytes(len) as usize];
        if stdin.read_exact(&mut plan).is_err() {
            std::process::exit(0);
        }
        let result = launch_one(&plan, pool.as_mut());
        if let Some(p) = pool.as_mut() {
            p.settle();
        }
        let line = match result {
            Ok(line) => line,
            Err(e) => {
                let mut l = serde_json::to_vec(&Ready::Failed {
                    field: "runtime".into(),
                    message: e.to_string(),
                })
                .expect("serializes");
                l.push(b'\n');
                l
            }
        };
        let mut out = std::io::stdout().lock();
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            std::process::exit(0);
        }
    }
}

/// Forks a detached shim (double fork) and relays its one-line report.
fn launch_one(plan: &[u8], pool: Option<&mut Pool>) -> Result<Vec<u8>, HelperError> {
    let launch: Launch = serde_json::from_slice(plan).map_err(|e| format!("parse plan: {e}"))?;
    let netns = pool
        .filter(|p| p.suits(launch.net.is_some()))
        .and_then(Pool::take);
    let (report_r, report_w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the launcher is single-threaded (exec'd for this, no runtime).
    match unsafe { crate::sys::fork_single_threaded() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Child => {
            drop(report_r);
            // Intermediate: fork the shim and exit, so the shim is reparented
            // to init (or the service manager) and never depends on us.
            // SAFETY: a fork of the single-threaded launcher is single-threaded.
            match unsafe { crate::sys::fork_single_threaded() } {
                Ok(ForkResult::Child) => {
                    let code = match shim(&launch, File::from(report_w), netns) {
                        Ok(()) => 0,
                        Err(e) => {
                            eprintln!("hydra shim {}: {e}", launch.name);
                            1
                        }
                    };
                    std::process::exit(code)
                }
                _ => std::process::exit(0),
            }
        }
        ForkResult::Parent { child } => {
            drop((report_w, netns));
            let _ = waitpid(child, None);
            let mut line = Vec::new();
            let mut r = std::io::BufReader::new(File::from(report_r));
            std::io::BufRead::read_until(&mut r, b'\n', &mut line)
                .map_err(|e| format!("read shim report: {e}"))?;
            if line.is_empty() {
                return Err(HelperError(format!(
                    "the shim of {} died before reporting (see its shim.log)",
                    launch.name
                )));
            }
            Ok(line)
        }
    }
}

fn report(out: &mut File, r: &Ready) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).expect("serializes");
    line.push(b'\n');
    out.write_all(&line)
}

/// A failure of the launcher or of a shim, reported as text: to the agent
/// over the launcher's pipe, or into the shim's log.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HelperError(String);

impl From<String> for HelperError {
    fn from(s: String) -> HelperError {
        HelperError(s)
    }
}

/// The shim proper, in the process forked for it; reports once on `out`.
fn shim(launch: &Launch, mut out: File, netns: Option<Entry>) -> Result<(), HelperError> {
    let keep = netns.as_ref().map(|e| e.ns.as_raw_fd());
    let devnull = detach(launch, &out, keep)?;
    let exit_slot = reserve_exit_file(&launch.exit_file);
    let (ours, theirs) = pipes()?;
    let (child, placed) = clone_init(launch, &devnull, theirs, netns)?;
    if !placed && !place_in_cgroup(launch, child, &mut out) {
        return Ok(());
    }
    File::from(ours.sync_w)
        .write_all(b"g")
        .map_err(|e| format!("release child: {e}"))?;
    if !await_init(child, ours.fail_r, &mut out)? {
        return Ok(());
    }
    drop(out);

    if let Err(e) = copy_logs(launch, ours.out_r, ours.err_r) {
        eprintln!("hydra shim {}: logs: {e}", launch.name);
    }
    record_exit(launch, child, exit_slot)
}

/// Detaches the shim: a session of its own, stdin and stdout on /dev/null,
/// stderr into its log, every inherited fd closed but `out`. Returns the
/// /dev/null it keeps (the init's stdin).
fn detach(launch: &Launch, out: &File, keep: Option<i32>) -> Result<File, HelperError> {
    setsid().map_err(|e| format!("setsid: {e}"))?;
    let devnull = File::open("/dev/null").map_err(|e| format!("/dev/null: {e}"))?;
    let shim_log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.shim_log)
        .map_err(|e| format!("open {}: {e}", launch.shim_log.display()))?;
    dup2(devnull.as_raw_fd(), 0).map_err(|e| format!("dup2: {e}"))?;
    dup2(devnull.as_raw_fd(), 1).map_err(|e| format!("dup2: {e}"))?;
    dup2(shim_log.as_raw_fd(), 2).map_err(|e| format!("dup2: {e}"))?;
    drop(shim_log);
    crate::sys::set_process_name("hydra-shim");
    let mut fds = vec![devnull.as_raw_fd(), out.as_raw_fd()];
    fds.extend(keep);
    // SAFETY: the shim is a fresh single-threaded fork; it owns only
    // `devnull`, `out` and `keep` (a pooled namespace) from here (the
    // launcher's stdin/stdout copies and anything else inherited are closed
    // and never touched again).
    unsafe { crate::sys::close_fds_except(&fds) };
    Ok(devnull)
}

/// The shim's ends of the pipes to the container's init: its stdout and
/// stderr, its release, its failure report (closed unread by its exec).
struct ShimEnds {
    out_r: OwnedFd,
    err_r: OwnedFd,
    sync_w: OwnedFd,
    fail_r: OwnedFd,
}

/// The init's ends of the same pipes.
struct InitEnds {
    out_w: OwnedFd,
    err_w: OwnedFd,
    sync_r: OwnedFd,
    fail_w: OwnedFd,
}

fn pipes() -> Result<(ShimEnds, InitEnds), HelperError> {
    let cloexec = OFlag::O_CLOEXEC;
    let (out_r, out_w) = pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;
    let (sync_r, sync_w) = pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;
    let (fail_r, fail_w) = pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;
    Ok((
        ShimEnds {
            out_r,
            err_r,
            sync_w,
            fail_r,
        },
        InitEnds {
            out_w,
            err_w,
            sync_r,
            fail_w,
        },
    ))
}

/// The host's side of the network, opened here (in the host's namespace)
/// and used by the child to plug its veth into the bridge.
type HostSide = (crate::network::netlink::Netlink, File);

/// The host's side of the network (if any) and the user namespace (if any),
/// made and mapped here (the init, still host root, enters it last).
fn host_side(launch: &Launch) -> Result<(Option<HostSide>, Option<OwnedFd>), HelperError> {
    let host_net = match &launch.net {
        Some(_) => Some((
            crate::network::netlink::Netlink::new().map_err(|e| format!("netlink: {e}"))?,
            File::open("/proc/self/ns/net").map_err(|e| format!("open netns: {e}"))?,
        )),
        None => None,
    };
    let userns = match launch.userns {
        Some(base) => Some(
            // SAFETY: the shim is single-threaded.
            unsafe { crate::sys::new_userns(base, crate::model::USERNS_SIZE) }
                .map_err(|e| format!("user namespace: {e}"))?,
        ),
        None => None,
    };
    Ok((host_net, userns))
}

/// v1: the `tasks` files of the container's cgroups, opened for the init
/// to move itself (writing `0`: this thread alone). A thread moving itself
/// takes no global lock, where writing a pid to `cgroup.procs` takes the
/// threadgroup rwsem for writing and waits for an RCU grace period, long
/// while network namespaces are being torn down. Empty on v2 (the child is
/// born in its cgroup) or if one cannot be opened (the shim moves it).
fn own_tasks_files(launch: &Launch) -> Vec<File> {
    if launch.cgroup_v2 {
        return Vec::new();
    }
    let files: Result<Vec<File>, _> = launch
        .cgroup_procs
        .iter()
        .map(|p| {
            fs::OpenOptions::new()
                .write(true)
                .open(p.with_file_name("tasks"))
        })
        .collect();
    files.unwrap_or_default()
}

/// Clones the container's init into its new namespaces: in the child, stdio
/// to the pipes, a wait for the shim's go, on v1 a move into its cgroups,
/// then [`init::run`]. Returns its pid and whether it is in its cgroups
/// (born there on v2, moved by itself on v1) or to be moved by the shim.
fn clone_init(
    launch: &Launch,
    devnull: &File,
    ends: InitEnds,
    netns: Option<Entry>,
) -> Result<(Pid, bool), HelperError> {
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC;
    if netns.is_none() {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    let (o, e, sr, fw, dn) = (
        ends.out_w.as_raw_fd(),
        ends.err_w.as_raw_fd(),
        ends.sync_r.as_raw_fd(),
        ends.fail_w.as_fd(),
        devnull.as_raw_fd(),
    );
    let (mut host_net, userns) = host_side(launch)?;
    let tasks = own_tasks_files(launch);
    let mut body = || {
        // In the child: stdio to the pipes, wait until we are in the cgroup.
        if dup2(dn, 0).is_err() || dup2(o, 1).is_err() || dup2(e, 2).is_err() {
            return 126;
        }
        let mut b = [0u8; 1];
        if nix::unistd::read(sr, &mut b) != Ok(1) {
            return 126;
        }
        for (f, p) in tasks.iter().zip(&launch.cgroup_procs) {
            if let Err(e) = nix::unistd::write(f, b"0") {
                let err = init::fail(
                    "limits",
                    format!("cannot move the container into {}: {e}", p.display()),
                );
                let _ = nix::unistd::write(fw, &serde_json::to_vec(&err).unwrap_or_default());
                return 127;
            }
        }
        if let Some(e) = &netns {
            if let Err(err) = nix::sched::setns(e.ns.as_fd(), CloneFlags::CLONE_NEWNET) {
                let err = init::fail(
                    "network",
                    format!("cannot enter the prepared network namespace: {err}"),
                );
                let _ = nix::unistd::write(fw, &serde_json::to_vec(&err).unwrap_or_default());
                return 127;
            }
        }
        let host = host_net.as_mut().map(|(nl, ns)| {
            let ns: &File = ns;
            (nl, ns.as_fd())
        });
        let peer = netns.as_ref().and_then(|e| e.peer.as_deref());
        let err = init::run(launch, host, fw, userns.as_ref().map(|n| n.as_fd()), peer);
        let msg = serde_json::to_vec(&err).unwrap_or_default();
        let _ = nix::unistd::write(fw, &msg);
        127
    };
    let v2_fd = cgroup_v2_dir(launch).and_then(|d| File::open(d).ok());
    let (child, born) =
        clone_child(flags, v2_fd.as_ref(), &mut body).map_err(|e| format!("clone: {e}"))?;
    let moves_itself = !tasks.is_empty();
    drop((ends, host_net, userns, tasks, netns));
    Ok((child, born || moves_itself))
}

/// The cgroup v2 directory of the container (the parent of its
/// `cgroup.procs`), on a v2 host.
fn cgroup_v2_dir(launch: &Launch) -> Option<PathBuf> {
    launch
        .cgroup_v2
        .then(|| {
            launch
                .cgroup_procs
                .first()
                .and_then(|p| p.parent())
                .map(|d| d.to_path_buf())
        })
        .flatten()
}

/// On v2 the child is born in its cgroup (clone3 CLONE_INTO_CGROUP); on v1
/// or an older kernel it is moved there later, before it is released. The
/// pid, and whether it was born in its cgroup.
fn clone_child(
    flags: CloneFlags,
    v2_fd: Option<&File>,
    body: &mut dyn FnMut() -> isize,
) -> nix::Result<(Pid, bool)> {
    let Some(fd) = v2_fd else {
        // SAFETY: the shim is single-threaded.
        return unsafe { crate::sys::clone_into_namespaces(flags, body) }.map(|p| (p, false));
    };
    // SAFETY: the shim is single-threaded.
    match unsafe { crate::sys::clone3_into_cgroup(flags, fd.as_fd(), &mut *body) } {
        Ok(pid) => Ok((pid, true)),
        Err(nix::errno::Errno::ENOSYS | nix::errno::Errno::E2BIG | nix::errno::Errno::EINVAL) => {
            // SAFETY: the shim is single-threaded.
            unsafe { crate::sys::clone_into_namespaces(flags, body) }.map(|p| (p, false))
        }
        Err(e) => Err(e),
    }
}

/// Moves the child into its cgroups (v2 without clone3, or v1 tasks files
/// that could not be opened). If it cannot be, kills it, reports why on
/// `out` and returns false.
fn place_in_cgroup(launch: &Launch, child: Pid, out: &mut File) -> bool {
    for f in &launch.cgroup_procs {
        if let Err(e) = fs::write(f, child.as_raw().to_string()) {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            report(
                out,
                &Ready::Failed {
                    field: "limits".into(),
                    message: format!("cannot move the container into {}: {e}", f.display()),
                },
            )
            .ok();
            return false;
        }
    }
    true
}

/// Waits until the released init has exec'd (its failure pipe closes
/// unwritten) or failed (it wrote why), and reports which on `out`; true
/// once the container runs.
fn await_init(child: Pid, fail_r: OwnedFd, out: &mut File) -> Result<bool, HelperError> {
    let mut failure = Vec::new();
    File::from(fail_r)
        .read_to_end(&mut failure)
        .map_err(|e| format!("read child status: {e}"))?;
    if !failure.is_empty() {
        let _ = waitpid(child, None);
        let e: init::InitError = serde_json::from_slice(&failure).unwrap_or(init::InitError {
            field: "runtime".into(),
            message: String::from_utf8_lossy(&failure).into_owned(),
        });
        report(
            out,
            &Ready::Failed {
                field: e.field,
                message: e.message,
            },
        )
        .ok();
        return Ok(false);
    }
    let me = std::process::id() as i32;
    report(
        out,
        &Ready::Ok {
            pid: child.as_raw(),
            pid_start: start_time(child.as_raw()).unwrap_or(0),
            shim_pid: me,
            shim_start: start_time(me).unwrap_or(0),
        },
    )
    .map_err(|e| format!("report: {e}"))?;
    Ok(true)
}
