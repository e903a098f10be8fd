//! Log shipping: every container's log segments (and the agent's event
//! journal) to the collector as RFC 5424 syslog messages, over RELP (each
//! message acknowledged) or plain TCP syslog (octet-counted framing).
//!
//! Each source has a cursor (segment, offset, next record number) persisted
//! beside its segments; it moves only past what the collector acknowledged,
//! so after a collector outage or an agent SIGKILL delivery resumes from
//! there: at least once, in order per source. Sources are served round-robin,
//! a bounded batch each, so a flooding container never holds up the others;
//! a per-source rate cap skips (and counts) lines beyond it; records the size
//! cap deleted before they were sent show as a gap in their numbers, counted
//! and announced as an event. Runs on its own thread with blocking I/O.

mod conn;
mod shipper;
mod source;
mod window;

pub use conn::connect;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shipper::Shipper;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// Where messages go.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkAddr {
    Relp(String),
    Syslog(String),
}

/// A log to ship: a container's, or the agent's events (`container` empty).
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub container: String,
    pub app: String,
    pub version: String,
    pub dir: PathBuf,
    /// Changes when a container is re-created under the same name.
    pub generation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DroppedLabels {
    pub container: String,
    pub reason: String,
    pub host: String,
}

/// The shipper's counters, for /metrics.
#[derive(Debug, Default)]
pub struct ShipCounters {
    /// Records by result: read, shipped (acknowledged), retried.
    pub records: Family<ResultLabels, Counter>,
    pub backlog_bytes: Gauge,
    /// Age of the oldest record sent and not yet acknowledged, seconds.
    pub lag: Gauge<f64, AtomicU64>,
    /// Records not shipped, by container and reason.
    pub dropped: Family<DroppedLabels, Counter>,
    /// The host label of `dropped`.
    pub host: String,
}

impl ShipCounters {
    pub fn new(host: String) -> ShipCounters {
        ShipCounters {
            host,
            ..Default::default()
        }
    }

    fn count(&self, result: &str, n: u64) {
        self.records
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc_by(n);
    }

    fn drop_n(&self, container: &str, reason: &str, n: u64) {
        self.dropped
            .get_or_create(&DroppedLabels {
                container: container.into(),
                reason: reason.into(),
                host: self.host.clone(),
            })
            .inc_by(n);
    }

    /// Registers the shipper's series (every result shown from the start).
    pub fn register(&self, r: &mut Registry) {
        for result in ["read", "shipped", "retried"] {
            self.count(result, 0);
        }
        r.register("hydra_log_records", "Log records (and events) read from the logs, shipped (acknowledged by the collector), sent again after a reconnect.", self.records.clone());
        r.register("hydra_log_records_dropped", "Log records not shipped, by container and reason (rate: over collector.log_rate_lines; size_cap: deleted by the log size cap before they were sent; refused: refused by the collector three times).", self.dropped.clone());
        r.register(
            "hydra_log_backlog_bytes",
            "Log bytes not yet acknowledged by the collector.",
            self.backlog_bytes.clone(),
        );
        r.register(
            "hydra_log_lag_seconds",
            "Age of the oldest record sent and not yet acknowledged.",
            self.lag.clone(),
        );
    }
}

pub struct Settings {
    pub sink: SinkAddr,
    /// TLS to the syslog receiver (not used with RELP).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    pub host: String,
    /// Lines per second per source; 0: no cap.
    pub rate: u64,
}

/// The shipper loop. `sources` lists what to ship (None: stop);
/// `announce(container, n, reason)` reports records dropped before they
/// were sent: by the size cap (`size_cap`) or a full disk (`disk_full`).
pub fn run(
    settings: Settings,
    counters: &ShipCounters,
    mut sources: impl FnMut() -> Option<Vec<Source>>,
    announce: impl Fn(&str, u64, &str),
) {
    let mut shipper = Shipper::new(settings, counters);
    let mut last_list = Instant::now() - Duration::from_secs(10);
    loop {
        if last_list.elapsed() >= Duration::from_millis(500) {
            last_list = Instant::now();
            let Some(list) = sources() else { return };
            shipper.refresh(list);
        }
        shipper.round(&announce);
    }
}
