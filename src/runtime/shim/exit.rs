//! The container's exit status: room reserved before the start, the status
//! written into it when the container ends.

use super::HelperError;
use crate::runtime::{ExitRecord, Launch};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::io::Write;

/// Room for the exit status, made before the container starts: a file of
/// spaces (not JSON yet) that the status is later written into in place,
/// which needs no new block, so a disk that fills up meanwhile cannot cost
/// the container its exit status. None if it could not be made (then the
/// status is written as a new file at the end).
pub(super) const EXIT_SLOT: usize = 512;

pub(super) fn reserve_exit_file(path: &std::path::Path) -> Option<File> {
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .ok()?;
    f.write_all(&[b' '; EXIT_SLOT]).ok()?;
    Some(f)
}

/// Waits for the container's end and writes its exit status file.
pub(super) fn record_exit(
    launch: &Launch,
    child: Pid,
    slot: Option<File>,
) -> Result<(), HelperError> {
    let (exit_code, signal) = loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, c)) => break (Some(c), None),
            Ok(WaitStatus::Signaled(_, s, _)) => break (None, Some(s as i32)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(HelperError(format!("waitpid: {e}"))),
        }
    };
    let rec = ExitRecord {
        exit_code,
        signal,
        finished_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    };
    let mut data = serde_json::to_vec(&rec).expect("serializes");
    // Not fsynced: after a power loss the exit of a process is moot. The
    // agent learns of the exit when this process ends, so it stays until
    // the status is on disk (a full disk without a slot: retried each second).
    let mut warned = false;
    loop {
        let res = match (&slot, data.len() <= EXIT_SLOT) {
            (Some(f), true) => {
                data.resize(EXIT_SLOT, b' ');
                std::os::unix::fs::FileExt::write_all_at(f, &data, 0)
                    .map_err(|e| HelperError(format!("write {}: {e}", launch.exit_file.display())))
            }
            _ => crate::fsutil::write_atomic(&launch.exit_file, &data, false)
                .map_err(|e| HelperError(format!("{e}: {}", e.source))),
        };
        match res {
            Ok(()) => return Ok(()),
            Err(e) if !warned => {
                eprintln!("hydra shim {}: {e}; retrying each second", launch.name);
                warned = true;
            }
            Err(_) => {}
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
