//! The container lifecycle, one service for every front end: create, start,
//! stop, kill, remove, wait; exits and the restart policy; health checks;
//! re-adopting every container when the agent starts again.
//!
//! It reaches the host only through the adapters' traits ([`Cgroups`],
//! [`Runtime`], the network's drivers) given to [`Supervisor::boot`], so
//! the whole lifecycle runs on fakes in unit tests. The parts: the container
//! [`registry`], the lifecycle operations (`lifecycle.rs`, `create.rs`,
//! `run.rs`), exit watching and the restart policy (`watch.rs`), adoption
//! (`adopt.rs`), health checks (`health.rs`), the [`events`] bus.
//!
//! Locks: records are behind std mutexes, never held across an `.await`;
//! each container's operations are serialised by its own tokio mutex.
//! Blocking work (cgroupfs, image unpacking, starting shims, record writes)
//! runs in `spawn_blocking`.

mod adopt;
mod create;
pub mod error;
pub mod events;
mod health;
pub mod images;
mod lifecycle;
pub mod process;
mod query;
pub mod registry;
mod run;
mod teardown;
mod telemetry;
mod userns;
mod watch;

#[cfg(test)]
mod tests;

pub use error::{Error, Result, StateFault};
pub use query::{ContainerView, Counts, ExitView};

use crate::cgroup::{Cgroups, Mode};
use crate::config::{Config, LogsConfig, Paths, SecurityConfig};
use crate::model::State;
use crate::network::driver::{FirewallDriver, Links};
use crate::network::Network;
use crate::runtime::Runtime;
use crate::store::Store;
use crate::telemetry::metrics::{AgentMetrics, StateLabels};
use events::EventBus;
use registry::Registry;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// The adapters the lifecycle drives: the real ones on a host, fakes in tests.
pub struct Deps {
    pub cgroups: Arc<dyn Cgroups>,
    pub runtime: Arc<dyn Runtime>,
    pub firewall: Box<dyn FirewallDriver>,
    pub links: Box<dyn Links>,
}

pub struct Supervisor {
    paths: Paths,
    /// `cgroup.parent`: containers made in this run go under it.
    parent: String,
    store: Store,
    cgroups: Arc<dyn Cgroups>,
    runtime: Arc<dyn Runtime>,
    /// Host networking; None when `network.enabled = false`.
    network: Option<Arc<Network>>,
    logs: RwLock<LogsConfig>,
    security: SecurityConfig,
    registry: Registry,
    /// Records whose runtime state could not be written (a full or
    /// read-only disk): kept in memory, written again when possible.
    unsaved: std::sync::Mutex<std::collections::BTreeSet<String>>,
    uid_ranges: userns::UidRanges,
    events: EventBus,
    metrics: AgentMetrics,
    /// The writable layers' limits.
    disks: Arc<crate::disk::Disks>,
    /// Registry pulls and the images' records.
    images: Arc<crate::image::Puller>,
}

impl Supervisor {
    pub fn mode(&self) -> Mode {
        self.cgroups.mode()
    }

    /// Host networking (None when disabled).
    pub fn network(&self) -> Option<&Arc<Network>> {
        self.network.as_ref()
    }

    /// How the writable layers are limited here (`GET /v1/host`).
    pub fn storage_limits(&self) -> &'static str {
        self.disks.mechanism().as_str()
    }

    pub fn metrics(&self) -> &AgentMetrics {
        &self.metrics
    }

    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Applies what can change without a restart; returns what changed.
    pub fn reload(&self, cfg: &Config) -> Vec<String> {
        let mut changed = Vec::new();
        let mut logs = self.logs.write().unwrap();
        if *logs != cfg.logs {
            *logs = cfg.logs.clone();
            changed.push("logs (applies to containers started from now on)".into());
        }
        changed
    }

    /// On a clean stop with no containers, the agent's cgroup subtree goes too.
    pub fn remove_empty_parent(&self) {
        if self.registry.is_empty() {
            self.cgroups.remove_parent(&self.parent);
        }
    }

    /// Writes a record's runtime state (blocking); callers hold the
    /// entry's record lock, so that two saves of one container cannot land
    /// out of order (an older state last). A failure keeps the
    /// state in memory (reads go on answering from it) and queues the
    /// record for [`Supervisor::retry_unsaved`].
    fn persist(&self, r: &crate::model::Record) {
        match self.store.save(r, false) {
            Ok(()) => {
                self.unsaved.lock().unwrap().remove(r.name());
            }
            Err(e) => {
                if self.unsaved.lock().unwrap().insert(r.name().to_string()) {
                    tracing::error!(container = %r.name(), error = %e, "cannot persist the container's state; kept in memory and retried");
                }
            }
        }
    }

    /// The watchdog's health check (blocking): the directory of records is
    /// still the one opened and the launcher can take a request. Err names
    /// what did not answer.
    pub fn health(&self) -> std::result::Result<(), String> {
        self.store.check().map_err(|e| e.to_string())?;
        if !self.runtime.responsive() {
            return Err("the launcher helper is not answering".into());
        }
        Ok(())
    }

    /// Writes the records that could not be written (blocking); true when
    /// none is left.
    pub fn retry_unsaved(&self) -> bool {
        let names: Vec<String> = self.unsaved.lock().unwrap().iter().cloned().collect();
        for name in names {
            match self.registry.get(&name) {
                Ok(e) => {
                    let r = e.rec.lock().unwrap();
                    if self.store.save(&r, false).is_ok() {
                        self.unsaved.lock().unwrap().remove(&name);
                        tracing::info!(container = %name, "the container's state is persisted again");
                    }
                }
                Err(_) => {
                    self.unsaved.lock().unwrap().remove(&name);
                }
            }
        }
        self.unsaved.lock().unwrap().is_empty()
    }

    fn log_dir(&self, name: &str) -> PathBuf {
        match &self.logs.read().unwrap().dir {
            Some(d) => d.join(name),
            None => self.store.dir(name).join("logs"),
        }
    }

    /// Moves one container between states in the `hydra_containers` gauge.
    fn count_state(&self, from: Option<State>, to: Option<State>) {
        for (s, d) in [(from, -1), (to, 1)] {
            if let Some(s) = s {
                self.metrics
                    .containers
                    .get_or_create(&StateLabels {
                        state: s.as_str().into(),
                    })
                    .inc_by(d);
            }
        }
    }
}

/// Runs blocking work off the reactor; a panic becomes an error naming `what`.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(Error::Panicked(what)))
}
