//! Lifecycle events: published on `/v1/events`, appended to the event
//! journal and shipped to the collector like log lines.

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Action {
    #[serde(rename = "create")]
    Create,
    #[serde(rename = "start")]
    Start,
    /// The process ended (with its exit code or signal).
    #[serde(rename = "die")]
    Die,
    #[serde(rename = "oom")]
    Oom,
    #[serde(rename = "stop")]
    Stop,
    #[serde(rename = "kill")]
    Kill,
    /// Started again by the restart policy.
    #[serde(rename = "restart")]
    Restart,
    #[serde(rename = "destroy")]
    Destroy,
    #[serde(rename = "health_status: unhealthy")]
    Unhealthy,
    /// Log records deleted by the size cap before they were shipped.
    #[serde(rename = "logs_dropped")]
    LogsDropped,
    /// The writable layer was emptied: the host went down before it was
    /// synced (reason `reboot`).
    #[serde(rename = "layer_reset")]
    LayerReset,
    /// An image was pulled (`image`, `digest`; `reason` when it failed).
    #[serde(rename = "pull")]
    Pull,
    /// An image's record was removed (`image`).
    #[serde(rename = "image_delete")]
    ImageDelete,
}

/// One event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Event {
    pub ts: String,
    /// Empty (and left out) for an image's events.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub container: String,
    /// `pull`, `image_delete`: the image reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `pull`: the digest it resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// `logs_dropped`: how many log records were dropped unsent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
    /// `logs_dropped`: why (`size_cap`, `disk_full`); `layer_reset`: `reboot`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Event {
    /// An event stamped now.
    pub fn now(container: &str, action: Action) -> Event {
        Event {
            ts: super::now(),
            container: container.to_string(),
            image: None,
            digest: None,
            action,
            exit_code: None,
            signal: None,
            dropped: None,
            reason: None,
        }
    }
}
