//! The host-port pool (pure allocator) and what the kernel says about the
//! ports: listeners (sock_diag) of the agent's network
//! namespace, and the processes owning them.

use super::diag;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PortError {
    #[error("host port {port} is outside the pool {start}-{end}")]
    Outside { port: u16, start: u16, end: u16 },
    #[error("host port {port} is already allocated to {to}")]
    Allocated { port: u16, to: String },
    #[error("host port {port} is in use by another process on the host")]
    TakenByOther { port: u16 },
    #[error("no free host port left in the pool {start}-{end}")]
    Exhausted { start: u16, end: u16 },
}

/// Allocations from the configured range, rebuilt from records at start.
#[derive(Debug, Clone)]
pub struct PortPool {
    pub start: u16,
    pub end: u16,
    used: BTreeMap<u16, String>,
    next: u16,
}

impl PortPool {
    pub fn new(start: u16, end: u16) -> PortPool {
        PortPool {
            start,
            end,
            used: BTreeMap::new(),
            next: start,
        }
    }

    /// Records an existing allocation (from a persisted record).
    pub fn reserve(&mut self, port: u16, owner: &str) -> bool {
        (self.start..=self.end).contains(&port)
            && self.used.insert(port, owner.to_string()).is_none()
    }

    /// The requested port, or the next free one; never one allocated or bound
    /// by another process (`busy`).
    pub fn allocate(
        &mut self,
        requested: Option<u16>,
        owner: &str,
        busy: &BTreeSet<u16>,
    ) -> Result<u16, PortError> {
        let (start, end) = (self.start, self.end);
        if let Some(p) = requested {
            if !(start..=end).contains(&p) {
                return Err(PortError::Outside {
                    port: p,
                    start,
                    end,
                });
            }
            if let Some(to) = self.used.get(&p) {
                return Err(PortError::Allocated {
                    port: p,
                    to: to.clone(),
                });
            }
            if busy.contains(&p) {
                return Err(PortError::TakenByOther { port: p });
            }
            self.used.insert(p, owner.into());
            return Ok(p);
        }
        let span = (end - start) as u32 + 1;
        for i in 0..span {
            let cand =
                (start as u32 + ((self.next.saturating_sub(start)) as u32 + i) % span) as u16;
            if !self.used.contains_key(&cand) && !busy.contains(&cand) {
                self.used.insert(cand, owner.into());
                self.next = if cand == end { start } else { cand + 1 };
                return Ok(cand);
            }
        }
        Err(PortError::Exhausted { start, end })
    }

    pub fn release(&mut self, port: u16) {
        self.used.remove(&port);
    }

    pub fn allocated(&self) -> &BTreeMap<u16, String> {
        &self.used
    }

    /// Free ports: the range minus allocations and others' listeners.
    pub fn free(&self, busy: &BTreeSet<u16>) -> usize {
        (self.start..=self.end)
            .filter(|p| !self.used.contains_key(p) && !busy.contains(p))
            .count()
    }
}

/// TCP ports with a listener in the calling thread's network namespace, with
/// the socket inode: a sock_diag dump of listening sockets, IPv4 and IPv6.
/// Not /proc/net/tcp: reading it walks the kernel's table of every
/// established socket of every network namespace (a thousand containers'
/// connections on a busy host), where a dump of listeners walks listeners.
pub fn listeners() -> BTreeMap<u16, u64> {
    let mut out = BTreeMap::new();
    for family in [diag::AF_INET, diag::AF_INET6] {
        match diag::listening(family) {
            Ok(v) => out.extend(v),
            // no sock_diag (a kernel without inet_diag): the proc files
            Err(_) => return listeners_from_proc(),
        }
    }
    out
}

pub(super) fn listeners_from_proc() -> BTreeMap<u16, u64> {
    let mut out = BTreeMap::new();
    for entries in [procfs::net::tcp(), procfs::net::tcp6()]
        .into_iter()
        .flatten()
    {
        for e in entries {
            if e.state == procfs::net::TcpState::Listen {
                out.insert(e.local_address.port(), e.inode);
            }
        }
    }
    out
}

/// `(pid, process name)` owning each socket inode, from /proc/*/fd.
pub fn socket_owners(inodes: &BTreeSet<u64>) -> BTreeMap<u64, (i32, String)> {
    let mut out = BTreeMap::new();
    if inodes.is_empty() {
        return out;
    }
    for p in procfs::process::all_processes()
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(fds) = p.fd() else { continue };
        for fd in fds.flatten() {
            if let procfs::process::FDTarget::Socket(ino) = fd.target {
                if inodes.contains(&ino) && !out.contains_key(&ino) {
                    let name = p.stat().map(|s| s.comm).unwrap_or_default();
                    out.insert(ino, (p.pid, name));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool() {
        let mut p = PortPool::new(20000, 20003);
        let busy: BTreeSet<u16> = [20001].into();
        assert!(p.reserve(20000, "old"));
        assert_eq!(
            p.allocate(None, "a", &busy),
            Ok(20002),
            "skips allocated and busy ports"
        );
        assert_eq!(
            p.allocate(Some(20002), "b", &busy),
            Err(PortError::Allocated {
                port: 20002,
                to: "a".into()
            })
        );
        assert_eq!(
            p.allocate(Some(20001), "b", &busy),
            Err(PortError::TakenByOther { port: 20001 })
        );
        assert_eq!(
            p.allocate(Some(80), "b", &busy),
            Err(PortError::Outside {
                port: 80,
                start: 20000,
                end: 20003
            })
        );
        assert_eq!(p.allocate(None, "b", &busy), Ok(20003));
        assert_eq!(
            p.allocate(None, "c", &busy),
            Err(PortError::Exhausted {
                start: 20000,
                end: 20003
            })
        );
        assert_eq!(p.free(&busy), 0);
        p.release(20002);
        assert_eq!(p.free(&busy), 1);
        assert_eq!(p.allocate(None, "c", &busy), Ok(20002));
    }

    #[test]
    fn sees_a_real_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let ls = listeners();
        let ino = *ls.get(&port).expect("our listener in /proc/net/tcp");
        let owners = socket_owners(&[ino].into());
        assert_eq!(
            owners.get(&ino).map(|o| o.0),
            Some(std::process::id() as i32)
        );
    }
}
