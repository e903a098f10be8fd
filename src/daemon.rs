//! The daemon: config, logging, the supervisor, the API listener, signals.
//! SIGTERM/SIGINT stop the agent and leave containers running; SIGHUP reloads
//! the config file and says what changed.

use crate::config::{Config, Paths};
use crate::supervisor::Supervisor;
use std::path::PathBuf;
use tracing_subscriber::{reload, EnvFilter};

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

const DEFAULT_CONFIG: &str = "/etc/hydra-agent/agent.toml";

/// Loads the config: `--config`, else the default file if present, else defaults.
pub fn load_config(args: &Args) -> Result<Config, crate::config::ConfigError> {
    match &args.config {
        Some(p) => Config::load(p),
        None if args.root.is_none() && std::path::Path::new(DEFAULT_CONFIG).exists() => {
            Config::load(DEFAULT_CONFIG.as_ref())
        }
        None => Ok(Config::default()),
    }
}

pub async fn run(args: Args, cfg: Config) -> anyhow::Result<()> {
    let (filter, handle) = reload::Layer::new(filter_for(&cfg.agent.log_level));
    use tracing_subscriber::prelude::*;
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
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
    std::fs::create_dir_all(&paths.run)?;
    let t0 = std::time::Instant::now();
    let sup = Supervisor::new(&cfg, paths.clone())?;
    let n = sup.adopt().await?;
    sup.start_sampler();
    if let Some(url) = &cfg.collector.remote_write {
        let rw = crate::telemetry::remote_write::RemoteWrite::start(
            url,
            crate::telemetry::metrics::host_name(),
            cfg.collector.remote_write_backlog,
        )
        .map_err(anyhow::Error::msg)?;
        let q = rw.clone();
        sup.sampler.set_sink(Box::new(move |pass| q.push(pass)));
        let _ = sup.remote_write.set(rw);
    }
    let sink = match (&cfg.collector.relp, &cfg.collector.syslog) {
        (Some(a), _) => Some(crate::telemetry::ship::SinkAddr::Relp(a.clone())),
        (None, Some(a)) => Some(crate::telemetry::ship::SinkAddr::Syslog(a.clone())),
        (None, None) => None,
    };
    if let Some(sink) = sink {
        let counters = std::sync::Arc::new(crate::telemetry::ship::ShipCounters::default());
        let _ = sup.ship.set(counters.clone());
        let tls = match cfg.collector.syslog_tls {
            true => Some(
                crate::telemetry::tls::client_config(&cfg.collector.syslog_ca)
                    .map_err(anyhow::Error::msg)?,
            ),
            false => None,
        };
        let settings = crate::telemetry::ship::Settings {
            sink,
            tls,
            host: crate::telemetry::metrics::host_name(),
            rate: cfg.collector.log_rate_lines,
        };
        let (w1, w2) = (
            std::sync::Arc::downgrade(&sup),
            std::sync::Arc::downgrade(&sup),
        );
        std::thread::Builder::new()
            .name("hydra-ship".into())
            .spawn(move || {
                crate::telemetry::ship::run(
                    settings,
                    &counters,
                    || w1.upgrade().map(|s| s.ship_sources()),
                    |name, n| {
                        if let Some(s) = w2.upgrade() {
                            s.emit_event(crate::api::Event {
                                ts: chrono::Utc::now()
                                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                                container: name.into(),
                                action: "logs_dropped".into(),
                                exit_code: None,
                                signal: None,
                                dropped: Some(n),
                            });
                        }
                    },
                )
            })?;
    }
    tracing::info!(
        version = crate::VERSION,
        cgroup_mode = sup.mode().as_str(),
        socket = %paths.socket.display(),
        state = %paths.state.display(),
        adopted = n,
        adopt_ms = t0.elapsed().as_millis() as u64,
        "hydra-agent ready"
    );

    if let Some(net) = sup.network().cloned() {
        let every = std::time::Duration::from_secs(cfg.network.drift_interval_s);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let n = net.clone();
                match tokio::task::spawn_blocking(move || n.check_drift()).await {
                    Ok(Ok(true)) => tracing::warn!(
                        restores = net
                            .drift_restores
                            .load(std::sync::atomic::Ordering::Relaxed),
                        "firewall rules were changed by someone else; restored"
                    ),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "firewall drift check"),
                    Err(e) => tracing::error!(error = %e, "firewall drift check panicked"),
                }
            }
        });
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let sock = paths.socket.clone();
    let sup2 = sup.clone();
    if let Some(addr) = &cfg.api.metrics {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("api.metrics: cannot listen on {addr}: {e}"))?;
        tokio::spawn(crate::api::server::serve_metrics(
            sup.clone(),
            l,
            stop_rx.clone(),
        ));
    }
    let server =
        tokio::spawn(async move { crate::api::server::serve_unix(sup2, &sock, stop_rx).await });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut current = cfg;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                match load_config(&args) {
                    Ok(new) => {
                        let mut changed = sup.reload(&new);
                        if new.agent.log_level != current.agent.log_level
                            && handle.reload(filter_for(&new.agent.log_level)).is_ok() {
                                changed.push(format!("agent.log_level = {:?}", new.agent.log_level));
                            }
                        let mut needs_restart = Vec::new();
                        if new.api != current.api { needs_restart.push("api"); }
                        if new.cgroup != current.cgroup { needs_restart.push("cgroup"); }
                        if new.network.allowlist != current.network.allowlist {
                            if let Some(net) = sup.network().cloned() {
                                let a = crate::network::Allowlist { cidrs: new.network.allowlist.clone() };
                                match tokio::task::spawn_blocking(move || net.set_allowlist(&a)).await {
                                    Ok(Ok(_)) => changed.push(format!("network.allowlist = {:?}", new.network.allowlist)),
                                    Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: cannot apply network.allowlist"),
                                    Err(e) => tracing::error!(error = %e, "SIGHUP: allowlist task failed"),
                                }
                            }
                        }
                        let net_rest = crate::config::NetworkConfig { allowlist: current.network.allowlist.clone(), ..new.network.clone() };
                        if net_rest != current.network { needs_restart.push("network (except allowlist)"); }
                        let collector_rest = crate::config::CollectorConfig { stats_interval_s: current.collector.stats_interval_s, ..new.collector.clone() };
                        if collector_rest != current.collector { needs_restart.push("collector (except stats_interval_s)"); }
                        tracing::info!(reloaded = ?changed, not_reloaded_need_restart = ?needs_restart, "SIGHUP: configuration reloaded");
                        current = new;
                    }
                    Err(e) => tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the old one"),
                }
            }
        }
    }
    tracing::info!("shutting down; containers keep running");
    let _ = stop_tx.send(true);
    let _ = server.await;
    if sup.counts().total == 0 {
        sup.remove_empty_parent();
    }
    Ok(())
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
