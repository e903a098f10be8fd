//! Starting container processes. The agent re-executes its own binary once as
//! `hydra-agent __launcher` (no tokio, single-threaded) and sends it a
//! [`Launch`] plan per container; the launcher forks a detached shim that
//! clones the container's init into new namespaces,
//! owns its pipes and log files, and records its exit status in a file. So the
//! agent can die at any moment without its containers noticing.

mod container_net;
pub mod init;
mod launcher;
pub mod layer;
mod mounts;
pub mod netpool;
pub mod probe;
pub mod security;
pub mod shim;
mod user;

pub use launcher::Launcher;
pub use probe::ProbeError;

use crate::model::ProcRef;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

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
    pub process: crate::model::ProcessConfig,
    pub cgroup_procs: Vec<PathBuf>,
    /// Mount cgroup2 read-only at /sys/fs/cgroup inside (v2 hosts).
    pub cgroup_v2: bool,
    /// v1 hosts: the hierarchies mounted read-only at /sys/fs/cgroup/<name>.
    #[serde(default)]
    pub cgroup_v1: Vec<crate::cgroup::V1Mount>,
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
    #[error("cannot start the launcher {exe}")]
    Spawn {
        exe: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the launcher cannot join the devices cgroup {path}")]
    JoinDevices {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the shim exited without reporting ({detail})")]
    NoReport { detail: String },
    #[error("the container did not start within {secs} s (agent.start_timeout_s)")]
    Timeout { secs: u64 },
    /// The shim or the container's init refused; `field` names the spec
    /// field at fault (`command`, `user`, `image`...), or `runtime`,
    /// `limits`, `network` for the host's side.
    #[error("{message}")]
    Failed { field: String, message: String },
    #[error("cannot signal process {pid}")]
    Signal {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
}

/// A started run: the container's init and its shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    pub init: ProcRef,
    pub shim: ProcRef,
}

/// Resolves when a shim has ended.
pub type ExitFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Starting and watching containers' processes: the launcher and its shims
/// on the real host ([`ShimRuntime`]); a fake in unit tests.
pub trait Runtime: Send + Sync {
    /// Starts one run (blocking: call from a blocking thread); returns once
    /// the container's process has exec'd.
    fn start(&self, plan: &Launch) -> Result<Started, RuntimeError>;
    /// Whether `p` is still that process (same pid and start time).
    fn is_alive(&self, p: ProcRef) -> bool;
    /// Sends `sig` to `p` if it is still that process; Ok(false) if it is gone.
    fn signal(&self, p: ProcRef, sig: i32) -> Result<bool, RuntimeError>;
    /// Resolves once the shim `p` has ended (at once if it is already gone).
    fn exited(&self, shim: ProcRef) -> ExitFuture;
    /// The exit status a shim left in `file`, if it left one.
    fn read_exit(&self, file: &Path) -> Option<ExitRecord>;
    /// One HTTP probe of `port`/`path` from inside the container's network
    /// namespace (blocking).
    fn probe(
        &self,
        init: ProcRef,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> Result<(), ProbeError>;
    /// Whether the runtime can take a start request now (the watchdog's
    /// health check; blocking for at most the start deadline).
    fn responsive(&self) -> bool {
        true
    }
}

/// Start time (clock ticks after boot) of `pid`, to recognise it later.
pub fn start_time(pid: i32) -> Option<u64> {
    procfs::process::Process::new(pid)
        .ok()?
        .stat()
        .ok()
        .map(|s| s.starttime)
}

/// The real runtime: a launcher helper forks a detached shim per run.
pub struct ShimRuntime {
    launcher: Launcher,
}

impl ShimRuntime {
    pub fn new(launcher: Launcher) -> ShimRuntime {
        ShimRuntime { launcher }
    }
}

impl Runtime for ShimRuntime {
    fn responsive(&self) -> bool {
        self.launcher.responsive()
    }

    fn start(&self, plan: &Launch) -> Result<Started, RuntimeError> {
        match self.launcher.start(plan)? {
            Ready::Ok {
                pid,
                pid_start,
                shim_pid,
                shim_start,
            } => Ok(Started {
                init: ProcRef {
                    pid,
                    start: pid_start,
                },
                shim: ProcRef {
                    pid: shim_pid,
                    start: shim_start,
                },
            }),
            Ready::Failed { field, message } => Err(RuntimeError::Failed { field, message }),
        }
    }

    fn is_alive(&self, p: ProcRef) -> bool {
        start_time(p.pid) == Some(p.start)
    }

    fn signal(&self, p: ProcRef, sig: i32) -> Result<bool, RuntimeError> {
        use std::os::fd::AsFd;
        // the pidfd pins the process: once its start time matches, the
        // signal cannot reach a newer process that reused the pid
        let Ok(fd) = crate::sys::pidfd_open(p.pid) else {
            return Ok(false);
        };
        if !self.is_alive(p) {
            return Ok(false);
        }
        send_unless_gone(fd.as_fd(), sig, p.pid)
    }

    fn exited(&self, shim: ProcRef) -> ExitFuture {
        let fd = crate::sys::pidfd_open(shim.pid)
            .ok()
            .filter(|_| self.is_alive(shim))
            .and_then(|fd| match crate::sys::async_pidfd(fd) {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::error!(shim = shim.pid, error = %e, "cannot watch the shim");
                    None
                }
            });
        Box::pin(async move {
            if let Some(afd) = fd {
                let _ = afd.readable().await;
            }
        })
    }

    fn read_exit(&self, file: &Path) -> Option<ExitRecord> {
        let b = std::fs::read(file).ok()?;
        serde_json::from_slice(&b).ok()
    }

    fn probe(
        &self,
        init: ProcRef,
        port: u16,
        path: &str,
        timeout: Duration,
    ) -> Result<(), ProbeError> {
        probe::probe(init.pid, port, path, timeout)
    }
}

/// Signals through a pidfd; false if the process has ended and been reaped
/// since the pidfd was opened (found by the soak: a stop racing an exit,
/// which is as gone as one found gone before).
fn send_unless_gone(fd: std::os::fd::BorrowedFd, sig: i32, pid: i32) -> Result<bool, RuntimeError> {
    match crate::sys::pidfd_send_signal(fd, sig) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(source) => Err(RuntimeError::Signal { pid, source }),
    }
}

#[cfg(test)]
mod signal_tests {
    use std::os::fd::AsFd;

    #[test]
    fn a_process_reaped_after_its_pidfd_was_opened_is_gone_not_an_error() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let fd = crate::sys::pidfd_open(child.id() as i32).unwrap();
        child.wait().unwrap();
        assert!(!super::send_unless_gone(fd.as_fd(), 0, child.id() as i32).unwrap());
        let me = crate::sys::pidfd_open(std::process::id() as i32).unwrap();
        assert!(super::send_unless_gone(me.as_fd(), 0, 0).unwrap());
    }
}
