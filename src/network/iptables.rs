//! The real firewall driver: the rendered rules applied through one
//! long-lived `iptables-restore` ([`super::restore`]), hooks from the
//! built-in chains (or Docker's DOCKER-USER) checked with the iptables crate,
//! and our rules read back with `iptables-save` for the drift check.

use super::driver::FirewallDriver;
use super::firewall::{hooks, render_allowlist, render_filter, render_nat, Spec};
use crate::model::Cidr;
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("firewall: cannot run {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("firewall: {cmd} failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    #[error("firewall: {0}")]
    Other(String),
}

fn restore(input: &str) -> Result<(), FirewallError> {
    super::restore::apply(input)
}

/// iptables (nf_tables or legacy, whichever `iptables` is here).
#[derive(Debug, Default)]
pub struct Iptables;

impl FirewallDriver for Iptables {
    fn apply_all(&self, s: &Spec) -> Result<Vec<String>, FirewallError> {
        apply_all(s)
    }
    fn apply_allowlist(&self, s: &Spec) -> Result<Vec<String>, FirewallError> {
        restore(&render_allowlist(s))?;
        saved_rules()
    }
    fn apply_change(&self, input: &str) -> Result<(), FirewallError> {
        restore(input)
    }
    fn saved_rules(&self) -> Result<Vec<String>, FirewallError> {
        saved_rules()
    }
    fn hooks_present(&self, bridge: &str, ours: Option<&Cidr>) -> bool {
        hooks_present(bridge, ours)
    }
}

/// Our rules as iptables-save prints them (`table -A ...`, sorted): the
/// snapshot drift is checked against.
pub fn saved_rules() -> Result<Vec<String>, FirewallError> {
    let mut all = Vec::new();
    for table in ["filter", "nat"] {
        let out = Command::new("iptables-save")
            .args(["-t", table])
            .output()
            .map_err(|source| FirewallError::Spawn {
                cmd: "iptables-save".into(),
                source,
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        for l in text
            .lines()
            .filter(|l| l.contains("HYDRA-") && l.starts_with("-A "))
        {
            all.push(format!("{table} {l}"));
        }
    }
    all.extend(super::ip6::saved()?);
    all.sort();
    Ok(all)
}

/// Bucket chains present in the kernel's nat table.
fn bucket_chains() -> Result<Vec<String>, FirewallError> {
    let out = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .map_err(|source| FirewallError::Spawn {
            cmd: "iptables-save".into(),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(':')?.split(' ').next())
        .filter(|c| c.starts_with("HYDRA-DNAT-"))
        .map(String::from)
        .collect())
}

/// Applies the whole rule set (each table in one transaction) and the hooks.
pub fn apply_all(s: &Spec) -> Result<Vec<String>, FirewallError> {
    restore(&(render_filter(s) + &render_nat(s, &bucket_chains()?)))?;
    ensure_hooks(&s.bridge, s.ours.as_ref())?;
    super::ip6::apply(&s.bridge, s.ours.as_ref())?;
    saved_rules()
}

/// Where our FORWARD hook goes: Docker's DOCKER-USER when Docker runs here
/// (Docker jumps there first and never rewrites it), else FORWARD itself.
pub fn forward_chain() -> String {
    let ipt = iptables::new(false);
    match ipt {
        Ok(ipt) if ipt.chain_exists("filter", "DOCKER-USER").unwrap_or(false) => {
            "DOCKER-USER".into()
        }
        _ => "FORWARD".into(),
    }
}

/// Inserts any missing jump at position 1.
pub fn ensure_hooks(bridge: &str, ours: Option<&Cidr>) -> Result<(), FirewallError> {
    let ipt = iptables::new(false).map_err(|e| FirewallError::Other(e.to_string()))?;
    for (table, chain, rule) in hooks(bridge, ours, &forward_chain()) {
        if !ipt
            .exists(table, &chain, &rule)
            .map_err(|e| FirewallError::Other(format!("check {table} {chain} {rule}: {e}")))?
        {
            ipt.insert(table, &chain, &rule, 1)
                .map_err(|e| FirewallError::Other(format!("insert {table} {chain} {rule}: {e}")))?;
        }
    }
    Ok(())
}

/// Whether every hook is in place (IPv6 ones too).
pub fn hooks_present(bridge: &str, ours: Option<&Cidr>) -> bool {
    let Ok(ipt) = iptables::new(false) else {
        return false;
    };
    hooks(bridge, ours, &forward_chain())
        .iter()
        .all(|(t, c, r)| ipt.exists(t, c, r).unwrap_or(false))
        && super::ip6::hooks_present(bridge, ours)
}
