//! One snapshot of a container's cgroup counters, in bytes and microseconds.

use super::{read_keyed, read_value, ContainerCgroup, Mode};
use serde::{Deserialize, Serialize};
use std::fs;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
    pub io: Vec<serde_json::Value>,
    /// PSI (`some`/`full` avg10 etc.) per resource on v2; null on v1.
    pub pressure: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CpuStats {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MemoryStats {
    pub current: u64,
    pub peak: Option<u64>,
    pub max: Option<u64>,
    pub oom_kill: u64,
    /// v2 `memory.events` high (times memory.high was hit); v1: failcnt.
    pub high_events: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PidsStats {
    pub current: u64,
    pub max: Option<u64>,
    /// Forks refused because of `max` (pids.events "max").
    pub limit_hits: u64,
}

fn ticks_to_usec(ticks: u64) -> u64 {
    // USER_HZ is 100 on every Linux ABI the agent supports.
    ticks * 10_000
}

pub(super) fn read(cg: &ContainerCgroup) -> Stats {
    let f = |ctl: &str, name: &str| cg.dir(ctl).map(|d| d.join(name)).unwrap_or_default();
    let mut s = Stats::default();
    match cg.mode {
        Mode::V2 => {
            let cpu = f("", "cpu.stat");
            let k = |key| read_keyed(&cpu, key).unwrap_or(0);
            s.cpu = CpuStats {
                usage_usec: k("usage_usec"),
                user_usec: k("user_usec"),
                system_usec: k("system_usec"),
                nr_periods: k("nr_periods"),
                nr_throttled: k("nr_throttled"),
                throttled_usec: k("throttled_usec"),
            };
            s.memory = MemoryStats {
                current: read_value(&f("", "memory.current")).unwrap_or(0),
                peak: read_value(&f("", "memory.peak")),
                max: read_value(&f("", "memory.max")),
                oom_kill: read_keyed(&f("", "memory.events"), "oom_kill").unwrap_or(0),
                high_events: read_keyed(&f("", "memory.events"), "high").unwrap_or(0),
            };
            s.pids = PidsStats {
                current: read_value(&f("", "pids.current")).unwrap_or(0),
                max: read_value(&f("", "pids.max")),
                limit_hits: read_keyed(&f("", "pids.events"), "max").unwrap_or(0),
            };
            if let Ok(io) = fs::read_to_string(f("", "io.stat")) {
                for line in io.lines() {
                    let mut it = line.split_whitespace();
                    let Some(dev) = it.next() else { continue };
                    let mut obj = serde_json::Map::new();
                    obj.insert("device".into(), dev.into());
                    for kv in it {
                        if let Some((k, v)) = kv.split_once('=') {
                            if let Ok(n) = v.parse::<u64>() {
                                obj.insert(k.into(), n.into());
                            }
                        }
                    }
                    s.io.push(obj.into());
                }
            }
            let mut p = serde_json::Map::new();
            for res in ["cpu", "memory", "io"] {
                if let Ok(text) = fs::read_to_string(f("", &format!("{res}.pressure"))) {
                    p.insert(res.into(), parse_psi(&text));
                }
            }
            s.pressure = (!p.is_empty()).then(|| p.into());
        }
        Mode::Hybrid => {
            let usage_ns = read_value(&f("cpuacct", "cpuacct.usage")).unwrap_or(0);
            let st = f("cpuacct", "cpuacct.stat");
            let cpu = f("cpu", "cpu.stat");
            s.cpu = CpuStats {
                usage_usec: usage_ns / 1000,
                user_usec: ticks_to_usec(read_keyed(&st, "user").unwrap_or(0)),
                system_usec: ticks_to_usec(read_keyed(&st, "system").unwrap_or(0)),
                nr_periods: read_keyed(&cpu, "nr_periods").unwrap_or(0),
                nr_throttled: read_keyed(&cpu, "nr_throttled").unwrap_or(0),
                throttled_usec: read_keyed(&cpu, "throttled_time").unwrap_or(0) / 1000,
            };
            s.memory = MemoryStats {
                current: read_value(&f("memory", "memory.usage_in_bytes")).unwrap_or(0),
                peak: read_value(&f("memory", "memory.max_usage_in_bytes")),
                max: read_value(&f("memory", "memory.limit_in_bytes")),
                oom_kill: read_keyed(&f("memory", "memory.oom_control"), "oom_kill").unwrap_or(0),
                high_events: read_value(&f("memory", "memory.failcnt")).unwrap_or(0),
            };
            s.pids = PidsStats {
                current: read_value(&f("pids", "pids.current")).unwrap_or(0),
                max: read_value(&f("pids", "pids.max")),
                limit_hits: read_keyed(&f("pids", "pids.events"), "max").unwrap_or(0),
            };
            if let Ok(io) = fs::read_to_string(f("blkio", "blkio.throttle.io_service_bytes")) {
                for line in io.lines() {
                    let v: Vec<&str> = line.split_whitespace().collect();
                    if let [dev, op, n] = v[..] {
                        if let Ok(n) = n.parse::<u64>() {
                            s.io.push(serde_json::json!({"device": dev, "op": op.to_lowercase(), "bytes": n}));
                        }
                    }
                }
            }
        }
    }
    s
}

fn parse_psi(text: &str) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        let Some(kind) = it.next() else { continue };
        let mut obj = serde_json::Map::new();
        for kv in it {
            if let Some((k, v)) = kv.split_once('=') {
                if let Ok(n) = v.parse::<f64>() {
                    obj.insert(k.into(), serde_json::json!(n));
                }
            }
        }
        out.insert(kind.into(), obj.into());
    }
    out.into()
}
