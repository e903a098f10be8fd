//! Removing what a container was given: network allocations, its user
//! namespace range, cgroup, state and logs.

use super::{allocation, Supervisor};
use crate::cgroup::ContainerCgroup;
use crate::store::ContainerRecord;

impl Supervisor {
    /// Removes the cgroup, network allocations and state of a container,
    /// collecting errors so one failure does not leak the rest.
    pub(super) fn teardown(&self, cg: &ContainerCgroup, rec: &ContainerRecord) {
        let name = rec.spec.name.as_str();
        if let Some(n) = self.network.get() {
            n.release(name, &allocation(rec));
        }
        // the id range is free only once no process of it can be left
        // (a new container given it would own their files and signals)
        if self.teardown_files(cg, name) {
            if let Some(b) = rec.userns_base {
                self.uid_ranges.release(b);
            }
        } else if let Some(b) = rec.userns_base {
            tracing::error!(container = name, uid_base = b, "its user namespace range stays taken until the agent restarts (processes may be left)");
        }
    }

    /// Removes cgroup, state and logs; false if the cgroup could not go.
    pub(super) fn teardown_files(&self, cg: &ContainerCgroup, name: &str) -> bool {
        let gone = match cg.remove() {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(container = name, error = %e, "teardown: cgroup");
                false
            }
        };
        if let Err(e) = self.store.remove(name) {
            tracing::error!(container = name, error = %e, "teardown: state");
        }
        if let Some(d) = &self.logs.read().unwrap().dir {
            let _ = std::fs::remove_dir_all(d.join(name));
        }
        gone
    }
}
