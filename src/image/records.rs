//! Pulled images: one JSON record per reference under `<state>/images/`
//! (the digest it resolved to, its layers, the config's defaults), written
//! only once every layer is in the layer store, so a record always names
//! layers that are there.

use super::{Image, ImageDefaults};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The reference as pulled, e.g. `127.0.0.1:5000/shop/cart:v7`.
    pub reference: String,
    /// What it resolved to: the manifest's digest (an index's, for a
    /// multi-platform image).
    pub digest: String,
    /// The platform manifest's digest (the same unless an index was resolved).
    pub manifest_digest: String,
    pub config_digest: String,
    /// The layers' digests (`sha256:HEX`), base first.
    pub layers: Vec<String>,
    /// The layers' compressed sizes added up (what was or would be downloaded).
    pub size: u64,
    /// The image config's `created`.
    pub created: Option<String>,
    pub pulled_at: String,
    pub defaults: ImageDefaults,
}

impl ImageRecord {
    /// The layer directories in `store`, top first (overlay's order).
    pub fn layer_dirs(&self, store: &Path) -> Vec<PathBuf> {
        self.layers
            .iter()
            .rev()
            .map(|d| layer_dir(store, d))
            .collect()
    }

    /// The image, when every layer is in `store`.
    pub fn image(&self, store: &Path) -> Option<Image> {
        let layers = self.layer_dirs(store);
        layers.iter().all(|l| l.is_dir()).then(|| Image {
            layers,
            defaults: self.defaults.clone(),
            digest: Some(self.digest.clone()),
        })
    }
}

/// `<store>/sha256/<hex>` for the digest `sha256:<hex>`.
pub fn layer_dir(store: &Path, digest: &str) -> PathBuf {
    store
        .join("sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// Deletes every layer directory of `store` not in `keep`; (how many,
/// bytes they held on disk). Staging directories (a pull under way) stay.
pub fn prune(
    store: &Path,
    keep: &std::collections::HashSet<PathBuf>,
) -> std::io::Result<(usize, u64)> {
    let (mut n, mut bytes) = (0, 0);
    let dir = store.join("sha256");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(e),
    };
    for e in entries {
        let p = e?.path();
        let staging = p
            .file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with('.'));
        if staging || keep.contains(&p) || !p.is_dir() {
            continue;
        }
        let size = disk_usage(&p, &mut Default::default());
        std::fs::remove_dir_all(&p)?;
        n += 1;
        bytes += size;
    }
    Ok((n, bytes))
}

/// Bytes a directory tree holds on disk (allocated blocks), not
/// following symlinks; a file with several links counted once (`seen`).
pub fn disk_usage(p: &Path, seen: &mut std::collections::HashSet<(u64, u64)>) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return 0;
    };
    if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
        return 0;
    }
    let own = m.blocks() * 512;
    if !m.is_dir() {
        return own;
    }
    let mut total = own;
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        total += disk_usage(&e.path(), seen);
    }
    total
}

/// The records' directory.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
}

impl Records {
    pub fn new(dir: PathBuf) -> Records {
        Records { dir }
    }

    fn path(&self, reference: &str) -> PathBuf {
        self.dir.join(format!(
            "{}.json",
            hex::encode(Sha256::digest(reference.as_bytes()))
        ))
    }

    pub fn get(&self, reference: &str) -> Option<ImageRecord> {
        let data = std::fs::read(self.path(reference)).ok()?;
        serde_json::from_slice::<ImageRecord>(&data)
            .ok()
            .filter(|r| r.reference == reference)
    }

    pub fn save(&self, r: &ImageRecord) -> Result<(), crate::fsutil::WriteError> {
        std::fs::create_dir_all(&self.dir).map_err(|source| crate::fsutil::WriteError {
            action: "create",
            path: self.dir.clone(),
            source,
        })?;
        let data = serde_json::to_vec_pretty(r).expect("image records serialize");
        crate::fsutil::replace_file(&self.path(&r.reference), &data, true)
    }

    /// True when there was one.
    pub fn remove(&self, reference: &str) -> std::io::Result<bool> {
        match std::fs::remove_file(self.path(reference)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every record, by reference; an error if one cannot be listed, read or
    /// parsed (what a prune needs: no layer taken for unused by mistake).
    pub fn all_strict(&self) -> std::io::Result<Vec<ImageRecord>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut v = Vec::new();
        for e in entries {
            let p = e?.path();
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let data = std::fs::read(&p)?;
            v.push(serde_json::from_slice(&data).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", p.display()),
                )
            })?);
        }
        Ok(v)
    }

    /// Every readable record, by reference.
    pub fn all(&self) -> Vec<ImageRecord> {
        let mut v: Vec<ImageRecord> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| std::fs::read(e.path()).ok())
            .filter_map(|d| serde_json::from_slice(&d).ok())
            .collect();
        v.sort_by(|a: &ImageRecord, b| a.reference.cmp(&b.reference));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_names_its_layers_top_first() {
        let d = tempfile::tempdir().unwrap();
        let recs = Records::new(d.path().join("images"));
        let r = ImageRecord {
            reference: "reg:5000/a/b:v1".into(),
            digest: "sha256:aa".into(),
            manifest_digest: "sha256:aa".into(),
            config_digest: "sha256:cc".into(),
            layers: vec!["sha256:11".into(), "sha256:22".into()],
            size: 3,
            created: None,
            pulled_at: "now".into(),
            defaults: ImageDefaults::default(),
        };
        assert!(recs.get(&r.reference).is_none());
        recs.save(&r).unwrap();
        assert_eq!(recs.get(&r.reference).unwrap(), r);
        assert_eq!(recs.all(), vec![r.clone()]);
        let store = d.path().join("layers");
        assert_eq!(
            r.layer_dirs(&store),
            vec![store.join("sha256/22"), store.join("sha256/11")]
        );
        assert!(r.image(&store).is_none(), "layers missing");
        std::fs::create_dir_all(store.join("sha256/22")).unwrap();
        std::fs::create_dir_all(store.join("sha256/11")).unwrap();
        assert_eq!(
            r.image(&store).unwrap().digest.as_deref(),
            Some("sha256:aa")
        );
        assert!(recs.remove(&r.reference).unwrap());
        assert!(!recs.remove(&r.reference).unwrap());
    }
}
