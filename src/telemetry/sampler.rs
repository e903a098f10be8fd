//! The stats sampler: one pass over every container per interval, on its own
//! thread (never on the async reactor), with each cgroup's files kept open
//! and re-read in place. `/metrics` and remote-write read its last pass, so a
//! scrape costs no cgroup reads at all.

use crate::cgroup::{ContainerCgroup, StatFiles, Stats};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Who a sample is of: the labels of its series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Labels {
    pub container: String,
    pub app: String,
    pub version: String,
}

#[derive(Debug, Clone)]
pub struct Sample {
    /// Shared with the sampler's target (no copy per pass).
    pub labels: Arc<Labels>,
    /// Unix time of the read, milliseconds.
    pub at_ms: i64,
    pub stats: Stats,
}

/// A container to sample: its labels, a key that changes when the container
/// is re-created under the same name, and its cgroup. Cheap to clone, so the
/// list can be handed over every pass.
#[derive(Clone)]
pub struct Target {
    pub labels: Arc<Labels>,
    pub generation: Arc<str>,
    pub cgroup: Arc<ContainerCgroup>,
    /// The writable layer's dir and limits, when limited.
    pub disk: Option<Arc<(std::path::PathBuf, crate::model::DiskApplied)>>,
}

fn layer_use(
    dir: &std::path::Path,
    d: &crate::model::DiskApplied,
) -> Option<crate::model::DiskStats> {
    crate::disk::usage(dir, d).map(|u| crate::model::DiskStats {
        used: u.bytes,
        limit: d.bytes,
        inodes_used: u.inodes,
        inodes_limit: d.inodes,
    })
}

/// Where each pass goes besides `latest` (remote-write's queue).
pub type Sink = Box<dyn Fn(Arc<Vec<Sample>>) + Send>;

/// The sampler's shared state (the thread is [`Sampler::run`]).
pub struct Sampler {
    latest: RwLock<Arc<Vec<Sample>>>,
    interval_ms: AtomicU64,
    wake: (Mutex<bool>, Condvar),
    pub passes: Counter,
    /// Containers sampled, summed over passes.
    pub samples: Counter,
    /// Wall time of the last pass, seconds.
    pub last_pass: Gauge<f64, AtomicU64>,
    /// CPU time of the sampler thread, seconds.
    pub cpu: Counter<f64, AtomicU64>,
    /// Called with every pass (remote-write's queue).
    sink: Mutex<Option<Sink>>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("interval", &self.interval())
            .finish_non_exhaustive()
    }
}

impl Sampler {
    pub fn new(interval: Duration) -> Sampler {
        Sampler {
            latest: RwLock::new(Arc::new(Vec::new())),
            interval_ms: AtomicU64::new(interval.as_millis() as u64),
            wake: (Mutex::new(false), Condvar::new()),
            passes: Counter::default(),
            samples: Counter::default(),
            last_pass: Gauge::default(),
            cpu: Counter::default(),
            sink: Mutex::new(None),
        }
    }

    /// Registers the sampler's own series.
    pub fn register(&self, r: &mut Registry) {
        r.register("hydra_stats_passes", "Sampler passes.", self.passes.clone());
        r.register(
            "hydra_stats_samples",
            "Container samples taken.",
            self.samples.clone(),
        );
        r.register(
            "hydra_stats_pass_seconds",
            "Wall time of the last sampler pass.",
            self.last_pass.clone(),
        );
        r.register(
            "hydra_stats_cpu_seconds",
            "CPU time of the sampler thread.",
            self.cpu.clone(),
        );
    }

    pub fn latest(&self) -> Arc<Vec<Sample>> {
        self.latest.read().unwrap().clone()
    }

    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms.load(Ordering::Relaxed))
    }

    /// A new interval (SIGHUP), taking effect now: the waiting sampler
    /// wakes, makes a pass and waits the new interval.
    pub fn set_interval(&self, d: Duration) {
        self.interval_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
        *self.wake.0.lock().unwrap() = true;
        self.wake.1.notify_one();
    }

    pub fn set_sink(&self, f: Sink) {
        *self.sink.lock().unwrap() = Some(f);
    }

    /// The sampler loop; returns when `targets` returns None (the owner is
    /// gone).
    pub fn run(&self, mut targets: impl FnMut() -> Option<Vec<Target>>) {
        let mut open: HashMap<String, (Arc<str>, StatFiles)> = HashMap::new();
        loop {
            let Some(list) = targets() else { return };
            let t0 = Instant::now();
            let cpu0 = thread_cpu_us();
            let mut out = Vec::with_capacity(list.len());
            let mut seen = std::collections::HashSet::with_capacity(list.len());
            for t in list {
                let name = t.labels.container.clone();
                let files = match open.get_mut(&name) {
                    Some((g, f)) if *g == t.generation && f.is_live() => f,
                    _ => {
                        let f = StatFiles::open(&t.cgroup);
                        open.insert(name.clone(), (t.generation.clone(), f));
                        &mut open.get_mut(&name).expect("just inserted").1
                    }
                };
                if !files.is_live() {
                    continue;
                }
                let mut stats = files.read();
                stats.disk = t.disk.as_ref().and_then(|d| layer_use(&d.0, &d.1));
                if !files.ok {
                    // the cgroup went (or is going): no all-zero sample
                    // (Prometheus would read it as a counter reset)
                    open.remove(&name);
                    continue;
                }
                out.push(Sample {
                    labels: t.labels,
                    at_ms: chrono::Utc::now().timestamp_millis(),
                    stats,
                });
                seen.insert(name);
            }
            open.retain(|k, _| seen.contains(k));
            let n = out.len() as u64;
            let pass = Arc::new(out);
            *self.latest.write().unwrap() = pass.clone();
            if let Some(sink) = self.sink.lock().unwrap().as_ref() {
                sink(pass);
            }
            self.passes.inc();
            self.samples.inc_by(n);
            self.last_pass.set(t0.elapsed().as_secs_f64());
            self.cpu
                .inc_by(thread_cpu_us().saturating_sub(cpu0) as f64 / 1e6);
            let wait = Duration::from_millis(self.interval_ms.load(Ordering::Relaxed));
            let g = self.wake.0.lock().unwrap();
            let (mut g, _) = self
                .wake
                .1
                .wait_timeout_while(g, wait, |poked| !*poked)
                .unwrap();
            *g = false;
        }
    }
}

/// CPU time of the calling thread, microseconds.
pub fn thread_cpu_us() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
        .unwrap_or(0)
}
