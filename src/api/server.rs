//! HTTP/1.1 front ends: hyper reads a request, [`Request::from_http`] parses
//! it, a [`Handler`] answers, the answer becomes JSON. The Unix socket
//! serves every route; the metrics listener only `/metrics` and `/healthz`.
//! The TCP + mTLS listener ([`super::tcp`]) reuses [`answer`] unchanged,
//! with the caller its certificate names.

use super::auth::Caller;
use super::error::ApiError;
use super::request::Request;
use super::routes::{self, Route};
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

/// 405 with `Allow` when `path` has routes, none for `method`.
fn not_allowed(method: &str, path: &str) -> Option<Response<Body>> {
    let allow = routes::methods(path);
    if allow.is_empty() {
        return None;
    }
    let e = ApiError::new(
        405,
        "method_not_allowed",
        format!("{path} answers {}, not {method}", allow.join(", ")),
    );
    let mut resp = error(&e);
    resp.headers_mut().insert(
        "allow",
        allow
            .join(", ")
            .parse()
            .expect("method names are a valid header"),
    );
    Some(resp)
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

pub(super) fn to_http(a: Answer) -> Response<Body> {
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
        Answer::OpenApi(text) => full(200, "application/json", text),
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

/// What a front end asks of [`answer`] besides the handler.
pub struct Gate<A> {
    /// The caller, for the audit line; none: no audit (the metrics listener).
    pub caller: Option<Arc<Caller>>,
    /// The routes this listener serves or this caller may call: checked on
    /// the route before the body is read, and again on what the request
    /// parsed to.
    pub allow: A,
    /// Time to read the body; past it 408.
    pub body_timeout: Option<Duration>,
    /// The peer's address (TCP), for the audit line.
    pub peer: Option<std::net::SocketAddr>,
}

/// Answers one HTTP request with `h`, for any front end. Never fails:
/// errors become JSON. Once a request is allowed and parsed, its handler
/// runs in a task of its own, so a client that goes away cannot cut a change
/// short; with a caller, every request that may change something (any
/// method but GET and HEAD) and every refusal (403) is logged once as an
/// audit line (target `hydra_agent::audit`), also when the client went away.
pub async fn answer<H: Handler, A>(
    h: Arc<H>,
    req: HttpRequest<Incoming>,
    gate: Gate<A>,
) -> Response<Body>
where
    A: Fn(Option<&'static Route>) -> Result<(), ApiError>,
{
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    // decided on the route, before the request's body is read
    let route = routes::find(method.as_str(), &path);
    let parsed = match (gate.allow)(route) {
        Ok(()) => match gate.body_timeout {
            Some(t) => tokio::time::timeout(t, parse(req))
                .await
                .unwrap_or_else(|_| {
                    Err(ApiError::new(
                        408,
                        "timeout",
                        "the request's body did not arrive in time (api.idle_timeout_s)",
                    ))
                }),
            None => parse(req).await,
        },
        Err(e) => Err(e),
    };
    // and on what it parsed to (the same route, unless the two parsers
    // disagree on an odd path)
    let parsed = parsed.and_then(|r| (gate.allow)(Some(r.route())).map(|()| r));
    let audit = Audit {
        caller: gate.caller,
        peer: gate.peer,
        method: method.clone(),
        path: path.clone(),
        query,
    };
    let r = match parsed {
        Ok(r) => r,
        Err(e) => {
            let resp = match e.status {
                404 if route.is_none() => {
                    not_allowed(method.as_str(), &path).unwrap_or_else(|| error(&e))
                }
                _ => error(&e),
            };
            h.answered(method.as_str(), resp.status().as_u16());
            audit.log(route, resp.status().as_u16());
            return resp;
        }
    };
    let route = r.route();
    let h2 = h.clone();
    let task = tokio::spawn(async move {
        let resp = h2.handle(r).await.map_or_else(|e| error(&e), to_http);
        let status = resp.status().as_u16();
        h2.answered(audit.method.as_str(), status);
        audit.log(Some(route), status);
        resp
    });
    task.await.unwrap_or_else(|_| {
        // the handler panicked: its audit line was not written
        h.answered(method.as_str(), 500);
        error(&ApiError::internal(format!(
            "{method} {path}: the handler failed"
        )))
    })
}

/// One request's audit line, written once its answer is known.
struct Audit {
    caller: Option<Arc<Caller>>,
    peer: Option<std::net::SocketAddr>,
    method: hyper::Method,
    path: String,
    query: String,
}

impl Audit {
    fn log(&self, route: Option<&Route>, status: u16) {
        tracing::debug!(method = %self.method, path = %self.path, status, "api");
        let Some(c) = &self.caller else { return };
        if matches!(self.method, hyper::Method::GET | hyper::Method::HEAD) && status != 403 {
            return;
        }
        tracing::info!(
            target: "hydra_agent::audit",
            subject = %c.subject(),
            role = c.role_name(),
            peer = self.peer.map_or("local".into(), |p| p.to_string()),
            route = route.map_or("-", |r| r.path),
            method = %self.method,
            path = %self.path,
            query = %self.query,
            status,
            "audit"
        );
    }
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
                            let only = |r: Option<&Route>| match r {
                                Some(r) if [routes::METRICS.id, routes::HEALTHZ.id].contains(&r.id) => Ok(()),
                                _ => Err(ApiError::not_found("only /metrics and /healthz are served here")),
                            };
                            let gate = Gate { caller: None, allow: only, body_timeout: Some(Duration::from_secs(10)), peer: None };
                            Ok::<_, Infallible>(answer(h, req, gate).await)
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

/// Binds the API's Unix socket (mode 0660, group `group` if given),
/// replacing one left by a killed agent.
pub fn bind_unix(
    path: &std::path::Path,
    group: Option<nix::unistd::Gid>,
) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // A socket left by a killed agent: nobody listens on it any more.
    if std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    if group.is_some() {
        nix::unistd::chown(path, None, group)?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Serves the API on a bound Unix socket until `shutdown` fires, then
/// removes the socket.
pub async fn serve_unix<H: Handler>(
    h: Arc<H>,
    listener: tokio::net::UnixListener,
    path: &std::path::Path,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
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
                let caller = Arc::new(Caller::Local {
                    uid: stream.peer_cred().ok().map(|c| c.uid()),
                    pid: stream.peer_cred().ok().and_then(|c| c.pid()),
                });
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (h, caller) = (h.clone(), caller.clone());
                        async move {
                            let gate = Gate { caller: Some(caller), allow: |_: Option<&Route>| Ok(()), body_timeout: None, peer: None };
                            Ok::<_, Infallible>(answer(h, req, gate).await)
                        }
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
