//! The API's errors: `{"error": {"code", "message", "field"}}` with an HTTP
//! status. The status and code of every failure are chosen here, at the
//! edge, from the modules' own error types.

use crate::cgroup::CgroupError;
use crate::image::ImageError;
use crate::model::SpecError;
use crate::network::ports::PortError;
use crate::network::NetworkError;
use crate::runtime::RuntimeError;
use crate::supervisor::{Error as SupError, StateFault};
use serde::{Deserialize, Serialize};

/// The JSON error body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// What went wrong, for programs: `invalid` (400), `registry_unauthorized`
    /// (401), `forbidden` (403), `not_found`, `image_not_found` (404),
    /// `conflict`, `exhausted` (409), `too_large` (413), `unprocessable`
    /// (422), `internal` (500), `registry_unreachable` (502), `read_only`,
    /// `state_gone` (503), `no_space` (507).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// The JSON path of the field or the parameter at fault, when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An answer other than success.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
    pub fn bad(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(400, "invalid", message).with_field(field)
    }
    pub fn unprocessable(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(422, "unprocessable", message).with_field(field)
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(404, "not_found", what)
    }
    pub fn forbidden(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::new(403, "forbidden", message).with_field(field)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(409, "conflict", message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(500, "internal", message)
    }
    pub fn too_large(limit: usize) -> Self {
        ApiError::new(
            413,
            "too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                field: self.field.clone(),
            },
        }
    }
}

/// The message with its sources, for a 500 (the operator needs the cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut m = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        m = format!("{m}: {s}");
        src = s.source();
    }
    m
}

impl From<SpecError> for ApiError {
    fn from(e: SpecError) -> ApiError {
        ApiError::bad(e.field, e.message)
    }
}

impl From<NetworkError> for ApiError {
    fn from(e: NetworkError) -> ApiError {
        match &e {
            NetworkError::AddressesExhausted { .. } => {
                ApiError::new(409, "exhausted", e.to_string())
            }
            NetworkError::Port(PortError::Exhausted { .. }) => {
                ApiError::new(409, "exhausted", e.to_string()).with_field("ports")
            }
            NetworkError::Port(_) => ApiError::conflict(e.to_string()).with_field("ports"),
            _ => ApiError::internal(chain(&e)),
        }
    }
}

fn from_runtime(e: RuntimeError) -> ApiError {
    match e {
        RuntimeError::Failed { field, message } if field != "runtime" && field != "limits" => {
            ApiError::unprocessable(field, message)
        }
        RuntimeError::Timeout { .. } => {
            ApiError::internal(e.to_string()).with_field("agent.start_timeout_s")
        }
        e => ApiError::internal(chain(&e)),
    }
}

fn from_cgroup(e: CgroupError) -> ApiError {
    match &e {
        CgroupError::Limit { .. } => ApiError::unprocessable("limits", chain(&e)),
        CgroupError::IoDevice(_) => ApiError::unprocessable("limits.io", e.to_string()),
        _ => ApiError::internal(chain(&e)),
    }
}

impl From<SupError> for ApiError {
    fn from(e: SupError) -> ApiError {
        if let Some((p, fault)) = e.state_fault() {
            let fs = crate::fsutil::mount_point_of(p)
                .map_or_else(|| "?".into(), |m| m.display().to_string());
            return match fault {
                StateFault::NoSpace => ApiError::new(
                    507,
                    "no_space",
                    format!(
                        "no space left on the filesystem mounted at {fs}: {}",
                        chain(&e)
                    ),
                ),
                StateFault::ReadOnly => ApiError::new(
                    503,
                    "read_only",
                    format!("the filesystem mounted at {fs} is read-only: {}", chain(&e)),
                ),
            };
        }
        let msg = e.to_string();
        match e {
            SupError::NotFound(_) => ApiError::not_found(msg),
            SupError::ImageNotFound(_) => ApiError::not_found(msg),
            SupError::ImageInUse { .. } => ApiError::conflict(msg).with_field("image"),
            SupError::Exists(_) | SupError::AlreadyRunning(_) => ApiError::conflict(msg),
            SupError::NotRunning(_) | SupError::Running(_) => ApiError::conflict(msg),
            SupError::Transition(_) => ApiError::conflict(msg),
            SupError::Spec(s) => s.into(),
            SupError::CapabilityNotAllowed { index, .. } => ApiError::new(403, "forbidden", msg)
                .with_field(format!("capabilities.add[{index}]")),
            SupError::UsernsExhausted => ApiError::new(409, "exhausted", msg).with_field("userns"),
            SupError::NetworkDisabled => ApiError::unprocessable("ports", msg),
            SupError::Disk(crate::disk::DiskError::Unsupported(_)) => {
                ApiError::unprocessable("limits.disk", msg)
            }
            SupError::Disk(crate::disk::DiskError::Exhausted(_)) => {
                ApiError::new(409, "exhausted", msg).with_field("limits.disk")
            }
            SupError::Store(crate::store::StoreError::Gone { .. }) => {
                ApiError::new(503, "state_gone", msg)
            }
            SupError::Image(ImageError::Store { .. }) => ApiError::internal(msg),
            SupError::Image(ImageError::Forbidden { .. }) => {
                ApiError::new(403, "forbidden", msg).with_field("image")
            }
            SupError::Image(ImageError::Unauthorized { .. }) => {
                ApiError::new(401, "registry_unauthorized", msg).with_field("image")
            }
            SupError::Image(ImageError::Unknown { .. }) => {
                ApiError::new(404, "image_not_found", msg).with_field("image")
            }
            SupError::Image(ImageError::Unreachable { .. }) => {
                ApiError::new(502, "registry_unreachable", msg).with_field("image")
            }
            SupError::Image(_) => ApiError::unprocessable("image", msg),
            SupError::Network(n) => n.into(),
            SupError::Cgroup(c) => from_cgroup(c),
            SupError::Runtime(r) => from_runtime(r),
            e => ApiError::internal(chain(&e)),
        }
    }
}
