//! Capability names and the container's capability set (pure: the names
//! are checked against the `caps` crate's list of what the kernel has).

use caps::Capability;

/// containerd 2.x's default set.
pub const DEFAULT_CAPS: [&str; 9] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_KILL",
];

/// `CAP_X` or `x` to the canonical `CAP_X`, if the kernel has such a capability.
pub fn canonical_cap(name: &str) -> Option<String> {
    let c = caps::to_canonical(name.trim());
    c.parse::<Capability>().ok().map(|_| c)
}

/// The final set: defaults, minus `drop`, plus `add` (names already checked).
pub fn cap_set(add: &[String], drop: &[String]) -> Vec<String> {
    let drop_all = drop.iter().any(|d| d.eq_ignore_ascii_case("ALL"));
    let mut set: Vec<String> = DEFAULT_CAPS
        .iter()
        .map(|s| s.to_string())
        .filter(|c| !drop_all && !drop.iter().any(|d| canonical_cap(d).as_deref() == Some(c)))
        .collect();
    for a in add {
        if let Some(c) = canonical_cap(a) {
            if !set.contains(&c) {
                set.push(c);
            }
        }
    }
    set.sort();
    set
}

/// The first of `add` that is neither a default nor in the operator's
/// `allowed` list: its index and canonical name.
pub fn first_not_allowed(add: &[String], allowed: &[String]) -> Option<(usize, String)> {
    add.iter().enumerate().find_map(|(i, c)| {
        let c = canonical_cap(c).unwrap_or_else(|| c.clone());
        let ok = DEFAULT_CAPS.contains(&c.as_str())
            || allowed
                .iter()
                .any(|a| canonical_cap(a).as_deref() == Some(&c));
        (!ok).then_some((i, c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_sets() {
        assert_eq!(canonical_cap("net_admin").as_deref(), Some("CAP_NET_ADMIN"));
        assert_eq!(canonical_cap("CAP_NOPE"), None);
        let s = cap_set(&["NET_ADMIN".into()], &["kill".into(), "CAP_CHOWN".into()]);
        assert!(s.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!s.contains(&"CAP_KILL".to_string()) && !s.contains(&"CAP_CHOWN".to_string()));
        assert_eq!(s.len(), 8);
        assert_eq!(cap_set(&[], &["ALL".into()]), Vec::<String>::new());
        let allowed = ["net_admin".to_string()];
        assert_eq!(
            first_not_allowed(&["KILL".into(), "CAP_NET_ADMIN".into()], &allowed),
            None
        );
        assert_eq!(
            first_not_allowed(&["kill".into(), "sys_admin".into()], &allowed),
            Some((1, "CAP_SYS_ADMIN".into()))
        );
    }
}
