//! `GET /metrics`: Prometheus text exposition (format 0.0.4) of every
//! container's last sample (labels container, app, version, host) and of the
//! agent itself. Rendering reads the sampler's last pass: no cgroup reads.

use super::sampler::Sample;
use crate::supervisor::Supervisor;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// API requests by (method, status code).
static API_REQUESTS: Mutex<BTreeMap<(String, u16), u64>> = Mutex::new(BTreeMap::new());

pub fn count_request(method: &str, status: u16) {
    *API_REQUESTS
        .lock()
        .unwrap()
        .entry((method.to_string(), status))
        .or_insert(0) += 1;
}

/// The host label of every series (the machine's hostname).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A per-container series: name, type, help, and its values in one sample
/// (extra label pairs, value).
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Sample) -> Vec<(String, f64)>,
);

fn one(v: f64) -> Vec<(String, f64)> {
    vec![(String::new(), v)]
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
                .map(|(k, v)| (format!("type=\"{k}\""), *v as f64))
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
                .filter_map(|(kind, k)| st.get(*k).map(|v| (format!("kind=\"{kind}\""), *v as f64)))
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
                .map(|d| (format!("device=\"{}\"", d.device), d.rbytes as f64))
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
                .map(|d| (format!("device=\"{}\"", d.device), d.wbytes as f64))
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
                .map(|d| (format!("device=\"{}\"", d.device), d.rios as f64))
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
                .map(|d| (format!("device=\"{}\"", d.device), d.wios as f64))
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
                out.push((
                    format!("resource=\"{res}\",kind=\"some\""),
                    psi.some.total as f64 / 1e6,
                ));
                if let Some(f) = &psi.full {
                    out.push((
                        format!("resource=\"{res}\",kind=\"full\""),
                        f.total as f64 / 1e6,
                    ));
                }
            }
            out
        },
    ),
];

/// The labels of a sample's series, without braces.
pub fn labels(s: &Sample, host: &str) -> String {
    format!(
        "container=\"{}\",app=\"{}\",version=\"{}\",host=\"{}\"",
        esc(&s.labels.container),
        esc(&s.labels.app),
        esc(&s.labels.version),
        esc(host)
    )
}

pub fn render(sup: &Supervisor) -> String {
    let mut o = String::with_capacity(4096);
    let host = host_name();
    let c = sup.counts();
    head(
        &mut o,
        "hydra_agent_info",
        "gauge",
        "Agent version and cgroup mode.",
    );
    let _ = writeln!(
        o,
        "hydra_agent_info{{version=\"{}\",cgroup_mode=\"{}\",host=\"{}\"}} 1",
        crate::VERSION,
        sup.mode().as_str(),
        esc(&host)
    );
    head(&mut o, "hydra_containers", "gauge", "Containers by state.");
    for (s, n) in [
        ("running", c.running),
        ("exited", c.exited),
        ("created", c.created),
    ] {
        let _ = writeln!(o, "hydra_containers{{state=\"{s}\"}} {n}");
    }
    head(
        &mut o,
        "hydra_api_requests_total",
        "counter",
        "API requests, by method and status code.",
    );
    for ((m, code), n) in API_REQUESTS.lock().unwrap().iter() {
        let _ = writeln!(
            o,
            "hydra_api_requests_total{{method=\"{m}\",code=\"{code}\"}} {n}"
        );
    }
    if let Some(n) = sup.network() {
        head(
            &mut o,
            "hydra_firewall_drift_restores_total",
            "counter",
            "Times our firewall rules were found changed by someone else and restored.",
        );
        let v = n.drift_restores.load(Ordering::Relaxed);
        let _ = writeln!(o, "hydra_firewall_drift_restores_total {v}");
    }
    let sm = &sup.sampler;
    for (name, kind, help, v) in [
        (
            "hydra_stats_passes_total",
            "counter",
            "Sampler passes.",
            sm.passes.load(Ordering::Relaxed) as f64,
        ),
        (
            "hydra_stats_samples_total",
            "counter",
            "Container samples taken.",
            sm.samples.load(Ordering::Relaxed) as f64,
        ),
        (
            "hydra_stats_pass_seconds",
            "gauge",
            "Wall time of the last sampler pass.",
            sm.last_pass_us.load(Ordering::Relaxed) as f64 / 1e6,
        ),
        (
            "hydra_stats_cpu_seconds_total",
            "counter",
            "CPU time of the sampler thread.",
            sm.cpu_us.load(Ordering::Relaxed) as f64 / 1e6,
        ),
    ] {
        head(&mut o, name, kind, help);
        let _ = writeln!(o, "{name} {v}");
    }
    if let Some(rw) = sup.remote_write.get() {
        let c = &rw.counters;
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        head(&mut o, "hydra_remote_write_samples_total", "counter", "Remote-write samples, by result (sent: accepted; rejected: refused with a 4xx, dropped).");
        let _ = writeln!(
            o,
            "hydra_remote_write_samples_total{{result=\"sent\"}} {}",
            l(&c.sent)
        );
        let _ = writeln!(
            o,
            "hydra_remote_write_samples_total{{result=\"rejected\"}} {}",
            l(&c.rejected)
        );
        for (name, kind, help, v) in [
            (
                "hydra_remote_write_dropped_container_samples_total",
                "counter",
                "Container samples dropped because the backlog was full.",
                l(&c.dropped_backlog),
            ),
            (
                "hydra_remote_write_retries_total",
                "counter",
                "Failed attempts, retried.",
                l(&c.retries),
            ),
            (
                "hydra_remote_write_backlog_container_samples",
                "gauge",
                "Container samples waiting to be sent.",
                l(&c.backlog),
            ),
        ] {
            head(&mut o, name, kind, help);
            let _ = writeln!(o, "{name} {v}");
        }
    }
    if let Some(c) = sup.ship.get() {
        let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        head(&mut o, "hydra_log_records_total", "counter", "Log records (and events) read from the logs, shipped (acknowledged by the collector), sent again after a reconnect.");
        for (r, v) in [
            ("read", l(&c.read)),
            ("shipped", l(&c.shipped)),
            ("retried", l(&c.retried)),
        ] {
            let _ = writeln!(o, "hydra_log_records_total{{result=\"{r}\"}} {v}");
        }
        head(&mut o, "hydra_log_records_dropped_total", "counter", "Log records not shipped, by container and reason (rate: over collector.log_rate_lines; size_cap: deleted by the log size cap before they were sent).");
        for ((name, reason), n) in c.dropped.lock().unwrap().iter() {
            let _ = writeln!(o, "hydra_log_records_dropped_total{{container=\"{}\",reason=\"{reason}\",host=\"{}\"}} {n}", esc(name), esc(&host));
        }
        head(
            &mut o,
            "hydra_log_backlog_bytes",
            "gauge",
            "Log bytes not yet acknowledged by the collector.",
        );
        let _ = writeln!(o, "hydra_log_backlog_bytes {}", l(&c.backlog_bytes));
        head(
            &mut o,
            "hydra_log_lag_seconds",
            "gauge",
            "Age of the oldest record sent and not yet acknowledged.",
        );
        let _ = writeln!(o, "hydra_log_lag_seconds {}", l(&c.lag_ms) as f64 / 1e3);
    }
    let samples = sm.latest();
    let base: Vec<String> = samples.iter().map(|s| labels(s, &host)).collect();
    for (name, kind, help, f) in SERIES {
        head(&mut o, name, kind, help);
        for (s, l) in samples.iter().zip(&base) {
            for (extra, v) in f(s) {
                let sep = if extra.is_empty() { "" } else { "," };
                let _ = writeln!(o, "{name}{{{l}{sep}{extra}}} {v}");
            }
        }
    }
    head(
        &mut o,
        "hydra_container_restarts_total",
        "counter",
        "Restarts by policy.",
    );
    for (name, app, version, n) in sup.restart_counts() {
        let _ = writeln!(
            o,
            "hydra_container_restarts_total{{container=\"{}\",app=\"{}\",version=\"{}\",host=\"{}\"}} {n}",
            esc(&name),
            esc(&app),
            esc(&version),
            esc(&host)
        );
    }
    o
}

fn head(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}
