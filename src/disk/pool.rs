//! Images of the default size made and mounted ahead, so a create takes
//! one with a rename and a `move_mount` instead of copying the template
//! (~1 ms), attaching a loop device and mounting ext4 (~2 ms) on its path.
//!
//! A thread of its own keeps `[storage] prepared_images` of them in
//! `<state>/disk-pool/`; a create that takes one wakes it. Their mounts
//! are detached (attached to no directory: see [`Detached`]), so they go
//! with the agent; the images stay and are mounted again by the next
//! agent. Half-made images (a crash during the copy) are `*.img.tmp` and
//! removed at start. Where the kernel lacks the new mount API (before
//! 5.2) the images are only made ahead, and mounted at the first start.

use super::image::Detached;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

pub struct Pool {
    bytes: u64,
    inodes: u64,
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    templates: PathBuf,
    ready: Mutex<Vec<(PathBuf, Option<Detached>)>>,
    wake: Condvar,
}

impl Pool {
    /// `dirs`: the pool's, the templates'.
    pub fn start(dirs: (PathBuf, PathBuf), bytes: u64, inodes: u64, size: u32) -> Pool {
        let (dir, templates) = dirs;
        let mut ready = Vec::new();
        let _ = std::fs::create_dir_all(&dir);
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let p = e.path();
            // kept only if made for this size (the config may have changed)
            let fits = p.extension().is_some_and(|x| x == "img")
                && super::image::inodes_of(&p).is_ok_and(|n| n >= inodes)
                && e.metadata()
                    .is_ok_and(|m| m.len() == super::image::plan(bytes, inodes).0);
            match fits {
                true => ready.push((p, None)),
                false => drop(std::fs::remove_file(&p)),
            }
        }
        let shared = Arc::new(Shared {
            dir,
            templates,
            ready: Mutex::new(ready),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("disk-pool".into())
            .spawn(move || s.fill(bytes, inodes, size as usize));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the thread that prepares layer images");
        }
        Pool {
            bytes,
            inodes,
            shared,
        }
    }

    /// Moves a prepared image into the container's `dir` if one of this
    /// size is ready, and its mount to `<dir>/layer` if it has one (else,
    /// or if the move fails, the first start mounts it).
    pub fn take_if(&self, bytes: u64, inodes: u64, dir: &Path) -> bool {
        if (bytes, inodes) != (self.bytes, self.inodes) {
            return false;
        }
        let dest = super::image::image_path(dir);
        let mut ready = self.shared.ready.lock().unwrap();
        while let Some((p, mounted)) = ready.pop() {
            if std::fs::rename(&p, &dest).is_ok() {
                drop(ready);
                self.shared.wake.notify_one();
                if let Some(m) = mounted {
                    if let Err(e) = super::image::place(m, dir) {
                        tracing::warn!(error = %e, "a layer mounted ahead is mounted again at the start");
                    }
                }
                return true;
            }
        }
        false
    }
}

impl Shared {
    /// Mounts `p` ahead, unless the kernel has shown it cannot (`ahead`
    /// then turns false for good).
    fn mount_ahead(&self, p: &Path, ahead: &mut bool) -> Option<Detached> {
        if !*ahead {
            return None;
        }
        match super::image::mount_detached(p) {
            Ok(m) => Some(m),
            Err(e) => {
                if e.raw_os_error() == Some(libc::ENOSYS) {
                    *ahead = false;
                }
                let cause = std::error::Error::source(&e).map(|c| c.to_string());
                tracing::warn!(error = %e, cause, "a prepared layer will be mounted at its start");
                None
            }
        }
    }

    fn fill(&self, bytes: u64, inodes: u64, size: usize) {
        let mut ahead = true;
        // what an earlier agent made is mounted first
        let found: Vec<PathBuf> = std::mem::take(&mut *self.ready.lock().unwrap())
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        for p in found {
            let m = self.mount_ahead(&p, &mut ahead);
            self.ready.lock().unwrap().push((p, m));
        }
        let mut n = 0u64;
        loop {
            {
                let mut ready = self.ready.lock().unwrap();
                while ready.len() >= size {
                    ready = self.wake.wait(ready).unwrap();
                }
            }
            n += 1;
            let p = self.dir.join(format!("{}-{n}.img", std::process::id()));
            match super::image::make(&p, bytes, inodes, &self.templates) {
                Ok(_) => {
                    let m = self.mount_ahead(&p, &mut ahead);
                    self.ready.lock().unwrap().push((p, m))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prepare a layer image; retrying in 5 s");
                    std::thread::sleep(std::time::Duration::from_secs(5));
                }
            }
        }
    }
}
