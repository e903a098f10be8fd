//! Creating a container (blocking): resolve the image, check the spec
//! against the host's policy, take its allocations (user id range, address,
//! host ports), make its cgroup with the limits, start it, install its
//! port mappings and persist its record. Any failure undoes all of it.

use super::error::{Error, Result};
use super::{process, Supervisor};
use crate::image;
use crate::model::{caps, Allocation, ContainerSpec, Facts, Record};
use crate::model::{AppliedLimits, ProcessConfig};

/// What a create has taken so far, to give back if it fails.
#[derive(Default)]
pub(super) struct Taken {
    pub userns: Option<u32>,
    pub net: Allocation,
}

impl Supervisor {
    /// `pulled`: the image, when it came from a registry (pulled before,
    /// on the reactor); else it is resolved here.
    pub(super) fn create_blocking(
        &self,
        spec: ContainerSpec,
        pulled: Option<image::Image>,
    ) -> Result<Record> {
        self.store.check()?;
        let img = match pulled {
            Some(img) => img,
            None => image::resolve(&spec.image, &self.paths.layers())?,
        };
        if let Some((index, cap)) =
            caps::first_not_allowed(&spec.capabilities.add, &self.security.allowed_capabilities)
        {
            return Err(Error::CapabilityNotAllowed { index, cap });
        }
        let process = process::merge(&spec, &img.defaults)?;
        let dir = self.store.dir(&spec.name);
        let _ = std::fs::remove_dir_all(&dir);
        let mut taken = Taken::default();
        let res = self
            .take(&spec, &mut taken)
            .and_then(|()| self.make(spec.clone(), process, img, &taken));
        if res.is_err() {
            self.teardown(&spec.name, &self.parent, &taken.net, taken.userns, false);
        }
        res
    }

    /// The user id range and the network allocations.
    fn take(&self, spec: &ContainerSpec, taken: &mut Taken) -> Result<()> {
        if spec.userns {
            taken.userns = Some(self.uid_ranges.allocate().ok_or(Error::UsernsExhausted)?);
        }
        match &self.network {
            None if !spec.ports.is_empty() => Err(Error::NetworkDisabled),
            None => Ok(()),
            Some(n) => {
                taken.net = n.allocate(&spec.name, &spec.ports)?;
                Ok(())
            }
        }
    }

    /// Directories, cgroup, the first run, the mappings, the record.
    fn make(
        &self,
        spec: ContainerSpec,
        process: ProcessConfig,
        img: image::Image,
        taken: &Taken,
    ) -> Result<Record> {
        let dir = self.store.dir(&spec.name);
        let mut disk = self.disks.limits_for(&spec.limits)?;
        let subs: &[&str] = match disk {
            Some(_) => &["rootfs"],
            None => &["upper", "work", "rootfs"],
        };
        for sub in subs {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(|source| Error::Prepare { path: d, source })?;
        }
        if let Some(d) = &mut disk {
            self.disks.prepare(&dir, d)?;
        }
        let mut limits = self.make_cgroup(&spec)?;
        limits.disk = disk;
        let mut rec = Record::new(Facts {
            process,
            layers: img.layers,
            image_digest: img.digest,
            cgroup_parent: self.parent.clone(),
            limits,
            net: taken.net.clone(),
            userns_base: taken.userns,
            created_at: crate::model::now(),
            spec,
        });
        // A crash before the records below leaves a directory without a
        // record and maybe a cgroup: both are swept at the next start (and
        // rules of no container are dropped by the resync).
        // The DNAT rules go in while the container starts, not after: they
        // point at an address nothing answers on until the init has set up
        // its network, and on a loaded host their transaction (which grows
        // with the host's rules) is off the create's critical path. Both
        // are done before the create answers; a failure of either is
        // undone by the caller's teardown, which releases what was installed.
        // The record that makes the container exist is fsynced while it
        // starts too (the fsync waits on the disk, not on a CPU). It says
        // `created`: found so after a crash of the agent in this boot, it
        // is a create that never answered, and is swept like a directory
        // without a record (supervisor/adopt.rs); found after a reboot, it
        // is a container the API may have acknowledged, and is kept. The
        // running record then replaces it atomically, without fsync, like
        // all runtime state.
        let (name, alloc, created) = (rec.name().to_string(), rec.facts().net.clone(), rec.clone());
        let (started, installed, saved) = std::thread::scope(|s| {
            let install = self
                .network
                .as_ref()
                .filter(|_| !alloc.ports.is_empty())
                .map(|n| s.spawn(|| n.install(&name, &alloc)));
            let save = s.spawn(|| self.store.save(&created, true));
            let started = self.start_run(&mut rec);
            let installed = install.map_or(Ok(()), joined);
            (started, installed, joined(save))
        });
        started?;
        installed?;
        saved?;
        self.store.save(&rec, false)?;
        Ok(rec)
    }
}

/// The result of a scoped thread; its panic goes on in the caller.
fn joined<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
}

impl Supervisor {
    /// The cgroup with the spec's limits (every container has a pids limit,
    /// the spec's or the default); the limits as the kernel holds them.
    fn make_cgroup(&self, spec: &ContainerSpec) -> Result<AppliedLimits> {
        let mut limits = spec.limits.clone();
        limits.pids.get_or_insert(self.security.default_pids);
        Ok(self
            .cgroups
            .create(&self.parent, &spec.name, &limits, &self.paths.state)?)
    }
}
