//! The container's writable layer (the overlay's upper and work dirs).
//!
//! The overlay is mounted `volatile`: overlayfs then never syncs the upper
//! filesystem. Without it, the unmount at every container exit runs
//! `syncfs` on the whole filesystem that holds the state dir (every
//! tenant's pending log lines and layers, not only this container's), on
//! the exit's critical path; `scripts/bench start` measured the full cycle
//! ~20% shorter with it.
//!
//! The price is what the kernel documents: after a crash, writes that were
//! never written back are lost and the layer can be inconsistent. overlayfs
//! leaves a marker (`<work>/work/incompat/volatile`) and refuses to mount
//! the dirs again while it is there. So:
//! - in the boot that wrote the layer, the page cache still holds every
//!   write: the layer is whole, the marker is removed before the next mount
//!   ([`clear_marker`]);
//! - after a reboot, a layer with the marker is emptied once, at the
//!   agent's start ([`reset_if_unsynced`]): the container starts again from
//!   its image (an event `layer_reset` says so). A writable layer is
//!   scratch space; what a tenant keeps belongs in a volume or a service.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where overlayfs marks a work dir whose volatile mount was never synced.
pub fn volatile_marker(work: &Path) -> PathBuf {
    work.join("work").join("incompat").join("volatile")
}

fn remove_tree(p: &Path) -> io::Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Removes the marker of a previous volatile mount made in this boot (the
/// layer is whole: its writes are in the page cache), so the dirs can be
/// mounted again.
pub fn clear_marker(work: &Path) -> io::Result<()> {
    remove_tree(&volatile_marker(work))
}

/// After a reboot: empties a layer whose volatile mount was never synced
/// (its marker is there). Answers whether it did.
pub fn reset_if_unsynced(upper: &Path, work: &Path) -> io::Result<bool> {
    if !volatile_marker(work).exists() {
        return Ok(false);
    }
    for d in [upper, work] {
        remove_tree(d)?;
        fs::create_dir(d)?;
    }
    Ok(true)
}

/// The kernel's id of this boot.
pub fn boot_id() -> io::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string())
}

/// Whether `file` holds another boot's id than this one (or nothing: the
/// first start, or an agent from before this file); the caller records
/// this boot's id with [`record_boot`] once it has handled the reboot.
pub fn is_new_boot(file: &Path) -> io::Result<bool> {
    let now = boot_id()?;
    Ok(fs::read_to_string(file).map(|s| s.trim().to_string()).ok() != Some(now))
}

pub fn record_boot(file: &Path) -> io::Result<()> {
    crate::fsutil::write_atomic(file, format!("{}\n", boot_id()?).as_bytes(), true)
        .map_err(|e| io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_layer_is_emptied_and_an_unmarked_one_kept() {
        let t = tempfile::tempdir().unwrap();
        let (upper, work) = (t.path().join("upper"), t.path().join("work"));
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&work).unwrap();
        fs::write(upper.join("data"), "x").unwrap();
        assert!(!reset_if_unsynced(&upper, &work).unwrap());
        assert!(upper.join("data").exists());
        fs::create_dir_all(volatile_marker(&work).join("dirty")).unwrap();
        assert!(reset_if_unsynced(&upper, &work).unwrap());
        assert!(upper.is_dir() && work.is_dir());
        assert_eq!(fs::read_dir(&upper).unwrap().count(), 0);
        assert!(!volatile_marker(&work).exists());
    }

    #[test]
    fn the_marker_is_cleared_and_clearing_nothing_is_fine() {
        let t = tempfile::tempdir().unwrap();
        clear_marker(t.path()).unwrap();
        fs::create_dir_all(volatile_marker(t.path()).join("dirty")).unwrap();
        clear_marker(t.path()).unwrap();
        assert!(!volatile_marker(t.path()).exists());
        assert!(t.path().join("work/incompat").is_dir());
    }

    #[test]
    fn a_boot_is_new_until_recorded() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("boot_id");
        assert!(is_new_boot(&f).unwrap());
        fs::write(&f, "another-boot\n").unwrap();
        assert!(is_new_boot(&f).unwrap());
        record_boot(&f).unwrap();
        assert!(!is_new_boot(&f).unwrap());
    }
}
