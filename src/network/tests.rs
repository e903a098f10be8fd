//! The network's bookkeeping on fake drivers, and the allocators under
//! generated operation sequences (never twice, never leaked, rebuilt from
//! the records exactly).

use super::driver::fake::{FakeFirewall, FakeLinks};
use super::ipam::Ipam;
use super::ports::PortPool;
use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

fn net(existing: &[(String, Allocation)]) -> (tempfile::TempDir, Arc<FakeFirewall>, Network) {
    let dir = tempfile::tempdir().unwrap();
    let fw = Arc::new(FakeFirewall::default());
    let cfg = NetworkConfig {
        port_range: PortRange {
            start: 30000,
            end: 30003,
        },
        subnet: Cidr::parse("10.9.0.0/29").unwrap(),
        ..Default::default()
    };
    let n = Network::setup(
        Settings::from_config(&cfg),
        existing,
        dir.path(),
        Box::new(fw.clone()),
        &FakeLinks,
    )
    .unwrap();
    (dir, fw, n)
}

fn want(host_port: Option<u16>) -> PortSpec {
    PortSpec {
        container_port: 8080,
        host_port,
    }
}

#[test]
fn allocate_install_release() {
    let (_d, fw, n) = net(&[]);
    assert_eq!(
        *fw.full_applies.lock().unwrap(),
        1,
        "everything installed at setup"
    );
    let a = n.allocate("a", &[want(None), want(Some(30003))]).unwrap();
    assert_eq!(a.ip, Some("10.9.0.2".parse().unwrap()));
    assert_eq!(
        a.ports.iter().map(|p| p.host_port).collect::<Vec<_>>(),
        [30000, 30003]
    );
    n.install("a", &a).unwrap();
    assert_eq!(fw.changes.lock().unwrap().len(), 1);
    let inv = n.inventory();
    assert_eq!(inv.allocated.len(), 2);
    assert!(matches!(
        n.allocate("b", &[want(Some(30003))]),
        Err(NetworkError::Port(_))
    ));
    // a failed install changes nothing; the allocation is released whole
    let b = n.allocate("b", &[want(None)]).unwrap();
    *fw.fail_next.lock().unwrap() = true;
    assert!(n.install("b", &b).is_err());
    n.release("b", &b);
    n.release("a", &a);
    assert!(n.inventory().allocated.is_empty());
    // address space: .2 to .6
    let all: Vec<_> = (0..5)
        .map(|i| n.allocate(&format!("c{i}"), &[]).unwrap().ip)
        .collect();
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 5);
    assert!(matches!(
        n.allocate("x", &[]),
        Err(NetworkError::AddressesExhausted { .. })
    ));
}

#[test]
fn allowlist_edits_are_one_change_and_persist() {
    let (d, _fw, n) = net(&[]);
    let c = |s: &str| Cidr::parse(s).unwrap();
    assert_eq!(n.allowlist(), [c("10.0.0.0/8")]);
    let got = n
        .edit_allowlist(&[c("192.0.2.7/32"), c("10.0.0.0/8")], &[])
        .unwrap();
    assert_eq!(got, [c("10.0.0.0/8"), c("192.0.2.7/32")], "no duplicates");
    let got = n
        .edit_allowlist(&[], &[c("10.0.0.0/8"), c("10.99.0.0/16")])
        .unwrap();
    assert_eq!(got, [c("192.0.2.7/32")]);
    // a restart reads the persisted list, not the config's
    let n2 = Network::setup(
        n.settings.clone(),
        &[],
        d.path(),
        Box::new(FakeFirewall::default()),
        &FakeLinks,
    )
    .unwrap();
    assert_eq!(n2.allowlist(), [c("192.0.2.7/32")]);
}

#[derive(Debug, Clone)]
enum Op {
    Alloc(Option<u16>),
    Release(usize),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(
        prop_oneof![
            proptest::option::of(29995u16..30010).prop_map(Op::Alloc),
            any::<usize>().prop_map(Op::Release),
        ],
        0..60,
    )
}

proptest! {
    /// The port pool: a port is held by at most one owner, a released one is
    /// free again, and a pool rebuilt from the held ports is the same pool.
    #[test]
    fn ports_never_twice_never_leaked(ops in ops()) {
        let mut p = PortPool::new(30000, 30007);
        let busy: BTreeSet<u16> = [30005].into();
        let mut held: BTreeMap<u16, String> = BTreeMap::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Alloc(want) => {
                    if let Ok(port) = p.allocate(*want, &format!("c{i}"), &busy) {
                        prop_assert!((30000..=30007).contains(&port) && !busy.contains(&port));
                        prop_assert!(held.insert(port, format!("c{i}")).is_none(), "{port} twice");
                    }
                }
                Op::Release(k) if !held.is_empty() => {
                    let port = *held.keys().nth(k % held.len()).unwrap();
                    held.remove(&port);
                    p.release(port);
                }
                Op::Release(_) => {}
            }
            prop_assert_eq!(p.allocated(), &held);
            prop_assert_eq!(p.free(&busy), 7 - held.len());
        }
        let mut again = PortPool::new(30000, 30007);
        for (port, owner) in &held {
            prop_assert!(again.reserve(*port, owner));
        }
        prop_assert_eq!(again.allocated(), p.allocated());
    }

    /// Addresses: never the network, gateway or broadcast, never one in use.
    #[test]
    fn addresses_never_twice_never_leaked(ops in ops()) {
        let subnet = Cidr::parse("10.9.0.0/28").unwrap();
        let mut ipam = Ipam::new(subnet);
        let mut held: Vec<std::net::Ipv4Addr> = Vec::new();
        for op in &ops {
            match op {
                Op::Alloc(_) => match ipam.allocate() {
                    Some(ip) => {
                        prop_assert!(subnet.contains(ip));
                        prop_assert!(ip != subnet.net && ip != subnet.gateway() && ip != subnet.broadcast());
                        prop_assert!(!held.contains(&ip), "{ip} twice");
                        held.push(ip);
                    }
                    None => prop_assert_eq!(held.len(), 13, "exhausted only when full"),
                },
                Op::Release(k) if !held.is_empty() => {
                    let ip = held.remove(k % held.len());
                    ipam.release(ip);
                }
                Op::Release(_) => {}
            }
            prop_assert_eq!(ipam.in_use(), held.len());
        }
        let mut again = Ipam::new(subnet);
        for ip in &held {
            prop_assert!(again.reserve(*ip));
        }
        prop_assert_eq!(again.in_use(), held.len());
    }
}
