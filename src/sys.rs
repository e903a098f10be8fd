//! Thin wrappers over system calls that nix does not cover safely: the
//! crate's `unsafe` lives here (and at the few call sites of the `unsafe fn`s
//! below, whose promises only their single-threaded callers can keep). Each
//! block says why it holds. It imports nothing of the crate.

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Forks.
///
/// # Safety
/// The calling process must be single-threaded (the launcher, a shim): the
/// child gets a copy of the memory in which another thread may have held a
/// lock (of the allocator, of stdio) forever.
pub unsafe fn fork_single_threaded() -> nix::Result<nix::unistd::ForkResult> {
    // SAFETY: the caller promises a single-threaded process (see above).
    unsafe { nix::unistd::fork() }
}

/// Clones a child into new namespaces; it runs `f` and exits with its result.
///
/// # Safety
/// As [`fork_single_threaded`]: the caller must be single-threaded, since the
/// child gets a copy of its memory (no CLONE_VM) and runs `f` in it.
pub unsafe fn clone_into_namespaces(
    flags: CloneFlags,
    f: &mut dyn FnMut() -> isize,
) -> nix::Result<Pid> {
    let mut stack = vec![0u8; 1 << 20];
    // SAFETY: the caller is single-threaded, so the child, which gets a copy
    // of the address space (no CLONE_VM), sees consistent memory; the stack
    // outlives the call because the child has its own copy of it.
    unsafe { nix::sched::clone(Box::new(f), &mut stack, flags, Some(libc::SIGCHLD)) }
}

/// `pidfd_open(2)`: a handle on a process that does not go stale on pid reuse.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `pidfd_send_signal(2)`.
pub fn pidfd_send_signal(fd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: valid pidfd, null siginfo (allowed), flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the loopback interface up in the current network namespace.
pub fn loopback_up() -> io::Result<()> {
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name[0] = b'l' as libc::c_char;
    req.ifr_name[1] = b'o' as libc::c_char;
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own, sized as the kernel expects.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled ifru_flags for SIOCGIFFLAGS; union access of a c_short.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above, SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Leaves the process with only fds 0-2 open, plus `keep`; every other is closed.
///
/// # Safety
/// No object still in use may own one of the fds closed (an `OwnedFd`, a
/// `File`, a runtime's epoll fd): the caller is a freshly forked,
/// single-threaded helper that drops nothing it did not open after this.
pub unsafe fn close_fds_except(keep: &[RawFd]) {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            let _ = nix::unistd::close(fd);
        }
    }
}

/// Like [`close_fds_except`], but fails if /proc/self/fd cannot be read, and
/// checks afterwards that nothing else is open.
///
/// # Safety
/// As [`close_fds_except`].
pub unsafe fn close_fds_except_checked(keep: &[RawFd]) -> std::io::Result<()> {
    let list = || -> std::io::Result<Vec<RawFd>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir("/proc/self/fd")? {
            if let Some(fd) = e?.file_name().to_str().and_then(|n| n.parse().ok()) {
                v.push(fd);
            }
        }
        Ok(v)
    };
    for fd in list()? {
        if fd > 2 && !keep.contains(&fd) {
            let _ = nix::unistd::close(fd);
        }
    }
    // the listing's own directory fd shows up in the second listing; it is
    // closed by then, so a still-open one is what matters
    let left: Vec<RawFd> = list()?
        .into_iter()
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .filter(|fd| nix::fcntl::fcntl(*fd, nix::fcntl::FcntlArg::F_GETFD).is_ok())
        .collect();
    if !left.is_empty() {
        return Err(std::io::Error::other(format!("fds still open: {left:?}")));
    }
    Ok(())
}

/// Ignores `sigs` (SIG_IGN).
pub fn ignore_signals(sigs: &[nix::sys::signal::Signal]) {
    for s in sigs {
        // SAFETY: SIG_IGN installs no handler code, so nothing can run in signal context.
        let _ = unsafe { nix::sys::signal::signal(*s, nix::sys::signal::SigHandler::SigIgn) };
    }
}

/// Every signal back to its default action and none blocked: what the agent,
/// launcher and shim ignore (SIGPIPE, SIGHUP, ...) must not reach the
/// container's process, since ignored dispositions survive execve.
pub fn reset_signals() -> nix::Result<()> {
    use nix::sys::signal::{SigSet, SigmaskHow};
    /// The kernel's struct sigaction on x86_64 and aarch64 (handler, flags,
    /// restorer, mask; both define SA_RESTORER). libc's wrapper refuses
    /// glibc's reserved 32 and 33, which a parent may well have set to ignore.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: 0, // SIG_DFL
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..=64i64 {
        if sig == i64::from(libc::SIGKILL) || sig == i64::from(libc::SIGSTOP) {
            continue;
        }
        // SAFETY: `dfl` is a valid kernel sigaction read during the call; no
        // old action is requested; SIG_DFL installs no handler code.
        let r = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        };
        if r != 0 {
            return Err(nix::errno::Errno::last());
        }
    }
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
}

/// Registers a pidfd with tokio so its exit can be awaited (readable on exit).
pub fn async_pidfd(fd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the fd stays open and is not
    // reused while it is registered; it is deregistered before being closed.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// Sets the process name shown by ps (comm, at most 15 bytes).
pub fn set_process_name(name: &str) {
    if let Ok(c) = std::ffi::CString::new(name) {
        let _ = nix::sys::prctl::set_name(&c);
    }
}

/// `struct clone_args` of clone3(2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Like [`clone_into_namespaces`], but the child starts life inside the
/// cgroup v2 directory `cgroup` (clone3 with CLONE_INTO_CGROUP): no
/// migration afterwards, so no wait on the cgroup threadgroup lock.
///
/// # Safety
/// As [`fork_single_threaded`]: the caller must be single-threaded.
pub unsafe fn clone3_into_cgroup(
    flags: CloneFlags,
    cgroup: BorrowedFd<'_>,
    f: &mut dyn FnMut() -> isize,
) -> nix::Result<Pid> {
    let args = CloneArgs {
        flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: args is a valid clone_args of the size passed; without CLONE_VM
    // the child gets a copy of the (single-threaded) caller's memory and
    // continues here like after fork(2).
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(nix::Error::last());
    }
    if r == 0 {
        let code = f();
        // SAFETY: leaving the child at once, as clone(2)'s wrapper does after its callback.
        unsafe { libc::_exit(code as i32) }
    }
    Ok(Pid::from_raw(r as i32))
}

#[repr(C)]
#[derive(Default)]
struct BpfProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    // the kernel requires the rest of the union it knows to be zero
    _rest: [u64; 12],
}

#[repr(C)]
#[derive(Default)]
struct BpfProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _rest: [u32; 11],
}

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_ATTACH: i64 = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// One eBPF instruction, as the kernel lays it out.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C)]
pub struct BpfInsn {
    pub code: u8,
    /// dst register in the low nibble, src in the high one
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

/// Loads a CGROUP_DEVICE program; the verifier's words on refusal.
pub fn bpf_load_device_filter(prog: &[BpfInsn]) -> std::io::Result<OwnedFd> {
    let license = b"GPL\0";
    let mut log = vec![0u8; 64 * 1024];
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"hydra_devcg");
    let attr = BpfProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    // SAFETY: `attr` points at `prog`, `license` and `log`, all alive and
    // sized as declared for the duration of the call; the kernel writes only
    // into `log` (at most log_size bytes). A returned fd is new and ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const BpfProgLoadAttr,
            std::mem::size_of::<BpfProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let words = String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)])
            .trim()
            .to_string();
        return Err(std::io::Error::new(
            err.kind(),
            format!("load the device filter: {err} {words}"),
        ));
    }
    // SAFETY: a new fd returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Attaches a loaded device filter to the cgroup directory open as `cgroup`.
pub fn bpf_attach_device_filter(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> io::Result<()> {
    let attr = BpfProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..Default::default()
    };
    // SAFETY: `attr` is a plain struct read by the kernel during the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const BpfProgAttachAttr,
            std::mem::size_of::<BpfProgAttachAttr>(),
        )
    };
    if r < 0 {
        let err = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            err.kind(),
            format!("attach the device filter: {err}"),
        ));
    }
    Ok(())
}

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

/// `openat(2)` (nix 0.29 hands out raw fds): the new fd, owned.
pub fn openat(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: nix::fcntl::OFlag,
    mode: nix::sys::stat::Mode,
) -> nix::Result<OwnedFd> {
    let fd = nix::fcntl::openat(Some(dir.as_raw_fd()), path, flags, mode)?;
    // SAFETY: the kernel has just returned this fd and nothing else refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(2)` (nix 0.29 hands out raw fds): the new fd, owned.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &str,
    how: nix::fcntl::OpenHow,
) -> nix::Result<OwnedFd> {
    let fd = nix::fcntl::openat2(dir.as_raw_fd(), path, how)?;
    // SAFETY: the kernel has just returned this fd and nothing else refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
