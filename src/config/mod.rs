//! The agent's TOML configuration: every key optional, unknown keys rejected,
//! values typed when the file is read (addresses, CIDRs, ranges, sizes), and
//! validation a pure function whose error names the key.

mod api;
mod images;
mod paths;
mod storage;
mod types;

pub use api::ApiConfig;
pub use images::{ImagesConfig, RegistryConfig};
pub use paths::Paths;
pub use storage::{Mechanism as StorageMechanism, StorageConfig};
pub use types::{Endpoint, HttpUrl, IdRange, PortRange};

use crate::model::caps::canonical_cap;
use crate::model::{Cidr, Size, USERNS_SIZE};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    })
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub agent: AgentConfig,
    pub api: ApiConfig,
    pub cgroup: CgroupConfig,
    pub network: NetworkConfig,
    pub logs: LogsConfig,
    pub collector: CollectorConfig,
    pub security: SecurityConfig,
    pub storage: StorageConfig,
    /// `[[registry]]`: the registries images may be pulled from.
    pub registry: Vec<RegistryConfig>,
    pub images: ImagesConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// tracing filter, e.g. `info` or `hydra_agent=debug`; reloaded on SIGHUP.
    pub log_level: String,
    /// Seconds a container may take from the start request to its exec;
    /// past it the start fails and what was started is stopped.
    pub start_timeout_s: u64,
    /// Network namespaces (with their veth, under host networking) made
    /// ahead of the starts that take them; 0: each start makes its own.
    pub netns_pool: u32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            log_level: "info".into(),
            start_timeout_s: 30,
            netns_pool: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CgroupConfig {
    /// Containers' cgroups live in `<agent's own cgroup>/<parent>/<name>`.
    pub parent: String,
}

impl Default for CgroupConfig {
    fn default() -> Self {
        CgroupConfig {
            parent: "hydra".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// false: containers get a loopback-only network namespace and no ports.
    pub enabled: bool,
    pub bridge: String,
    pub subnet: Cidr,
    pub port_range: PortRange,
    /// CIDRs allowed to reach container ports (until changed through the API).
    pub allowlist: Vec<Cidr>,
    /// Host ports containers may connect to (e.g. the platform's reverse proxy).
    pub host_ports: Vec<u16>,
    /// Private destinations containers may reach (all other private ranges are blocked).
    pub egress_allow: Vec<Cidr>,
    /// Resolvers written to containers' /etc/resolv.conf (default: the host's, minus loopback ones).
    pub dns: Vec<IpAddr>,
    /// Part of `subnet` the agent allocates from (like Docker's --fixed-cidr),
    /// so it can share Docker's bridge with Docker's own containers.
    pub ip_range: Option<Cidr>,
    /// How often the firewall is checked for rules removed by someone else.
    pub drift_interval_s: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            enabled: true,
            bridge: "docker0".into(),
            subnet: Cidr::parse("172.17.0.0/16").expect("valid"),
            port_range: PortRange {
                start: 20000,
                end: 29999,
            },
            allowlist: vec![Cidr::parse("10.0.0.0/8").expect("valid")],
            host_ports: Vec::new(),
            egress_allow: Vec::new(),
            dns: Vec::new(),
            ip_range: None,
            drift_interval_s: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// Where container logs go; default `<state>/containers/<name>/logs`.
    pub dir: Option<PathBuf>,
    pub max_file_size: Size,
    pub max_files: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            dir: None,
            max_file_size: Size(10 << 20),
            max_files: 3,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    pub relp: Option<Endpoint>,
    pub syslog: Option<Endpoint>,
    pub syslog_tls: bool,
    /// PEM bundle of the CAs a TLS syslog receiver's certificate must chain to.
    pub syslog_ca: PathBuf,
    /// Prometheus remote-write endpoint, `http://host:port/path`.
    pub remote_write: Option<HttpUrl>,
    /// Container samples (one container's stats of one pass) kept while the
    /// remote-write endpoint is away; past it the oldest are dropped, counted.
    pub remote_write_backlog: usize,
    pub stats_interval_s: u64,
    /// Log lines per second per container shipped at most (beyond: skipped,
    /// counted; still in the local log); 0: no cap.
    pub log_rate_lines: u64,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            relp: None,
            syslog: None,
            syslog_tls: false,
            syslog_ca: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
            remote_write: None,
            remote_write_backlog: 20_000,
            stats_interval_s: 10,
            log_rate_lines: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// Capabilities beyond the default set that specs may add.
    pub allowed_capabilities: Vec<String>,
    /// RLIMIT_NOFILE of container processes (soft and hard).
    pub nofile: u64,
    /// oom_score_adj of containers (the agent and its helpers are at -999).
    pub oom_score_adj: i32,
    /// pids limit of a container whose spec gives none.
    pub default_pids: u64,
    /// First host uid (and gid) of the ranges given to `userns: true`
    /// containers; each gets [`USERNS_SIZE`] ids, never shared while in use.
    pub userns_uid_start: u32,
    /// How many such ranges there are.
    pub userns_ranges: u32,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            allowed_capabilities: Vec::new(),
            nofile: 1024,
            oom_score_adj: 500,
            default_pids: 4096,
            userns_uid_start: 1 << 31,
            userns_ranges: 32767,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.into(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates; a value of the wrong form is named by its key.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let at = inner
                .span()
                .map(|s| format!(" (at byte {})", s.start))
                .unwrap_or_default();
            match key.as_str() {
                "" | "." => ConfigError::Parse {
                    path: PathBuf::new(),
                    message: format!("{}{at}", inner.message()),
                },
                _ => ConfigError::Invalid {
                    key,
                    message: inner.message().to_string(),
                },
            }
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks what the types cannot: ranges and relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let parent = &self.cgroup.parent;
        if parent.is_empty()
            || parent
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return invalid(
                "cgroup.parent",
                format!("{parent:?} must be a relative path without '.' or '..' components"),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.agent.log_level).is_err() {
            return invalid(
                "agent.log_level",
                format!("{:?} is not a valid log filter", self.agent.log_level),
            );
        }
        if self.agent.start_timeout_s == 0 {
            return invalid("agent.start_timeout_s", "must be at least 1");
        }
        if self.agent.netns_pool > 64 {
            return invalid("agent.netns_pool", "at most 64");
        }
        if self.logs.max_files == 0 {
            return invalid("logs.max_files", "must be at least 1");
        }
        if self.logs.max_file_size.0 < 4096 {
            return invalid("logs.max_file_size", "must be at least 4096 bytes");
        }
        self.network.validate()?;
        self.storage.validate()?;
        self.collector.validate()?;
        self.api.validate()?;
        images::validate(&self.registry, &self.images)?;
        self.security.validate()
    }
}

impl NetworkConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(r) = &self.ip_range {
            if !self.subnet.covers(r) {
                return invalid(
                    "network.ip_range",
                    format!("{r} must be a CIDR inside network.subnet {}", self.subnet),
                );
            }
        }
        if self.drift_interval_s == 0 {
            return invalid("network.drift_interval_s", "must be at least 1");
        }
        if self.bridge.is_empty() || self.bridge.len() > 15 {
            return invalid("network.bridge", "must be 1 to 15 characters");
        }
        Ok(())
    }
}

impl CollectorConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.stats_interval_s == 0 {
            return invalid("collector.stats_interval_s", "must be at least 1");
        }
        if self.relp.is_some() && self.syslog.is_some() {
            return invalid(
                "collector.syslog",
                "set one of collector.relp and collector.syslog",
            );
        }
        if self.syslog_tls && self.syslog.is_none() {
            return invalid("collector.syslog_tls", "needs collector.syslog");
        }
        if self.remote_write_backlog == 0 {
            return invalid("collector.remote_write_backlog", "must be at least 1");
        }
        Ok(())
    }
}

impl SecurityConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (i, c) in self.allowed_capabilities.iter().enumerate() {
            if canonical_cap(c).is_none() {
                return invalid(
                    "security.allowed_capabilities",
                    format!("[{i}] {c:?} is not a capability"),
                );
            }
        }
        if !(-1000..=1000).contains(&self.oom_score_adj) {
            return invalid("security.oom_score_adj", "must be in -1000..=1000");
        }
        if self.nofile < 16 {
            return invalid("security.nofile", "must be at least 16");
        }
        if self.default_pids < 1 {
            return invalid("security.default_pids", "must be at least 1");
        }
        if self.userns_uid_start < USERNS_SIZE {
            return invalid(
                "security.userns_uid_start",
                format!("must be at least {USERNS_SIZE} (host system and user ids live below)"),
            );
        }
        let end = self.userns_uid_start as u64 + self.userns_ranges as u64 * USERNS_SIZE as u64;
        if self.userns_ranges < 1 || end > u32::MAX as u64 {
            return invalid(
                "security.userns_ranges",
                format!("must be at least 1, and the ranges must end below 2^32 - 1 (they end at {end})"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.logs.max_file_size.0, 10 << 20);
        assert_eq!(c.network.bridge, "docker0");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[logs]\nmax_filez = 3\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_filez"), "{e}");
        let e = Config::parse("colour = 1\n").unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, key) in [
            ("[network]\nport_range = \"30-20\"", "network.port_range"),
            ("[network]\nsubnet = \"300.0.0.0/8\"", "network.subnet"),
            (
                "[network]\nallowlist = [\"10.0.0.0/8\", \"x\"]",
                "network.allowlist",
            ),
            ("[network]\ndns = [\"nope\"]", "network.dns"),
            ("[cgroup]\nparent = \"../x\"", "cgroup.parent"),
            ("[logs]\nmax_files = 0", "logs.max_files"),
            ("[network]\nip_range = \"10.0.0.0/24\"", "network.ip_range"),
            ("[collector]\nrelp = \"nohost\"", "collector.relp"),
            (
                "[collector]\nremote_write = \"https://x/\"",
                "collector.remote_write",
            ),
            ("[api]\nmetrics = \"localhost\"", "api.metrics"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
            assert_eq!(e.lines().count(), 1, "{e}");
        }
        let e = Config::parse("[logs]\nmax_file_size = \"10Qi\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("10Qi") && e.contains("logs.max_file_size"),
            "{e}"
        );
    }

    #[test]
    fn typed_values_roundtrip() {
        let c = Config::parse(
            "[network]\nsubnet = \"10.5.0.0/16\"\nport_range = \"100-200\"\ndns = [\"1.1.1.1\"]\n\
             [collector]\nrelp = \"127.0.0.1:2514\"\n",
        )
        .unwrap();
        assert_eq!(
            c.network.port_range,
            PortRange {
                start: 100,
                end: 200
            }
        );
        assert_eq!(c.collector.relp.as_ref().unwrap().port, 2514);
        let again = Config::parse(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }
}
