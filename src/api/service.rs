//! The one handler behind every front end: a [`Request`] in, a [`Response`]
//! out. The Unix-socket server, the TCP server and tests all go through
//! [`Handler`]; [`Service`] is the agent's (the supervisor, the network, the
//! metrics registry).

use super::error::ApiError;
use super::request::Request;
use super::wire::{
    Allowlist, ContainerInfo, ExitStatus, HostInfo, ImageInfo, PortsInfo, PruneReport,
};
use crate::cgroup::Stats;
use crate::model::ContainerSpec;
use crate::network::Network;
use crate::supervisor::Supervisor;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a request answers.
#[derive(Debug)]
pub enum Response {
    /// `{"status": "ok"}` (liveness).
    Alive,
    /// The metrics exposition (OpenMetrics text).
    Metrics(String),
    Host(HostInfo),
    Container(ContainerInfo),
    /// A container just made (`201`).
    Created(ContainerInfo),
    Containers(Vec<ContainerInfo>),
    /// Removed (`204`, no body).
    Removed,
    Exit(ExitStatus),
    Stats(Box<Stats>),
    Ports(PortsInfo),
    Allowlist(Allowlist),
    Images(Vec<ImageInfo>),
    Pruned(PruneReport),
    /// The OpenAPI description (JSON text).
    OpenApi(&'static str),
    /// NDJSON lines as they come (events, logs).
    Lines(mpsc::Receiver<String>),
}

/// Handles requests; every front end calls it.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request) -> impl Future<Output = Result<Response, ApiError>> + Send;
    /// Told of every answer (method and status), e.g. to count it.
    fn answered(&self, _method: &str, _status: u16) {}
}

/// The agent's handler.
pub struct Service {
    pub sup: Arc<Supervisor>,
    /// The metrics every part registered.
    pub registry: Arc<Registry>,
    /// One lock per name with a PUT in progress.
    puts: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Service {
    pub fn new(sup: Arc<Supervisor>, registry: Arc<Registry>) -> Service {
        Service {
            sup,
            registry,
            puts: Default::default(),
        }
    }

    /// `PUT /v1/containers/{name}`: PUTs of one name take turns, so of
    /// concurrent identical ones the first creates and the others find it.
    async fn put(&self, spec: ContainerSpec) -> Result<Response, ApiError> {
        let name = spec.name.clone();
        let lock = {
            let mut puts = self.puts.lock().unwrap_or_else(|e| e.into_inner());
            puts.entry(name.clone()).or_default().clone()
        };
        let res = {
            let _turn = lock.lock().await;
            self.put_locked(spec).await
        };
        drop(lock);
        let mut puts = self.puts.lock().unwrap_or_else(|e| e.into_inner());
        if puts.get(&name).is_some_and(|l| Arc::strong_count(l) == 1) {
            puts.remove(&name);
        }
        res
    }

    async fn put_locked(&self, spec: ContainerSpec) -> Result<Response, ApiError> {
        loop {
            if let Ok(v) = self.sup.inspect(&spec.name) {
                return same_spec(v, &spec);
            }
            // a create of that name in progress (a POST's, or a PUT's whose
            // client went away): its outcome decides
            if self.sup.creating(&spec.name) {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            match self.sup.create(spec.clone()).await {
                Ok(v) => return Ok(Response::Created(v.into())),
                // reserved meanwhile by a POST: look again
                Err(crate::supervisor::Error::Exists(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The existing container when its spec is `spec`, else 409.
fn same_spec(
    v: crate::supervisor::ContainerView,
    spec: &ContainerSpec,
) -> Result<Response, ApiError> {
    if v.record.spec() == spec {
        return Ok(Response::Container(v.into()));
    }
    Err(ApiError::conflict(format!(
        "container {:?} exists with a different spec; remove it first, or PUT its spec unchanged",
        spec.name
    ))
    .with_field("spec"))
}

impl Handler for Service {
    async fn handle(&self, req: Request) -> Result<Response, ApiError> {
        use Request::*;
        let sup = &self.sup;
        let info = |v| Response::Container(ContainerInfo::from(v));
        Ok(match req {
            Healthz => Response::Alive,
            Metrics => Response::Metrics(crate::telemetry::metrics::encode(&self.registry)),
            Host => Response::Host(host(sup.clone()).await?),
            Events => Response::Lines(events(sup)),
            List => Response::Containers(sup.list().into_iter().map(Into::into).collect()),
            OpenApi => Response::OpenApi(super::openapi::json()),
            Create(spec) => Response::Created(sup.create(*spec).await?.into()),
            Put(spec) => self.put(*spec).await?,
            Inspect(n) => info(sup.inspect(&n)?),
            Start(n) => info(sup.start(&n).await?),
            Stop { name, timeout_s } => {
                info(sup.stop(&name, Duration::from_secs(timeout_s)).await?)
            }
            Restart { name, timeout_s } => {
                info(sup.restart(&name, Duration::from_secs(timeout_s)).await?)
            }
            Kill { name, signal } => info(sup.kill(&name, signal).await?),
            Remove { name, force } => {
                sup.remove(&name, force).await?;
                Response::Removed
            }
            Wait(n) => Response::Exit(sup.wait(&n).await?.into()),
            Stats(n) => Response::Stats(Box::new(sup.stats(&n).await?)),
            Logs { name, follow, tail } => {
                let (tx, rx) = mpsc::channel(1024);
                sup.logs(&name, tail, follow, tx)?;
                Response::Lines(rx)
            }
            Ports => {
                let net = network(sup)?;
                let inv = tokio::task::spawn_blocking(move || net.inventory())
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                Response::Ports(inv.into())
            }
            GetAllowlist => Response::Allowlist(Allowlist {
                cidrs: network(sup)?.allowlist(),
            }),
            SetAllowlist(cidrs) => allowlist(sup, move |n| n.set_allowlist(cidrs)).await?,
            EditAllowlist { add, remove } => {
                allowlist(sup, move |n| n.edit_allowlist(&add, &remove)).await?
            }
            Pull(r) => Response::Lines(pull_lines(sup.pull(&r)?)),
            Images => Response::Images(sup.images().into_iter().map(Into::into).collect()),
            RemoveImage(r) => {
                sup.remove_image(&r)?;
                Response::Removed
            }
            PruneImages => {
                let p = sup.prune_images().await?;
                Response::Pruned(PruneReport {
                    layers_removed: p.layers,
                    bytes_freed: p.bytes,
                })
            }
        })
    }

    fn answered(&self, method: &str, status: u16) {
        self.sup.metrics().count_request(method, status);
    }
}

fn network(sup: &Supervisor) -> Result<Arc<Network>, ApiError> {
    sup.network().cloned().ok_or_else(|| {
        ApiError::not_found("host networking is disabled on this agent (network.enabled = false)")
    })
}

/// Changes the allowlist on a blocking thread (one firewall transaction).
async fn allowlist(
    sup: &Supervisor,
    f: impl FnOnce(&Network) -> Result<Vec<crate::model::Cidr>, crate::network::NetworkError>
        + Send
        + 'static,
) -> Result<Response, ApiError> {
    let net = network(sup)?;
    let cidrs = tokio::task::spawn_blocking(move || f(&net))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    Ok(Response::Allowlist(Allowlist { cidrs }))
}

/// A pull's lines as NDJSON: progress objects, then the image JSON or an
/// error object (`{"error": {...}}`, as a refused request's body).
fn pull_lines(
    mut rx: mpsc::Receiver<crate::supervisor::images::PullLine>,
) -> mpsc::Receiver<String> {
    use crate::supervisor::images::PullLine;
    let (tx, out) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(line) = rx.recv().await {
            let text = match line {
                PullLine::Progress(p) => serde_json::to_string(&p),
                PullLine::Done(done) => match *done {
                    Ok(v) => serde_json::to_string(&ImageInfo::from(v)),
                    Err(e) => serde_json::to_string(&ApiError::from(e).body()),
                },
            }
            .expect("pull lines serialize");
            if tx.send(text).await.is_err() {
                return;
            }
        }
    });
    out
}

/// The events stream: every event from now on, one JSON line each.
fn events(sup: &Supervisor) -> mpsc::Receiver<String> {
    let mut sub = sup.events().subscribe();
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        loop {
            match sub.recv().await {
                Ok(ev) => {
                    let line = serde_json::to_string(&ev).expect("events serialize");
                    if tx.send(line).await.is_err() {
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
    rx
}

/// `GET /v1/host`, its /proc reads on a blocking thread.
async fn host(sup: Arc<Supervisor>) -> Result<HostInfo, ApiError> {
    tokio::task::spawn_blocking(move || HostInfo {
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default(),
        agent_version: crate::VERSION.into(),
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        cgroup_mode: sup.mode().as_str().into(),
        storage_limits: sup.storage_limits().into(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes: <procfs::Meminfo as procfs::Current>::current().map_or(0, |m| m.mem_total),
        containers: sup.counts().into(),
        images: {
            let u = sup.image_usage();
            super::wire::ImageUsage {
                count: u.0,
                layers: u.1,
                disk_bytes: u.2,
            }
        },
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))
}
