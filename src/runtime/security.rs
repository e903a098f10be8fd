//! What a container's init does to itself before `execve`, beyond namespaces
//! and cgroups: capabilities (caps crate), no_new_privs, the seccomp filter
//! (seccompiler, compiled once per launcher), masked and read-only paths,
//! rlimits and the OOM score. The order lives in `init`; the pieces here.

use crate::model::caps::cap_set;
use caps::{CapSet, CapsHashSet};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// containerd's masked paths: files get /dev/null, directories an empty
/// read-only tmpfs. Relative to the container root.
pub const MASKED: [&str; 11] = [
    "proc/acpi",
    "proc/asound",
    "proc/kcore",
    "proc/keys",
    "proc/latency_stats",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/sched_debug",
    "proc/scsi",
    "sys/firmware",
    "sys/devices/virtual/powercap",
];

/// containerd's read-only paths.
pub const READ_ONLY: [&str; 5] = [
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// A step of the hardening that failed (the launcher compiles the seccomp
/// filter once and hands the same error to every start, so it is `Clone`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{step}: {detail}")]
pub struct HardeningError {
    pub step: String,
    pub detail: String,
}

fn he(step: impl Into<String>, e: impl std::fmt::Display) -> HardeningError {
    HardeningError {
        step: step.into(),
        detail: e.to_string(),
    }
}

/// The hardening of one container, decided by the agent (spec + config).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hardening {
    /// Canonical names (`CAP_...`): the bounding set, and the effective and
    /// permitted sets of a root process (a non-root one gets none).
    pub caps: Vec<String>,
    /// RLIMIT_NOFILE, soft and hard.
    pub nofile: u64,
    /// The container's oom_score_adj (the agent and its helpers are at -999).
    pub oom_score_adj: i32,
}

/// A container's hardening from its spec and the agent's `[security]`.
pub fn hardening(
    spec: &crate::model::CapabilitiesSpec,
    cfg: &crate::config::SecurityConfig,
) -> Hardening {
    Hardening {
        caps: cap_set(&spec.add, &spec.drop),
        nofile: cfg.nofile,
        oom_score_adj: cfg.oom_score_adj,
    }
}

fn hash_set(names: &[String]) -> CapsHashSet {
    names.iter().filter_map(|n| n.parse().ok()).collect()
}

/// While still root with every capability: limit the bounding set, empty the
/// inheritable and ambient sets (CVE-2022-29162).
pub fn limit_bounding(h: &Hardening) -> Result<(), HardeningError> {
    let keep = hash_set(&h.caps);
    for c in caps::all() {
        if !keep.contains(&c) && caps::has_cap(None, CapSet::Bounding, c).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, c)
                .map_err(|e| he(format!("drop {c} from bounding"), e))?;
        }
    }
    caps::clear(None, CapSet::Inheritable).map_err(|e| he("clear inheritable", e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| he("clear ambient", e))?;
    Ok(())
}

/// After setuid: a root process keeps exactly the set; another keeps none
/// (the kernel already cleared them at setuid; made sure here).
pub fn set_process_caps(h: &Hardening, uid: u32) -> Result<(), HardeningError> {
    let keep = if uid == 0 {
        hash_set(&h.caps)
    } else {
        CapsHashSet::new()
    };
    caps::set(None, CapSet::Effective, &keep).map_err(|e| he("effective", e))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| he("permitted", e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| he("inheritable", e))?;
    Ok(())
}

/// Syscalls Docker's default profile denies (it allow-lists; this denies
/// what it leaves out that a kernel of ours has), answered with EPERM.
const DENIED: &[i64] = &[
    libc::SYS_add_key,
    libc::SYS_keyctl,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_settimeofday,
    libc::SYS_adjtimex,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_userfaultfd,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_lookup_dcookie,
    libc::SYS_nfsservctl,
    libc::SYS_sysfs,
    libc::SYS__sysctl,
    libc::SYS_uselib,
    libc::SYS_ustat,
    libc::SYS_vhangup,
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_syslog,
    libc::SYS_fanotify_init,
    libc::SYS_pidfd_getfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_set_mempolicy,
    libc::SYS_mbind,
    libc::SYS_migrate_pages,
    libc::SYS_move_pages,
];

/// Namespace-creating clone flags: `clone` with any of them gets EPERM.
const CLONE_NS_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// `personality` values Docker allows (0xffffffff only queries; the rest, e.g.
/// READ_IMPLIES_EXEC, EPERM).
const PERSONALITY_OK: [u64; 5] = [0, 0x0008, 0x20000, 0x20008, 0xffff_ffff];

fn compile() -> Result<Vec<BpfProgram>, HardeningError> {
    let arch: seccompiler::TargetArch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| he("seccomp arch", format!("{e:?}")))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = DENIED
        .iter()
        .filter(|n| **n >= 0)
        .map(|n| (*n, Vec::new()))
        .collect();
    // clone: flags are the first argument on x86_64
    let clone_rules = CLONE_NS_FLAGS
        .iter()
        .map(|f| {
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(*f),
                *f,
            )
            .map_err(|e| he("seccomp condition", e))?])
            .map_err(|e| he("seccomp rule", e))
        })
        .collect::<Result<Vec<_>, HardeningError>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    // personality: anything but the allowed values
    let pers = PERSONALITY_OK
        .iter()
        .map(|v| {
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Ne, *v)
                .map_err(|e| he("seccomp condition", e))
        })
        .collect::<Result<Vec<_>, HardeningError>>()?;
    rules.insert(
        libc::SYS_personality,
        vec![SeccompRule::new(pers).map_err(|e| he("seccomp rule", e))?],
    );
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| he("seccomp filter", e))?;
    // clone3 passes its flags in memory, out of the filter's reach: ENOSYS
    // makes libc fall back to clone, which is checked (Docker does the same).
    let clone3 = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| he("seccomp filter", e))?;
    Ok(vec![
        x32_filter(),
        deny.try_into().map_err(|e| he("seccomp compile", e))?,
        clone3.try_into().map_err(|e| he("seccomp compile", e))?,
    ])
}

/// x32 system calls are x86_64's with bit 30 set in the number, under the
/// same audit arch, so the deny list above would not see them: every number
/// with that bit gets EPERM. (seccompiler matches exact numbers only; four
/// classic BPF instructions, written out.)
fn x32_filter() -> BpfProgram {
    use seccompiler::sock_filter;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    let ins = |code: u32, jt: u8, jf: u8, k: u32| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    vec![
        // A = seccomp_data.nr
        ins(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
        // nr >= X32_SYSCALL_BIT: EPERM, else allow
        ins(
            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
            0,
            1,
            X32_SYSCALL_BIT,
        ),
        ins(
            libc::BPF_RET | libc::BPF_K,
            0,
            0,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        ins(libc::BPF_RET | libc::BPF_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

static PROGRAMS: OnceLock<Result<Vec<BpfProgram>, HardeningError>> = OnceLock::new();

/// Compiles the filter once (the launcher calls this at start, so every
/// shim it forks has it ready and no start pays for it).
pub fn prepare() -> Result<(), HardeningError> {
    PROGRAMS.get_or_init(compile).clone().map(|_| ())
}

/// Installs the filter on the calling thread (needs no_new_privs first).
pub fn apply_seccomp() -> Result<(), HardeningError> {
    let progs = PROGRAMS
        .get_or_init(compile)
        .as_ref()
        .map_err(Clone::clone)?;
    for p in progs {
        seccompiler::apply_filter(p).map_err(|e| he("seccomp", e))?;
    }
    Ok(())
}

pub fn no_new_privs() -> Result<(), HardeningError> {
    nix::sys::prctl::set_no_new_privs().map_err(|e| he("no_new_privs", e))
}

pub fn set_nofile(n: u64) -> Result<(), HardeningError> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, n, n)
        .map_err(|e| he(format!("RLIMIT_NOFILE {n}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_compiles() {
        prepare().unwrap();
        let progs = PROGRAMS.get().unwrap().as_ref().unwrap();
        assert_eq!(progs.len(), 3);
        assert_eq!(progs[0].len(), 4, "the x32 filter");
        assert!(
            progs[1].len() > DENIED.len(),
            "one jump at least per denied call"
        );
    }
}
