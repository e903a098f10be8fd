//! OCI image layouts: index -> manifest -> config and layers. Every blob's
//! digest is checked; each layer is unpacked into `<store>/sha256/<hex>` via
//! a temp dir and a rename, so a half-unpacked layer is never used, and its
//! uncompressed digest is checked against the config's diff_ids.

use super::{Image, ImageDefaults, ImageError};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Component, Path, PathBuf};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub(super) fn resolve(
    reference: &str,
    dir: &Path,
    tag: Option<&str>,
    store: &Path,
) -> Result<Image, ImageError> {
    let bad = |m: String| ImageError::Invalid {
        reference: reference.into(),
        message: m,
    };
    let index_path = dir.join("index.json");
    if !index_path.exists() {
        return Err(ImageError::NotFound {
            reference: reference.into(),
            message: format!("{} does not exist", index_path.display()),
        });
    }
    let index = ImageIndex::from_file(&index_path).map_err(|e| bad(format!("index.json: {e}")))?;
    let desc = pick(index.manifests(), tag).ok_or_else(|| ImageError::NotFound {
        reference: reference.into(),
        message: match tag {
            Some(t) => format!("no manifest tagged {t:?} in index.json"),
            None => "index.json has several manifests; name one with :TAG".into(),
        },
    })?;
    let mut desc = desc.clone();
    // A nested index (multi-platform): take the linux/amd64 entry.
    if desc.media_type().to_string().contains("index") {
        let nested = ImageIndex::from_reader(&read_blob(dir, &desc).map_err(bad)?[..])
            .map_err(|e| bad(format!("nested index: {e}")))?;
        desc = nested
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_none_or(|p| {
                    p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
                })
            })
            .cloned()
            .ok_or_else(|| bad("no linux/amd64 manifest in the nested index".into()))?;
    }
    let manifest = ImageManifest::from_reader(&read_blob(dir, &desc).map_err(bad)?[..])
        .map_err(|e| bad(format!("manifest: {e}")))?;
    let config = parse_config(&read_blob(dir, manifest.config()).map_err(bad)?)
        .map_err(|e| bad(format!("config: {e}")))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(bad(format!(
            "the manifest has {} layers but the config lists {} diff_ids",
            manifest.layers().len(),
            diff_ids.len()
        )));
    }
    let mut layers = Vec::new();
    for (l, diff_id) in manifest.layers().iter().zip(diff_ids) {
        layers.push(unpack_layer(reference, dir, l, diff_id, store)?);
    }
    layers.reverse();
    let mut defaults = ImageDefaults::default();
    if let Some(c) = config.config() {
        defaults.entrypoint = c.entrypoint().clone().unwrap_or_default();
        defaults.cmd = c.cmd().clone().unwrap_or_default();
        defaults.env = c.env().clone().unwrap_or_default();
        defaults.workdir = c.working_dir().clone().filter(|w| !w.is_empty());
        defaults.user = c.user().clone().filter(|u| !u.is_empty());
    }
    Ok(Image { layers, defaults })
}

/// oci-spec 0.7 requires `history`, which the image spec makes optional.
fn parse_config(data: &[u8]) -> Result<ImageConfiguration, String> {
    let mut v: serde_json::Value = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    if let Some(o) = v.as_object_mut() {
        o.entry("history").or_insert_with(|| serde_json::json!([]));
    }
    serde_json::from_value(v).map_err(|e| e.to_string())
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

/// `(algorithm, hex)` of a descriptor; only sha256 is accepted.
fn digest_parts(d: &Descriptor) -> Result<String, String> {
    let s = d.digest().to_string();
    match s.split_once(':') {
        Some(("sha256", hex)) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(hex.to_string())
        }
        _ => Err(format!(
            "unsupported or malformed digest {s:?} (sha256 only)"
        )),
    }
}

fn blob_path(dir: &Path, d: &Descriptor) -> Result<PathBuf, String> {
    Ok(dir.join("blobs/sha256").join(digest_parts(d)?))
}

/// Reads a small blob (index, manifest, config) and checks its digest.
fn read_blob(dir: &Path, d: &Descriptor) -> Result<Vec<u8>, String> {
    let p = blob_path(dir, d)?;
    let data = fs::read(&p).map_err(|e| format!("blob {}: {e}", p.display()))?;
    if data.len() > 16 << 20 {
        return Err(format!("blob {} is too large for metadata", p.display()));
    }
    let got = hex::encode(Sha256::digest(&data));
    if got != digest_parts(d)? {
        return Err(format!(
            "blob {} has digest sha256:{got}, expected {}",
            p.display(),
            d.digest()
        ));
    }
    Ok(data)
}

struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

fn unpack_layer(
    reference: &str,
    dir: &Path,
    d: &Descriptor,
    diff_id: &str,
    store: &Path,
) -> Result<PathBuf, ImageError> {
    let bad = |m: String| ImageError::Invalid {
        reference: reference.into(),
        message: m,
    };
    let hex = digest_parts(d).map_err(bad)?;
    let dest = store.join("sha256").join(&hex);
    if dest.is_dir() {
        return Ok(dest);
    }
    let blob = blob_path(dir, d).map_err(bad)?;
    // 1. the compressed blob must match its digest
    let mut f = File::open(&blob).map_err(|e| bad(format!("layer {}: {e}", blob.display())))?;
    let mut h = Sha256::new();
    io::copy(&mut f, &mut h).map_err(|e| bad(format!("layer {}: {e}", blob.display())))?;
    let got = hex::encode(h.finalize());
    if got != hex {
        return Err(bad(format!(
            "layer {} has digest sha256:{got}, expected {}",
            blob.display(),
            d.digest()
        )));
    }
    // 2. unpack into a temp dir, checking the uncompressed digest, then rename
    let store_err = |source| ImageError::Store {
        reference: reference.into(),
        path: store.to_path_buf(),
        source,
    };
    fs::create_dir_all(store.join("sha256")).map_err(store_err)?;
    let tmp = store
        .join("sha256")
        .join(format!(".{hex}.tmp-{}-{}", std::process::id(), unique()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir(&tmp).map_err(store_err)?;
    let res = extract(&blob, &tmp).and_then(|uncompressed| {
        if format!("sha256:{uncompressed}") != diff_id {
            Err(format!(
                "layer {} unpacks to sha256:{uncompressed}, but the config's diff_id is {diff_id}",
                d.digest()
            ))
        } else {
            Ok(())
        }
    });
    if let Err(m) = res {
        let _ = fs::remove_dir_all(&tmp);
        return Err(bad(m));
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

/// Extracts a (gzip or plain) tar layer, turning OCI whiteouts into overlayfs
/// ones; returns the sha256 of the uncompressed tar.
fn extract(blob: &Path, dest: &Path) -> Result<String, String> {
    let mut f = BufReader::new(File::open(blob).map_err(|e| e.to_string())?);
    let gz = {
        use std::io::BufRead;
        f.fill_buf()
            .map_err(|e| e.to_string())?
            .starts_with(&[0x1f, 0x8b])
    };
    let raw: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut hr = HashingReader {
        inner: raw,
        hash: Sha256::new(),
    };
    {
        let mut ar = tar::Archive::new(&mut hr);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_preserve_mtime(true);
        ar.set_unpack_xattrs(false);
        ar.set_overwrite(true);
        let entries = ar
            .entries()
            .map_err(|e| format!("layer {}: {e}", blob.display()))?;
        for entry in entries {
            let mut entry = entry
                .map_err(|e| format!("layer {} is truncated or corrupt: {e}", blob.display()))?;
            let path = entry.path().map_err(|e| e.to_string())?.into_owned();
            if path.components().any(|c| matches!(c, Component::ParentDir)) {
                return Err(format!(
                    "layer {} has an entry escaping the root: {}",
                    blob.display(),
                    path.display()
                ));
            }
            let rel: PathBuf = path
                .components()
                .filter(|c| matches!(c, Component::Normal(_)))
                .collect();
            let fname = rel
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            // Device nodes are dropped: the container's /dev is the agent's
            // own, and a node from a layer could open a host disk.
            if matches!(
                entry.header().entry_type(),
                tar::EntryType::Char | tar::EntryType::Block
            ) {
                continue;
            }
            if let Some(hidden) = fname.strip_prefix(".wh.") {
                let rel_parent = rel.parent().unwrap_or(Path::new(""));
                let parent = dest.join(rel_parent);
                // a symlink planted by an earlier entry must not carry the
                // whiteout (a mkdir, mknod or xattr) out of the layer: no
                // ancestor may be a symlink, checked before creating any
                let mut at = dest.to_path_buf();
                let through_symlink = rel_parent.components().any(|c| {
                    at.push(c);
                    fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink())
                });
                if through_symlink {
                    return Err(format!(
                        "layer {} has a whiteout outside the layer: {}",
                        blob.display(),
                        path.display()
                    ));
                }
                fs::create_dir_all(&parent).map_err(|e| e.to_string())?;
                if hidden == ".wh..opq" {
                    xattr::set(&parent, "trusted.overlay.opaque", b"y")
                        .map_err(|e| format!("opaque whiteout {}: {e}", parent.display()))?;
                } else {
                    let target = parent.join(hidden);
                    let _ = fs::remove_file(&target);
                    nix::sys::stat::mknod(
                        &target,
                        nix::sys::stat::SFlag::S_IFCHR,
                        nix::sys::stat::Mode::empty(),
                        0,
                    )
                    .map_err(|e| format!("whiteout {}: {e}", target.display()))?;
                }
                continue;
            }
            entry.unpack_in(dest).map_err(|e| {
                format!(
                    "layer {} entry {}: {}",
                    blob.display(),
                    path.display(),
                    chain(&e)
                )
            })?;
        }
    }
    // Trailing padding after the end-of-archive blocks counts for diff_id too.
    io::copy(&mut hr, &mut io::sink())
        .map_err(|e| format!("layer {} is truncated or corrupt: {e}", blob.display()))?;
    Ok(hex::encode(hr.hash.finalize()))
}

/// A number no other unpack in this process is using (two pulls of one
/// layer must not share a temp dir).
fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// An error with its sources, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}
