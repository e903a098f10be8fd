//! OCI image layouts: index -> manifest -> config and layers. Every blob's
//! digest is checked; each layer is unpacked into `<store>/sha256/<hex>` via
//! a temp dir and a rename, so a half-unpacked layer is never used, and its
//! uncompressed digest is checked against the config's diff_ids.

use super::{unpack, Image, ImageDefaults, ImageError};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

pub(super) mod error;
#[cfg(test)]
mod tests;

use error::OciError;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub(super) fn resolve(
    reference: &str,
    dir: &Path,
    tag: Option<&str>,
    store: &Path,
) -> Result<Image, ImageError> {
    resolve_layout(dir, tag, store).map_err(|e| e.image(reference))
}

fn resolve_layout(dir: &Path, tag: Option<&str>, store: &Path) -> Result<Image, OciError> {
    let desc = manifest_descriptor(dir, tag)?;
    let manifest = ImageManifest::from_reader(&read_blob(dir, &desc)?[..]).map_err(|source| {
        OciError::Manifest {
            digest: desc.digest().to_string(),
            source,
        }
    })?;
    let config =
        parse_config(&read_blob(dir, manifest.config())?).map_err(|source| OciError::Config {
            digest: manifest.config().digest().to_string(),
            source,
        })?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(OciError::LayerCount {
            layers: manifest.layers().len(),
            diff_ids: diff_ids.len(),
        });
    }
    let mut layers = Vec::new();
    for (l, diff_id) in manifest.layers().iter().zip(diff_ids) {
        layers.push(unpack_layer(dir, l, diff_id, store)?);
    }
    layers.reverse();
    Ok(Image {
        layers,
        defaults: defaults(&config),
        digest: Some(desc.digest().to_string()),
    })
}

/// The manifest `tag` names in index.json (the only one, or `latest`, without
/// a tag); through a nested (multi-platform) index, its linux/amd64 entry.
fn manifest_descriptor(dir: &Path, tag: Option<&str>) -> Result<Descriptor, OciError> {
    let index_path = dir.join("index.json");
    if !index_path.exists() {
        return Err(OciError::NoIndex { path: index_path });
    }
    let index = ImageIndex::from_file(&index_path).map_err(|source| OciError::Index {
        path: index_path.clone(),
        source,
    })?;
    let desc = pick(index.manifests(), tag).ok_or_else(|| match tag {
        Some(t) => OciError::NoTag { tag: t.into() },
        None => OciError::NoDefault,
    })?;
    // A nested index (multi-platform): take the linux/amd64 entry.
    if !desc.media_type().to_string().contains("index") {
        return Ok(desc.clone());
    }
    let nested = ImageIndex::from_reader(&read_blob(dir, desc)?[..]).map_err(|source| {
        OciError::NestedIndex {
            digest: desc.digest().to_string(),
            source,
        }
    })?;
    nested
        .manifests()
        .iter()
        .find(|m| {
            m.platform().as_ref().is_none_or(|p| {
                p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
            })
        })
        .cloned()
        .ok_or_else(|| OciError::NoPlatform {
            digest: desc.digest().to_string(),
        })
}

/// What the image config sets that a spec may override.
pub(super) fn defaults(config: &ImageConfiguration) -> ImageDefaults {
    let mut defaults = ImageDefaults::default();
    if let Some(c) = config.config() {
        defaults.entrypoint = c.entrypoint().clone().unwrap_or_default();
        defaults.cmd = c.cmd().clone().unwrap_or_default();
        defaults.env = c.env().clone().unwrap_or_default();
        defaults.workdir = c.working_dir().clone().filter(|w| !w.is_empty());
        defaults.user = c.user().clone().filter(|u| !u.is_empty());
    }
    defaults
}

/// oci-spec 0.7 requires `history`, which the image spec makes optional.
pub(super) fn parse_config(data: &[u8]) -> Result<ImageConfiguration, serde_json::Error> {
    let mut v: serde_json::Value = serde_json::from_slice(data)?;
    if let Some(o) = v.as_object_mut() {
        o.entry("history").or_insert_with(|| serde_json::json!([]));
    }
    serde_json::from_value(v)
}

fn pick<'a>(manifests: &'a [Descriptor], tag: Option<&str>) -> Option<&'a Descriptor> {
    let name = |d: &Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
    };
    match tag {
        Some(t) => manifests.iter().find(|d| name(d).as_deref() == Some(t)),
        None if manifests.len() == 1 => manifests.first(),
        None => manifests
            .iter()
            .find(|d| name(d).as_deref() == Some("latest")),
    }
}

/// The hex of a descriptor's digest; only sha256 is accepted.
fn digest_parts(d: &Descriptor) -> Result<String, OciError> {
    let s = d.digest().to_string();
    match s.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(hex.to_string())
        }
        _ => Err(OciError::Digest { digest: s }),
    }
}

fn blob_path(dir: &Path, d: &Descriptor) -> Result<PathBuf, OciError> {
    Ok(dir.join("blobs/sha256").join(digest_parts(d)?))
}

/// Reads a small blob (index, manifest, config) and checks its digest.
fn read_blob(dir: &Path, d: &Descriptor) -> Result<Vec<u8>, OciError> {
    let p = blob_path(dir, d)?;
    let data = fs::read(&p).map_err(|source| OciError::Blob {
        path: p.clone(),
        source,
    })?;
    if data.len() > 16 << 20 {
        return Err(OciError::BlobTooLarge { path: p });
    }
    let got = hex::encode(Sha256::digest(&data));
    if got != digest_parts(d)? {
        return Err(OciError::BlobDigest {
            path: p,
            got,
            expected: d.digest().to_string(),
        });
    }
    Ok(data)
}

/// The layer `d` in the store (`<store>/sha256/<hex>`), unpacked now unless
/// it already was.
fn unpack_layer(
    dir: &Path,
    d: &Descriptor,
    diff_id: &str,
    store: &Path,
) -> Result<PathBuf, OciError> {
    let hex = digest_parts(d)?;
    let dest = store.join("sha256").join(&hex);
    if dest.is_dir() {
        return Ok(dest);
    }
    let blob = blob_path(dir, d)?;
    // 1. the compressed blob must match its digest
    check_layer_digest(&blob, &hex, d)?;
    // 2. unpack into a temp dir, checking the uncompressed digest, then rename
    let store_err = |source| OciError::Store {
        path: store.to_path_buf(),
        source,
    };
    fs::create_dir_all(store.join("sha256")).map_err(store_err)?;
    let tmp = store.join("sha256").join(format!(
        ".{hex}.tmp-{}-{}",
        std::process::id(),
        unpack::unique()
    ));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(store_err)?;
    let res = File::open(&blob)
        .map_err(|source| OciError::Layer {
            blob: blob.clone(),
            source,
        })
        // a layout on the host is the operator's: no cap on what it unpacks to
        .and_then(|f| unpack::extract(BufReader::new(f), &blob, &tmp, u64::MAX))
        .and_then(|uncompressed| {
            if format!("sha256:{uncompressed}") != diff_id {
                Err(OciError::DiffId {
                    digest: d.digest().to_string(),
                    got: uncompressed,
                    diff_id: diff_id.into(),
                })
            } else {
                Ok(())
            }
        });
    if let Err(e) = res {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, &dest) {
        Ok(()) => Ok(dest),
        // Another create unpacked it first: use theirs.
        Err(_) if dest.is_dir() => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(dest)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&tmp);
            Err(store_err(e))
        }
    }
}

/// The compressed layer blob must hash to its descriptor's digest (`hex`).
fn check_layer_digest(blob: &Path, hex: &str, d: &Descriptor) -> Result<(), OciError> {
    let err = |source| OciError::Layer {
        blob: blob.to_path_buf(),
        source,
    };
    let mut f = File::open(blob).map_err(err)?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(err)?;
    let got = hex::encode(h.finalize());
    if got != hex {
        return Err(OciError::LayerDigest {
            blob: blob.to_path_buf(),
            got,
            expected: d.digest().to_string(),
        });
    }
    Ok(())
}
