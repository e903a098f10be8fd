//! The `project_quota` mechanism: where the state filesystem has project
//! quotas on (ext4 mounted `prjquota`, XFS `pquota`), each container's
//! `<dir>/layer` (the overlay's upper and work dirs) gets a project id of
//! its own, inherited by everything made under it, and the project's hard
//! limits are the container's `limits.disk` and `limits.inodes`. No image,
//! no loop device, no mount: a create pays two ioctls and a quotactl.
//!
//! Ids come from `[storage] project_ids` and are persisted in the record
//! (`limits.disk.project`), taken back from the records at boot, handed out
//! round-robin (an id just released, whose files a background removal may
//! still be deleting, is the last to come back) and never while the
//! quota still counts use. A removal lifts the project's limits.

use super::image::HEADROOM;
use super::DiskError;
use crate::model::DiskApplied;
use crate::sys::quota;
use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

pub struct Projects {
    /// A directory on the state filesystem, for quotactl_fd.
    on: File,
    min: u32,
    max: u32,
    ids: Mutex<Ids>,
}

struct Ids {
    used: BTreeSet<u32>,
    next: u32,
}

impl Projects {
    /// Project quotas on the filesystem of `dir`, or why not.
    pub fn open(dir: &Path, min: u32, max: u32) -> Result<Projects, String> {
        let on = File::open(dir).map_err(|e| format!("cannot open {}: {e}", dir.display()))?;
        quota::enabled(&on).map_err(|e| {
            format!(
                "no project quotas on the filesystem of {}: {e}",
                dir.display()
            )
        })?;
        Ok(Projects {
            on,
            min,
            max,
            ids: Mutex::new(Ids {
                used: BTreeSet::new(),
                next: min,
            }),
        })
    }

    /// Marks the ids of existing containers as taken.
    pub fn adopt(&self, ids: impl Iterator<Item = u32>) {
        self.ids.lock().unwrap().used.extend(ids);
    }

    fn allocate(&self) -> Option<u32> {
        let mut g = self.ids.lock().unwrap();
        let span = (self.max - self.min) as u64 + 1;
        for _ in 0..span {
            let id = g.next;
            g.next = if id >= self.max { self.min } else { id + 1 };
            let idle = quota::usage(&self.on, id).is_ok_and(|(b, i)| b == 0 && i == 0);
            if !g.used.contains(&id) && idle {
                g.used.insert(id);
                return Some(id);
            }
        }
        None
    }

    /// Takes an id, tags `<dir>/layer` with it and sets the limits.
    pub fn prepare(&self, dir: &Path, d: &mut DiskApplied) -> Result<(), DiskError> {
        let id = self.allocate().ok_or_else(|| {
            DiskError::Exhausted(format!(
                "no free project id left in [storage] project_ids ({}-{})",
                self.min, self.max
            ))
        })?;
        d.project = Some(id);
        let layer = super::image::mount_point(dir);
        let tagged = (|| {
            std::fs::create_dir_all(&layer)?;
            quota::set_project(&File::open(&layer)?, id)?;
            // the headroom and the dirs overlayfs makes count too
            quota::set_limits(&self.on, id, d.bytes + HEADROOM + (64 << 10), d.inodes + 8)
        })();
        if let Err(e) = tagged {
            self.release(d);
            return Err(DiskError::io("cannot set the project quota of", &layer)(e));
        }
        Ok(())
    }

    /// Releases the project of the layer at `layer` (read from the
    /// directory itself, so a create cut short releases what it took).
    pub fn release_dir(&self, layer: &Path) {
        let id = File::open(layer).and_then(|f| quota::project_of(&f));
        if let Ok(id) = id.map(|id| (self.min..=self.max).contains(&id).then_some(id)) {
            self.release(&DiskApplied {
                project: id,
                ..Default::default()
            });
        }
    }

    /// Lifts the limits and frees the id.
    pub fn release(&self, d: &DiskApplied) {
        let Some(id) = d.project else { return };
        if let Err(e) = quota::set_limits(&self.on, id, 0, 0) {
            tracing::error!(project = id, error = %e, "cannot lift a project's quota");
        }
        self.ids.lock().unwrap().used.remove(&id);
    }
}
