//! Thin wrappers over system calls that nix does not cover safely: the
//! crate's `unsafe` lives here (and at the few call sites of the `unsafe fn`s
//! below, whose promises only their single-threaded callers can keep). Each
//! block says why it holds. It imports nothing of the crate. The eBPF device
//! filter's calls are in `bpf`, user namespaces and idmapped mounts in
//! `mount`; everything is re-exported here.

use nix::sched::CloneFlags;
use nix::unistd::Pid;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

mod bpf;
pub mod heap;
pub mod loopdev;
mod mount;
pub mod quota;

pub use bpf::{bpf_attach_device_filter, bpf_load_device_filter, BpfInsn};
pub use mount::{idmapped_bind_over, new_userns};

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

/// SIGPIPE back to its default action (the process ends quietly when its
/// reader goes, as a shell tool does: `hydractl logs -f | head`).
pub fn default_sigpipe() {
    // SAFETY: SIG_DFL installs no handler code, so nothing can run in signal context.
    let _ = unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
    };
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
pub fn openat2(dir: BorrowedFd<'_>, path: &str, how: nix::fcntl::OpenHow) -> nix::Result<OwnedFd> {
    let fd = nix::fcntl::openat2(dir.as_raw_fd(), path, how)?;
    // SAFETY: the kernel has just returned this fd and nothing else refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
