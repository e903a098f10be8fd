//! The event bus: lifecycle events go to `/v1/events` subscribers and are
//! appended to the event journal (`<state>/events`, 10 MiB x 3, like a
//! container's log), from which the shipper sends them to the collector.
//! Publishing appends to the journal at once: call it from a blocking
//! thread (the supervisor publishes from the blocking part of each
//! operation), never on the async reactor.

use crate::model::{Action, Event};
use crate::telemetry::logs::LogWriter;
use std::path::Path;
use std::sync::Mutex;
use tokio::sync::broadcast;

pub struct EventBus {
    tx: broadcast::Sender<Event>,
    journal: Mutex<LogWriter>,
}

impl EventBus {
    pub fn open(journal_dir: &Path) -> std::io::Result<EventBus> {
        Ok(EventBus {
            tx: broadcast::channel(1024).0,
            // a journal that cannot be written now (a full or read-only
            // disk) is retried on each event; the agent starts anyway
            journal: Mutex::new(LogWriter::open_resilient(journal_dir, 10 << 20, 3)),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Appends `ev` to the journal and publishes it (blocking: a write; a
    /// failure to append is logged, the live subscribers still get it).
    pub fn publish(&self, ev: Event) {
        let line = serde_json::to_vec(&ev).expect("events serialize");
        if let Err(e) = self.journal.lock().unwrap().write("event", &line, false) {
            tracing::error!(error = %e, "cannot append to the event journal");
        }
        let _ = self.tx.send(ev);
    }

    /// An event about `container`, stamped now (blocking, as [`Self::publish`]).
    pub fn emit(
        &self,
        container: &str,
        action: Action,
        exit_code: Option<i32>,
        signal: Option<i32>,
    ) {
        let mut ev = Event::now(container, action);
        ev.exit_code = exit_code;
        ev.signal = signal;
        self.publish(ev);
    }
}
