//! One source's state in the shipper: its cursors (acknowledged, persisted,
//! read), its rate window, and what of it has been counted.

use super::{ShipCounters, Source};
use crate::telemetry::cursor::{load_cursor, Cursor, CURSOR_FILE};
use crate::telemetry::logs::Record;
use crate::telemetry::logs::NOTE_STREAM;

pub(super) struct Src {
    pub s: Source,
    /// What the collector has (persisted).
    pub acked: Cursor,
    pub saved: Cursor,
    /// Where reading has got to (ahead of `acked` by what is in flight).
    pub read: Cursor,
    /// The rate cap counts records by the second they were written in
    /// (their `ts`), so a backlog read fast after an outage is not capped
    /// for being read fast: (that second, records seen in it).
    window: (String, u64),
    /// ts of the oldest record sent and not yet acknowledged.
    pub oldest_unacked: Option<String>,
    /// Highest record number already counted (a record read again after a
    /// reconnect is not counted as dropped twice).
    seen: u64,
}

impl Src {
    /// From its persisted cursor. Without one, a container made since the
    /// shipper `started` is read from record 1 (a gap is a drop); one older
    /// than that had logs before shipping was on, so its numbering starts
    /// at the first record read.
    pub fn new(s: Source, started: &str) -> Src {
        let c = load_cursor(&s.dir).unwrap_or(Cursor {
            segment: 0,
            offset: 0,
            next: u64::from(s.generation.as_str() > started),
        });
        Src {
            s,
            acked: c,
            saved: c,
            read: c,
            window: (String::new(), 0),
            oldest_unacked: None,
            seen: c.next.saturating_sub(1),
        }
    }

    /// Moves reading past `r` (read with the cursor `after` it): counts and
    /// announces the records the size cap dropped before it, and checks the
    /// rate cap. Returns the cursor after it and whether it is over the cap.
    pub fn take(
        &mut self,
        r: &Record,
        mut after: Cursor,
        rate: u64,
        counters: &ShipCounters,
        announce: &dyn Fn(&str, u64, &str),
    ) -> (Cursor, bool) {
        let from = self.read.next.max(self.seen + 1);
        if r.seq > from && self.read.next > 0 {
            let gap = r.seq - from;
            // a writer's note right after the gap says how much of it the
            // disk lost; the rest the size cap deleted before it was read
            let disk = match r.stream == NOTE_STREAM {
                true => r.dropped.unwrap_or(0).min(gap),
                false => 0,
            };
            for (reason, n) in [("disk_full", disk), ("size_cap", gap - disk)] {
                if n == 0 {
                    continue;
                }
                counters.drop_n(&self.s.container, reason, n);
                if !self.s.container.is_empty() {
                    announce(&self.s.container, n, reason);
                }
            }
        }
        let first_time = r.seq > self.seen;
        self.seen = self.seen.max(r.seq);
        if r.seq > 0 {
            after.next = r.seq + 1;
        }
        self.read = after;
        let capped = rate > 0 && over_rate(&mut self.window, &r.ts, rate);
        if capped && first_time {
            counters.drop_n(&self.s.container, "rate", 1);
        }
        (after, capped)
    }

    /// Milliseconds since the oldest record in flight was written (0: none).
    pub fn lag_ms(&self) -> u64 {
        let Some(ts) = &self.oldest_unacked else {
            return 0;
        };
        let Ok(t) = chrono::DateTime::parse_from_rfc3339(ts) else {
            return 0;
        };
        (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
            .num_milliseconds()
            .max(0) as u64
    }

    /// Persists the acknowledged cursor if it moved (not into a directory
    /// that is gone: the container was removed).
    pub fn save(&mut self) {
        if self.acked != self.saved && self.s.dir.is_dir() {
            let data = serde_json::to_vec(&self.acked).expect("serializes");
            if crate::fsutil::write_atomic(&self.s.dir.join(CURSOR_FILE), &data, false).is_ok() {
                self.saved = self.acked;
            }
        }
    }
}

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
