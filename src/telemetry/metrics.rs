//! `/metrics`: one prometheus-client registry. The parts of the agent own
//! their metric handles (counters, gauges, families) and update them as they
//! work; the daemon registers them here once, and a scrape encodes the
//! registry. The per-container series are encoded from the sampler's last
//! pass by a [`Collector`], so a scrape reads no cgroup file.

use super::sampler::Sampler;
use super::series::SERIES;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// The content type of the exposition (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The host label of every series (the machine's hostname).
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ContainerLabels {
    pub container: String,
    pub app: String,
    pub version: String,
    pub host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    pub code: String,
}

/// What the lifecycle and the API front ends count.
#[derive(Clone, Debug, Default)]
pub struct AgentMetrics {
    /// Containers by state (`running`, `exited`, `created`).
    pub containers: Family<StateLabels, Gauge>,
    /// Restarts made by the restart policy, by container.
    pub restarts: Family<ContainerLabels, Counter>,
    /// API requests by method and status code.
    pub api_requests: Family<RequestLabels, Counter>,
}

impl AgentMetrics {
    /// Counts one answered request.
    pub fn count_request(&self, method: &str, status: u16) {
        self.api_requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                code: status.to_string(),
            })
            .inc();
    }
}

/// Registers the agent's own series: info, container counts, restarts, API
/// requests. The caller adds the parts that exist on this agent.
pub fn registry(agent: &AgentMetrics, cgroup_mode: &str, host: &str) -> Registry {
    let mut r = Registry::default();
    for state in ["running", "exited", "created"] {
        // every state shown, also at zero
        let _ = agent.containers.get_or_create(&StateLabels {
            state: state.into(),
        });
    }
    r.register(
        "hydra_agent",
        "Agent version and cgroup mode.",
        Info::new(vec![
            ("version", crate::VERSION.to_string()),
            ("cgroup_mode", cgroup_mode.to_string()),
            ("host", host.to_string()),
        ]),
    );
    r.register(
        "hydra_containers",
        "Containers by state.",
        agent.containers.clone(),
    );
    r.register(
        "hydra_api_requests",
        "API requests, by method and status code.",
        agent.api_requests.clone(),
    );
    r.register(
        "hydra_container_restarts",
        "Restarts by policy.",
        agent.restarts.clone(),
    );
    r.register_collector(Box::new(AgentMemory));
    r
}

/// The agent's own memory: RSS and the allocator's heap, read at each
/// scrape, so that a slow leak and memory merely held after a busy hour can
/// be told apart.
#[derive(Debug)]
struct AgentMemory;

impl Collector for AgentMemory {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rss = procfs::process::Process::myself()
            .and_then(|p| p.statm())
            .map(|s| s.resident * procfs::page_size())
            .unwrap_or(0);
        let heap = crate::sys::heap::heap().unwrap_or_default();
        for (name, help, v) in [
            (
                "hydra_agent_resident_bytes",
                "The agent's resident memory.",
                rss,
            ),
            (
                "hydra_agent_heap_live_bytes",
                "Heap allocated by the agent and not freed (counted at each allocation).",
                crate::sys::heap::live(),
            ),
            (
                "hydra_agent_heap_in_use_bytes",
                "Heap in use as glibc counts it (mallinfo2: also the chunks threads cache).",
                heap.in_use,
            ),
            (
                "hydra_agent_heap_held_bytes",
                "Heap the allocator holds from the kernel, used or free.",
                heap.held,
            ),
        ] {
            let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v as i64).encode(m)?;
        }
        Ok(())
    }
}

/// Encodes the registry as OpenMetrics text.
pub fn encode(r: &Registry) -> String {
    let mut out = String::with_capacity(16 << 10);
    prometheus_client::encoding::text::encode(&mut out, r).expect("writing to a String");
    out
}

/// The per-container series of the sampler's last pass.
#[derive(Debug)]
pub struct ContainerSeries {
    pub sampler: Arc<Sampler>,
    pub host: String,
}

impl Collector for ContainerSeries {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self.sampler.latest();
        for (name, kind, help, f) in SERIES {
            let (ty, family) = match *kind {
                "counter" => (MetricType::Counter, name.trim_end_matches("_total")),
                _ => (MetricType::Gauge, *name),
            };
            let mut m = enc.encode_descriptor(family, help, None, ty)?;
            for s in samples.iter() {
                for (extra, v) in f(s) {
                    let mut labels: Vec<(&str, &str)> = vec![
                        ("container", &s.labels.container),
                        ("app", &s.labels.app),
                        ("version", &s.labels.version),
                        ("host", &self.host),
                    ];
                    labels.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
                    let fam = m.encode_family(&labels)?;
                    match ty {
                        MetricType::Counter => ConstCounter::new(v).encode(fam)?,
                        _ => ConstGauge::new(v).encode(fam)?,
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_parts_series() {
        let agent = AgentMetrics::default();
        agent.count_request("GET", 200);
        agent.count_request("GET", 200);
        agent
            .containers
            .get_or_create(&StateLabels {
                state: "running".into(),
            })
            .set(3);
        let mut r = registry(&agent, "v2", "h1");
        let sampler = Arc::new(Sampler::new(std::time::Duration::from_secs(10)));
        r.register_collector(Box::new(ContainerSeries {
            sampler,
            host: "h1".into(),
        }));
        let text = encode(&r);
        assert!(
            text.contains("hydra_api_requests_total{method=\"GET\",code=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("hydra_containers{state=\"running\"} 3"),
            "{text}"
        );
        assert!(text.contains("hydra_agent_info{version=\""), "{text}");
        let gauge = |name: &str| -> i64 {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap();
            line.split(' ').nth(1).unwrap().parse().unwrap()
        };
        assert!(gauge("hydra_agent_resident_bytes") > 1 << 20, "{text}");
        assert!(gauge("hydra_agent_heap_in_use_bytes") > 0, "{text}");
        assert!(
            gauge("hydra_agent_heap_held_bytes") >= gauge("hydra_agent_heap_in_use_bytes"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE hydra_container_cpu_usage_seconds counter"),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"), "{text}");
    }
}
