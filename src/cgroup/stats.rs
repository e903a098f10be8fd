//! A container's cgroup counters, in bytes and microseconds. [`StatFiles`]
//! keeps the cgroup's files open and re-reads them in place (`pread` at 0):
//! a sample is one read per file, no path lookups, no directory walks.

use super::{ContainerCgroup, Mode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Stats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
    /// Per block device (`major:minor`).
    pub io: Vec<IoStats>,
    /// PSI per resource on v2; null on v1.
    #[schema(required)]
    pub pressure: Option<Pressure>,
    /// The writable layer (not a cgroup counter: filled in by the
    /// supervisor from the layer's statfs); absent when it is not limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<crate::model::DiskStats>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct CpuStats {
    pub usage_usec: u64,
    pub user_usec: u64,
    pub system_usec: u64,
    pub nr_periods: u64,
    pub nr_throttled: u64,
    pub throttled_usec: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct MemoryStats {
    pub current: u64,
    #[schema(required)]
    pub peak: Option<u64>,
    #[schema(required)]
    pub max: Option<u64>,
    pub oom_kill: u64,
    /// v2 `memory.events` high (times memory.high was hit); v1: failcnt.
    pub high_events: u64,
    /// The main `memory.stat` fields, in bytes (counts for pgfault and
    /// pgmajfault), named as on v2; v1's rss and cache show as anon and file.
    pub stat: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PidsStats {
    pub current: u64,
    #[schema(required)]
    pub max: Option<u64>,
    /// Forks refused because of `max` (pids.events "max").
    pub limit_hits: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct IoStats {
    pub device: String,
    pub rbytes: u64,
    pub wbytes: u64,
    pub rios: u64,
    pub wios: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Pressure {
    #[schema(required)]
    pub cpu: Option<Psi>,
    #[schema(required)]
    pub memory: Option<Psi>,
    #[schema(required)]
    pub io: Option<Psi>,
}

/// One `*.pressure` file: the `some` line and, where the kernel has it, `full`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Psi {
    pub some: PsiLine,
    #[schema(required)]
    pub full: Option<PsiLine>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PsiLine {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    /// Stalled time, microseconds.
    pub total: u64,
}

/// `memory.stat` keys reported (v2 names).
const MEMORY_STAT: [&str; 10] = [
    "anon",
    "file",
    "kernel",
    "kernel_stack",
    "shmem",
    "sock",
    "slab",
    "file_dirty",
    "pgfault",
    "pgmajfault",
];

/// The files read per sample, per mode: (controller, file).
const V2_FILES: [&str; 13] = [
    "cpu.stat",
    "memory.current",
    "memory.peak",
    "memory.max",
    "memory.events",
    "memory.stat",
    "pids.current",
    "pids.max",
    "pids.events",
    "io.stat",
    "cpu.pressure",
    "memory.pressure",
    "io.pressure",
];
const V1_FILES: [(&str, &str); 14] = [
    ("cpuacct", "cpuacct.usage"),
    ("cpuacct", "cpuacct.stat"),
    ("cpu", "cpu.stat"),
    ("memory", "memory.usage_in_bytes"),
    ("memory", "memory.max_usage_in_bytes"),
    ("memory", "memory.limit_in_bytes"),
    ("memory", "memory.oom_control"),
    ("memory", "memory.failcnt"),
    ("memory", "memory.stat"),
    ("pids", "pids.current"),
    ("pids", "pids.max"),
    ("pids", "pids.events"),
    ("blkio", "blkio.throttle.io_service_bytes"),
    ("blkio", "blkio.throttle.io_serviced"),
];

/// A container cgroup's counter files, opened once and re-read in place.
/// The limit files (memory and pids maximum) are configuration, changed only
/// through the agent: they are re-read every [`LIMITS_EVERY`]th sample.
pub struct StatFiles {
    mode: Mode,
    files: Vec<Option<File>>,
    buf: Vec<u8>,
    reads: u64,
    limits: (Option<u64>, Option<u64>),
    /// Whether the last read got the CPU counters (false once the cgroup is
    /// gone: its files answer ENODEV, and the sample would be all zeros).
    pub ok: bool,
}

pub const LIMITS_EVERY: u64 = 10;

impl StatFiles {
    /// Opens what exists (a missing file, e.g. memory.peak on older
    /// kernels, reads as absent).
    pub fn open(cg: &ContainerCgroup) -> StatFiles {
        let open = |ctl: &str, name: &str| cg.dir(ctl).and_then(|d| File::open(d.join(name)).ok());
        let files = match cg.mode {
            Mode::V2 => V2_FILES.iter().map(|f| open("", f)).collect(),
            Mode::Hybrid => V1_FILES.iter().map(|(c, f)| open(c, f)).collect(),
        };
        StatFiles {
            mode: cg.mode,
            files,
            buf: vec![0; 16384],
            reads: 0,
            limits: (None, None),
            ok: false,
        }
    }

    /// Whether any file could be opened (false once the cgroup is gone).
    pub fn is_live(&self) -> bool {
        self.files.iter().any(|f| f.is_some())
    }

    /// File `i` read from offset 0 (the kernel regenerates it per read).
    /// One `pread` when it fits the buffer, as these files do: a short read
    /// is the whole file.
    fn text(&mut self, i: usize) -> Option<&str> {
        let f = self.files.get(i)?.as_ref()?;
        let mut len = 0;
        loop {
            if self.buf.len() - len < 4096 {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            match f.read_at(&mut self.buf[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => {
                    len += n;
                    if len < self.buf.len() {
                        break;
                    }
                }
                Err(_) => return None,
            }
        }
        std::str::from_utf8(&self.buf[..len]).ok()
    }

    fn value(&mut self, i: usize) -> Option<u64> {
        self.text(i).and_then(|t| t.trim().parse().ok())
    }

    fn keyed(&mut self, i: usize, key: &str) -> Option<u64> {
        self.text(i).and_then(|t| keyed(t, key))
    }

    /// One sample.
    pub fn read(&mut self) -> Stats {
        let (mem_max, pids_max) = match self.mode {
            Mode::V2 => (3, 7),
            Mode::Hybrid => (5, 10),
        };
        if self.reads.is_multiple_of(LIMITS_EVERY) {
            self.limits = (self.value(mem_max), self.value(pids_max));
        }
        self.reads += 1;
        let mut s = match self.mode {
            Mode::V2 => self.read_v2(),
            Mode::Hybrid => self.read_v1(),
        };
        (s.memory.max, s.pids.max) = self.limits;
        s
    }

    fn read_v2(&mut self) -> Stats {
        let mut s = Stats::default();
        let mut ok = false;
        if let Some(t) = self.text(0) {
            ok = true;
            let k = |key| keyed(t, key).unwrap_or(0);
            s.cpu = CpuStats {
                usage_usec: k("usage_usec"),
                user_usec: k("user_usec"),
                system_usec: k("system_usec"),
                nr_periods: k("nr_periods"),
                nr_throttled: k("nr_throttled"),
                throttled_usec: k("throttled_usec"),
            };
        }
        self.ok = ok;
        s.memory.current = self.value(1).unwrap_or(0);
        s.memory.peak = self.value(2);
        if let Some(t) = self.text(4) {
            s.memory.oom_kill = keyed(t, "oom_kill").unwrap_or(0);
            s.memory.high_events = keyed(t, "high").unwrap_or(0);
        }
        if let Some(t) = self.text(5) {
            // one pass over the file
            for l in t.lines() {
                let Some((k, v)) = l.split_once(' ') else {
                    continue;
                };
                if MEMORY_STAT.contains(&k) {
                    if let Ok(v) = v.parse() {
                        s.memory.stat.insert(k.to_string(), v);
                    }
                }
            }
        }
        s.pids = PidsStats {
            current: self.value(6).unwrap_or(0),
            max: None,
            limit_hits: self.keyed(8, "max").unwrap_or(0),
        };
        if let Some(t) = self.text(9) {
            s.io = parse_io_v2(t);
        }
        let p = Pressure {
            cpu: self.text(10).map(parse_psi),
            memory: self.text(11).map(parse_psi),
            io: self.text(12).map(parse_psi),
        };
        s.pressure = (p.cpu.is_some() || p.memory.is_some() || p.io.is_some()).then_some(p);
        s
    }

    fn read_v1(&mut self) -> Stats {
        let mut s = Stats::default();
        let usage = self.value(0);
        self.ok = usage.is_some();
        let usage_ns = usage.unwrap_or(0);
        let (user, system) = match self.text(1) {
            Some(t) => (keyed(t, "user"), keyed(t, "system")),
            None => (None, None),
        };
        s.cpu.usage_usec = usage_ns / 1000;
        s.cpu.user_usec = ticks_to_usec(user.unwrap_or(0));
        s.cpu.system_usec = ticks_to_usec(system.unwrap_or(0));
        if let Some(t) = self.text(2) {
            s.cpu.nr_periods = keyed(t, "nr_periods").unwrap_or(0);
            s.cpu.nr_throttled = keyed(t, "nr_throttled").unwrap_or(0);
            s.cpu.throttled_usec = keyed(t, "throttled_time").unwrap_or(0) / 1000;
        }
        s.memory.current = self.value(3).unwrap_or(0);
        s.memory.peak = self.value(4);
        s.memory.oom_kill = self.keyed(6, "oom_kill").unwrap_or(0);
        s.memory.high_events = self.value(7).unwrap_or(0);
        if let Some(t) = self.text(8) {
            // one pass; the v1 names that have a v2 meaning
            for l in t.lines() {
                let Some((k, v)) = l.split_once(' ') else {
                    continue;
                };
                let name = match k {
                    "rss" => "anon",
                    "cache" => "file",
                    "shmem" => "shmem",
                    "dirty" => "file_dirty",
                    "pgfault" => "pgfault",
                    "pgmajfault" => "pgmajfault",
                    _ => continue,
                };
                if let Ok(v) = v.parse() {
                    s.memory.stat.insert(name.to_string(), v);
                }
            }
        }
        s.pids = PidsStats {
            current: self.value(9).unwrap_or(0),
            max: None,
            limit_hits: self.keyed(11, "max").unwrap_or(0),
        };
        let bytes = self.text(12).map(parse_blkio).unwrap_or_default();
        let ops = self.text(13).map(parse_blkio).unwrap_or_default();
        let mut devs: BTreeMap<String, IoStats> = BTreeMap::new();
        for (dev, op, n, is_bytes) in bytes
            .into_iter()
            .map(|(d, o, n)| (d, o, n, true))
            .chain(ops.into_iter().map(|(d, o, n)| (d, o, n, false)))
        {
            let e = devs.entry(dev.clone()).or_insert_with(|| IoStats {
                device: dev,
                ..Default::default()
            });
            match (op.as_str(), is_bytes) {
                ("Read", true) => e.rbytes = n,
                ("Write", true) => e.wbytes = n,
                ("Read", false) => e.rios = n,
                ("Write", false) => e.wios = n,
                _ => {}
            }
        }
        s.io = devs.into_values().collect();
        s
    }
}

fn ticks_to_usec(ticks: u64) -> u64 {
    // USER_HZ is 100 on every Linux ABI the agent supports.
    ticks * 10_000
}

/// `key value` lines (cpu.stat, memory.stat, memory.events, ...).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// v2 `io.stat`: `8:0 rbytes=.. wbytes=.. rios=.. wios=.. dbytes=.. dios=..`.
fn parse_io_v2(text: &str) -> Vec<IoStats> {
    text.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let mut io = IoStats {
                device: it.next()?.to_string(),
                ..Default::default()
            };
            for kv in it {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => io.rbytes = v,
                    "wbytes" => io.wbytes = v,
                    "rios" => io.rios = v,
                    "wios" => io.wios = v,
                    _ => {}
                }
            }
            Some(io)
        })
        .collect()
}

/// v1 blkio: `8:0 Read 4096` lines (the `Total` line has two fields).
fn parse_blkio(text: &str) -> Vec<(String, String, u64)> {
    text.lines()
        .filter_map(|l| {
            let v: Vec<&str> = l.split_whitespace().collect();
            match v[..] {
                [dev, op, n] => Some((dev.to_string(), op.to_string(), n.parse().ok()?)),
                _ => None,
            }
        })
        .collect()
}

fn parse_psi(text: &str) -> Psi {
    let line = |kind: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(kind)?.strip_prefix(' ')?;
            let mut p = PsiLine::default();
            for kv in rest.split_whitespace() {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                match k {
                    "avg10" => p.avg10 = v.parse().unwrap_or(0.0),
                    "avg60" => p.avg60 = v.parse().unwrap_or(0.0),
                    "avg300" => p.avg300 = v.parse().unwrap_or(0.0),
                    "total" => p.total = v.parse().unwrap_or(0),
                    _ => {}
                }
            }
            Some(p)
        })
    };
    Psi {
        some: line("some").unwrap_or_default(),
        full: line("full"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_formats() {
        assert_eq!(keyed("anon 10\nfile 20\nfile_dirty 3\n", "file"), Some(20));
        assert_eq!(keyed("anon 10\n", "file"), None);
        let io = parse_io_v2("8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0\n");
        assert_eq!(
            io,
            vec![IoStats {
                device: "8:0".into(),
                rbytes: 1,
                wbytes: 2,
                rios: 3,
                wios: 4
            }]
        );
        let p = parse_psi(
            "some avg10=1.50 avg60=0.00 avg300=0.00 total=1234\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=99\n",
        );
        assert_eq!((p.some.avg10, p.some.total), (1.5, 1234));
        assert_eq!(p.full.map(|f| f.total), Some(99));
        assert_eq!(
            parse_blkio("8:0 Read 4096\n8:0 Write 0\nTotal 4096\n"),
            vec![
                ("8:0".into(), "Read".into(), 4096),
                ("8:0".into(), "Write".into(), 0)
            ]
        );
    }
}
