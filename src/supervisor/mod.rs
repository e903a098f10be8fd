//! The container lifecycle: create, start, stop, kill, remove, wait; watching
//! shims for exits, the restart policy, health checks, and re-adopting every
//! container when the agent starts again.
//!
//! Locks: the registry and records are std mutexes, never held across an
//! `.await`; each container's lifecycle operations are serialised by its own
//! tokio mutex. Blocking work (cgroupfs, image unpacking, starting shims)
//! runs in `spawn_blocking`.

mod exits;
pub mod health;
mod net;
mod process;
mod query;
mod teardown;
mod telemetry;
mod userns;

use crate::api::{ApiError, ContainerInfo, ContainerSpec, Event, HealthInfo};
use crate::cgroup::{self, ContainerCgroup, Layout};
use crate::config::{Config, LogsConfig, Paths};
use crate::image;
use crate::network::{Allocation, Network};
use crate::runtime::{self, security, Launch, Ready};
use crate::store::{ContainerRecord, State, Store};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::{broadcast, watch};

pub use process::parse_signal;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// One container the agent manages.
pub struct Entry {
    rec: Mutex<ContainerRecord>,
    /// Serialises start/stop/remove of this container.
    op: tokio::sync::Mutex<()>,
    /// Bumped on every exit; waiters watch it.
    exits: watch::Sender<u64>,
    health: Mutex<HealthInfo>,
}

impl Entry {
    fn new(rec: ContainerRecord) -> Arc<Entry> {
        let health = HealthInfo {
            status: if rec.spec.health.is_some() {
                "starting"
            } else {
                "none"
            }
            .into(),
            failures: 0,
        };
        Arc::new(Entry {
            rec: Mutex::new(rec),
            op: tokio::sync::Mutex::new(()),
            exits: watch::channel(0).0,
            health: Mutex::new(health),
        })
    }
    fn rec(&self) -> ContainerRecord {
        self.rec.lock().unwrap().clone()
    }
    fn state(&self) -> State {
        self.rec.lock().unwrap().state
    }
}

#[derive(Default)]
struct Registry {
    entries: BTreeMap<String, Arc<Entry>>,
    /// Names reserved by a create in progress.
    creating: BTreeSet<String>,
}

pub struct Supervisor {
    paths: Paths,
    layout: Layout,
    parent: String,
    store: Store,
    launcher: runtime::Launcher,
    logs: RwLock<LogsConfig>,
    registry: Mutex<Registry>,
    events: broadcast::Sender<Event>,
    /// Host networking settings; None when `network.enabled = false`.
    net_settings: Option<crate::network::Settings>,
    /// Set up by `adopt` from the records, before the API serves.
    network: std::sync::OnceLock<Arc<Network>>,
    security: crate::config::SecurityConfig,
    uid_ranges: userns::UidRanges,
    pub sampler: Arc<crate::telemetry::sampler::Sampler>,
    /// Set by the daemon when `collector.remote_write` is configured.
    pub remote_write: std::sync::OnceLock<Arc<crate::telemetry::remote_write::RemoteWrite>>,
    /// Set by the daemon when a log collector is configured.
    pub ship: std::sync::OnceLock<Arc<crate::telemetry::ship::ShipCounters>>,
    /// The event journal (10 MiB x 3, like a container's log).
    journal: Mutex<Option<crate::telemetry::logs::LogWriter>>,
}

impl Supervisor {
    /// Detects cgroups, prepares the agent's subtree and the state dir.
    pub fn new(cfg: &Config, paths: Paths) -> anyhow::Result<Arc<Supervisor>> {
        let layout = cgroup::detect()?;
        layout.prepare(&cfg.cgroup.parent)?;
        let store = Store::new(&paths)?;
        std::fs::create_dir_all(paths.layers())?;
        let exe = std::env::current_exe()?;
        let launcher = runtime::Launcher::new(
            &exe,
            &paths.state,
            layout
                .devices_cgroup(&cfg.cgroup.parent)
                .map(|d| d.join("cgroup.procs")),
            Duration::from_secs(cfg.agent.start_timeout_s),
        );
        let journal_dir = paths.state.join("events");
        let net_settings = match cfg.network.enabled {
            true => Some(
                crate::network::Settings::from_config(&cfg.network).map_err(anyhow::Error::msg)?,
            ),
            false => None,
        };
        Ok(Arc::new(Supervisor {
            paths,
            layout,
            parent: cfg.cgroup.parent.clone(),
            store,
            launcher,
            logs: RwLock::new(cfg.logs.clone()),
            registry: Mutex::new(Registry::default()),
            events: broadcast::channel(1024).0,
            net_settings,
            network: std::sync::OnceLock::new(),
            security: cfg.security.clone(),
            uid_ranges: userns::UidRanges::new(&cfg.security),
            sampler: Arc::new(crate::telemetry::sampler::Sampler::new(
                Duration::from_secs(cfg.collector.stats_interval_s),
            )),
            remote_write: std::sync::OnceLock::new(),
            ship: std::sync::OnceLock::new(),
            journal: Mutex::new(Some(crate::telemetry::logs::LogWriter::open(
                &journal_dir,
                10 << 20,
                3,
            )?)),
        }))
    }

    /// On a clean stop with no containers, the agent's cgroup subtree goes too.
    pub fn remove_empty_parent(&self) {
        self.layout.remove_parent(&self.parent);
    }

    pub fn mode(&self) -> cgroup::Mode {
        self.layout.mode
    }

    /// Applies what can change without a restart; returns what changed.
    pub fn reload(&self, cfg: &Config) -> Vec<String> {
        let mut changed = Vec::new();
        let mut logs = self.logs.write().unwrap();
        if *logs != cfg.logs {
            *logs = cfg.logs.clone();
            changed.push("logs (applies to containers started from now on)".into());
        }
        let interval = Duration::from_secs(cfg.collector.stats_interval_s);
        if self.sampler.interval() != interval {
            self.sampler.set_interval(interval);
            changed.push("collector.stats_interval_s".into());
        }
        changed
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn emit(&self, container: &str, action: &str, exit_code: Option<i32>, signal: Option<i32>) {
        self.emit_event(Event {
            ts: now(),
            container: container.into(),
            action: action.into(),
            exit_code,
            signal,
            dropped: None,
        });
    }

    fn cgroup_of(&self, rec: &ContainerRecord) -> ContainerCgroup {
        self.layout.container(&rec.cgroup_parent, &rec.spec.name)
    }

    fn entry(&self, name: &str) -> Result<Arc<Entry>, ApiError> {
        self.registry
            .lock()
            .unwrap()
            .entries
            .get(name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("no container named {name:?}")))
    }

    /// Creates and starts a container. On any failure nothing is left behind.
    pub async fn create(self: &Arc<Self>, spec: ContainerSpec) -> Result<ContainerInfo, ApiError> {
        let name = spec.name.clone();
        {
            let mut reg = self.registry.lock().unwrap();
            if reg.entries.contains_key(&name) || !reg.creating.insert(name.clone()) {
                return Err(ApiError::conflict(format!(
                    "a container named {name:?} already exists"
                )));
            }
        }
        let me = self.clone();
        let res = tokio::task::spawn_blocking(move || me.create_blocking(spec))
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(format!("create panicked: {e}"))));
        let mut reg = self.registry.lock().unwrap();
        reg.creating.remove(&name);
        let entry = Entry::new(res?);
        reg.entries.insert(name.clone(), entry.clone());
        drop(reg);
        self.emit(&name, "create", None, None);
        self.emit(&name, "start", None, None);
        self.watch(entry.clone());
        Ok(self.info(&entry))
    }

    fn create_blocking(&self, spec: ContainerSpec) -> Result<ContainerRecord, ApiError> {
        let img = image::resolve(&spec.image, &self.paths.layers()).map_err(|e| match e {
            image::ImageError::Store { .. } => ApiError::internal(e.to_string()),
            _ => ApiError::unprocessable("image", e.to_string()),
        })?;
        if let Some((i, c)) =
            security::first_not_allowed(&spec.capabilities.add, &self.security.allowed_capabilities)
        {
            return Err(ApiError {
                status: 403,
                code: "forbidden",
                message: format!("{c} is not allowed on this host (security.allowed_capabilities)"),
                field: Some(format!("capabilities.add[{i}]")),
            });
        }
        let process = process::merge(&spec, &img.defaults)?;
        let dir = self.store.dir(&spec.name);
        let _ = std::fs::remove_dir_all(&dir);
        let mut rec = ContainerRecord {
            process,
            layers: img.layers,
            state: State::Created,
            pid: None,
            pid_start: None,
            shim_pid: None,
            shim_start: None,
            exit_code: None,
            signal: None,
            oom_killed: false,
            oom_base: 0,
            created_at: now(),
            started_at: None,
            finished_at: None,
            restart_count: 0,
            stop_requested: false,
            cgroup_parent: self.parent.clone(),
            limits: Default::default(),
            ip: None,
            ports: Vec::new(),
            userns_base: None,
            spec,
        };
        if rec.spec.userns {
            rec.userns_base = Some(self.uid_ranges.allocate().ok_or_else(|| ApiError {
                status: 409,
                code: "exhausted",
                message: "no free user namespace id range left (security.userns_ranges)".into(),
                field: Some("userns".into()),
            })?);
        }
        let net = self.network.get();
        let res = match net {
            None if !rec.spec.ports.is_empty() => Err(ApiError::unprocessable(
                "ports",
                "host networking is disabled on this agent (network.enabled = false)",
            )),
            None => Ok(()),
            Some(n) => n.allocate(&rec.spec.name, &rec.spec.ports).map(|a| {
                rec.ip = a.ip;
                rec.ports = a.ports;
            }),
        };
        if let Err(e) = res {
            if let Some(b) = rec.userns_base {
                self.uid_ranges.release(b);
            }
            return Err(e);
        }
        let cg = self.cgroup_of(&rec);
        let res = (|| {
            for sub in ["upper", "work", "rootfs"] {
                std::fs::create_dir_all(dir.join(sub)).map_err(|e| {
                    ApiError::internal(format!("create {}: {e}", dir.join(sub).display()))
                })?;
            }
            cg.create().map_err(|e| ApiError::internal(e.to_string()))?;
            cg.restrict_devices()
                .map_err(|e| ApiError::internal(e.to_string()))?;
            let io_dev = match &rec.spec.limits.io {
                Some(_) => Some(
                    cgroup::block_device_of(&self.paths.state, std::path::Path::new("/sys"))
                        .map_err(|m| {
                            ApiError::unprocessable(
                                "limits.io",
                                format!(
                                    "io limits apply to the disk holding the state dir, but {m}"
                                ),
                            )
                        })?,
                ),
                None => None,
            };
            // every container has a pids limit, the spec's or the default
            let mut limits = rec.spec.limits.clone();
            limits.pids.get_or_insert(self.security.default_pids);
            let writes = cgroup::plan(cg.mode, &limits, io_dev);
            cg.apply(&writes)
                .map_err(|e| ApiError::unprocessable("limits", e.to_string()))?;
            rec.limits = cg.read_limits();
            // A crash before the record below leaves a directory without a
            // record and maybe a cgroup: both are swept at the next start.
            self.start_run(&mut rec)?;
            if let Some(n) = net {
                n.install(&rec.spec.name, &allocation(&rec))?;
            }
            self.store
                .save(&rec)
                .map_err(|e| ApiError::internal(e.to_string()))
        })();
        if let Err(e) = res {
            self.teardown(&cg, &rec);
            return Err(e);
        }
        Ok(rec)
    }

    fn log_dir(&self, name: &str) -> PathBuf {
        match &self.logs.read().unwrap().dir {
            Some(d) => d.join(name),
            None => self.store.dir(name).join("logs"),
        }
    }

    /// Starts one run of the container (blocking); the caller persists the record.
    fn start_run(&self, rec: &mut ContainerRecord) -> Result<(), ApiError> {
        let dir = self.store.dir(&rec.spec.name);
        let cg = self.cgroup_of(rec);
        let logs = self.logs.read().unwrap().clone();
        let launch = Launch {
            name: rec.spec.name.clone(),
            hostname: rec.spec.name.clone(),
            lower: rec.layers.clone(),
            upper: dir.join("upper"),
            work: dir.join("work"),
            rootfs: dir.join("rootfs"),
            process: rec.process.clone(),
            cgroup_procs: cg.procs_files(),
            cgroup_v2: cg.mode == cgroup::Mode::V2,
            log_dir: self.log_dir(&rec.spec.name),
            log_max_size: logs.max_file_size.0,
            log_max_files: logs.max_files,
            exit_file: dir.join("exit.json"),
            shim_log: dir.join("shim.log"),
            net: match (self.network.get(), rec.ip) {
                (Some(n), Some(ip)) => Some(n.launch(ip)),
                _ => None,
            },
            hardening: security::hardening(&rec.spec.capabilities, &self.security),
            userns: rec.userns_base,
        };
        let _ = std::fs::remove_file(&launch.exit_file);
        rec.oom_base = cg.oom_kills();
        let res = self.launcher.start(&launch);
        if res.is_err() {
            // whoever asked (create, start, a restart): nothing of this run
            // stays, also an init stuck past the start deadline
            let _ = cg.kill_all(Duration::from_secs(5));
        }
        match res {
            Ok(Ready::Ok {
                pid,
                pid_start,
                shim_pid,
                shim_start,
            }) => {
                rec.state = State::Running;
                rec.pid = Some(pid);
                rec.pid_start = Some(pid_start);
                rec.shim_pid = Some(shim_pid);
                rec.shim_start = Some(shim_start);
                rec.started_at = Some(now());
                rec.exit_code = None;
                rec.signal = None;
                rec.oom_killed = false;
                rec.finished_at = None;
                rec.stop_requested = false;
                Ok(())
            }
            Ok(Ready::Failed { .. }) => unreachable!("runtime::start maps failures to errors"),
            Err(runtime::RuntimeError::Failed { field, message }) => {
                Err(if field == "runtime" || field == "limits" {
                    ApiError::internal(message)
                } else {
                    ApiError::unprocessable(field, message)
                })
            }
            Err(e) => Err(ApiError::internal(e.to_string())),
        }
    }

    /// Starts a created or exited container again.
    pub async fn start(self: &Arc<Self>, name: &str) -> Result<ContainerInfo, ApiError> {
        let e = self.entry(name)?;
        let _g = e.op.lock().await;
        if e.state() == State::Running {
            return Err(ApiError::conflict(format!(
                "container {name:?} is already running"
            )));
        }
        let me = self.clone();
        let e2 = e.clone();
        tokio::task::spawn_blocking(move || {
            let mut r = e2.rec();
            let res = me.start_run(&mut r).and_then(|()| {
                me.store
                    .save_runtime(&r)
                    .map_err(|e| ApiError::internal(e.to_string()))
            });
            *e2.rec.lock().unwrap() = r;
            res
        })
        .await
        .expect("start_run")?;
        self.emit(name, "start", None, None);
        self.watch(e.clone());
        Ok(self.info(&e))
    }

    fn signal(&self, e: &Entry, sig: i32) -> Result<(), ApiError> {
        let r = e.rec();
        let (Some(pid), State::Running) = (r.pid, r.state) else {
            return Err(ApiError::conflict(format!(
                "container {:?} is not running",
                r.spec.name
            )));
        };
        let fd = match runtime::sys::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(_) => return Ok(()), // already gone; the exit is on its way
        };
        if crate::runtime::shim::start_time(pid) != r.pid_start {
            return Ok(());
        }
        runtime::sys::pidfd_send_signal(&fd, sig)
            .map_err(|err| ApiError::internal(format!("signal: {err}")))
    }

    async fn wait_exit(&self, e: &Entry, timeout: Duration) -> bool {
        let mut rx = e.exits.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if e.state() != State::Running {
                return true;
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return e.state() != State::Running;
            }
        }
    }

    fn mark_stop_requested(&self, e: &Entry) {
        let mut r = e.rec.lock().unwrap();
        r.stop_requested = true;
        let _ = self.store.save_runtime(&r);
    }

    /// SIGTERM, then SIGKILL after `timeout`.
    pub async fn stop(
        self: &Arc<Self>,
        name: &str,
        timeout: Duration,
    ) -> Result<ContainerInfo, ApiError> {
        let e = self.entry(name)?;
        let _g = e.op.lock().await;
        if e.state() == State::Running {
            self.mark_stop_requested(&e);
            self.emit(name, "stop", None, None);
            self.signal(&e, libc::SIGTERM)?;
            if !self.wait_exit(&e, timeout).await {
                self.signal(&e, libc::SIGKILL)?;
                if !self.wait_exit(&e, Duration::from_secs(10)).await {
                    return Err(ApiError::internal(format!(
                        "container {name:?} did not exit after SIGKILL"
                    )));
                }
            }
        }
        Ok(self.info(&e))
    }

    pub async fn kill(self: &Arc<Self>, name: &str, sig: i32) -> Result<ContainerInfo, ApiError> {
        let e = self.entry(name)?;
        self.mark_stop_requested(&e);
        self.signal(&e, sig)?;
        self.emit(name, "kill", None, Some(sig));
        Ok(self.info(&e))
    }

    pub async fn restart(
        self: &Arc<Self>,
        name: &str,
        timeout: Duration,
    ) -> Result<ContainerInfo, ApiError> {
        self.stop(name, timeout).await?;
        self.start(name).await
    }

    /// Removes a container; a running one only with `force` (SIGKILL first).
    pub async fn remove(self: &Arc<Self>, name: &str, force: bool) -> Result<(), ApiError> {
        let e = self.entry(name)?;
        let _g = e.op.lock().await;
        if e.state() == State::Running {
            if !force {
                return Err(ApiError::conflict(format!(
                    "container {name:?} is running; stop it or use force=true"
                )));
            }
            self.mark_stop_requested(&e);
            self.signal(&e, libc::SIGKILL)?;
            if !self.wait_exit(&e, Duration::from_secs(10)).await {
                return Err(ApiError::internal(format!(
                    "container {name:?} did not exit after SIGKILL"
                )));
            }
        }
        let rec = e.rec();
        let cg = self.cgroup_of(&rec);
        let me = self.clone();
        tokio::task::spawn_blocking(move || me.teardown(&cg, &rec))
            .await
            .expect("teardown");
        self.registry.lock().unwrap().entries.remove(name);
        self.emit(name, "destroy", None, None);
        Ok(())
    }
}

fn allocation(r: &ContainerRecord) -> Allocation {
    Allocation {
        ip: r.ip,
        ports: r.ports.clone(),
    }
}
