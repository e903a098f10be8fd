//! Pulling images from registries (the OCI distribution API, through the
//! `oci-client` crate): the reference resolved to a manifest (a
//! multi-platform index to this host's platform), checked against the
//! reference's digest, the config and layers verified against their
//! digests and sizes, layers downloaded in parallel and unpacked as they
//! stream, each at most once at a time on this host, and the image
//! recorded only once all its layers are in the store.

mod client;
mod ctx;
mod layer;

use ctx::Ctx;

use super::oci::parse_config;
use super::records::{layer_dir, ImageRecord, Records};
use super::{oci, Image, ImageError};
use crate::config::{ImagesConfig, RegistryConfig};
use oci_client::manifest::OciDescriptor;
use oci_client::Reference;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// One line of a pull's progress (`POST /v1/images/pull`).
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
#[schema(as = PullProgress)]
pub struct Progress {
    pub layer: String,
    /// Bytes of the (compressed) blob downloaded so far.
    pub bytes: u64,
    pub total: u64,
    pub done: bool,
    /// Already in the layer store: nothing downloaded.
    pub cached: bool,
}

impl Progress {
    fn layer(digest: &str, bytes: u64, total: u64, done: bool) -> Progress {
        Progress {
            layer: digest.into(),
            bytes,
            total,
            done,
            cached: false,
        }
    }
}

/// Where a pull reports its progress, if anyone listens.
pub type ProgressTx = Option<mpsc::Sender<Progress>>;

/// Sends a progress line if there is room: a pull never waits for a
/// client that reads slowly (it holds a layer's lock, which other pulls
/// and creates wait for); a line that does not fit is dropped.
fn report(tx: &ProgressTx, p: Progress) {
    if let Some(tx) = tx {
        let _ = tx.try_send(p);
    }
}

/// The agent's puller: the registries it may pull from, the layer store
/// and the images' records.
pub struct Puller {
    registries: Vec<RegistryConfig>,
    cfg: ImagesConfig,
    store: PathBuf,
    pub records: Records,
    clients: Mutex<HashMap<String, Arc<oci_client::Client>>>,
    /// One lock per layer being fetched (by its hex) and per reference
    /// being resolved by creates (`ref:REFERENCE`): a second pull of it
    /// waits for the first and then finds it here.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Held (shared) by every create from resolving its image until its
    /// record names the layers; a prune holds it alone, so it never
    /// deletes a layer a create is about to use.
    gc: Arc<tokio::sync::RwLock<()>>,
    /// Layers a pull is making or about to record (by directory): a prune
    /// keeps them without waiting for the pull.
    pins: Mutex<HashMap<PathBuf, usize>>,
    /// Layers downloaded at once on this host (`images.max_parallel_layers`),
    /// whatever the number of pulls: what bounds a pull's memory.
    at_once: tokio::sync::Semaphore,
}

/// Layers pinned by a pull until it ends.
struct Pinned<'a> {
    puller: &'a Puller,
    dirs: Vec<PathBuf>,
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        let mut pins = self.puller.pins.lock().unwrap();
        for d in &self.dirs {
            if let Some(n) = pins.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(d);
                }
            }
        }
    }
}

impl Puller {
    pub fn new(
        registries: Vec<RegistryConfig>,
        cfg: ImagesConfig,
        store: PathBuf,
        records: PathBuf,
    ) -> Puller {
        Puller {
            registries,
            store,
            records: Records::new(records),
            clients: Mutex::default(),
            inflight: Mutex::default(),
            gc: Arc::default(),
            pins: Mutex::default(),
            at_once: tokio::sync::Semaphore::new(cfg.max_parallel_layers),
            cfg,
        }
    }

    fn pin(&self, dirs: Vec<PathBuf>) -> Pinned<'_> {
        let mut pins = self.pins.lock().unwrap();
        for d in &dirs {
            *pins.entry(d.clone()).or_default() += 1;
        }
        Pinned { puller: self, dirs }
    }

    /// Keeps the layer store's layers from a prune while it is held.
    pub async fn hold(&self) -> tokio::sync::OwnedRwLockReadGuard<()> {
        self.gc.clone().read_owned().await
    }

    /// Deletes the layers that no image record and nothing of `in_use`
    /// (asked once no create is between resolving and recording) names;
    /// answers how many and the bytes they held on disk.
    pub async fn prune(
        &self,
        in_use: impl FnOnce() -> std::collections::HashSet<PathBuf>,
    ) -> std::io::Result<(usize, u64)> {
        let _alone = self.gc.write().await;
        let mut keep = in_use();
        keep.extend(self.pins.lock().unwrap().keys().cloned());
        // a record that cannot be read stops the prune: its layers may be
        // all that is left of an image the registry no longer has
        for r in self.records.all_strict()? {
            keep.extend(r.layer_dirs(&self.store));
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || super::records::prune(&store, &keep))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Removes the staging directories of pulls that an earlier agent did
    /// not finish (one agent owns the store: at its start none is live).
    pub fn sweep_staging(&self) -> usize {
        let dir = self.store.join("sha256");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.')
                && name.contains(".tmp-")
                && std::fs::remove_dir_all(e.path()).is_ok()
            {
                n += 1;
            }
        }
        n
    }

    /// The image `reference` names, from its record when every layer is
    /// here (no registry asked), else pulled.
    pub async fn get_or_pull(&self, reference: &str) -> Result<Image, ImageError> {
        // creates of one missing image at once make one pull: the others
        // wait for it and find its record
        let lock = self
            .inflight
            .lock()
            .unwrap()
            .entry(format!("ref:{reference}"))
            .or_default()
            .clone();
        let res = async {
            let _one = lock.lock().await;
            self.local_or_pull(reference).await
        }
        .await;
        let mut inflight = self.inflight.lock().unwrap();
        if Arc::strong_count(&lock) == 2 {
            inflight.remove(&format!("ref:{reference}"));
        }
        res
    }

    async fn local_or_pull(&self, reference: &str) -> Result<Image, ImageError> {
        if let Some(img) = self
            .records
            .get(reference)
            .and_then(|r| r.image(&self.store))
        {
            return Ok(img);
        }
        if let Some(rec) = self.by_digest(reference) {
            return rec.image(&self.store).ok_or_else(|| ImageError::NotFound {
                reference: reference.into(),
                message: "its layers were removed while it was being looked up".into(),
            });
        }
        let rec = self.pull(reference, &None).await?;
        rec.image(&self.store).ok_or_else(|| ImageError::NotFound {
            reference: reference.into(),
            message: "its layers were removed while it was being pulled".into(),
        })
    }

    /// A reference with a digest that an image pulled under another
    /// reference of the same repository already resolved to: the same
    /// content (the digest says so), recorded under this reference too,
    /// with no registry asked.
    fn by_digest(&self, reference: &str) -> Option<ImageRecord> {
        let r: Reference = reference.parse().ok()?;
        let want = r.digest()?;
        let same = |o: &ImageRecord| {
            o.reference
                .parse::<Reference>()
                .is_ok_and(|x| x.registry() == r.registry() && x.repository() == r.repository())
        };
        let found = self.records.all().into_iter().find(|o| {
            (o.digest == want || o.manifest_digest == want)
                && same(o)
                && o.image(&self.store).is_some()
        })?;
        let rec = ImageRecord {
            reference: reference.into(),
            pulled_at: crate::model::now(),
            ..found
        };
        self.records.save(&rec).ok()?;
        Some(rec)
    }

    /// Pulls `reference` (asking the registry what it resolves to now) and
    /// records it.
    pub async fn pull(
        &self,
        reference: &str,
        progress: &ProgressTx,
    ) -> Result<ImageRecord, ImageError> {
        let invalid = |message: String| ImageError::Invalid {
            reference: reference.into(),
            message,
        };
        let r: Reference = reference
            .parse()
            .map_err(|e| invalid(format!("not a registry reference: {e}")))?;
        let reg = self.registry(&r, reference)?;
        let host = reg.host.clone();
        let auth = client::auth(&reg, reference)?;
        let client = self.client(&reg, &auth, reference)?;
        let oci_err = |e| client::error(reference, &host, e);
        let (manifest, manifest_digest, list) = client
            .pull_image_manifest_and_list_digest(&r, &auth)
            .await
            .map_err(oci_err)?;
        let digest = list.unwrap_or_else(|| manifest_digest.clone());
        check_digest(&r, &digest, &manifest_digest).map_err(invalid)?;
        let size = image_size(&manifest.layers, self.cfg.max_image_size.0).map_err(invalid)?;
        let cx = Ctx {
            client: &client,
            r: &r,
            auth: &auth,
            reference,
            host: &host,
        };
        let config_bytes = cx.config(&manifest.config).await?;
        let config = parse_config(&config_bytes)
            .map_err(|e| invalid(format!("config {}: {e}", manifest.config.digest)))?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers.len() {
            return Err(invalid(format!(
                "the manifest has {} layers but the config lists {} diff_ids",
                manifest.layers.len(),
                diff_ids.len()
            )));
        }
        let dirs = manifest
            .layers
            .iter()
            .map(|l| layer_dir(&self.store, &l.digest));
        let _pinned = self.pin(dirs.collect());
        let fetches = manifest
            .layers
            .iter()
            .zip(&diff_ids)
            .map(|(d, id)| self.layer(&cx, d, id, progress));
        // every fetch runs to its end (none is dropped mid-unpack, which would
        // leave its staging behind): a verified layer stays for the next
        // try, and the first failure is the answer
        for res in futures_util::future::join_all(fetches).await {
            res?;
        }
        let rec = ImageRecord {
            reference: reference.into(),
            digest,
            manifest_digest,
            config_digest: manifest.config.digest.clone(),
            layers: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            size,
            created: config.created().clone(),
            pulled_at: crate::model::now(),
            defaults: oci::defaults(&config),
        };
        self.records.save(&rec).map_err(|e| ImageError::Store {
            reference: reference.into(),
            path: e.path,
            source: e.source,
        })?;
        Ok(rec)
    }

    /// Whether `reference` may be pulled at all: a registry reference, to
    /// a registry the config allows (checked before a pull's answer starts).
    pub fn check(&self, reference: &str) -> Result<(), ImageError> {
        let r: Reference = reference.parse().map_err(|e| ImageError::Invalid {
            reference: reference.into(),
            message: format!("not a registry reference: {e}"),
        })?;
        self.registry(&r, reference).map(|_| ())
    }

    /// The `[[registry]]` entry of the reference's registry; an unlisted
    /// one only with `images.allow_unlisted` (then anonymous, HTTPS).
    fn registry(&self, r: &Reference, reference: &str) -> Result<RegistryConfig, ImageError> {
        match self.registries.iter().find(|g| g.host == r.registry()) {
            Some(g) => Ok(g.clone()),
            None if self.cfg.allow_unlisted => Ok(RegistryConfig { host: r.registry().into(), ..Default::default() }),
            None => Err(ImageError::Forbidden {
                reference: reference.into(),
                message: format!(
                    "registry {} is not listed in the agent's config ([[registry]]), and images.allow_unlisted is false",
                    r.registry()
                ),
            }),
        }
    }

    /// The registry's client, made again when its credentials changed (the
    /// client keeps the first credentials it is given, and its tokens).
    fn client(
        &self,
        reg: &RegistryConfig,
        auth: &oci_client::secrets::RegistryAuth,
        reference: &str,
    ) -> Result<Arc<oci_client::Client>, ImageError> {
        let key = format!("{}#{}", reg.host, client::fingerprint(auth));
        let mut clients = self.clients.lock().unwrap();
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let c = Arc::new(client::client(reg, &self.cfg, reference)?);
        let host = format!("{}#", reg.host);
        clients.retain(|k, _| !k.starts_with(&host));
        clients.insert(key, c.clone());
        Ok(c)
    }

    /// The layer `d` in the store: already there, or fetched now (once on
    /// this host however many pulls want it at the same time).
    async fn layer(
        &self,
        cx: &Ctx<'_>,
        d: &OciDescriptor,
        diff_id: &str,
        progress: &ProgressTx,
    ) -> Result<(), ImageError> {
        let reference = cx.reference;
        let hex = sha256_hex(&d.digest).ok_or_else(|| ImageError::Invalid {
            reference: reference.into(),
            message: format!(
                "unsupported or malformed layer digest {:?} (sha256 only)",
                d.digest
            ),
        })?;
        let size = d.size.max(0) as u64;
        let cached = Progress {
            layer: d.digest.clone(),
            bytes: 0,
            total: size,
            done: true,
            cached: true,
        };
        if layer_dir(&self.store, &d.digest).is_dir() {
            report(progress, cached);
            return Ok(());
        }
        let lock = self
            .inflight
            .lock()
            .unwrap()
            .entry(hex.clone())
            .or_default()
            .clone();
        let res = async {
            let _one = lock.lock().await;
            if layer_dir(&self.store, &d.digest).is_dir() {
                report(progress, cached);
                return Ok(());
            }
            let _permit = self.at_once.acquire().await.expect("never closed");
            let stream = cx.blob(d).await?;
            let job = layer::Job {
                reference,
                desc: d,
                hex: &hex,
                diff_id,
                store: &self.store,
                timeout: Duration::from_secs(self.cfg.timeout_s),
                max_unpacked: self.cfg.max_layer_unpacked.0,
                progress,
            };
            layer::fetch(job, stream).await
        }
        .await;
        let mut inflight = self.inflight.lock().unwrap();
        if Arc::strong_count(&lock) == 2 {
            inflight.remove(&hex);
        }
        res
    }

    /// The layer store.
    pub fn store(&self) -> &Path {
        &self.store
    }
}

/// What the registry answered must be what a reference by digest names
/// (the index's digest, or the platform manifest's).
fn check_digest(r: &Reference, digest: &str, manifest_digest: &str) -> Result<(), String> {
    match r.digest() {
        Some(want) if want != digest && want != manifest_digest => Err(format!(
            "the registry's manifest has digest {digest}, the reference asks for {want}"
        )),
        _ => Ok(()),
    }
}

/// The layers' sizes added up, refused over `cap` (`images.max_image_size`).
fn image_size(layers: &[OciDescriptor], cap: u64) -> Result<u64, String> {
    let mut size = 0u64;
    for l in layers {
        let n =
            u64::try_from(l.size).map_err(|_| format!("layer {} has a negative size", l.digest))?;
        size = size.saturating_add(n);
    }
    if size > cap {
        return Err(format!(
            "its layers add up to {size} bytes, over images.max_image_size ({cap} bytes)"
        ));
    }
    Ok(size)
}

/// The hex of a `sha256:` digest, when it is one.
fn sha256_hex(digest: &str) -> Option<String> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then(|| hex.to_string())
}
