//! The API's request and response types, shared by the server, `hydractl` and
//! tests, and the pure validation of container specs.

pub mod client;
pub mod server;

use crate::units::{validate_name, Size};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Largest request body accepted; bigger ones get 413.
pub const MAX_BODY: usize = 1 << 20;

/// Body of `POST /v1/containers`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub image: String,
    /// The whole argv; when given it replaces the image's Entrypoint and Cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub restart: RestartSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    /// Changes to the default capability set (containerd's); `add` only
    /// within the agent's `security.allowed_capabilities`.
    #[serde(default, skip_serializing_if = "CapabilitiesSpec::is_empty")]
    pub capabilities: CapabilitiesSpec,
    /// Run in a user namespace: container ids 0..65536 are a host range of
    /// unprivileged ids allocated to this container.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub userns: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Names, or `ALL`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

impl CapabilitiesSpec {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.drop.is_empty()
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_high: Option<Size>,
    /// Swap allowed beyond `memory`; default 0 so a hog is OOM-killed, not swapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_swap: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_weight: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<IoLimits>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IoLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bps: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bps: Option<Size>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub container_port: u16,
    #[serde(default)]
    pub host_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestartSpec {
    #[serde(default)]
    pub policy: RestartPolicy,
    /// For `on-failure`: restarts allowed before the container stays exited.
    #[serde(default)]
    pub max_retries: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    pub http_path: String,
    #[serde(default = "default_health_port")]
    pub port: u16,
    #[serde(default = "default_interval")]
    pub interval_s: u64,
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_health_port() -> u16 {
    8080
}
fn default_interval() -> u64 {
    10
}
fn default_timeout() -> u64 {
    2
}
fn default_retries() -> u32 {
    3
}

/// The JSON error body: `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error the API answers with; every failure inside the agent maps to one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            code: "invalid",
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            status: 422,
            code: "unprocessable",
            message: message.into(),
            field: Some(field.into()),
        }
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(404, "not_found", what)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(409, "conflict", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "internal", message)
    }
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                field: self.field.clone(),
            },
        }
    }
}

/// Parses a spec; a serde error names the JSON path of the offending field.
pub fn parse_spec(body: &[u8]) -> Result<ContainerSpec, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let spec: ContainerSpec = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad("body", format!("malformed JSON: {inner}"));
        }
        let field = if path == "." || path.is_empty() {
            unknown_field_name(&inner.to_string()).unwrap_or_else(|| "body".into())
        } else {
            path
        };
        ApiError::bad(field, format!("invalid container spec: {inner}"))
    })?;
    validate_spec(&spec)?;
    Ok(spec)
}

fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.split("field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// Checks what the types cannot: ranges, relations, characters.
pub fn validate_spec(s: &ContainerSpec) -> Result<(), ApiError> {
    validate_name(&s.name).map_err(|m| ApiError::bad("name", m))?;
    for (list, names) in [("add", &s.capabilities.add), ("drop", &s.capabilities.drop)] {
        for (i, c) in names.iter().enumerate() {
            let all_ok = list == "drop" && c.eq_ignore_ascii_case("ALL");
            if !all_ok && crate::runtime::security::canonical_cap(c).is_none() {
                return Err(ApiError::bad(
                    format!("capabilities.{list}[{i}]"),
                    format!("{c:?} is not a capability"),
                ));
            }
        }
    }
    for (field, v) in [("app", &s.app), ("version", &s.version)] {
        if let Some(v) = v {
            if v.len() > 128 || v.chars().any(|c| c.is_control()) {
                return Err(ApiError::bad(
                    field,
                    format!("{field} must be at most 128 printable characters"),
                ));
            }
        }
    }
    if s.image.trim().is_empty() {
        return Err(ApiError::bad("image", "image is empty"));
    }
    if let Some(cmd) = &s.command {
        if cmd.is_empty() || cmd[0].is_empty() {
            return Err(ApiError::bad("command", "command must name a program"));
        }
        if cmd.iter().any(|a| a.contains('\0')) {
            return Err(ApiError::bad(
                "command",
                "command arguments must not contain NUL",
            ));
        }
    }
    for (k, v) in &s.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(ApiError::bad(
                format!("env.{k}"),
                "env names must be non-empty without '=' or NUL",
            ));
        }
    }
    if let Some(w) = &s.workdir {
        if !w.starts_with('/') || w.contains('\0') {
            return Err(ApiError::bad("workdir", "workdir must be an absolute path"));
        }
    }
    if let Some(u) = &s.user {
        if u.is_empty() || u.contains('\0') || u.split(':').count() > 2 {
            return Err(ApiError::bad(
                "user",
                "user must be UID[:GID] or NAME[:GROUP]",
            ));
        }
    }
    let l = &s.limits;
    for (field, v, min) in [
        ("limits.memory", l.memory, 1u64 << 20),
        ("limits.memory_high", l.memory_high, 1 << 20),
    ] {
        if let Some(v) = v {
            if v.0 < min {
                return Err(ApiError::bad(
                    field,
                    format!("{} bytes is too small: at least 1Mi", v.0),
                ));
            }
            if v.0 > i64::MAX as u64 / 2 {
                return Err(ApiError::bad(field, format!("{} bytes is too large", v.0)));
            }
        }
    }
    if let (Some(h), Some(m)) = (l.memory_high, l.memory) {
        if h > m {
            return Err(ApiError::bad(
                "limits.memory_high",
                "memory_high must not exceed memory",
            ));
        }
    }
    if let Some(sw) = l.memory_swap {
        if l.memory.is_none() {
            return Err(ApiError::bad(
                "limits.memory_swap",
                "memory_swap needs limits.memory",
            ));
        }
        if sw.0 > i64::MAX as u64 / 2 {
            return Err(ApiError::bad(
                "limits.memory_swap",
                "memory_swap is too large",
            ));
        }
    }
    if let Some(c) = l.cpus {
        if !c.is_finite() || !(0.01..=1024.0).contains(&c) {
            return Err(ApiError::bad(
                "limits.cpus",
                format!("{c} is out of range: 0.01 to 1024 CPUs"),
            ));
        }
    }
    if let Some(w) = l.cpu_weight {
        if !(1..=10000).contains(&w) {
            return Err(ApiError::bad(
                "limits.cpu_weight",
                format!("{w} is out of range: 1 to 10000"),
            ));
        }
    }
    if let Some(p) = l.pids {
        if !(1..=4_194_304).contains(&p) {
            return Err(ApiError::bad(
                "limits.pids",
                format!("{p} is out of range: 1 to 4194304"),
            ));
        }
    }
    if let Some(io) = &l.io {
        for (field, v) in [
            ("limits.io.read_bps", io.read_bps),
            ("limits.io.write_bps", io.write_bps),
        ] {
            if let Some(v) = v {
                if v.0 == 0 || v.0 > i64::MAX as u64 {
                    return Err(ApiError::bad(
                        field,
                        format!("{} is out of range: 1 byte/s or more", v.0),
                    ));
                }
            }
        }
    }
    for (i, p) in s.ports.iter().enumerate() {
        if p.container_port == 0 || p.host_port == Some(0) {
            return Err(ApiError::bad(
                format!("ports[{i}]"),
                "ports must be 1 to 65535",
            ));
        }
        if s.ports[..i]
            .iter()
            .any(|q| q.host_port.is_some() && q.host_port == p.host_port)
        {
            return Err(ApiError::bad(
                format!("ports[{i}].host_port"),
                "the same host port twice",
            ));
        }
    }
    if let Some(h) = &s.health {
        if !h.http_path.starts_with('/')
            || h.http_path
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(ApiError::bad(
                "health.http_path",
                "must be an absolute URL path without spaces",
            ));
        }
        if h.port == 0 {
            return Err(ApiError::bad("health.port", "must be 1 to 65535"));
        }
        if h.interval_s == 0 || h.timeout_s == 0 || h.retries == 0 {
            return Err(ApiError::bad(
                "health",
                "interval_s, timeout_s and retries must be at least 1",
            ));
        }
    }
    Ok(())
}

/// Container JSON, as inspect and list answer it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerInfo {
    pub name: String,
    pub app: Option<String>,
    pub version: Option<String>,
    pub image: String,
    pub state: String,
    pub pid: Option<i32>,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub restart_count: u32,
    pub command: Vec<String>,
    pub limits: crate::cgroup::AppliedLimits,
    pub cgroup: String,
    pub ip: Option<String>,
    pub ports: Vec<PortMapping>,
    pub health: HealthInfo,
    pub selinux_label: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortMapping {
    pub host_ip: String,
    pub host_port: u16,
    pub container_port: u16,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HealthInfo {
    /// `none` (no check configured), `starting`, `healthy` or `unhealthy`.
    pub status: String,
    pub failures: u32,
}

/// Answer of `GET /v1/containers/{name}/wait`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExitStatus {
    pub name: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub finished_at: Option<String>,
}

/// One line of `GET /v1/events`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub ts: String,
    pub container: String,
    /// create, start, die, oom, stop, kill, restart, destroy
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// `logs_dropped`: how many log records the size cap deleted unsent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

/// Answer of `GET /v1/host`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostInfo {
    pub hostname: String,
    pub agent_version: String,
    pub kernel: String,
    pub cgroup_mode: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub containers: ContainerCounts,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerCounts {
    pub total: usize,
    pub running: usize,
    pub exited: usize,
    pub created: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<ContainerSpec, ApiError> {
        parse_spec(json.as_bytes())
    }

    #[test]
    fn good_spec() {
        let s = spec(
            r#"{"name":"app1-v2-0","image":"rootfs:/x","command":["/bin/sh"],
            "limits":{"memory":"128Mi","cpus":0.5,"pids":256,"io":{"read_bps":"10Mi"}},
            "restart":{"policy":"on-failure","max_retries":5}}"#,
        )
        .unwrap();
        assert_eq!(s.limits.memory, Some(Size(128 << 20)));
        assert_eq!(s.restart.policy, RestartPolicy::OnFailure);
    }

    #[test]
    fn errors_name_the_field() {
        for (json, field) in [
            (r#"{"name":"../x","image":"a"}"#, "name"),
            (r#"{"name":"Upper","image":"a"}"#, "name"),
            (r#"{"name":"","image":"a"}"#, "name"),
            (r#"{"name":"a","image":"a","bogus":1}"#, "bogus"),
            (
                r#"{"name":"a","image":"a","limits":{"memory":0}}"#,
                "limits.memory",
            ),
            (
                r#"{"name":"a","image":"a","limits":{"memory":-5}}"#,
                "limits.memory",
            ),
            (
                r#"{"name":"a","image":"a","limits":{"memory":"99999999999Gi"}}"#,
                "limits.memory",
            ),
            (
                r#"{"name":"a","image":"a","limits":{"pids":0}}"#,
                "limits.pids",
            ),
            (
                r#"{"name":"a","image":"a","limits":{"pids":-1}}"#,
                "limits.pids",
            ),
            (
                r#"{"name":"a","image":"a","limits":{"cpus":-0.5}}"#,
                "limits.cpus",
            ),
            (
                r#"{"name":"a","image":"a","limits":{"cpus":0}}"#,
                "limits.cpus",
            ),
            (
                r#"{"name":"a","image":"a","limits":{"cpu_weight":20000}}"#,
                "limits.cpu_weight",
            ),
            (
                r#"{"name":"a","image":"a","limits":{"io":{"read_bps":0}}}"#,
                "limits.io.read_bps",
            ),
            (r#"{"name":"a","image":"a","limits":{"frobs":1}}"#, "frobs"),
            (r#"{"name":"a","image":"a","command":[]}"#, "command"),
            (r#"{"name":"a"}"#, "image"),
        ] {
            let e = spec(json).unwrap_err();
            assert_eq!(e.status, 400, "{json}");
            assert!(
                e.field.as_deref().unwrap_or("").contains(field),
                "{json}: {e:?}"
            );
        }
        let e = spec("{not json").unwrap_err();
        assert_eq!(e.status, 400);
    }
}
