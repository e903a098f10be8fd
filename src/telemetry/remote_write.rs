//! Prometheus remote-write 1.0: every sampler pass becomes a batch of
//! samples (protobuf `WriteRequest`, snappy block compression, POSTed over
//! HTTP). One request in flight, oldest batches first, so the samples of a
//! series arrive in order. 5xx and connection errors are retried with
//! exponential backoff, 429 backs off (honouring Retry-After), other 4xx are
//! dropped and counted. While the endpoint is away batches wait in a bounded
//! backlog; past its cap the oldest are dropped and counted. Failures are
//! logged once per change of state, not per attempt.

use super::sampler::Sample;
use super::series::SERIES;
use crate::config::HttpUrl;
use http_body_util::{BodyExt, Full};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The remote-write 1.0 messages (prometheus/prompb/remote.proto, types.proto).
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }
    #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

/// One pass: (sorted labels, value, timestamp ms) per series.
type Batch = Vec<(Vec<proto::Label>, f64, i64)>;

/// A sampler pass, shared with the sampler (not copied).
type Pass = Arc<Vec<Sample>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Default)]
pub struct Counters {
    /// Samples (one value of one series) by result: `sent` (accepted by the
    /// endpoint), `rejected` (refused for good, 4xx other than 429).
    pub samples: Family<ResultLabels, Counter>,
    /// Container samples (a container's stats in one pass) dropped because
    /// the backlog was full.
    pub dropped_backlog: Counter,
    pub retries: Counter,
    /// Container samples waiting.
    pub backlog: Gauge,
}

impl Counters {
    fn count(&self, result: &str, n: usize) {
        self.samples
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc_by(n as u64);
    }

    /// Registers remote-write's series (both results shown from the start).
    pub fn register(&self, r: &mut Registry) {
        self.count("sent", 0);
        self.count("rejected", 0);
        r.register(
            "hydra_remote_write_samples",
            "Remote-write samples, by result (sent: accepted; rejected: refused with a 4xx, dropped).",
            self.samples.clone(),
        );
        r.register(
            "hydra_remote_write_dropped_container_samples",
            "Container samples dropped because the backlog was full.",
            self.dropped_backlog.clone(),
        );
        r.register(
            "hydra_remote_write_retries",
            "Failed attempts, retried.",
            self.retries.clone(),
        );
        r.register(
            "hydra_remote_write_backlog_container_samples",
            "Container samples waiting to be sent.",
            self.backlog.clone(),
        );
    }
}

pub struct RemoteWrite {
    url: HttpUrl,
    host: String,
    /// Container samples kept while the endpoint is away.
    max_backlog: usize,
    queue: Mutex<VecDeque<Pass>>,
    /// Container samples in the request being tried.
    in_flight: std::sync::atomic::AtomicUsize,
    wake: tokio::sync::Notify,
    pub counters: Counters,
}

fn sorted_labels(pairs: &[(&str, &str)]) -> Vec<proto::Label> {
    let mut v: Vec<proto::Label> = pairs
        .iter()
        .map(|(n, v)| proto::Label {
            name: n.to_string(),
            value: v.to_string(),
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// A pass as remote-write series (the same names and labels as /metrics).
fn batch(pass: &[Sample], host: &str) -> Batch {
    let mut out = Vec::new();
    for s in pass {
        for (name, _, _, f) in SERIES {
            for (extra, v) in f(s) {
                let mut pairs = vec![
                    ("__name__", *name),
                    ("container", s.labels.container.as_str()),
                    ("app", s.labels.app.as_str()),
                    ("version", s.labels.version.as_str()),
                    ("host", host),
                ];
                for (k, v) in &extra {
                    pairs.push((k, v.as_str()));
                }
                // empty values are absent labels in Prometheus
                pairs.retain(|(_, v)| !v.is_empty());
                out.push((sorted_labels(&pairs), v, s.at_ms));
            }
        }
    }
    out
}

/// Several passes as one request, samples of a series in pass order; and
/// how many samples it holds.
fn encode(passes: &[Pass], host: &str) -> (Vec<u8>, usize) {
    let batches: Vec<Batch> = passes.iter().map(|p| batch(p, host)).collect();
    let mut series: BTreeMap<&Vec<proto::Label>, Vec<proto::Sample>> = BTreeMap::new();
    for b in &batches {
        for (labels, value, ts) in b {
            series.entry(labels).or_default().push(proto::Sample {
                value: *value,
                timestamp: *ts,
            });
        }
    }
    let req = proto::WriteRequest {
        timeseries: series
            .into_iter()
            .map(|(l, samples)| proto::TimeSeries {
                labels: l.clone(),
                samples,
            })
            .collect(),
    };
    let n = batches.iter().map(|b| b.len()).sum();
    let raw = prost::Message::encode_to_vec(&req);
    let body = snap::raw::Encoder::new()
        .compress_vec(&raw)
        .expect("snappy of an in-memory buffer");
    (body, n)
}

/// What one attempt came to.
#[derive(Debug, PartialEq)]
enum Outcome {
    Sent,
    Retry(String, Option<Duration>),
    Reject(String),
}

impl RemoteWrite {
    /// `max_backlog`: container samples kept while the endpoint is away.
    pub fn start(url: HttpUrl, host: String, max_backlog: usize) -> Arc<RemoteWrite> {
        let rw = Arc::new(RemoteWrite {
            url,
            host,
            max_backlog,
            queue: Mutex::new(VecDeque::new()),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            wake: tokio::sync::Notify::new(),
            counters: Counters::default(),
        });
        let me = rw.clone();
        tokio::spawn(async move { me.send_loop().await });
        rw
    }

    /// Queues a pass (called on the sampler's thread; never blocks on I/O).
    pub fn push(&self, pass: Pass) {
        if pass.is_empty() {
            return;
        }
        let mut q = self.queue.lock().unwrap();
        q.push_back(pass);
        // what is in flight counts toward the cap but is never dropped
        let flying = self.in_flight.load(Ordering::Relaxed);
        let mut total: usize = q.iter().map(|b| b.len()).sum::<usize>() + flying;
        while total > self.max_backlog && q.len() > 1 {
            let old = q.pop_front().expect("non-empty");
            total -= old.len();
            self.counters.dropped_backlog.inc_by(old.len() as u64);
        }
        self.counters.backlog.set(total as i64);
        drop(q);
        self.wake.notify_one();
    }

    async fn send_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(250);
        let mut failing: Option<String> = None;
        // the request being tried: taken out of the queue (the cap cannot
        // drop it meanwhile) and sent again unchanged until it is settled
        let mut batch: Option<(Vec<u8>, usize, usize)> = None;
        loop {
            if batch.is_none() {
                // up to 10 passes per request, oldest first
                let mut q = self.queue.lock().unwrap();
                let n = q.len().min(10);
                let taken: Vec<Pass> = q.drain(..n).collect();
                let containers: usize = taken.iter().map(|p| p.len()).sum();
                self.in_flight.store(containers, Ordering::Relaxed);
                drop(q);
                if n > 0 {
                    let (body, samples) = encode(&taken, &self.host);
                    batch = Some((body, samples, containers));
                }
            }
            let Some((body, samples, _)) = batch.clone() else {
                self.wake.notified().await;
                continue;
            };
            let outcome = match tokio::time::timeout(Duration::from_secs(10), self.post(body)).await
            {
                Ok(o) => o,
                Err(_) => Outcome::Retry("no answer within 10 s".into(), None),
            };
            let mut done = || {
                batch = None;
                self.in_flight.store(0, Ordering::Relaxed);
                let q = self.queue.lock().unwrap();
                let total: usize = q.iter().map(|b| b.len()).sum();
                self.counters.backlog.set(total as i64);
            };
            match outcome {
                Outcome::Sent => {
                    done();
                    self.counters.count("sent", samples);
                    if failing.take().is_some() {
                        tracing::info!(endpoint = %self.url.authority, "remote-write: delivering again");
                    }
                    backoff = Duration::from_millis(250);
                }
                Outcome::Reject(why) => {
                    done();
                    self.counters.count("rejected", samples);
                    tracing::warn!(endpoint = %self.url.authority, samples, reason = %why, "remote-write: the endpoint rejected samples; dropped");
                }
                Outcome::Retry(why, after) => {
                    self.counters.retries.inc();
                    if failing.as_deref() != Some(why.as_str()) {
                        tracing::warn!(endpoint = %self.url.authority, reason = %why, "remote-write: failing; retrying with backoff, samples kept");
                        failing = Some(why);
                    }
                    let wait = after.unwrap_or(backoff);
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    async fn post(&self, body: Vec<u8>) -> Outcome {
        let stream = match tokio::net::TcpStream::connect(&self.url.authority).await {
            Ok(s) => s,
            Err(e) => return Outcome::Retry(format!("connect: {e}"), None),
        };
        let (mut send, conn) =
            match hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
            {
                Ok(x) => x,
                Err(e) => return Outcome::Retry(format!("handshake: {e}"), None),
            };
        tokio::spawn(conn);
        let req = hyper::Request::post(&self.url.path)
            .header("host", &self.url.authority)
            .header("content-type", "application/x-protobuf")
            .header("content-encoding", "snappy")
            .header("x-prometheus-remote-write-version", "0.1.0")
            .header(
                "user-agent",
                concat!("hydra-agent/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(bytes::Bytes::from(body)))
            .expect("valid request");
        let resp = match send.send_request(req).await {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(format!("request: {e}"), None),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s.min(300)));
        let text = match resp.into_body().collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes())
                .chars()
                .take(200)
                .collect(),
            Err(_) => String::new(),
        };
        classify(status, retry_after, text.trim())
    }
}

fn classify(status: u16, retry_after: Option<Duration>, text: &str) -> Outcome {
    match status {
        200..=299 => Outcome::Sent,
        429 => Outcome::Retry(
            "429 Too Many Requests".into(),
            Some(retry_after.unwrap_or(Duration::from_secs(5))),
        ),
        400..=499 => Outcome::Reject(format!("{status}: {text}")),
        _ => Outcome::Retry(format!("{status}: {text}"), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Stats;
    use crate::telemetry::sampler::Labels;

    fn sample(at: i64, mem: u64) -> Sample {
        let mut stats = Stats::default();
        stats.memory.current = mem;
        Sample {
            labels: Arc::new(Labels {
                container: "c".into(),
                app: "a".into(),
                version: "".into(),
            }),
            at_ms: at,
            stats,
        }
    }

    #[test]
    fn encodes_series_in_order_with_sorted_labels() {
        let p1 = Arc::new(vec![sample(1000, 5)]);
        let p2 = Arc::new(vec![sample(2000, 7)]);
        let raw = snap::raw::Decoder::new()
            .decompress_vec(&encode(&[p1, p2], "h").0)
            .unwrap();
        let req: proto::WriteRequest = prost::Message::decode(raw.as_slice()).unwrap();
        let mem = req
            .timeseries
            .iter()
            .find(|t| {
                t.labels
                    .iter()
                    .any(|l| l.name == "__name__" && l.value == "hydra_container_memory_bytes")
            })
            .unwrap();
        let names: Vec<&str> = mem.labels.iter().map(|l| l.name.as_str()).collect();
        // sorted, and the empty version label left out
        assert_eq!(names, ["__name__", "app", "container", "host"]);
        let pts: Vec<(i64, f64)> = mem.samples.iter().map(|s| (s.timestamp, s.value)).collect();
        assert_eq!(pts, [(1000, 5.0), (2000, 7.0)]);
    }

    #[test]
    fn retries_5xx_backs_off_on_429_and_drops_other_4xx() {
        assert_eq!(classify(204, None, ""), Outcome::Sent);
        assert!(matches!(classify(503, None, ""), Outcome::Retry(_, None)));
        assert_eq!(
            classify(429, Some(Duration::from_secs(7)), ""),
            Outcome::Retry("429 Too Many Requests".into(), Some(Duration::from_secs(7)))
        );
        assert!(matches!(
            classify(400, None, "out of order"),
            Outcome::Reject(_)
        ));
    }

    #[tokio::test]
    async fn a_full_backlog_drops_the_oldest_and_counts_them() {
        // an endpoint that is never there: nothing is sent
        let rw = RemoteWrite::start("http://127.0.0.1:9/w".parse().unwrap(), "h".into(), 4);
        for i in 0..10 {
            rw.push(Arc::new(vec![sample(i, 1)]));
        }
        let kept = rw.counters.backlog.get();
        let dropped = rw.counters.dropped_backlog.get();
        assert_eq!((kept, dropped), (4, 6));
        let sent = ResultLabels {
            result: "sent".into(),
        };
        assert_eq!(rw.counters.samples.get_or_create(&sent).get(), 0);
        // the oldest went: the queue holds the last four passes, in order
        let q = rw.queue.lock().unwrap();
        let at: Vec<i64> = q.iter().map(|p| p[0].at_ms).collect();
        assert_eq!(at, [6, 7, 8, 9]);
    }
}
