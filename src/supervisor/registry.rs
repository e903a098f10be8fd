//! The containers the agent manages, by name: each entry holds its record
//! (behind a std mutex, never held across an `.await`), a tokio mutex that
//! serialises its lifecycle operations, its health, and a counter of exits
//! that waiters watch. Names being created or taken by records of a newer
//! release are reserved, so no two creates of one name can both win.

use super::error::{Error, Result};
use crate::model::{Health, Record, State};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

pub struct Entry {
    pub rec: Mutex<Record>,
    /// Serialises start/stop/remove of this container.
    pub op: tokio::sync::Mutex<()>,
    /// Bumped on every exit; waiters watch it.
    pub exits: watch::Sender<u64>,
    pub health: Mutex<Health>,
}

impl Entry {
    pub fn new(rec: Record) -> Arc<Entry> {
        let health = Health::initial(rec.spec().health.is_some());
        Arc::new(Entry {
            rec: Mutex::new(rec),
            op: tokio::sync::Mutex::new(()),
            exits: watch::channel(0).0,
            health: Mutex::new(health),
        })
    }

    /// A copy of the record (no lock held by the caller afterwards).
    pub fn rec(&self) -> Record {
        self.rec.lock().unwrap().clone()
    }

    pub fn state(&self) -> State {
        self.rec.lock().unwrap().state()
    }

    pub fn health(&self) -> Health {
        self.health.lock().unwrap().clone()
    }
}

#[derive(Default)]
struct Names {
    entries: BTreeMap<String, Arc<Entry>>,
    /// Names reserved by a create in progress, or by records this release
    /// cannot read: nobody may create them.
    reserved: BTreeSet<String>,
}

#[derive(Default)]
pub struct Registry {
    inner: Mutex<Names>,
}

impl Registry {
    pub fn get(&self, name: &str) -> Result<Arc<Entry>> {
        self.inner
            .lock()
            .unwrap()
            .entries
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(name.to_string()))
    }

    /// A snapshot of the entries, so no lock is held while using them.
    pub fn all(&self) -> Vec<Arc<Entry>> {
        self.inner
            .lock()
            .unwrap()
            .entries
            .values()
            .cloned()
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.lock().unwrap().entries.is_empty()
    }

    /// Reserves `name` for a create; Exists if it is taken or reserved.
    pub fn reserve(&self, name: &str) -> Result<()> {
        let mut n = self.inner.lock().unwrap();
        if n.entries.contains_key(name) || !n.reserved.insert(name.to_string()) {
            return Err(Error::Exists(name.to_string()));
        }
        Ok(())
    }

    /// Whether a create of `name` is in progress.
    pub fn is_reserved(&self, name: &str) -> bool {
        self.inner.lock().unwrap().reserved.contains(name)
    }

    /// Ends a reservation: with the entry the create made, or none.
    pub fn settle(&self, name: &str, entry: Option<Arc<Entry>>) {
        let mut n = self.inner.lock().unwrap();
        n.reserved.remove(name);
        if let Some(e) = entry {
            n.entries.insert(name.to_string(), e);
        }
    }

    /// Adds an adopted entry.
    pub fn insert(&self, name: &str, e: Arc<Entry>) {
        self.inner
            .lock()
            .unwrap()
            .entries
            .insert(name.to_string(), e);
    }

    pub fn remove(&self, name: &str) {
        self.inner.lock().unwrap().entries.remove(name);
    }
}
