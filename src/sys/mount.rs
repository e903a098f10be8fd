//! User namespaces and idmapped mounts: a new mapped user namespace held by
//! an fd, and the new mount API calls nix and rustix do not have.

use super::fork_single_threaded;
use nix::sched::CloneFlags;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// A new user namespace mapping ids `0..size` to host ids `base..base+size`,
/// held by the returned fd (`/proc/<pid>/ns/user` of a short-lived child
/// that made it).
///
/// # Safety
/// It forks: as [`fork_single_threaded`], the caller must be single-threaded.
pub unsafe fn new_userns(base: u32, size: u32) -> io::Result<OwnedFd> {
    use nix::unistd::{pipe, read, ForkResult};
    use std::io::Write;
    let (ready_r, ready_w) = pipe()?;
    let (hold_r, hold_w) = pipe()?;
    // SAFETY: the caller is single-threaded (this function's contract).
    let child = match unsafe { fork_single_threaded() }? {
        ForkResult::Child => {
            // in the child: make the namespace, say so, wait until the
            // parent has mapped it and opened it, exit without unwinding
            drop((ready_r, hold_w));
            let ok = nix::sched::unshare(CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_w, if ok { b"k" } else { b"e" });
            let mut b = [0u8; 1];
            let _ = read(hold_r.as_raw_fd(), &mut b);
            // SAFETY: _exit is async-signal-safe and skips the parent's
            // atexit handlers and buffers, which this copy must not run.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => child,
    };
    drop((ready_w, hold_r));
    let res = (|| {
        let mut b = [0u8; 1];
        if read(ready_r.as_raw_fd(), &mut b)? != 1 || b[0] != b'k' {
            return Err(io::Error::other("unshare(CLONE_NEWUSER) failed"));
        }
        let map = format!("0 {base} {size}\n");
        for f in ["uid_map", "gid_map"] {
            std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/{child}/{f}"))?
                .write_all(map.as_bytes())
                .map_err(|e| io::Error::new(e.kind(), format!("write {f} {map:?}: {e}")))?;
        }
        let ns = std::fs::File::open(format!("/proc/{child}/ns/user"))?;
        Ok(OwnedFd::from(ns))
    })();
    drop(hold_w);
    let _ = nix::sys::wait::waitpid(child, None);
    res
}

/// Bind-mounts `path` onto itself with its ids shifted into the user
/// namespace `userns` (an idmapped mount: a file owned by 0 on disk is owned
/// by container root). Neither nix nor rustix has `mount_setattr`, so the
/// three calls of the new mount API are made here.
pub fn idmapped_bind_over(path: &std::path::Path, userns: BorrowedFd<'_>) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("path contains NUL"))?;
    let empty = c"";
    // SAFETY: valid NUL-terminated path, flags per open_tree(2); returns an fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::other(format!(
            "open_tree {}: {}",
            path.display(),
            io::Error::last_os_error()
        )));
    }
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    let tfd = tree.as_raw_fd();
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: tree is a detached mount fd, empty path with AT_EMPTY_PATH,
    // attr points to a live struct whose size is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tfd,
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        return Err(io::Error::other(format!(
            "idmap {}: {}",
            path.display(),
            io::Error::last_os_error()
        )));
    }
    // SAFETY: attaches the detached tree onto the path; both strings valid.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tfd,
            empty.as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(io::Error::other(format!(
            "move_mount {}: {}",
            path.display(),
            io::Error::last_os_error()
        )));
    }
    Ok(())
}
