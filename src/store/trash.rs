//! Removed containers' directories (`trash/` beside `containers/`): a
//! remove renames the directory here, which frees the name at once, and a
//! thread of the agent's deletes it. A remove then does not wait for the
//! file system to free a writable layer's and its logs' blocks (~2 ms of a
//! container's whole cycle on this machine's ext4, more with big layers).
//! What a crash left here is deleted after the next start.
//!
//! A writable layer's image may still be mounted in a directory moved
//! here (a removal leaves its unmount, ~1.5 ms, to this thread): what is
//! mounted on its subdirectories is unmounted first.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;

#[derive(Debug)]
pub struct Trash {
    dir: PathBuf,
    tx: Mutex<Sender<PathBuf>>,
    seq: AtomicU64,
}

/// Unmounts what is mounted on the subdirectories of `p`.
pub(super) fn unmount_below(p: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = fs::symlink_metadata(p) else {
        return;
    };
    for e in fs::read_dir(p).into_iter().flatten().flatten() {
        let sub = e.path();
        let mounted = fs::symlink_metadata(&sub).is_ok_and(|m| m.is_dir() && m.dev() != top.dev());
        if mounted {
            if let Err(e) = nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH) {
                tracing::error!(path = %sub.display(), error = %e, "cannot unmount a removed container's layer");
            }
        }
    }
}

impl Trash {
    /// Opens (makes) the trash and starts its deleting thread, which first
    /// deletes what is there. The thread ends when the trash is dropped.
    pub fn open(dir: &Path) -> io::Result<Trash> {
        fs::create_dir_all(dir)?;
        let (tx, rx) = channel::<PathBuf>();
        for e in fs::read_dir(dir)?.flatten() {
            let _ = tx.send(e.path());
        }
        std::thread::Builder::new()
            .name("hydra-trash".into())
            .spawn(move || {
                for p in rx {
                    unmount_below(&p);
                    match fs::remove_dir_all(&p) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => {
                            tracing::error!(path = %p.display(), error = %e, "cannot delete a removed container's directory")
                        }
                    }
                }
            })?;
        Ok(Trash {
            dir: dir.to_path_buf(),
            tx: Mutex::new(tx),
            seq: AtomicU64::new(0),
        })
    }

    /// Moves `path` (a directory on the trash's file system) into the
    /// trash, to be deleted; false if there was nothing at `path`.
    pub fn put(&self, path: &Path) -> io::Result<bool> {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        // unique also against what an earlier run left and has not been
        // deleted yet
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dest = self.dir.join(format!(
            "{name}.{stamp}.{}",
            self.seq.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::rename(path, &dest) {
            Ok(()) => {
                // the thread only ends with the trash
                let _ = self.tx.lock().unwrap().send(dest);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}
