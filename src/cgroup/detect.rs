//! Finding the cgroup mode and the agent's own cgroup, and preparing the
//! subtree its containers live in.

use super::{io_err, CgroupError, ContainerCgroup, Mode, V1_CONTROLLERS};
use std::fs;
use std::path::{Path, PathBuf};

/// Where the agent's own cgroup is, in every hierarchy it uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub mode: Mode,
    /// v2: the agent's own cgroup directory. Unused on hybrid.
    pub v2_own: PathBuf,
    /// hybrid: `(controller, agent's own directory in that hierarchy)`.
    pub v1_own: Vec<(&'static str, PathBuf)>,
    /// hybrid: the v1 hierarchies a container is limited by, as a container
    /// mounts them (see [`V1Mount`]).
    pub v1_mounts: Vec<V1Mount>,
}

/// A v1 hierarchy a container sees at `/sys/fs/cgroup/<name>` (mounted
/// read-only in its cgroup namespace, so rooted at its own cgroup): what
/// runtimes (the JVM, Node, Go, .NET) read their limits from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct V1Mount {
    /// The mount point's name on the host, e.g. `cpu,cpuacct`.
    pub name: String,
    /// Its controllers, the mount options a new mount must repeat.
    pub options: String,
}

/// The controllers a container is placed in on v1 (`devices` is one shared
/// cgroup of all containers: not shown to them).
const V1_SHOWN: [&str; 6] = ["memory", "cpu", "cpuacct", "pids", "blkio", "cpuset"];

/// Every v1 hierarchy holding one of [`V1_SHOWN`]: its name and controllers.
fn v1_mounts<'a>(mounts: impl Iterator<Item = &'a procfs::process::MountInfo>) -> Vec<V1Mount> {
    let mut out: Vec<V1Mount> = Vec::new();
    for m in mounts.filter(|m| m.fs_type == "cgroup") {
        let ctls: Vec<&str> = super::V1_CONTROLLERS
            .iter()
            .chain(
                [
                    "cpuset",
                    "freezer",
                    "net_cls",
                    "net_prio",
                    "hugetlb",
                    "perf_event",
                    "rdma",
                    "misc",
                ]
                .iter(),
            )
            .copied()
            .filter(|c| m.super_options.contains_key(*c))
            .collect();
        if !ctls.iter().any(|c| V1_SHOWN.contains(c)) {
            continue;
        }
        let name = m
            .mount_point
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.is_empty() || out.iter().any(|o| o.name == name) {
            continue;
        }
        out.push(V1Mount {
            name,
            options: ctls.join(","),
        });
    }
    out
}

/// Detects the mode from this process's mounts and cgroup membership.
pub fn detect() -> Result<Layout, CgroupError> {
    let me = procfs::process::Process::myself()
        .map_err(|e| CgroupError::Setup(format!("cannot read /proc/self: {e}")))?;
    let mounts = me
        .mountinfo()
        .map_err(|e| CgroupError::Setup(format!("cannot read mountinfo: {e}")))?;
    let groups = me
        .cgroups()
        .map_err(|e| CgroupError::Setup(format!("cannot read /proc/self/cgroup: {e}")))?;

    let mut v1_own = Vec::new();
    for ctl in V1_CONTROLLERS {
        let mount = mounts
            .iter()
            .find(|m| m.fs_type == "cgroup" && m.super_options.contains_key(ctl));
        let group = groups
            .0
            .iter()
            .find(|g| g.hierarchy != 0 && g.controllers.iter().any(|c| c == ctl));
        if let (Some(m), Some(g)) = (mount, group) {
            v1_own.push((ctl, join_cgroup(&m.mount_point, &g.pathname, &m.root)));
        }
    }
    let v2_mount = mounts.iter().find(|m| m.fs_type == "cgroup2");
    let v2_group = groups.0.iter().find(|g| g.hierarchy == 0);
    if let (Some(m), Some(g)) = (v2_mount, v2_group) {
        let own = join_cgroup(&m.mount_point, &g.pathname, &m.root);
        let ctrls =
            fs::read_to_string(m.mount_point.join("cgroup.controllers")).unwrap_or_default();
        if ctrls.split_whitespace().any(|c| c == "memory")
            && !v1_own.iter().any(|(c, _)| *c == "memory")
        {
            return Ok(Layout {
                mode: Mode::V2,
                v2_own: own,
                v1_own: Vec::new(),
                v1_mounts: Vec::new(),
            });
        }
    }
    if v1_own.iter().any(|(c, _)| *c == "memory") {
        return Ok(Layout {
            mode: Mode::Hybrid,
            v2_own: PathBuf::new(),
            v1_own,
            v1_mounts: v1_mounts(mounts.iter()),
        });
    }
    Err(CgroupError::Setup(
        "no usable cgroup hierarchy: neither cgroup v2 with the memory controller nor a v1 memory hierarchy is mounted".into(),
    ))
}

/// `mount_point` + the process's path relative to the mount's own root.
fn join_cgroup(mount_point: &Path, pathname: &str, mount_root: &str) -> PathBuf {
    let rel = pathname.strip_prefix(mount_root).unwrap_or(pathname);
    mount_point.join(rel.trim_start_matches('/'))
}

impl Layout {
    /// The cgroup of container `name` under `parent`.
    pub fn container(&self, parent: &str, name: &str) -> ContainerCgroup {
        let dirs = match self.mode {
            Mode::V2 => vec![("", self.v2_own.join(parent).join(name))],
            // devices: shared by all containers, see devices_cgroup
            Mode::Hybrid => self
                .v1_own
                .iter()
                .filter(|(c, _)| *c != "devices")
                .map(|(c, own)| (*c, own.join(parent).join(name)))
                .collect(),
        };
        ContainerCgroup {
            mode: self.mode,
            dirs,
        }
    }

    /// v1: the devices cgroup every container is under (deny all but the
    /// standard devices), `<own>/<parent>/_devices` (no container name starts
    /// with `_`). The launcher joins it, so its children are born there.
    pub fn devices_cgroup(&self, parent: &str) -> Option<PathBuf> {
        match self.mode {
            Mode::V2 => None,
            Mode::Hybrid => self
                .v1_own
                .iter()
                .find(|(c, _)| *c == "devices")
                .map(|(_, own)| own.join(parent).join("_devices")),
        }
    }

    /// Names of the containers' cgroups that exist under `parent`.
    pub fn children(&self, parent: &str) -> Vec<String> {
        let dir = match self.mode {
            Mode::V2 => self.v2_own.join(parent),
            Mode::Hybrid => match self.v1_own.iter().find(|(c, _)| *c == "memory") {
                Some((_, own)) => own.join(parent),
                None => return Vec::new(),
            },
        };
        let mut out: Vec<String> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        out
    }

    /// Makes `<own>/<parent>` ready for containers. On v2 the agent first moves
    /// itself into the leaf `<own>/agent` (the no-internal-process rule) and
    /// enables the controllers down to `parent`.
    pub fn prepare(&self, parent: &str) -> Result<(), CgroupError> {
        match self.mode {
            Mode::V2 => self.prepare_v2(parent),
            Mode::Hybrid => self.prepare_v1(parent),
        }
    }

    fn prepare_v2(&self, parent: &str) -> Result<(), CgroupError> {
        let own = &self.v2_own;
        let is_root = !own.join("cgroup.type").exists();
        if !is_root {
            let leaf = own.join("agent");
            mkdir(&leaf)?;
            fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
                .map_err(io_err("join", &leaf))?;
        }
        let wanted = controllers_to_enable(own);
        let missing: Vec<&str> = ["memory", "cpu", "pids"]
            .into_iter()
            .filter(|c| !wanted.iter().any(|w| w == c))
            .collect();
        if !missing.is_empty() {
            return Err(CgroupError::Setup(format!(
                "the {} controller(s) are not available in {} (not delegated by the parent cgroup); limits could not be enforced",
                missing.join(", "),
                own.display()
            )));
        }
        let mut dir = own.clone();
        for comp in parent.split('/') {
            enable(&dir, &wanted)?;
            dir = dir.join(comp);
            mkdir(&dir)?;
        }
        enable(&dir, &wanted)
    }

    fn prepare_v1(&self, parent: &str) -> Result<(), CgroupError> {
        for (ctl, own) in &self.v1_own {
            let mut dir = own.clone();
            for comp in parent.split('/') {
                dir = dir.join(comp);
                mkdir(&dir)?;
                if *ctl == "cpuset" {
                    inherit_cpuset(&dir)?;
                }
            }
            if *ctl == "cpuset" {
                // containers' cpuset cgroups start with all of ours
                fs::write(dir.join("cgroup.clone_children"), "1")
                    .map_err(io_err("write cgroup.clone_children of", &dir))?;
            }
        }
        // fail closed: without the devices controller nothing would
        // stop a container from opening a device node it can make
        let d = self.devices_cgroup(parent).ok_or_else(|| {
            CgroupError::Setup(
                "the v1 devices controller is not mounted: device access of containers could not be restricted".into(),
            )
        })?;
        mkdir(&d)?;
        // Rewritten only when it differs: `deny a` first would leave
        // the running containers without /dev/null for a moment.
        let mut have: Vec<String> = fs::read_to_string(d.join("devices.list"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        have.sort();
        let mut want: Vec<String> = super::STANDARD_DEVICES
            .iter()
            .map(|r| r.to_string())
            .collect();
        want.sort();
        if have != want {
            let write =
                |file: &str, v: &str| fs::write(d.join(file), v).map_err(io_err("write", &d));
            write("devices.deny", "a")?;
            for rule in super::STANDARD_DEVICES {
                write("devices.allow", rule)?;
            }
        }
        Ok(())
    }

    /// Removes `<own>/<parent>` if empty (used by tests and uninstall).
    pub fn remove_parent(&self, parent: &str) {
        if let Some(d) = self.devices_cgroup(parent) {
            let _ = fs::remove_dir(d);
        }
        let bases: Vec<PathBuf> = match self.mode {
            Mode::V2 => vec![self.v2_own.clone()],
            Mode::Hybrid => self.v1_own.iter().map(|(_, o)| o.clone()).collect(),
        };
        for base in bases {
            let comps: Vec<&str> = parent.split('/').collect();
            for n in (1..=comps.len()).rev() {
                let _ = fs::remove_dir(base.join(comps[..n].join("/")));
            }
        }
    }
}

/// A v1 cpuset cgroup takes no task until it has CPUs and memory nodes:
/// an empty one gets its parent's.
fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let mine = fs::read_to_string(dir.join(f)).map_err(io_err("read", &dir.join(f)))?;
        if mine.trim().is_empty() {
            let parent = dir.parent().expect("under the agent's own cgroup");
            let theirs =
                fs::read_to_string(parent.join(f)).map_err(io_err("read", &parent.join(f)))?;
            fs::write(dir.join(f), theirs.trim()).map_err(io_err("write", &dir.join(f)))?;
        }
    }
    Ok(())
}

fn mkdir(d: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(d) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("create", d)(e)),
    }
}

fn controllers_to_enable(own: &Path) -> Vec<String> {
    let avail = fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
    avail
        .split_whitespace()
        .filter(|c| matches!(*c, "cpu" | "memory" | "pids" | "io" | "cpuset"))
        .map(String::from)
        .collect()
}

fn enable(dir: &Path, ctrls: &[String]) -> Result<(), CgroupError> {
    let have = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    let missing: Vec<String> = ctrls
        .iter()
        .filter(|c| !have.split_whitespace().any(|h| h == c.as_str()))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    fs::write(dir.join("cgroup.subtree_control"), missing.join(" ")).map_err(|e| {
        CgroupError::Setup(format!(
            "cannot enable {} in {}: {e}; the agent needs a cgroup of its own (systemd Delegate=yes) with no other processes in it",
            missing.join(" "),
            dir.display()
        ))
    })
}
