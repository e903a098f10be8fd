//! Images: `rootfs:DIR` (a directory used read-only as the only layer) and
//! `oci-layout:DIR[:TAG]` (an OCI image layout whose layers are unpacked once
//! into a content-addressed store, digests verified, and stacked by overlayfs).

mod oci;
pub mod records;
pub mod registry;
mod targuard;
mod unpack;

pub use records::ImageRecord;
pub use registry::{Progress, ProgressTx, Puller};

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {reference:?}: {message}")]
    Invalid { reference: String, message: String },
    #[error("image {reference:?}: {message}")]
    NotFound { reference: String, message: String },
    /// The registry is not one the agent may pull from.
    #[error("image {reference:?}: {message}")]
    Forbidden { reference: String, message: String },
    /// The registry has no such repository, tag or blob.
    #[error("image {reference:?}: {message}")]
    Unknown { reference: String, message: String },
    /// The registry refused the agent's credentials.
    #[error("image {reference:?}: {message}")]
    Unauthorized { reference: String, message: String },
    /// The registry could not be reached or stopped answering.
    #[error("image {reference:?}: {message}")]
    Unreachable { reference: String, message: String },
    #[error("image {reference:?}: cannot unpack into the layer store {path}: {source}")]
    Store {
        reference: String,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Defaults from the image config that a spec may override (also kept in
/// a pulled image's record).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// Layer directories, top first.
    pub layers: Vec<PathBuf>,
    pub defaults: ImageDefaults,
    /// The manifest's digest, `sha256:HEX` (none for `rootfs:`).
    pub digest: Option<String>,
}

/// Parsed image reference.
#[derive(Debug, Clone, PartialEq)]
pub enum Reference {
    Rootfs(PathBuf),
    OciLayout { dir: PathBuf, tag: Option<String> },
    Registry(String),
}

pub fn parse_reference(r: &str) -> Result<Reference, ImageError> {
    let invalid = |m: &str| ImageError::Invalid {
        reference: r.into(),
        message: m.into(),
    };
    if let Some(dir) = r.strip_prefix("rootfs:") {
        if !dir.starts_with('/') {
            return Err(invalid("rootfs: needs an absolute directory path"));
        }
        return Ok(Reference::Rootfs(dir.into()));
    }
    if let Some(rest) = r.strip_prefix("oci-layout:") {
        if !rest.starts_with('/') {
            return Err(invalid("oci-layout: needs an absolute directory path"));
        }
        // A trailing `:tag` is a tag only when it has no '/', so paths with ':' still work.
        return Ok(match rest.rsplit_once(':') {
            Some((dir, tag)) if !tag.contains('/') && !tag.is_empty() => Reference::OciLayout {
                dir: dir.into(),
                tag: Some(tag.into()),
            },
            _ => Reference::OciLayout {
                dir: rest.into(),
                tag: None,
            },
        });
    }
    if r.contains('/') && !r.starts_with('/') {
        return Ok(Reference::Registry(r.into()));
    }
    Err(invalid(
        "use rootfs:/DIR, oci-layout:/DIR[:TAG] or a registry reference host/repo:tag",
    ))
}

/// Resolves a reference to layers on disk, unpacking into `layer_store` once.
pub fn resolve(reference: &str, layer_store: &Path) -> Result<Image, ImageError> {
    match parse_reference(reference)? {
        Reference::Rootfs(dir) => {
            if !dir.is_dir() {
                return Err(ImageError::NotFound {
                    reference: reference.into(),
                    message: format!("{} is not a directory", dir.display()),
                });
            }
            Ok(Image {
                layers: vec![dir],
                defaults: ImageDefaults::default(),
                digest: None,
            })
        }
        Reference::OciLayout { dir, tag } => {
            oci::resolve(reference, &dir, tag.as_deref(), layer_store)
        }
        Reference::Registry(_) => Err(ImageError::Invalid {
            reference: reference.into(),
            message: "a registry image is pulled before it is resolved (Puller::get_or_pull)"
                .into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            parse_reference("rootfs:/srv/r").unwrap(),
            Reference::Rootfs("/srv/r".into())
        );
        assert_eq!(
            parse_reference("oci-layout:/img:v1").unwrap(),
            Reference::OciLayout {
                dir: "/img".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            parse_reference("oci-layout:/img").unwrap(),
            Reference::OciLayout {
                dir: "/img".into(),
                tag: None
            }
        );
        assert!(matches!(
            parse_reference("reg:5000/a:b").unwrap(),
            Reference::Registry(_)
        ));
        assert!(parse_reference("rootfs:rel").is_err());
        assert!(parse_reference("nothing").is_err());
    }
}
