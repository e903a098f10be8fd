//! Typed config values, parsed once when the file is read: a port range,
//! a `host:port` endpoint, an `http://` URL.

use crate::model::ValueError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// Deserializes a value from its string form through `FromStr`.
macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// `START-END`, 1 <= START <= END <= 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

impl std::str::FromStr for PortRange {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<PortRange, ValueError> {
        let bad = || {
            ValueError(format!(
                "{s:?} is not START-END with 1 <= START <= END <= 65535"
            ))
        };
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end): (u16, u16) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        if start < 1 || start > end {
            return Err(bad());
        }
        Ok(PortRange { start, end })
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}
string_serde!(PortRange);

/// `host:port`, where host is a name or an address (`[v6]` in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl std::str::FromStr for Endpoint {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Endpoint, ValueError> {
        match s.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => match p.parse::<u16>() {
                Ok(port) => Ok(Endpoint {
                    host: h.to_string(),
                    port,
                }),
                Err(_) => Err(ValueError(format!("{s:?} is not host:port"))),
            },
            _ => Err(ValueError(format!("{s:?} is not host:port"))),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}
string_serde!(Endpoint);

/// An `http://host[:port]/path` URL (TLS to such endpoints is not offered yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `host:port`, the port filled in (80) when the URL has none.
    pub authority: String,
    pub path: String,
    text: String,
}

impl std::str::FromStr for HttpUrl {
    type Err = ValueError;
    fn from_str(url: &str) -> Result<HttpUrl, ValueError> {
        let bad = |m: &str| ValueError(format!("{url:?} {m}"));
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            bad("must start with http:// (TLS to the endpoint is not supported yet)")
        })?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad("has no host"));
        }
        let authority = match authority.rsplit_once(':') {
            Some((_, p)) if p.parse::<u16>().is_ok() => authority.to_string(),
            Some(_) if authority.ends_with(']') => format!("{authority}:80"),
            Some(_) => return Err(bad("has a bad port")),
            None => format!("{authority}:80"),
        };
        Ok(HttpUrl {
            authority,
            path: path.to_string(),
            text: url.to_string(),
        })
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
string_serde!(HttpUrl);

/// `START-END` of u32 ids, 1 <= START <= END.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub end: u32,
}

impl std::str::FromStr for IdRange {
    type Err = String;
    fn from_str(s: &str) -> Result<IdRange, String> {
        let bad = || format!("{s:?} is not START-END (1 <= START <= END <= 4294967294)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let (start, end): (u32, u32) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        match 1 <= start && start <= end && end < u32::MAX {
            true => Ok(IdRange { start, end }),
            false => Err(bad()),
        }
    }
}

impl std::fmt::Display for IdRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

string_serde!(IdRange);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let r: PortRange = "20000-29999".parse().unwrap();
        assert_eq!((r.start, r.end), (20000, 29999));
        assert_eq!(r.to_string(), "20000-29999");
        assert!("30-20".parse::<PortRange>().is_err());
        assert!("0-20".parse::<PortRange>().is_err());
        let e: Endpoint = "collector.example:2514".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("collector.example", 2514));
        assert!("nohost".parse::<Endpoint>().is_err());
        assert!(":1".parse::<Endpoint>().is_err());
        let u: HttpUrl = "http://127.0.0.1:9090/api/v1/write".parse().unwrap();
        assert_eq!(
            (u.authority.as_str(), u.path.as_str()),
            ("127.0.0.1:9090", "/api/v1/write")
        );
        let u: HttpUrl = "http://prom".parse().unwrap();
        assert_eq!((u.authority.as_str(), u.path.as_str()), ("prom:80", "/"));
        assert!("https://prom/x".parse::<HttpUrl>().is_err());
        assert!("http://prom:x/".parse::<HttpUrl>().is_err());
    }
}
