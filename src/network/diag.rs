//! Listening TCP sockets of the calling thread's network namespace, from
//! the kernel's sock_diag netlink interface (what `ss -lt` uses).

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::IPPROTO_TCP;
pub use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};
use std::io;

/// (port, socket inode) of every listening TCP socket of `family`.
pub fn listening(family: u8) -> io::Result<Vec<(u16, u64)>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = match family {
        AF_INET => SocketId::new_v4(),
        _ => SocketId::new_v6(),
    };
    let mut req = NetlinkMessage::new(
        hdr,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id,
        })
        .into(),
    );
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut out = Vec::new();
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut rx[..], 0)?;
        let mut at = 0;
        while at < n {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[at..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    out.push((r.header.socket_id.source_port, u64::from(r.header.inode)));
                }
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => return Err(e.to_io()),
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

#[cfg(test)]
mod tests {
    /// A listener of this process is found, with its inode, on both
    /// families; the same inode as /proc/net/tcp gives.
    #[test]
    fn finds_our_listener() {
        let l4 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l6 = std::net::TcpListener::bind("[::1]:0");
        let p4 = l4.local_addr().unwrap().port();
        let v4 = super::listening(super::AF_INET).unwrap();
        assert!(v4.iter().any(|(p, ino)| *p == p4 && *ino > 0), "{v4:?}");
        if let Ok(l6) = l6 {
            let p6 = l6.local_addr().unwrap().port();
            let v6 = super::listening(super::AF_INET6).unwrap();
            assert!(v6.iter().any(|(p, _)| *p == p6), "{v6:?}");
        }
        // the same inode as /proc/net/tcp says (other tests of this
        // process may open and close listeners meanwhile: ours only)
        let ours = super::super::ports::listeners();
        let proc = super::super::ports::listeners_from_proc();
        assert_eq!(ours.get(&p4), proc.get(&p4));
        assert!(ours.contains_key(&p4));
    }
}
