//! Read-only views of the containers: inspect, list, counts, stats.

use super::{Entry, Supervisor};
use crate::api::{ApiError, ContainerInfo, ExitStatus};
use crate::cgroup;
use crate::store::State;
use std::sync::Arc;
use std::time::Duration;

impl Supervisor {
    /// A snapshot of the registry, so no lock is held while reading cgroups.
    pub(super) fn entries(&self) -> Vec<Arc<Entry>> {
        self.registry
            .lock()
            .unwrap()
            .entries
            .values()
            .cloned()
            .collect()
    }

    pub(super) fn info(&self, e: &Entry) -> ContainerInfo {
        let r = e.rec();
        let cg = self.cgroup_of(&r);
        ContainerInfo {
            name: r.spec.name.clone(),
            app: r.spec.app.clone(),
            version: r.spec.version.clone(),
            image: r.spec.image.clone(),
            state: r.state.as_str().into(),
            pid: r.pid,
            exit_code: r.exit_code,
            signal: r.signal,
            oom_killed: r.oom_killed,
            created_at: r.created_at.clone(),
            started_at: r.started_at.clone(),
            finished_at: r.finished_at.clone(),
            restart_count: r.restart_count,
            command: r.process.argv.clone(),
            limits: r.limits.clone(),
            cgroup: cg.display_path(),
            ip: r.ip.map(|ip| ip.to_string()),
            ports: r.ports.clone(),
            health: e.health.lock().unwrap().clone(),
            selinux_label: None,
        }
    }

    pub fn list(&self) -> Vec<ContainerInfo> {
        let entries = self.entries();
        entries.iter().map(|e| self.info(e)).collect()
    }

    pub fn inspect(&self, name: &str) -> Result<ContainerInfo, ApiError> {
        let e = self.entry(name)?;
        Ok(self.info(&e))
    }

    pub fn counts(&self) -> crate::api::ContainerCounts {
        let mut c = crate::api::ContainerCounts::default();
        for e in self.registry.lock().unwrap().entries.values() {
            c.total += 1;
            match e.state() {
                State::Running => c.running += 1,
                State::Exited => c.exited += 1,
                State::Created => c.created += 1,
            }
        }
        c
    }

    pub fn stats(&self, name: &str) -> Result<cgroup::Stats, ApiError> {
        let e = self.entry(name)?;
        Ok(self.cgroup_of(&e.rec()).stats())
    }

    /// `(name, app, version, restart_count)` of every container.
    pub fn restart_counts(&self) -> Vec<(String, String, String, u32)> {
        self.entries()
            .iter()
            .map(|e| {
                let r = e.rec();
                (
                    r.spec.name.clone(),
                    r.spec.app.clone().unwrap_or_default(),
                    r.spec.version.clone().unwrap_or_default(),
                    r.restart_count,
                )
            })
            .collect()
    }

    /// Streams log records (JSON lines) into `tx` from a blocking thread.
    pub fn logs(
        self: &Arc<Self>,
        name: &str,
        tail: Option<usize>,
        follow: bool,
        tx: tokio::sync::mpsc::Sender<String>,
    ) -> Result<(), ApiError> {
        let e = self.entry(name)?;
        let dir = self.log_dir(name);
        tokio::task::spawn_blocking(move || {
            let keep = || e.state() == State::Running;
            let mut out = |l: String| tx.blocking_send(l).is_ok();
            if let Err(err) = crate::telemetry::logs::read(&dir, tail, follow, &keep, &mut out) {
                tracing::warn!(dir = %dir.display(), error = %err, "log read");
            }
        });
        Ok(())
    }

    /// Blocks until the container is not running; its exit status.
    pub async fn wait(&self, name: &str) -> Result<ExitStatus, ApiError> {
        let e = self.entry(name)?;
        while !self.wait_exit(&e, Duration::from_secs(3600)).await {}
        let r = e.rec();
        Ok(ExitStatus {
            name: r.spec.name,
            exit_code: r.exit_code,
            signal: r.signal,
            oom_killed: r.oom_killed,
            finished_at: r.finished_at,
        })
    }
}
