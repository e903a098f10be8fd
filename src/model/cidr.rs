//! IPv4 subnets (`172.17.0.0/16`), as written in config and API bodies.

use super::units::ValueError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::net::Ipv4Addr;

/// An IPv4 CIDR; the address is masked to the network (`10.0.0.5/8` is `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub net: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, ValueError> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| ValueError(format!("{s:?} is not a CIDR (a.b.c.d/len)")))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| ValueError(format!("{s:?}: {ip:?} is not an IPv4 address")))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| ValueError(format!("{s:?}: prefix must be 0 to 32")))?;
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

    /// Whether `other` lies wholly inside this one.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.net)
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

impl std::str::FromStr for Cidr {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Cidr, ValueError> {
        Cidr::parse(s)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// An IPv4 octet as `Ipv4Addr` parses it (no leading zeros).
const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";

/// By hand: a string `a.b.c.d/len` (serde goes through [`Cidr::parse`]).
impl utoipa::PartialSchema for Cidr {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!(
                r"^{OCTET}(\.{OCTET}){{3}}/\+?0*([0-9]|[12][0-9]|3[0-2])$"
            )))
            .description(Some(
                "An IPv4 subnet `a.b.c.d/len` (len 0 to 32); answers write it masked to its network.",
            ))
            .examples(["10.0.0.0/8"])
            .into()
    }
}

impl utoipa::ToSchema for Cidr {}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Cidr::parse(&s).map_err(serde::de::Error::custom)
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
        assert!(c.covers(&Cidr::parse("172.17.128.0/17").unwrap()));
        assert!(!c.covers(&Cidr::parse("172.0.0.0/8").unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0/8").is_err());
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().prefix, 0);
        let j: Vec<Cidr> = serde_json::from_str(r#"["10.1.2.3/24"]"#).unwrap();
        assert_eq!(serde_json::to_string(&j).unwrap(), r#"["10.1.2.0/24"]"#);
        assert!(serde_json::from_str::<Cidr>(r#""nope""#).is_err());
    }
}
