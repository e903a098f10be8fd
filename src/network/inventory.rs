//! The host-port inventory: the pool, what is allocated to whom, and what
//! other processes hold, from the kernel's listeners.

use super::firewall::Mapping;
use super::ports::{self, PortPool};
use crate::config::PortRange;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    pub range: PortRange,
    pub free: usize,
    /// `(container, mapping)`, by host port.
    pub allocated: Vec<(String, Mapping)>,
    pub taken_by_others: Vec<Taken>,
}

/// A pool port some other process listens on.
#[derive(Debug, Clone, PartialEq)]
pub struct Taken {
    pub port: u16,
    pub pid: Option<i32>,
    pub process: Option<String>,
}

/// A listener found in /proc/net/tcp{,6}: port and socket inode.
pub type Listener = (u16, u64);

/// The inventory before its owners are looked up (a walk of /proc).
pub struct Partial {
    inv: Inventory,
    others: BTreeMap<u16, u64>,
}

pub(super) fn build(
    pool: &PortPool,
    maps: &BTreeMap<String, Vec<Mapping>>,
    listening: BTreeMap<u16, u64>,
) -> Partial {
    let (start, end) = (pool.start, pool.end);
    let mut allocated: Vec<(String, Mapping)> = maps
        .iter()
        .flat_map(|(n, ms)| ms.iter().map(move |m| (n.clone(), m.clone())))
        .collect();
    allocated.sort_by_key(|(_, m)| m.host_port);
    let others: BTreeMap<u16, u64> = listening
        .into_iter()
        .filter(|(p, _)| (start..=end).contains(p) && !pool.allocated().contains_key(p))
        .collect();
    let busy: BTreeSet<u16> = others.keys().copied().collect();
    Partial {
        inv: Inventory {
            range: PortRange { start, end },
            free: pool.free(&busy),
            allocated,
            taken_by_others: Vec::new(),
        },
        others,
    }
}

impl Partial {
    /// Finds the processes holding the other ports.
    pub fn with_owners(mut self) -> Inventory {
        let owners = ports::socket_owners(&self.others.values().copied().collect());
        self.inv.taken_by_others = self
            .others
            .iter()
            .map(|(p, ino)| Taken {
                port: *p,
                pid: owners.get(ino).map(|o| o.0),
                process: owners.get(ino).map(|o| o.1.clone()),
            })
            .collect();
        self.inv
    }
}
