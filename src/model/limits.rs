//! Limits as the kernel holds them (read back after they are written).

use serde::{Deserialize, Serialize};

/// Limits read back from the kernel, in bytes and absolute units. `None` is unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct AppliedLimits {
    #[schema(required)]
    pub memory: Option<u64>,
    #[schema(required)]
    pub memory_high: Option<u64>,
    #[schema(required)]
    pub memory_swap: Option<u64>,
    #[schema(required)]
    pub cpus: Option<f64>,
    #[schema(required)]
    pub cpu_quota_us: Option<u64>,
    #[schema(required)]
    pub cpu_period_us: Option<u64>,
    #[schema(required)]
    pub cpu_weight: Option<u64>,
    #[schema(required)]
    pub cpu_shares: Option<u64>,
    #[schema(required)]
    pub pids: Option<u64>,
    pub io: Vec<IoApplied>,
    /// The writable layer's limits and how they are enforced; None: not
    /// limited (`[storage]` allowed it), or a record from before limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskApplied>,
}

/// A writable layer's use against its limits (`/stats` `disk`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DiskStats {
    pub used: u64,
    pub limit: u64,
    pub inodes_used: u64,
    pub inodes_limit: u64,
}

/// A writable layer's limits as enforced.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct DiskApplied {
    pub bytes: u64,
    pub inodes: u64,
    /// `image` (a loop-mounted ext4 of its own) or `project_quota`.
    pub mechanism: String,
    /// The layer's project id (`project_quota`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct IoApplied {
    pub device: String,
    #[schema(required)]
    pub read_bps: Option<u64>,
    #[schema(required)]
    pub write_bps: Option<u64>,
}
