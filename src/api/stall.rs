//! A connection's stalled writes: [`Watched`] wraps a stream and records
//! since when its writes have been waiting on a peer that does not read;
//! [`stalled`] resolves once that lasts longer than a limit. It runs as a
//! task of its own beside the connection's, not as a timer inside its
//! writes: a timer's wake-up makes the connection retry its write, and a
//! socket whose peer reads nothing still takes a few bytes at each retry,
//! which would look like progress and restart the clock for ever.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Milliseconds since `epoch` at which the pending write began; 0: none.
#[derive(Clone)]
pub struct Since {
    epoch: Instant,
    at: Arc<AtomicU64>,
}

impl Since {
    pub fn new() -> Since {
        Since {
            epoch: Instant::now(),
            at: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A write or flush's outcome: pending starts the clock, progress
    /// stops it (a write of 0 bytes, e.g. of empty buffers, is neither).
    fn note<T>(&self, p: &Poll<io::Result<T>>, progress: impl Fn(&T) -> bool) {
        if let Poll::Ready(Ok(v)) = p {
            if !progress(v) {
                return;
            }
        }
        if p.is_pending() {
            let now = self.epoch.elapsed().as_millis() as u64 + 1;
            let _ = self
                .at
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
        } else {
            self.at.store(0, Ordering::Relaxed);
        }
    }

    /// How long the current write has been waiting.
    fn waited(&self) -> Duration {
        match self.at.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            t => self
                .epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(t - 1)),
        }
    }
}

impl Default for Since {
    fn default() -> Self {
        Since::new()
    }
}

/// Resolves once a write has waited longer than `limit`.
pub async fn stalled(since: Since, limit: Duration) {
    let tick = (limit / 4).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(tick).await;
        if since.waited() > limit {
            return;
        }
    }
}

/// A stream whose writes report to a [`Since`].
pub struct Watched<S> {
    pub inner: S,
    pub since: Since,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.since.note(&p, |n| *n > 0);
        p
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let p = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.since.note(&p, |n| *n > 0);
        p
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_flush(cx);
        self.since.note(&p, |_| true);
        p
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let p = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.since.note(&p, |_| true);
        p
    }
}
