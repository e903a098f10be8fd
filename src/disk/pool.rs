//! Images of the default size made ahead, so a create takes one with a
//! rename instead of copying the template (~1 ms) on its path.
//!
//! A thread of its own keeps `[storage] prepared_images` of them in
//! `<state>/disk-pool/`; a create that takes one wakes it. Half-made
//! images (a crash during mke2fs) are `*.img.tmp` and removed at start.

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
    ready: Mutex<Vec<PathBuf>>,
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
                true => ready.push(p),
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

    /// Moves a prepared image to `dest` if one of this size is ready.
    pub fn take_if(&self, bytes: u64, inodes: u64, dest: &Path) -> bool {
        if (bytes, inodes) != (self.bytes, self.inodes) {
            return false;
        }
        let mut ready = self.shared.ready.lock().unwrap();
        while let Some(p) = ready.pop() {
            if std::fs::rename(&p, dest).is_ok() {
                self.shared.wake.notify_one();
                return true;
            }
        }
        false
    }
}

impl Shared {
    fn fill(&self, bytes: u64, inodes: u64, size: usize) {
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
                Ok(_) => self.ready.lock().unwrap().push(p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prepare a layer image; retrying in 5 s");
                    std::thread::sleep(std::time::Duration::from_secs(5));
                }
            }
        }
    }
}
