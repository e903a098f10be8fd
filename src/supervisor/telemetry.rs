//! The supervisor's side of telemetry: the stats sampler's thread, the
//! event journal, and what the log shipper sends.

use super::{Arc, Event, Supervisor};

impl Supervisor {
    /// Starts the stats sampler's thread; it ends when the supervisor is
    /// dropped.
    pub fn start_sampler(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let sampler = self.sampler.clone();
        use crate::telemetry::sampler::{Labels, Target};
        std::thread::Builder::new()
            .name("hydra-stats".into())
            .spawn(move || {
                // targets built once per container (generation: created_at),
                // handed over as shared pointers on every pass
                let mut known: std::collections::HashMap<String, Target> = Default::default();
                sampler.run(|| {
                    let sup = weak.upgrade()?;
                    let mut targets = Vec::new();
                    for e in sup.entries() {
                        let r = e.rec.lock().unwrap();
                        let name = &r.spec.name;
                        let fresh = known
                            .get(name)
                            .is_some_and(|t| *t.generation == *r.created_at);
                        if !fresh {
                            let t = Target {
                                labels: Arc::new(Labels {
                                    container: name.clone(),
                                    app: r.spec.app.clone().unwrap_or_default(),
                                    version: r.spec.version.clone().unwrap_or_default(),
                                }),
                                generation: r.created_at.as_str().into(),
                                cgroup: Arc::new(sup.cgroup_of(&r)),
                            };
                            known.insert(name.clone(), t);
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
                    Some(targets)
                })
            })
            .expect("spawn the stats sampler");
    }

    /// Publishes an event on `/v1/events` and appends it to the event
    /// journal (`<state>/events`), from which the shipper sends it.
    pub fn emit_event(&self, ev: Event) {
        if let Some(w) = self.journal.lock().unwrap().as_mut() {
            let line = serde_json::to_vec(&ev).expect("serializes");
            if let Err(e) = w.write("event", &line, false) {
                tracing::error!(error = %e, "cannot append to the event journal");
            }
        }
        let _ = self.events.send(ev);
    }

    /// What the log shipper sends: every container's log, and the events.
    pub fn ship_sources(&self) -> Vec<crate::telemetry::ship::Source> {
        let mut v: Vec<_> = self
            .entries()
            .iter()
            .map(|e| {
                // read in place: no copy of the whole record per look
                let r = e.rec.lock().unwrap();
                crate::telemetry::ship::Source {
                    container: r.spec.name.clone(),
                    app: r.spec.app.clone().unwrap_or_default(),
                    version: r.spec.version.clone().unwrap_or_default(),
                    dir: self.log_dir(&r.spec.name),
                    generation: r.created_at.clone(),
                }
            })
            .collect();
        v.push(crate::telemetry::ship::Source {
            container: String::new(),
            app: String::new(),
            version: String::new(),
            dir: self.paths.state.join("events"),
            generation: String::new(),
        });
        v
    }
}
