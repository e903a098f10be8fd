//! TLS to a syslog receiver (rustls, ring): the receiver's certificate is
//! checked against the configured CA bundle and the address's host name.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;

/// Why a CA bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {reason}")]
    Bundle {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("TLS setup")]
    Tls(#[from] rustls::Error),
}

/// A client config trusting the certificates in `ca_file` (PEM).
pub fn client_config(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, CaError> {
    use rustls::pki_types::pem::PemObject;
    let bad = |reason: String| CaError::Bundle {
        path: ca_file.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca_file)
        .map_err(|e| bad(e.to_string()))?;
    for c in certs {
        let c = c.map_err(|e| bad(e.to_string()))?;
        roots.add(c).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

pub type Stream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// Connects and completes the handshake (so a bad certificate fails here).
pub fn connect(addr: &str, cfg: &Arc<rustls::ClientConfig>) -> io::Result<Stream> {
    let host = addr
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(addr);
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| io::Error::other(format!("{host}: {e}")))?;
    let mut tcp = crate::telemetry::ship::connect(addr)?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut conn = rustls::ClientConnection::new(cfg.clone(), name)
        .map_err(|e| io::Error::other(e.to_string()))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(rustls::StreamOwned::new(conn, tcp))
}
