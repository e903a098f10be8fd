//! Who may call what. On the TCP API the caller is the client certificate
//! the TLS handshake verified; its role is a URI SAN `hydra://role/<name>`
//! issued by the platform's CA, never read from the subject's CN (a name
//! any CA customer can choose). The Unix socket's callers are local users
//! the socket's mode let in: they are not given a role (everything).

use super::error::ApiError;
use super::routes::{Route, Scope};

/// The URI SAN prefix that names a role.
pub const ROLE_URI: &str = "hydra://role/";

/// A role, from least to most allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads only: list, inspect, wait, logs, stats, events, host, ports,
    /// allowlist, images, metrics.
    Observer,
    /// Reads, and changes containers, images and the firewall.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "observer" => Some(Role::Observer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Observer => "observer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may call routes of `scope`.
    pub fn allows(self, scope: Scope) -> bool {
        match self {
            Role::Admin => true,
            Role::Operator => matches!(
                scope,
                Scope::Read | Scope::Containers | Scope::Images | Scope::Firewall
            ),
            Role::Observer => scope == Scope::Read,
        }
    }
}

/// The caller of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A local user on the Unix socket (uid and pid from SO_PEERCRED).
    Local { uid: Option<u32>, pid: Option<i32> },
    /// A verified client certificate: its subject, and its role (none when
    /// it names no known one).
    Cert { subject: String, role: Option<Role> },
}

impl Caller {
    /// A verified certificate's caller (DER): the subject, and the highest
    /// role among its `hydra://role/` URI SANs. Unknown role names are
    /// ignored; a certificate that cannot be parsed has no role.
    pub fn from_cert(der: &[u8]) -> Caller {
        use x509_parser::extensions::GeneralName;
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return Caller::Cert {
                subject: "(unparsable certificate)".into(),
                role: None,
            };
        };
        let subject = cert.subject().to_string();
        let role = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .into_iter()
            .flat_map(|san| san.value.general_names.iter())
            .filter_map(|n| match n {
                GeneralName::URI(u) => u.strip_prefix(ROLE_URI).and_then(Role::parse),
                _ => None,
            })
            .max();
        Caller::Cert { subject, role }
    }

    /// Refuses a route this caller may not call (403 naming the role),
    /// before its request is read. A certificate without a role is refused
    /// every path, routes or not.
    pub fn check(&self, route: Option<&Route>) -> Result<(), ApiError> {
        match (self, route) {
            (Caller::Local { .. }, _) => Ok(()),
            (Caller::Cert { role: None, .. }, _) => Err(ApiError::forbidden(
                "role",
                format!(
                    "the client certificate has no role (a URI SAN {ROLE_URI}admin, operator or observer)"
                ),
            )),
            (Caller::Cert { role: Some(r), .. }, Some(route)) if !r.allows(route.scope) => {
                Err(forbidden(*r, route))
            }
            (Caller::Cert { .. }, _) => Ok(()),
        }
    }

    /// How the audit line names the caller.
    pub fn subject(&self) -> String {
        match self {
            Caller::Local { uid, pid } => format!(
                "local uid={} pid={}",
                uid.map_or("?".into(), |u| u.to_string()),
                pid.map_or("?".into(), |p| p.to_string())
            ),
            Caller::Cert { subject, .. } => subject.clone(),
        }
    }

    pub fn role_name(&self) -> &'static str {
        match self {
            Caller::Local { .. } => "local",
            Caller::Cert { role: None, .. } => "none",
            Caller::Cert { role: Some(r), .. } => r.as_str(),
        }
    }
}

fn forbidden(role: Role, route: &Route) -> ApiError {
    ApiError::forbidden(
        "role",
        format!(
            "role {} may not call {} {}",
            role.as_str(),
            route.method,
            route.path
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::routes::ROUTES;

    #[test]
    fn roles_grant_scopes() {
        for route in ROUTES {
            let read = route.scope == Scope::Read;
            assert!(Role::Admin.allows(route.scope));
            assert!(Role::Operator.allows(route.scope));
            assert_eq!(Role::Observer.allows(route.scope), read, "{}", route.path);
        }
    }
}
