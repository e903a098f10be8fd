//! Watching running containers: exits (through a pidfd on the shim), the
//! restart policy, health checks, and re-adoption when the agent starts.

use super::{health, now, Entry, Supervisor};
use crate::api::{ApiError, HealthInfo, RestartPolicy};
use crate::runtime::{self, ExitRecord};
use crate::store::{ContainerRecord, State};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

impl Supervisor {
    /// Watches the shim of a running container; on its exit records the status.
    pub(super) fn watch(self: &Arc<Self>, e: Arc<Entry>) {
        let r = e.rec();
        let (Some(shim), State::Running) = (r.shim_pid, r.state) else {
            return;
        };
        let me = self.clone();
        let r2 = r.clone();
        tokio::spawn(async move {
            let r = r2;
            match runtime::sys::pidfd_open(shim) {
                Ok(fd) if crate::runtime::shim::start_time(shim) == r.shim_start => {
                    match runtime::sys::async_pidfd(fd) {
                        Ok(afd) => {
                            let _ = afd.readable().await;
                        }
                        Err(err) => {
                            tracing::error!(container = %r.spec.name, error = %err, "cannot watch the shim")
                        }
                    }
                }
                _ => {}
            }
            me.on_exit(e).await;
        });
        if r.spec.health.is_some() {
            self.health_loop(r.spec.name.clone());
        }
    }

    async fn on_exit(self: &Arc<Self>, e: Arc<Entry>) {
        let me = self.clone();
        let e2 = e.clone();
        let rec = tokio::task::spawn_blocking(move || me.record_exit(&e2))
            .await
            .expect("record_exit");
        let name = rec.spec.name.clone();
        if rec.oom_killed {
            self.emit(&name, "oom", None, None);
        }
        self.emit(&name, "die", rec.exit_code, rec.signal);
        e.exits.send_modify(|n| *n += 1);
        let restart = !rec.stop_requested
            && match rec.spec.restart.policy {
                RestartPolicy::No => false,
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => {
                    rec.exit_code != Some(0)
                        && rec
                            .spec
                            .restart
                            .max_retries
                            .is_none_or(|m| rec.restart_count < m)
                }
            };
        if restart {
            let delay = Duration::from_millis(100u64 << rec.restart_count.min(7));
            let me = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _guard = e.op.lock().await;
                let still = {
                    let r = e.rec.lock().unwrap();
                    r.state == State::Exited && !r.stop_requested
                };
                if !still || me.entry(&name).is_err() {
                    return;
                }
                let me2 = me.clone();
                let e2 = e.clone();
                let res = tokio::task::spawn_blocking(move || {
                    let mut r = e2.rec();
                    r.restart_count += 1;
                    let res = me2.start_run(&mut r).and_then(|()| {
                        me2.store
                            .save_runtime(&r)
                            .map_err(|e| ApiError::internal(e.to_string()))
                    });
                    *e2.rec.lock().unwrap() = r;
                    res
                })
                .await
                .expect("start_run");
                match res {
                    Ok(()) => {
                        me.emit(&name, "restart", None, None);
                        me.watch(e.clone());
                    }
                    Err(err) => tracing::error!(container = %name, error = %err, "restart failed"),
                }
            });
        }
    }

    /// Reads the shim's exit file and the OOM counter into the record.
    fn record_exit(&self, e: &Entry) -> ContainerRecord {
        let mut r = e.rec.lock().unwrap();
        let dir = self.store.dir(&r.spec.name);
        let cg = self.cgroup_of(&r);
        match std::fs::read(dir.join("exit.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<ExitRecord>(&b).ok())
        {
            Some(x) => {
                r.exit_code = x.exit_code;
                r.signal = x.signal;
                r.finished_at = Some(x.finished_at);
            }
            None => {
                tracing::error!(container = %r.spec.name, "the container's shim ended without an exit status; killing what is left of the container");
                let _ = cg.kill_all(Duration::from_secs(5));
                r.exit_code = None;
                r.signal = None;
                r.finished_at = Some(now());
            }
        }
        r.oom_killed = cg.oom_kills() > r.oom_base;
        r.state = State::Exited;
        r.pid = None;
        r.pid_start = None;
        r.shim_pid = None;
        r.shim_start = None;
        if let Err(err) = self.store.save_runtime(&r) {
            tracing::error!(container = %r.spec.name, error = %err, "cannot persist the exit");
        }
        r.clone()
    }

    /// Re-adopts every container in the state dir and cleans what a crash left.
    pub async fn adopt(self: &Arc<Self>) -> anyhow::Result<usize> {
        let me = self.clone();
        let (recs, orphans) = tokio::task::spawn_blocking(move || me.store.load_all())
            .await
            .expect("load");
        for name in &orphans {
            let cg = self.layout.container(&self.parent, name);
            self.teardown_files(&cg, name);
            tracing::warn!(container = %name, "removed the remains of a container without a usable record");
        }
        let known: BTreeSet<String> = recs.iter().map(|r| r.spec.name.clone()).collect();
        for child in self.layout.children(&self.parent) {
            if !known.contains(&child) {
                let cg = self.layout.container(&self.parent, &child);
                if let Err(e) = cg.remove() {
                    tracing::error!(cgroup = %child, error = %e, "cannot remove a stray cgroup");
                } else {
                    tracing::warn!(cgroup = %child, "removed a cgroup left by an interrupted create");
                }
            }
        }
        let me = self.clone();
        let recs =
            tokio::task::spawn_blocking(move || me.setup_network(&recs).map(|()| recs)).await??;
        let n = recs.len();
        for rec in recs {
            if let Some(b) = rec.userns_base {
                self.uid_ranges.mark(b);
            }
            let name = rec.spec.name.clone();
            let running = rec.state == State::Running;
            let alive = running
                && rec.shim_pid.is_some_and(|p| {
                    crate::runtime::shim::start_time(p) == rec.shim_start
                        && rec.shim_start.is_some()
                });
            let e = Entry::new(rec);
            self.registry
                .lock()
                .unwrap()
                .entries
                .insert(name.clone(), e.clone());
            if alive {
                self.watch(e);
            } else if running {
                // Exited while the agent was down: the shim left the status.
                let me = self.clone();
                tokio::spawn(async move { me.on_exit(e).await });
            }
        }
        Ok(n)
    }

    fn health_loop(self: &Arc<Self>, name: String) {
        let me = self.clone();
        tokio::spawn(async move {
            let Ok(e) = me.entry(&name) else { return };
            let r = e.rec();
            let (Some(h), Some(pid)) = (r.spec.health.clone(), r.pid) else {
                return;
            };
            *e.health.lock().unwrap() = HealthInfo {
                status: "starting".into(),
                failures: 0,
            };
            loop {
                tokio::time::sleep(Duration::from_secs(h.interval_s)).await;
                if e.rec().pid != Some(pid) {
                    return;
                }
                let (port, path, t) = (
                    h.port,
                    h.http_path.clone(),
                    Duration::from_secs(h.timeout_s),
                );
                let res = tokio::task::spawn_blocking(move || health::probe(pid, port, &path, t))
                    .await
                    .unwrap_or(Err("probe failed".into()));
                let mut hs = e.health.lock().unwrap();
                match res {
                    Ok(()) => {
                        *hs = HealthInfo {
                            status: "healthy".into(),
                            failures: 0,
                        }
                    }
                    Err(why) => {
                        hs.failures += 1;
                        if hs.failures >= h.retries && hs.status != "unhealthy" {
                            hs.status = "unhealthy".into();
                            tracing::warn!(container = %name, reason = %why, "container is unhealthy");
                            drop(hs);
                            me.emit(&name, "health_status: unhealthy", None, None);
                        }
                    }
                }
            }
        });
    }
}
