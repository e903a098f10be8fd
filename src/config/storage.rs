//! `[storage]`: how the containers' writable layers are bounded.

use super::ConfigError;
use super::IdRange;
use crate::model::spec::{MAX_INODES, MIN_DISK};
use crate::model::Size;
use serde::{Deserialize, Serialize};

/// How the writable layers are limited (see `crate::disk`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// The best the host has: `project_quota` where the state filesystem
    /// has project quotas on, else `image` where loop devices and mke2fs
    /// work, else `none`.
    #[default]
    Auto,
    /// Project quotas on the state filesystem (ext4 `prjquota`, XFS `pquota`).
    ProjectQuota,
    /// A sparse ext4 image per container, loop-mounted.
    Image,
    /// No limit can be enforced (the spec's `limits.disk` is refused unless
    /// `require_limits = false`).
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub mechanism: Mechanism,
    /// The writable layer of a spec without `limits.disk`.
    pub default_disk: Size,
    /// Inodes of a spec without `limits.inodes`.
    pub default_inodes: u64,
    /// true: with no mechanism, every create is refused naming
    /// `limits.disk` (an operator always knows whether tenants are bounded);
    /// false: containers run with unbounded layers.
    pub require_limits: bool,
    /// Images of the default size made ahead, off the creates' path.
    pub prepared_images: u32,
    /// Project ids the agent gives containers' layers (`project_quota`).
    pub project_ids: IdRange,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            mechanism: Mechanism::Auto,
            default_disk: Size(10 << 30),
            default_inodes: 1 << 20,
            require_limits: true,
            prepared_images: 2,
            project_ids: IdRange {
                start: 1_000_000,
                end: 1_999_999,
            },
        }
    }
}

impl StorageConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: String| {
            Err(ConfigError::Invalid {
                key: format!("storage.{key}"),
                message,
            })
        };
        if self.default_disk.0 < MIN_DISK || self.default_disk.0 > 1 << 50 {
            return bad("default_disk", "out of range: 8Mi to 1Pi".into());
        }
        if !(16..=MAX_INODES).contains(&self.default_inodes) {
            return bad(
                "default_inodes",
                format!("out of range: 16 to {MAX_INODES}"),
            );
        }
        if self.prepared_images > 16 {
            return bad("prepared_images", "at most 16".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ConfigError, StorageMechanism};

    fn key_of(text: &str) -> String {
        match Config::parse(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn storage_keys_parse_and_bad_values_are_named() {
        let c = Config::parse(
            "[storage]\nmechanism = \"project_quota\"\ndefault_disk = \"1Gi\"\nproject_ids = \"10-20\"\nrequire_limits = false\n",
        )
        .unwrap();
        assert_eq!(c.storage.mechanism, StorageMechanism::ProjectQuota);
        assert_eq!(c.storage.default_disk.0, 1 << 30);
        assert_eq!(
            (c.storage.project_ids.start, c.storage.project_ids.end),
            (10, 20)
        );
        assert!(!c.storage.require_limits);
        assert_eq!(
            Config::parse("").unwrap().storage.mechanism,
            StorageMechanism::Auto
        );
        for (text, key) in [
            ("[storage]\nmechanism = \"zfs\"\n", "storage.mechanism"),
            (
                "[storage]\ndefault_disk = \"1Mi\"\n",
                "storage.default_disk",
            ),
            ("[storage]\ndefault_inodes = 3\n", "storage.default_inodes"),
            (
                "[storage]\nproject_ids = \"20-10\"\n",
                "storage.project_ids",
            ),
            ("[storage]\nproject_ids = \"0-10\"\n", "storage.project_ids"),
            (
                "[storage]\nprepared_images = 17\n",
                "storage.prepared_images",
            ),
        ] {
            assert_eq!(key_of(text), key, "{text}");
        }
    }

    #[test]
    fn disk_limits_out_of_range_are_named() {
        let spec = |disk: Option<u64>, inodes: Option<u64>| crate::model::ContainerSpec {
            name: "d".into(),
            app: None,
            version: None,
            image: "rootfs:/x".into(),
            command: None,
            env: Default::default(),
            workdir: None,
            user: None,
            limits: crate::model::Limits {
                disk: disk.map(crate::model::Size),
                inodes,
                ..Default::default()
            },
            ports: vec![],
            restart: Default::default(),
            health: None,
            capabilities: Default::default(),
            userns: false,
        };
        assert!(crate::model::spec::validate(&spec(Some(8 << 20), Some(16))).is_ok());
        assert_eq!(
            crate::model::spec::validate(&spec(Some(1 << 20), None))
                .unwrap_err()
                .field,
            "limits.disk"
        );
        assert_eq!(
            crate::model::spec::validate(&spec(None, Some(15)))
                .unwrap_err()
                .field,
            "limits.inodes"
        );
        assert_eq!(
            crate::model::spec::validate(&spec(None, Some(1 << 33)))
                .unwrap_err()
                .field,
            "limits.inodes"
        );
    }
}
