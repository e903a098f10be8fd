//! The containers' writable layers, bounded: `limits.disk` bytes and
//! `limits.inodes` files, enforced by the kernel.
//!
//! Mechanisms (`[storage] mechanism`, the one in use shown by `GET /v1/host`
//! as `storage_limits`):
//! - `image`: the layer (the overlay's upper and work dirs) lives on an ext4
//!   of its own, a sparse file `<dir>/disk.img` of the limit's size and
//!   inode count, attached to a loop device and mounted at `<dir>/layer`
//!   by the agent. A write past the limit gets `ENOSPC` in that container
//!   only; the image takes on the host only what was written. See
//!   [`image`] for its life (one mount for the container's life, kept
//!   across an agent crash, checked after a reboot).
//! - `none`: no mechanism works here; creates are refused naming
//!   `limits.disk` unless `[storage] require_limits = false`.

mod image;
mod pool;

pub use image::Usage;

use crate::config::{StorageConfig, StorageMechanism};
use crate::model::{DiskApplied, Limits};
use std::io;
use std::path::{Path, PathBuf};

/// The mechanism in use on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Image,
    None,
}

impl Mechanism {
    pub fn as_str(self) -> &'static str {
        match self {
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
            DiskError::Unsupported(_) => None,
        }
    }
}

/// The writable layers of this agent's containers.
pub struct Disks {
    mechanism: Mechanism,
    /// Why `auto` found no mechanism (for the refusal's message).
    why_none: String,
    cfg: StorageConfig,
    pool: Option<pool::Pool>,
}

impl Disks {
    /// Picks the mechanism (`auto`: `image` if this host can attach loop
    /// devices and has mke2fs) and starts the pool of prepared images.
    pub fn new(cfg: &StorageConfig, state: &Path) -> Disks {
        let (mechanism, why_none) = match cfg.mechanism {
            StorageMechanism::None => (
                Mechanism::None,
                "[storage] mechanism = \"none\"".to_string(),
            ),
            _ => match image::available() {
                Ok(()) => (Mechanism::Image, String::new()),
                Err(why) => (Mechanism::None, why),
            },
        };
        if cfg.mechanism == StorageMechanism::Image && mechanism == Mechanism::None {
            tracing::error!(reason = %why_none, "[storage] mechanism = \"image\" cannot work on this host");
        }
        let pool = (mechanism == Mechanism::Image && cfg.prepared_images > 0).then(|| {
            let (bytes, inodes) = image::plan(cfg.default_disk.0, cfg.default_inodes);
            pool::Pool::start(state.join("disk-pool"), bytes, inodes, cfg.prepared_images)
        });
        Disks {
            mechanism,
            why_none,
            cfg: cfg.clone(),
            pool,
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
        match self.mechanism {
            Mechanism::Image => {
                let (_, inodes) = image::plan(bytes, inodes);
                Ok(Some(DiskApplied {
                    bytes,
                    inodes,
                    mechanism: "image".into(),
                }))
            }
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
        let img = image::image_path(dir);
        if let Some(p) = &self.pool {
            if p.take_if(d.bytes, d.inodes, &img) {
                d.inodes = image::inodes_of(&img).map_err(DiskError::io("cannot read", &img))?;
                return Ok(());
            }
        }
        d.inodes = image::make(&img, d.bytes, d.inodes)?;
        Ok(())
    }

    /// Before each start: the layer mounted (made again if a reboot reset
    /// it), its headroom freed for the overlay's own dirs.
    pub fn before_start(&self, dir: &Path, d: &DiskApplied) -> Result<(), DiskError> {
        if !image::image_path(dir).exists() {
            self.prepare(dir, &mut d.clone())?;
        }
        image::mount(dir)
    }

    /// After a start: the headroom taken back (best effort).
    pub fn after_start(&self, dir: &Path) {
        image::reserve_headroom(dir);
    }

    /// Unmounts the layer (its loop device goes with the mount).
    pub fn release(&self, dir: &Path) {
        image::unmount(dir)
    }

    /// Bytes and inodes used, from the layer's statfs.
    pub fn usage(&self, dir: &Path) -> Option<Usage> {
        image::usage(dir)
    }

    /// After a reboot: a layer whose filesystem was not cleanly unmounted
    /// is dropped (made again, empty, at the next start). Answers whether.
    pub fn reset_if_unclean(&self, dir: &Path) -> io::Result<bool> {
        image::reset_if_unclean(dir)
    }
}

/// Bytes and inodes used by the limited layer of the container in `dir`.
pub fn usage(dir: &Path) -> Option<Usage> {
    image::usage(dir)
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
