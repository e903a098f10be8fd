//! One `oci_client::Client` per registry (its CA, plain HTTP only when the
//! config says `insecure`), the credentials read from their files at each
//! pull, and the registry's errors told apart: 401, 404, unreachable.

use super::super::ImageError;
use crate::config::{ImagesConfig, RegistryConfig};
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use std::time::Duration;

/// A client for `reg` with only its CA as trust roots when it names one.
pub(super) fn client(
    reg: &RegistryConfig,
    cfg: &ImagesConfig,
    reference: &str,
) -> Result<Client, ImageError> {
    // reqwest is built without a crypto provider of its own: the agent's
    // rustls uses ring, one provider for the whole process
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut certs = Vec::new();
    if let Some(ca) = &reg.ca {
        let pem = std::fs::read(ca).map_err(|e| ImageError::Invalid {
            reference: reference.into(),
            message: format!(
                "registry {}: cannot read its ca {}: {e}",
                reg.host,
                ca.display()
            ),
        })?;
        certs = split_pem(&pem)
            .into_iter()
            .map(|data| Certificate {
                encoding: CertificateEncoding::Pem,
                data,
            })
            .collect();
        if certs.is_empty() {
            return Err(ImageError::Invalid {
                reference: reference.into(),
                message: format!(
                    "registry {}: no certificate in its ca {}",
                    reg.host,
                    ca.display()
                ),
            });
        }
    }
    Ok(Client::new(ClientConfig {
        protocol: if reg.insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        tls_certs_only: certs,
        platform_resolver: Some(Box::new(oci_client::client::current_platform_resolver)),
        max_concurrent_download: cfg.max_parallel_layers,
        // a blob's stall is the pull's own timeout (layer.rs, which names the
        // layer and the bytes so far); this one bounds a silent answer
        read_timeout: Some(Duration::from_secs(cfg.timeout_s * 2)),
        connect_timeout: Some(Duration::from_secs(cfg.timeout_s.min(10))),
        user_agent: concat!("hydra-agent/", env!("CARGO_PKG_VERSION")),
        ..Default::default()
    }))
}

/// Each certificate of a PEM bundle on its own (reqwest takes one per call).
fn split_pem(pem: &[u8]) -> Vec<Vec<u8>> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = String::from_utf8_lossy(pem);
    text.split_inclusive(END)
        .filter(|c| c.ends_with(END))
        .filter_map(|c| c.find(BEGIN).map(|i| c.as_bytes()[i..].to_vec()))
        .collect()
}

/// The credentials of `reg`, read now from their files.
pub(super) fn auth(reg: &RegistryConfig, reference: &str) -> Result<RegistryAuth, ImageError> {
    let read = |p: &std::path::Path, key: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| ImageError::Invalid {
                reference: reference.into(),
                message: format!(
                    "registry {}: cannot read its {key} {}: {e}",
                    reg.host,
                    p.display()
                ),
            })
    };
    Ok(match (&reg.username, &reg.password_file, &reg.token_file) {
        (Some(u), Some(p), _) => RegistryAuth::Basic(u.clone(), read(p, "password_file")?),
        (_, _, Some(t)) => RegistryAuth::Bearer(read(t, "token_file")?),
        _ => RegistryAuth::Anonymous,
    })
}

/// A digest of the credentials (never the credentials themselves), to
/// tell when they changed.
pub(super) fn fingerprint(auth: &RegistryAuth) -> String {
    use sha2::{Digest as _, Sha256};
    let text = match auth {
        RegistryAuth::Anonymous => String::new(),
        RegistryAuth::Basic(u, p) => format!("basic\0{u}\0{p}"),
        RegistryAuth::Bearer(t) => format!("bearer\0{t}"),
    };
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A registry's error as the API shows it: refused credentials (401),
/// an unknown repository, tag or blob (404), a registry out of reach
/// (502), anything else invalid. Credentials never appear in it.
pub(super) fn error(reference: &str, host: &str, e: OciDistributionError) -> ImageError {
    let reference = reference.to_string();
    let has = |env: &oci_client::errors::OciEnvelope, f: fn(&OciErrorCode) -> bool| {
        env.errors.iter().any(|e| f(&e.code))
    };
    let message = format!("registry {host}: {}", super::super::oci::error::chain(&e));
    match &e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            ImageError::Unauthorized { reference, message }
        }
        OciDistributionError::RegistryError { envelope, .. }
            if has(envelope, |c| {
                matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)
            }) =>
        {
            ImageError::Unauthorized { reference, message }
        }
        OciDistributionError::RegistryError { envelope, .. }
            if has(envelope, |c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            }) =>
        {
            ImageError::Unknown { reference, message }
        }
        OciDistributionError::ImageManifestNotFoundError(_) => {
            ImageError::Unknown { reference, message }
        }
        OciDistributionError::ServerError {
            code: 401 | 403, ..
        } => ImageError::Unauthorized { reference, message },
        OciDistributionError::ServerError { code: 404, .. } => {
            ImageError::Unknown { reference, message }
        }
        OciDistributionError::RequestError(r) if r.is_connect() || r.is_timeout() => {
            ImageError::Unreachable { reference, message }
        }
        OciDistributionError::IoError(_) | OciDistributionError::RequestError(_) => {
            ImageError::Unreachable { reference, message }
        }
        _ => ImageError::Invalid { reference, message },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pem_bundle_splits_into_its_certificates() {
        let one = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----";
        let two = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";
        let bundle = format!("# a comment\n{one}\n{two}");
        let certs = split_pem(bundle.as_bytes());
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0], one.as_bytes());
        assert!(split_pem(b"no certificate here").is_empty());
    }
}
