//! HTTP/1.1 front ends: hyper reads a request, [`Request::from_http`] parses
//! it, a [`Handler`] answers, the answer becomes JSON. The Unix socket
//! serves every route; the metrics listener only `/metrics` and `/healthz`.
//! A TCP + mTLS listener reuses [`answer`] unchanged.

use super::error::ApiError;
use super::request::Request;
use super::service::{Handler, Response as Answer};
use super::MAX_BODY;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request as HttpRequest, Response};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

pub type Body = BoxBody<Bytes, Infallible>;

/// Past this much, an oversized body is not even drained: the connection is closed.
const DRAIN_LIMIT: usize = 64 << 20;

fn full(status: u16, content_type: &str, data: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(data.into()).boxed())
        .expect("valid response")
}

fn json<T: serde::Serialize>(status: u16, v: &T) -> Response<Body> {
    let mut data = serde_json::to_vec(v).expect("serializes");
    data.push(b'\n');
    full(status, "application/json", data)
}

fn error(e: &ApiError) -> Response<Body> {
    json(e.status, &e.body())
}

/// An NDJSON body fed by a channel of lines.
fn ndjson(rx: tokio::sync::mpsc::Receiver<String>) -> Response<Body> {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = rx.recv().await?;
        let mut b = line.into_bytes();
        b.push(b'\n');
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(b))), rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/x-ndjson")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("valid response")
}

fn to_http(a: Answer) -> Response<Body> {
    match a {
        Answer::Alive => json(200, &serde_json::json!({"status": "ok"})),
        Answer::Metrics(text) => full(200, crate::telemetry::metrics::CONTENT_TYPE, text),
        Answer::Host(h) => json(200, &h),
        Answer::Container(c) => json(200, &c),
        Answer::Created(c) => json(201, &c),
        Answer::Containers(l) => json(200, &l),
        Answer::Removed => Response::builder()
            .status(204)
            .body(Full::new(Bytes::new()).boxed())
            .expect("valid response"),
        Answer::Exit(x) => json(200, &x),
        Answer::Stats(s) => json(200, &s),
        Answer::Ports(p) => json(200, &p),
        Answer::Allowlist(a) => json(200, &a),
        Answer::Images(l) => json(200, &l),
        Answer::Pruned(p) => json(200, &p),
        Answer::Lines(rx) => ndjson(rx),
    }
}

async fn read_body(req: HttpRequest<Incoming>) -> Result<Bytes, ApiError> {
    let mut body = req.into_body();
    let mut data = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad("body", format!("cannot read the body: {e}")))?;
        if let Ok(chunk) = frame.into_data() {
            seen += chunk.len();
            if seen <= MAX_BODY {
                data.extend_from_slice(&chunk);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    // A moderately oversized body is read to its end (and dropped) so the
    // client is not cut off mid-write and gets to read the 413.
    if seen > MAX_BODY {
        return Err(ApiError::too_large(MAX_BODY));
    }
    Ok(Bytes::from(data))
}

/// Parses an HTTP request into a [`Request`] (reading its body).
pub async fn parse(req: HttpRequest<Incoming>) -> Result<Request, ApiError> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let body = read_body(req).await?;
    Request::from_http(&method, &path, query.as_deref(), &body)
}

/// Answers one HTTP request with `h`, for any front end; `allow` filters
/// the routes this listener serves. Never fails: errors become JSON.
pub async fn answer<H: Handler>(
    h: &H,
    req: HttpRequest<Incoming>,
    allow: impl FnOnce(&Request) -> Result<(), ApiError>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = match parse(req).await {
        Ok(r) => match allow(&r) {
            Ok(()) => h.handle(r).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let resp = res.map_or_else(|e| error(&e), to_http);
    h.answered(method.as_str(), resp.status().as_u16());
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "api");
    resp
}

/// Serves `/metrics` and `/healthz` (nothing else) over plain HTTP on a TCP
/// listener, for Prometheus, until `shutdown` fires.
pub async fn serve_metrics<H: Handler>(
    h: Arc<H>,
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            acc = listener.accept() => {
                let Ok((stream, _)) = acc else {
                    // e.g. out of fds: do not spin
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let h = h.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let h = h.clone();
                        async move {
                            let only = |r: &Request| match r {
                                Request::Metrics | Request::Healthz => Ok(()),
                                _ => Err(ApiError::not_found("only /metrics and /healthz are served here")),
                            };
                            Ok::<_, Infallible>(answer(&*h, req, only).await)
                        }
                    });
                    // a client that never finishes its request is dropped
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10))
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// Serves the API on a Unix socket (mode 0660) until `shutdown` fires.
pub async fn serve_unix<H: Handler>(
    h: Arc<H>,
    path: &std::path::Path,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a killed agent: nobody listens on it any more.
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    loop {
        tokio::select! {
            acc = listener.accept() => {
                let (stream, _) = match acc {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let h = h.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let h = h.clone();
                        async move { Ok::<_, Infallible>(answer(&*h, req, |_| Ok(())).await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    let _ = std::fs::remove_file(path);
    Ok(())
}
