//! The iptables rules as data (pure, unit-tested): whole chains for
//! `iptables-restore --noflush` (one transaction per table, so there is no
//! moment when a chain is empty), the change of one container's mappings,
//! and the hooks from the built-in chains. [`super::iptables`] applies them.

use crate::model::Cidr;
use std::net::Ipv4Addr;

/// Private ranges containers may not reach unless listed in `egress_allow`.
pub const PRIVATE: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub host_port: u16,
    pub ip: Ipv4Addr,
    pub container_port: u16,
}

/// Everything the rules depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub bridge: String,
    pub subnet: Cidr,
    pub allowlist: Vec<Cidr>,
    pub mappings: Vec<Mapping>,
    /// Host ports containers may reach (e.g. the platform's reverse proxy).
    pub host_ports: Vec<u16>,
    pub egress_allow: Vec<Cidr>,
    /// When the bridge is shared (Docker owns it and `ip_range` is our part
    /// of the subnet): our rules match only our addresses, so Docker's own
    /// containers keep Docker's behaviour. None: the whole bridge is ours.
    pub ours: Option<Cidr>,
}

/// Host ports per DNAT bucket chain. HYDRA-DNAT dispatches on the port range
/// to `HYDRA-DNAT-<port / 64>`, so a change rewrites or searches at most 64
/// rules whatever the total (iptables-nft resolves a `-D` by fetching the
/// chain; in one 10,000-rule chain that was 66 ms).
pub const BUCKET_PORTS: u16 = 64;

pub fn bucket_of(port: u16) -> u16 {
    port / BUCKET_PORTS
}

fn bucket_chain(b: u16) -> String {
    format!("HYDRA-DNAT-{b}")
}

/// The jump from HYDRA-DNAT to bucket `b`.
pub fn dispatch_rule(b: u16) -> String {
    let lo = u32::from(b) * u32::from(BUCKET_PORTS);
    let hi = lo + u32::from(BUCKET_PORTS) - 1;
    format!(
        "HYDRA-DNAT -p tcp -m tcp --dport {lo}:{hi} -j {}",
        bucket_chain(b)
    )
}

pub fn dnat_rule(m: &Mapping) -> String {
    format!(
        "{} -p tcp -m tcp --dport {} -j DNAT --to-destination {}:{}",
        bucket_chain(bucket_of(m.host_port)),
        m.host_port,
        m.ip,
        m.container_port
    )
}

/// A bucket's lines as [`saved_rules`] lists them (dispatch and mappings),
/// for the drift baseline. Empty for an empty bucket: it is removed.
pub fn saved_bucket(b: u16, all: &[Mapping]) -> Vec<String> {
    let mut in_b: Vec<&Mapping> = all.iter().filter(|m| bucket_of(m.host_port) == b).collect();
    if in_b.is_empty() {
        return Vec::new();
    }
    in_b.sort_by_key(|m| m.host_port);
    let mut v = vec![format!("nat -A {}", dispatch_rule(b))];
    v.extend(in_b.iter().map(|m| format!("nat -A {}", dnat_rule(m))));
    v
}

/// The `iptables-restore --noflush` input that takes the nat rules from
/// mappings `before` to `before - removed + added`, as one transaction that
/// touches only the buckets involved: a bucket gaining mappings gets `-A`
/// lines (created with its dispatch rule if new: appends only, cheap); a
/// bucket losing some is rewritten whole (at most 64 rules), or deleted with
/// its dispatch rule when it ends empty. Returns the input and the buckets
/// touched.
pub fn render_change(
    before: &[Mapping],
    added: &[Mapping],
    removed: &[Mapping],
) -> (String, Vec<u16>) {
    use std::collections::BTreeSet;
    let existed: BTreeSet<u16> = before.iter().map(|m| bucket_of(m.host_port)).collect();
    let mut after: Vec<Mapping> = before
        .iter()
        .filter(|m| !removed.contains(m))
        .cloned()
        .collect();
    after.extend(added.iter().cloned());
    let shrinking: BTreeSet<u16> = removed.iter().map(|m| bucket_of(m.host_port)).collect();
    let growing: BTreeSet<u16> = added.iter().map(|m| bucket_of(m.host_port)).collect();
    let mut o = String::from("*nat\n");
    for &b in &shrinking {
        let left: Vec<&Mapping> = after
            .iter()
            .filter(|m| bucket_of(m.host_port) == b)
            .collect();
        o += &format!(":{} - [0:0]\n", bucket_chain(b));
        if left.is_empty() {
            if existed.contains(&b) {
                o += &format!("-D {}\n", dispatch_rule(b));
            }
            o += &format!("-X {}\n", bucket_chain(b));
        } else {
            if !existed.contains(&b) {
                o += &format!("-A {}\n", dispatch_rule(b));
            }
            for m in left {
                o += &format!("-A {}\n", dnat_rule(m));
            }
        }
    }
    for &b in growing.difference(&shrinking) {
        if !existed.contains(&b) {
            o += &format!(":{} - [0:0]\n-A {}\n", bucket_chain(b), dispatch_rule(b));
        }
        for m in added.iter().filter(|m| bucket_of(m.host_port) == b) {
            o += &format!("-A {}\n", dnat_rule(m));
        }
    }
    o += "COMMIT\n";
    let touched = shrinking.union(&growing).copied().collect();
    (o, touched)
}

/// The `filter` table part: INPUT from containers, FORWARD, the allowlist.
pub fn render_filter(s: &Spec) -> String {
    let br = &s.bridge;
    let (src, dst) = match &s.ours {
        Some(c) => (format!(" -s {c}"), format!(" -d {c}")),
        None => (String::new(), String::new()),
    };
    let mut o = String::from(
        "*filter\n:HYDRA-INPUT - [0:0]\n:HYDRA-FORWARD - [0:0]\n:HYDRA-ALLOW - [0:0]\n",
    );
    o += "-A HYDRA-INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
    for p in &s.host_ports {
        o += &format!("-A HYDRA-INPUT -p tcp -m tcp --dport {p} -j ACCEPT\n");
    }
    o += "-A HYDRA-INPUT -j DROP\n";
    o += "-A HYDRA-FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n";
    o += &format!("-A HYDRA-FORWARD{dst} -o {br} -m conntrack --ctstate DNAT -j HYDRA-ALLOW\n");
    o += &format!("-A HYDRA-FORWARD{dst} -o {br} -j DROP\n");
    for c in &s.egress_allow {
        o += &format!("-A HYDRA-FORWARD{src} -d {c} -i {br} -j ACCEPT\n");
    }
    for c in PRIVATE {
        o += &format!("-A HYDRA-FORWARD{src} -d {c} -i {br} -j DROP\n");
    }
    o += &format!("-A HYDRA-FORWARD{src} -i {br} -j ACCEPT\n");
    o += &render_allow_rules(s);
    o += "COMMIT\n";
    o
}

fn render_allow_rules(s: &Spec) -> String {
    let mut o = String::new();
    for c in &s.allowlist {
        o += &format!("-A HYDRA-ALLOW -s {c} -j ACCEPT\n");
    }
    o += "-A HYDRA-ALLOW -j DROP\n";
    o
}

/// Only the allowlist chain, for `PUT /v1/firewall/allowlist`.
pub fn render_allowlist(s: &Spec) -> String {
    format!(
        "*filter\n:HYDRA-ALLOW - [0:0]\n{}COMMIT\n",
        render_allow_rules(s)
    )
}

/// The `nat` table part: DNAT of host ports through the bucket chains,
/// masquerade of container egress. `stale` are bucket chains present in the
/// kernel that no mapping needs any more: emptied and deleted in the same
/// transaction.
pub fn render_nat(s: &Spec, stale: &[String]) -> String {
    use std::collections::BTreeMap;
    let mut buckets: BTreeMap<u16, Vec<&Mapping>> = BTreeMap::new();
    for m in &s.mappings {
        buckets.entry(bucket_of(m.host_port)).or_default().push(m);
    }
    let mut o = String::from("*nat\n:HYDRA-DNAT - [0:0]\n:HYDRA-POSTROUTING - [0:0]\n");
    for b in buckets.keys() {
        o += &format!(":{} - [0:0]\n", bucket_chain(*b));
    }
    for c in stale {
        if !buckets.keys().any(|b| bucket_chain(*b) == *c) {
            o += &format!(":{c} - [0:0]\n-X {c}\n");
        }
    }
    for (b, maps) in &buckets {
        o += &format!("-A {}\n", dispatch_rule(*b));
        for m in maps {
            o += &format!("-A {}\n", dnat_rule(m));
        }
    }
    o += &format!(
        "-A HYDRA-POSTROUTING -s {} ! -o {} -j MASQUERADE\n",
        s.subnet, s.bridge
    );
    o += &format!(
        "-A HYDRA-POSTROUTING -s 127.0.0.0/8 -o {} -j MASQUERADE\n",
        s.bridge
    );
    o += "COMMIT\n";
    o
}

/// Jumps from the built-in chains: (table, chain, rule).
pub fn hooks(
    bridge: &str,
    ours: Option<&Cidr>,
    forward_chain: &str,
) -> Vec<(&'static str, String, String)> {
    let src = ours.map(|c| format!("-s {c} ")).unwrap_or_default();
    vec![
        (
            "filter",
            "INPUT".into(),
            format!("{src}-i {bridge} -j HYDRA-INPUT"),
        ),
        ("filter", forward_chain.into(), "-j HYDRA-FORWARD".into()),
        (
            "nat",
            "PREROUTING".into(),
            "-m addrtype --dst-type LOCAL -j HYDRA-DNAT".into(),
        ),
        (
            "nat",
            "OUTPUT".into(),
            "-m addrtype --dst-type LOCAL -j HYDRA-DNAT".into(),
        ),
        ("nat", "POSTROUTING".into(), "-j HYDRA-POSTROUTING".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            bridge: "docker0".into(),
            subnet: Cidr::parse("172.17.0.0/16").unwrap(),
            allowlist: vec![Cidr::parse("10.1.0.0/24").unwrap()],
            mappings: vec![Mapping {
                host_port: 20000,
                ip: Ipv4Addr::new(172, 17, 0, 2),
                container_port: 8080,
            }],
            host_ports: vec![3128],
            egress_allow: vec![Cidr::parse("10.2.0.5/32").unwrap()],
            ours: None,
        }
    }

    #[test]
    fn filter_rules_default_deny() {
        let f = render_filter(&spec());
        let lines: Vec<&str> = f.lines().collect();
        assert_eq!(lines[0], "*filter");
        assert!(lines.contains(&"-A HYDRA-INPUT -p tcp -m tcp --dport 3128 -j ACCEPT"));
        // the last rule of each chain is a drop (or the final accept of egress after the private drops)
        let input: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("-A HYDRA-INPUT"))
            .collect();
        assert_eq!(**input.last().unwrap(), "-A HYDRA-INPUT -j DROP");
        let allow: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("-A HYDRA-ALLOW"))
            .collect();
        assert_eq!(
            allow.iter().map(|l| **l).collect::<Vec<_>>(),
            vec![
                "-A HYDRA-ALLOW -s 10.1.0.0/24 -j ACCEPT",
                "-A HYDRA-ALLOW -j DROP"
            ]
        );
        // allowed egress comes before the private-range drops
        let pos = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
        assert!(
            pos("-d 10.2.0.5/32 -i docker0 -j ACCEPT") < pos("-d 10.0.0.0/8 -i docker0 -j DROP")
        );
        assert!(pos("--ctstate DNAT -j HYDRA-ALLOW") < pos("-o docker0 -j DROP"));
        assert_eq!(*lines.last().unwrap(), "COMMIT");
    }

    #[test]
    fn on_a_shared_bridge_rules_match_only_our_range() {
        let ours = Cidr::parse("172.17.128.0/17").unwrap();
        let f = render_filter(&Spec {
            ours: Some(ours),
            ..spec()
        });
        let fwd: Vec<&str> = f
            .lines()
            .filter(|l| l.starts_with("-A HYDRA-FORWARD"))
            .collect();
        assert!(fwd.contains(&"-A HYDRA-FORWARD -d 172.17.128.0/17 -o docker0 -j DROP"));
        assert!(fwd.contains(&"-A HYDRA-FORWARD -s 172.17.128.0/17 -i docker0 -j ACCEPT"));
        // every bridge rule names our range; only conntrack's shortcut does not
        assert!(fwd
            .iter()
            .all(|l| l.contains("172.17.128.0/17") || l.contains("RELATED,ESTABLISHED")));
        let h = hooks("docker0", Some(&ours), "DOCKER-USER");
        assert_eq!(h[0].2, "-s 172.17.128.0/17 -i docker0 -j HYDRA-INPUT");
        assert_eq!(
            hooks("docker0", None, "FORWARD")[0].2,
            "-i docker0 -j HYDRA-INPUT"
        );
    }

    #[test]
    fn nat_rules() {
        let n = render_nat(&spec(), &["HYDRA-DNAT-1".into(), "HYDRA-DNAT-312".into()]);
        assert!(n.contains(":HYDRA-DNAT-312 - [0:0]\n"));
        assert!(n.contains("-A HYDRA-DNAT -p tcp -m tcp --dport 19968:20031 -j HYDRA-DNAT-312\n"));
        assert!(n.contains(
            "-A HYDRA-DNAT-312 -p tcp -m tcp --dport 20000 -j DNAT --to-destination 172.17.0.2:8080\n"
        ));
        assert!(
            n.contains(":HYDRA-DNAT-1 - [0:0]\n-X HYDRA-DNAT-1\n"),
            "stale bucket removed"
        );
        assert!(!n.contains("-X HYDRA-DNAT-312"), "a live bucket is kept");
        assert!(n.contains("-A HYDRA-POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\n"));
        let a = render_allowlist(&Spec {
            allowlist: vec![],
            ..spec()
        });
        assert_eq!(
            a, "*filter\n:HYDRA-ALLOW - [0:0]\n-A HYDRA-ALLOW -j DROP\nCOMMIT\n",
            "an empty allowlist lets nothing in"
        );
    }

    fn m(host_port: u16, last: u8) -> Mapping {
        Mapping {
            host_port,
            ip: Ipv4Addr::new(172, 17, 0, last),
            container_port: 8080,
        }
    }

    #[test]
    fn a_change_touches_only_its_buckets() {
        let before = vec![m(20000, 2), m(20001, 3), m(21000, 4)];
        // into an existing bucket: a plain append
        let (o, t) = render_change(&before, &[m(20002, 5)], &[]);
        assert_eq!(t, vec![312]);
        assert_eq!(
            o,
            "*nat\n-A HYDRA-DNAT-312 -p tcp -m tcp --dport 20002 -j DNAT --to-destination 172.17.0.5:8080\nCOMMIT\n"
        );
        // into a new bucket: the chain and its dispatch rule come first
        let (o, _) = render_change(&before, &[m(25000, 5)], &[]);
        assert_eq!(
            o,
            "*nat\n:HYDRA-DNAT-390 - [0:0]\n-A HYDRA-DNAT -p tcp -m tcp --dport 24960:25023 -j HYDRA-DNAT-390\n\
             -A HYDRA-DNAT-390 -p tcp -m tcp --dport 25000 -j DNAT --to-destination 172.17.0.5:8080\nCOMMIT\n"
        );
        // out of a shared bucket: the bucket is rewritten with what is left
        let (o, _) = render_change(&before, &[], &[m(20000, 2)]);
        assert_eq!(
            o,
            "*nat\n:HYDRA-DNAT-312 - [0:0]\n\
             -A HYDRA-DNAT-312 -p tcp -m tcp --dport 20001 -j DNAT --to-destination 172.17.0.3:8080\nCOMMIT\n"
        );
        // the last one of a bucket: dispatch rule and chain go
        let (o, t) = render_change(&before, &[], &[m(21000, 4)]);
        assert_eq!(t, vec![328]);
        assert_eq!(
            o,
            "*nat\n:HYDRA-DNAT-328 - [0:0]\n-D HYDRA-DNAT -p tcp -m tcp --dport 20992:21055 -j HYDRA-DNAT-328\n-X HYDRA-DNAT-328\nCOMMIT\n"
        );
        assert_eq!(saved_bucket(328, &before).len(), 2);
        assert!(saved_bucket(329, &before).is_empty());
    }
}
