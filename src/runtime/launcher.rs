//! The agent's side of the launcher helper: one `hydra-agent __launcher`
//! process, exec'd once, that forks a shim per start request.

use super::{Launch, Ready, RuntimeError, LAUNCHER_ARG};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The agent's handle on its launcher helper (see [`shim::launcher_main`]).
/// Requests are serialised; a dead launcher is restarted on the next request.
pub struct Launcher {
    exe: PathBuf,
    arg: PathBuf,
    /// v1: `cgroup.procs` of the shared devices cgroup the launcher joins,
    /// so every shim and container it forks is born under the device allow
    /// list (no per-container devices cgroup, no migration per start).
    devices_procs: Option<PathBuf>,
    /// How long a start may take before it is given up.
    deadline: std::time::Duration,
    /// Network namespaces the launcher makes ahead (see [`super::netpool`]).
    pool: Option<super::netpool::PoolSpec>,
    proc: std::sync::Mutex<Option<LauncherProc>>,
}

struct LauncherProc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Launcher {
    /// `tag` goes on the helper's (and so the shims') command line, so ps
    /// tells which agent they belong to.
    pub fn new(
        exe: &Path,
        tag: &Path,
        devices_procs: Option<PathBuf>,
        deadline: std::time::Duration,
        pool: Option<super::netpool::PoolSpec>,
    ) -> Launcher {
        Launcher {
            exe: exe.to_path_buf(),
            arg: tag.to_path_buf(),
            devices_procs,
            deadline,
            pool,
            proc: std::sync::Mutex::new(None),
        }
    }

    fn spawn(&self) -> Result<LauncherProc, RuntimeError> {
        let mut child = Command::new(&self.exe)
            .arg(LAUNCHER_ARG)
            .arg(&self.arg)
            .args(self.pool.as_ref().map(|p| p.to_arg()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .map_err(|source| RuntimeError::Spawn {
                exe: self.exe.clone(),
                source,
            })?;
        if let Some(procs) = &self.devices_procs {
            // before its first request; failing closed
            if let Err(source) = std::fs::write(procs, child.id().to_string()) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(RuntimeError::JoinDevices {
                    path: procs.clone(),
                    source,
                });
            }
        }
        let stdin = child.stdin.take().expect("piped");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Ok(LauncherProc {
            child,
            stdin,
            stdout,
        })
    }

    /// Whether the helper can take a request: its lock is free within the
    /// start deadline (a start in progress is waited for) and the helper, if
    /// spawned, is alive or can be respawned on the next request.
    pub fn responsive(&self) -> bool {
        let deadline = std::time::Instant::now() + self.deadline;
        loop {
            match self.proc.try_lock() {
                Ok(mut g) => {
                    return match g.as_mut() {
                        Some(p) => match p.child.try_wait() {
                            Ok(None) => true,
                            // ended: the next request spawns another one
                            Ok(Some(_)) => {
                                *g = None;
                                true
                            }
                            Err(_) => false,
                        },
                        None => true,
                    };
                }
                Err(std::sync::TryLockError::Poisoned(_)) => return false,
                Err(std::sync::TryLockError::WouldBlock) => {
                    if std::time::Instant::now() > deadline {
                        return false;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            }
        }
    }

    /// Starts a shim for `plan` and blocks until the container has exec'd.
    /// Call from a blocking thread.
    pub fn start(&self, plan: &Launch) -> Result<Ready, RuntimeError> {
        let data = serde_json::to_vec(plan).expect("plans serialize");
        let mut guard = self.proc.lock().unwrap();
        let mut last = String::new();
        for _attempt in 0..2 {
            if guard.is_none() {
                *guard = Some(self.spawn()?);
            }
            let p = guard.as_mut().expect("spawned");
            let mut line = String::new();
            let sent = p
                .stdin
                .write_all(&(data.len() as u32).to_le_bytes())
                .and_then(|()| p.stdin.write_all(&data))
                .and_then(|()| p.stdin.flush());
            if sent.is_ok() && !readable(&p.stdout, self.deadline) {
                // Stuck before exec (the launcher waits on the shim, the
                // shim on the init): the launcher goes (a new one serves the
                // next start); the caller's teardown kills what is in the
                // container's cgroup, which releases the shim.
                let mut stuck = guard.take().expect("spawned");
                let _ = stuck.child.kill();
                let _ = stuck.child.wait();
                return Err(RuntimeError::Timeout {
                    secs: self.deadline.as_secs(),
                });
            }
            if sent.is_ok() && p.stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
                return match serde_json::from_str::<Ready>(&line) {
                    Ok(Ready::Failed { field, message }) => {
                        Err(RuntimeError::Failed { field, message })
                    }
                    Ok(ok) => Ok(ok),
                    Err(e) => Err(RuntimeError::NoReport {
                        detail: format!("unreadable report {line:?}: {e}"),
                    }),
                };
            }
            // The launcher died: reap it and try once more with a new one.
            let mut dead = guard.take().expect("spawned");
            let _ = dead.child.kill();
            last = format!("{:?}", dead.child.wait());
        }
        Err(RuntimeError::NoReport {
            detail: format!("the launcher died ({last})"),
        })
    }
}

impl Drop for Launcher {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.get_mut().ok().and_then(Option::take) {
            drop(p.stdin);
            let _ = p.child.wait();
        }
    }
}

/// Whether the launcher's report can be read within `deadline` (already
/// buffered, or the pipe becomes readable: data or end of file).
fn readable(out: &BufReader<ChildStdout>, deadline: std::time::Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    if !out.buffer().is_empty() {
        return true;
    }
    let until = std::time::Instant::now() + deadline;
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        let ms = PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
            .unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(out.get_ref().as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, ms) {
            Ok(0) if left.is_zero() => return false,
            Ok(0) => continue,
            Ok(_) => return true,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true, // let the read report it
        }
    }
}
