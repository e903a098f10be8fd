//! What a lifecycle operation can fail with. The API edge turns each into a
//! status and an error code ([`crate::api`]); nothing here knows HTTP.

use crate::cgroup::CgroupError;
use crate::image::ImageError;
use crate::model::{SpecError, TransitionError};
use crate::network::NetworkError;
use crate::runtime::RuntimeError;
use crate::store::StoreError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no container named {0:?}")]
    NotFound(String),
    #[error("a container named {0:?} already exists")]
    Exists(String),
    #[error("container {0:?} is already running")]
    AlreadyRunning(String),
    #[error("container {0:?} is not running")]
    NotRunning(String),
    #[error("container {0:?} is running; stop it or use force=true")]
    Running(String),
    #[error("container {0:?} did not exit after SIGKILL")]
    DidNotExit(String),
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// `capabilities.add[index]` beyond `security.allowed_capabilities`.
    #[error("{cap} is not allowed on this host (security.allowed_capabilities)")]
    CapabilityNotAllowed { index: usize, cap: String },
    #[error("no free user namespace id range left (security.userns_ranges)")]
    UsernsExhausted,
    #[error("host networking is disabled on this agent (network.enabled = false)")]
    NetworkDisabled,
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("cannot prepare {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no image {0:?} on this host")]
    ImageNotFound(String),
    #[error("image {reference:?} is used by containers {containers:?}")]
    ImageInUse {
        reference: String,
        containers: Vec<String>,
    },
    #[error("{0} failed unexpectedly (a task panicked)")]
    Panicked(&'static str),
}

/// Why the state filesystem refused a write the operation needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFault {
    /// Full (ENOSPC) or over quota (EDQUOT).
    NoSpace,
    /// Mounted read-only (EROFS).
    ReadOnly,
}

impl Error {
    /// The path the state filesystem refused to write, and why; None for
    /// every other failure.
    pub fn state_fault(&self) -> Option<(&std::path::Path, StateFault)> {
        let (path, source) = match self {
            Error::Store(crate::store::StoreError::Write(w)) => (&w.path, &w.source),
            Error::Store(crate::store::StoreError::Io { path, source, .. }) => (path, source),
            Error::Prepare { path, source } => (path, source),
            Error::Disk(crate::disk::DiskError::Io { path, source, .. }) => (path, source),
            _ => return None,
        };
        let fault = match source.raw_os_error()? {
            libc::ENOSPC | libc::EDQUOT => StateFault::NoSpace,
            libc::EROFS => StateFault::ReadOnly,
            _ => return None,
        };
        Some((path.as_path(), fault))
    }
}

pub type Result<T> = std::result::Result<T, Error>;
