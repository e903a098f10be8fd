//! The per-container series: what `/metrics` shows and remote-write sends
//! of each sampler pass, as data (one table for both).

use super::sampler::Sample;

/// Extra labels of one value of a series (beyond container, app, version, host).
pub type Extra = Vec<(&'static str, String)>;

/// A per-container series: name, type (`counter` or `gauge`), help, and its
/// values in one sample (extra labels, value).
pub type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Sample) -> Vec<(Extra, f64)>,
);

fn one(v: f64) -> Vec<(Extra, f64)> {
    vec![(Vec::new(), v)]
}

/// A value of the writable layer's use; none when it is not limited.
fn disk(s: &Sample, f: fn(&crate::model::DiskStats) -> u64) -> Vec<(Extra, f64)> {
    s.stats
        .disk
        .as_ref()
        .map_or(Vec::new(), |d| one(f(d) as f64))
}

/// Every per-container series; also what remote-write sends.
pub const SERIES: &[Series] = &[
    (
        "hydra_container_cpu_usage_seconds_total",
        "counter",
        "CPU time used.",
        |s| one(s.stats.cpu.usage_usec as f64 / 1e6),
    ),
    (
        "hydra_container_cpu_user_seconds_total",
        "counter",
        "CPU time in user mode.",
        |s| one(s.stats.cpu.user_usec as f64 / 1e6),
    ),
    (
        "hydra_container_cpu_system_seconds_total",
        "counter",
        "CPU time in the kernel.",
        |s| one(s.stats.cpu.system_usec as f64 / 1e6),
    ),
    (
        "hydra_container_cpu_throttled_periods_total",
        "counter",
        "CFS periods throttled.",
        |s| one(s.stats.cpu.nr_throttled as f64),
    ),
    (
        "hydra_container_cpu_throttled_seconds_total",
        "counter",
        "Time throttled.",
        |s| one(s.stats.cpu.throttled_usec as f64 / 1e6),
    ),
    (
        "hydra_container_memory_bytes",
        "gauge",
        "Memory in use (memory.current).",
        |s| one(s.stats.memory.current as f64),
    ),
    (
        "hydra_container_memory_peak_bytes",
        "gauge",
        "Highest memory use seen.",
        |s| {
            s.stats
                .memory
                .peak
                .map(|v| one(v as f64))
                .unwrap_or_default()
        },
    ),
    (
        "hydra_container_memory_limit_bytes",
        "gauge",
        "Memory limit (absent: none).",
        |s| match s.stats.memory.max {
            Some(v) if v < (1 << 62) => one(v as f64),
            _ => vec![],
        },
    ),
    (
        "hydra_container_memory_stat_bytes",
        "gauge",
        "memory.stat fields, by type.",
        |s| {
            s.stats
                .memory
                .stat
                .iter()
                .filter(|(k, _)| !k.starts_with("pg"))
                .map(|(k, v)| (vec![("type", k.clone())], *v as f64))
                .collect()
        },
    ),
    (
        "hydra_container_memory_faults_total",
        "counter",
        "Page faults (kind all or major).",
        |s| {
            let st = &s.stats.memory.stat;
            [("all", "pgfault"), ("major", "pgmajfault")]
                .iter()
                .filter_map(|(kind, k)| {
                    st.get(*k)
                        .map(|v| (vec![("kind", kind.to_string())], *v as f64))
                })
                .collect()
        },
    ),
    (
        "hydra_container_oom_kills_total",
        "counter",
        "OOM kills in the cgroup.",
        |s| one(s.stats.memory.oom_kill as f64),
    ),
    (
        "hydra_container_memory_high_events_total",
        "counter",
        "Times memory.high was hit (v1: failcnt).",
        |s| one(s.stats.memory.high_events as f64),
    ),
    (
        "hydra_container_pids",
        "gauge",
        "Processes and threads.",
        |s| one(s.stats.pids.current as f64),
    ),
    (
        "hydra_container_disk_bytes",
        "gauge",
        "Bytes in the writable layer (limited layers only).",
        |s| disk(s, |d| d.used),
    ),
    (
        "hydra_container_disk_limit_bytes",
        "gauge",
        "The writable layer's limit, bytes (limits.disk).",
        |s| disk(s, |d| d.limit),
    ),
    (
        "hydra_container_disk_inodes",
        "gauge",
        "Files (inodes) in the writable layer.",
        |s| disk(s, |d| d.inodes_used),
    ),
    (
        "hydra_container_disk_inodes_limit",
        "gauge",
        "The writable layer's inode limit (limits.inodes).",
        |s| disk(s, |d| d.inodes_limit),
    ),
    (
        "hydra_container_pids_limit_hits_total",
        "counter",
        "Forks refused by the pids limit.",
        |s| one(s.stats.pids.limit_hits as f64),
    ),
    (
        "hydra_container_io_read_bytes_total",
        "counter",
        "Bytes read, by device.",
        |s| {
            s.stats
                .io
                .iter()
                .map(|d| (vec![("device", d.device.clone())], d.rbytes as f64))
                .collect()
        },
    ),
    (
        "hydra_container_io_write_bytes_total",
        "counter",
        "Bytes written, by device.",
        |s| {
            s.stats
                .io
                .iter()
                .map(|d| (vec![("device", d.device.clone())], d.wbytes as f64))
                .collect()
        },
    ),
    (
        "hydra_container_io_reads_total",
        "counter",
        "Read operations, by device.",
        |s| {
            s.stats
                .io
                .iter()
                .map(|d| (vec![("device", d.device.clone())], d.rios as f64))
                .collect()
        },
    ),
    (
        "hydra_container_io_writes_total",
        "counter",
        "Write operations, by device.",
        |s| {
            s.stats
                .io
                .iter()
                .map(|d| (vec![("device", d.device.clone())], d.wios as f64))
                .collect()
        },
    ),
    (
        "hydra_container_pressure_stalled_seconds_total",
        "counter",
        "PSI stall time (v2), by resource and kind (some, full).",
        |s| {
            let Some(p) = &s.stats.pressure else {
                return vec![];
            };
            let mut out = vec![];
            for (res, psi) in [("cpu", &p.cpu), ("memory", &p.memory), ("io", &p.io)] {
                let Some(psi) = psi else { continue };
                let labels =
                    |kind: &str| vec![("resource", res.to_string()), ("kind", kind.to_string())];
                out.push((labels("some"), psi.some.total as f64 / 1e6));
                if let Some(f) = &psi.full {
                    out.push((labels("full"), f.total as f64 / 1e6));
                }
            }
            out
        },
    ),
];
