//! Starting container processes. The agent re-executes its own binary once as
//! `hydra-agent __launcher` (no tokio, single-threaded) and sends it a
//! [`Launch`] plan per container; the launcher forks a detached shim that
//! clones the container's init into new namespaces,
//! owns its pipes and log files, and records its exit status in a file. So the
//! agent can die at any moment without its containers noticing.

pub mod init;
pub mod security;
pub mod shim;
pub mod sys;
mod user;

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// The argument that makes the binary act as the launcher of shims.
pub const LAUNCHER_ARG: &str = "__launcher";

/// Everything a shim needs to start one run of a container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub name: String,
    pub hostname: String,
    /// Overlay lower layers, top first.
    pub lower: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Mount point of the container's root (exists on the host, mounted only
    /// inside the container's mount namespace).
    pub rootfs: PathBuf,
    pub process: crate::store::ProcessConfig,
    pub cgroup_procs: Vec<PathBuf>,
    /// Mount cgroup2 read-only at /sys/fs/cgroup inside (v2 hosts).
    pub cgroup_v2: bool,
    pub log_dir: PathBuf,
    pub log_max_size: u64,
    pub log_max_files: u32,
    pub exit_file: PathBuf,
    /// The shim's own diagnostics go here.
    pub shim_log: PathBuf,
    /// Host networking (veth, address, route); none: loopback only.
    pub net: Option<crate::network::NetLaunch>,
    pub hardening: security::Hardening,
    /// First host id of the container's user namespace, if it has one.
    pub userns: Option<u32>,
}

/// What the shim reports on its stdout once the container has exec'd (or failed to).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Ready {
    Ok {
        pid: i32,
        pid_start: u64,
        shim_pid: i32,
        shim_start: u64,
    },
    Failed {
        field: String,
        message: String,
    },
}

/// Exit status the shim writes to `exit_file`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitRecord {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub finished_at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot start the shim {exe}: {source}")]
    Spawn {
        exe: PathBuf,
        source: std::io::Error,
    },
    #[error("the shim exited without reporting ({detail})")]
    NoReport { detail: String },
    #[error("{message}")]
    Failed { field: String, message: String },
}

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
    ) -> Launcher {
        Launcher {
            exe: exe.to_path_buf(),
            arg: tag.to_path_buf(),
            devices_procs,
            deadline,
            proc: std::sync::Mutex::new(None),
        }
    }

    fn spawn(&self) -> Result<LauncherProc, RuntimeError> {
        let mut child = Command::new(&self.exe)
            .arg(LAUNCHER_ARG)
            .arg(&self.arg)
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
                return Err(RuntimeError::Spawn {
                    exe: procs.clone(),
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
                return Err(RuntimeError::Failed {
                    field: "runtime".into(),
                    message: format!(
                        "the container did not start within {} s (agent.start_timeout_s)",
                        self.deadline.as_secs()
                    ),
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
