//! One run of a container: the plan for the launcher, the start, and what a
//! failed start leaves (nothing: whatever got into the cgroup is killed).

use super::error::Result;
use super::Supervisor;
use crate::model::{Record, Run};
use crate::runtime::{security, Launch};
use std::time::Duration;

impl Supervisor {
    /// The launcher's plan for the next run of `rec`.
    fn plan(&self, rec: &Record) -> Launch {
        let f = rec.facts();
        let name = rec.name();
        let dir = self.store.dir(name);
        let logs = self.logs.read().unwrap().clone();
        let (upper, work) = crate::disk::layer_dirs(&dir, f.limits.disk.is_some());
        Launch {
            name: name.to_string(),
            hostname: name.to_string(),
            lower: f.layers.clone(),
            upper,
            work,
            rootfs: dir.join("rootfs"),
            process: f.process.clone(),
            cgroup_procs: self.cgroups.procs_files(&f.cgroup_parent, name),
            cgroup_v2: self.cgroups.mode() == crate::cgroup::Mode::V2,
            cgroup_v1: self.cgroups.container_mounts(),
            log_dir: self.log_dir(name),
            log_max_size: logs.max_file_size.0,
            log_max_files: logs.max_files,
            exit_file: dir.join("exit.json"),
            shim_log: dir.join("shim.log"),
            net: match (&self.network, f.net.ip) {
                (Some(n), Some(ip)) => Some(n.launch(ip)),
                _ => None,
            },
            hardening: security::hardening(&f.spec.capabilities, &self.security),
            userns: f.userns_base,
        }
    }

    /// Starts one run of the container (blocking); the caller persists the
    /// record. A failed start leaves nothing of the run: also an init stuck
    /// past the start deadline is killed, whoever asked (create, start, the
    /// restart policy).
    pub(super) fn start_run(&self, rec: &mut Record) -> Result<()> {
        let plan = self.plan(rec);
        let _ = std::fs::remove_file(&plan.exit_file);
        let (parent, name) = (rec.facts().cgroup_parent.clone(), rec.name().to_string());
        let oom_base = self.cgroups.oom_kills(&parent, &name);
        let dir = self.store.dir(&name);
        if let Some(d) = &rec.facts().limits.disk {
            self.disks.before_start(&dir, d)?;
        }
        let started = match self.runtime.start(&plan) {
            Ok(s) => s,
            Err(e) => {
                let _ = self
                    .cgroups
                    .kill_all(&parent, &name, Duration::from_secs(5));
                return Err(e.into());
            }
        };
        if rec.facts().limits.disk.is_some() {
            self.disks.after_start(&dir);
        }
        rec.start(Run {
            init: started.init,
            shim: started.shim,
            started_at: crate::model::now(),
            oom_base,
        })?;
        Ok(())
    }
}
