//! What leaves the containers: their output (the per-container log files,
//! written by the shim, read by the API) and their stats (the sampler,
//! `/metrics`).

pub mod cursor;
pub mod logs;
pub mod metrics;
pub mod relp;
pub mod remote_write;
pub mod sampler;
pub mod series;
pub mod ship;
pub mod syslog;
pub mod tls;
