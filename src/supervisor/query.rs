//! Read-only views of the containers: inspect, list, counts, stats, logs,
//! wait. The API turns the views into its JSON.

use super::error::Result;
use super::registry::Entry;
use super::{blocking, Supervisor};
use crate::cgroup::Stats;
use crate::model::{Health, Record, State};
use std::sync::Arc;
use std::time::Duration;

/// A container as the front ends show it.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    pub record: Record,
    pub health: Health,
    /// Its cgroup's path.
    pub cgroup: String,
}

/// How a container's last run ended (`wait`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExitView {
    pub name: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    pub running: usize,
    pub exited: usize,
    pub created: usize,
}

impl Supervisor {
    pub(super) fn view(&self, e: &Entry) -> ContainerView {
        let record = e.rec();
        let cgroup = self
            .cgroups
            .display_path(&record.facts().cgroup_parent, record.name());
        ContainerView {
            health: e.health(),
            cgroup,
            record,
        }
    }

    pub fn list(&self) -> Vec<ContainerView> {
        self.registry.all().iter().map(|e| self.view(e)).collect()
    }

    pub fn inspect(&self, name: &str) -> Result<ContainerView> {
        Ok(self.view(&*self.registry.get(name)?))
    }

    /// Whether a create of `name` is in progress (its name reserved).
    pub fn creating(&self, name: &str) -> bool {
        self.registry.is_reserved(name)
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for e in self.registry.all() {
            c.total += 1;
            match e.state() {
                State::Running => c.running += 1,
                State::Exited => c.exited += 1,
                State::Created => c.created += 1,
            }
        }
        c
    }

    /// The container's cgroup counters, read now (on a blocking thread).
    pub async fn stats(&self, name: &str) -> Result<Stats> {
        let r = self.registry.get(name)?.rec();
        let (cg, disks, dir) = (
            self.cgroups.clone(),
            self.disks.clone(),
            self.store.dir(name),
        );
        blocking("stats", move || {
            let mut s = cg.stats(&r.facts().cgroup_parent, r.name());
            s.disk = r.facts().limits.disk.as_ref().and_then(|d| {
                disks.usage(&dir, d).map(|u| crate::model::DiskStats {
                    used: u.bytes,
                    limit: d.bytes,
                    inodes_used: u.inodes,
                    inodes_limit: d.inodes,
                })
            });
            Ok(s)
        })
        .await
    }

    /// Streams log records (JSON lines) into `tx` from a blocking thread;
    /// with `follow`, until the container stops or `tx` is closed.
    pub fn logs(
        &self,
        name: &str,
        tail: Option<usize>,
        follow: bool,
        tx: tokio::sync::mpsc::Sender<String>,
    ) -> Result<()> {
        let e = self.registry.get(name)?;
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

    /// Blocks until the container is not running; how it ended.
    pub async fn wait(&self, name: &str) -> Result<ExitView> {
        let e: Arc<Entry> = self.registry.get(name)?;
        while !self.wait_exit(&e, Duration::from_secs(3600)).await {}
        let r = e.rec();
        let exit = r.exit();
        Ok(ExitView {
            name: r.name().to_string(),
            exit_code: exit.and_then(|x| x.exit_code),
            signal: exit.and_then(|x| x.signal),
            oom_killed: exit.is_some_and(|x| x.oom_killed),
            finished_at: exit.map(|x| x.finished_at.clone()),
        })
    }
}
