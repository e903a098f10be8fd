//! Removing what a container was given: network allocations, its user
//! namespace range, cgroup, state and logs. Errors are collected and logged,
//! so one failure does not leak the rest.

use super::Supervisor;
use crate::model::Allocation;

impl Supervisor {
    /// Removes everything of container `name` (blocking). `background`:
    /// its files may go after the answer (a removal; a failed create's
    /// error promises nothing is left, so it waits).
    pub(super) fn teardown(
        &self,
        name: &str,
        parent: &str,
        net: &Allocation,
        userns: Option<u32>,
        background: bool,
    ) {
        if let Some(n) = &self.network {
            n.release(name, net);
        }
        // the id range is free only once no process of it can be left
        // (a new container given it would own their files and signals)
        let gone = self.teardown_files(name, parent, background);
        match (userns, gone) {
            (Some(b), true) => self.uid_ranges.release(b),
            (Some(b), false) => tracing::error!(container = name, uid_base = b,
                "its user namespace range stays taken until the agent restarts (processes may be left)"),
            (None, _) => {}
        }
    }

    /// Removes cgroup, state and logs; false if the cgroup could not go.
    fn teardown_files(&self, name: &str, parent: &str, background: bool) -> bool {
        let dir = self.store.dir(name);
        // a layer moved into the trash is unmounted there
        self.disks.release(&dir, !background);
        let gone = match self.cgroups.remove(parent, name) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(container = name, error = %e, "teardown: cgroup");
                false
            }
        };
        let removed = match background {
            true => self.store.discard(name),
            false => self.store.remove(name),
        };
        if let Err(e) = removed {
            tracing::error!(container = name, error = %e, "teardown: state");
        }
        if let Some(d) = &self.logs.read().unwrap().dir {
            let _ = std::fs::remove_dir_all(d.join(name));
        }
        gone
    }
}
