//! Starting container processes. The agent writes a [`Launch`] plan and
//! re-executes its own binary as `hydra-agent __shim PLAN`; the shim (no tokio,
//! plain syscalls) detaches, clones the container's init into new namespaces,
//! owns its pipes and log files, and records its exit status in a file. So the
//! agent can die at any moment without its containers noticing.

pub mod init;
pub mod shim;
pub mod sys;

use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// The argument that makes the binary act as a shim.
pub const SHIM_ARG: &str = "__shim";

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
}

/// What the shim reports on its stdout once the container has exec'd (or failed to).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Ready {
    Ok { pid: i32, pid_start: u64, shim_pid: i32, shim_start: u64 },
    Failed { field: String, message: String },
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
    Spawn { exe: PathBuf, source: std::io::Error },
    #[error("the shim exited without reporting ({detail})")]
    NoReport { detail: String },
    #[error("{message}")]
    Failed { field: String, message: String },
}

/// Starts a shim for `plan` and blocks until the container has exec'd.
/// Call from a blocking thread: the fork happens in `Command`, which execs
/// the shim at once. The plan goes through the shim's stdin (no file to write).
pub fn start(exe: &Path, plan: &Launch) -> Result<Ready, RuntimeError> {
    let mut child = Command::new(exe)
        .arg(SHIM_ARG)
        .arg(&plan.name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .process_group(0)
        .spawn()
        .map_err(|source| RuntimeError::Spawn { exe: exe.to_path_buf(), source })?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        let _ = stdin.write_all(&serde_json::to_vec(plan).expect("plans serialize"));
    }
    let mut line = String::new();
    let res = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
    // The first shim process only forks the real one and exits; reap it.
    let status = child.wait();
    match res {
        Ok(n) if n > 0 => serde_json::from_str::<Ready>(&line).map_err(|e| RuntimeError::NoReport {
            detail: format!("unreadable report {line:?}: {e}"),
        }),
        _ => Err(RuntimeError::NoReport { detail: format!("{status:?}") }),
    }
    .and_then(|r| match r {
        Ready::Failed { field, message } => Err(RuntimeError::Failed { field, message }),
        ok => Ok(ok),
    })
}
