//! `[api]`: the Unix socket, the metrics listener, and the central API over
//! TCP with mutual TLS and its limits.

use super::{invalid, ConfigError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Unix socket path; default `/run/hydra-agent/agent.sock` (under `--root`).
    pub socket: Option<PathBuf>,
    /// Group owning the socket (mode 0660): its members may use hydractl.
    /// Default: `hydra` if that group exists (the packages create it), else
    /// the agent's own group. A group named here must exist.
    pub socket_group: Option<String>,
    /// The central API: HTTPS with client certificates on this address
    /// (e.g. `0.0.0.0:7443`); none by default. Needs `tls_cert`, `tls_key`
    /// and `client_ca`.
    pub tcp: Option<SocketAddr>,
    /// A plain-HTTP listener serving only `/metrics` and `/healthz` (for
    /// Prometheus); none by default.
    pub metrics: Option<SocketAddr>,
    /// The server's certificate chain (PEM, leaf first); reloaded on SIGHUP.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1); reloaded on SIGHUP.
    pub tls_key: Option<PathBuf>,
    /// The CA(s) that issue client certificates (PEM); reloaded on SIGHUP.
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists of `client_ca` (PEM, one or more);
    /// reloaded on SIGHUP. When set, a client certificate whose issuer has
    /// no CRL in the file is refused.
    pub crl: Option<PathBuf>,
    /// Open TLS connections at most (handshaking ones included); past it
    /// new connections are closed at once.
    pub max_connections: usize,
    /// Seconds a client has to complete the TLS handshake.
    pub handshake_timeout_s: u64,
    /// Seconds a connection may sit without a complete request head (idle
    /// keep-alive, or a head sent slowly), or with an answer its client does
    /// not read.
    pub idle_timeout_s: u64,
    /// Largest request head (request line and headers), in bytes.
    pub max_header_bytes: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            socket: None,
            socket_group: None,
            tcp: None,
            metrics: None,
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            crl: None,
            max_connections: 1024,
            handshake_timeout_s: 10,
            idle_timeout_s: 60,
            max_header_bytes: 16 << 10,
        }
    }
}

impl ApiConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.tcp.is_some() {
            for (key, v) in [
                ("api.tls_cert", &self.tls_cert),
                ("api.tls_key", &self.tls_key),
                ("api.client_ca", &self.client_ca),
            ] {
                if v.is_none() {
                    return invalid(key, "api.tcp needs it (the TCP API is mutual TLS only)");
                }
            }
        } else if let Some((key, _)) = [
            ("api.tls_cert", &self.tls_cert),
            ("api.tls_key", &self.tls_key),
            ("api.client_ca", &self.client_ca),
            ("api.crl", &self.crl),
        ]
        .into_iter()
        .find(|(_, v)| v.is_some())
        {
            return invalid(key, "set without api.tcp (it is used by the TCP API only)");
        }
        if let Some(g) = &self.socket_group {
            match nix::unistd::Group::from_name(g) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return invalid("api.socket_group", format!("no group {g:?} on this host"))
                }
                Err(e) => return invalid("api.socket_group", format!("cannot look up {g:?}: {e}")),
            }
        }
        if self.max_connections == 0 {
            return invalid("api.max_connections", "must be at least 1");
        }
        if self.handshake_timeout_s == 0 {
            return invalid("api.handshake_timeout_s", "must be at least 1");
        }
        if self.idle_timeout_s == 0 {
            return invalid("api.idle_timeout_s", "must be at least 1");
        }
        if !(8192..=1 << 20).contains(&self.max_header_bytes) {
            return invalid("api.max_header_bytes", "must be 8192 to 1048576");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn tcp_needs_its_certificates_and_they_need_tcp() {
        let e =
            Config::parse("[api]\ntcp = \"127.0.0.1:7443\"\ntls_cert = \"c\"\ntls_key = \"k\"\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("api.client_ca"), "{e}");
        let e = Config::parse("[api]\ncrl = \"c\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api.crl"), "{e}");
        let c = Config::parse(
            "[api]\ntcp = \"127.0.0.1:7443\"\ntls_cert = \"c\"\ntls_key = \"k\"\nclient_ca = \"ca\"\n",
        )
        .unwrap();
        assert_eq!(c.api.max_connections, 1024);
        let e = Config::parse("[api]\nmax_header_bytes = 100\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("api.max_header_bytes"), "{e}");
    }
}
