//! The agent's TOML configuration: every key optional, unknown keys rejected,
//! validation a pure function whose error names the key.

use crate::units::Size;
use serde::{Deserialize, Serialize};
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
    Invalid { key: &'static str, message: String },
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
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// tracing filter, e.g. `info` or `hydra_agent=debug`; reloaded on SIGHUP.
    pub log_level: String,
    /// Seconds a container may take from the start request to its exec;
    /// past it the start fails and what was started is stopped.
    pub start_timeout_s: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            log_level: "info".into(),
            start_timeout_s: 30,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Unix socket path; default `/run/hydra-agent/agent.sock` (under `--root`).
    pub socket: Option<PathBuf>,
    pub tcp: Option<String>,
    /// `host:port` of a plain-HTTP listener serving only `/metrics` and
    /// `/healthz` (for Prometheus); none by default.
    pub metrics: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
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
    pub subnet: String,
    pub port_range: String,
    /// CIDRs allowed to reach container ports (until changed through the API).
    pub allowlist: Vec<String>,
    /// Host ports containers may connect to (e.g. the platform's reverse proxy).
    pub host_ports: Vec<u16>,
    /// Private destinations containers may reach (all other private ranges are blocked).
    pub egress_allow: Vec<String>,
    /// Resolvers written to containers' /etc/resolv.conf (default: the host's, minus loopback ones).
    pub dns: Vec<String>,
    /// Part of `subnet` the agent allocates from (like Docker's --fixed-cidr),
    /// so it can share Docker's bridge with Docker's own containers.
    pub ip_range: Option<String>,
    /// How often the firewall is checked for rules removed by someone else.
    pub drift_interval_s: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            enabled: true,
            bridge: "docker0".into(),
            subnet: "172.17.0.0/16".into(),
            port_range: "20000-29999".into(),
            allowlist: vec!["10.0.0.0/8".into()],
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
    pub relp: Option<String>,
    pub syslog: Option<String>,
    pub syslog_tls: bool,
    /// PEM bundle of the CAs a TLS syslog receiver's certificate must chain to.
    pub syslog_ca: PathBuf,
    /// Prometheus remote-write endpoint, `http://host:port/path`.
    pub remote_write: Option<String>,
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

/// Ids per user namespace: container ids 0..65536 map to one host range.
pub const USERNS_SIZE: u32 = 65536;

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

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.message().to_string()
                + &e.span()
                    .map(|s| format!(" (at byte {})", s.start))
                    .unwrap_or_default(),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values serde cannot: ranges, formats, relations between keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let inv = |key, message: String| Err(ConfigError::Invalid { key, message });
        if self.cgroup.parent.is_empty()
            || self
                .cgroup
                .parent
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return inv(
                "cgroup.parent",
                format!(
                    "{:?} must be a relative path without '.' or '..' components",
                    self.cgroup.parent
                ),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.agent.log_level).is_err() {
            return inv(
                "agent.log_level",
                format!("{:?} is not a valid log filter", self.agent.log_level),
            );
        }
        if self.logs.max_files == 0 {
            return inv("logs.max_files", "must be at least 1".into());
        }
        if self.logs.max_file_size.0 < 4096 {
            return inv("logs.max_file_size", "must be at least 4096 bytes".into());
        }
        if parse_port_range(&self.network.port_range).is_none() {
            return inv(
                "network.port_range",
                format!(
                    "{:?} is not START-END with 1 <= START <= END <= 65535",
                    self.network.port_range
                ),
            );
        }
        if !is_cidr(&self.network.subnet) {
            return inv(
                "network.subnet",
                format!("{:?} is not an IPv4 CIDR", self.network.subnet),
            );
        }
        if let Some(bad) = self.network.allowlist.iter().find(|c| !is_cidr(c)) {
            return inv("network.allowlist", format!("{bad:?} is not an IPv4 CIDR"));
        }
        if let Some(bad) = self.network.egress_allow.iter().find(|c| !is_cidr(c)) {
            return inv(
                "network.egress_allow",
                format!("{bad:?} is not an IPv4 CIDR"),
            );
        }
        if let Some(bad) = self
            .network
            .dns
            .iter()
            .find(|d| d.parse::<std::net::IpAddr>().is_err())
        {
            return inv("network.dns", format!("{bad:?} is not an IP address"));
        }
        if let Some(r) = &self.network.ip_range {
            let inside = crate::network::ipam::Cidr::parse(r)
                .ok()
                .zip(crate::network::ipam::Cidr::parse(&self.network.subnet).ok());
            match inside {
                Some((r, s)) if r.prefix >= s.prefix && s.contains(r.net) => {}
                _ => {
                    return inv(
                        "network.ip_range",
                        format!(
                            "{r:?} must be a CIDR inside network.subnet {:?}",
                            self.network.subnet
                        ),
                    )
                }
            }
        }
        if self.network.drift_interval_s == 0 {
            return inv("network.drift_interval_s", "must be at least 1".into());
        }
        if self.network.bridge.is_empty() || self.network.bridge.len() > 15 {
            return inv("network.bridge", "must be 1 to 15 characters".into());
        }
        if self.agent.start_timeout_s == 0 {
            return inv("agent.start_timeout_s", "must be at least 1".into());
        }
        if self.collector.stats_interval_s == 0 {
            return inv("collector.stats_interval_s", "must be at least 1".into());
        }
        if let Some(u) = &self.collector.remote_write {
            crate::telemetry::remote_write::check_url(u).map_err(|m| ConfigError::Invalid {
                key: "collector.remote_write",
                message: format!("{u:?} {m}"),
            })?;
        }
        if self.collector.relp.is_some() && self.collector.syslog.is_some() {
            return inv(
                "collector.syslog",
                "set one of collector.relp and collector.syslog".into(),
            );
        }
        for (key, v) in [
            ("collector.relp", &self.collector.relp),
            ("collector.syslog", &self.collector.syslog),
        ] {
            if let Some(a) = v {
                if !a
                    .rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                {
                    return inv(key, format!("{a:?} is not host:port"));
                }
            }
        }
        if self.collector.syslog_tls {
            if self.collector.syslog.is_none() {
                return inv("collector.syslog_tls", "needs collector.syslog".into());
            }
            crate::telemetry::tls::client_config(&self.collector.syslog_ca).map_err(|m| {
                ConfigError::Invalid {
                    key: "collector.syslog_ca",
                    message: m,
                }
            })?;
        }
        if self.collector.remote_write_backlog == 0 {
            return inv(
                "collector.remote_write_backlog",
                "must be at least 1".into(),
            );
        }
        if let Some(a) = &self.api.metrics {
            if a.parse::<std::net::SocketAddr>().is_err() {
                return inv("api.metrics", format!("{a:?} is not an address:port"));
            }
        }
        for (i, c) in self.security.allowed_capabilities.iter().enumerate() {
            if crate::runtime::security::canonical_cap(c).is_none() {
                return Err(ConfigError::Invalid {
                    key: "security.allowed_capabilities",
                    message: format!("[{i}] {c:?} is not a capability"),
                });
            }
        }
        if !(-1000..=1000).contains(&self.security.oom_score_adj) {
            return inv("security.oom_score_adj", "must be in -1000..=1000".into());
        }
        if self.security.nofile < 16 {
            return inv("security.nofile", "must be at least 16".into());
        }
        if self.security.default_pids < 1 {
            return inv("security.default_pids", "must be at least 1".into());
        }
        let sec = &self.security;
        if sec.userns_uid_start < USERNS_SIZE {
            return inv(
                "security.userns_uid_start",
                format!("must be at least {USERNS_SIZE} (host system and user ids live below)"),
            );
        }
        let end = sec.userns_uid_start as u64 + sec.userns_ranges as u64 * USERNS_SIZE as u64;
        if sec.userns_ranges < 1 || end > u32::MAX as u64 {
            return inv(
                "security.userns_ranges",
                format!(
                    "must be at least 1, and the ranges must end below 2^32 - 1 (they end at {end})"
                ),
            );
        }
        Ok(())
    }
}

pub fn parse_port_range(s: &str) -> Option<(u16, u16)> {
    let (a, b) = s.split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a >= 1 && a <= b).then_some((a, b))
}

fn is_cidr(s: &str) -> bool {
    match s.split_once('/') {
        Some((ip, len)) => {
            ip.parse::<std::net::Ipv4Addr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 32)
        }
        None => false,
    }
}

/// Every path the agent writes, derived from `--root` (default `/`).
#[derive(Debug, Clone)]
pub struct Paths {
    pub state: PathBuf,
    pub run: PathBuf,
    pub socket: PathBuf,
}

impl Paths {
    /// `root` relocates every default path; explicit config paths are used as written.
    pub fn new(root: Option<&Path>, cfg: &Config, socket_flag: Option<&Path>) -> Paths {
        let under = |p: &str| match root {
            Some(r) => r.join(p.trim_start_matches('/')),
            None => PathBuf::from(p),
        };
        let run = under("/run/hydra-agent");
        let socket = socket_flag
            .map(Path::to_path_buf)
            .or_else(|| cfg.api.socket.clone())
            .unwrap_or_else(|| run.join("agent.sock"));
        Paths {
            state: under("/var/lib/hydra-agent"),
            run,
            socket,
        }
    }

    pub fn containers(&self) -> PathBuf {
        self.state.join("containers")
    }
    pub fn layers(&self) -> PathBuf {
        self.state.join("layers")
    }
    pub fn quarantine(&self) -> PathBuf {
        self.state.join("quarantine")
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
            ("[cgroup]\nparent = \"../x\"", "cgroup.parent"),
            ("[logs]\nmax_files = 0", "logs.max_files"),
            ("[network]\nip_range = \"10.0.0.0/24\"", "network.ip_range"),
        ] {
            let e = Config::parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
        let e = Config::parse("[logs]\nmax_file_size = \"10Qi\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("10Qi"), "{e}");
    }

    #[test]
    fn root_relocates() {
        let p = Paths::new(Some(Path::new("/tmp/r")), &Config::default(), None);
        assert_eq!(p.socket, Path::new("/tmp/r/run/hydra-agent/agent.sock"));
        assert_eq!(p.state, Path::new("/tmp/r/var/lib/hydra-agent"));
    }
}
