//! systemd integration (`Type=notify`): `READY=1` once the records are
//! re-adopted, the firewall is in place and the API listens; `STATUS=` with
//! the container counts; `WATCHDOG=1` from a health loop that pings only
//! while the reactor, the store, the launcher and the registry all answer
//! within half the watchdog interval. A hung agent (stopped, deadlocked,
//! stuck on its state directory) stops pinging and systemd restarts it; a
//! busy one keeps answering and is left alone. Outside systemd
//! (`NOTIFY_SOCKET` unset) every call is a no-op.
//!
//! sd-notify rather than the `systemd` crate: the same datagrams without
//! linking libsystemd (one C library fewer in a static-friendly binary).

use crate::supervisor::Supervisor;
use sd_notify::NotifyState;
use std::sync::Arc;
use std::time::Duration;

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

fn status_line(sup: &Supervisor) -> String {
    let c = sup.counts();
    format!(
        "{} containers: {} running, {} exited, {} created",
        c.total, c.running, c.exited, c.created
    )
}

/// `READY=1` with the first status line.
pub fn ready(sup: &Supervisor) {
    let status = status_line(sup);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// `STOPPING=1`: the agent stops; containers keep running.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping; containers keep running"),
    ]);
}

/// The watchdog interval systemd asked for (`WATCHDOG_USEC`, for this pid).
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// Every half watchdog interval (or every 10 s without a watchdog, for
/// `STATUS=` alone): one health check; `WATCHDOG=1` only when it passed.
pub fn health_loop(sup: Arc<Supervisor>) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = watchdog_interval();
    let every = watchdog.map_or(Duration::from_secs(10), |w| w / 2);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let s = sup.clone();
            let check = tokio::task::spawn_blocking(move || s.health().map(|()| status_line(&s)));
            match tokio::time::timeout(every, check).await {
                Ok(Ok(Ok(status))) => {
                    let mut states = vec![NotifyState::Status(&status)];
                    if watchdog.is_some() {
                        states.push(NotifyState::Watchdog);
                    }
                    send(&states);
                }
                Ok(Ok(Err(what))) => {
                    tracing::error!(%what, "health check failed: not pinging systemd's watchdog");
                }
                Ok(Err(e)) => tracing::error!(error = %e, "health check panicked"),
                Err(_) => tracing::error!(
                    timeout_ms = every.as_millis() as u64,
                    "health check did not answer: not pinging systemd's watchdog"
                ),
            }
        }
    });
}
