//! A client of the agent's API, over its Unix socket or over TCP with
//! mutual TLS (`https://HOST:PORT`), used by `hydractl` and tests. Typed calls build a [`Request`] and send what
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
    #[error("cannot connect to the agent at {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Setup(String),
    #[error("HTTP: {}", chain(.0))]
    Http(#[from] hyper::Error),
    #[error("{}{}", .body.error.message, .body.error.field.as_ref().map(|f| format!(" (field: {f})")).unwrap_or_default())]
    Api { status: u16, body: ErrorBody },
    #[error("unexpected answer ({status}): {text}")]
    Unexpected { status: u16, text: String },
}

#[derive(Debug, Clone)]
pub struct Client {
    endpoint: Endpoint,
}

#[derive(Debug, Clone)]
enum Endpoint {
    Unix(PathBuf),
    Tls {
        /// `HOST:PORT` as given.
        addr: String,
        name: rustls::pki_types::ServerName<'static>,
        cfg: std::sync::Arc<rustls::ClientConfig>,
    },
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

impl Client {
    /// Over the Unix socket at `socket`.
    pub fn new(socket: impl AsRef<Path>) -> Client {
        Client {
            endpoint: Endpoint::Unix(socket.as_ref().to_path_buf()),
        }
    }

    /// Over TCP and TLS to `url` (`https://HOST:PORT`), with `cfg` (see
    /// [`super::tls::client_config`]); the server's certificate must name HOST.
    pub fn tls(
        url: &str,
        cfg: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<Client, ClientError> {
        let bad = |m: &str| ClientError::Setup(format!("--host {url:?}: {m}"));
        let rest = url
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("https://"))
            .map(|_| &url[8..])
            .ok_or_else(|| bad("must start with https://"))?;
        let addr = rest.trim_end_matches('/');
        if addr.contains('/') {
            return Err(bad("a path is not allowed, only https://HOST:PORT"));
        }
        let host = match addr.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => h,
            _ => return Err(bad("needs a port, e.g. https://agent-1:7443")),
        };
        let host = match host.strip_prefix('[') {
            Some(h) => h
                .strip_suffix(']')
                .ok_or_else(|| bad("an unclosed [ in the host"))?,
            None if host.contains(':') => {
                return Err(bad("an IPv6 address goes in brackets: https://[::1]:7443"))
            }
            None => host,
        };
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| bad("not a host name or IP address"))?;
        Ok(Client {
            endpoint: Endpoint::Tls {
                addr: addr.to_string(),
                name,
                cfg,
            },
        })
    }

    async fn connect(&self) -> Result<Sender, ClientError> {
        use hyper_util::rt::TokioIo;
        let (sender, conn): (Sender, _) = match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|source| ClientError::Connect {
                        endpoint: path.display().to_string(),
                        source,
                    })?;
                let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                (s, tokio::spawn(async move { c.await.map(|_| ()) }))
            }
            Endpoint::Tls { addr, name, cfg } => {
                let err = |source| ClientError::Connect {
                    endpoint: format!("https://{addr}"),
                    source,
                };
                let tcp = tokio::net::TcpStream::connect(addr.as_str())
                    .await
                    .map_err(err)?;
                let _ = tcp.set_nodelay(true);
                let tls = tokio_rustls::TlsConnector::from(cfg.clone())
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(err)?;
                let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                (s, tokio::spawn(async move { c.await.map(|_| ()) }))
            }
        };
        drop(conn);
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

    /// One connection for many requests (keep-alive).
    pub async fn session(&self) -> Result<Session, ClientError> {
        Ok(Session(self.connect().await?))
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

/// One kept-alive connection to the agent.
pub struct Session(Sender);

impl Session {
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        self.0.ready().await?;
        Ok(self
            .0
            .send_request(Client::build(method, path, body))
            .await?)
    }

    /// One request on this connection; `(status, body)` whatever the status.
    pub async fn raw(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    /// One request's status, and the body of an error answer; a success's
    /// body (e.g. an endless stream's) is dropped unread.
    pub async fn status(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(u16, Bytes), ClientError> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok((status, Bytes::new()));
        }
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }
}

/// An error and its causes, e.g. the TLS alert behind a closed connection.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_urls() {
        let cfg = std::sync::Arc::new(
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
        );
        for ok in [
            "https://agent-1:7443",
            "HTTPS://10.0.0.1:7443/",
            "https://[::1]:7443",
        ] {
            assert!(Client::tls(ok, cfg.clone()).is_ok(), "{ok}");
        }
        for bad in [
            "http://a:1",
            "https://a",
            "https://::1:7443",
            "https://[::1:7443",
            "https://a:1/v1",
        ] {
            assert!(Client::tls(bad, cfg.clone()).is_err(), "{bad}");
        }
    }
}
