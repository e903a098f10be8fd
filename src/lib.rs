//! hydra-agent: the per-host node agent of a multi-tenant cloud-code platform.
//!
//! The daemon (`src/bin/hydra-agent.rs`) and the ops CLI (`src/bin/hydractl.rs`)
//! are thin; everything lives here so tests can reach it. A request flows
//! `cli` -> `api::client` -> socket -> `api::server` -> `supervisor`, which
//! resolves the image (`image`), creates the cgroup (`cgroup`), persists the
//! record (`store`) and starts a per-container shim (`runtime::shim`) that
//! owns the container's pipes, logs (`telemetry::logs`) and exit status.

pub mod api;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod image;
pub mod network;
pub mod runtime;
pub mod store;
pub mod supervisor;
pub mod telemetry;
pub mod units;

/// The agent's version, as reported by `GET /v1/host`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
