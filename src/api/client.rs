//! A client of the agent's API over its Unix socket, used by `hydractl` and
//! tests. Typed calls build a [`Request`] and send what
//! [`Request::to_http`] makes of it, so client and server share one mapping.

use super::error::ErrorBody;
use super::request::{HttpRequest, Request};
use super::wire::{Allowlist, ContainerInfo, ExitStatus, HostInfo, PortsInfo};
use crate::cgroup::Stats;
use crate::model::{Cidr, ContainerSpec};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to the agent at {path}: {source}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("{}{}", .body.error.message, .body.error.field.as_ref().map(|f| format!(" (field: {f})")).unwrap_or_default())]
    Api { status: u16, body: ErrorBody },
    #[error("unexpected answer ({status}): {text}")]
    Unexpected { status: u16, text: String },
}

#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Client {
    pub fn new(socket: impl AsRef<Path>) -> Client {
        Client {
            socket: socket.as_ref().to_path_buf(),
        }
    }

    async fn connect(&self) -> Result<Sender, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| ClientError::Connect {
                path: self.socket.clone(),
                source,
            })?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn build(method: &str, path: &str, body: Option<Vec<u8>>) -> hyper::Request<Full<Bytes>> {
        let mut b = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "hydra-agent");
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        b.body(Full::new(body.map(Bytes::from).unwrap_or_default()))
            .expect("valid request")
    }

    /// One request as raw HTTP; answers `(status, body)` whatever the status.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        let mut s = self.connect().await?;
        let resp = s.send_request(Self::build(method, path, body)).await?;
        let status = resp.status().as_u16();
        let data = resp.into_body().collect().await?.to_bytes();
        Ok((status, data))
    }

    /// A request whose 2xx answer is JSON `T` (or empty, read as `null`).
    pub async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: &Request,
    ) -> Result<T, ClientError> {
        let HttpRequest { method, path, body } = req.to_http();
        let (status, data) = self.raw(method, &path, body).await?;
        check(status, &data)?;
        let data = if data.is_empty() {
            Bytes::from_static(b"null")
        } else {
            data
        };
        serde_json::from_slice(&data).map_err(|e| ClientError::Unexpected {
            status,
            text: format!("{e}: {}", String::from_utf8_lossy(&data)),
        })
    }

    /// A streaming NDJSON request (events, logs); `on_line` is called per
    /// line until it returns false or the stream ends.
    pub async fn stream(
        &self,
        req: &Request,
        mut on_line: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        let HttpRequest { method, path, body } = req.to_http();
        let mut s = self.connect().await?;
        let resp = s.send_request(Self::build(method, &path, body)).await?;
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        if !(200..300).contains(&status) {
            let data = body.collect().await?.to_bytes();
            return check(status, &data);
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                buf.extend_from_slice(&data);
                while let Some(i) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=i).collect();
                    if !on_line(String::from_utf8_lossy(&line[..line.len() - 1]).as_ref()) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn create(&self, spec: ContainerSpec) -> Result<ContainerInfo, ClientError> {
        self.send(&Request::Create(Box::new(spec))).await
    }
    pub async fn list(&self) -> Result<Vec<ContainerInfo>, ClientError> {
        self.send(&Request::List).await
    }
    pub async fn inspect(&self, name: &str) -> Result<ContainerInfo, ClientError> {
        self.send(&Request::Inspect(name.into())).await
    }
    pub async fn wait(&self, name: &str) -> Result<ExitStatus, ClientError> {
        self.send(&Request::Wait(name.into())).await
    }
    pub async fn stats(&self, name: &str) -> Result<Stats, ClientError> {
        self.send(&Request::Stats(name.into())).await
    }
    pub async fn host(&self) -> Result<HostInfo, ClientError> {
        self.send(&Request::Host).await
    }
    pub async fn ports(&self) -> Result<PortsInfo, ClientError> {
        self.send(&Request::Ports).await
    }
    pub async fn allowlist(&self) -> Result<Allowlist, ClientError> {
        self.send(&Request::GetAllowlist).await
    }
    /// Adds and removes CIDRs in one change on the agent.
    pub async fn edit_allowlist(
        &self,
        add: Vec<Cidr>,
        remove: Vec<Cidr>,
    ) -> Result<Allowlist, ClientError> {
        self.send(&Request::EditAllowlist { add, remove }).await
    }
}

fn check(status: u16, data: &[u8]) -> Result<(), ClientError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    match serde_json::from_slice::<ErrorBody>(data) {
        Ok(body) => Err(ClientError::Api { status, body }),
        Err(_) => Err(ClientError::Unexpected {
            status,
            text: String::from_utf8_lossy(data).into_owned(),
        }),
    }
}
