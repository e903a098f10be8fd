//! The domain model: validated specs, the container record and its state
//! machine, limits, allocations, events, names and sizes. The bottom layer:
//! it imports nothing of the crate, and everything else may import it.

pub mod caps;
pub mod cidr;
pub mod event;
pub mod health;
pub mod limits;
pub mod record;
pub mod spec;
pub mod units;

pub use cidr::Cidr;
pub use event::{Action, Event};
pub use health::{Health, HealthStatus};
pub use limits::{AppliedLimits, DiskApplied, DiskStats, IoApplied};
pub use record::{
    Allocation, Exit, Facts, PortMapping, ProcRef, ProcessConfig, Record, Run, RunState, State,
    TransitionError,
};
pub use spec::{
    CapabilitiesSpec, ContainerSpec, HealthSpec, IoLimits, Limits, PortSpec, RestartPolicy,
    RestartSpec, SpecError,
};
pub use units::{Size, ValueError};

/// Ids per user namespace: container ids 0..65536 map to one host range.
pub const USERNS_SIZE: u32 = 65536;

/// Now, as the agent writes times: RFC 3339, UTC, microseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
