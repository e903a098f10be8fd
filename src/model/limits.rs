//! Limits as the kernel holds them (read back after they are written).

use serde::{Deserialize, Serialize};

/// Limits read back from the kernel, in bytes and absolute units. `None` is unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AppliedLimits {
    pub memory: Option<u64>,
    pub memory_high: Option<u64>,
    pub memory_swap: Option<u64>,
    pub cpus: Option<f64>,
    pub cpu_quota_us: Option<u64>,
    pub cpu_period_us: Option<u64>,
    pub cpu_weight: Option<u64>,
    pub cpu_shares: Option<u64>,
    pub pids: Option<u64>,
    pub io: Vec<IoApplied>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct IoApplied {
    pub device: String,
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
}
