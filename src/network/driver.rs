//! The side effects of host networking behind two small traits, so the
//! allocation and rule bookkeeping in [`super::Network`] (and the lifecycle
//! above it) can run on fakes: the firewall (iptables today; an nftables
//! driver can come later) and the host's links (the bridge, over netlink).

use super::firewall::Spec;
use super::iptables::FirewallError;
use super::netlink::Netlink;
use crate::model::Cidr;
use std::io;

/// Applies rendered rules to the kernel and reads ours back.
pub trait FirewallDriver: Send + Sync {
    /// The whole rule set, each table in one transaction, and the hooks;
    /// answers our rules as the kernel now holds them (drift baseline).
    fn apply_all(&self, s: &Spec) -> Result<Vec<String>, FirewallError>;
    /// Only the allowlist chain, in one transaction; our rules after.
    fn apply_allowlist(&self, s: &Spec) -> Result<Vec<String>, FirewallError>;
    /// One rendered change ([`super::firewall::render_change`]), atomically.
    fn apply_change(&self, input: &str) -> Result<(), FirewallError>;
    /// Our rules as the kernel holds them (`table -A ...`, sorted).
    fn saved_rules(&self) -> Result<Vec<String>, FirewallError>;
    /// Whether every jump from the built-in chains is in place.
    fn hooks_present(&self, bridge: &str, ours: Option<&Cidr>) -> bool;
}

impl<T: FirewallDriver> FirewallDriver for std::sync::Arc<T> {
    fn apply_all(&self, s: &Spec) -> Result<Vec<String>, FirewallError> {
        (**self).apply_all(s)
    }
    fn apply_allowlist(&self, s: &Spec) -> Result<Vec<String>, FirewallError> {
        (**self).apply_allowlist(s)
    }
    fn apply_change(&self, input: &str) -> Result<(), FirewallError> {
        (**self).apply_change(input)
    }
    fn saved_rules(&self) -> Result<Vec<String>, FirewallError> {
        (**self).saved_rules()
    }
    fn hooks_present(&self, bridge: &str, ours: Option<&Cidr>) -> bool {
        (**self).hooks_present(bridge, ours)
    }
}

/// The host's links.
pub trait Links: Send + Sync {
    /// Brings up loopback and the bridge (created with the subnet's gateway
    /// address if missing; an existing one, maybe Docker's, is used as it
    /// is), enables forwarding and localnet routing; the bridge's index.
    fn prepare(&self, bridge: &str, subnet: &Cidr) -> io::Result<u32>;
}

/// The real links, over netlink in the agent's network namespace.
#[derive(Debug, Default)]
pub struct HostLinks;

impl Links for HostLinks {
    fn prepare(&self, bridge: &str, subnet: &Cidr) -> io::Result<u32> {
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
        let mut nl = Netlink::new()?;
        if let Some(lo) = nl.link_index("lo")? {
            nl.set_up(lo, None)?;
        }
        let index = match nl.link_index(bridge)? {
            Some(i) => i,
            None => {
                nl.create_bridge(bridge)?;
                let i = nl
                    .link_index(bridge)?
                    .ok_or_else(|| io::Error::other(format!("bridge {bridge} vanished")))?;
                nl.add_address(i, subnet.gateway(), subnet.prefix)?;
                nl.set_up(i, None)?;
                i
            }
        };
        // localhost:hostport -> container (kube-proxy does the same): route
        // 127/8 out of the bridge, masqueraded (see firewall::render_nat).
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
            "1",
        );
        Ok(index)
    }
}

/// Fakes for unit tests of the logic above the drivers.
#[cfg(test)]
pub mod fake {
    use super::*;
    use std::sync::Mutex;

    /// Keeps the rules it was given; `fail_next` makes the next call fail.
    #[derive(Debug, Default)]
    pub struct FakeFirewall {
        pub changes: Mutex<Vec<String>>,
        pub full_applies: Mutex<usize>,
        pub fail_next: Mutex<bool>,
    }

    impl FakeFirewall {
        fn check(&self) -> Result<(), FirewallError> {
            if std::mem::take(&mut *self.fail_next.lock().unwrap()) {
                return Err(FirewallError::Other("injected failure".into()));
            }
            Ok(())
        }
    }

    impl FirewallDriver for FakeFirewall {
        fn apply_all(&self, _s: &Spec) -> Result<Vec<String>, FirewallError> {
            self.check()?;
            *self.full_applies.lock().unwrap() += 1;
            Ok(Vec::new())
        }
        fn apply_allowlist(&self, _s: &Spec) -> Result<Vec<String>, FirewallError> {
            self.check()?;
            Ok(Vec::new())
        }
        fn apply_change(&self, input: &str) -> Result<(), FirewallError> {
            self.check()?;
            self.changes.lock().unwrap().push(input.to_string());
            Ok(())
        }
        fn saved_rules(&self) -> Result<Vec<String>, FirewallError> {
            Ok(Vec::new())
        }
        fn hooks_present(&self, _bridge: &str, _ours: Option<&Cidr>) -> bool {
            true
        }
    }

    /// A bridge that always exists, index 7.
    #[derive(Debug, Default)]
    pub struct FakeLinks;

    impl Links for FakeLinks {
        fn prepare(&self, _bridge: &str, _subnet: &Cidr) -> io::Result<u32> {
            Ok(7)
        }
    }
}
