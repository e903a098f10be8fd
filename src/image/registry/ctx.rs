//! One pull's side of the registry: its client, the reference, the
//! credentials; blobs fetched with a fresh bearer token when the one in
//! hand expired during a long pull.

use super::client;
use super::sha256_hex;
use crate::image::ImageError;
use futures_util::StreamExt;
use oci_client::client::SizedStream;
use oci_client::errors::OciDistributionError;
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use sha2::{Digest as _, Sha256};

pub(super) struct Ctx<'a> {
    pub client: &'a oci_client::Client,
    pub r: &'a Reference,
    pub auth: &'a RegistryAuth,
    pub reference: &'a str,
    pub host: &'a str,
}

impl Ctx<'_> {
    /// A blob's stream. A 401 (a bearer token that expired during a long
    /// pull) gets a new token from the registry's realm and one more try.
    pub(super) async fn blob(&self, d: &OciDescriptor) -> Result<SizedStream, ImageError> {
        let err = |e| client::error(self.reference, self.host, e);
        // never the descriptor's `urls`: the client would fetch them from
        // any host (plain HTTP too), around the registry allowlist
        let d = &OciDescriptor {
            urls: None,
            ..d.clone()
        };
        match self.client.pull_blob_stream(self.r, d).await {
            Err(OciDistributionError::UnauthorizedError { .. }) => {
                self.client
                    .auth(self.r, self.auth, RegistryOperation::Pull)
                    .await
                    .map_err(err)?;
                self.client.pull_blob_stream(self.r, d).await.map_err(err)
            }
            res => res.map_err(err),
        }
    }

    /// A config blob (at most 16 MiB), checked against its digest and size.
    pub(super) async fn config(&self, d: &OciDescriptor) -> Result<Vec<u8>, ImageError> {
        let reference = self.reference;
        const MAX: i64 = 16 << 20;
        let invalid = |message: String| ImageError::Invalid {
            reference: reference.into(),
            message: format!("config {}: {message}", d.digest),
        };
        if !(0..=MAX).contains(&d.size) {
            return Err(invalid(format!("size {} is not 0 to {MAX}", d.size)));
        }
        let hex = sha256_hex(&d.digest)
            .ok_or_else(|| invalid("unsupported or malformed digest (sha256 only)".into()))?;
        let mut s = self.blob(d).await?;
        let mut data = Vec::with_capacity(d.size as usize);
        while let Some(chunk) = s.stream.next().await {
            match chunk {
                Ok(b) => {
                    data.extend_from_slice(&b);
                    if data.len() as i64 > d.size {
                        return Err(invalid(format!(
                            "the registry sent more than the descriptor's {} bytes",
                            d.size
                        )));
                    }
                }
                Err(_) if data.len() as i64 == d.size => break,
                Err(e) => {
                    return Err(ImageError::Unreachable {
                        reference: reference.into(),
                        message: format!("config {}: {e}", d.digest),
                    })
                }
            }
        }
        if data.len() as i64 != d.size || hex::encode(Sha256::digest(&data)) != hex {
            return Err(invalid(format!(
                "the registry sent {} bytes that do not match the descriptor",
                data.len()
            )));
        }
        Ok(data)
    }
}
