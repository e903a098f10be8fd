//! HTTP health checks of running containers: one probe per interval from
//! inside the container's network namespace (through the runtime), the
//! result kept in its entry, `unhealthy` announced once.

use super::registry::Entry;
use super::Supervisor;
use crate::model::{Action, Health, HealthSpec, ProcRef};
use std::sync::Arc;
use std::time::Duration;

impl Supervisor {
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
                let (rt, path) = (me.runtime.clone(), h.http_path.clone());
                let t = Duration::from_secs(h.timeout_s);
                let res = tokio::task::spawn_blocking(move || rt.probe(init, h.port, &path, t))
                    .await
                    .map_err(|_| "the probe panicked".to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()));
                let turned = e.health.lock().unwrap().record(res.is_ok(), h.retries);
                if turned {
                    let name = e.rec.lock().unwrap().name().to_string();
                    let why = res.err().unwrap_or_default();
                    tracing::warn!(container = %name, reason = %why, "container is unhealthy");
                    me.events.emit(&name, Action::Unhealthy, None, None);
                }
            }
        });
    }
}
