//! HTTP health checks of running containers: one probe per interval from
//! inside the container's network namespace (through the runtime), the
//! result kept in its entry, `unhealthy` announced once.

use super::registry::Entry;
use super::Supervisor;
use crate::model::{Action, Health, HealthSpec, ProcRef};
use std::sync::Arc;
use std::time::Duration;

impl Supervisor {
    /// One probe (blocking); `unhealthy` announced when it turns so.
    fn check_once(&self, e: &Entry, h: &HealthSpec, init: ProcRef) {
        let t = Duration::from_secs(h.timeout_s);
        let res = self.runtime.probe(init, h.port, &h.http_path, t);
        let turned = e.health.lock().unwrap().record(res.is_ok(), h.retries);
        if turned {
            let name = e.rec.lock().unwrap().name().to_string();
            let why = res.err().map(|e| e.to_string()).unwrap_or_default();
            tracing::warn!(container = %name, reason = %why, "container is unhealthy");
            self.events.emit(&name, Action::Unhealthy, None, None);
        }
    }

    /// Probes `init`'s container every `h.interval_s` while it runs.
    pub(super) fn health_loop(self: &Arc<Self>, e: Arc<Entry>, h: HealthSpec, init: ProcRef) {
        let me = self.clone();
        tokio::spawn(async move {
            *e.health.lock().unwrap() = Health::initial(true);
            loop {
                tokio::time::sleep(Duration::from_secs(h.interval_s)).await;
                let current = e.rec.lock().unwrap().running().map(|r| r.init);
                if current != Some(init) {
                    return;
                }
                let (me2, e2, h2) = (me.clone(), e.clone(), h.clone());
                // the probe, and the event it may cause, on a blocking thread
                let _ = tokio::task::spawn_blocking(move || me2.check_once(&e2, &h2, init)).await;
            }
        });
    }
}
