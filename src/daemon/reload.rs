//! Signals: SIGTERM and SIGINT end [`until_stopped`]; SIGHUP re-reads the
//! config file, applies what can change without a restart (log level,
//! `[logs]`, the stats interval, `network.allowlist`) and says what was
//! reloaded and what needs a restart.

use super::{filter_for, load_config, Args, DaemonError};
use crate::config::{CollectorConfig, Config, NetworkConfig};
use crate::supervisor::Supervisor;
use crate::telemetry::sampler::Sampler;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::{reload, EnvFilter, Registry};

pub type FilterHandle = reload::Handle<EnvFilter, Registry>;

/// What SIGHUP changes.
pub(super) struct Reloaders<'a> {
    pub filter: &'a FilterHandle,
    pub sup: &'a Arc<Supervisor>,
    pub sampler: &'a Arc<Sampler>,
    /// The TCP API's TLS configuration, when it is served.
    pub tls: Option<&'a crate::api::tls::Reloadable>,
}

pub(super) async fn until_stopped(
    args: &Args,
    mut current: Config,
    r: &Reloaders<'_>,
) -> Result<(), DaemonError> {
    let sig = |k| signal(k).map_err(super::io("install signal handlers"));
    let (mut term, mut int, mut hup) = (
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::hangup())?,
    );
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => match load_config(args) {
                Ok(new) => {
                    apply(&current, &new, r).await;
                    current = new;
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the old one"),
            },
        }
    }
}

async fn apply(current: &Config, new: &Config, r: &Reloaders<'_>) {
    let Reloaders {
        filter,
        sup,
        sampler,
        tls,
    } = r;
    let mut changed = sup.reload(new);
    let mut needs_restart = Vec::new();
    if let Some(tls) = tls {
        match tls.reload(&new.api) {
            Ok(()) => changed.push("api TLS files (tls_cert, tls_key, client_ca, crl)".into()),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: the TCP API's TLS files cannot be used; keeping the old ones")
            }
        }
    }
    if new.agent.log_level != current.agent.log_level
        && filter.reload(filter_for(&new.agent.log_level)).is_ok()
    {
        changed.push(format!("agent.log_level = {:?}", new.agent.log_level));
    }
    let interval = Duration::from_secs(new.collector.stats_interval_s);
    if sampler.interval() != interval {
        sampler.set_interval(interval);
        changed.push("collector.stats_interval_s".into());
    }
    if new.network.allowlist != current.network.allowlist {
        if let Some(net) = sup.network().cloned() {
            let cidrs = new.network.allowlist.clone();
            match tokio::task::spawn_blocking(move || net.set_allowlist(cidrs)).await {
                Ok(Ok(_)) => changed.push(format!(
                    "network.allowlist = {:?}",
                    new.network
                        .allowlist
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                )),
                Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: cannot apply network.allowlist"),
                Err(e) => tracing::error!(error = %e, "SIGHUP: allowlist task failed"),
            }
        }
    }
    let api_rest = crate::config::ApiConfig {
        tls_cert: current.api.tls_cert.clone(),
        tls_key: current.api.tls_key.clone(),
        client_ca: current.api.client_ca.clone(),
        crl: current.api.crl.clone(),
        ..new.api.clone()
    };
    if api_rest != current.api {
        needs_restart.push("api (except the TLS files)");
    }
    if new.cgroup != current.cgroup {
        needs_restart.push("cgroup");
    }
    let net_rest = NetworkConfig {
        allowlist: current.network.allowlist.clone(),
        ..new.network.clone()
    };
    if net_rest != current.network {
        needs_restart.push("network (except allowlist)");
    }
    let collector_rest = CollectorConfig {
        stats_interval_s: current.collector.stats_interval_s,
        ..new.collector.clone()
    };
    if collector_rest != current.collector {
        needs_restart.push("collector (except stats_interval_s)");
    }
    tracing::info!(reloaded = ?changed, not_reloaded_need_restart = ?needs_restart, "SIGHUP: configuration reloaded");
}
