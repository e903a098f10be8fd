//! Watching running containers: an exit (the shim ends) is recorded with
//! the shim's exit status and the cgroup's OOM count, announced, and handed
//! to the restart policy (backoff 100 ms doubling to 12.8 s).

use super::registry::Entry;
use super::{blocking, Supervisor};
use crate::model::{Action, Exit, Record, RestartPolicy, State};
use std::sync::Arc;
use std::time::Duration;

/// Whether the policy restarts a container that just exited.
pub(super) fn wants_restart(rec: &Record) -> bool {
    let spec = rec.spec();
    !rec.stop_requested()
        && match spec.restart.policy {
            RestartPolicy::No => false,
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => {
                rec.exit().and_then(|e| e.exit_code) != Some(0)
                    && spec
                        .restart
                        .max_retries
                        .is_none_or(|m| rec.restart_count() < m)
            }
        }
}

/// The wait before the next restart: 100 ms doubling, at most 12.8 s.
pub(super) fn backoff(restarts: u32) -> Duration {
    Duration::from_millis(100u64 << restarts.min(7))
}

impl Supervisor {
    /// Watches the shim of a running container; on its exit records the status.
    pub(super) fn watch(self: &Arc<Self>, e: Arc<Entry>) {
        let r = e.rec();
        let Some(run) = r.running().cloned() else {
            return;
        };
        let me = self.clone();
        let e2 = e.clone();
        tokio::spawn(async move {
            me.runtime.exited(run.shim).await;
            me.on_exit(e2).await;
        });
        if let Some(h) = r.spec().health.clone() {
            self.health_loop(e, h, run.init);
        }
    }

    pub(super) async fn on_exit(self: &Arc<Self>, e: Arc<Entry>) {
        let (me, e2) = (self.clone(), e.clone());
        let Ok(Some(rec)) = blocking("record the exit", move || Ok(me.record_exit(&e2))).await
        else {
            return;
        };
        let name = rec.name().to_string();
        let exit = rec.exit().cloned().expect("recorded as exited");
        self.count_state(Some(State::Running), Some(State::Exited));
        if exit.oom_killed {
            self.events.emit(&name, Action::Oom, None, None);
        }
        self.events
            .emit(&name, Action::Die, exit.exit_code, exit.signal);
        e.exits.send_modify(|n| *n += 1);
        if wants_restart(&rec) {
            let me = self.clone();
            tokio::spawn(async move { me.restart_later(e, backoff(rec.restart_count())).await });
        }
    }

    async fn restart_later(self: Arc<Self>, e: Arc<Entry>, delay: Duration) {
        tokio::time::sleep(delay).await;
        let _guard = e.op.lock().await;
        let name = e.rec.lock().unwrap().name().to_string();
        let still = {
            let r = e.rec.lock().unwrap();
            r.state() == State::Exited && !r.stop_requested()
        };
        if !still || self.registry.get(&name).is_err() {
            return;
        }
        match self.run_again(&e, true).await {
            Ok(()) => self.watch(e.clone()),
            Err(err) => tracing::error!(container = %name, error = %err, "restart failed"),
        }
    }

    /// Reads the shim's exit file and the OOM counter into the record; None
    /// if it was not running (already recorded).
    fn record_exit(&self, e: &Entry) -> Option<Record> {
        let mut r = e.rec.lock().unwrap();
        r.running()?;
        let (parent, name) = (r.facts().cgroup_parent.clone(), r.name().to_string());
        let dir = self.store.dir(&name);
        let (exit_code, signal, finished_at) = match self.runtime.read_exit(&dir.join("exit.json"))
        {
            Some(x) => (x.exit_code, x.signal, x.finished_at),
            None => {
                tracing::error!(container = %name, "the container's shim ended without an exit status; killing what is left of the container");
                let _ = self
                    .cgroups
                    .kill_all(&parent, &name, Duration::from_secs(5));
                (None, None, crate::model::now())
            }
        };
        let oom_base = r.running().map_or(0, |x| x.oom_base);
        let exit = Exit {
            exit_code,
            signal,
            oom_killed: self.cgroups.oom_kills(&parent, &name) > oom_base,
            finished_at,
        };
        r.exit_with(exit).expect("checked running above");
        self.persist(&r);
        Some(r.clone())
    }
}
