//! Fakes of the adapters for unit tests of the lifecycle (no root, no
//! kernel features): cgroups kept in a map, a runtime whose processes are
//! entries the test ends as it likes.

use crate::cgroup::{CgroupError, Cgroups, ContainerCgroup, Mode, Stats};
use crate::model::{AppliedLimits, Limits, ProcRef};
use crate::runtime::{ExitFuture, ExitRecord, Launch, ProbeError, Runtime, RuntimeError, Started};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Default)]
pub struct FakeCgroups {
    /// (parent, name) -> OOM kills.
    pub groups: Mutex<BTreeMap<(String, String), u64>>,
    pub fail_create: AtomicBool,
    pub kills: AtomicUsize,
    /// The processes a kill reaches, as in a real cgroup.
    pub procs: Mutex<Option<std::sync::Arc<FakeRuntime>>>,
}

impl FakeCgroups {
    fn kill(&self, name: &str) {
        self.kills.fetch_add(1, Ordering::SeqCst);
        if let Some(rt) = self.procs.lock().unwrap().as_ref() {
            rt.finish(name, None, Some(libc::SIGKILL));
        }
    }

    pub fn names(&self) -> Vec<String> {
        self.groups
            .lock()
            .unwrap()
            .keys()
            .map(|(_, n)| n.clone())
            .collect()
    }
    pub fn oom(&self, name: &str) {
        for ((_, n), v) in self.groups.lock().unwrap().iter_mut() {
            if n == name {
                *v += 1;
            }
        }
    }
    pub fn add_stray(&self, parent: &str, name: &str) {
        self.groups
            .lock()
            .unwrap()
            .insert((parent.into(), name.into()), 0);
    }
}

impl Cgroups for FakeCgroups {
    fn mode(&self) -> Mode {
        Mode::V2
    }
    fn create(
        &self,
        parent: &str,
        name: &str,
        l: &Limits,
        _io: &Path,
    ) -> Result<AppliedLimits, CgroupError> {
        if self.fail_create.load(Ordering::SeqCst) {
            return Err(CgroupError::Setup("injected failure".into()));
        }
        self.groups
            .lock()
            .unwrap()
            .insert((parent.into(), name.into()), 0);
        Ok(AppliedLimits {
            memory: l.memory.map(|m| m.0),
            pids: l.pids,
            cpus: l.cpus,
            ..Default::default()
        })
    }
    fn procs_files(&self, _parent: &str, _name: &str) -> Vec<PathBuf> {
        Vec::new()
    }
    fn display_path(&self, parent: &str, name: &str) -> String {
        format!("/fake/{parent}/{name}")
    }
    fn oom_kills(&self, parent: &str, name: &str) -> u64 {
        let g = self.groups.lock().unwrap();
        g.get(&(parent.to_string(), name.to_string()))
            .copied()
            .unwrap_or(0)
    }
    fn kill_all(&self, _p: &str, name: &str, _t: Duration) -> Result<(), CgroupError> {
        self.kill(name);
        Ok(())
    }
    fn remove(&self, parent: &str, name: &str) -> Result<(), CgroupError> {
        self.kill(name);
        self.groups
            .lock()
            .unwrap()
            .remove(&(parent.to_string(), name.to_string()));
        Ok(())
    }
    fn stats(&self, _parent: &str, _name: &str) -> Stats {
        Stats::default()
    }
    fn children(&self, parent: &str) -> Vec<String> {
        let g = self.groups.lock().unwrap();
        g.keys()
            .filter(|(p, _)| p == parent)
            .map(|(_, n)| n.clone())
            .collect()
    }
    fn remove_parent(&self, _parent: &str) {}
    fn sampled(&self, _parent: &str, _name: &str) -> Option<ContainerCgroup> {
        None
    }
}

struct Proc {
    name: String,
    exit_file: PathBuf,
    done: watch::Sender<bool>,
}

/// Processes as map entries: `start` makes an init and a shim, `finish`
/// ends them as the shim would (writing its exit file), `vanish` kills the
/// shim without one.
#[derive(Default)]
pub struct FakeRuntime {
    next: AtomicI32,
    /// By shim pid.
    procs: Mutex<HashMap<i32, Proc>>,
    pub fail_start: Mutex<Option<RuntimeError>>,
    pub unhealthy: AtomicBool,
    pub starts: AtomicUsize,
    pub signals: Mutex<Vec<i32>>,
}

impl FakeRuntime {
    fn shim_of(&self, name: &str) -> Option<i32> {
        let p = self.procs.lock().unwrap();
        p.iter().find(|(_, v)| v.name == name).map(|(k, _)| *k)
    }

    /// The container's process exits with `code` or `signal`.
    pub fn finish(&self, name: &str, code: Option<i32>, signal: Option<i32>) {
        let Some(shim) = self.shim_of(name) else {
            return;
        };
        let p = self
            .procs
            .lock()
            .unwrap()
            .remove(&shim)
            .expect("found above");
        let rec = ExitRecord {
            exit_code: code,
            signal,
            finished_at: crate::model::now(),
        };
        std::fs::write(&p.exit_file, serde_json::to_vec(&rec).unwrap()).unwrap();
        p.done.send_replace(true);
    }

    /// The shim dies without writing an exit status.
    pub fn vanish(&self, name: &str) {
        if let Some(shim) = self.shim_of(name) {
            let p = self
                .procs
                .lock()
                .unwrap()
                .remove(&shim)
                .expect("found above");
            p.done.send_replace(true);
        }
    }

    pub fn running(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .procs
            .lock()
            .unwrap()
            .values()
            .map(|p| p.name.clone())
            .collect();
        v.sort();
        v
    }
}

impl Runtime for FakeRuntime {
    fn start(&self, plan: &Launch) -> Result<Started, RuntimeError> {
        if let Some(e) = self.fail_start.lock().unwrap().take() {
            return Err(e);
        }
        if plan.process.argv[0] == "/missing" {
            return Err(RuntimeError::Failed {
                field: "command".into(),
                message: "cannot execute \"/missing\"".into(),
            });
        }
        self.starts.fetch_add(1, Ordering::SeqCst);
        let pid = 1000 + 2 * self.next.fetch_add(1, Ordering::SeqCst);
        self.procs.lock().unwrap().insert(
            pid + 1,
            Proc {
                name: plan.name.clone(),
                exit_file: plan.exit_file.clone(),
                done: watch::channel(false).0,
            },
        );
        Ok(Started {
            init: ProcRef { pid, start: 7 },
            shim: ProcRef {
                pid: pid + 1,
                start: 7,
            },
        })
    }
    fn is_alive(&self, p: ProcRef) -> bool {
        let procs = self.procs.lock().unwrap();
        procs.contains_key(&p.pid) || procs.contains_key(&(p.pid + 1))
    }
    fn signal(&self, p: ProcRef, sig: i32) -> Result<bool, RuntimeError> {
        self.signals.lock().unwrap().push(sig);
        let name = self
            .procs
            .lock()
            .unwrap()
            .get(&(p.pid + 1))
            .map(|x| x.name.clone());
        match name {
            Some(n) => {
                self.finish(&n, None, Some(sig));
                Ok(true)
            }
            None => Ok(false),
        }
    }
    fn exited(&self, shim: ProcRef) -> ExitFuture {
        let rx = self
            .procs
            .lock()
            .unwrap()
            .get(&shim.pid)
            .map(|p| p.done.subscribe());
        Box::pin(async move {
            if let Some(mut rx) = rx {
                let _ = rx.wait_for(|d| *d).await;
            }
        })
    }
    fn read_exit(&self, file: &Path) -> Option<ExitRecord> {
        serde_json::from_slice(&std::fs::read(file).ok()?).ok()
    }
    fn probe(
        &self,
        _init: ProcRef,
        _port: u16,
        _path: &str,
        _t: Duration,
    ) -> Result<(), ProbeError> {
        match self.unhealthy.load(Ordering::SeqCst) {
            true => Err(ProbeError::Status(503)),
            false => Ok(()),
        }
    }
}
