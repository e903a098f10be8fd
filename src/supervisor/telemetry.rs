//! The supervisor's side of telemetry: the sampler's targets, the shipper's
//! sources, the per-container restart counters.

use super::Supervisor;
use crate::model::Record;
use crate::telemetry::metrics::ContainerLabels;
use crate::telemetry::sampler::{Labels, Target};
use crate::telemetry::ship::Source;
use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::sync::Arc;

impl Supervisor {
    /// The containers to sample. Targets are built once per container
    /// (generation: its creation time) in `known` and handed over as shared
    /// pointers on every pass.
    pub fn sample_targets(&self, known: &mut HashMap<String, Target>) -> Vec<Target> {
        let mut targets = Vec::new();
        for e in self.registry.all() {
            let r = e.rec.lock().unwrap();
            let name = r.name();
            let f = r.facts();
            let fresh = known
                .get(name)
                .is_some_and(|t| *t.generation == *f.created_at);
            if !fresh {
                let Some(cg) = self.cgroups.sampled(&f.cgroup_parent, name) else {
                    continue;
                };
                let t = Target {
                    labels: Arc::new(Labels {
                        container: name.to_string(),
                        app: f.spec.app.clone().unwrap_or_default(),
                        version: f.spec.version.clone().unwrap_or_default(),
                    }),
                    generation: f.created_at.as_str().into(),
                    cgroup: Arc::new(cg),
                    disk: f
                        .limits
                        .disk
                        .clone()
                        .map(|d| Arc::new((self.store.dir(name), d))),
                };
                known.insert(name.to_string(), t);
            }
            targets.push(known[name].clone());
        }
        if known.len() > targets.len() {
            let live: std::collections::HashSet<&str> = targets
                .iter()
                .map(|t| t.labels.container.as_str())
                .collect();
            known.retain(|n, _| live.contains(n.as_str()));
        }
        targets
    }

    /// What the log shipper sends: every container's log, and the events.
    pub fn ship_sources(&self) -> Vec<Source> {
        let mut v: Vec<Source> = self
            .registry
            .all()
            .iter()
            .map(|e| {
                // read in place: no copy of the whole record per look
                let r = e.rec.lock().unwrap();
                let spec = r.spec();
                Source {
                    container: spec.name.clone(),
                    app: spec.app.clone().unwrap_or_default(),
                    version: spec.version.clone().unwrap_or_default(),
                    dir: self.log_dir(&spec.name),
                    generation: r.facts().created_at.clone(),
                }
            })
            .collect();
        v.push(Source {
            container: String::new(),
            app: String::new(),
            version: String::new(),
            dir: self.paths.events(),
            generation: String::new(),
        });
        v
    }

    fn restart_labels(&self, r: &Record) -> ContainerLabels {
        let spec = r.spec();
        ContainerLabels {
            container: spec.name.clone(),
            app: spec.app.clone().unwrap_or_default(),
            version: spec.version.clone().unwrap_or_default(),
            host: crate::telemetry::metrics::host_name(),
        }
    }

    /// The container's `hydra_container_restarts_total` (made at 0 if new).
    pub(super) fn restart_counter(&self, r: &Record) -> Counter {
        self.metrics
            .restarts
            .get_or_create(&self.restart_labels(r))
            .clone()
    }

    pub(super) fn forget_restarts(&self, r: &Record) {
        self.metrics.restarts.remove(&self.restart_labels(r));
    }
}
