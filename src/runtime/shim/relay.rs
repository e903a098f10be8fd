//! The shim's relay of the container's output into its log.

use super::Launch;
use crate::telemetry::logs::{LineSplitter, LogWriter};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

/// Copies both pipes into the log until both reach end of file.
/// A record that cannot be stored (a full disk) is counted and noted by the
/// writer; the pipes are drained whatever happens, so the container never
/// blocks on its output or dies of it.
pub(super) fn copy_logs(l: &Launch, out: OwnedFd, err: OwnedFd) -> std::io::Result<()> {
    let mut w = LogWriter::open_resilient(&l.log_dir, l.log_max_size, l.log_max_files);
    let mut streams = [
        (Some(File::from(out)), "stdout", LineSplitter::default()),
        (Some(File::from(err)), "stderr", LineSplitter::default()),
    ];
    let mut buf = vec![0u8; 64 * 1024];
    while streams.iter().any(|s| s.0.is_some()) {
        let mut ready = [false; 2];
        {
            let mut fds: Vec<PollFd> = Vec::new();
            let mut idx = Vec::new();
            for (i, s) in streams.iter().enumerate() {
                if let Some(f) = &s.0 {
                    fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
                    idx.push(i);
                }
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            for (k, fd) in fds.iter().enumerate() {
                if fd.revents().is_some_and(|r| !r.is_empty()) {
                    ready[idx[k]] = true;
                }
            }
        }
        for (i, s) in streams.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            let Some(f) = s.0.as_mut() else { continue };
            let n = match f.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => 0,
            };
            let name = s.1;
            // a record not stored is the writer's to count and note
            let mut emit = |line: &[u8], partial: bool| {
                let _ = w.write(name, line, partial);
            };
            if n == 0 {
                s.2.finish(&mut emit);
                s.0 = None;
            } else {
                s.2.feed(&buf[..n], &mut emit);
            }
        }
    }
    Ok(())
}
