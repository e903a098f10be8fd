//! IPv4 subnets and the container address allocator (pure). The allocator is
//! rebuilt from the persisted records at start, so an address is never handed
//! out twice, across restarts included.

pub use crate::model::Cidr;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Hands out container addresses in a subnet: never the network, the gateway
/// or the broadcast address, never one in use. Next-fit from the last
/// allocation, so a just-freed address is not reused at once.
#[derive(Debug, Clone)]
pub struct Ipam {
    subnet: Cidr,
    /// Where new addresses come from (Docker's `--fixed-cidr`): a part of the
    /// subnet, so the agent and Docker can share one bridge without overlap.
    range: Cidr,
    used: BTreeSet<u32>,
    next: u32,
}

impl Ipam {
    pub fn new(subnet: Cidr) -> Ipam {
        Ipam::with_range(subnet, subnet)
    }

    /// Allocates only inside `range` (which must lie inside `subnet`).
    pub fn with_range(subnet: Cidr, range: Cidr) -> Ipam {
        Ipam {
            subnet,
            range,
            used: BTreeSet::new(),
            next: u32::from(subnet.gateway()) + 1,
        }
    }

    /// Marks an address (from a record) as in use; false if it is not usable.
    pub fn reserve(&mut self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        let ok = self.subnet.contains(ip)
            && ip != self.subnet.gateway()
            && ip != self.subnet.net
            && ip != self.subnet.broadcast();
        ok && self.used.insert(v)
    }

    pub fn allocate(&mut self) -> Option<Ipv4Addr> {
        let first = (u32::from(self.subnet.gateway()) + 1).max(u32::from(self.range.net));
        let last = (u32::from(self.subnet.broadcast()).checked_sub(1)?)
            .min(u32::from(self.range.broadcast()));
        if first > last {
            return None;
        }
        let span = last - first + 1;
        for i in 0..span {
            let cand = first + (self.next.saturating_sub(first) + i) % span;
            if !self.used.contains(&cand) {
                self.used.insert(cand);
                self.next = cand + 1;
                return Some(Ipv4Addr::from(cand));
            }
        }
        None
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&u32::from(ip));
    }

    pub fn in_use(&self) -> usize {
        self.used.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_inside_the_subnet() {
        let mut a = Ipam::with_range(
            Cidr::parse("172.17.0.0/16").unwrap(),
            Cidr::parse("172.17.128.0/30").unwrap(),
        );
        let got: Vec<_> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(
            got,
            (0..4)
                .map(|i| Ipv4Addr::new(172, 17, 128, i))
                .collect::<Vec<_>>()
        );
        let mut b = Ipam::with_range(
            Cidr::parse("10.9.0.0/29").unwrap(),
            Cidr::parse("10.9.0.0/30").unwrap(),
        );
        let got: Vec<_> = std::iter::from_fn(|| b.allocate()).collect();
        assert_eq!(
            got,
            vec![Ipv4Addr::new(10, 9, 0, 2), Ipv4Addr::new(10, 9, 0, 3)],
            "never the network or the gateway"
        );
    }

    #[test]
    fn never_twice_and_exhaustion() {
        let mut a = Ipam::new(Cidr::parse("10.9.0.0/29").unwrap());
        // .0 network, .1 gateway, .7 broadcast: .2 to .6 usable
        assert!(a.reserve(Ipv4Addr::new(10, 9, 0, 4)));
        assert!(!a.reserve(Ipv4Addr::new(10, 9, 0, 4)), "twice");
        assert!(!a.reserve(Ipv4Addr::new(10, 9, 0, 1)), "gateway");
        let got: Vec<_> = std::iter::from_fn(|| a.allocate()).collect();
        assert_eq!(
            got,
            vec![
                Ipv4Addr::new(10, 9, 0, 2),
                Ipv4Addr::new(10, 9, 0, 3),
                Ipv4Addr::new(10, 9, 0, 5),
                Ipv4Addr::new(10, 9, 0, 6)
            ]
        );
        assert_eq!(a.allocate(), None);
        a.release(Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(a.allocate(), Some(Ipv4Addr::new(10, 9, 0, 3)));
    }
}
