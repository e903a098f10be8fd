//! The lifecycle on fakes (no root): create/start/stop/kill/remove, exit
//! and OOM recording, the restart policy, health failures, adoption after a
//! crash, bad input leaving nothing behind.

mod adopt;
mod fakes;
mod lifecycle;

use super::{Deps, Supervisor};
use crate::config::{Config, Paths};
use crate::model::{Action, ContainerSpec, Event, State};
use crate::network::driver::fake::{FakeFirewall, FakeLinks};
use crate::telemetry::metrics::AgentMetrics;
use fakes::{FakeCgroups, FakeRuntime};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub cfg: Config,
    pub cg: Arc<FakeCgroups>,
    pub rt: Arc<FakeRuntime>,
    pub fw: Arc<FakeFirewall>,
}

impl Harness {
    pub fn new(mut cfg: Config) -> Harness {
        // the fakes have no layers to limit (tests/disk_limits.rs has)
        cfg.storage.mechanism = crate::config::StorageMechanism::None;
        cfg.storage.require_limits = false;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("img")).unwrap();
        let (cg, rt) = (
            Arc::new(FakeCgroups::default()),
            Arc::new(FakeRuntime::default()),
        );
        *cg.procs.lock().unwrap() = Some(rt.clone());
        Harness {
            dir,
            cfg,
            cg,
            rt,
            fw: Arc::default(),
        }
    }

    pub fn paths(&self) -> Paths {
        Paths::new(Some(self.dir.path()), &self.cfg, None)
    }

    /// A supervisor on the fakes (a new one sees what earlier ones left).
    pub async fn boot(&self) -> (Arc<Supervisor>, usize) {
        let deps = Deps {
            cgroups: self.cg.clone(),
            runtime: self.rt.clone(),
            firewall: Box::new(self.fw.clone()),
            links: Box::new(FakeLinks),
        };
        Supervisor::boot(&self.cfg, self.paths(), deps, AgentMetrics::default())
            .await
            .unwrap()
    }

    pub fn spec(&self, name: &str) -> ContainerSpec {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "image": format!("rootfs:{}", self.dir.path().join("img").display()),
            "command": ["/bin/app"],
        }))
        .unwrap()
    }

    /// Directories under the state's containers dir.
    pub fn state_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.paths().containers())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// Polls `f` until true, for at most 10 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn state(sup: &Supervisor, name: &str) -> State {
    sup.inspect(name).unwrap().record.state()
}

/// The actions of the events received so far.
pub fn actions(rx: &mut tokio::sync::broadcast::Receiver<Event>) -> Vec<Action> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| e.action)
        .collect()
}
