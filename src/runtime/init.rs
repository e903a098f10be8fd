//! The container's side, run in the cloned child inside its new namespaces:
//! root filesystem, /proc, /dev, /sys, hostname, loopback, user, exec.

use super::container_net;
use super::{mounts, security, Launch};
use crate::network::netlink::Netlink;
use nix::mount::{mount, MsFlags};
use nix::unistd::{chdir, execve, setgid, setgroups, sethostname, setuid, Gid, Uid};
use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub use super::container_net::setup_network;

/// Why the container could not start; `field` names the spec field at fault.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct InitError {
    pub field: String,
    pub message: String,
}

pub(super) fn fail(field: &str, message: impl Into<String>) -> InitError {
    InitError {
        field: field.into(),
        message: message.into(),
    }
}

pub(super) fn sys(what: &str) -> impl FnOnce(nix::Error) -> InitError + '_ {
    move |e| fail("runtime", format!("{what}: {e}"))
}

/// The host side of the network: a netlink socket and the netns fd, both of
/// the host's network namespace, opened before the clone.
pub type HostNet<'a> = (&'a mut Netlink, BorrowedFd<'a>);

/// Sets up the container and execs its process; returns only on failure.
/// `userns`: the container's user namespace (made and mapped by the shim),
/// entered last, after everything that needs the host's privileges.
pub fn run(
    l: &Launch,
    host: Option<HostNet>,
    fail_fd: BorrowedFd,
    userns: Option<BorrowedFd>,
    pooled_peer: Option<&str>,
) -> InitError {
    match setup_and_exec(l, host, fail_fd, userns, pooled_peer) {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

fn setup_and_exec(
    l: &Launch,
    host: Option<HostNet>,
    fail_fd: BorrowedFd,
    userns: Option<BorrowedFd>,
    pooled_peer: Option<&str>,
) -> Result<std::convert::Infallible, InitError> {
    // host id of container root, when in a user namespace
    let owner = userns.and(l.userns);
    #[cfg(debug_assertions)]
    stall_if_asked(l);
    build_root(l, userns, owner)?;
    sethostname(&l.hostname).map_err(sys("sethostname"))?;
    crate::sys::loopback_up().map_err(|e| fail("runtime", format!("loopback up: {e}")))?;
    let net = l.net.as_ref().zip(host);
    container_net::write_etc(&l.rootfs, net.as_ref().map(|(n, _)| *n), &l.hostname, owner)?;
    if let Some((n, (host_nl, host_ns))) = net {
        setup_network(n, host_nl, host_ns, pooled_peer)
            .map_err(|e| fail("network", format!("container network: {e}")))?;
    }

    mounts::pivot_into(&l.rootfs)?;

    let h = &l.hardening;
    // Through the /proc we mounted ourselves (checked to be procfs), never
    // one the image could fake (CVE-2019-16884). Lowering the inherited -999
    // needs no privilege; it is done while we still have them anyway.
    mounts::write_own_proc("oom_score_adj", &h.oom_score_adj.to_string())?;
    security::set_nofile(h.nofile).map_err(|e| fail("runtime", e.to_string()))?;
    close_inherited_fds(fail_fd, userns)?;
    exec_process(l, userns)
}

/// Fault injection for the start-deadline test; debug builds only.
#[cfg(debug_assertions)]
fn stall_if_asked(l: &Launch) {
    if let Some(s) = l
        .process
        .env
        .iter()
        .find_map(|e| e.strip_prefix("HYDRA_FAULT_STALL_INIT_S="))
    {
        std::thread::sleep(std::time::Duration::from_secs(s.parse().unwrap_or(0)));
    }
}

/// Everything of the container's filesystem before the pivot, in this mount
/// namespace only: a cgroup namespace, `/` private, idmapped layers (user
/// namespace), the overlay root, /proc, /sys, /dev, masked paths.
/// `owner`: host id of container root, when in a user namespace.
fn build_root(l: &Launch, userns: Option<BorrowedFd>, owner: Option<u32>) -> Result<(), InitError> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(sys("unshare cgroup namespace"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("make / private"))?;
    if let (Some(ns), Some(base)) = (userns, owner) {
        mounts::idmap_layers(l, ns, base)?;
    }
    // overlayfs writes the upper layer with its mounter's credentials: a
    // mounter with CAP_SYS_RESOURCE would let every write past the layer's
    // project quota (and ext4's reserved blocks)
    let res = caps::Capability::CAP_SYS_RESOURCE;
    let had = caps::has_cap(None, caps::CapSet::Effective, res).unwrap_or(false);
    if had {
        caps::drop(None, caps::CapSet::Effective, res)
            .map_err(|e| fail("runtime", format!("drop CAP_SYS_RESOURCE: {e}")))?;
    }
    let mounted = mounts::mount_rootfs(l);
    if had {
        caps::raise(None, caps::CapSet::Effective, res)
            .map_err(|e| fail("runtime", format!("raise CAP_SYS_RESOURCE: {e}")))?;
    }
    mounted?;
    let root = &l.rootfs;
    mounts::mount_proc_sys_dev(root, l, owner)?;
    if owner.is_some() && l.hardening.caps.iter().any(|c| c == "CAP_NET_BIND_SERVICE") {
        // container root has no capability over the host-owned network
        // namespace, so ports below 1024 are opened to every uid in it, as
        // Docker does for all its containers
        mounts::write_proc_at(
            &root.join("proc"),
            "sys/net/ipv4/ip_unprivileged_port_start",
            "0",
        )?;
    }
    let proc = root.join("proc");
    if l.net.is_some() && proc.join("sys/net/ipv6/conf/default").is_dir() {
        // no IPv6 for the container's interfaces (its eth0 is made later,
        // from these defaults), as Docker does without IPv6 configured:
        // the firewall's promises are made for IPv4 (lo keeps ::1)
        mounts::write_proc_at(&proc, "sys/net/ipv6/conf/default/disable_ipv6", "1")?;
    }
    mounts::mask_paths(root)
}

/// Only 0-2 and the failure pipe (and the user namespace, entered later)
/// stay open from here (CVE-2024-21626: no fd of the host can be reached
/// through /proc/self/fd, e.g. as workdir).
fn close_inherited_fds(fail_fd: BorrowedFd, userns: Option<BorrowedFd>) -> Result<(), InitError> {
    let keep: Vec<RawFd> = std::iter::once(fail_fd.as_raw_fd())
        .chain(userns.map(|n| n.as_raw_fd()))
        .collect();
    // SAFETY: this is the container's init, a single-threaded clone of the
    // shim about to execve; nothing it holds besides `keep` and 0-2 is
    // used again (on failure it only writes to `fail_fd` and exits).
    unsafe { crate::sys::close_fds_except_checked(&keep) }
        .map_err(|e| fail("runtime", format!("close inherited fds: {e}")))
}

/// In the pivoted root: resolves the program and the user, enters the user
/// namespace, becomes the user with its capabilities, enters the workdir,
/// resets signals, locks down (no_new_privs, seccomp) and execs.
fn exec_process(
    l: &Launch,
    userns: Option<BorrowedFd>,
) -> Result<std::convert::Infallible, InitError> {
    let h = &l.hardening;
    let p = &l.process;
    let env: Vec<CString> = p.env.iter().map(|e| cstr(e)).collect::<Result<_, _>>()?;
    let path_var = p
        .env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let prog = resolve(&p.argv[0], path_var)?;
    let (uid, gid) = super::user::resolve_user(p.user.as_deref())?;
    if let Some(ns) = userns {
        enter_userns(ns)?;
    }
    let cwd = Path::new(&p.cwd);
    if !cwd.exists() {
        fs::create_dir_all(cwd)
            .map_err(|e| fail("workdir", format!("cannot create {}: {e}", p.cwd)))?;
        let _ = nix::unistd::chown(cwd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    }
    security::limit_bounding(h).map_err(|e| fail("capabilities", e.to_string()))?;
    setgroups(&[Gid::from_raw(gid)]).map_err(sys("setgroups"))?;
    setgid(Gid::from_raw(gid)).map_err(sys("setgid"))?;
    setuid(Uid::from_raw(uid)).map_err(sys("setuid"))?;
    security::set_process_caps(h, uid).map_err(|e| fail("capabilities", e.to_string()))?;
    enter_workdir(cwd, &p.cwd)?;
    let argv: Vec<CString> = p.argv.iter().map(|a| cstr(a)).collect::<Result<_, _>>()?;
    let prog_c = cstr(&prog.to_string_lossy())?;
    crate::sys::reset_signals().map_err(sys("reset signal dispositions"))?;
    security::no_new_privs().map_err(|e| fail("runtime", e.to_string()))?;
    security::apply_seccomp().map_err(|e| fail("runtime", e.to_string()))?;
    let err = execve(&prog_c, &argv, &env).unwrap_err();
    Err(fail(
        "command",
        format!("cannot execute {:?}: {err}", p.argv[0]),
    ))
}

/// From here ids are the namespace's: become its root (the host id the shim
/// mapped to 0) with every capability in it and none on the host.
fn enter_userns(ns: BorrowedFd) -> Result<(), InitError> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWUSER)
        .map_err(sys("enter the user namespace"))?;
    // this process's copy; the shim closes its own
    let _ = nix::unistd::close(ns.as_raw_fd());
    setgroups(&[]).map_err(sys("setgroups in the user namespace"))?;
    setgid(Gid::from_raw(0)).map_err(sys("setgid 0 in the user namespace"))?;
    setuid(Uid::from_raw(0)).map_err(sys("setuid 0 in the user namespace"))?;
    Ok(())
}

/// Enters `cwd` (the spec's `workdir`), which must be inside the root
/// (getcwd says "(unreachable)" or fails for anything outside it).
fn enter_workdir(cwd: &Path, workdir: &str) -> Result<(), InitError> {
    chdir(cwd).map_err(|e| fail("workdir", format!("cannot enter {workdir}: {e}")))?;
    match nix::unistd::getcwd() {
        Ok(d) if d.is_absolute() => Ok(()),
        _ => Err(fail(
            "workdir",
            format!("{workdir} is outside the container"),
        )),
    }
}

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn cstr(s: &str) -> Result<CString, InitError> {
    CString::new(s).map_err(|_| fail("command", format!("{s:?} contains NUL")))
}

/// Finds `prog` on `path` inside the (already pivoted) root.
fn resolve(prog: &str, path: &str) -> Result<PathBuf, InitError> {
    let is_exec = |p: &Path| {
        fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        return if is_exec(&p) {
            Ok(p)
        } else {
            Err(fail(
                "command",
                format!("{prog:?} does not exist in the image or is not executable"),
            ))
        };
    }
    path.split(':')
        .map(|d| Path::new(d).join(prog))
        .find(|p| is_exec(p))
        .ok_or_else(|| {
            fail(
                "command",
                format!("{prog:?} was not found in the image's PATH ({path})"),
            )
        })
}
