//! The nftables group's announcements that the restorer reads: commits
//! (NFT_MSG_NEWGEN, with the committing process's pid) and chains made or
//! removed (NEWCHAIN, DELCHAIN, with the chain's name).

pub(super) const NFNLGRP_NFTABLES: u32 = 7;
/// (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN
const NEWGEN: u16 = (10 << 8) | 15;
const NFTA_GEN_PROC_PID: u16 = 2;
/// NFT_MSG_NEWCHAIN and NFT_MSG_DELCHAIN, and the chain's name attribute.
const NEWCHAIN: u16 = (10 << 8) | 3;
const DELCHAIN: u16 = (10 << 8) | 5;
const NFTA_CHAIN_NAME: u16 = 3;

/// One announcement of the nftables group that matters here.
#[derive(Debug, PartialEq)]
pub(super) enum Note {
    /// A chain made or removed, by name.
    Chain(Vec<u8>),
    /// A transaction committed, by the pid of the process that made it.
    Gen(u32),
}

/// The NEWGEN, NEWCHAIN and DELCHAIN messages of a netlink datagram.
pub(super) fn notes(mut buf: &[u8]) -> Vec<Note> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
        if len < 16 || len > buf.len() {
            break;
        }
        if matches!(kind, NEWGEN | NEWCHAIN | DELCHAIN) && len >= 20 {
            // nlmsghdr (16) + nfgenmsg (4), then attributes
            let mut attrs = &buf[20..len];
            while attrs.len() >= 4 {
                let alen = u16::from_ne_bytes(attrs[0..2].try_into().unwrap()) as usize;
                let atype = u16::from_ne_bytes(attrs[2..4].try_into().unwrap()) & 0x3fff;
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                let value = &attrs[4..alen];
                match (kind, atype) {
                    (NEWGEN, NFTA_GEN_PROC_PID) if alen == 8 => {
                        out.push(Note::Gen(u32::from_be_bytes(value.try_into().unwrap())))
                    }
                    (NEWCHAIN | DELCHAIN, NFTA_CHAIN_NAME) => {
                        let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                        out.push(Note::Chain(value[..end].to_vec()))
                    }
                    _ => {}
                }
                attrs = &attrs[((alen + 3) & !3).min(attrs.len())..];
            }
        }
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newgen_pids_are_read() {
        // two messages: a NEWGEN of pid 1808 and something else
        let mut m = Vec::new();
        let newgen = |pid: u32| {
            let mut v = Vec::new();
            let attrs: Vec<u8> = [
                &8u16.to_ne_bytes()[..],
                &1u16.to_ne_bytes(),
                &4u32.to_be_bytes(),
                &8u16.to_ne_bytes(),
                &2u16.to_ne_bytes(),
                &pid.to_be_bytes(),
                &8u16.to_ne_bytes(),
                &3u16.to_ne_bytes(),
                b"nft\0",
            ]
            .concat();
            let len = 16 + 4 + attrs.len();
            v.extend_from_slice(&(len as u32).to_ne_bytes());
            v.extend_from_slice(&NEWGEN.to_ne_bytes());
            v.extend_from_slice(&[0u8; 10]);
            v.extend_from_slice(&[0, 0, 0, 4]);
            v.extend_from_slice(&attrs);
            v
        };
        m.extend(newgen(1808));
        let mut other = vec![0u8; 20];
        other[0..4].copy_from_slice(&20u32.to_ne_bytes());
        other[4..6].copy_from_slice(&((10u16 << 8) | 3).to_ne_bytes());
        m.extend(other);
        // a chain made: its name attribute (NUL-terminated, padded)
        let mut chain = Vec::new();
        let name = b"HYDRA-PROBE-1\0";
        chain.extend_from_slice(&((16 + 4 + 4 + 16) as u32).to_ne_bytes());
        chain.extend_from_slice(&NEWCHAIN.to_ne_bytes());
        chain.extend_from_slice(&[0u8; 10]);
        chain.extend_from_slice(&[0, 0, 0, 0]);
        chain.extend_from_slice(&((4 + name.len()) as u16).to_ne_bytes());
        chain.extend_from_slice(&NFTA_CHAIN_NAME.to_ne_bytes());
        chain.extend_from_slice(name);
        chain.extend_from_slice(&[0, 0]);
        m.extend(chain);
        m.extend(newgen(7));
        assert_eq!(
            notes(&m),
            vec![
                Note::Gen(1808),
                Note::Chain(b"HYDRA-PROBE-1".to_vec()),
                Note::Gen(7)
            ]
        );
        assert_eq!(notes(&m[..10]), vec![], "a truncated datagram");
    }
}
