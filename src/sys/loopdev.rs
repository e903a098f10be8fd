//! Loop devices: a file attached as a block device in one `LOOP_CONFIGURE`
//! call (Linux 5.8+), with autoclear and direct I/O.
//!
//! Hand-written (two ioctls and their structs, from `<linux/loop.h>`):
//! the `loopdev` crates generate their bindings with bindgen at build time
//! (libclang on every build machine) and attach with the older
//! `LOOP_SET_FD` + `LOOP_SET_STATUS64` pair, in which a crash between the
//! two leaves a device without autoclear.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_DIRECT_IO: u32 = 16;

#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `backing` to a free loop device, read-write, 4 KiB blocks,
/// direct I/O (the writes are issued by the loop's worker in the writer's
/// cgroup, so io limits hold, and the backing file is not cached twice),
/// autoclear (the device goes with its last user: the mount). Answers the
/// device, open: the caller mounts it, then drops the fd.
pub fn attach(backing: &File) -> io::Result<(PathBuf, File)> {
    let ctl = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")?;
    // another attach can take the free device between the two calls:
    // then the configure says EBUSY and the next free one is asked for
    for _ in 0..64 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and answers a number.
        let n = unsafe { libc::ioctl(ctl.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let dev = OpenOptions::new().read(true).write(true).open(&path)?;
        let cfg = LoopConfig {
            fd: backing.as_raw_fd() as u32,
            block_size: 4096,
            info: LoopInfo64 {
                device: 0,
                inode: 0,
                rdevice: 0,
                offset: 0,
                sizelimit: 0,
                number: 0,
                encrypt_type: 0,
                encrypt_key_size: 0,
                flags: LO_FLAGS_AUTOCLEAR | LO_FLAGS_DIRECT_IO,
                file_name: [0; 64],
                crypt_name: [0; 64],
                encrypt_key: [0; 32],
                init: [0; 2],
            },
            reserved: [0; 8],
        };
        // SAFETY: cfg is a valid loop_config that outlives the call; the
        // kernel only reads it.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &cfg as *const LoopConfig) };
        if r == 0 {
            return Ok((path, dev));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(e);
        }
    }
    Err(io::Error::other("no free loop device after 64 tries"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_struct_has_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
