//! IPv4 subnets and the container address allocator (pure). The allocator is
//! rebuilt from the persisted records at start, so an address is never handed
//! out twice, across restarts included.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// An IPv4 CIDR like `172.17.0.0/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub net: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/len)"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("{s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{s:?}: prefix must be 0 to 32"))?;
        let net = Ipv4Addr::from(u32::from(ip) & Self::mask(prefix));
        Ok(Cidr { net, prefix })
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix as u32)
        }
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.prefix) == u32::from(self.net)
    }

    /// First usable address: the gateway (the bridge).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) + 1)
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.net) | !Self::mask(self.prefix))
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

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
    fn cidr() {
        let c = Cidr::parse("172.17.3.4/16").unwrap();
        assert_eq!(c.to_string(), "172.17.0.0/16");
        assert_eq!(c.gateway(), Ipv4Addr::new(172, 17, 0, 1));
        assert_eq!(c.broadcast(), Ipv4Addr::new(172, 17, 255, 255));
        assert!(c.contains(Ipv4Addr::new(172, 17, 200, 1)));
        assert!(!c.contains(Ipv4Addr::new(172, 18, 0, 1)));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0/8").is_err());
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().prefix, 0);
    }

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
