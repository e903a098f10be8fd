//! The TCP API's TLS (rustls, ring): the server's configuration made from
//! `[api]`'s PEM files (certificate chain, key, client CA, CRLs), swapped on
//! SIGHUP for new connections while open ones keep theirs; and the client
//! side `hydractl` uses.

use crate::config::ApiConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Why a TLS configuration cannot be made; names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key} {path}: {reason}")]
    File {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{key}: {reason}")]
    Config { key: &'static str, reason: String },
}

fn file_err<'a>(key: &'static str, path: &'a Path) -> impl Fn(String) -> TlsError + 'a {
    move |reason| TlsError::File {
        key,
        path: path.to_path_buf(),
        reason,
    }
}

fn certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = file_err(key, path);
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

fn private_key(key: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(key, path)(e.to_string()))
}

fn roots(key: &'static str, path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(key, path)? {
        roots
            .add(c)
            .map_err(|e| file_err(key, path)(e.to_string()))?;
    }
    Ok(roots)
}

fn crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bad = file_err("api.crl", path);
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if crls.is_empty() {
        return Err(bad("no PEM X509 CRL in it".into()));
    }
    Ok(crls)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client-certificate verifier of a configuration.
pub type Verifier = Arc<dyn rustls::server::danger::ClientCertVerifier>;

/// The server's configuration from `[api]`: TLS 1.3 and 1.2, a client
/// certificate required and verified against `client_ca` (and, with
/// `crl`, not revoked: the end entity is checked, and one whose issuer has
/// no CRL in the file is refused), HTTP/1.1 by ALPN.
pub fn server_config(api: &ApiConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    Ok(server_parts(api)?.0)
}

/// A CRL past its nextUpdate is still used (refusing every client for a
/// late CRL would take the API down), and said so.
fn warn_if_stale(path: &Path, crls: &[CertificateRevocationListDer<'_>]) {
    for c in crls {
        if let Ok((_, crl)) = x509_parser::parse_x509_crl(c) {
            if let Some(next) = crl.next_update() {
                if next.timestamp() < chrono::Utc::now().timestamp() {
                    tracing::warn!(crl = %path.display(), next_update = %next, "api.crl: this CRL is past its nextUpdate; it is still used, but the CA may have revoked more since");
                }
            }
        }
    }
}

fn server_parts(api: &ApiConfig) -> Result<(Arc<rustls::ServerConfig>, Verifier), TlsError> {
    let need = |key: &'static str, v: &Option<PathBuf>| {
        v.clone().ok_or(TlsError::Config {
            key,
            reason: "needed by api.tcp".into(),
        })
    };
    let (cert, key, ca) = (
        need("api.tls_cert", &api.tls_cert)?,
        need("api.tls_key", &api.tls_key)?,
        need("api.client_ca", &api.client_ca)?,
    );
    let mut verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots("api.client_ca", &ca)?),
        provider(),
    );
    if let Some(crl) = &api.crl {
        let list = crls(crl)?;
        warn_if_stale(crl, &list);
        verifier = verifier.with_crls(list).only_check_end_entity_revocation();
    }
    let verifier = verifier.build().map_err(|e| TlsError::Config {
        key: "api.client_ca",
        reason: e.to_string(),
    })?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config {
            key: "api.tcp",
            reason: e.to_string(),
        })?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(
            certs("api.tls_cert", &cert)?,
            private_key("api.tls_key", &key)?,
        )
        .map_err(|e| TlsError::Config {
            key: "api.tls_key",
            reason: format!("does not match api.tls_cert: {e}"),
        })?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(cfg), verifier))
}

/// The server's configuration now; [`Reloadable::reload`] replaces it for
/// the connections accepted from then on, and open connections check their
/// certificate again with [`Reloadable::recheck`].
pub struct Reloadable(RwLock<Current>);

struct Current {
    cfg: Arc<rustls::ServerConfig>,
    verifier: Verifier,
    generation: u64,
}

impl Reloadable {
    pub fn new(api: &ApiConfig) -> Result<Reloadable, TlsError> {
        let (cfg, verifier) = server_parts(api)?;
        Ok(Reloadable(RwLock::new(Current {
            cfg,
            verifier,
            generation: 0,
        })))
    }

    /// The configuration for a new connection, and its generation.
    pub fn current(&self) -> (Arc<rustls::ServerConfig>, u64) {
        let c = self.0.read().unwrap_or_else(|e| e.into_inner());
        (c.cfg.clone(), c.generation)
    }

    pub fn generation(&self) -> u64 {
        self.0.read().unwrap_or_else(|e| e.into_inner()).generation
    }

    /// Re-reads the files; on error the old configuration stays.
    pub fn reload(&self, api: &ApiConfig) -> Result<(), TlsError> {
        let (cfg, verifier) = server_parts(api)?;
        let mut c = self.0.write().unwrap_or_else(|e| e.into_inner());
        *c = Current {
            cfg,
            verifier,
            generation: c.generation + 1,
        };
        Ok(())
    }

    /// Checks an open connection's client certificate chain (leaf first)
    /// against the current CA and CRL: a reload that revokes it, or drops
    /// its CA, ends what it may do on connections it already has.
    pub fn recheck(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let v = self
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .verifier
            .clone();
        let (leaf, rest) = chain.split_first().ok_or("no certificate")?;
        v.verify_client_cert(leaf, rest, rustls::pki_types::UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A client's configuration: trusts `ca` (PEM) only, presents `cert` with
/// `key`.
pub fn client_config(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config {
            key: "--cacert",
            reason: e.to_string(),
        })?
        .with_root_certificates(roots("--cacert", ca)?)
        .with_client_auth_cert(certs("--cert", cert)?, private_key("--key", key)?)
        .map_err(|e| TlsError::Config {
            key: "--key",
            reason: format!("does not match --cert: {e}"),
        })?;
    Ok(Arc::new(cfg))
}
