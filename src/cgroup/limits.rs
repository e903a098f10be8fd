//! Limits as data: the file writes for a spec's limits (pure, tested without
//! root), and reading back what the kernel holds.

use super::{read_value, ContainerCgroup, Mode};
use crate::model::{AppliedLimits, IoApplied, Limits};
use std::fs;

/// CFS period used for `cpus`.
pub const CPU_PERIOD_US: u64 = 100_000;

/// One cgroup file write.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// `""` on v2; the v1 controller otherwise.
    pub controller: &'static str,
    pub file: &'static str,
    pub value: String,
    /// Skipped when the file does not exist (e.g. swap accounting off).
    pub optional: bool,
}

fn w(controller: &'static str, file: &'static str, value: impl ToString) -> Write {
    Write {
        controller,
        file,
        value: value.to_string(),
        optional: false,
    }
}

fn opt(controller: &'static str, file: &'static str, value: impl ToString) -> Write {
    Write {
        optional: true,
        ..w(controller, file, value)
    }
}

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

/// The writes that apply `l`; `io_dev` is the disk io limits apply to.
pub fn plan(mode: Mode, l: &Limits, io_dev: Option<(u64, u64)>) -> Vec<Write> {
    let quota = l
        .cpus
        .map(|c| ((c * CPU_PERIOD_US as f64).round() as u64).max(1000));
    let mut out = Vec::new();
    match mode {
        Mode::V2 => {
            out.push(w(
                "",
                "memory.max",
                l.memory.map_or("max".into(), |m| m.0.to_string()),
            ));
            out.push(w(
                "",
                "memory.high",
                l.memory_high.map_or("max".into(), |m| m.0.to_string()),
            ));
            if l.memory.is_some() {
                out.push(opt("", "memory.swap.max", l.memory_swap.map_or(0, |s| s.0)));
            }
            out.push(w("", "memory.oom.group", 1));
            out.push(w(
                "",
                "cpu.max",
                format!(
                    "{} {CPU_PERIOD_US}",
                    quota.map_or("max".into(), |q| q.to_string())
                ),
            ));
            out.push(w("", "cpu.weight", l.cpu_weight.unwrap_or(100)));
            out.push(w(
                "",
                "pids.max",
                l.pids.map_or("max".into(), |p| p.to_string()),
            ));
            if let (Some(io), Some((maj, min))) = (&l.io, io_dev) {
                let mut v = format!("{maj}:{min}");
                if let Some(r) = io.read_bps {
                    v += &format!(" rbps={}", r.0);
                }
                if let Some(wr) = io.write_bps {
                    v += &format!(" wbps={}", wr.0);
                }
                out.push(w("", "io.max", v));
            }
        }
        Mode::Hybrid => {
            if let Some(m) = l.memory {
                out.push(w("memory", "memory.limit_in_bytes", m.0));
                let swap = l.memory_swap.map_or(0, |s| s.0);
                out.push(opt(
                    "memory",
                    "memory.memsw.limit_in_bytes",
                    m.0.saturating_add(swap),
                ));
            }
            if let Some(h) = l.memory_high {
                out.push(w("memory", "memory.soft_limit_in_bytes", h.0));
            }
            out.push(w("cpu", "cpu.cfs_period_us", CPU_PERIOD_US));
            out.push(w(
                "cpu",
                "cpu.cfs_quota_us",
                quota.map_or(-1i64, |q| q as i64),
            ));
            if let Some(wt) = l.cpu_weight {
                out.push(w("cpu", "cpu.shares", shares_from_weight(wt)));
            }
            if let Some(p) = l.pids {
                out.push(w("pids", "pids.max", p));
            }
            if let (Some(io), Some((maj, min))) = (&l.io, io_dev) {
                if let Some(r) = io.read_bps {
                    out.push(w(
                        "blkio",
                        "blkio.throttle.read_bps_device",
                        format!("{maj}:{min} {}", r.0),
                    ));
                }
                if let Some(wr) = io.write_bps {
                    out.push(w(
                        "blkio",
                        "blkio.throttle.write_bps_device",
                        format!("{maj}:{min} {}", wr.0),
                    ));
                }
            }
        }
    }
    out
}

pub(super) fn read_back(cg: &ContainerCgroup) -> AppliedLimits {
    let mut a = AppliedLimits::default();
    let file = |ctl: &str, f: &str| cg.dir(ctl).map(|d| d.join(f));
    let val = |ctl: &str, f: &str| file(ctl, f).and_then(|p| read_value(&p));
    match cg.mode {
        Mode::V2 => {
            a.memory = val("", "memory.max");
            a.memory_high = val("", "memory.high");
            a.memory_swap = val("", "memory.swap.max");
            if let Some(s) = file("", "cpu.max").and_then(|p| fs::read_to_string(p).ok()) {
                let mut it = s.split_whitespace();
                a.cpu_quota_us = it.next().and_then(|q| q.parse().ok());
                a.cpu_period_us = it.next().and_then(|p| p.parse().ok());
            }
            a.cpu_weight = val("", "cpu.weight");
            a.pids = val("", "pids.max");
            if let Some(s) = file("", "io.max").and_then(|p| fs::read_to_string(p).ok()) {
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
                    a.io.push(io);
                }
            }
        }
        Mode::Hybrid => {
            a.memory = val("memory", "memory.limit_in_bytes");
            a.memory_high = val("memory", "memory.soft_limit_in_bytes");
            if let (Some(sw), Some(m)) = (val("memory", "memory.memsw.limit_in_bytes"), a.memory) {
                a.memory_swap = Some(sw.saturating_sub(m));
            }
            a.cpu_quota_us = val("cpu", "cpu.cfs_quota_us");
            a.cpu_period_us = val("cpu", "cpu.cfs_period_us");
            a.cpu_shares = val("cpu", "cpu.shares");
            a.pids = val("pids", "pids.max");
            let mut devs: Vec<IoApplied> = Vec::new();
            for (f, is_read) in [
                ("blkio.throttle.read_bps_device", true),
                ("blkio.throttle.write_bps_device", false),
            ] {
                let Some(s) = file("blkio", f).and_then(|p| fs::read_to_string(p).ok()) else {
                    continue;
                };
                for line in s.lines() {
                    let mut it = line.split_whitespace();
                    let (Some(dev), Some(v)) = (it.next(), it.next().and_then(|v| v.parse().ok()))
                    else {
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
            a.io = devs;
        }
    }
    if let (Some(q), Some(p)) = (a.cpu_quota_us, a.cpu_period_us) {
        if p > 0 {
            a.cpus = Some(q as f64 / p as f64);
        }
    }
    a
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
        let writes = plan(mode, &limits(), Some((8, 0)));
        cg.apply(&writes).unwrap();
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
        assert!(p.iter().any(|w| w.file == "memory.max" && w.value == "max"));
        assert!(p
            .iter()
            .any(|w| w.file == "cpu.max" && w.value == "max 100000"));
        assert_eq!(shares_from_weight(100), 2 + 99 * 262_142 / 9_999);
        assert_eq!(shares_from_weight(10000), 262_144);
    }
}
