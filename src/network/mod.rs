//! Host networking: the bridge, one veth and IP per container, the host-port
//! pool and its inventory, DNAT to the containers' ports and the allowlist
//! firewall. State (IPs, ports) lives in the container records; this module
//! rebuilds its allocators from them at start, so nothing is handed out twice.
//! The kernel is reached only through [`driver::FirewallDriver`] and
//! [`driver::Links`].

mod diag;
pub mod driver;
pub mod firewall;
mod inventory;
pub mod ip6;
pub mod ipam;
pub mod iptables;
pub mod netlink;
pub mod ports;
pub mod restore;

pub use inventory::{Inventory, Listener, Taken};
pub use iptables::FirewallError;

use crate::config::{NetworkConfig, PortRange};
use crate::fsutil::{write_atomic, WriteError};
use crate::model::{Allocation, Cidr, PortMapping, PortSpec};
use driver::{FirewallDriver, Links};
use firewall::Mapping;
use ipam::Ipam;
use ports::{PortError, PortPool};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("no free address left in {subnet}")]
    AddressesExhausted { subnet: Cidr },
    #[error(transparent)]
    Port(#[from] PortError),
    #[error(transparent)]
    Firewall(#[from] FirewallError),
    #[error("network: cannot set up the bridge {bridge}")]
    Bridge {
        bridge: String,
        #[source]
        source: std::io::Error,
    },
    #[error("network: cannot persist the allowlist")]
    Persist(#[from] WriteError),
}

/// What the container's init needs to plug itself in (see runtime::init).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetLaunch {
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub bridge_index: u32,
    /// Name of the host end of the veth (unique per run).
    pub host_ifname: String,
    pub resolv_conf: String,
}

/// The networking part of the config, as the network uses it.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bridge: String,
    pub subnet: Cidr,
    pub pool: PortRange,
    pub allowlist: Vec<Cidr>,
    pub host_ports: Vec<u16>,
    pub egress_allow: Vec<Cidr>,
    pub dns: Vec<IpAddr>,
    pub ip_range: Cidr,
}

impl Settings {
    pub fn from_config(c: &NetworkConfig) -> Settings {
        Settings {
            bridge: c.bridge.clone(),
            subnet: c.subnet,
            pool: c.port_range,
            allowlist: c.allowlist.clone(),
            host_ports: c.host_ports.clone(),
            egress_allow: c.egress_allow.clone(),
            dns: c.dns.clone(),
            ip_range: c.ip_range.unwrap_or(c.subnet),
        }
    }
}

/// The DNAT mappings of a container's ports to its address.
fn mappings(a: &Allocation) -> Vec<Mapping> {
    let Some(ip) = a.ip else { return Vec::new() };
    a.ports
        .iter()
        .map(|p| Mapping {
            host_port: p.host_port,
            ip,
            container_port: p.container_port,
        })
        .collect()
}

struct State {
    ipam: Ipam,
    pool: PortPool,
    mappings: BTreeMap<String, Vec<Mapping>>,
    allowlist: Vec<Cidr>,
}

/// The persisted allowlist (`firewall.json`).
#[derive(Serialize, Deserialize)]
struct SavedAllowlist {
    cidrs: Vec<Cidr>,
}

pub struct Network {
    pub settings: Settings,
    firewall: Box<dyn FirewallDriver>,
    bridge_index: u32,
    state: Mutex<State>,
    /// iptables-save lines of our chains after the last apply (drift baseline).
    applied: Mutex<Vec<String>>,
    allowlist_file: PathBuf,
    /// Times the drift check found our rules changed and restored them.
    pub drift_restores: Counter,
    /// Serialises changes to the rules with the drift check, so a check in
    /// the middle of an install never mistakes it for drift.
    ops: Mutex<()>,
}

impl Network {
    /// Blocking. Brings up the bridge, rebuilds the allocators from the
    /// records and installs the whole rule set before any container starts.
    pub fn setup(
        settings: Settings,
        existing: &[(String, Allocation)],
        state_dir: &std::path::Path,
        firewall: Box<dyn FirewallDriver>,
        links: &dyn Links,
    ) -> Result<Network, NetworkError> {
        let bridge_index = links
            .prepare(&settings.bridge, &settings.subnet)
            .map_err(|source| NetworkError::Bridge {
                bridge: settings.bridge.clone(),
                source,
            })?;
        let allowlist_file = state_dir.join("firewall.json");
        let allowlist = std::fs::read(&allowlist_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<SavedAllowlist>(&b).ok())
            .map_or_else(|| settings.allowlist.clone(), |a| a.cidrs);
        let mut st = State {
            ipam: Ipam::with_range(settings.subnet, settings.ip_range),
            pool: PortPool::new(settings.pool.start, settings.pool.end),
            mappings: BTreeMap::new(),
            allowlist,
        };
        for (name, a) in existing {
            if let Some(ip) = a.ip {
                if !st.ipam.reserve(ip) {
                    tracing::error!(container = %name, %ip, "address outside the subnet or already in use; not reserved");
                }
                for p in &a.ports {
                    st.pool.reserve(p.host_port, name);
                }
                st.mappings.insert(name.clone(), mappings(a));
            }
        }
        let net = Network {
            settings,
            firewall,
            bridge_index,
            state: Mutex::new(st),
            applied: Mutex::new(Vec::new()),
            allowlist_file,
            drift_restores: Counter::default(),
            ops: Mutex::new(()),
        };
        net.apply_all()?;
        Ok(net)
    }

    fn spec(&self, st: &State) -> firewall::Spec {
        firewall::Spec {
            bridge: self.settings.bridge.clone(),
            subnet: self.settings.subnet,
            allowlist: st.allowlist.clone(),
            mappings: st.mappings.values().flatten().cloned().collect(),
            host_ports: self.settings.host_ports.clone(),
            egress_allow: self.settings.egress_allow.clone(),
            ours: self.ours(),
        }
    }

    fn apply_all(&self) -> Result<(), FirewallError> {
        let st = self.state.lock().unwrap();
        let saved = self.firewall.apply_all(&self.spec(&st))?;
        *self.applied.lock().unwrap() = saved;
        Ok(())
    }

    /// Allocates an address and host ports for a new container.
    pub fn allocate(&self, name: &str, wanted: &[PortSpec]) -> Result<Allocation, NetworkError> {
        let busy: BTreeSet<u16> = ports::listeners().keys().copied().collect();
        let mut st = self.state.lock().unwrap();
        let ip = st.ipam.allocate().ok_or(NetworkError::AddressesExhausted {
            subnet: self.settings.ip_range,
        })?;
        let mut got = Vec::new();
        for w in wanted {
            match st.pool.allocate(w.host_port, name, &busy) {
                Ok(hp) => got.push(PortMapping {
                    host_ip: "0.0.0.0".into(),
                    host_port: hp,
                    container_port: w.container_port,
                }),
                Err(e) => {
                    for p in &got {
                        st.pool.release(p.host_port);
                    }
                    st.ipam.release(ip);
                    return Err(e.into());
                }
            }
        }
        Ok(Allocation {
            ip: Some(ip),
            ports: got,
        })
    }

    /// Installs the DNAT rules of a started container: one transaction, so a
    /// failure leaves no rule behind.
    pub fn install(&self, name: &str, a: &Allocation) -> Result<(), NetworkError> {
        let maps = mappings(a);
        if maps.is_empty() {
            // nothing to install: never wait behind a drift check (15
            // iptables processes; 1.7 s under emulation)
            return Ok(());
        }
        let _ops = self.ops.lock().unwrap();
        let before: Vec<Mapping> = self.all_mappings();
        let (input, touched) = firewall::render_change(&before, &maps, &[]);
        self.firewall.apply_change(&input)?;
        self.state
            .lock()
            .unwrap()
            .mappings
            .insert(name.to_string(), maps);
        self.rebase(&touched);
        Ok(())
    }

    /// Removes a container's rules and frees its address and ports; errors
    /// are logged and the rest is still released.
    pub fn release(&self, name: &str, a: &Allocation) {
        // a container without ports has no rules: its address is freed
        // without waiting behind a drift check
        let ops = (!a.ports.is_empty()).then(|| self.ops.lock().unwrap());
        let before: Vec<Mapping> = self.all_mappings();
        let maps = self
            .state
            .lock()
            .unwrap()
            .mappings
            .remove(name)
            .unwrap_or_default();
        if !maps.is_empty() {
            let (input, touched) = firewall::render_change(&before, &[], &maps);
            match self.firewall.apply_change(&input) {
                Ok(()) => self.rebase(&touched),
                Err(e) => {
                    tracing::error!(container = name, error = %e, "teardown: DNAT rules; the drift check resyncs");
                    // an empty baseline makes the next drift check reapply
                    // everything from the state, which no longer has them
                    self.applied.lock().unwrap().clear();
                }
            }
        }
        drop(ops);
        let mut st = self.state.lock().unwrap();
        for p in &a.ports {
            st.pool.release(p.host_port);
        }
        if let Some(ip) = a.ip {
            st.ipam.release(ip);
        }
    }

    /// Our part of a shared bridge (see [`firewall::Spec::ours`]).
    fn ours(&self) -> Option<Cidr> {
        (self.settings.ip_range != self.settings.subnet).then_some(self.settings.ip_range)
    }

    fn all_mappings(&self) -> Vec<Mapping> {
        let st = self.state.lock().unwrap();
        st.mappings.values().flatten().cloned().collect()
    }

    /// Updates the drift baseline for the buckets a change touched.
    fn rebase(&self, touched: &[u16]) {
        let all = self.all_mappings();
        let mut b = self.applied.lock().unwrap();
        let ours = |l: &str| {
            touched.iter().any(|t| {
                l == format!("nat -A {}", firewall::dispatch_rule(*t))
                    || l.starts_with(&format!("nat -A HYDRA-DNAT-{t} "))
            })
        };
        b.retain(|l| !ours(l));
        for t in touched {
            b.extend(firewall::saved_bucket(*t, &all));
        }
        b.sort();
    }

    /// The plan for the container's init.
    pub fn launch(&self, ip: Ipv4Addr) -> NetLaunch {
        let mut rnd = [0u8; 6];
        let _ = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut rnd));
        NetLaunch {
            ip,
            prefix: self.settings.subnet.prefix,
            gateway: self.settings.subnet.gateway(),
            bridge_index: self.bridge_index,
            host_ifname: format!("hy{}", hex::encode(rnd)),
            resolv_conf: resolv_conf(&self.settings.dns),
        }
    }

    pub fn allowlist(&self) -> Vec<Cidr> {
        self.state.lock().unwrap().allowlist.clone()
    }

    /// Replaces the allowlist (one transaction) and persists it.
    pub fn set_allowlist(&self, cidrs: Vec<Cidr>) -> Result<Vec<Cidr>, NetworkError> {
        self.change_allowlist(|_| cidrs)
    }

    /// Adds and removes CIDRs in one server-side change (no read-edit-write
    /// race between two operators); the allowlist after it.
    pub fn edit_allowlist(&self, add: &[Cidr], remove: &[Cidr]) -> Result<Vec<Cidr>, NetworkError> {
        self.change_allowlist(|old| {
            let mut new: Vec<Cidr> = old
                .iter()
                .filter(|c| !remove.contains(c))
                .copied()
                .collect();
            for c in add {
                if !new.contains(c) {
                    new.push(*c);
                }
            }
            new
        })
    }

    fn change_allowlist(
        &self,
        f: impl FnOnce(&[Cidr]) -> Vec<Cidr>,
    ) -> Result<Vec<Cidr>, NetworkError> {
        let _ops = self.ops.lock().unwrap();
        let mut st = self.state.lock().unwrap();
        let new = f(&st.allowlist);
        let old = std::mem::replace(&mut st.allowlist, new);
        match self.firewall.apply_allowlist(&self.spec(&st)) {
            Ok(saved) => *self.applied.lock().unwrap() = saved,
            Err(e) => {
                st.allowlist = old;
                return Err(e.into());
            }
        }
        let out = st.allowlist.clone();
        drop(st);
        let data = serde_json::to_vec(&SavedAllowlist { cidrs: out.clone() }).expect("json");
        write_atomic(&self.allowlist_file, &data, true)?;
        Ok(out)
    }

    /// Restores our rules if someone removed or changed them. True if it did.
    pub fn check_drift(&self) -> Result<bool, FirewallError> {
        let _ops = self.ops.lock().unwrap();
        let now = self.firewall.saved_rules()?;
        let drifted = now != *self.applied.lock().unwrap()
            || !self
                .firewall
                .hooks_present(&self.settings.bridge, self.ours().as_ref());
        if drifted {
            self.apply_all()?;
            self.drift_restores.inc();
        }
        Ok(drifted)
    }

    /// The host-port inventory, checked against the kernel's listeners.
    pub fn inventory(&self) -> Inventory {
        let listening = ports::listeners();
        let st = self.state.lock().unwrap();
        let partial = inventory::build(&st.pool, &st.mappings, listening);
        drop(st);
        // the /proc walk for the owners, without holding the state
        partial.with_owners()
    }
}

/// The container's resolv.conf: configured servers, else the host's minus
/// loopback resolvers (unreachable from a container).
fn resolv_conf(dns: &[IpAddr]) -> String {
    if !dns.is_empty() {
        return dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    host.lines()
        .filter(|l| !(l.starts_with("nameserver") && (l.contains(" 127.") || l.contains(" ::1"))))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests;
