//! The central API: the same routes and handler as the Unix socket, over
//! HTTPS with a client certificate required. The certificate's role
//! ([`Caller::from_cert`]) decides what each request may do. Bounded
//! everywhere a remote client could hold the agent's resources: open
//! connections, the handshake's time, a request head's size and time, an
//! idle keep-alive, and an answer its client does not read.

use super::auth::Caller;
use super::error::ApiError;
use super::routes::Route;
use super::server::{answer, Gate};
use super::service::Handler;
use super::stall::{stalled, Since, Watched};
use super::tls::Reloadable;
use crate::config::ApiConfig;
use rustls::pki_types::CertificateDer;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The TCP API's limits, from `[api]`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub handshake: Duration,
    pub idle: Duration,
    pub max_header_bytes: usize,
}

impl Limits {
    pub fn from_config(api: &ApiConfig) -> Limits {
        Limits {
            max_connections: api.max_connections,
            handshake: Duration::from_secs(api.handshake_timeout_s),
            idle: Duration::from_secs(api.idle_timeout_s),
            max_header_bytes: api.max_header_bytes,
        }
    }
}

/// Serves the API over TLS on `listener` until `shutdown` fires; each new
/// connection takes the TLS configuration `tls` holds at its accept.
pub async fn serve_tls<H: Handler>(
    h: Arc<H>,
    listener: tokio::net::TcpListener,
    tls: Arc<Reloadable>,
    limits: Limits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    // handshakes have a budget of their own: clients that never present a
    // certificate cannot take the places of authenticated connections
    let handshakes = Arc::new(Semaphore::new((limits.max_connections / 4).max(1)));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        tokio::select! {
            acc = listener.accept() => {
                let (stream, peer) = match acc {
                    Ok(s) => s,
                    Err(e) => {
                        // e.g. out of fds: do not spin
                        tracing::warn!(error = %e, "api.tcp: accept");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(hs) = handshakes.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "api.tcp: too many handshakes at once; connection closed");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let c = Conn { tls: tls.clone(), slots: slots.clone(), peer, limits };
                tokio::spawn(connection(h.clone(), stream, c, hs));
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// What a connection needs besides its handler and stream.
struct Conn {
    tls: Arc<Reloadable>,
    slots: Arc<Semaphore>,
    peer: SocketAddr,
    limits: Limits,
}

/// Aborts a task when dropped (also when the owner panics).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The TLS handshake, bounded in time; a refusal is logged.
async fn accept(
    cfg: Arc<rustls::ServerConfig>,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    limit: Duration,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "api.tcp: TLS handshake refused");
            None
        }
        Err(_) => {
            tracing::info!(%peer, "api.tcp: TLS handshake timed out (api.handshake_timeout_s)");
            None
        }
    }
}

/// A connection's check of its client certificate against the TLS files
/// now: after a reload, again before its next request (the verdict kept
/// until the next reload).
fn rechecker(
    reload: Arc<Reloadable>,
    chain: Vec<CertificateDer<'static>>,
    generation: u64,
) -> impl Fn() -> Result<(), ApiError> + Clone {
    let checked = Arc::new(std::sync::Mutex::new((generation, Ok::<(), String>(()))));
    move || {
        let mut c = checked.lock().unwrap_or_else(|e| e.into_inner());
        let now = reload.generation();
        if c.0 != now {
            *c = (now, reload.recheck(&chain));
        }
        c.1.clone().map_err(|e| {
            ApiError::forbidden(
                "certificate",
                format!("the client certificate is no longer accepted since the TLS files were reloaded: {e}"),
            )
        })
    }
}

/// One connection: the handshake (bounded in time), then HTTP/1.1
/// keep-alive requests, each checked against the certificate's role.
async fn connection<H: Handler>(
    h: Arc<H>,
    stream: tokio::net::TcpStream,
    c: Conn,
    handshake: OwnedSemaphorePermit,
) {
    let Conn {
        tls: reload,
        slots,
        peer,
        limits,
    } = c;
    let (cfg, generation) = reload.current();
    let Some(tls) = accept(cfg, stream, peer, limits.handshake).await else {
        return;
    };
    drop(handshake);
    let Ok(_slot) = slots.try_acquire_owned() else {
        tracing::warn!(%peer, max = limits.max_connections, "api.tcp: api.max_connections reached; connection closed");
        return;
    };
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let Some(cert) = chain.first() else {
        return; // the verifier requires one: not reached
    };
    let caller = Arc::new(Caller::from_cert(cert));
    let recheck = rechecker(reload, chain, generation);
    // an answer its client does not read holds the connection at most
    // `idle` (a watchdog beside it: see stall.rs)
    let since = Since::new();
    let io = hyper_util::rt::TokioIo::new(Watched {
        inner: tls,
        since: since.clone(),
    });
    let svc = hyper::service::service_fn(move |req| {
        let (h, caller) = (h.clone(), caller.clone());
        let recheck = recheck.clone();
        async move {
            let c = caller.clone();
            let gate = Gate {
                caller: Some(caller),
                allow: move |r: Option<&Route>| {
                    recheck()?;
                    c.check(r)
                },
                body_timeout: Some(limits.idle),
                peer: Some(peer),
            };
            Ok::<_, Infallible>(answer(h, req, gate).await)
        }
    });
    // the head timer runs from the end of the previous answer: it bounds
    // idle keep-alive connections and heads sent slowly alike
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.idle)
        .max_header_size(limits.max_header_bytes)
        .serve_connection(io, svc);
    let (kill, killed) = tokio::sync::oneshot::channel::<()>();
    let _dog = AbortOnDrop(tokio::spawn(async move {
        stalled(since, limits.idle).await;
        let _ = kill.send(());
    }));
    tokio::select! {
        r = conn => if let Err(e) = r {
            tracing::debug!(%peer, error = %e, "api.tcp: connection");
        },
        Ok(()) = killed => {
            tracing::info!(%peer, "api.tcp: the client did not read its answer for api.idle_timeout_s; connection closed");
        }
    }
}
