//! Limits as data: the knobs a spec's limits set (pure, tested without
//! root), and reading back what the kernel holds.

use super::{read_value, ContainerCgroup, Mode};
use crate::model::{AppliedLimits, IoApplied, Limits};
use std::fs;

/// CFS period used for `cpus`.
pub const CPU_PERIOD_US: u64 = 100_000;

/// v2 `cpu.weight` (1..10000) to v1 `cpu.shares` (2..262144), as runc converts.
pub fn shares_from_weight(weight: u64) -> u64 {
    2 + (weight.saturating_sub(1) * 262_142) / 9_999
}

/// Device rules of a container (v1 devices controller syntax): null, zero,
/// full, random, urandom, tty, ptmx and the ptys of its devpts.
pub const STANDARD_DEVICES: [&str; 8] = [
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// One limit, as the plan sets it; [`super::knobs::apply`] writes it with
/// cgroups-rs' controllers (or directly, for what cgroups-rs lacks).
#[derive(Debug, Clone, PartialEq)]
pub enum Knob {
    /// v2 `memory.max`, v1 `memory.limit_in_bytes`; None: no limit.
    MemoryMax(Option<u64>),
    /// v2 `memory.high`; None: no limit.
    MemoryHigh(Option<u64>),
    /// v1 `memory.soft_limit_in_bytes` (v1 has no throttling equivalent).
    MemorySoft(u64),
    /// v2 `memory.swap.max`, v1 `memory.memsw.limit_in_bytes` (memory +
    /// swap); skipped where swap accounting is off (the file is absent).
    Swap(u64),
    /// v2 `memory.oom.group`: an OOM kill takes the whole container.
    OomGroup,
    /// v2 `cpu.max`, v1 `cpu.cfs_quota_us` + `cpu.cfs_period_us`; None: no quota.
    CpuMax { quota: Option<u64>, period: u64 },
    /// v2 `cpu.weight`.
    CpuWeight(u64),
    /// v1 `cpu.shares`.
    CpuShares(u64),
    /// `pids.max`; None: no limit.
    PidsMax(Option<u64>),
    /// v2 `io.max` rbps/wbps, v1 `blkio.throttle.{read,write}_bps_device`.
    IoBps {
        dev: (u64, u64),
        read: Option<u64>,
        write: Option<u64>,
    },
}

/// What applies `l`; `io_dev` is the disk io limits apply to.
pub fn plan(mode: Mode, l: &Limits, io_dev: Option<(u64, u64)>) -> Vec<Knob> {
    let quota = l
        .cpus
        .map(|c| ((c * CPU_PERIOD_US as f64).round() as u64).max(1000));
    let mut out = match mode {
        Mode::V2 => plan_v2(l),
        Mode::Hybrid => plan_v1(l),
    };
    // A new cgroup has no quota (and this period): written only to set one.
    // Each write of a CFS quota makes the kernel walk every cpu cgroup of
    // the host (`__cfs_schedulable`): with a thousand containers, writing
    // "no quota" cost every create a walk of a thousand groups.
    if quota.is_some() {
        out.push(Knob::CpuMax {
            quota,
            period: CPU_PERIOD_US,
        });
    }
    if let (Some(io), Some(dev)) = (&l.io, io_dev) {
        out.push(Knob::IoBps {
            dev,
            read: io.read_bps.map(|r| r.0),
            write: io.write_bps.map(|w| w.0),
        });
    }
    out
}

/// v2: every limit written, `max` where `l` sets none.
fn plan_v2(l: &Limits) -> Vec<Knob> {
    let mut out = vec![
        Knob::MemoryMax(l.memory.map(|m| m.0)),
        Knob::MemoryHigh(l.memory_high.map(|m| m.0)),
    ];
    if l.memory.is_some() {
        out.push(Knob::Swap(l.memory_swap.map_or(0, |s| s.0)));
    }
    out.push(Knob::OomGroup);
    out.push(Knob::CpuWeight(l.cpu_weight.unwrap_or(100)));
    out.push(Knob::PidsMax(l.pids));
    out
}

/// v1: only the limits `l` sets.
fn plan_v1(l: &Limits) -> Vec<Knob> {
    let mut out = Vec::new();
    if let Some(m) = l.memory {
        out.push(Knob::MemoryMax(Some(m.0)));
        let swap = l.memory_swap.map_or(0, |s| s.0);
        out.push(Knob::Swap(m.0.saturating_add(swap)));
    }
    if let Some(h) = l.memory_high {
        out.push(Knob::MemorySoft(h.0));
    }
    if let Some(wt) = l.cpu_weight {
        out.push(Knob::CpuShares(shares_from_weight(wt)));
    }
    if let Some(p) = l.pids {
        out.push(Knob::PidsMax(Some(p)));
    }
    out
}

pub(super) fn read_back(cg: &ContainerCgroup) -> AppliedLimits {
    let mut a = match cg.mode {
        Mode::V2 => read_v2(cg),
        Mode::Hybrid => read_v1(cg),
    };
    if let (Some(q), Some(p)) = (a.cpu_quota_us, a.cpu_period_us) {
        if p > 0 {
            a.cpus = Some(q as f64 / p as f64);
        }
    }
    a
}

/// The text of a controller's file, if it exists and reads.
fn read_file(cg: &ContainerCgroup, ctl: &str, f: &str) -> Option<String> {
    cg.dir(ctl)
        .map(|d| d.join(f))
        .and_then(|p| fs::read_to_string(p).ok())
}

/// A controller file's number (`max` is None).
fn val(cg: &ContainerCgroup, ctl: &str, f: &str) -> Option<u64> {
    cg.dir(ctl).map(|d| d.join(f)).and_then(|p| read_value(&p))
}

fn read_v2(cg: &ContainerCgroup) -> AppliedLimits {
    let cpu_max = read_file(cg, "", "cpu.max").unwrap_or_default();
    let mut cpu = cpu_max.split_whitespace();
    AppliedLimits {
        memory: val(cg, "", "memory.max"),
        memory_high: val(cg, "", "memory.high"),
        memory_swap: val(cg, "", "memory.swap.max"),
        // fields are evaluated in this order: the quota, then the period
        cpu_quota_us: cpu.next().and_then(|q| q.parse().ok()),
        cpu_period_us: cpu.next().and_then(|p| p.parse().ok()),
        cpu_weight: val(cg, "", "cpu.weight"),
        pids: val(cg, "", "pids.max"),
        io: read_file(cg, "", "io.max")
            .map(|s| parse_io_max(&s))
            .unwrap_or_default(),
        ..Default::default()
    }
}

/// v2 `io.max`: a line per device, `MAJ:MIN rbps=N wbps=N ...`.
fn parse_io_max(s: &str) -> Vec<IoApplied> {
    let mut out = Vec::new();
    for line in s.lines() {
        let mut it = line.split_whitespace();
        let Some(dev) = it.next() else { continue };
        let mut io = IoApplied {
            device: dev.into(),
            ..Default::default()
        };
        for kv in it {
            match kv.split_once('=') {
                Some(("rbps", v)) => io.read_bps = v.parse().ok(),
                Some(("wbps", v)) => io.write_bps = v.parse().ok(),
                _ => {}
            }
        }
        out.push(io);
    }
    out
}

fn read_v1(cg: &ContainerCgroup) -> AppliedLimits {
    let memory = val(cg, "memory", "memory.limit_in_bytes");
    let memsw = val(cg, "memory", "memory.memsw.limit_in_bytes");
    AppliedLimits {
        memory,
        memory_high: val(cg, "memory", "memory.soft_limit_in_bytes"),
        // memsw limits memory and swap together
        memory_swap: memsw.zip(memory).map(|(sw, m)| sw.saturating_sub(m)),
        cpu_quota_us: val(cg, "cpu", "cpu.cfs_quota_us"),
        cpu_period_us: val(cg, "cpu", "cpu.cfs_period_us"),
        cpu_shares: val(cg, "cpu", "cpu.shares"),
        pids: val(cg, "pids", "pids.max"),
        io: read_blkio(cg),
        ..Default::default()
    }
}

/// v1 blkio throttles: the read and the write file merged, a device each.
fn read_blkio(cg: &ContainerCgroup) -> Vec<IoApplied> {
    let mut devs: Vec<IoApplied> = Vec::new();
    for (f, is_read) in [
        ("blkio.throttle.read_bps_device", true),
        ("blkio.throttle.write_bps_device", false),
    ] {
        let Some(s) = read_file(cg, "blkio", f) else {
            continue;
        };
        for line in s.lines() {
            let mut it = line.split_whitespace();
            let (Some(dev), Some(v)) = (it.next(), it.next().and_then(|v| v.parse().ok())) else {
                continue;
            };
            let idx = match devs.iter().position(|d| d.device == dev) {
                Some(i) => i,
                None => {
                    devs.push(IoApplied {
                        device: dev.into(),
                        ..Default::default()
                    });
                    devs.len() - 1
                }
            };
            if is_read {
                devs[idx].read_bps = Some(v);
            } else {
                devs[idx].write_bps = Some(v);
            }
        }
    }
    devs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IoLimits, Size};

    fn limits() -> Limits {
        Limits {
            memory: Some(Size(64 << 20)),
            memory_high: Some(Size(48 << 20)),
            cpus: Some(0.5),
            cpu_weight: Some(200),
            pids: Some(64),
            io: Some(IoLimits {
                read_bps: Some(Size(1 << 20)),
                write_bps: None,
            }),
            ..Default::default()
        }
    }

    /// Applies a plan to a fake cgroupfs and reads it back.
    fn roundtrip(mode: Mode) -> AppliedLimits {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = match mode {
            Mode::V2 => vec![("", tmp.path().join("c"))],
            Mode::Hybrid => ["memory", "cpu", "pids", "blkio"]
                .into_iter()
                .map(|c| (c, tmp.path().join(c)))
                .collect(),
        };
        let cg = ContainerCgroup { mode, dirs };
        cg.create().unwrap();
        // cgroups-rs reads cpu.max before it writes it, as the kernel's would be
        if mode == Mode::V2 {
            std::fs::write(tmp.path().join("c/cpu.max"), "max 100000\n").unwrap();
        }
        cg.apply(&plan(mode, &limits(), Some((8, 0)))).unwrap();
        cg.read_limits()
    }

    #[test]
    fn v2_plan_roundtrips() {
        let a = roundtrip(Mode::V2);
        assert_eq!(a.memory, Some(64 << 20));
        assert_eq!(a.memory_high, Some(48 << 20));
        assert_eq!(a.cpu_quota_us, Some(50_000));
        assert_eq!(a.cpus, Some(0.5));
        assert_eq!(a.cpu_weight, Some(200));
        assert_eq!(a.pids, Some(64));
        assert_eq!(
            a.io,
            vec![IoApplied {
                device: "8:0".into(),
                read_bps: Some(1 << 20),
                write_bps: None
            }]
        );
        // swap file absent in the fake: the optional write was skipped
        assert_eq!(a.memory_swap, None);
    }

    #[test]
    fn v1_plan_roundtrips() {
        let a = roundtrip(Mode::Hybrid);
        assert_eq!(a.memory, Some(64 << 20));
        assert_eq!(a.cpus, Some(0.5));
        assert_eq!(a.cpu_shares, Some(shares_from_weight(200)));
        assert_eq!(a.pids, Some(64));
        assert_eq!(a.io[0].read_bps, Some(1 << 20));
    }

    #[test]
    fn unlimited_by_default() {
        let p = plan(Mode::V2, &Limits::default(), None);
        assert!(p.contains(&Knob::MemoryMax(None)));
        // nothing written for the CPU: a new cgroup has no quota
        assert!(!p.iter().any(|k| matches!(k, Knob::CpuMax { .. })));
        assert!(p.contains(&Knob::PidsMax(None)));
        assert_eq!(shares_from_weight(100), 2 + 99 * 262_142 / 9_999);
        assert_eq!(shares_from_weight(10000), 262_144);
    }
}
