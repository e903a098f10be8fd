//! Starting the supervisor: load every record, clean what a crash left,
//! set up the network from the records (default deny is in place before any
//! container of this run gets an address), and re-adopt the containers:
//! live shims are watched again, exits that happened while the agent was
//! down are recorded.

use super::registry::{Entry, Registry};
use super::{blocking, userns, Deps, Error, Result, Supervisor};
use crate::config::{Config, Paths};
use crate::model::{Allocation, Record, State};
use crate::network::{Network, Settings};
use crate::store::{Loaded, Store};
use crate::telemetry::metrics::AgentMetrics;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

impl Supervisor {
    /// Prepares the cgroup subtree and the state dir, re-adopts every
    /// container and answers the supervisor and how many it adopted.
    pub async fn boot(
        cfg: &Config,
        paths: Paths,
        deps: Deps,
        metrics: AgentMetrics,
    ) -> Result<(Arc<Supervisor>, usize)> {
        let store = Store::new(&paths)?;
        private(&paths.state);
        for d in [paths.layers(), paths.events()] {
            std::fs::create_dir_all(&d).map_err(|source| Error::Prepare { path: d, source })?;
        }
        let events = super::EventBus::open(&paths.events()).map_err(|source| Error::Prepare {
            path: paths.events(),
            source,
        })?;
        let images = puller(cfg, &paths);
        let (st, im) = (store.clone(), images.clone());
        let boot_file = paths.state.join("boot_id");
        let loaded = blocking("load the records", move || {
            let new_boot = crate::runtime::layer::is_new_boot(&boot_file).unwrap_or(false);
            let staged = im.sweep_staging();
            if staged > 0 {
                tracing::info!(staged, "removed layers an earlier agent was pulling");
            }
            Ok(sweep_unanswered_creates(st.load_all(), new_boot))
        })
        .await?;
        let net_settings = cfg
            .network
            .enabled
            .then(|| Settings::from_config(&cfg.network));
        let (cgroups, parent) = (deps.cgroups.clone(), cfg.cgroup.parent.clone());
        let (st, recs) = (store.clone(), allocations(&loaded.records));
        let state_dir = paths.state.clone();
        let names = loaded_names(&loaded);
        let log_root = cfg.logs.dir.clone();
        let disks = disks(cfg, &paths, &loaded.records);
        let dk = disks.clone();
        let (network, resets) = blocking("set up the network", move || {
            clean_remains(&st, &*cgroups, &dk, &parent, log_root.as_deref(), &names);
            let resets = reset_layers_after_reboot(&st, &names.1, &state_dir, &dk);
            let net = match net_settings {
                Some(s) => Some(Arc::new(Network::setup(
                    s,
                    &recs,
                    &state_dir,
                    deps.firewall,
                    &*deps.links,
                )?)),
                None => None,
            };
            Ok((net, resets))
        })
        .await?;
        for name in resets {
            let mut ev = crate::model::Event::now(&name, crate::model::Action::LayerReset);
            ev.reason = Some("reboot".into());
            events.publish(ev);
        }
        let sup = Arc::new(Supervisor {
            parent: cfg.cgroup.parent.clone(),
            store,
            cgroups: deps.cgroups,
            runtime: deps.runtime,
            network,
            logs: RwLock::new(cfg.logs.clone()),
            security: cfg.security.clone(),
            registry: Registry::default(),
            unsaved: Default::default(),
            uid_ranges: userns::UidRanges::new(&cfg.security),
            events,
            metrics,
            paths,
            disks,
            images,
        });
        let n = sup.adopt(loaded);
        sup.clone().retry_loop();
        Ok((sup, n))
    }

    /// Every 2 s, writes the records that could not be written; ends with
    /// the supervisor.
    fn retry_loop(self: Arc<Self>) {
        let weak = Arc::downgrade(&self);
        drop(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                let Some(me) = weak.upgrade() else { return };
                if me.unsaved.lock().unwrap().is_empty() {
                    continue;
                }
                let _ = tokio::task::spawn_blocking(move || me.retry_unsaved()).await;
            }
        });
    }

    fn adopt(self: &Arc<Self>, loaded: Loaded) -> usize {
        for name in &loaded.foreign {
            let _ = self.registry.reserve(name);
        }
        let n = loaded.records.len();
        for rec in loaded.records {
            if let Some(b) = rec.facts().userns_base {
                self.uid_ranges.mark(b);
            }
            let name = rec.name().to_string();
            let state = rec.state();
            let alive = rec.running().is_some_and(|r| self.runtime.is_alive(r.shim));
            self.count_state(None, Some(state));
            self.restart_counter(&rec)
                .inc_by(rec.restart_count() as u64);
            let e = Entry::new(rec);
            self.registry.insert(&name, e.clone());
            if alive {
                self.watch(e);
            } else if state == State::Running {
                // exited while the agent was down: the shim left the status
                let me = self.clone();
                tokio::spawn(async move { me.on_exit(e).await });
            } else if state == State::Created && super::watch::wants_restart(&e.rec()) {
                // created just before the host went down (see below)
                let me = self.clone();
                tokio::spawn(async move { me.first_start(e).await });
            }
        }
        n
    }

    /// Starts a container whose record was made durable just before the
    /// host went down, as its restart policy asks.
    async fn first_start(self: Arc<Self>, e: Arc<Entry>) {
        let _g = e.op.lock().await;
        if e.state() != State::Created {
            return;
        }
        match self.run_again(&e, false).await {
            Ok(()) => self.watch(e.clone()),
            Err(err) => {
                tracing::error!(container = %e.rec().name(), error = %err, "start after the reboot failed")
            }
        }
    }
}

/// A record still `created` was fsynced while the container's first start
/// ran (supervisor/create.rs). Found in the boot that wrote it, the agent
/// ended before the create answered: the container never existed for the
/// API, and its remains are swept like those of a create cut short before
/// its record. Found after a reboot, the create may have been answered (the
/// running record, written without fsync, may not have reached the disk):
/// the container is kept, and started if its restart policy asks.
fn sweep_unanswered_creates(mut loaded: Loaded, new_boot: bool) -> Loaded {
    if new_boot {
        return loaded;
    }
    let (unanswered, records) = std::mem::take(&mut loaded.records)
        .into_iter()
        .partition::<Vec<_>, _>(|r| r.state() == State::Created);
    loaded.records = records;
    for r in unanswered {
        tracing::warn!(container = %r.name(), "a create cut short by the agent's end: its remains are removed");
        loaded.orphans.push(r.name().to_string());
    }
    loaded.orphans.sort();
    loaded
}

fn allocations(recs: &[Record]) -> Vec<(String, Allocation)> {
    recs.iter()
        .map(|r| (r.name().to_string(), r.facts().net.clone()))
        .collect()
}

/// What the load found, by name: (orphans, every name with a record).
fn loaded_names(l: &Loaded) -> (Vec<String>, BTreeSet<String>) {
    let known = l
        .records
        .iter()
        .map(|r| r.name().to_string())
        .chain(l.foreign.iter().cloned())
        .collect();
    (l.orphans.clone(), known)
}

/// The writable layers' mechanism, with the project ids of `records` taken.
fn disks(cfg: &Config, paths: &Paths, records: &[Record]) -> Arc<crate::disk::Disks> {
    let d = crate::disk::Disks::new(&cfg.storage, &paths.state, &paths.containers());
    d.adopt(
        records
            .iter()
            .filter_map(|r| r.facts().limits.disk.as_ref()),
    );
    Arc::new(d)
}

/// Removes the remains of creates cut short: directories without a usable
/// record, and cgroups no record knows.
/// Once per boot: the writable layers whose volatile mount was never synced
/// before the host went down are emptied (see [`crate::runtime::layer`]),
/// then this boot is recorded. Answers the containers reset.
fn reset_layers_after_reboot(
    store: &Store,
    names: &BTreeSet<String>,
    state: &std::path::Path,
    disks: &crate::disk::Disks,
) -> Vec<String> {
    use crate::runtime::layer;
    let file = state.join("boot_id");
    match layer::is_new_boot(&file) {
        Ok(true) => {}
        Ok(false) => return Vec::new(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read this boot's id: writable layers are not checked");
            return Vec::new();
        }
    }
    let mut reset = Vec::new();
    for name in names {
        let dir = store.dir(name);
        // a project_quota layer's dirs are in layer/, on the state filesystem
        let limited = dir.join("layer/work").is_dir() && !dir.join("disk.img").exists();
        let (upper, work) = crate::disk::layer_dirs(&dir, limited);
        let done = match disks.reset_if_unclean(&dir) {
            Ok(false) => layer::reset_if_unsynced(&upper, &work),
            r => r,
        };
        match done {
            Ok(true) => {
                tracing::warn!(container = %name, "writable layer reset: the host went down before it was synced");
                reset.push(name.clone());
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(container = %name, error = %e, "cannot reset the writable layer left by the previous boot")
            }
        }
    }
    if let Err(e) = layer::record_boot(&file) {
        tracing::error!(error = %e, path = %file.display(), "cannot record this boot's id");
    }
    reset
}

fn clean_remains(
    store: &Store,
    cgroups: &dyn crate::cgroup::Cgroups,
    disks: &crate::disk::Disks,
    parent: &str,
    log_root: Option<&std::path::Path>,
    (orphans, known): &(Vec<String>, BTreeSet<String>),
) {
    for name in orphans {
        if let Some(d) = log_root {
            let _ = std::fs::remove_dir_all(d.join(name));
        }
        if let Err(e) = cgroups.remove(parent, name) {
            tracing::error!(container = %name, error = %e, "cannot remove the cgroup of a container without a usable record");
        }
        disks.release(&store.dir(name), true);
        if let Err(e) = store.remove(name) {
            tracing::error!(container = %name, error = %e, "cannot remove the state of a container without a usable record");
        }
        tracing::warn!(container = %name, "removed the remains of a container without a usable record");
    }
    for child in cgroups.children(parent) {
        if known.contains(&child) || orphans.contains(&child) {
            continue;
        }
        match cgroups.remove(parent, &child) {
            Ok(()) => {
                tracing::warn!(cgroup = %child, "removed a cgroup left by an interrupted create")
            }
            Err(e) => tracing::error!(cgroup = %child, error = %e, "cannot remove a stray cgroup"),
        }
    }
}

/// The registry puller over the agent's layer store and image records.
fn puller(cfg: &Config, paths: &Paths) -> Arc<crate::image::Puller> {
    Arc::new(crate::image::Puller::new(
        cfg.registry.clone(),
        cfg.images.clone(),
        paths.layers(),
        paths.images(),
    ))
}

/// The state dir is root's alone (0700): image layers and containers'
/// writable layers hold whatever tenants put there (setuid-root files
/// among them), which no other user of the host may reach and run. A state
/// dir that cannot be changed (read-only: the agent still serves) is
/// warned about, not fatal.
fn private(state: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state).map(|m| m.permissions().mode() & 0o7777);
    if mode.as_ref().is_ok_and(|m| *m == 0o700) {
        return;
    }
    if let Err(e) = std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700)) {
        tracing::warn!(path = %state.display(), error = %e, mode = ?mode.map(|m| format!("{m:o}")).ok(),
            "cannot make the state dir 0700: other users may reach image and container files");
    }
}
