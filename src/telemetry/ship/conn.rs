//! The connection to the collector: RELP (every message acknowledged) or
//! syslog over TCP or TLS (octet-counted framing; written is as far as the
//! shipper can know).

use super::window::Window;
use super::{Settings, ShipCounters, SinkAddr};
use crate::telemetry::relp::{Frame, Relp};
use std::io::{self, Write};
use std::time::Duration;

pub(super) enum Conn {
    Relp(Relp),
    Syslog(Box<dyn Write + Send>),
}

impl Conn {
    pub fn open(settings: &Settings) -> io::Result<Conn> {
        match &settings.sink {
            SinkAddr::Relp(a) => Relp::open(a, Duration::from_secs(5)).map(Conn::Relp),
            SinkAddr::Syslog(a) => match &settings.tls {
                Some(cfg) => crate::telemetry::tls::connect(a, cfg)
                    .map(|s| Conn::Syslog(Box::new(s) as Box<dyn Write + Send>)),
                None => connect(a).map(|s| Conn::Syslog(Box::new(s) as Box<dyn Write + Send>)),
            },
        }
    }

    /// Appends `msg`, framed, to `out`; returns its RELP transaction (None:
    /// plain syslog, nothing will acknowledge it).
    pub fn frame(&mut self, out: &mut Vec<u8>, msg: &[u8]) -> Option<u32> {
        match self {
            Conn::Relp(relp) => Some(relp.syslog(out, msg)),
            Conn::Syslog(_) => {
                out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
                out.extend_from_slice(msg);
                None
            }
        }
    }

    /// Sends a round's `out` (`sent` messages); over RELP then takes the
    /// acknowledgements into `window`.
    pub fn exchange(
        &mut self,
        out: &[u8],
        sent: usize,
        window: &mut Window,
        counters: &ShipCounters,
    ) -> io::Result<()> {
        match self {
            Conn::Relp(relp) => {
                if !out.is_empty() {
                    relp.send(out)?;
                }
                // wait longer when the window is full or nothing new was sent
                let first = if !window.waiting() {
                    Duration::from_millis(0)
                } else if sent == 0 || window.is_full() {
                    Duration::from_secs(10)
                } else {
                    Duration::from_millis(1)
                };
                take_acks(relp, first, window, counters)
            }
            Conn::Syslog(s) => {
                if !out.is_empty() {
                    s.write_all(out)?;
                    s.flush()?;
                }
                Ok(())
            }
        }
    }
}

/// Reads answers while messages await them: the first wait is `first`, then
/// only what has already arrived. Nothing within a first wait of 10 s is an
/// error (the collector is stuck); a shorter one just ends the round.
fn take_acks(
    relp: &mut Relp,
    first: Duration,
    window: &mut Window,
    counters: &ShipCounters,
) -> io::Result<()> {
    let mut wait = first;
    while window.waiting() {
        match relp.wait(wait)? {
            Some(Frame::Rsp(t, 200, _)) => window.ack(t),
            Some(Frame::Rsp(t, code, text)) => {
                // an answer to nothing in flight keeps the wait as it was
                if !window.refuse(t, code, &text, counters)? {
                    continue;
                }
            }
            Some(Frame::ServerClose) => {
                return Err(io::Error::other("the collector closed the session"))
            }
            None if wait == first && first >= Duration::from_secs(10) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no acknowledgement within 10 s",
                ))
            }
            None => break,
        }
        wait = Duration::from_millis(0);
    }
    Ok(())
}

/// A TCP connection with a 5 s connect timeout and a 10 s write timeout (a
/// receiver that stops reading must not hold the shipper forever).
pub fn connect(addr: &str) -> io::Result<std::net::TcpStream> {
    let sa = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .ok_or_else(|| io::Error::other(format!("{addr}: no address")))?;
    let s = std::net::TcpStream::connect_timeout(&sa, Duration::from_secs(5))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(s)
}
