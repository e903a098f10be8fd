//! The containers' writable layers, bounded: `limits.disk` bytes and
//! `limits.inodes` files, enforced by the kernel.
//!
//! Mechanisms (`[storage] mechanism`, the one in use shown by `GET /v1/host`
//! as `storage_limits`; `auto` takes the first that works here):
//! - `project_quota` ([`project`]): where the state filesystem has project
//!   quotas on, the layer's directory tree is a quota project of its own;
//! - `image` ([`image`]): elsewhere, the layer (the overlay's upper and work
//!   dirs) lives on an ext4 of its own, a sparse file loop-mounted by the
//!   agent. A write past the limit gets `ENOSPC` in that container only;
//! - `none`: no mechanism works here; creates are refused naming
//!   `limits.disk` unless `[storage] require_limits = false`.
//!
//! A record keeps the mechanism its layer was made with: a layer is always
//! handled by its own, whatever the host's config says later.

mod image;
mod pool;
mod project;

pub use image::Usage;

use crate::config::{StorageConfig, StorageMechanism};
use crate::model::{DiskApplied, Limits};
use std::io;
use std::path::{Path, PathBuf};

/// The mechanism in use on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    ProjectQuota,
    Image,
    None,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::ProjectQuota => "project_quota",
            Mechanism::Image => "image",
            Mechanism::None => "none",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// `limits.disk` cannot be enforced here (the message says why).
    #[error("{0}")]
    Unsupported(String),
    /// No project id left.
    #[error("{0}")]
    Exhausted(String),
    /// Making, attaching or mounting a layer's image failed.
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DiskError {
    pub fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DiskError + 'a {
        move |source| DiskError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }

    /// The OS error behind it, if any (ENOSPC of the state disk: 507).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            DiskError::Io { source, .. } => source.raw_os_error(),
            DiskError::Unsupported(_) | DiskError::Exhausted(_) => None,
        }
    }
}

/// The writable layers of this agent's containers.
pub struct Disks {
    mechanism: Mechanism,
    /// Why no mechanism works (for the refusal's message).
    why_none: String,
    cfg: StorageConfig,
    pool: Option<pool::Pool>,
    projects: Option<project::Projects>,
    /// One mke2fs'd image per (size, inodes), copied for each layer.
    templates: PathBuf,
}

impl Disks {
    /// Picks the mechanism for the containers under `containers` and
    /// starts the pool of prepared images if it is `image`.
    pub fn new(cfg: &StorageConfig, state: &Path, containers: &Path) -> Disks {
        use StorageMechanism as M;
        let mut why = Vec::new();
        let projects = match cfg.mechanism {
            M::Auto | M::ProjectQuota => {
                let (lo, hi) = (cfg.project_ids.start, cfg.project_ids.end);
                project::Projects::open(containers, lo, hi)
                    .map_err(|e| why.push(e))
                    .ok()
            }
            _ => None,
        };
        let image = match cfg.mechanism {
            M::Auto | M::Image if projects.is_none() => {
                image::available().map_err(|e| why.push(e)).is_ok()
            }
            _ => false,
        };
        let mechanism = match (&projects, image) {
            (Some(_), _) => Mechanism::ProjectQuota,
            (None, true) => Mechanism::Image,
            (None, false) => Mechanism::None,
        };
        if cfg.mechanism == M::None {
            why.push("[storage] mechanism = \"none\"".into());
        } else if cfg.mechanism != M::Auto && mechanism == Mechanism::None {
            tracing::error!(reason = %why.join("; "), "the [storage] mechanism cannot work on this host");
        }
        let templates = state.join("disk-templates");
        image::clean_templates(&templates);
        let pool = (mechanism == Mechanism::Image && cfg.prepared_images > 0).then(|| {
            let (_, inodes) = image::plan(cfg.default_disk.0, cfg.default_inodes);
            let dirs = (state.join("disk-pool"), templates.clone());
            pool::Pool::start(dirs, cfg.default_disk.0, inodes, cfg.prepared_images)
        });
        Disks {
            mechanism,
            why_none: why.join("; "),
            cfg: cfg.clone(),
            pool,
            projects,
            templates,
        }
    }

    /// Marks the project ids of existing containers as taken.
    pub fn adopt<'a>(&self, layers: impl Iterator<Item = &'a DiskApplied>) {
        if let Some(p) = &self.projects {
            p.adopt(layers.filter_map(|d| d.project));
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The limits a spec gets here: its own or the defaults; None when
    /// nothing can enforce them and the config allows that.
    pub fn limits_for(&self, l: &Limits) -> Result<Option<DiskApplied>, DiskError> {
        let bytes = l.disk.map_or(self.cfg.default_disk.0, |d| d.0);
        let inodes = l.inodes.unwrap_or(self.cfg.default_inodes);
        let applied = |mechanism: Mechanism, inodes: u64| DiskApplied {
            bytes,
            inodes,
            mechanism: mechanism.as_str().into(),
            project: None,
        };
        match self.mechanism {
            Mechanism::ProjectQuota => Ok(Some(applied(Mechanism::ProjectQuota, inodes))),
            Mechanism::Image => Ok(Some(applied(
                Mechanism::Image,
                image::plan(bytes, inodes).1,
            ))),
            Mechanism::None if !self.cfg.require_limits => Ok(None),
            Mechanism::None => Err(DiskError::Unsupported(format!(
                "the writable layer's size cannot be limited on this host ({}); \
                 set [storage] require_limits = false to run containers without storage limits",
                self.why_none
            ))),
        }
    }

    /// Makes the layer's image (a prepared one when it has the default
    /// size). Called by the create, before the first start; `d.inodes`
    /// becomes what the filesystem holds.
    pub fn prepare(&self, dir: &Path, d: &mut DiskApplied) -> Result<(), DiskError> {
        if d.mechanism == Mechanism::ProjectQuota.as_str() {
            let p = self.projects.as_ref().ok_or_else(|| self.gone(d))?;
            return p.prepare(dir, d);
        }
        let img = image::image_path(dir);
        if let Some(p) = &self.pool {
            if p.take_if(d.bytes, d.inodes, dir) {
                d.inodes = image::inodes_of(&img).map_err(DiskError::io("cannot read", &img))?;
                return Ok(());
            }
        }
        d.inodes = image::make(&img, d.bytes, d.inodes, &self.templates)?;
        Ok(())
    }

    /// A layer made with a mechanism this agent does not have (its config
    /// or its state filesystem changed).
    fn gone(&self, d: &DiskApplied) -> DiskError {
        DiskError::Unsupported(format!(
            "the layer was made with {} storage limits, which this host no longer has ({})",
            d.mechanism, self.why_none
        ))
    }

    /// Before each start: the layer mounted (made again if a reboot reset
    /// it), its headroom freed for the overlay's own dirs.
    pub fn before_start(&self, dir: &Path, d: &DiskApplied) -> Result<(), DiskError> {
        if d.mechanism == Mechanism::ProjectQuota.as_str() {
            self.projects.as_ref().ok_or_else(|| self.gone(d))?;
            return image::make_dirs(dir);
        }
        if !image::image_path(dir).exists() {
            self.prepare(dir, &mut d.clone())?;
        }
        image::mount(dir)
    }

    /// After a start: the headroom taken back (best effort).
    pub fn after_start(&self, dir: &Path) {
        image::reserve_headroom(dir);
    }

    /// Unmounts the layer (its loop device goes with the mount), or lifts
    /// its project's quota and frees the id. Without `unmount` an image
    /// stays mounted, for the store's trash to unmount once the directory
    /// has moved there: a removal then does not wait for ext4's unmount.
    pub fn release(&self, dir: &Path, unmount: bool) {
        if unmount {
            image::unmount(dir);
        }
        if let Some(p) = &self.projects {
            p.release_dir(&image::mount_point(dir));
        }
    }

    /// Bytes and inodes used.
    pub fn usage(&self, dir: &Path, d: &DiskApplied) -> Option<Usage> {
        usage(dir, d)
    }

    /// After a reboot: a layer whose filesystem was not cleanly unmounted
    /// is dropped (made again, empty, at the next start). Answers whether.
    pub fn reset_if_unclean(&self, dir: &Path) -> io::Result<bool> {
        image::reset_if_unclean(dir)
    }
}

/// Bytes and inodes used by the limited layer of the container in `dir`
/// (the quota's count, or the image's statfs), the headroom not counted.
pub fn usage(dir: &Path, d: &DiskApplied) -> Option<Usage> {
    match d.project {
        Some(id) => {
            let layer = image::mount_point(dir);
            let (bytes, inodes) =
                crate::sys::quota::usage(&std::fs::File::open(&layer).ok()?, id).ok()?;
            let head = image::headroom_held(dir);
            Some(Usage {
                bytes: bytes.saturating_sub(head),
                inodes: inodes.saturating_sub(head.min(1)),
            })
        }
        None => image::usage(dir),
    }
}

/// The overlay's upper and work dirs of the container in `dir`.
pub fn layer_dirs(dir: &Path, limited: bool) -> (PathBuf, PathBuf) {
    let base = match limited {
        true => image::mount_point(dir),
        false => dir.to_path_buf(),
    };
    (base.join("upper"), base.join("work"))
}

#[cfg(test)]
mod tests;
