//! Container cgroups: cgroup v2, with a v1 fallback for hybrid hosts.
//!
//! The hierarchy is laid out here against the cgroup filesystem: on v1 the
//! agent's own cgroup differs per controller (here the memory controller has
//! `/process_api/...` while cpu has `/`), and cgroups-rs places one relative
//! path in every hierarchy, which would put containers outside the agent's
//! subtree. Every path hangs off a root the caller passes in, so unit tests
//! run against a temp dir. The lifecycle uses them through [`Cgroups`].

mod detect;
pub mod devices;
mod driver;
mod knobs;
mod limits;
mod stats;

pub use detect::{detect, Layout, V1Mount};
pub use driver::{CgroupFs, Cgroups};
pub use limits::{plan, shares_from_weight, Knob, STANDARD_DEVICES};
pub use stats::{
    CpuStats, IoStats, MemoryStats, PidsStats, Pressure, Psi, PsiLine, StatFiles, Stats,
};

pub use crate::model::{AppliedLimits, IoApplied};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup: cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cgroup: {0}")]
    Setup(String),
    #[error("cgroup {path} still has processes after {secs}s")]
    Busy { path: PathBuf, secs: u64 },
    /// A limit the kernel refused (the value is out of what it takes).
    #[error("cgroup: cannot write {value} to {path}")]
    Limit {
        path: PathBuf,
        value: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// IO limits apply to the disk holding the state dir, which was not found.
    #[error("io limits apply to the disk holding the state dir, but {0}")]
    IoDevice(String),
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Pure cgroup v2 (unified hierarchy with controllers).
    V2,
    /// Controllers on v1 hierarchies (the unified tree, if any, has none).
    Hybrid,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::V2 => "v2",
            Mode::Hybrid => "hybrid",
        }
    }
}

/// Controllers the agent uses on v1; `cpuacct` for usage, the rest for limits.
/// `cpuset`: a container has a cpuset cgroup of its own (all of its
/// parent's CPUs and memory nodes) so it can be shown its own cgroup there,
/// which runtimes such as the JVM require before they apply any limit.
pub const V1_CONTROLLERS: [&str; 7] = [
    "memory", "cpu", "cpuacct", "pids", "blkio", "devices", "cpuset",
];

/// One container's cgroup: a single directory on v2, one per controller on v1.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerCgroup {
    pub mode: Mode,
    /// `("", dir)` on v2; `(controller, dir)` on v1.
    pub dirs: Vec<(&'static str, PathBuf)>,
}

impl ContainerCgroup {
    /// The directory that holds `controller`'s files.
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        match self.mode {
            Mode::V2 => self.dirs.first().map(|(_, d)| d.as_path()),
            Mode::Hybrid => self
                .dirs
                .iter()
                .find(|(c, _)| *c == controller)
                .map(|(_, d)| d.as_path()),
        }
    }

    /// The path shown to users (`cgroup` in container JSON).
    pub fn display_path(&self) -> String {
        self.dir("memory")
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// `cgroup.procs` files a new process must be written to.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .iter()
            .map(|(_, d)| d.join("cgroup.procs"))
            .collect()
    }

    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|(_, d)| d.exists())
    }

    /// Creates the directories (idempotent).
    pub fn create(&self) -> Result<(), CgroupError> {
        for (_, d) in &self.dirs {
            match fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("create", d)(e)),
            }
        }
        Ok(())
    }

    /// v2: attaches the device allow list, an eBPF program, to the cgroup
    /// (v1 has the devices controller, written with the limits).
    pub fn restrict_devices(&self) -> Result<(), CgroupError> {
        if self.mode == Mode::V2 {
            for (_, d) in &self.dirs {
                devices::attach_standard(d).map_err(io_err("attach the device filter to", d))?;
            }
        }
        Ok(())
    }

    /// The limits as the kernel holds them.
    pub fn read_limits(&self) -> AppliedLimits {
        limits::read_back(self)
    }

    /// One sample, opening the files for it (the sampler keeps a
    /// [`StatFiles`] per container instead).
    pub fn stats(&self) -> Stats {
        StatFiles::open(self).read()
    }

    /// The kernel's count of OOM kills in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = self.dir("memory") else {
            return 0;
        };
        let file = match self.mode {
            Mode::V2 => "memory.events",
            Mode::Hybrid => "memory.oom_control",
        };
        read_keyed(&dir.join(file), "oom_kill").unwrap_or(0)
    }

    /// Pids of every process in the cgroup (all hierarchies on v1).
    pub fn pids(&self) -> Vec<i32> {
        let mut out = Vec::new();
        for f in self.procs_files() {
            if let Ok(s) = fs::read_to_string(&f) {
                out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// SIGKILLs every process in it and waits until it is empty.
    pub fn kill_all(&self, timeout: Duration) -> Result<(), CgroupError> {
        let deadline = Instant::now() + timeout;
        if let Some(d) = self.dir("").filter(|_| self.mode == Mode::V2) {
            let _ = fs::write(d.join("cgroup.kill"), "1");
        }
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                return Ok(());
            }
            for p in &pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*p),
                    nix::sys::signal::SIGKILL,
                );
            }
            if Instant::now() > deadline {
                return Err(CgroupError::Busy {
                    path: self.dirs[0].1.clone(),
                    secs: timeout.as_secs(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills what is left and removes every directory; errors are collected
    /// so one stuck hierarchy does not leak the others.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut first_err = self.kill_all(Duration::from_secs(5)).err();
        for (_, d) in &self.dirs {
            if !d.exists() {
                continue;
            }
            let mut res = fs::remove_dir(d);
            for _ in 0..100 {
                match &res {
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        std::thread::sleep(Duration::from_millis(10));
                        res = fs::remove_dir(d);
                    }
                    _ => break,
                }
            }
            if let Err(e) = res {
                if e.kind() != io::ErrorKind::NotFound && first_err.is_none() {
                    first_err = Some(io_err("remove", d)(e));
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Reads `key N` from a flat-keyed cgroup file.
pub(crate) fn read_keyed(path: &Path, key: &str) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
    s.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// Reads a single-value file; `max` and v1's "unlimited" sentinels are `None`.
pub(crate) fn read_value(path: &Path) -> Option<u64> {
    let s = fs::read_to_string(path).ok()?;
    let t = s.trim();
    if t == "max" {
        return None;
    }
    let v: i64 = t.parse().ok()?;
    (v >= 0 && (v as u64) < (1u64 << 62)).then_some(v as u64)
}

/// Finds the whole-disk block device holding `path` (io.max refuses partitions).
pub fn block_device_of(path: &Path, sys_root: &Path) -> Result<(u64, u64), CgroupError> {
    use std::os::unix::fs::MetadataExt;
    let fail = |m: String| CgroupError::IoDevice(m);
    let dev = fs::metadata(path)
        .map_err(|e| fail(format!("cannot stat {}: {e}", path.display())))?
        .dev();
    let (maj, min) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    if maj == 0 {
        return Err(fail(format!("{} is not on a block device", path.display())));
    }
    let node = sys_root.join(format!("dev/block/{maj}:{min}"));
    if !node.exists() {
        return Err(fail(format!(
            "{} is on {maj}:{min}, which is not a block device",
            path.display()
        )));
    }
    if !node.join("partition").exists() {
        return Ok((maj, min));
    }
    let parent = fs::read_to_string(node.join("../dev")).map_err(|e| {
        fail(format!(
            "cannot find the disk of partition {maj}:{min}: {e}"
        ))
    })?;
    let bad = || fail(format!("bad dev file of the disk of {maj}:{min}"));
    let (a, b) = parent.trim().split_once(':').ok_or_else(bad)?;
    Ok((a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?))
}
