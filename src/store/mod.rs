//! Persistent container records: one JSON file per container
//! (`containers/<name>/container.json`), written atomically. A record that
//! cannot be parsed is moved to `quarantine/` with a log line, never a crash
//! loop; one written by a newer release is left alone.

mod disk;
mod trash;

pub use disk::{LayoutError, StoredRecord, FORMAT};

use crate::config::Paths;
use crate::fsutil::WriteError;
use crate::model::Record;
use std::fs;
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state: cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state: {0}")]
    Write(#[from] WriteError),
    /// The directory of records is not the one the agent started with: it
    /// was removed, renamed or replaced (an unmounted volume shows the
    /// directory under it). Nothing is written there until it is back.
    #[error("state: {path} was removed or replaced since the agent started")]
    Gone { path: PathBuf },
}

impl StoreError {
    /// True when the state filesystem is full (or over quota).
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::Write(w) => w.is_no_space(),
            StoreError::Io { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
            }
            StoreError::Gone { .. } => false,
        }
    }
}

pub const RECORD: &str = "container.json";

/// What [`Store::load_all`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<Record>,
    /// Directories without a usable record (a create cut short, or a
    /// record quarantined just now): their remains are to be cleaned.
    pub orphans: Vec<String>,
    /// Records of a newer layout: not adopted, not touched, their names taken.
    pub foreign: Vec<String>,
}

/// The on-disk home of container records.
#[derive(Debug, Clone)]
pub struct Store {
    containers: PathBuf,
    quarantine: PathBuf,
    /// Device and inode of `containers` when the store was opened.
    id: (u64, u64),
    trash: std::sync::Arc<trash::Trash>,
}

fn identity(p: &std::path::Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(p)?;
    Ok((m.dev(), m.ino()))
}

impl Store {
    pub fn new(paths: &Paths) -> Result<Store, StoreError> {
        let (containers, quarantine) = (paths.containers(), paths.quarantine());
        for d in [&containers, &quarantine] {
            fs::create_dir_all(d).map_err(|source| StoreError::Io {
                action: "create",
                path: d.clone(),
                source,
            })?;
        }
        let id = identity(&containers).map_err(|source| StoreError::Io {
            action: "stat",
            path: containers.clone(),
            source,
        })?;
        let trash = trash::Trash::open(&paths.trash()).map_err(|source| StoreError::Io {
            action: "open",
            path: paths.trash(),
            source,
        })?;
        Ok(Store {
            containers,
            quarantine,
            id,
            trash: std::sync::Arc::new(trash),
        })
    }

    /// Whether the directory of records is still the one opened (not
    /// removed, renamed or replaced): checked before a container is made.
    pub fn check(&self) -> Result<(), StoreError> {
        match identity(&self.containers) {
            Ok(id) if id == self.id => Ok(()),
            _ => Err(StoreError::Gone {
                path: self.containers.clone(),
            }),
        }
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.containers.join(name)
    }

    /// Persists a record atomically. `durable` (fsync of file and
    /// directory) when a container comes into existence, so a power loss
    /// cannot forget it; runtime state (pids, exit status) goes without: it
    /// survives any crash of the agent, and after a power loss every process
    /// it describes is gone anyway.
    pub fn save(&self, rec: &Record, durable: bool) -> Result<(), StoreError> {
        // never into a directory made anew where the real one was
        self.check()?;
        let data = serde_json::to_vec_pretty(&StoredRecord::from(rec)).expect("records serialize");
        // the container's own directory may be made, its parents never:
        // the directory of records may vanish between the check and the
        // write, and nothing is made where it was
        let dir = self.dir(rec.name());
        match fs::create_dir(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(StoreError::Io {
                    action: "create",
                    path: dir,
                    source: e,
                })
            }
            _ => {}
        }
        Ok(crate::fsutil::replace_file(
            &self.dir(rec.name()).join(RECORD),
            &data,
            durable,
        )?)
    }

    /// Loads every record; corrupt ones are quarantined and logged.
    pub fn load_all(&self) -> Loaded {
        let mut out = Loaded::default();
        let Ok(rd) = fs::read_dir(&self.containers) else {
            return out;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path().join(RECORD);
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    out.orphans.push(name);
                    continue;
                }
                Err(e) => {
                    tracing::error!(record = %path.display(), error = %e, "cannot read container record");
                    out.foreign.push(name);
                    continue;
                }
            };
            match parse(&bytes, &name) {
                Ok(r) => out.records.push(r),
                Err(Bad::Newer(e)) => {
                    tracing::error!(container = %name, record = %path.display(), error = %e,
                        "container record left alone: not adopted, not cleaned");
                    out.foreign.push(name);
                }
                Err(Bad::Corrupt(why)) => {
                    self.quarantine(&name, &path, &why);
                    out.orphans.push(name);
                }
            }
        }
        out.records.sort_by(|a, b| a.name().cmp(b.name()));
        out.orphans.sort();
        out.foreign.sort();
        out
    }

    fn quarantine(&self, name: &str, path: &std::path::Path, why: &str) {
        let dest = self.quarantine.join(format!(
            "{name}-{}.json",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.f")
        ));
        let _ = fs::rename(path, &dest);
        tracing::error!(container = %name, record = %path.display(), moved_to = %dest.display(), error = %why,
            "corrupt container record quarantined; the container's cgroup and processes are cleaned up");
    }

    /// Removes the container's directory, logs included, as a removal the
    /// API answers: moved into the trash at once and deleted there in the
    /// background ([`trash`]); deleted here where it cannot be moved.
    pub fn discard(&self, name: &str) -> Result<(), StoreError> {
        match self.trash.put(&self.dir(name)) {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(container = %name, error = %e, "cannot move into the trash: deleted in place");
                self.remove(name)
            }
        }
    }

    /// Removes the container's directory, logs included, before answering
    /// (what a failed create made: its error means nothing is left).
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        let d = self.dir(name);
        // a layer still mounted in it (a discard that could not use the
        // trash) is unmounted first, as the trash does
        trash::unmount_below(&d);
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

enum Bad {
    Newer(LayoutError),
    Corrupt(String),
}

fn parse(bytes: &[u8], dir_name: &str) -> Result<Record, Bad> {
    let stored: StoredRecord =
        serde_json::from_slice(bytes).map_err(|e| Bad::Corrupt(e.to_string()))?;
    if stored.spec.name != dir_name {
        return Err(Bad::Corrupt("name does not match its directory".into()));
    }
    match Record::try_from(stored) {
        Ok(r) => Ok(r),
        Err(e @ LayoutError::Newer(_)) => Err(Bad::Newer(e)),
        Err(e) => Err(Bad::Corrupt(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
