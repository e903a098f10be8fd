//! Raw HTTP calls through the client, for tests of the wire itself.

use super::{Client, ClientError, Request};

/// Raw HTTP calls, for tests of the wire itself (malformed or hand-made
/// bodies, exact routes).
pub trait RawCalls {
    /// A request whose 2xx answer is JSON `T`; others are errors.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError>;
    /// A streaming NDJSON request by path.
    async fn stream_path(
        &self,
        path: &str,
        on_line: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError>;
}

impl RawCalls for Client {
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let (status, data) = self.raw(method, path, body).await?;
        if !(200..300).contains(&status) {
            return Err(match serde_json::from_slice(&data) {
                Ok(body) => ClientError::Api { status, body },
                Err(_) => ClientError::Unexpected {
                    status,
                    text: String::from_utf8_lossy(&data).into(),
                },
            });
        }
        let data = if data.is_empty() {
            b"null".to_vec()
        } else {
            data.to_vec()
        };
        serde_json::from_slice(&data).map_err(|e| ClientError::Unexpected {
            status,
            text: format!("{e}: {}", String::from_utf8_lossy(&data)),
        })
    }

    async fn stream_path(
        &self,
        path: &str,
        mut on_line: impl FnMut(&str) -> bool,
    ) -> Result<(), ClientError> {
        let (path, query) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        let req = Request::from_http("GET", path, query, b"").expect("a known streaming route");
        self.stream(&req, |l| on_line(l)).await
    }
}
