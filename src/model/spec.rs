//! The container spec: what a client asks for (the body of `POST
//! /v1/containers`, kept in the container's record), and its validation.

use super::caps::canonical_cap;
use super::units::{validate_name, Size};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A spec value that is out of range or malformed: which field, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// The JSON path of the field, e.g. `limits.memory`.
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// What a container runs and with which limits; the body of `POST /v1/containers`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    #[schema(pattern = "^[a-z0-9][a-z0-9_.-]{0,62}$")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub image: String,
    /// The whole argv; when given it replaces the image's Entrypoint and Cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1)]
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

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
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
    #[schema(minimum = 0.01, maximum = 1024)]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub cpu_weight: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 4194304)]
    pub pids: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<IoLimits>,
    /// Bytes the writable layer may hold; default `[storage] default_disk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<Size>,
    /// Files (inodes) the writable layer may hold; default `[storage] default_inodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 16, maximum = 4294967295_u64)]
    pub inodes: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IoLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bps: Option<Size>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bps: Option<Size>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    #[schema(minimum = 1, maximum = 65535)]
    pub container_port: u16,
    #[serde(default)]
    #[schema(minimum = 1, maximum = 65535)]
    pub host_port: Option<u16>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartSpec {
    #[serde(default)]
    pub policy: RestartPolicy,
    /// For `on-failure`: restarts allowed before the container stays exited.
    #[serde(default)]
    pub max_retries: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    pub http_path: String,
    #[serde(default = "default_health_port")]
    #[schema(minimum = 1, maximum = 65535, default = 8080)]
    pub port: u16,
    #[serde(default = "default_interval")]
    #[schema(minimum = 1, default = 10)]
    pub interval_s: u64,
    #[serde(default = "default_timeout")]
    #[schema(minimum = 1, default = 2)]
    pub timeout_s: u64,
    #[serde(default = "default_retries")]
    #[schema(minimum = 1, default = 3)]
    pub retries: u32,
}

impl HealthSpec {
    /// A check of `path` with the defaults: port 8080, every 10 s, 2 s
    /// timeout, unhealthy after 3 failures.
    pub fn http(path: &str) -> HealthSpec {
        HealthSpec {
            http_path: path.to_string(),
            port: default_health_port(),
            interval_s: default_interval(),
            timeout_s: default_timeout(),
            retries: default_retries(),
        }
    }
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

/// Checks what the types cannot: ranges, relations, characters.
pub fn validate(s: &ContainerSpec) -> Result<(), SpecError> {
    validate_name(&s.name).map_err(|m| SpecError::new("name", m.0))?;
    validate_capabilities(&s.capabilities)?;
    for (field, v) in [("app", &s.app), ("version", &s.version)] {
        if let Some(v) = v {
            if v.len() > 128 || v.chars().any(|c| c.is_control()) {
                return Err(SpecError::new(
                    field,
                    format!("{field} must be at most 128 printable characters"),
                ));
            }
        }
    }
    if s.image.trim().is_empty() {
        return Err(SpecError::new("image", "image is empty"));
    }
    validate_process(s)?;
    validate_limits(&s.limits)?;
    validate_ports(&s.ports)?;
    match &s.health {
        Some(h) => validate_health(h),
        None => Ok(()),
    }
}

fn validate_capabilities(c: &CapabilitiesSpec) -> Result<(), SpecError> {
    for (list, names) in [("add", &c.add), ("drop", &c.drop)] {
        for (i, c) in names.iter().enumerate() {
            let all_ok = list == "drop" && c.eq_ignore_ascii_case("ALL");
            if !all_ok && canonical_cap(c).is_none() {
                return Err(SpecError::new(
                    format!("capabilities.{list}[{i}]"),
                    format!("{c:?} is not a capability"),
                ));
            }
        }
    }
    Ok(())
}

fn validate_process(s: &ContainerSpec) -> Result<(), SpecError> {
    if let Some(cmd) = &s.command {
        if cmd.is_empty() || cmd[0].is_empty() {
            return Err(SpecError::new("command", "command must name a program"));
        }
        if cmd.iter().any(|a| a.contains('\0')) {
            return Err(SpecError::new(
                "command",
                "command arguments must not contain NUL",
            ));
        }
    }
    for (k, v) in &s.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(SpecError::new(
                format!("env.{k}"),
                "env names must be non-empty without '=' or NUL",
            ));
        }
    }
    if let Some(w) = &s.workdir {
        if !w.starts_with('/') || w.contains('\0') {
            return Err(SpecError::new(
                "workdir",
                "workdir must be an absolute path",
            ));
        }
    }
    if let Some(u) = &s.user {
        if u.is_empty() || u.contains('\0') || u.split(':').count() > 2 {
            return Err(SpecError::new(
                "user",
                "user must be UID[:GID] or NAME[:GROUP]",
            ));
        }
    }
    Ok(())
}

fn validate_memory(l: &Limits) -> Result<(), SpecError> {
    for (field, v) in [
        ("limits.memory", l.memory),
        ("limits.memory_high", l.memory_high),
    ] {
        if let Some(v) = v {
            if v.0 < 1 << 20 {
                return Err(SpecError::new(
                    field,
                    format!("{} bytes is too small: at least 1Mi", v.0),
                ));
            }
            if v.0 > i64::MAX as u64 / 2 {
                return Err(SpecError::new(field, format!("{} bytes is too large", v.0)));
            }
        }
    }
    if let (Some(h), Some(m)) = (l.memory_high, l.memory) {
        if h > m {
            return Err(SpecError::new(
                "limits.memory_high",
                "memory_high must not exceed memory",
            ));
        }
    }
    if let Some(sw) = l.memory_swap {
        if l.memory.is_none() {
            return Err(SpecError::new(
                "limits.memory_swap",
                "memory_swap needs limits.memory",
            ));
        }
        if sw.0 > i64::MAX as u64 / 2 {
            return Err(SpecError::new(
                "limits.memory_swap",
                "memory_swap is too large",
            ));
        }
    }
    Ok(())
}

fn validate_limits(l: &Limits) -> Result<(), SpecError> {
    validate_memory(l)?;
    if let Some(c) = l.cpus {
        if !c.is_finite() || !(0.01..=1024.0).contains(&c) {
            return Err(SpecError::new(
                "limits.cpus",
                format!("{c} is out of range: 0.01 to 1024 CPUs"),
            ));
        }
    }
    if let Some(w) = l.cpu_weight {
        if !(1..=10000).contains(&w) {
            return Err(SpecError::new(
                "limits.cpu_weight",
                format!("{w} is out of range: 1 to 10000"),
            ));
        }
    }
    if let Some(p) = l.pids {
        if !(1..=4_194_304).contains(&p) {
            return Err(SpecError::new(
                "limits.pids",
                format!("{p} is out of range: 1 to 4194304"),
            ));
        }
    }
    validate_disk(l)?;
    let io = l.io.as_ref();
    for (field, v) in [
        ("limits.io.read_bps", io.and_then(|i| i.read_bps)),
        ("limits.io.write_bps", io.and_then(|i| i.write_bps)),
    ] {
        if let Some(v) = v {
            if v.0 == 0 || v.0 > i64::MAX as u64 {
                return Err(SpecError::new(
                    field,
                    format!("{} is out of range: 1 byte/s or more", v.0),
                ));
            }
        }
    }
    Ok(())
}

/// The smallest layer worth a filesystem (and the most inodes one may
/// ask for: ext4's own ceiling).
pub const MIN_DISK: u64 = 8 << 20;
pub const MAX_INODES: u64 = u32::MAX as u64;

fn validate_disk(l: &Limits) -> Result<(), SpecError> {
    if let Some(d) = l.disk {
        if d.0 < MIN_DISK || d.0 > 1 << 50 {
            return Err(SpecError::new(
                "limits.disk",
                format!("{} is out of range: 8Mi to 1Pi", d.0),
            ));
        }
    }
    if let Some(n) = l.inodes {
        if !(16..=MAX_INODES).contains(&n) {
            return Err(SpecError::new(
                "limits.inodes",
                format!("{n} is out of range: 16 to {MAX_INODES}"),
            ));
        }
    }
    Ok(())
}

fn validate_ports(ports: &[PortSpec]) -> Result<(), SpecError> {
    for (i, p) in ports.iter().enumerate() {
        if p.container_port == 0 || p.host_port == Some(0) {
            return Err(SpecError::new(
                format!("ports[{i}]"),
                "ports must be 1 to 65535",
            ));
        }
        if ports[..i]
            .iter()
            .any(|q| q.host_port.is_some() && q.host_port == p.host_port)
        {
            return Err(SpecError::new(
                format!("ports[{i}].host_port"),
                "the same host port twice",
            ));
        }
    }
    Ok(())
}

fn validate_health(h: &HealthSpec) -> Result<(), SpecError> {
    if !h.http_path.starts_with('/')
        || h.http_path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(SpecError::new(
            "health.http_path",
            "must be an absolute URL path without spaces",
        ));
    }
    if h.port == 0 {
        return Err(SpecError::new("health.port", "must be 1 to 65535"));
    }
    if h.interval_s == 0 || h.timeout_s == 0 || h.retries == 0 {
        return Err(SpecError::new(
            "health",
            "interval_s, timeout_s and retries must be at least 1",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn limits() -> impl Strategy<Value = Limits> {
        let size = || proptest::option::of((0u64..1 << 40).prop_map(Size));
        (
            size(),
            size(),
            proptest::option::of(-10.0f64..2000.0),
            proptest::option::of(0u64..20_000),
            proptest::option::of(0u64..5_000_000),
        )
            .prop_map(|(memory, memory_high, cpus, cpu_weight, pids)| Limits {
                memory,
                memory_high,
                cpus,
                cpu_weight,
                pids,
                ..Default::default()
            })
    }

    proptest! {
        /// Validation accepts exactly the specs within the documented ranges,
        /// and a refusal names the field at fault.
        #[test]
        fn validation_matches_the_documented_ranges(
            name in "[a-zA-Z0-9_.-/]{0,70}",
            l in limits(),
            port in 0u16..3,
        ) {
            let s = ContainerSpec {
                name: name.clone(),
                app: None, version: None,
                image: "rootfs:/x".into(),
                command: None, env: Default::default(), workdir: None, user: None,
                limits: l.clone(),
                ports: vec![PortSpec { container_port: port, host_port: None }],
                restart: Default::default(), health: None,
                capabilities: Default::default(), userns: false,
            };
            let name_ok = validate_name(&name).is_ok();
            let mem_ok = |v: Option<Size>| v.is_none_or(|v| v.0 >= 1 << 20 && v.0 <= i64::MAX as u64 / 2);
            let ok = name_ok
                && mem_ok(l.memory) && mem_ok(l.memory_high)
                && !matches!((l.memory_high, l.memory), (Some(h), Some(m)) if h > m)
                && l.cpus.is_none_or(|c| (0.01..=1024.0).contains(&c))
                && l.cpu_weight.is_none_or(|w| (1..=10000).contains(&w))
                && l.pids.is_none_or(|p| (1..=4_194_304).contains(&p))
                && port != 0;
            match validate(&s) {
                Ok(()) => prop_assert!(ok),
                Err(e) => {
                    prop_assert!(!ok, "{e:?}");
                    let known = ["name", "limits.memory", "limits.memory_high", "limits.cpus", "limits.cpu_weight", "limits.pids", "ports[0]"];
                    prop_assert!(known.contains(&e.field.as_str()), "{e:?}");
                }
            }
        }
    }
}
