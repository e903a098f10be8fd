//! Persistent container records: one JSON file per container, written
//! atomically (temp file, fsync, rename, fsync dir). A record that cannot be
//! parsed is moved to `quarantine/` with a log line, never a crash loop.

use crate::api::ContainerSpec;
use crate::cgroup::AppliedLimits;
use crate::config::Paths;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state: cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Created,
    Running,
    Exited,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Created => "created",
            State::Running => "running",
            State::Exited => "exited",
        }
    }
}

/// What the process inside runs, after merging the image config and the spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProcessConfig {
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: Option<String>,
}

/// Everything the agent knows of one container; enough to re-adopt it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    pub spec: ContainerSpec,
    pub process: ProcessConfig,
    /// Image layers, top first (overlay lowerdir order).
    pub layers: Vec<PathBuf>,
    pub state: State,
    pub pid: Option<i32>,
    /// Start time of `pid` (clock ticks since boot) to detect pid reuse.
    pub pid_start: Option<u64>,
    pub shim_pid: Option<i32>,
    pub shim_start: Option<u64>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// OOM kill counter of the cgroup when the current run started.
    pub oom_base: u64,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub restart_count: u32,
    /// Set by stop/kill so the restart policy leaves the container down.
    pub stop_requested: bool,
    pub cgroup_parent: String,
    pub limits: AppliedLimits,
    /// The container's address on the bridge (none without host networking).
    #[serde(default)]
    pub ip: Option<std::net::Ipv4Addr>,
    /// Host ports mapped to it.
    #[serde(default)]
    pub ports: Vec<crate::api::PortMapping>,
    /// First host id of its user namespace (`spec.userns`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_base: Option<u32>,
}

pub const RECORD: &str = "container.json";

/// The on-disk home of container records.
#[derive(Debug, Clone)]
pub struct Store {
    containers: PathBuf,
    quarantine: PathBuf,
}

impl Store {
    pub fn new(paths: &Paths) -> Result<Store, StoreError> {
        let s = Store {
            containers: paths.containers(),
            quarantine: paths.quarantine(),
        };
        for d in [&s.containers, &s.quarantine] {
            fs::create_dir_all(d).map_err(|source| StoreError::Io {
                action: "create",
                path: d.clone(),
                source,
            })?;
        }
        Ok(s)
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.containers.join(name)
    }

    /// Persists a record durably (fsync of file and directory): used when a
    /// container comes into existence, so a power loss cannot forget it.
    pub fn save(&self, rec: &ContainerRecord) -> Result<(), StoreError> {
        let data = serde_json::to_vec_pretty(rec).expect("records serialize");
        write_atomic(&self.dir(&rec.spec.name).join(RECORD), &data, true)
    }

    /// Persists runtime state (pids, exit status) atomically but without
    /// fsync: it survives any crash of the agent, and after a power loss every
    /// process it describes is gone anyway, so waiting for the disk buys nothing.
    pub fn save_runtime(&self, rec: &ContainerRecord) -> Result<(), StoreError> {
        let data = serde_json::to_vec_pretty(rec).expect("records serialize");
        write_atomic(&self.dir(&rec.spec.name).join(RECORD), &data, false)
    }

    /// Loads every record; corrupt ones are quarantined and logged.
    /// Directories without a record (a create cut short) are returned as orphans.
    pub fn load_all(&self) -> (Vec<ContainerRecord>, Vec<String>) {
        let mut recs = Vec::new();
        let mut orphans = Vec::new();
        let Ok(rd) = fs::read_dir(&self.containers) else {
            return (recs, orphans);
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path().join(RECORD);
            match fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<ContainerRecord>(&bytes) {
                    Ok(r) if r.spec.name == name => recs.push(r),
                    Ok(_) | Err(_) => {
                        let why = serde_json::from_slice::<ContainerRecord>(&bytes)
                            .err()
                            .map_or("name does not match its directory".to_string(), |e| {
                                e.to_string()
                            });
                        let dest = self.quarantine.join(format!(
                            "{name}-{}.json",
                            chrono::Utc::now().format("%Y%m%dT%H%M%S%.f")
                        ));
                        let _ = fs::rename(&path, &dest);
                        tracing::error!(container = %name, record = %path.display(), moved_to = %dest.display(), error = %why,
                            "corrupt container record quarantined; the container's cgroup and processes are cleaned up");
                        orphans.push(name);
                    }
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => orphans.push(name),
                Err(e) => {
                    tracing::error!(record = %path.display(), error = %e, "cannot read container record")
                }
            }
        }
        recs.sort_by(|a, b| a.spec.name.cmp(&b.spec.name));
        orphans.sort();
        (recs, orphans)
    }

    /// Removes the container's directory, logs included.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let d = self.dir(name);
        match fs::remove_dir_all(&d) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Io {
                action: "remove",
                path: d,
                source,
            }),
        }
    }
}

/// Writes `data` to `path` so a reader sees the old or the new content, never
/// half (temp file, rename); `durable` adds fsync of the file and directory.
pub fn write_atomic(path: &Path, data: &[u8], durable: bool) -> Result<(), StoreError> {
    let err = |action, source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().expect("record paths have a parent");
    fs::create_dir_all(dir).map_err(|e| err("create the directory of", e))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    let mut f = File::create(&tmp).map_err(|e| err("create", e))?;
    f.write_all(data).map_err(|e| err("write", e))?;
    if durable {
        f.sync_all().map_err(|e| err("fsync", e))?;
    }
    fs::rename(&tmp, path).map_err(|e| err("rename into", e))?;
    if durable {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("fsync the directory of", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn rec(name: &str) -> ContainerRecord {
        ContainerRecord {
            spec: crate::api::parse_spec(
                format!(r#"{{"name":"{name}","image":"rootfs:/x"}}"#).as_bytes(),
            )
            .unwrap(),
            process: ProcessConfig::default(),
            layers: vec![],
            state: State::Running,
            pid: Some(42),
            pid_start: Some(1),
            shim_pid: None,
            shim_start: None,
            exit_code: None,
            signal: None,
            oom_killed: false,
            oom_base: 0,
            created_at: "now".into(),
            started_at: None,
            finished_at: None,
            restart_count: 0,
            stop_requested: false,
            cgroup_parent: "hydra".into(),
            limits: AppliedLimits::default(),
            ip: None,
            ports: vec![],
            userns_base: None,
        }
    }

    #[test]
    fn save_load_and_quarantine() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = Paths::new(Some(tmp.path()), &Config::default(), None);
        let st = Store::new(&paths).unwrap();
        st.save(&rec("good")).unwrap();
        st.save(&rec("bad")).unwrap();
        // truncate one record: it must be quarantined, not crash the load
        let bad = st.dir("bad").join(RECORD);
        let len = fs::metadata(&bad).unwrap().len();
        fs::OpenOptions::new()
            .write(true)
            .open(&bad)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
        fs::create_dir_all(st.dir("halfmade")).unwrap();
        let (recs, orphans) = st.load_all();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0], rec("good"));
        assert_eq!(orphans, vec!["bad".to_string(), "halfmade".to_string()]);
        assert_eq!(fs::read_dir(paths.quarantine()).unwrap().count(), 1);
        assert!(!bad.exists());
    }
}
