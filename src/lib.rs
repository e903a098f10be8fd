//! hydra-agent: the per-host node agent of a multi-tenant cloud-code platform.
//!
//! The daemon (`src/bin/hydra-agent.rs`) and the ops CLI (`src/bin/hydractl.rs`)
//! are thin; everything lives here so tests can reach it. The modules are
//! layers, each importing only from layers below it (checked by
//! `tests/structure.rs`; see the README's architecture section):
//!
//! 1. `model`, `sys`, `fsutil`: the domain (specs, the record and its state
//!    machine, limits, allocations, events), the raw syscalls, atomic files;
//! 2. `config`: the typed configuration;
//! 3. adapters: `store`, `cgroup`, `image`, `disk`, then `network`, `telemetry`,
//!    then `runtime`; each behind a small trait where it touches the host;
//! 4. `supervisor`: the lifecycle service, driving the adapters' traits;
//! 5. `api`: one request set and handler for every front end, the servers,
//!    the client; then `cli` and `daemon`.

pub mod api;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod disk;
pub mod fsutil;
pub mod image;
pub mod model;
pub mod network;
pub mod runtime;
pub mod store;
pub mod supervisor;
pub mod sys;
pub mod telemetry;

/// The agent's version, as reported by `GET /v1/host`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
