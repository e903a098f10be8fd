//! Containers' cgroups behind one small trait, so the lifecycle above can
//! run on a fake: the real one ([`CgroupFs`]) works on the cgroup
//! filesystem through a [`Layout`] rooted where the agent's own cgroup is.

use super::{block_device_of, plan, CgroupError, ContainerCgroup, Layout, Mode, Stats, V1Mount};
use crate::model::{AppliedLimits, Limits};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroups of the containers under the agent's `parent`.
pub trait Cgroups: Send + Sync {
    fn mode(&self) -> Mode;
    /// Creates the container's cgroup with `limits` written (on v2 with the
    /// device filter attached, failing closed); the limits as the kernel
    /// holds them. IO limits apply to the disk holding `io_target`.
    fn create(
        &self,
        parent: &str,
        name: &str,
        limits: &Limits,
        io_target: &Path,
    ) -> Result<AppliedLimits, CgroupError>;
    /// `cgroup.procs` files the container's process must be written to.
    fn procs_files(&self, parent: &str, name: &str) -> Vec<PathBuf>;
    /// The path shown to users.
    fn display_path(&self, parent: &str, name: &str) -> String;
    /// The kernel's count of OOM kills in the container's cgroup.
    fn oom_kills(&self, parent: &str, name: &str) -> u64;
    /// SIGKILLs every process in it and waits until it is empty.
    fn kill_all(&self, parent: &str, name: &str, timeout: Duration) -> Result<(), CgroupError>;
    /// Kills what is left and removes it.
    fn remove(&self, parent: &str, name: &str) -> Result<(), CgroupError>;
    /// One stats sample, read now.
    fn stats(&self, parent: &str, name: &str) -> Stats;
    /// Names of the containers' cgroups that exist under `parent`.
    fn children(&self, parent: &str) -> Vec<String>;
    /// Removes `parent` itself if no container is left in it.
    fn remove_parent(&self, parent: &str);
    /// The directories the stats sampler keeps open (None: nothing to sample).
    fn sampled(&self, parent: &str, name: &str) -> Option<ContainerCgroup>;
    /// v1: the hierarchies a container mounts read-only at
    /// `/sys/fs/cgroup/<name>` to see its own limits (none on v2, where
    /// cgroup2 is mounted whole).
    fn container_mounts(&self) -> Vec<V1Mount> {
        Vec::new()
    }
}

/// The real cgroups, on the cgroup filesystem.
pub struct CgroupFs {
    layout: Layout,
    /// Where `/sys` is (to find the disk of the state dir for IO limits).
    sys: PathBuf,
}

impl CgroupFs {
    pub fn new(layout: Layout) -> CgroupFs {
        CgroupFs {
            layout,
            sys: PathBuf::from("/sys"),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}

impl Cgroups for CgroupFs {
    fn mode(&self) -> Mode {
        self.layout.mode
    }

    fn create(
        &self,
        parent: &str,
        name: &str,
        limits: &Limits,
        io_target: &Path,
    ) -> Result<AppliedLimits, CgroupError> {
        let cg = self.layout.container(parent, name);
        let io_dev = match &limits.io {
            Some(_) => Some(block_device_of(io_target, &self.sys)?),
            None => None,
        };
        cg.create()?;
        cg.restrict_devices()?;
        cg.apply(&plan(cg.mode, limits, io_dev))?;
        Ok(cg.read_limits())
    }

    fn procs_files(&self, parent: &str, name: &str) -> Vec<PathBuf> {
        self.layout.container(parent, name).procs_files()
    }

    fn display_path(&self, parent: &str, name: &str) -> String {
        self.layout.container(parent, name).display_path()
    }

    fn oom_kills(&self, parent: &str, name: &str) -> u64 {
        self.layout.container(parent, name).oom_kills()
    }

    fn kill_all(&self, parent: &str, name: &str, timeout: Duration) -> Result<(), CgroupError> {
        self.layout.container(parent, name).kill_all(timeout)
    }

    fn remove(&self, parent: &str, name: &str) -> Result<(), CgroupError> {
        self.layout.container(parent, name).remove()
    }

    fn stats(&self, parent: &str, name: &str) -> Stats {
        self.layout.container(parent, name).stats()
    }

    fn children(&self, parent: &str) -> Vec<String> {
        self.layout.children(parent)
    }

    fn remove_parent(&self, parent: &str) {
        self.layout.remove_parent(parent)
    }

    fn sampled(&self, parent: &str, name: &str) -> Option<ContainerCgroup> {
        Some(self.layout.container(parent, name))
    }

    fn container_mounts(&self) -> Vec<V1Mount> {
        self.layout.v1_mounts.clone()
    }
}
