//! The errors of reading an OCI layout, each naming what failed.

use crate::image::ImageError;
use oci_spec::OciSpecError;
use std::io;
use std::path::PathBuf;

/// What failed in an OCI layout, naming the file, blob, layer or entry.
/// Becomes an [`ImageError`] at this module's edge ([`OciError::image`]),
/// its sources rendered after it (`a: b: c`).
#[derive(Debug, thiserror::Error)]
pub(in crate::image) enum OciError {
    #[error("{} does not exist", path.display())]
    NoIndex { path: PathBuf },
    #[error("no manifest tagged {tag:?} in index.json")]
    NoTag { tag: String },
    #[error("index.json has several manifests; name one with :TAG")]
    NoDefault,
    #[error("{}", path.display())]
    Index { path: PathBuf, source: OciSpecError },
    #[error("nested index {digest}")]
    NestedIndex {
        digest: String,
        source: OciSpecError,
    },
    #[error("no linux/amd64 manifest in the nested index {digest}")]
    NoPlatform { digest: String },
    #[error("manifest {digest}")]
    Manifest {
        digest: String,
        source: OciSpecError,
    },
    #[error("config {digest}")]
    Config {
        digest: String,
        source: serde_json::Error,
    },
    #[error("the manifest has {layers} layers but the config lists {diff_ids} diff_ids")]
    LayerCount { layers: usize, diff_ids: usize },
    #[error("unsupported or malformed digest {digest:?} (sha256 only)")]
    Digest { digest: String },
    #[error("blob {}", path.display())]
    Blob { path: PathBuf, source: io::Error },
    #[error("blob {} is too large for metadata", path.display())]
    BlobTooLarge { path: PathBuf },
    #[error("blob {} has digest sha256:{got}, expected {expected}", path.display())]
    BlobDigest {
        path: PathBuf,
        got: String,
        expected: String,
    },
    #[error("layer {}", blob.display())]
    Layer { blob: PathBuf, source: io::Error },
    #[error("layer {} has digest sha256:{got}, expected {expected}", blob.display())]
    LayerDigest {
        blob: PathBuf,
        got: String,
        expected: String,
    },
    #[error("layer {digest} unpacks to sha256:{got}, but the config's diff_id is {diff_id}")]
    DiffId {
        digest: String,
        got: String,
        diff_id: String,
    },
    #[error("layer {} is truncated or corrupt", blob.display())]
    Corrupt { blob: PathBuf, source: io::Error },
    #[error("layer {} has an entry with an unreadable path", blob.display())]
    EntryPath { blob: PathBuf, source: io::Error },
    #[error("layer {} has an entry escaping the root: {}", blob.display(), entry.display())]
    Escape { blob: PathBuf, entry: PathBuf },
    #[error("layer {} has a whiteout outside the layer: {}", blob.display(), entry.display())]
    WhiteoutEscape { blob: PathBuf, entry: PathBuf },
    #[error("whiteout directory {}", dir.display())]
    WhiteoutDir { dir: PathBuf, source: io::Error },
    #[error("opaque whiteout {}", dir.display())]
    Opaque { dir: PathBuf, source: io::Error },
    #[error("whiteout {}", path.display())]
    WhiteoutNode {
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("layer {} entry {}", blob.display(), entry.display())]
    Unpack {
        blob: PathBuf,
        entry: PathBuf,
        source: io::Error,
    },
    #[error("the layer store {}", path.display())]
    Store { path: PathBuf, source: io::Error },
}

impl OciError {
    /// The module's public error: a missing index or tag is `NotFound`, the
    /// store failing `Store`, anything else `Invalid` with the whole chain.
    pub(in crate::image) fn image(self, reference: &str) -> ImageError {
        let reference = reference.to_string();
        match self {
            OciError::NoIndex { .. } | OciError::NoTag { .. } | OciError::NoDefault => {
                ImageError::NotFound {
                    reference,
                    message: self.to_string(),
                }
            }
            OciError::Store { path, source } => ImageError::Store {
                reference,
                path,
                source,
            },
            e => ImageError::Invalid {
                reference,
                message: chain(&e),
            },
        }
    }
}

/// An error with its sources, `a: b: c`.
pub(in crate::image) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}
