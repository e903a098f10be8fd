//! The telemetry threads: the stats sampler (with remote-write as its sink)
//! and the log shipper, their metrics registered.

use super::DaemonError;
use crate::config::Config;
use crate::model::{Action, Event};
use crate::supervisor::Supervisor;
use crate::telemetry::metrics::ContainerSeries;
use crate::telemetry::remote_write::RemoteWrite;
use crate::telemetry::sampler::Sampler;
use crate::telemetry::ship::{self, ShipCounters, SinkAddr};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// Starts the sampler and, when configured, remote-write and the shipper.
pub(super) fn start(
    cfg: &Config,
    sup: &Arc<Supervisor>,
    registry: &mut Registry,
    host: &str,
) -> Result<Arc<Sampler>, DaemonError> {
    let sampler = Arc::new(Sampler::new(Duration::from_secs(
        cfg.collector.stats_interval_s,
    )));
    sampler.register(registry);
    registry.register_collector(Box::new(ContainerSeries {
        sampler: sampler.clone(),
        host: host.to_string(),
    }));
    if let Some(url) = &cfg.collector.remote_write {
        let rw = RemoteWrite::start(
            url.clone(),
            host.to_string(),
            cfg.collector.remote_write_backlog,
        );
        rw.counters.register(registry);
        let q = rw.clone();
        sampler.set_sink(Box::new(move |pass| q.push(pass)));
    }
    spawn_sampler(sampler.clone(), sup);
    let sink = match (&cfg.collector.relp, &cfg.collector.syslog) {
        (Some(a), _) => Some(SinkAddr::Relp(a.to_string())),
        (None, Some(a)) => Some(SinkAddr::Syslog(a.to_string())),
        (None, None) => None,
    };
    if let Some(sink) = sink {
        let counters = Arc::new(ShipCounters::new(host.to_string()));
        counters.register(registry);
        let tls = match cfg.collector.syslog_tls {
            true => Some(
                crate::telemetry::tls::client_config(&cfg.collector.syslog_ca).map_err(|m| {
                    crate::config::ConfigError::Invalid {
                        key: "collector.syslog_ca".into(),
                        message: m.to_string(),
                    }
                })?,
            ),
            false => None,
        };
        let settings = ship::Settings {
            sink,
            tls,
            host: host.to_string(),
            rate: cfg.collector.log_rate_lines,
        };
        spawn_shipper(settings, counters, sup)?;
    }
    Ok(sampler)
}

/// The sampler's thread; it ends when the supervisor is gone.
fn spawn_sampler(sampler: Arc<Sampler>, sup: &Arc<Supervisor>) {
    let weak = Arc::downgrade(sup);
    std::thread::Builder::new()
        .name("hydra-stats".into())
        .spawn(move || {
            let mut known = Default::default();
            sampler.run(|| Some(weak.upgrade()?.sample_targets(&mut known)))
        })
        .expect("spawn the stats sampler");
}

/// The shipper's thread; size-cap drops are announced as events.
fn spawn_shipper(
    settings: ship::Settings,
    counters: Arc<ShipCounters>,
    sup: &Arc<Supervisor>,
) -> Result<(), DaemonError> {
    let (w1, w2) = (Arc::downgrade(sup), Arc::downgrade(sup));
    std::thread::Builder::new()
        .name("hydra-ship".into())
        .spawn(move || {
            ship::run(
                settings,
                &counters,
                || w1.upgrade().map(|s| s.ship_sources()),
                |name, n, reason| {
                    if let Some(s) = w2.upgrade() {
                        let mut ev = Event::now(name, Action::LogsDropped);
                        ev.dropped = Some(n);
                        ev.reason = Some(reason.to_string());
                        s.events().publish(ev);
                    }
                },
            )
        })
        .map_err(super::io("start the log shipper"))?;
    Ok(())
}
