//! The API's JSON bodies (what `hydractl`, the central API and tests read),
//! built from the supervisor's views. The request body of a create is the
//! model's [`crate::model::ContainerSpec`] itself.

use crate::model::{AppliedLimits, Cidr, Health, PortMapping};
use crate::network::Inventory;
use crate::supervisor::{ContainerView, Counts, ExitView};
use serde::{Deserialize, Serialize};

/// Container JSON, as inspect and list answer it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ContainerInfo {
    pub name: String,
    #[schema(required)]
    pub app: Option<String>,
    #[schema(required)]
    pub version: Option<String>,
    pub image: String,
    /// The digest the image reference resolved to when the container was
    /// created (registry and OCI-layout images; `null` for `rootfs:`).
    #[schema(required)]
    pub image_digest: Option<String>,
    /// `created`, `running` or `exited`.
    pub state: String,
    #[schema(required)]
    pub pid: Option<i32>,
    #[schema(required)]
    pub exit_code: Option<i32>,
    #[schema(required)]
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub created_at: String,
    #[schema(required)]
    pub started_at: Option<String>,
    #[schema(required)]
    pub finished_at: Option<String>,
    pub restart_count: u32,
    pub command: Vec<String>,
    pub limits: AppliedLimits,
    pub cgroup: String,
    #[schema(required)]
    pub ip: Option<String>,
    pub ports: Vec<PortMapping>,
    pub health: Health,
    #[schema(required)]
    pub selinux_label: Option<String>,
}

impl From<ContainerView> for ContainerInfo {
    fn from(v: ContainerView) -> ContainerInfo {
        let r = &v.record;
        let f = r.facts();
        let exit = r.exit();
        ContainerInfo {
            name: f.spec.name.clone(),
            app: f.spec.app.clone(),
            version: f.spec.version.clone(),
            image: f.spec.image.clone(),
            image_digest: f.image_digest.clone(),
            state: r.state().as_str().into(),
            pid: r.running().map(|x| x.init.pid),
            exit_code: exit.and_then(|e| e.exit_code),
            signal: exit.and_then(|e| e.signal),
            oom_killed: exit.is_some_and(|e| e.oom_killed),
            created_at: f.created_at.clone(),
            started_at: r.started_at().map(str::to_string),
            finished_at: exit.map(|e| e.finished_at.clone()),
            restart_count: r.restart_count(),
            command: f.process.argv.clone(),
            limits: f.limits.clone(),
            cgroup: v.cgroup,
            ip: f.net.ip.map(|ip| ip.to_string()),
            ports: f.net.ports.clone(),
            health: v.health,
            selinux_label: None,
        }
    }
}

/// Answer of `GET /v1/containers/{name}/wait`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ExitStatus {
    pub name: String,
    #[schema(required)]
    pub exit_code: Option<i32>,
    #[schema(required)]
    pub signal: Option<i32>,
    pub oom_killed: bool,
    #[schema(required)]
    pub finished_at: Option<String>,
}

impl From<ExitView> for ExitStatus {
    fn from(v: ExitView) -> ExitStatus {
        ExitStatus {
            name: v.name,
            exit_code: v.exit_code,
            signal: v.signal,
            oom_killed: v.oom_killed,
            finished_at: v.finished_at,
        }
    }
}

/// Answer of `GET /v1/host`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct HostInfo {
    pub hostname: String,
    pub agent_version: String,
    pub kernel: String,
    /// `v2` or `hybrid`.
    pub cgroup_mode: String,
    /// How containers' writable layers are limited: `image`, `none`.
    pub storage_limits: String,
    pub cpus: usize,
    pub memory_bytes: u64,
    pub containers: ContainerCounts,
    pub images: ImageUsage,
}

/// The images on the host and the disk their layers take.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ImageUsage {
    /// Pulled images (records).
    pub count: usize,
    /// Unpacked layers in the layer store (pulled and OCI-layout images).
    pub layers: usize,
    /// Bytes the layer store takes on disk.
    pub disk_bytes: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ContainerCounts {
    pub total: usize,
    pub running: usize,
    pub exited: usize,
    pub created: usize,
}

impl From<Counts> for ContainerCounts {
    fn from(c: Counts) -> ContainerCounts {
        ContainerCounts {
            total: c.total,
            running: c.running,
            exited: c.exited,
            created: c.created,
        }
    }
}

/// `GET /v1/ports`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PortsInfo {
    pub range: PortRange,
    pub free: usize,
    pub allocated: Vec<AllocatedPort>,
    pub taken_by_others: Vec<TakenPort>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AllocatedPort {
    pub host_port: u16,
    pub container_port: u16,
    pub container: String,
    pub ip: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct TakenPort {
    pub port: u16,
    #[schema(required)]
    pub pid: Option<i32>,
    #[schema(required)]
    pub process: Option<String>,
}

impl From<Inventory> for PortsInfo {
    fn from(i: Inventory) -> PortsInfo {
        PortsInfo {
            range: PortRange {
                start: i.range.start,
                end: i.range.end,
            },
            free: i.free,
            allocated: i
                .allocated
                .into_iter()
                .map(|(container, m)| AllocatedPort {
                    host_port: m.host_port,
                    container_port: m.container_port,
                    container,
                    ip: m.ip.to_string(),
                })
                .collect(),
            taken_by_others: i
                .taken_by_others
                .into_iter()
                .map(|t| TakenPort {
                    port: t.port,
                    pid: t.pid,
                    process: t.process,
                })
                .collect(),
        }
    }
}

/// `GET/PUT /v1/firewall/allowlist`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Allowlist {
    pub cidrs: Vec<Cidr>,
}

/// `PATCH /v1/firewall/allowlist`: one server-side change (what `hydractl
/// firewall allow/deny` sends), so two operators never race a read-edit-write.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowlistEdit {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<Cidr>,
}

/// An image on this host (`GET /v1/images`, the last line of a pull).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ImageInfo {
    pub reference: String,
    /// What the reference resolved to when it was pulled.
    pub digest: String,
    /// The platform manifest's digest (differs from `digest` for a
    /// multi-platform image).
    pub manifest_digest: String,
    /// The layers' compressed size (what a pull downloads).
    pub size: u64,
    /// Bytes its layers take in the layer store, unpacked.
    pub disk_bytes: u64,
    pub layers: Vec<String>,
    #[schema(required)]
    pub created: Option<String>,
    pub pulled_at: String,
    /// Containers created from it.
    pub used_by: Vec<String>,
}

impl From<crate::supervisor::images::ImageView> for ImageInfo {
    fn from(v: crate::supervisor::images::ImageView) -> ImageInfo {
        let r = v.record;
        ImageInfo {
            reference: r.reference,
            digest: r.digest,
            manifest_digest: r.manifest_digest,
            size: r.size,
            disk_bytes: v.disk_bytes,
            layers: r.layers,
            created: r.created,
            pulled_at: r.pulled_at,
            used_by: v.used_by,
        }
    }
}

/// What `POST /v1/images/prune` freed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PruneReport {
    pub layers_removed: usize,
    pub bytes_freed: u64,
}

/// The body of `POST /v1/images/pull`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    pub image: String,
}
