//! The container's filesystems, set up by its init in its new mount
//! namespace: idmapped layers, the overlay root, /proc, /sys, /dev, masked
//! and read-only paths, the pivot into the root, and writes through the
//! procfs we mounted ourselves.

use super::init::{fail, sys, InitError};
use super::{security, Launch};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chdir, pivot_root, Gid, Uid};
use std::fs;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The shared layers stay owned by 0 on disk and show as owned by container
/// root: each is bound over itself, idmapped, in this mount namespace only;
/// what the container writes lands in its upper dir under its own host ids
/// (`base`: host id of container root).
pub(super) fn idmap_layers(l: &Launch, ns: BorrowedFd, base: u32) -> Result<(), InitError> {
    for layer in &l.lower {
        crate::sys::idmapped_bind_over(layer, ns)
            .map_err(|e| fail("userns", format!("idmapped layer: {e}")))?;
    }
    let id = Some(base);
    nix::unistd::chown(&l.upper, id.map(Uid::from_raw), id.map(Gid::from_raw))
        .map_err(sys("chown the upper dir"))?;
    Ok(())
}

pub(super) fn mount_rootfs(l: &Launch) -> Result<(), InitError> {
    let lower = l
        .lower
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let opts = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        l.upper.display(),
        l.work.display()
    );
    // volatile: no syncfs of the state filesystem at every exit (see
    // runtime::layer); the marker of the previous run in this boot goes
    // first, or overlayfs refuses the dirs
    super::layer::clear_marker(&l.work).map_err(|e| {
        fail(
            "image",
            format!(
                "cannot clear {}: {e}",
                super::layer::volatile_marker(&l.work).display()
            ),
        )
    })?;
    // nodev: a device node in the image opens nothing (the container's /dev
    // is a tmpfs of ours); nosuid: setuid files elevate nothing (no_new_privs
    // says so too)
    let flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    let m = |o: &str| mount(Some("overlay"), &l.rootfs, Some("overlay"), flags, Some(o));
    let r = match m(&format!("{opts},volatile")) {
        // a kernel before 5.10 knows no volatile
        Err(nix::errno::Errno::EINVAL) => m(&opts),
        r => r,
    };
    r.map_err(|e| {
        fail(
            "image",
            format!("cannot mount the image's layers (overlay {opts}): {e}"),
        )
    })
}

/// A directory of the container root (created if missing), as an O_PATH
/// handle the kernel resolved inside the root without following any symlink
/// (openat2 RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS): whatever the image holds,
/// what we mount on or write into is inside it. Used through
/// [`fd_path`], so nothing is looked up by name a second time.
pub(super) fn ensure_dir(root: &Path, rel: &str) -> Result<OwnedFd, InitError> {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
    let rootfd = fs::File::open(root).map_err(|e| fail("runtime", format!("open root: {e}")))?;
    let how = || {
        OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(
                ResolveFlag::RESOLVE_IN_ROOT
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            )
    };
    let open = || crate::sys::openat2(rootfd.as_fd(), rel, how());
    let fd = match open() {
        Err(nix::errno::Errno::ENOENT) => {
            // only the last component may be missing; its parent is resolved
            // the same way
            let (parent, name) = match rel.rsplit_once('/') {
                Some((p, n)) => (Some(ensure_dir(root, p)?), n),
                None => (None, rel),
            };
            let dirfd = parent
                .as_ref()
                .map_or(rootfd.as_raw_fd(), |p| p.as_raw_fd());
            match nix::sys::stat::mkdirat(Some(dirfd), name, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(fail("image", format!("cannot create /{rel}: {e}"))),
            }
            open()
        }
        r => r,
    };
    match fd {
        Ok(fd) => Ok(fd),
        Err(nix::errno::Errno::ELOOP | nix::errno::Errno::ENOTDIR | nix::errno::Errno::EXDEV) => {
            Err(fail(
                "image",
                format!("/{rel} in the image is not a directory (a symlink or a file)"),
            ))
        }
        Err(e) => Err(fail("image", format!("cannot open /{rel}: {e}"))),
    }
}

/// `/proc/self/fd/N`: the path that names exactly what an fd holds.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// /proc, /sys (and /sys/fs/cgroup), then /dev.
/// `owner`: host id of container root (user namespace), owner of /dev.
pub(super) fn mount_proc_sys_dev(
    root: &Path,
    l: &Launch,
    owner: Option<u32>,
) -> Result<(), InitError> {
    mount_proc_sys(root, l.cgroup_v2)?;
    if !l.cgroup_v2 && !l.cgroup_v1.is_empty() {
        mount_cgroup_v1(&root.join("sys/fs/cgroup"), &l.cgroup_v1)?;
    }
    mount_dev(root, owner)
}

/// v1: a tmpfs at /sys/fs/cgroup with each hierarchy the container is
/// limited by mounted read-only in it (in the container's cgroup namespace,
/// so rooted at its own cgroup), and links for combined ones (`cpu` and
/// `cpuacct` to `cpu,cpuacct`), as runc and systemd lay them out; then
/// the tmpfs read-only. Runtimes find their limits there.
fn mount_cgroup_v1(dir: &Path, hierarchies: &[crate::cgroup::V1Mount]) -> Result<(), InitError> {
    if !dir.is_dir() {
        return Ok(());
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        flags,
        Some("mode=755,size=64k"),
    )
    .map_err(sys("mount a tmpfs at /sys/fs/cgroup"))?;
    for h in hierarchies {
        let at = dir.join(&h.name);
        fs::create_dir(&at).map_err(|e| fail("runtime", format!("mkdir {}: {e}", at.display())))?;
        mount(
            Some("cgroup"),
            &at,
            Some("cgroup"),
            flags | MsFlags::MS_RDONLY,
            Some(h.options.as_str()),
        )
        .map_err(|e| {
            fail(
                "runtime",
                format!("mount the cgroup hierarchy {}: {e}", h.options),
            )
        })?;
        for part in h.name.split(',').filter(|p| *p != h.name) {
            let _ = symlink(&h.name, dir.join(part));
        }
    }
    mount(
        None::<&str>,
        dir,
        None::<&str>,
        flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        Some("mode=755,size=64k"),
    )
    .map_err(sys("remount /sys/fs/cgroup read-only"))
}

fn mount_proc_sys(root: &Path, cgroup_v2: bool) -> Result<(), InitError> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc = ensure_dir(root, "proc")?;
    mount(
        Some("proc"),
        &fd_path(&proc),
        Some("proc"),
        nosuid,
        None::<&str>,
    )
    .map_err(sys("mount /proc"))?;
    let sys_fd = ensure_dir(root, "sys")?;
    mount(
        Some("sysfs"),
        &fd_path(&sys_fd),
        Some("sysfs"),
        nosuid | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(sys("mount /sys"))?;
    // from here on only in filesystems we just mounted ourselves
    let sys_dir = root.join("sys");
    if cgroup_v2 {
        let cg = sys_dir.join("fs/cgroup");
        if cg.is_dir() {
            mount(
                Some("cgroup2"),
                &cg,
                Some("cgroup2"),
                nosuid | MsFlags::MS_RDONLY,
                None::<&str>,
            )
            .map_err(sys("mount /sys/fs/cgroup"))?;
        }
    }
    Ok(())
}

/// A tmpfs of ours at /dev with the usual nodes, /dev/pts, /dev/shm and links.
fn mount_dev(root: &Path, owner: Option<u32>) -> Result<(), InitError> {
    let dev_fd = ensure_dir(root, "dev")?;
    let dev_opts = match owner {
        Some(id) => format!("mode=755,size=65536k,uid={id},gid={id}"),
        None => "mode=755,size=65536k".to_string(),
    };
    mount(
        Some("tmpfs"),
        &fd_path(&dev_fd),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some(dev_opts.as_str()),
    )
    .map_err(sys("mount /dev"))?;
    // from here on only in the tmpfs we just mounted ourselves
    let dev = root.join("dev");
    make_dev_nodes(&dev)?;
    mount_pts_shm(&dev)?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link))
            .map_err(|e| fail("runtime", format!("symlink /dev/{link}: {e}")))?;
    }
    Ok(())
}

fn make_dev_nodes(dev: &Path) -> Result<(), InitError> {
    for (name, major, minor) in [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ] {
        let p = dev.join(name);
        mknod(
            &p,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(sys("mknod in /dev"))?;
        // mknod honours the umask; the devices must be usable by any uid.
        let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o666));
    }
    Ok(())
}

fn mount_pts_shm(dev: &Path) -> Result<(), InitError> {
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let pts = dev.join("pts");
    fs::create_dir(&pts).map_err(|e| fail("runtime", format!("mkdir /dev/pts: {e}")))?;
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(sys("mount /dev/pts"))?;
    let shm = dev.join("shm");
    fs::create_dir(&shm).map_err(|e| fail("runtime", format!("mkdir /dev/shm: {e}")))?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        nosuid,
        Some("mode=1777,size=65536k"),
    )
    .map_err(sys("mount /dev/shm"))?;
    Ok(())
}

/// Masks (containerd's list) and read-only paths, on the /proc and /sys we
/// just mounted. Fails closed: a path that exists but cannot be masked stops
/// the start. Files are masked with our own /dev/null (a char device 1:3 in
/// the tmpfs we made, never the image's: CVE-2025-31133).
pub(super) fn mask_paths(root: &Path) -> Result<(), InitError> {
    use std::os::unix::fs::FileTypeExt;
    let null = root.join("dev/null");
    match fs::symlink_metadata(&null) {
        Ok(m) if m.file_type().is_char_device() && m.rdev() == makedev(1, 3) => {}
        _ => return Err(fail("runtime", "/dev/null is not the null device")),
    }
    // one empty read-only tmpfs, bound onto every masked directory after the
    // first (a bind is cheaper than a new superblock per directory)
    let mut empty_dir: Option<PathBuf> = None;
    for rel in security::MASKED {
        let p = root.join(rel);
        let Ok(m) = fs::symlink_metadata(&p) else {
            continue; // not on this kernel
        };
        let res = match (m.is_dir(), &empty_dir) {
            (true, None) => {
                let r = mount(
                    Some("tmpfs"),
                    &p,
                    Some("tmpfs"),
                    READ_ONLY_FLAGS,
                    Some("size=0,mode=0555"),
                );
                empty_dir = Some(p.clone());
                r
            }
            (true, Some(first)) => mount(
                Some(first),
                &p,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
            (false, _) => mount(
                Some(&null),
                &p,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
        };
        res.map_err(|e| fail("runtime", format!("mask /{rel}: {e}")))?;
    }
    read_only_paths(root)
}

const READ_ONLY_FLAGS: MsFlags = MsFlags::MS_RDONLY
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Binds each of [`security::READ_ONLY`] over itself, then remounts it read-only.
fn read_only_paths(root: &Path) -> Result<(), InitError> {
    for rel in security::READ_ONLY {
        let p = root.join(rel);
        if fs::symlink_metadata(&p).is_err() {
            continue;
        }
        mount(
            Some(&p),
            &p,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .and_then(|()| {
            mount(
                None::<&str>,
                &p,
                None::<&str>,
                READ_ONLY_FLAGS | MsFlags::MS_BIND | MsFlags::MS_REMOUNT,
                None::<&str>,
            )
        })
        .map_err(|e| fail("runtime", format!("read-only /{rel}: {e}")))?;
    }
    Ok(())
}

/// Makes `root` the process's root (pivot_root) and detaches the old one.
pub(super) fn pivot_into(root: &Path) -> Result<(), InitError> {
    chdir(root).map_err(sys("chdir to rootfs"))?;
    pivot_root(".", ".").map_err(sys("pivot_root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach the old root"))?;
    chdir("/").map_err(sys("chdir /"))?;
    Ok(())
}

/// Writes /proc/self/<file> through the procfs mounted at /proc.
pub(super) fn write_own_proc(file: &str, value: &str) -> Result<(), InitError> {
    write_proc_at(Path::new("/proc"), &format!("self/{file}"), value)
}

/// Writes `<proc>/<rel>` after checking that `proc` is a procfs (the one we
/// mounted, never one the image could fake: CVE-2019-16884).
pub(super) fn write_proc_at(proc: &Path, rel: &str, value: &str) -> Result<(), InitError> {
    let st = nix::sys::statfs::statfs(proc).map_err(sys("statfs /proc"))?;
    if st.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(fail("runtime", "/proc is not procfs"));
    }
    let mut f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(proc.join(rel))
        .map_err(|e| fail("runtime", format!("open /proc/{rel}: {e}")))?;
    std::io::Write::write_all(&mut f, value.as_bytes())
        .map_err(|e| fail("runtime", format!("write /proc/{rel}: {e}")))
}
