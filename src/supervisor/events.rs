//! The event bus: lifecycle events go to `/v1/events` subscribers and are
//! appended to the event journal (`<state>/events`, 10 MiB x 3, like a
//! container's log), from which the shipper sends them to the collector.
//! The journal is written by a thread of its own, so publishing never
//! blocks the async reactor on the disk.

use crate::model::{Action, Event};
use crate::telemetry::logs::LogWriter;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Mutex;
use tokio::sync::broadcast;

enum Journal {
    Line(Vec<u8>),
    /// Answered once every line sent before it is written.
    Flush(mpsc::SyncSender<()>),
}

pub struct EventBus {
    tx: broadcast::Sender<Event>,
    journal: Mutex<mpsc::Sender<Journal>>,
}

impl EventBus {
    pub fn open(journal_dir: &Path) -> std::io::Result<EventBus> {
        let mut w = LogWriter::open(journal_dir, 10 << 20, 3)?;
        let (jtx, jrx) = mpsc::channel::<Journal>();
        std::thread::Builder::new()
            .name("hydra-journal".into())
            .spawn(move || {
                for m in jrx {
                    match m {
                        Journal::Line(l) => {
                            if let Err(e) = w.write("event", &l, false) {
                                tracing::error!(error = %e, "cannot append to the event journal");
                            }
                        }
                        Journal::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })?;
        Ok(EventBus {
            tx: broadcast::channel(1024).0,
            journal: Mutex::new(jtx),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// Publishes `ev` and queues it for the journal.
    pub fn publish(&self, ev: Event) {
        let line = serde_json::to_vec(&ev).expect("events serialize");
        let _ = self.journal.lock().unwrap().send(Journal::Line(line));
        let _ = self.tx.send(ev);
    }

    /// An event about `container`, stamped now.
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

    /// Blocks until every event published so far is in the journal (at a
    /// clean stop; call from a blocking thread).
    pub fn flush(&self) {
        let (done_tx, done_rx) = mpsc::sync_channel(1);
        if self
            .journal
            .lock()
            .unwrap()
            .send(Journal::Flush(done_tx))
            .is_ok()
        {
            let _ = done_rx.recv();
        }
    }
}
