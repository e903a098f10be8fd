//! Host networking: the bridge, one veth and IP per container, the host-port
//! pool and its inventory, DNAT to the containers' ports and the allowlist
//! firewall. State (IPs, ports) lives in the container records; this module
//! rebuilds its allocators from them at start, so nothing is handed out twice.

pub mod firewall;
pub mod ipam;
pub mod netlink;
pub mod ports;
pub mod restore;

use crate::api::{ApiError, PortMapping, PortSpec};
use crate::config::NetworkConfig;
use firewall::Mapping;
use ipam::{Cidr, Ipam};
use ports::{PortError, PortPool};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

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

#[derive(Debug, Clone)]
pub struct Settings {
    pub bridge: String,
    pub subnet: Cidr,
    pub pool: (u16, u16),
    pub allowlist: Vec<Cidr>,
    pub host_ports: Vec<u16>,
    pub egress_allow: Vec<Cidr>,
    pub dns: Vec<String>,
    pub ip_range: Cidr,
}

impl Settings {
    pub fn from_config(c: &NetworkConfig) -> Result<Settings, String> {
        let cidrs = |v: &[String]| {
            v.iter()
                .map(|s| Cidr::parse(s))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Settings {
            bridge: c.bridge.clone(),
            subnet: Cidr::parse(&c.subnet)?,
            pool: crate::config::parse_port_range(&c.port_range).ok_or("bad port_range")?,
            allowlist: cidrs(&c.allowlist)?,
            host_ports: c.host_ports.clone(),
            egress_allow: cidrs(&c.egress_allow)?,
            dns: c.dns.clone(),
            ip_range: match &c.ip_range {
                Some(r) => Cidr::parse(r)?,
                None => Cidr::parse(&c.subnet)?,
            },
        })
    }
}

/// A container's allocations, as persisted in its record.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allocation {
    pub ip: Option<Ipv4Addr>,
    pub ports: Vec<PortMapping>,
}

impl Allocation {
    /// The DNAT mappings of these ports to `ip`.
    fn mappings(&self, ip: Ipv4Addr) -> Vec<Mapping> {
        self.ports
            .iter()
            .map(|p| Mapping {
                host_port: p.host_port,
                ip,
                container_port: p.container_port,
            })
            .collect()
    }
}

struct State {
    ipam: Ipam,
    pool: PortPool,
    mappings: BTreeMap<String, Vec<Mapping>>,
    allowlist: Vec<Cidr>,
}

/// `GET /v1/ports`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortsInfo {
    pub range: PortRange,
    pub free: usize,
    pub allocated: Vec<AllocatedPort>,
    pub taken_by_others: Vec<TakenPort>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AllocatedPort {
    pub host_port: u16,
    pub container_port: u16,
    pub container: String,
    pub ip: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TakenPort {
    pub port: u16,
    pub pid: Option<i32>,
    pub process: Option<String>,
}

/// `GET/PUT /v1/firewall/allowlist`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Allowlist {
    pub cidrs: Vec<String>,
}

pub struct Network {
    pub settings: Settings,
    bridge_index: u32,
    state: Mutex<State>,
    /// iptables-save lines of our chains after the last apply (drift baseline).
    applied: Mutex<Vec<String>>,
    allowlist_file: PathBuf,
    pub drift_restores: AtomicU64,
    /// Serialises changes to the rules with the drift check, so a check in
    /// the middle of an install never mistakes it for drift.
    ops: Mutex<()>,
}

fn map_err(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

impl Network {
    /// Blocking. Brings up the bridge, rebuilds the allocators from the
    /// records and installs the whole rule set before any container starts.
    pub fn setup(
        settings: Settings,
        existing: &[(String, Allocation)],
        state_dir: &std::path::Path,
    ) -> anyhow::Result<Network> {
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
        // localhost:hostport -> container (kube-proxy does the same): route
        // 127/8 out of the bridge, masqueraded (see firewall::render_nat).
        let mut nl = netlink::Netlink::new()?;
        if let Some(lo) = nl.link_index("lo")? {
            nl.set_up(lo, None)?;
        }
        let bridge_index = match nl.link_index(&settings.bridge)? {
            Some(i) => i, // exists (maybe Docker's): used as it is
            None => {
                nl.create_bridge(&settings.bridge)?;
                let i = nl
                    .link_index(&settings.bridge)?
                    .ok_or_else(|| anyhow::anyhow!("bridge vanished"))?;
                nl.add_address(i, settings.subnet.gateway(), settings.subnet.prefix)?;
                nl.set_up(i, None)?;
                i
            }
        };
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/route_localnet", settings.bridge),
            "1",
        );
        let allowlist_file = state_dir.join("firewall.json");
        let allowlist = match std::fs::read(&allowlist_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Allowlist>(&b).ok())
        {
            Some(a) => a.cidrs.iter().filter_map(|c| Cidr::parse(c).ok()).collect(),
            None => settings.allowlist.clone(),
        };
        let mut st = State {
            ipam: Ipam::with_range(settings.subnet, settings.ip_range),
            pool: PortPool::new(settings.pool.0, settings.pool.1),
            mappings: BTreeMap::new(),
            allowlist,
        };
        for (name, a) in existing {
            if let Some(ip) = a.ip {
                if !st.ipam.reserve(ip) {
                    tracing::error!(container = %name, %ip, "address outside the subnet or already in use; not reserved");
                }
                let maps = a.mappings(ip);
                for p in &a.ports {
                    st.pool.reserve(p.host_port, name);
                }
                st.mappings.insert(name.clone(), maps);
            }
        }
        let net = Network {
            settings,
            bridge_index,
            state: Mutex::new(st),
            applied: Mutex::new(Vec::new()),
            allowlist_file,
            drift_restores: AtomicU64::new(0),
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

    fn apply_all(&self) -> Result<(), firewall::FirewallError> {
        let st = self.state.lock().unwrap();
        let saved = firewall::apply_all(&self.spec(&st))?;
        *self.applied.lock().unwrap() = saved;
        Ok(())
    }

    /// Allocates an address and host ports for a new container.
    pub fn allocate(&self, name: &str, wanted: &[PortSpec]) -> Result<Allocation, ApiError> {
        let busy: BTreeSet<u16> = ports::listeners().keys().copied().collect();
        let mut st = self.state.lock().unwrap();
        let ip = st.ipam.allocate().ok_or_else(|| {
            ApiError::new(
                409,
                "exhausted",
                format!("no free address left in {}", self.settings.subnet),
            )
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
                    let code = if matches!(e, PortError::Exhausted { .. }) {
                        "exhausted"
                    } else {
                        "conflict"
                    };
                    return Err(ApiError {
                        status: 409,
                        code,
                        message: e.to_string(),
                        field: Some("ports".into()),
                    });
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
    pub fn install(&self, name: &str, a: &Allocation) -> Result<(), ApiError> {
        let _ops = self.ops.lock().unwrap();
        let Some(ip) = a.ip else { return Ok(()) };
        let maps = a.mappings(ip);
        if maps.is_empty() {
            return Ok(());
        }
        let before: Vec<Mapping> = self.all_mappings();
        let (input, touched) = firewall::render_change(&before, &maps, &[]);
        firewall::apply_change(&input).map_err(map_err)?;
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
        let _ops = self.ops.lock().unwrap();
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
            match firewall::apply_change(&input) {
                Ok(()) => self.rebase(&touched),
                Err(e) => {
                    tracing::error!(container = name, error = %e, "teardown: DNAT rules; the drift check resyncs");
                    // an empty baseline makes the next drift check reapply
                    // everything from the state, which no longer has them
                    self.applied.lock().unwrap().clear();
                }
            }
        }
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

    pub fn allowlist(&self) -> Allowlist {
        Allowlist {
            cidrs: self
                .state
                .lock()
                .unwrap()
                .allowlist
                .iter()
                .map(|c| c.to_string())
                .collect(),
        }
    }

    /// Replaces the allowlist (one transaction) and persists it.
    pub fn set_allowlist(&self, a: &Allowlist) -> Result<Allowlist, ApiError> {
        let mut cidrs = Vec::new();
        for (i, c) in a.cidrs.iter().enumerate() {
            cidrs.push(Cidr::parse(c).map_err(|m| ApiError::bad(format!("cidrs[{i}]"), m))?);
        }
        let _ops = self.ops.lock().unwrap();
        let mut st = self.state.lock().unwrap();
        let old = std::mem::replace(&mut st.allowlist, cidrs);
        let spec = self.spec(&st);
        match firewall::apply_allowlist(&spec) {
            Ok(saved) => *self.applied.lock().unwrap() = saved,
            Err(e) => {
                st.allowlist = old;
                return Err(map_err(e));
            }
        }
        let out = Allowlist {
            cidrs: st.allowlist.iter().map(|c| c.to_string()).collect(),
        };
        drop(st);
        crate::store::write_atomic(
            &self.allowlist_file,
            &serde_json::to_vec(&out).expect("json"),
            true,
        )
        .map_err(map_err)?;
        Ok(out)
    }

    /// Restores our rules if someone removed or changed them. True if it did.
    pub fn check_drift(&self) -> Result<bool, firewall::FirewallError> {
        let _ops = self.ops.lock().unwrap();
        let now = firewall::saved_rules()?;
        let drifted = now != *self.applied.lock().unwrap()
            || !firewall::hooks_present(&self.settings.bridge, self.ours().as_ref());
        if drifted {
            self.apply_all()?;
            self.drift_restores.fetch_add(1, Ordering::Relaxed);
        }
        Ok(drifted)
    }

    pub fn inventory(&self) -> PortsInfo {
        let listening = ports::listeners();
        let st = self.state.lock().unwrap();
        let (start, end) = (st.pool.start, st.pool.end);
        let mut allocated = Vec::new();
        for (name, maps) in &st.mappings {
            for m in maps {
                allocated.push(AllocatedPort {
                    host_port: m.host_port,
                    container_port: m.container_port,
                    container: name.clone(),
                    ip: m.ip.to_string(),
                });
            }
        }
        allocated.sort_by_key(|a| a.host_port);
        let others: BTreeMap<u16, u64> = listening
            .into_iter()
            .filter(|(p, _)| (start..=end).contains(p) && !st.pool.allocated().contains_key(p))
            .collect();
        let busy: BTreeSet<u16> = others.keys().copied().collect();
        let free = st.pool.free(&busy);
        drop(st);
        let owners = ports::socket_owners(&others.values().copied().collect());
        let taken_by_others = others
            .iter()
            .map(|(p, ino)| TakenPort {
                port: *p,
                pid: owners.get(ino).map(|o| o.0),
                process: owners.get(ino).map(|o| o.1.clone()),
            })
            .collect();
        PortsInfo {
            range: PortRange { start, end },
            free,
            allocated,
            taken_by_others,
        }
    }
}

/// The container's resolv.conf: configured servers, else the host's minus
/// loopback resolvers (unreachable from a container).
fn resolv_conf(dns: &[String]) -> String {
    if !dns.is_empty() {
        return dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    host.lines()
        .filter(|l| !(l.starts_with("nameserver") && (l.contains(" 127.") || l.contains(" ::1"))))
        .map(|l| format!("{l}\n"))
        .collect()
}
