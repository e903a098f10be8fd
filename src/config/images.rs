//! `[[registry]]` (one table per registry the agent may pull from) and
//! `[images]` (the pull policy and limits).

use super::{invalid, ConfigError};
use crate::model::Size;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A registry the agent may pull from, and how it proves who it is.
/// Credentials are read from their files at each pull (a rotated password
/// needs no restart) and are never logged or returned by the API.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `host[:port]` as written in image references, e.g. `127.0.0.1:5000`.
    pub host: String,
    /// PEM file of the CA(s) the registry's certificate must chain to; when
    /// set, only these are trusted for this registry (not the system's).
    pub ca: Option<PathBuf>,
    /// Basic auth (also used to get a bearer token when the registry asks).
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A bearer token sent as is (instead of a username and password).
    pub token_file: Option<PathBuf>,
    /// Plain HTTP; only when written explicitly.
    pub insecure: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// false: a reference to a registry without a `[[registry]]` entry is refused.
    pub allow_unlisted: bool,
    /// Layers of one pull downloaded at once.
    pub max_parallel_layers: usize,
    /// An image whose layers (compressed, as the manifest lists them) add
    /// up to more is refused before anything is downloaded.
    pub max_image_size: Size,
    /// Bytes one layer may unpack to (its tar stream); a layer that
    /// expands past it (a decompression bomb) is refused.
    pub max_layer_unpacked: Size,
    /// Seconds without a byte from the registry before a pull fails.
    pub timeout_s: u64,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig {
            allow_unlisted: false,
            max_parallel_layers: 3,
            max_image_size: Size(8 << 30),
            max_layer_unpacked: Size(16 << 30),
            timeout_s: 30,
        }
    }
}

/// Checks the registries and the pull policy; the error names the key.
pub(super) fn validate(regs: &[RegistryConfig], images: &ImagesConfig) -> Result<(), ConfigError> {
    for (i, r) in regs.iter().enumerate() {
        let key = |k: &str| format!("registry[{i}].{k}");
        if r.host.is_empty() || r.host.contains('/') || r.host.contains(char::is_whitespace) {
            return invalid(&key("host"), format!("{:?} is not host[:port]", r.host));
        }
        if regs[..i].iter().any(|o| o.host == r.host) {
            return invalid(&key("host"), format!("{:?} is listed twice", r.host));
        }
        if r.username.is_some() != r.password_file.is_some() {
            return invalid(
                &key("password_file"),
                "username and password_file go together",
            );
        }
        if r.username.is_some() && r.token_file.is_some() {
            return invalid(
                &key("token_file"),
                "either username + password_file or token_file",
            );
        }
        if r.insecure && r.ca.is_some() {
            return invalid(
                &key("insecure"),
                "a plain-HTTP registry has no CA (ca is set)",
            );
        }
        for (k, p) in [
            ("ca", &r.ca),
            ("password_file", &r.password_file),
            ("token_file", &r.token_file),
        ] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    return invalid(&key(k), format!("{} must be an absolute path", p.display()));
                }
            }
        }
    }
    if !(1..=32).contains(&images.max_parallel_layers) {
        return invalid("images.max_parallel_layers", "must be 1 to 32");
    }
    if images.timeout_s == 0 {
        return invalid("images.timeout_s", "must be at least 1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(host: &str) -> RegistryConfig {
        RegistryConfig {
            host: host.into(),
            ..Default::default()
        }
    }

    #[test]
    fn each_mistake_names_its_key() {
        let ok = ImagesConfig::default();
        let err = |regs: &[RegistryConfig], im: &ImagesConfig| {
            validate(regs, im).unwrap_err().to_string()
        };
        assert!(validate(&[reg("127.0.0.1:5000")], &ok).is_ok());
        assert!(err(&[reg("a/b")], &ok).contains("registry[0].host"));
        assert!(err(&[reg("a"), reg("a")], &ok).contains("registry[1].host"));
        let half = RegistryConfig {
            username: Some("u".into()),
            ..reg("a")
        };
        assert!(err(&[half], &ok).contains("registry[0].password_file"));
        let both = RegistryConfig {
            username: Some("u".into()),
            password_file: Some("/p".into()),
            token_file: Some("/t".into()),
            ..reg("a")
        };
        assert!(err(&[both], &ok).contains("registry[0].token_file"));
        let rel = RegistryConfig {
            ca: Some("ca.pem".into()),
            ..reg("a")
        };
        assert!(err(&[rel], &ok).contains("registry[0].ca"));
        let par = ImagesConfig {
            max_parallel_layers: 0,
            ..ok.clone()
        };
        assert!(err(&[], &par).contains("images.max_parallel_layers"));
    }
}
