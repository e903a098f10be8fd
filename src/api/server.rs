//! The HTTP/1.1 + JSON API, served on the Unix socket. One handler for every
//! listener, so a TCP+mTLS front end reuses it unchanged.

use super::{parse_spec, ApiError, HostInfo, MAX_BODY};
use crate::supervisor::{parse_signal, Supervisor};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
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

fn query(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| v.to_string())
    })
}

fn query_bool(req: &Request<Incoming>, key: &str) -> Result<bool, ApiError> {
    match query(req, key).as_deref() {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(v) => Err(ApiError::bad(key, format!("{v:?} is not true or false"))),
    }
}

fn query_num(req: &Request<Incoming>, key: &str) -> Result<Option<u64>, ApiError> {
    query(req, key)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::bad(key, format!("{v:?} is not a non-negative integer")))
        })
        .transpose()
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            413,
            "too_large",
            format!("request body is larger than {MAX_BODY} bytes"),
        )
    };
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
        return Err(too_large());
    }
    Ok(Bytes::from(data))
}

/// Handles one request; never fails (errors become JSON responses).
pub async fn handle(
    sup: Arc<Supervisor>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let res = route(&sup, req).await;
    let resp = res.unwrap_or_else(|e| error(&e));
    crate::telemetry::metrics::count_request(method.as_str(), resp.status().as_u16());
    tracing::debug!(%method, %path, status = resp.status().as_u16(), "api");
    Ok(resp)
}

async fn route(sup: &Arc<Supervisor>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    let m = req.method().clone();
    match (&m, segs.as_slice()) {
        (&Method::GET, ["healthz"]) => Ok(json(200, &serde_json::json!({"status": "ok"}))),
        (&Method::GET, ["metrics"]) => Ok(full(
            200,
            "text/plain; version=0.0.4",
            crate::telemetry::metrics::render(sup),
        )),
        (&Method::GET, ["v1", "host"]) => Ok(json(200, &host(sup))),
        (&Method::GET, ["v1", "events"]) => {
            let mut sub = sup.subscribe();
            let (tx, rx) = tokio::sync::mpsc::channel(256);
            tokio::spawn(async move {
                loop {
                    match sub.recv().await {
                        Ok(ev) => {
                            if tx
                                .send(serde_json::to_string(&ev).expect("serializes"))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(
                                missed = n,
                                "an events client is too slow; events were skipped"
                            );
                        }
                        Err(_) => return,
                    }
                }
            });
            Ok(ndjson(rx))
        }
        (&Method::GET, ["v1", "containers"]) => Ok(json(200, &sup.list())),
        (&Method::GET, ["v1", "ports"]) => {
            let net = network(sup)?;
            Ok(json(
                200,
                &tokio::task::spawn_blocking(move || net.inventory())
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?,
            ))
        }
        (&Method::GET, ["v1", "firewall", "allowlist"]) => {
            Ok(json(200, &network(sup)?.allowlist()))
        }
        (&Method::PUT, ["v1", "firewall", "allowlist"]) => {
            let net = network(sup)?;
            let body = read_body(req).await?;
            let de = &mut serde_json::Deserializer::from_slice(&body);
            let a: crate::network::Allowlist =
                serde_path_to_error::deserialize(de).map_err(|e| {
                    let path = e.path().to_string();
                    ApiError::bad(
                        if path == "." { "cidrs".into() } else { path },
                        format!("invalid allowlist: {}", e.into_inner()),
                    )
                })?;
            let out = tokio::task::spawn_blocking(move || net.set_allowlist(&a))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))??;
            Ok(json(200, &out))
        }
        (&Method::POST, ["v1", "containers"]) => {
            let body = read_body(req).await?;
            let spec = parse_spec(&body)?;
            Ok(json(201, &sup.create(spec).await?))
        }
        (_, ["v1", "containers", name, rest @ ..]) => {
            let name = name.to_string();
            match (&m, rest) {
                (&Method::GET, []) => Ok(json(200, &sup.inspect(&name)?)),
                (&Method::DELETE, []) => {
                    sup.remove(&name, query_bool(&req, "force")?).await?;
                    Ok(Response::builder()
                        .status(204)
                        .body(Full::new(Bytes::new()).boxed())
                        .expect("valid"))
                }
                (&Method::POST, ["start"]) => Ok(json(200, &sup.start(&name).await?)),
                (&Method::POST, ["stop"]) => {
                    let t = query_num(&req, "timeout")?.unwrap_or(10);
                    Ok(json(200, &sup.stop(&name, Duration::from_secs(t)).await?))
                }
                (&Method::POST, ["restart"]) => {
                    let t = query_num(&req, "timeout")?.unwrap_or(10);
                    Ok(json(
                        200,
                        &sup.restart(&name, Duration::from_secs(t)).await?,
                    ))
                }
                (&Method::POST, ["kill"]) => {
                    let sig =
                        parse_signal(&query(&req, "signal").unwrap_or_else(|| "KILL".into()))?;
                    Ok(json(200, &sup.kill(&name, sig).await?))
                }
                (&Method::GET, ["wait"]) => Ok(json(200, &sup.wait(&name).await?)),
                (&Method::GET, ["stats"]) => Ok(json(200, &sup.stats(&name)?)),
                (&Method::GET, ["logs"]) => {
                    let follow = query_bool(&req, "follow")?;
                    let tail = query_num(&req, "tail")?.map(|t| t as usize);
                    let (tx, rx) = tokio::sync::mpsc::channel(1024);
                    sup.logs(&name, tail, follow, tx)?;
                    Ok(ndjson(rx))
                }
                _ => Err(ApiError::not_found(format!("no route {m} {path}"))),
            }
        }
        _ => Err(ApiError::not_found(format!("no route {m} {path}"))),
    }
    .map(|mut r: Response<Body>| {
        if r.status() == StatusCode::NO_CONTENT {
            r.headers_mut().remove("content-type");
        }
        r
    })
}

fn network(sup: &Supervisor) -> Result<Arc<crate::network::Network>, ApiError> {
    sup.network().cloned().ok_or_else(|| {
        ApiError::new(
            404,
            "not_found",
            "host networking is disabled on this agent (network.enabled = false)",
        )
    })
}

fn host(sup: &Supervisor) -> HostInfo {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| {
                    l.strip_prefix("MemTotal:")
                        .map(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                })
                .flatten()
        })
        .unwrap_or(0);
    HostInfo {
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        agent_version: crate::VERSION.into(),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        cgroup_mode: sup.mode().as_str().into(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        memory_bytes: mem * 1024,
        containers: sup.counts(),
    }
}

/// Serves `/metrics` and `/healthz` (nothing else) over plain HTTP on a TCP
/// listener, for Prometheus, until `shutdown` fires.
pub async fn serve_metrics(
    sup: Arc<Supervisor>,
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            acc = listener.accept() => {
                let Ok((stream, _)) = acc else {
                    // e.g. out of fds: do not spin
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                };
                let sup = sup.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let sup = sup.clone();
                        async move {
                            let resp = match (req.method(), req.uri().path()) {
                                (&Method::GET, "/metrics") => full(
                                    200,
                                    "text/plain; version=0.0.4",
                                    crate::telemetry::metrics::render(&sup),
                                ),
                                (&Method::GET, "/healthz") => json(200, &serde_json::json!({"status": "ok"})),
                                _ => error(&ApiError::not_found("only /metrics and /healthz are served here")),
                            };
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    // a client that never finishes its request is dropped
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(std::time::Duration::from_secs(10))
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// Serves the API on a Unix socket (mode 0660) until `shutdown` fires.
pub async fn serve_unix(
    sup: Arc<Supervisor>,
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
                    Err(e) => { tracing::warn!(error = %e, "accept"); continue; }
                };
                let sup = sup.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle(sup.clone(), req));
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
