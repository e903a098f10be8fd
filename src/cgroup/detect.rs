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
            });
        }
    }
    if v1_own.iter().any(|(c, _)| *c == "memory") {
        return Ok(Layout {
            mode: Mode::Hybrid,
            v2_own: PathBuf::new(),
            v1_own,
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
            Mode::V2 => {
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
                enable(&dir, &wanted)?;
                Ok(())
            }
            Mode::Hybrid => {
                for (_, own) in &self.v1_own {
                    let mut dir = own.clone();
                    for comp in parent.split('/') {
                        dir = dir.join(comp);
                        mkdir(&dir)?;
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
                    let write = |file: &str, v: &str| {
                        fs::write(d.join(file), v).map_err(io_err("write", &d))
                    };
                    write("devices.deny", "a")?;
                    for rule in super::STANDARD_DEVICES {
                        write("devices.allow", rule)?;
                    }
                }
                Ok(())
            }
        }
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
