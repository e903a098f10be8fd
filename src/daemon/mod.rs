//! The daemon: config, logging, the adapters, the supervisor, the metrics
//! registry, the telemetry threads, the API listeners, signals. SIGTERM and
//! SIGINT stop the agent and leave containers running; SIGHUP reloads the
//! config file and says what changed.

mod notify;
mod reload;
mod telemetry;

use crate::api::{server, Service};
use crate::cgroup::CgroupFs;
use crate::config::{Config, ConfigError, Paths};
use crate::network::driver::HostLinks;
use crate::network::iptables::Iptables;
use crate::runtime::{Launcher, ShimRuntime};
use crate::supervisor::{Deps, Supervisor};
use crate::telemetry::metrics::{self, AgentMetrics};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::{reload as tracing_reload, EnvFilter};

#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "hydra-agent",
    version,
    about = "Per-host node agent: runs containers with cgroup limits"
)]
pub struct Args {
    /// Config file (TOML); built-in defaults when absent.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Relocates every path the agent writes (state, run dir, socket, logs).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Unix socket of the API.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// Why the daemon stopped (exit code 1), or could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Supervisor(#[from] crate::supervisor::Error),
    #[error("cannot {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

const DEFAULT_CONFIG: &str = "/etc/hydra-agent/agent.toml";

/// Loads the config: `--config`, else the default file if present, else
/// defaults; then checks what needs the files it names (the syslog CA).
pub fn load_config(args: &Args) -> Result<Config, ConfigError> {
    let cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None if args.root.is_none() && std::path::Path::new(DEFAULT_CONFIG).exists() => {
            Config::load(DEFAULT_CONFIG.as_ref())?
        }
        None => Config::default(),
    };
    if cfg.collector.syslog_tls {
        crate::telemetry::tls::client_config(&cfg.collector.syslog_ca).map_err(|m| {
            ConfigError::Invalid {
                key: "collector.syslog_ca".into(),
                message: m.to_string(),
            }
        })?;
    }
    if cfg.api.tcp.is_some() {
        crate::api::tls::server_config(&cfg.api).map_err(tls_invalid)?;
    }
    Ok(cfg)
}

fn tls_invalid(e: crate::api::tls::TlsError) -> ConfigError {
    use crate::api::tls::TlsError;
    let (key, message) = match e {
        TlsError::File { key, path, reason } => (key, format!("{}: {reason}", path.display())),
        TlsError::Config { key, reason } => (key, reason),
    };
    ConfigError::Invalid {
        key: key.into(),
        message,
    }
}

/// The real adapters of this host.
fn host_deps(cfg: &Config, paths: &Paths) -> Result<Deps, DaemonError> {
    let layout = crate::cgroup::detect()?;
    layout.prepare(&cfg.cgroup.parent)?;
    let exe = std::env::current_exe().map_err(io("find the agent's own binary"))?;
    let launcher = Launcher::new(
        &exe,
        &paths.state,
        layout
            .devices_cgroup(&cfg.cgroup.parent)
            .map(|d| d.join("cgroup.procs")),
        Duration::from_secs(cfg.agent.start_timeout_s),
        (cfg.agent.netns_pool > 0).then_some(crate::runtime::netpool::PoolSpec {
            size: cfg.agent.netns_pool,
            veth: cfg.network.enabled,
            bridge: Some(cfg.network.bridge.clone()),
        }),
    );
    Ok(Deps {
        cgroups: Arc::new(CgroupFs::new(layout)),
        runtime: Arc::new(ShimRuntime::new(launcher)),
        firewall: Box::new(Iptables),
        links: Box::new(HostLinks),
    })
}

pub async fn run(args: Args, cfg: Config) -> Result<(), DaemonError> {
    let (filter, handle) = tracing_reload::Layer::new(filter_for(&cfg.agent.log_level));
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // colours only on a terminal, not in journald or a log file
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false),
        )
        .init();
    // The agent and everything it starts (launcher, shims) are the last the
    // kernel picks under memory pressure; containers raise their own score.
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-999") {
        tracing::warn!(error = %e, "cannot set the agent's oom_score_adj to -999");
    }
    raise_nofile();
    let paths = Paths::new(args.root.as_deref(), &cfg, args.socket.as_deref());
    std::fs::create_dir_all(&paths.run).map_err(io(format!("create {}", paths.run.display())))?;
    let t0 = std::time::Instant::now();
    let deps = host_deps(&cfg, &paths)?;
    let (sup, n) = Supervisor::boot(&cfg, paths.clone(), deps, AgentMetrics::default()).await?;
    let host = metrics::host_name();
    let mut registry = metrics::registry(sup.metrics(), sup.mode().as_str(), &host);
    let sampler = telemetry::start(&cfg, &sup, &mut registry, &host)?;
    if let Some(net) = sup.network() {
        registry.register(
            "hydra_firewall_drift_restores",
            "Times our firewall rules were found changed by someone else and restored.",
            net.drift_restores.clone(),
        );
        drift_loop(net.clone(), cfg.network.drift_interval_s);
    }
    trim_loop();
    tracing::info!(
        version = crate::VERSION,
        cgroup_mode = sup.mode().as_str(),
        socket = %paths.socket.display(),
        state = %paths.state.display(),
        adopted = n,
        adopt_ms = t0.elapsed().as_millis() as u64,
        "hydra-agent ready"
    );
    let service = Arc::new(Service::new(sup.clone(), Arc::new(registry)));
    serve(&cfg, &paths, service, &args, &handle, &sup, &sampler).await?;
    tracing::info!("shutting down; containers keep running");
    sup.remove_empty_parent();
    Ok(())
}

/// The listeners, until SIGTERM or SIGINT; SIGHUP reloads.
async fn serve(
    cfg: &Config,
    paths: &Paths,
    service: Arc<Service>,
    args: &Args,
    filter: &reload::FilterHandle,
    sup: &Arc<Supervisor>,
    sampler: &Arc<crate::telemetry::sampler::Sampler>,
) -> Result<(), DaemonError> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = cfg.api.metrics {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(io(format!("listen on api.metrics {addr}")))?;
        tokio::spawn(server::serve_metrics(service.clone(), l, stop_rx.clone()));
    }
    let tls = match cfg.api.tcp {
        Some(addr) => {
            let tls = Arc::new(
                crate::api::tls::Reloadable::new(&cfg.api)
                    .map_err(|e| DaemonError::Config(tls_invalid(e)))?,
            );
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(io(format!("listen on api.tcp {addr}")))?;
            let limits = crate::api::tcp::Limits::from_config(&cfg.api);
            tracing::info!(%addr, "api.tcp: serving the API over mutual TLS");
            tokio::spawn(crate::api::tcp::serve_tls(
                service.clone(),
                l,
                tls.clone(),
                limits,
                stop_rx.clone(),
            ));
            Some(tls)
        }
        None => None,
    };
    let sock = paths.socket.clone();
    let listener = server::bind_unix(&sock, socket_group(cfg))
        .map_err(io(format!("listen on the API socket {}", sock.display())))?;
    let unix =
        tokio::spawn(async move { server::serve_unix(service, listener, &sock, stop_rx).await });
    // records re-adopted, firewall in place, listeners bound
    notify::ready(sup);
    notify::health_loop(sup.clone());
    let reload = reload::Reloaders {
        filter,
        sup,
        sampler,
        tls: tls.as_deref(),
    };
    reload::until_stopped(args, cfg.clone(), &reload).await?;
    notify::stopping();
    let _ = stop_tx.send(true);
    let _ = unix.await;
    Ok(())
}

/// `api.socket_group`, else `hydra` if that group exists.
fn socket_group(cfg: &Config) -> Option<nix::unistd::Gid> {
    let name = cfg.api.socket_group.as_deref().unwrap_or("hydra");
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid)
}

/// Checks the firewall every `secs` and restores it if someone changed it.
fn drift_loop(net: Arc<crate::network::Network>, secs: u64) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let n = net.clone();
            match tokio::task::spawn_blocking(move || n.check_drift()).await {
                Ok(Ok(true)) => tracing::warn!(
                    restores = net.drift_restores.get(),
                    "firewall rules were changed by someone else; restored"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "firewall drift check"),
                Err(e) => tracing::error!(error = %e, "firewall drift check panicked"),
            }
        }
    });
}

/// Every minute, hands the allocator's free pages back to the kernel
/// (`malloc_trim`): after a burst of containers the arenas of the threads
/// that served it keep their freed memory, which counts in the agent's
/// RSS for as long as nothing reuses it.
fn trim_loop() {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let _ = tokio::task::spawn_blocking(crate::sys::heap::trim).await;
        }
    });
}

/// The configured filter, minus netlink-packet-route's warnings about kernel
/// attributes newer than the crate (harmless, and one per link dump).
fn filter_for(level: &str) -> EnvFilter {
    EnvFilter::new(format!(
        "{level},netlink_packet_route=error,netlink_packet_core=error"
    ))
}

/// The stats sampler keeps ~14 cgroup files open per container, so the
/// agent raises its own open-file limit (to 2^20, else to its hard limit).
/// Containers are unaffected: their init sets `security.nofile`.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = 1 << 20;
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_err() {
        if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < 65536 {
            tracing::warn!(
                limit = soft,
                "the open-file limit is low: the stats sampler keeps ~14 files open per container (raise LimitNOFILE)"
            );
        }
    }
}
