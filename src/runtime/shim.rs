//! The per-container shim: a small single-threaded process (no tokio) that
//! outlives the agent. It clones the container's init, puts it in its cgroup,
//! reports readiness, copies stdout/stderr into the log files and writes the
//! exit status file when the container ends.

use super::{init, start_time, ExitRecord, Launch, Ready};
use crate::telemetry::logs::{LineSplitter, LogWriter};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{dup2, pipe2, setsid, ForkResult};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

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
        let line = match launch_one(&plan) {
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
fn launch_one(plan: &[u8]) -> Result<Vec<u8>, HelperError> {
    let launch: Launch = serde_json::from_slice(plan).map_err(|e| format!("parse plan: {e}"))?;
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
                    let code = match shim(&launch, File::from(report_w)) {
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
            drop(report_w);
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
fn shim(launch: &Launch, mut out: File) -> Result<(), HelperError> {
    let launch = launch.clone();
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
    // SAFETY: the shim is a fresh single-threaded fork; it owns only
    // `devnull` and `out` from here (the launcher's stdin/stdout copies and
    // anything else inherited are closed and never touched again).
    unsafe { crate::sys::close_fds_except(&[devnull.as_raw_fd(), out.as_raw_fd()]) };

    let cloexec = OFlag::O_CLOEXEC;
    let (out_r, out_w) = pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;
    let (err_r, err_w) = pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;
    let (sync_r, sync_w) = pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;
    let (fail_r, fail_w) = pipe2(cloexec).map_err(|e| format!("pipe: {e}"))?;

    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET;
    let (o, e, sr, fw, dn) = (
        out_w.as_raw_fd(),
        err_w.as_raw_fd(),
        sync_r.as_raw_fd(),
        fail_w.as_fd(),
        devnull.as_raw_fd(),
    );
    let launch_c = launch.clone();
    // The host's side of the network, opened here (in the host's namespace)
    // and used by the child to plug its veth into the bridge.
    let mut host_net = match &launch.net {
        Some(_) => Some((
            crate::network::netlink::Netlink::new().map_err(|e| format!("netlink: {e}"))?,
            File::open("/proc/self/ns/net").map_err(|e| format!("open netns: {e}"))?,
        )),
        None => None,
    };
    // the user namespace, made and mapped here (the init, still host root,
    // enters it last)
    let userns = match launch.userns {
        Some(base) => Some(
            // SAFETY: the shim is single-threaded.
            unsafe { crate::sys::new_userns(base, crate::model::USERNS_SIZE) }
                .map_err(|e| format!("user namespace: {e}"))?,
        ),
        None => None,
    };
    let mut init = || {
        // In the child: stdio to the pipes, wait until we are in the cgroup.
        if dup2(dn, 0).is_err() || dup2(o, 1).is_err() || dup2(e, 2).is_err() {
            return 126;
        }
        let mut b = [0u8; 1];
        if nix::unistd::read(sr, &mut b) != Ok(1) {
            return 126;
        }
        let host = host_net.as_mut().map(|(nl, ns)| {
            let ns: &File = ns;
            (nl, ns.as_fd())
        });
        let err = init::run(&launch_c, host, fw, userns.as_ref().map(|n| n.as_fd()));
        let msg = serde_json::to_vec(&err).unwrap_or_default();
        let _ = nix::unistd::write(fw, &msg);
        127
    };
    // On v2 the child is born in its cgroup (clone3 CLONE_INTO_CGROUP); on v1
    // or an older kernel it is moved there below, before it is released.
    let v2_dir = launch
        .cgroup_v2
        .then(|| {
            launch
                .cgroup_procs
                .first()
                .and_then(|p| p.parent())
                .map(|d| d.to_path_buf())
        })
        .flatten();
    let v2_fd = v2_dir.as_ref().and_then(|d| File::open(d).ok());
    let mut born_in_cgroup = false;
    let child = match &v2_fd {
        // SAFETY (the three clones): the shim is single-threaded.
        Some(fd) => match unsafe { crate::sys::clone3_into_cgroup(flags, fd.as_fd(), &mut init) } {
            Ok(pid) => {
                born_in_cgroup = true;
                Ok(pid)
            }
            Err(
                nix::errno::Errno::ENOSYS | nix::errno::Errno::E2BIG | nix::errno::Errno::EINVAL,
            ) => unsafe { crate::sys::clone_into_namespaces(flags, &mut init) },
            Err(e) => Err(e),
        },
        None => unsafe { crate::sys::clone_into_namespaces(flags, &mut init) },
    }
    .map_err(|e| format!("clone: {e}"))?;
    drop((out_w, err_w, sync_r, fail_w, host_net, userns));

    for f in launch.cgroup_procs.iter().filter(|_| !born_in_cgroup) {
        if let Err(e) = fs::write(f, child.as_raw().to_string()) {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            report(
                &mut out,
                &Ready::Failed {
                    field: "limits".into(),
                    message: format!("cannot move the container into {}: {e}", f.display()),
                },
            )
            .ok();
            return Ok(());
        }
    }
    File::from(sync_w)
        .write_all(b"g")
        .map_err(|e| format!("release child: {e}"))?;
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
            &mut out,
            &Ready::Failed {
                field: e.field,
                message: e.message,
            },
        )
        .ok();
        return Ok(());
    }
    let me = std::process::id() as i32;
    report(
        &mut out,
        &Ready::Ok {
            pid: child.as_raw(),
            pid_start: start_time(child.as_raw()).unwrap_or(0),
            shim_pid: me,
            shim_start: start_time(me).unwrap_or(0),
        },
    )
    .map_err(|e| format!("report: {e}"))?;
    drop(out);

    if let Err(e) = copy_logs(&launch, out_r, err_r) {
        eprintln!("hydra shim {}: logs: {e}", launch.name);
    }
    let (exit_code, signal) = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => break (Some(c), None),
            Ok(WaitStatus::Signaled(_, s, _)) => break (None, Some(s as i32)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(HelperError(format!("waitpid: {e}"))),
        }
    };
    let rec = ExitRecord {
        exit_code,
        signal,
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    };
    // Not fsynced: after a power loss the exit of a process is moot.
    crate::fsutil::write_atomic(
        &launch.exit_file,
        &serde_json::to_vec(&rec).expect("serializes"),
        false,
    )
    .map_err(|e| HelperError(format!("{e}: {}", e.source)))
}

/// Copies both pipes into the log until both reach end of file.
fn copy_logs(l: &Launch, out: OwnedFd, err: OwnedFd) -> std::io::Result<()> {
    let mut w = LogWriter::open(&l.log_dir, l.log_max_size, l.log_max_files)?;
    let mut streams = [
        (Some(File::from(out)), "stdout", LineSplitter::default()),
        (Some(File::from(err)), "stderr", LineSplitter::default()),
    ];
    let mut buf = vec![0u8; 64 * 1024];
    while streams.iter().any(|s| s.0.is_some()) {
        let mut ready = [false; 2];
        {
            let mut fds: Vec<PollFd> = Vec::new();
            let mut idx = Vec::new();
            for (i, s) in streams.iter().enumerate() {
                if let Some(f) = &s.0 {
                    fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                    idx.push(i);
                }
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            for (k, fd) in fds.iter().enumerate() {
                if fd.revents().is_some_and(|r| !r.is_empty()) {
                    ready[idx[k]] = true;
                }
            }
        }
        for (i, s) in streams.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            let Some(f) = s.0.as_mut() else { continue };
            let n = match f.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            let name = s.1;
            let mut res = Ok(());
            let mut emit = |line: &[u8], partial: bool| {
                if res.is_ok() {
                    res = w.write(name, line, partial);
                }
            };
            if n == 0 {
                s.2.finish(&mut emit);
                s.0 = None;
            } else {
                s.2.feed(&buf[..n], &mut emit);
            }
            res?;
        }
    }
    Ok(())
}
