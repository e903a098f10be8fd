//! The records between reading and acknowledgement, oldest first. Cursors
//! move only past a prefix of acknowledged ones, so the order here is the
//! order a source's cursor may advance in.

use super::ShipCounters;
use crate::telemetry::cursor::Cursor;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;

/// Messages in flight at most.
pub(super) const WINDOW: usize = 2048;

/// A record read and not yet settled.
pub(super) struct InFlight {
    /// RELP transaction (None: plain syslog, or not sent at all).
    pub txnr: Option<u32>,
    /// The source's generation when sent, and the record's number.
    pub generation: String,
    pub seq: u64,
    /// A message was sent (false: skipped by the rate cap).
    pub msg: bool,
    pub src: String,
    pub after: Cursor,
    pub acked: bool,
}

#[derive(Default)]
pub(super) struct Window {
    queue: VecDeque<InFlight>,
    /// Refusals so far per (source, record number); kept across reconnects,
    /// since a refused record is sent again after one.
    refusals: HashMap<(String, u64), u32>,
}

impl Window {
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.queue.len() >= WINDOW
    }

    pub fn push(&mut self, i: InFlight) {
        self.queue.push_back(i);
    }

    /// Some message still awaits its acknowledgement.
    pub fn waiting(&self) -> bool {
        self.queue.iter().any(|i| !i.acked)
    }

    /// The sources with records in flight.
    pub fn busy(&self) -> HashSet<&str> {
        self.queue.iter().map(|i| i.src.as_str()).collect()
    }

    /// After a reconnect everything is read (and sent) again: forgets what
    /// was in flight; returns how many RELP messages go out again.
    pub fn restart(&mut self) -> usize {
        let resent = self
            .queue
            .iter()
            .filter(|i| i.txnr.is_some() && !i.acked)
            .count();
        self.queue.clear();
        resent
    }

    pub fn ack(&mut self, txnr: u32) {
        if let Some(i) = self.queue.iter_mut().find(|i| i.txnr == Some(txnr)) {
            i.acked = true;
        }
    }

    /// The collector refused message `txnr`. The first two refusals of a
    /// record are an error (it is sent again after a reconnect); the third
    /// skips it, counted, since one message must not hold up every source.
    /// Ok(false): no such message in flight.
    pub fn refuse(
        &mut self,
        txnr: u32,
        code: u16,
        text: &str,
        counters: &ShipCounters,
    ) -> io::Result<bool> {
        let Some(i) = self.queue.iter_mut().find(|i| i.txnr == Some(txnr)) else {
            return Ok(false);
        };
        let key = (i.src.clone(), i.seq);
        let n = self.refusals.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n < 3 {
            return Err(io::Error::other(format!(
                "message {txnr} refused: {code} {text}"
            )));
        }
        self.refusals.remove(&key);
        i.acked = true;
        i.msg = false;
        counters.drop_n(&key.0, "refused", 1);
        tracing::warn!(container = %key.0, seq = key.1, code, %text, "log shipping: the collector refused a record three times; skipped");
        Ok(true)
    }

    /// The oldest record, once it is acknowledged (or needs none).
    pub fn pop_acked(&mut self) -> Option<InFlight> {
        if self.queue.front().is_some_and(|i| i.acked) {
            self.queue.pop_front()
        } else {
            None
        }
    }
}
