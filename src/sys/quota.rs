//! Project quotas: a directory tree's project id (`FS_IOC_FSSETXATTR` with
//! the inherit flag) and the project's limits and use (`quotactl_fd`,
//! Linux 5.14+), on ext4 mounted `prjquota` or XFS `pquota`.
//!
//! Hand-written: libc has the quota structs and commands but no wrapper for
//! `quotactl_fd`, nor `struct fsxattr`; no maintained crate covers either.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

const PRJQUOTA: libc::c_int = 2;
/// `_IOR('X', 31, struct fsxattr)`, `_IOW('X', 32, struct fsxattr)`.
const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;
/// Quota block unit (`QIF_DQBLKSIZE`): limits are in KiB.
const DQBLK: u64 = 1024;

#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// Gives the directory `dir` (open) project `id`, inherited by whatever
/// is made under it.
pub fn set_project(dir: &File, id: u32) -> io::Result<()> {
    let mut x = FsXattr::default();
    // SAFETY: FSGETXATTR writes one fsxattr into x, which outlives the call.
    if unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    x.projid = id;
    x.xflags |= FS_XFLAG_PROJINHERIT;
    // SAFETY: FSSETXATTR reads one fsxattr from x.
    match unsafe { libc::ioctl(dir.as_raw_fd(), FS_IOC_FSSETXATTR, &x as *const FsXattr) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// The project id of `f` (open).
pub fn project_of(f: &File) -> io::Result<u32> {
    let mut x = FsXattr::default();
    // SAFETY: FSGETXATTR writes one fsxattr into x, which outlives the call.
    if unsafe { libc::ioctl(f.as_raw_fd(), FS_IOC_FSGETXATTR, &mut x as *mut FsXattr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(x.projid)
}

fn quotactl(on: &File, cmd: libc::c_int, id: u32, addr: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: quotactl_fd with a valid fd; addr points at what `cmd` reads
    // or writes (checked by each caller), or is null.
    let r = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            on.as_raw_fd(),
            libc::QCMD(cmd, PRJQUOTA),
            id,
            addr,
        )
    };
    match r {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Whether project quotas are on for the filesystem holding `on`.
pub fn enabled(on: &File) -> io::Result<()> {
    let mut fmt: u32 = 0;
    quotactl(
        on,
        libc::Q_GETFMT,
        0,
        &mut fmt as *mut u32 as *mut libc::c_void,
    )
}

/// Sets project `id`'s hard limits (0: none), bytes rounded up to KiB.
pub fn set_limits(on: &File, id: u32, bytes: u64, inodes: u64) -> io::Result<()> {
    // SAFETY: dqblk is plain data; zero is valid for every field.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    q.dqb_bhardlimit = bytes.div_ceil(DQBLK);
    q.dqb_ihardlimit = inodes;
    q.dqb_valid = libc::QIF_LIMITS;
    quotactl(
        on,
        libc::Q_SETQUOTA,
        id,
        &mut q as *mut libc::dqblk as *mut libc::c_void,
    )
}

/// Project `id`'s use: (bytes, inodes).
pub fn usage(on: &File, id: u32) -> io::Result<(u64, u64)> {
    // SAFETY: dqblk is plain data; zero is valid for every field.
    let mut q: libc::dqblk = unsafe { std::mem::zeroed() };
    quotactl(
        on,
        libc::Q_GETQUOTA,
        id,
        &mut q as *mut libc::dqblk as *mut libc::c_void,
    )?;
    Ok((q.dqb_curspace, q.dqb_curinodes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_structs_have_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<super::FsXattr>(), 28);
        assert_eq!(std::mem::size_of::<libc::dqblk>(), 72);
    }
}
