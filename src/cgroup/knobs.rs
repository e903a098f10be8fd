//! Writing the planned limits with cgroups-rs' controllers, each built on
//! the container's own directory of its hierarchy (cgroups-rs' hierarchy
//! layer places one relative path in every v1 hierarchy, which would put
//! containers outside the agent's subtree on hosts where the agent's cgroup
//! differs per controller; its controllers work on any directory).
//! `memory.oom.group`, which cgroups-rs does not know, is written directly.

use super::limits::Knob;
use super::{CgroupError, ContainerCgroup, Mode};
use cgroups_rs::blkio::BlkIoController;
use cgroups_rs::cpu::CpuController;
use cgroups_rs::memory::{MemController, SetMemory};
use cgroups_rs::pid::PidController;
use cgroups_rs::MaxValue;
use std::path::{Path, PathBuf};

fn max_value(v: Option<u64>) -> MaxValue {
    v.map_or(MaxValue::Max, |n| {
        MaxValue::Value(n.min(i64::MAX as u64) as i64)
    })
}

fn limit_err(
    dir: &Path,
    file: &str,
    value: String,
) -> impl FnOnce(cgroups_rs::error::Error) -> CgroupError {
    let path = dir.join(file);
    move |e| CgroupError::Limit {
        path,
        value,
        source: Box::new(e),
    }
}

impl ContainerCgroup {
    /// Applies the knobs in order; a swap knob is skipped where the kernel
    /// has no swap accounting (its file is absent).
    pub fn apply(&self, knobs: &[Knob]) -> Result<(), CgroupError> {
        let v2 = self.mode == Mode::V2;
        for k in knobs {
            let ctl = match k {
                Knob::MemoryMax(_) | Knob::MemoryHigh(_) | Knob::MemorySoft(_) => "memory",
                Knob::Swap(_) | Knob::OomGroup => "memory",
                Knob::CpuMax { .. } | Knob::CpuWeight(_) | Knob::CpuShares(_) => "cpu",
                Knob::PidsMax(_) => "pids",
                Knob::IoBps { .. } => "blkio",
            };
            let Some(dir) = self.dir(ctl) else { continue };
            apply_one(dir.to_path_buf(), v2, k)?;
        }
        Ok(())
    }
}

fn apply_one(dir: PathBuf, v2: bool, k: &Knob) -> Result<(), CgroupError> {
    let mem = || MemController::new(dir.clone(), v2);
    match *k {
        Knob::MemoryMax(m) => {
            let v = m.map_or(-1, |n| n as i64);
            let file = if v2 {
                "memory.max"
            } else {
                "memory.limit_in_bytes"
            };
            mem()
                .set_limit(v)
                .map_err(limit_err(&dir, file, v.to_string()))
        }
        Knob::MemoryHigh(m) => {
            let set = SetMemory {
                high: Some(max_value(m)),
                ..Default::default()
            };
            mem()
                .set_mem(set)
                .map_err(limit_err(&dir, "memory.high", format!("{m:?}")))
        }
        Knob::MemorySoft(n) => mem().set_soft_limit(n as i64).map_err(limit_err(
            &dir,
            "memory.soft_limit_in_bytes",
            n.to_string(),
        )),
        Knob::Swap(n) => {
            let file = if v2 {
                "memory.swap.max"
            } else {
                "memory.memsw.limit_in_bytes"
            };
            if !dir.join(file).exists() {
                return Ok(());
            }
            mem()
                .set_memswap_limit(n as i64)
                .map_err(limit_err(&dir, file, n.to_string()))
        }
        Knob::OomGroup => {
            std::fs::write(dir.join("memory.oom.group"), "1").map_err(|e| CgroupError::Limit {
                path: dir.join("memory.oom.group"),
                value: "1".into(),
                source: Box::new(e),
            })
        }
        _ => apply_cpu_pids_io(dir, v2, k),
    }
}

fn apply_cpu_pids_io(dir: PathBuf, v2: bool, k: &Knob) -> Result<(), CgroupError> {
    let cpu = || CpuController::new(dir.clone(), v2);
    match *k {
        Knob::CpuMax { quota, period } => {
            let q = quota.map_or(-1, |q| q as i64);
            cpu()
                .set_cfs_quota_and_period(Some(q), Some(period))
                .map_err(limit_err(&dir, "cpu quota", format!("{q} {period}")))
        }
        // cgroups-rs writes cpu.weight on v2 and cpu.shares on v1 here
        Knob::CpuWeight(n) | Knob::CpuShares(n) => {
            cpu()
                .set_shares(n)
                .map_err(limit_err(&dir, "cpu weight", n.to_string()))
        }
        Knob::PidsMax(p) => PidController::new(dir.clone(), v2)
            .set_pid_max(max_value(p))
            .map_err(limit_err(&dir, "pids.max", format!("{p:?}"))),
        Knob::IoBps {
            dev: (maj, min),
            read,
            write,
        } => {
            let io = BlkIoController::new(dir.clone(), v2);
            if let Some(r) = read {
                io.throttle_read_bps_for_device(maj, min, r)
                    .map_err(limit_err(&dir, "read bps", format!("{maj}:{min} {r}")))?;
            }
            if let Some(w) = write {
                io.throttle_write_bps_for_device(maj, min, w)
                    .map_err(limit_err(&dir, "write bps", format!("{maj}:{min} {w}")))?;
            }
            Ok(())
        }
        _ => unreachable!("memory knobs are applied by apply_one"),
    }
}
