//! The `image` mechanism: a container's writable layer on an ext4 of its
//! own, `<dir>/disk.img`, loop-mounted at `<dir>/layer`.
//!
//! - A copy of a template made by mke2fs, at the create (or taken from the
//!   prepared pool): sparse, without a journal (the overlay above is
//!   volatile anyway), its inode tables left as holes: an empty 10 GiB
//!   image takes ~200 KiB.
//! - Mounted once, by the agent, in its own mount namespace: at the
//!   create when the pool had it mounted ahead, else at the first start;
//!   it stays mounted while the container exists (stopped or not), so
//!   restarts cost nothing and an agent crash leaves running containers'
//!   layers in place. The image is locked (an OFD lock on the open file
//!   the loop device keeps), so a second attach, e.g. by an agent started
//!   in another mount namespace, is refused instead of mounting one ext4
//!   twice. Unmounted after the removal, by the store's trash (or at once
//!   when a create fails); the loop device goes with the mount.
//! - After a reboot, an image that was not cleanly unmounted is dropped and
//!   made again, empty, at the next start (like the volatile overlay's own
//!   rule in `runtime::layer`).
//! - A headroom file (1 MiB) is freed before each start and taken back
//!   after it, so a layer filled to its limit can still be mounted (the
//!   overlay makes its work dir at each mount).

use super::DiskError;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const BLOCK: u64 = 4096;
/// ext4's blocks per group at 4 KiB blocks, and the most inodes a group
/// holds (one bitmap block).
const GROUP_BLOCKS: u64 = 32768;
const INODE_SIZE: u64 = 256;
pub const HEADROOM: u64 = 1 << 20;
const HEADROOM_FILE: &str = ".headroom";
const MKE2FS: [&str; 2] = ["/usr/sbin/mke2fs", "/sbin/mke2fs"];

pub fn image_path(dir: &Path) -> PathBuf {
    dir.join("disk.img")
}

pub fn mount_point(dir: &Path) -> PathBuf {
    dir.join("layer")
}

fn mke2fs() -> Option<&'static str> {
    MKE2FS.into_iter().find(|p| Path::new(p).exists())
}

/// Whether this host can use images; else why not.
pub fn available() -> Result<(), String> {
    if mke2fs().is_none() {
        return Err("mke2fs not found (Debian package e2fsprogs)".into());
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map(drop)
        .map_err(|e| format!("cannot open /dev/loop-control: {e} (kernel module loop)"))
}

/// The filesystem's size for `bytes` of data, and the inodes it can hold
/// of the `inodes` asked for (at most 32,768 per 128 MiB group: a small
/// layer gets fewer inodes than a large default asks for).
pub fn plan(bytes: u64, inodes: u64) -> (u64, u64) {
    let mut n = inodes;
    loop {
        let fs = fs_size(bytes, n);
        let cap = fs.div_ceil(GROUP_BLOCKS * BLOCK) * GROUP_BLOCKS;
        if n <= cap {
            return (fs, n);
        }
        n = cap;
    }
}

/// Data, headroom, inode tables, and per group its two bitmaps and
/// descriptors, plus the root and lost+found dirs; rounded to blocks.
fn fs_size(bytes: u64, inodes: u64) -> u64 {
    let raw = bytes + HEADROOM + inodes * INODE_SIZE + (1 << 20);
    let groups = raw.div_ceil(GROUP_BLOCKS * BLOCK);
    (raw + groups * 4 * BLOCK).div_ceil(BLOCK) * BLOCK
}

/// Makes the image for `bytes` and `inodes` at `img`: a sparse copy of
/// the template for that size in `templates` (made by mke2fs the first
/// time), through a temporary file, so a crash leaves no half-made image
/// under the final name. Answers the inodes it holds.
///
/// The copy reads and writes only the template's data (~200 KiB for 10Gi
/// and a million inodes: SEEK_DATA/SEEK_HOLE and copy_file_range), ~1 ms
/// against ~10 ms for mke2fs, which also walks every loop device of the
/// host to check that the file is not in use. The copies share the
/// template's filesystem UUID (nothing of the agent's depends on it).
pub fn make(img: &Path, bytes: u64, inodes: u64, templates: &Path) -> Result<u64, DiskError> {
    let (size, n) = plan(bytes, inodes);
    let tmpl = template(templates, size, n)?;
    let tmp = img.with_extension("img.tmp");
    let made = sparse_copy(&tmpl, &tmp, size).and_then(|()| {
        fs::rename(&tmp, img)?;
        inodes_of(img)
    });
    if made.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    made.map_err(DiskError::io("cannot make the layer's image", img))
}

/// The template for a filesystem of `size` bytes and `n` inodes, made
/// if missing (under a name of its own first: two makers race harmlessly).
fn template(dir: &Path, size: u64, n: u64) -> Result<PathBuf, DiskError> {
    let path = dir.join(format!("{size}-{n}.img"));
    if path.exists() {
        return Ok(path);
    }
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("{size}-{n}.{}-{seq}.tmp", std::process::id()));
    let made = fs::create_dir_all(dir)
        .and_then(|()| mkfs(&tmp, size, n))
        .and_then(|()| fs::rename(&tmp, &path));
    if made.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    made.map_err(DiskError::io("cannot make the layer template", &path))?;
    Ok(path)
}

/// Removes half-made templates (a crash during mke2fs).
pub fn clean_templates(dir: &Path) {
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "tmp") {
            let _ = fs::remove_file(e.path());
        }
    }
}

fn mkfs(path: &Path, size: u64, n: u64) -> io::Result<()> {
    let f = File::create(path)?;
    f.set_len(size)?;
    drop(f);
    let out = Command::new(mke2fs().ok_or_else(|| io::Error::other("mke2fs not found"))?)
        .args(["-t", "ext4", "-q", "-F", "-b", "4096", "-m", "0"])
        .args([
            "-O",
            "^has_journal,^resize_inode",
            "-E",
            "lazy_itable_init=0,root_owner=0:0",
        ])
        .arg("-N")
        .arg(n.to_string())
        .arg(path)
        .output()?;
    if out.status.success() {
        return Ok(());
    }
    // mke2fs says "Could not allocate block" on a full disk
    Err(match free_bytes(path) < 64 << 20 {
        true => io::Error::from_raw_os_error(libc::ENOSPC),
        false => io::Error::other(format!(
            "mke2fs failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
    })
}

/// Copies the data extents of `src` into a new sparse file `dst` of `size`.
fn sparse_copy(src: &Path, dst: &Path, size: u64) -> io::Result<()> {
    use nix::unistd::{lseek64, Whence};
    use std::os::fd::AsRawFd;
    let from = File::open(src)?;
    let to = File::create(dst)?;
    to.set_len(size)?;
    let mut pos: i64 = 0;
    loop {
        let start = match lseek64(from.as_raw_fd(), pos, Whence::SeekData) {
            Ok(o) => o,
            Err(nix::errno::Errno::ENXIO) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let end = lseek64(from.as_raw_fd(), start, Whence::SeekHole)?;
        let (mut a, mut b) = (start, start);
        while a < end {
            let len = (end - a) as usize;
            let n = nix::fcntl::copy_file_range(&from, Some(&mut a), &to, Some(&mut b), len)?;
            if n == 0 {
                return Err(io::Error::other("the template ended early"));
            }
        }
        pos = end;
    }
}

fn free_bytes(p: &Path) -> u64 {
    let dir = p.parent().unwrap_or(p);
    nix::sys::statvfs::statvfs(dir).map_or(u64::MAX, |s| s.blocks_available() * s.fragment_size())
}

/// The primary superblock's (s_inodes_count, s_state, s_magic).
fn superblock(img: &Path) -> io::Result<(u32, u16, u16)> {
    let mut f = File::open(img)?;
    let mut sb = [0u8; 64];
    f.seek(SeekFrom::Start(1024))?;
    f.read_exact(&mut sb)?;
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let count = u32::from_le_bytes([sb[0], sb[1], sb[2], sb[3]]);
    Ok((count, u16_at(58), u16_at(56)))
}

pub fn inodes_of(img: &Path) -> io::Result<u64> {
    Ok(superblock(img)?.0 as u64)
}

fn is_mounted(dir: &Path) -> bool {
    match (fs::metadata(dir), fs::metadata(mount_point(dir))) {
        (Ok(d), Ok(m)) => d.dev() != m.dev(),
        _ => false,
    }
}

/// Mounts the layer unless it is; frees the headroom.
pub fn mount(dir: &Path) -> Result<(), DiskError> {
    let mp = mount_point(dir);
    if !is_mounted(dir) {
        attach_and_mount(dir, &mp)?;
    }
    make_dirs(dir)
}

/// The overlay's dirs in `<dir>/layer`, and its headroom freed.
pub fn make_dirs(dir: &Path) -> Result<(), DiskError> {
    let mp = mount_point(dir);
    let mk = |d: PathBuf| fs::create_dir_all(&d).map_err(DiskError::io("cannot make", &d));
    mk(mp.join("upper"))?;
    mk(mp.join("work"))?;
    match fs::remove_file(mp.join(HEADROOM_FILE)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(DiskError::io("cannot free the headroom of", &mp)(e))
        }
        _ => Ok(()),
    }
}

fn attach_and_mount(dir: &Path, mp: &Path) -> Result<(), DiskError> {
    fs::create_dir_all(mp).map_err(DiskError::io("cannot make", mp))?;
    let (dev, devf) = attach(&image_path(dir))?;
    let flags = nix::mount::MsFlags::MS_NOATIME;
    let r = nix::mount::mount(Some(&dev), mp, Some("ext4"), flags, None::<&str>);
    drop(devf); // the mount keeps the device; autoclear frees it with the mount
    r.map_err(|e| DiskError::io("cannot mount the layer's image at", mp)(e.into()))
}

/// Opens and locks `img` and attaches it to a loop device: the device's
/// path and open fd (dropped once mounted: autoclear frees the device
/// with its last user).
fn attach(img: &Path) -> Result<(PathBuf, File), DiskError> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(img)
        .map_err(DiskError::io("cannot open the layer's image", img))?;
    lock(&f).map_err(|e| match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => DiskError::io(
            "the layer's image is attached already (still mounted in another mount namespace?):",
            img,
        )(e),
        _ => DiskError::io("cannot lock the layer's image", img)(e),
    })?;
    crate::sys::loopdev::attach(&f).map_err(DiskError::io("cannot attach a loop device to", img))
}

/// A layer mounted ahead by the pool but attached nowhere yet (the new
/// mount API's `fsmount(2)`), its overlay dirs made: a create moves it
/// into place. Dropped, it unmounts itself, and autoclear frees its loop
/// device: an agent that dies leaves no mount of the pool's behind.
#[derive(Debug)]
pub struct Detached(std::os::fd::OwnedFd);

/// Attaches and mounts `img` detached.
pub fn mount_detached(img: &Path) -> Result<Detached, DiskError> {
    use rustix::mount::{fsconfig_create, fsconfig_set_string, fsmount, fsopen};
    use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};
    let (dev, devf) = attach(img)?;
    let mounted = (|| -> rustix::io::Result<std::os::fd::OwnedFd> {
        let fs = fsopen("ext4", FsOpenFlags::FSOPEN_CLOEXEC)?;
        fsconfig_set_string(&fs, "source", &dev)?;
        fsconfig_create(&fs)?;
        let flags = MountAttrFlags::MOUNT_ATTR_NOATIME;
        let mnt = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, flags)?;
        for d in ["upper", "work"] {
            // the mode as create_dir_all's: 0777 less the umask; an image
            // an earlier agent mounted ahead has them already
            match rustix::fs::mkdirat(&mnt, d, rustix::fs::Mode::from_raw_mode(0o777)) {
                Err(e) if e != rustix::io::Errno::EXIST => return Err(e),
                _ => {}
            }
        }
        Ok(mnt)
    })();
    drop(devf);
    mounted
        .map(Detached)
        .map_err(|e| DiskError::io("cannot mount ahead the layer's image", img)(e.into()))
}

/// Moves a layer mounted ahead to `<dir>/layer`.
pub fn place(m: Detached, dir: &Path) -> Result<(), DiskError> {
    use rustix::mount::{move_mount, MoveMountFlags};
    let mp = mount_point(dir);
    fs::create_dir_all(&mp).map_err(DiskError::io("cannot make", &mp))?;
    let flags = MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH;
    move_mount(&m.0, "", rustix::fs::CWD, &mp, flags)
        .map_err(|e| DiskError::io("cannot move a layer mounted ahead to", &mp)(e.into()))
}

/// An exclusive OFD lock on the image: it lives as long as the open file,
/// which the loop device holds while attached.
fn lock(f: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed flock is valid; every field is set below or means 0.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    // SAFETY: F_OFD_SETLK reads the flock struct, which outlives the call.
    match unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &fl) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Takes the headroom back (after a start; on a full layer it gets what is left).
pub fn reserve_headroom(dir: &Path) {
    let p = mount_point(dir).join(HEADROOM_FILE);
    if let Ok(f) = File::create(&p) {
        // SAFETY: fallocate on an owned, open fd.
        let _ =
            unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&f), 0, 0, HEADROOM as i64) };
    }
}

pub fn unmount(dir: &Path) {
    let mp = mount_point(dir);
    if is_mounted(dir) {
        if let Err(e) = nix::mount::umount2(&mp, nix::mount::MntFlags::MNT_DETACH) {
            tracing::error!(path = %mp.display(), error = %e, "cannot unmount a writable layer");
        }
    }
}

/// What the layer holds (the headroom not counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Bytes the headroom file holds now.
pub fn headroom_held(dir: &Path) -> u64 {
    fs::metadata(mount_point(dir).join(HEADROOM_FILE)).map_or(0, |m| m.blocks() * 512)
}

pub fn usage(dir: &Path) -> Option<Usage> {
    if !is_mounted(dir) {
        return None;
    }
    let mp = mount_point(dir);
    let s = nix::sys::statvfs::statvfs(&mp).ok()?;
    let head = headroom_held(dir);
    let used = (s.blocks() - s.blocks_free()) * s.fragment_size();
    // the root dir, lost+found, upper and work are the filesystem's own
    Some(Usage {
        bytes: used.saturating_sub(head),
        inodes: (s.files() - s.files_free()).saturating_sub(head.min(1)),
    })
}

/// After a reboot: drops an image that was not cleanly unmounted.
pub fn reset_if_unclean(dir: &Path) -> io::Result<bool> {
    let img = image_path(dir);
    if !img.exists() || is_mounted(dir) {
        return Ok(false);
    }
    let (_, state, magic) = superblock(&img)?;
    if magic == 0xEF53 && state & 1 == 1 {
        return Ok(false);
    }
    fs::remove_file(&img)?;
    Ok(true)
}
