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

use super::cursor::{backlog, load_cursor, read_records, Cursor, CURSOR_FILE};
use super::relp::{Frame, Relp};
use super::syslog::rfc5424;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Write};
use std::path::PathBuf;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
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

    /// Registers the shipper's series.
    pub fn register(&self, r: &mut Registry) {
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

struct Src {
    s: Source,
    /// What the collector has (persisted).
    acked: Cursor,
    saved: Cursor,
    /// Where reading has got to (ahead of `acked` by what is in flight).
    read: Cursor,
    /// The rate cap counts records by the second they were written in
    /// (their `ts`), so a backlog read fast after an outage is not capped
    /// for being read fast: (that second, records seen in it).
    window: (String, u64),
    /// ts of the oldest record sent and not yet acknowledged.
    oldest_unacked: Option<String>,
    /// Highest record number already counted (a record read again after a
    /// reconnect is not counted as dropped twice).
    seen: u64,
}

struct InFlight {
    /// RELP transaction (None: plain syslog, or not sent at all).
    txnr: Option<u32>,
    /// The source's generation when sent, and the record's number.
    generation: String,
    seq: u64,
    /// A message was sent (false: skipped by the rate cap).
    msg: bool,
    src: String,
    after: Cursor,
    acked: bool,
}

/// Records per source per round (fairness), and messages in flight.
const BATCH: usize = 256;
const WINDOW: usize = 2048;

/// Counts a record in the second of its timestamp; true when that second
/// already had `rate` records.
fn over_rate(window: &mut (String, u64), ts: &str, rate: u64) -> bool {
    let second = ts.get(..19).unwrap_or(ts);
    if window.0 != second {
        *window = (second.to_string(), 0);
    }
    window.1 += 1;
    window.1 > rate
}

enum Conn {
    Relp(Relp),
    Syslog(Box<dyn Write + Send>),
}

/// The shipper loop. `sources` lists what to ship (None: stop);
/// `announce(container, n)` reports records the size cap dropped.
pub fn run(
    settings: Settings,
    counters: &ShipCounters,
    mut sources: impl FnMut() -> Option<Vec<Source>>,
    announce: impl Fn(&str, u64),
) {
    let mut srcs: HashMap<String, Src> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut conn: Option<Conn> = None;
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut backoff = Duration::from_millis(200);
    let mut failing: Option<String> = None;
    let mut last_list = Instant::now() - Duration::from_secs(10);
    let mut last_save = Instant::now();
    let mut out = Vec::with_capacity(1 << 20);
    let mut refusals: HashMap<(String, u64), u32> = HashMap::new();
    let started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    loop {
        if last_list.elapsed() >= Duration::from_millis(500) {
            last_list = Instant::now();
            let Some(list) = sources() else { return };
            let keep: std::collections::HashSet<String> =
                list.iter().map(|s| s.container.clone()).collect();
            srcs.retain(|k, _| keep.contains(k));
            for s in list {
                // re-created under the same name, or its logs moved: start
                // over from its own cursor; acks of the old one are ignored
                if srcs.get(&s.container).is_some_and(|old| old.s != s) {
                    srcs.remove(&s.container);
                }
                if !srcs.contains_key(&s.container) {
                    // no cursor: a container made since the shipper
                    // started is read from record 1 (a gap is a drop); one
                    // older than that had logs before shipping was on, so
                    // its numbering starts at the first record read
                    let c = load_cursor(&s.dir).unwrap_or(Cursor {
                        segment: 0,
                        offset: 0,
                        next: u64::from(s.generation.as_str() > started.as_str()),
                    });
                    srcs.insert(
                        s.container.clone(),
                        Src {
                            s,
                            acked: c,
                            saved: c,
                            read: c,
                            window: (String::new(), 0),
                            oldest_unacked: None,
                            seen: c.next.saturating_sub(1),
                        },
                    );
                }
            }
            order = srcs.keys().cloned().collect();
            order.sort();
            let bl: u64 = srcs.values().map(|s| backlog(&s.s.dir, &s.acked)).sum();
            counters.backlog_bytes.set(bl as i64);
        }
        if conn.is_none() {
            let c = match &settings.sink {
                SinkAddr::Relp(a) => Relp::open(a, Duration::from_secs(5)).map(Conn::Relp),
                SinkAddr::Syslog(a) => match &settings.tls {
                    Some(cfg) => super::tls::connect(a, cfg)
                        .map(|s| Conn::Syslog(Box::new(s) as Box<dyn Write + Send>)),
                    None => connect(a).map(|s| Conn::Syslog(Box::new(s) as Box<dyn Write + Send>)),
                },
            };
            match c {
                Ok(c) => {
                    if failing.take().is_some() {
                        tracing::info!(sink = ?settings.sink, "log shipping: connected again");
                    }
                    backoff = Duration::from_millis(200);
                    // what was in flight is sent again
                    let resent = inflight
                        .iter()
                        .filter(|i| i.txnr.is_some() && !i.acked)
                        .count();
                    counters.count("retried", resent as u64);
                    inflight.clear();
                    for s in srcs.values_mut() {
                        s.read = s.acked;
                        s.oldest_unacked = None;
                    }
                    conn = Some(c);
                }
                Err(e) => {
                    fail(&mut failing, &settings.sink, &e);
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected");
        // one round: a batch from each source, in turn
        out.clear();
        let mut sent = 0;
        for name in &order {
            if inflight.len() >= WINDOW {
                break;
            }
            let Some(src) = srcs.get_mut(name) else {
                continue;
            };
            let mut cur = src.read;
            let recs = read_records(&src.s.dir, &mut cur, BATCH.min(WINDOW - inflight.len()));
            if recs.is_empty() {
                src.read = cur;
                continue;
            }
            counters.count("read", recs.len() as u64);
            for (r, mut after) in recs {
                let from = src.read.next.max(src.seen + 1);
                if r.seq > from && src.read.next > 0 {
                    let n = r.seq - from;
                    counters.drop_n(&src.s.container, "size_cap", n);
                    if !src.s.container.is_empty() {
                        announce(&src.s.container, n);
                    }
                }
                let first_time = r.seq > src.seen;
                src.seen = src.seen.max(r.seq);
                if r.seq > 0 {
                    after.next = r.seq + 1;
                }
                src.read = after;
                let capped = settings.rate > 0 && over_rate(&mut src.window, &r.ts, settings.rate);
                if capped {
                    if first_time {
                        counters.drop_n(&src.s.container, "rate", 1);
                    }
                    inflight.push_back(InFlight {
                        txnr: None,
                        generation: src.s.generation.clone(),
                        seq: r.seq,
                        msg: false,
                        src: name.clone(),
                        after,
                        acked: true,
                    });
                    continue;
                }
                let msg = rfc5424(&r, &src.s, &settings.host);
                let txnr = match c {
                    Conn::Relp(relp) => Some(relp.syslog(&mut out, &msg)),
                    Conn::Syslog(_) => {
                        out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
                        out.extend_from_slice(&msg);
                        None
                    }
                };
                if src.oldest_unacked.is_none() {
                    src.oldest_unacked = Some(r.ts.clone());
                }
                inflight.push_back(InFlight {
                    txnr,
                    generation: src.s.generation.clone(),
                    seq: r.seq,
                    msg: true,
                    src: name.clone(),
                    after,
                    acked: txnr.is_none(),
                });
                sent += 1;
            }
        }
        let res: io::Result<()> = (|| {
            match c {
                Conn::Relp(relp) => {
                    if !out.is_empty() {
                        relp.send(&out)?;
                    }
                    // acknowledgements: wait longer when the window is full
                    // or nothing new was sent
                    let waiting = inflight.iter().any(|i| !i.acked);
                    let first = if !waiting {
                        Duration::from_millis(0)
                    } else if sent == 0 || inflight.len() >= WINDOW {
                        Duration::from_secs(10)
                    } else {
                        Duration::from_millis(1)
                    };
                    let mut wait = first;
                    loop {
                        if !inflight.iter().any(|i| !i.acked) {
                            break;
                        }
                        match relp.wait(wait)? {
                            Some(Frame::Rsp(t, 200, _)) => {
                                if let Some(i) = inflight.iter_mut().find(|i| i.txnr == Some(t)) {
                                    i.acked = true;
                                }
                            }
                            Some(Frame::Rsp(t, code, text)) => {
                                // refused: resent after a reconnect; the
                                // third refusal of a record skips it (one
                                // message must not hold up every source)
                                let Some(i) = inflight.iter_mut().find(|i| i.txnr == Some(t))
                                else {
                                    continue;
                                };
                                let key = (i.src.clone(), i.seq);
                                let n = refusals.entry(key.clone()).or_insert(0);
                                *n += 1;
                                if *n < 3 {
                                    return Err(io::Error::other(format!(
                                        "message {t} refused: {code} {text}"
                                    )));
                                }
                                refusals.remove(&key);
                                i.acked = true;
                                i.msg = false;
                                counters.drop_n(&key.0, "refused", 1);
                                tracing::warn!(container = %key.0, seq = key.1, code, %text, "log shipping: the collector refused a record three times; skipped");
                            }
                            Some(Frame::ServerClose) => {
                                return Err(io::Error::other("the collector closed the session"))
                            }
                            None if wait == first && first >= Duration::from_secs(10) => {
                                return Err(io::Error::new(
                                    io::ErrorKind::TimedOut,
                                    "no acknowledgement within 10 s",
                                ))
                            }
                            None => break,
                        }
                        wait = Duration::from_millis(0);
                    }
                    Ok(())
                }
                Conn::Syslog(s) => {
                    if !out.is_empty() {
                        s.write_all(&out)?;
                        s.flush()?;
                    }
                    Ok(())
                }
            }
        })();
        if let Err(e) = res {
            fail(&mut failing, &settings.sink, &e);
            conn = None;
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(10));
            continue;
        }
        // acknowledged, in order: cursors move
        while inflight.front().is_some_and(|i| i.acked) {
            let i = inflight.pop_front().expect("non-empty");
            if let Some(s) = srcs
                .get_mut(&i.src)
                .filter(|s| s.s.generation == i.generation)
            {
                s.acked = i.after;
                if i.msg {
                    counters.count("shipped", 1);
                }
            }
        }
        let mut lag = 0;
        let busy: std::collections::HashSet<&str> =
            inflight.iter().map(|i| i.src.as_str()).collect();
        for s in srcs.values_mut() {
            if !busy.contains(s.s.container.as_str()) {
                s.oldest_unacked = None;
            }
            if let Some(ts) = &s.oldest_unacked {
                if let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) {
                    lag = lag.max(
                        (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                            .num_milliseconds()
                            .max(0) as u64,
                    );
                }
            }
        }
        counters.lag.set(lag as f64 / 1e3);
        if last_save.elapsed() >= Duration::from_millis(200) || sent == 0 {
            last_save = Instant::now();
            for s in srcs.values_mut() {
                if s.acked != s.saved && s.s.dir.is_dir() {
                    let data = serde_json::to_vec(&s.acked).expect("serializes");
                    if crate::fsutil::write_atomic(&s.s.dir.join(CURSOR_FILE), &data, false).is_ok()
                    {
                        s.saved = s.acked;
                    }
                }
            }
        }
        if sent == 0 && inflight.is_empty() {
            // idle: each source costs an open and a stat per look
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A TCP connection with a 5 s connect timeout and a 10 s write timeout (a
/// receiver that stops reading must not hold the shipper forever).
pub fn connect(addr: &str) -> io::Result<std::net::TcpStream> {
    let sa = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| io::Error::other(format!("{addr}: no address")))?;
    let s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(5))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}

fn fail(state: &mut Option<String>, sink: &SinkAddr, e: &io::Error) {
    let what = e.to_string();
    if state.as_deref() != Some(what.as_str()) {
        tracing::warn!(sink = ?sink, error = %what, "log shipping: collector unavailable; retrying with backoff, nothing is lost while it fits on disk");
        *state = Some(what);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_cap_counts_by_the_second_a_record_was_written() {
        let mut w = (String::new(), 0);
        let at = |s: u32| format!("2026-01-01T00:00:{s:02}.123456Z");
        // 3 per second: the 4th of second 0 is over, second 1 starts afresh
        let over: Vec<bool> = [0, 0, 0, 0, 1, 1, 1, 1, 1]
            .iter()
            .map(|s| over_rate(&mut w, &at(*s), 3))
            .collect();
        assert_eq!(
            over,
            [false, false, false, true, false, false, false, true, true]
        );
        // a backlog of 1000 records written over 10 s at 100/s, read at
        // once: none is over a cap of 100/s
        let mut w = (String::new(), 0);
        assert!((0..1000).all(|i| !over_rate(&mut w, &at(i / 100), 100)));
    }
}
