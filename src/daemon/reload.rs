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

pub(super) async fn until_stopped(
    args: &Args,
    mut current: Config,
    filter: &FilterHandle,
    sup: &Arc<Supervisor>,
    sampler: &Arc<Sampler>,
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
                    apply(&current, &new, filter, sup, sampler).await;
                    current = new;
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; keeping the old one"),
            },
        }
    }
}

async fn apply(
    current: &Config,
    new: &Config,
    filter: &FilterHandle,
    sup: &Arc<Supervisor>,
    sampler: &Arc<Sampler>,
) {
    let mut changed = sup.reload(new);
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
    let mut needs_restart = Vec::new();
    if new.api != current.api {
        needs_restart.push("api");
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
