//! The shipper's state between rounds and the phases of a round: refresh
//! the sources, connect, send a batch from each, take the acknowledgements,
//! move and persist the cursors.

use super::conn::Conn;
use super::source::Src;
use super::window::{InFlight, Window, WINDOW};
use super::{Settings, ShipCounters, SinkAddr, Source};
use crate::telemetry::cursor::{backlog, read_records};
use crate::telemetry::syslog::rfc5424;
use std::collections::{HashMap, HashSet};
use std::io;
use std::time::{Duration, Instant};

/// Records per source per round, so a flooding source never holds up the
/// others.
const BATCH: usize = 256;

const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

pub(super) struct Shipper<'a> {
    settings: Settings,
    counters: &'a ShipCounters,
    srcs: HashMap<String, Src>,
    /// The round-robin order: source names, sorted.
    order: Vec<String>,
    conn: Option<Conn>,
    window: Window,
    backoff: Duration,
    /// The last connection error, logged once (not at every retry).
    failing: Option<String>,
    last_save: Instant,
    /// A round's outgoing bytes (kept to reuse the allocation).
    out: Vec<u8>,
    /// When this shipper started (RFC 3339), to tell which sources without
    /// a cursor are new.
    started: String,
}

impl<'a> Shipper<'a> {
    pub fn new(settings: Settings, counters: &'a ShipCounters) -> Shipper<'a> {
        Shipper {
            settings,
            counters,
            srcs: HashMap::new(),
            order: Vec::new(),
            conn: None,
            window: Window::default(),
            backoff: FIRST_BACKOFF,
            failing: None,
            last_save: Instant::now(),
            out: Vec::with_capacity(1 << 20),
            started: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        }
    }

    /// Takes the current list of sources: drops the gone ones, adds the new.
    pub fn refresh(&mut self, list: Vec<Source>) {
        let keep: HashSet<String> = list.iter().map(|s| s.container.clone()).collect();
        self.srcs.retain(|k, _| keep.contains(k));
        for s in list {
            // re-created under the same name, or its logs moved: start over
            // from its own cursor; acks of the old one are ignored
            if self.srcs.get(&s.container).is_some_and(|old| old.s != s) {
                self.srcs.remove(&s.container);
            }
            if !self.srcs.contains_key(&s.container) {
                let name = s.container.clone();
                self.srcs.insert(name, Src::new(s, &self.started));
            }
        }
        self.order = self.srcs.keys().cloned().collect();
        self.order.sort();
        let bl: u64 = self
            .srcs
            .values()
            .map(|s| backlog(&s.s.dir, &s.acked))
            .sum();
        self.counters.backlog_bytes.set(bl as i64);
    }

    /// One round. A failed connect or exchange backs off (sleeps) and ends
    /// it; the next round connects again.
    pub fn round(&mut self, announce: &dyn Fn(&str, u64, &str)) {
        if !self.connect() {
            return;
        }
        let sent = self.fill(announce);
        let conn = self.conn.as_mut().expect("connected");
        if let Err(e) = conn.exchange(&self.out, sent, &mut self.window, self.counters) {
            self.back_off(&e);
            return;
        }
        self.settle();
        self.update_lag();
        if self.last_save.elapsed() >= Duration::from_millis(200) || sent == 0 {
            self.last_save = Instant::now();
            self.srcs.values_mut().for_each(Src::save);
        }
        if sent == 0 && self.window.is_empty() {
            // idle: each source costs an open and a stat per look
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Connected (or connects now); false when that failed.
    fn connect(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        match Conn::open(&self.settings) {
            Ok(c) => {
                if self.failing.take().is_some() {
                    tracing::info!(sink = ?self.settings.sink, "log shipping: connected again");
                }
                self.backoff = FIRST_BACKOFF;
                // what was in flight is read and sent again
                let resent = self.window.restart();
                self.counters.count("retried", resent as u64);
                for s in self.srcs.values_mut() {
                    s.read = s.acked;
                    s.oldest_unacked = None;
                }
                self.conn = Some(c);
                true
            }
            Err(e) => {
                self.back_off(&e);
                false
            }
        }
    }

    fn back_off(&mut self, e: &io::Error) {
        fail(&mut self.failing, &self.settings.sink, e);
        self.conn = None;
        std::thread::sleep(self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Frames a batch from each source, in turn, into `out` while the
    /// window has room; returns the number of messages.
    fn fill(&mut self, announce: &dyn Fn(&str, u64, &str)) -> usize {
        self.out.clear();
        let conn = self.conn.as_mut().expect("connected");
        let mut sent = 0;
        for name in &self.order {
            if self.window.is_full() {
                break;
            }
            let Some(src) = self.srcs.get_mut(name) else {
                continue;
            };
            let mut cur = src.read;
            let room = BATCH.min(WINDOW - self.window.len());
            let recs = read_records(&src.s.dir, &mut cur, room);
            if recs.is_empty() {
                src.read = cur;
                continue;
            }
            self.counters.count("read", recs.len() as u64);
            for (r, after) in recs {
                let (after, capped) =
                    src.take(&r, after, self.settings.rate, self.counters, announce);
                // one over the rate cap is settled unsent
                let mut i = InFlight {
                    txnr: None,
                    generation: src.s.generation.clone(),
                    seq: r.seq,
                    msg: !capped,
                    src: name.clone(),
                    after,
                    acked: true,
                };
                if !capped {
                    let msg = rfc5424(&r, &src.s, &self.settings.host);
                    i.txnr = conn.frame(&mut self.out, &msg);
                    i.acked = i.txnr.is_none();
                    if src.oldest_unacked.is_none() {
                        src.oldest_unacked = Some(r.ts.clone());
                    }
                    sent += 1;
                }
                self.window.push(i);
            }
        }
        sent
    }

    /// Acknowledged, in order: cursors move (not those of a source
    /// re-created since: its generation differs).
    fn settle(&mut self) {
        while let Some(i) = self.window.pop_acked() {
            if let Some(s) = self
                .srcs
                .get_mut(&i.src)
                .filter(|s| s.s.generation == i.generation)
            {
                s.acked = i.after;
                if i.msg {
                    self.counters.count("shipped", 1);
                }
            }
        }
    }

    fn update_lag(&mut self) {
        let busy = self.window.busy();
        let mut lag = 0;
        for s in self.srcs.values_mut() {
            if !busy.contains(s.s.container.as_str()) {
                s.oldest_unacked = None;
            }
            lag = lag.max(s.lag_ms());
        }
        self.counters.lag.set(lag as f64 / 1e3);
    }
}

/// Logs a connection error once, not at every retry.
fn fail(state: &mut Option<String>, sink: &SinkAddr, e: &io::Error) {
    let what = e.to_string();
    if state.as_deref() != Some(what.as_str()) {
        tracing::warn!(sink = ?sink, error = %what, "log shipping: collector unavailable; retrying with backoff, nothing is lost while it fits on disk");
        *state = Some(what);
    }
}
