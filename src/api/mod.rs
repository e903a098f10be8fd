//! The HTTP/1.1 + JSON API: one request set ([`request::Request`]) and one
//! handler ([`service::Handler`]) for every front end (the Unix socket, the
//! metrics listener, a TCP listener, `hydractl`'s client), the JSON bodies
//! ([`wire`]) and the errors with their statuses, chosen here from the
//! modules' own error types ([`error`]).

pub mod auth;
pub mod client;
pub mod error;
pub mod openapi;
pub mod request;
pub mod routes;
pub mod server;
pub mod service;
mod stall;
pub mod tcp;
pub mod tls;
pub mod wire;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use request::{parse_signal, parse_spec, Request};
pub use service::{Handler, Response, Service};
pub use wire::{
    AllocatedPort, Allowlist, AllowlistEdit, ContainerCounts, ContainerInfo, ExitStatus, HostInfo,
    ImageInfo, PortsInfo, PruneReport, PullRequest, TakenPort,
};

/// Largest request body accepted; bigger ones get 413.
pub const MAX_BODY: usize = 1 << 20;
