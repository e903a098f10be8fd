//! IPv6: containers get no IPv6 (their interfaces have it disabled), and in
//! every case nothing from the bridge reaches the host or goes anywhere over
//! IPv6: ip6tables chains that drop it, hooked from INPUT and FORWARD, kept
//! like the IPv4 rules (applied before the API serves, never flushed on
//! exit, part of the drift check). Without them a container could reach a
//! host service bound to `[::]` through the bridge's link-local address.

use super::iptables::FirewallError;
use crate::model::Cidr;
use std::io::Write;
use std::process::{Command, Stdio};

/// Whether this kernel has IPv6 at all (nothing to guard otherwise).
pub fn available() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
}

/// The IPv6 filter chains: everything from the bridge dropped.
pub fn render() -> String {
    "*filter\n:HYDRA-INPUT - [0:0]\n:HYDRA-FORWARD - [0:0]\n\
     -A HYDRA-INPUT -j DROP\n-A HYDRA-FORWARD -j DROP\nCOMMIT\n"
        .into()
}

/// The jumps into them. On a bridge shared with Docker (`ours`), only what
/// comes from our veths (host ends named `hy...`), so Docker's own IPv6 is
/// left to Docker.
pub fn hooks(bridge: &str, ours: Option<&Cidr>) -> Vec<(String, String)> {
    match ours {
        None => vec![
            ("INPUT".into(), format!("-i {bridge} -j HYDRA-INPUT")),
            ("FORWARD".into(), format!("-i {bridge} -j HYDRA-FORWARD")),
            ("FORWARD".into(), format!("-o {bridge} -j HYDRA-FORWARD")),
        ],
        Some(_) => vec![
            (
                "INPUT".into(),
                format!("-i {bridge} -m physdev --physdev-in hy+ -j HYDRA-INPUT"),
            ),
            (
                "FORWARD".into(),
                "-m physdev --physdev-in hy+ -j HYDRA-FORWARD".into(),
            ),
        ],
    }
}

/// Applies the chains (one transaction) and inserts any missing hook.
pub fn apply(bridge: &str, ours: Option<&Cidr>) -> Result<(), FirewallError> {
    if !available() {
        return Ok(());
    }
    let cmd = "ip6tables-restore --noflush";
    let mut child = Command::new("ip6tables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| FirewallError::Spawn {
            cmd: cmd.into(),
            source,
        })?;
    let fed = child
        .stdin
        .take()
        .expect("piped")
        .write_all(render().as_bytes());
    let out = child
        .wait_with_output()
        .map_err(|source| FirewallError::Spawn {
            cmd: cmd.into(),
            source,
        })?;
    if fed.is_err() || !out.status.success() {
        return Err(FirewallError::Failed {
            cmd: cmd.into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let ipt = iptables::new(true).map_err(|e| FirewallError::Other(e.to_string()))?;
    for (chain, rule) in hooks(bridge, ours) {
        let there = ipt
            .exists("filter", &chain, &rule)
            .map_err(|e| FirewallError::Other(format!("check ip6 {chain} {rule}: {e}")))?;
        if !there {
            ipt.insert("filter", &chain, &rule, 1)
                .map_err(|e| FirewallError::Other(format!("insert ip6 {chain} {rule}: {e}")))?;
        }
    }
    Ok(())
}

/// Our IPv6 rules as ip6tables-save prints them, `filter6 -A ...`.
pub fn saved() -> Result<Vec<String>, FirewallError> {
    if !available() {
        return Ok(Vec::new());
    }
    let out = Command::new("ip6tables-save")
        .args(["-t", "filter"])
        .output()
        .map_err(|source| FirewallError::Spawn {
            cmd: "ip6tables-save".into(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("HYDRA-") && l.starts_with("-A "))
        .map(|l| format!("filter6 {l}"))
        .collect())
}

/// Whether every IPv6 hook is in place.
pub fn hooks_present(bridge: &str, ours: Option<&Cidr>) -> bool {
    if !available() {
        return true;
    }
    let Ok(ipt) = iptables::new(true) else {
        return false;
    };
    hooks(bridge, ours)
        .iter()
        .all(|(c, r)| ipt.exists("filter", c, r).unwrap_or(false))
}
