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
    Transition(#[from] TransitionError),
    #[error("cannot prepare {path}")]
    Prepare {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} failed unexpectedly (a task panicked)")]
    Panicked(&'static str),
}

impl Error {
    /// The path that could not be written for lack of space.
    pub fn no_space_path(&self) -> Option<&std::path::Path> {
        if !self.is_no_space() {
            return None;
        }
        match self {
            Error::Store(crate::store::StoreError::Write(w)) => Some(&w.path),
            Error::Store(crate::store::StoreError::Io { path, .. }) => Some(path),
            Error::Prepare { path, .. } => Some(path),
            _ => None,
        }
    }

    /// True when the state filesystem is full (the create could not be stored).
    pub fn is_no_space(&self) -> bool {
        match self {
            Error::Store(e) => e.is_no_space(),
            Error::Prepare { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::ENOSPC) | Some(libc::EDQUOT)
                )
            }
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
