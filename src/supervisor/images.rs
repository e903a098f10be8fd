//! Images on this host, as the API sees them: pulls with their progress,
//! the list with the containers using each, removal (refused while a
//! container uses the image) and the prune of layers nothing uses.

use super::error::{Error, Result};
use super::Supervisor;
use crate::image::{ImageError, ImageRecord, Progress};
use crate::model::{Action, Event};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::mpsc;

/// One line of a pull: progress, then how it ended.
#[derive(Debug)]
pub enum PullLine {
    Progress(Progress),
    Done(Box<std::result::Result<ImageView, Error>>),
}

/// A pulled image and the containers that use it.
#[derive(Debug, Clone)]
pub struct ImageView {
    pub record: ImageRecord,
    pub used_by: Vec<String>,
    /// Bytes its layers hold in the layer store (shared layers counted in
    /// each image that has them).
    pub disk_bytes: u64,
}

/// What a prune freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub layers: usize,
    pub bytes: u64,
}

impl Supervisor {
    /// Starts a pull of `reference` and answers its lines. A reference
    /// that is not a registry one, or names a registry the config does not
    /// allow, is refused here, before any line.
    pub fn pull(self: &Arc<Self>, reference: &str) -> Result<mpsc::Receiver<PullLine>> {
        match crate::image::parse_reference(reference)? {
            crate::image::Reference::Registry(_) => {}
            _ => {
                return Err(ImageError::Invalid {
                    reference: reference.into(),
                    message:
                        "only registry references (HOST[:PORT]/REPO:TAG or @sha256:HEX) are pulled"
                            .into(),
                }
                .into())
            }
        }
        self.images.check(reference)?;
        let (tx, rx) = mpsc::channel(64);
        let (me, reference) = (self.clone(), reference.to_string());
        // its own task: a client that goes away does not cut the pull short
        tokio::spawn(async move {
            let (ptx, mut prx) = mpsc::channel(64);
            let t2 = tx.clone();
            let forward = tokio::spawn(async move {
                while let Some(p) = prx.recv().await {
                    let _ = t2.send(PullLine::Progress(p)).await;
                }
            });
            let res = me.images.pull(&reference, &Some(ptx)).await;
            let _ = forward.await;
            let mut ev = Event::now("", Action::Pull);
            ev.image = Some(reference.clone());
            match &res {
                Ok(r) => ev.digest = Some(r.digest.clone()),
                Err(e) => ev.reason = Some(e.to_string()),
            }
            me.events.publish(ev);
            let done = res.map(|r| me.image_view(r)).map_err(Error::from);
            let _ = tx.send(PullLine::Done(Box::new(done))).await;
        });
        Ok(rx)
    }

    /// (images, layers in the store, bytes the store takes on disk); blocking.
    pub fn image_usage(&self) -> (usize, usize, u64) {
        let store = self.images.store().join("sha256");
        let layers = std::fs::read_dir(&store)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count();
        let bytes = crate::image::records::disk_usage(&store, &mut HashSet::new());
        (self.images.records.all().len(), layers, bytes)
    }

    /// Every pulled image, by reference.
    pub fn images(&self) -> Vec<ImageView> {
        self.images
            .records
            .all()
            .into_iter()
            .map(|r| self.image_view(r))
            .collect()
    }

    fn image_view(&self, record: ImageRecord) -> ImageView {
        let mut seen = HashSet::new();
        let disk_bytes = record
            .layer_dirs(self.images.store())
            .iter()
            .map(|d| crate::image::records::disk_usage(d, &mut seen))
            .sum();
        ImageView {
            used_by: self.users_of(&record),
            record,
            disk_bytes,
        }
    }

    /// The containers created from `r`: by its reference, or by another
    /// reference of its repository that resolved to the same digest.
    fn users_of(&self, r: &ImageRecord) -> Vec<String> {
        let repo = |s: &str| {
            s.parse::<oci_client::Reference>()
                .ok()
                .map(|x| (x.registry().to_string(), x.repository().to_string()))
        };
        let mut v: Vec<String> = self
            .registry
            .all()
            .iter()
            .map(|e| e.rec())
            .filter(|rec| {
                let f = rec.facts();
                f.spec.image == r.reference
                    || (f.image_digest.as_deref() == Some(r.digest.as_str())
                        && repo(&f.spec.image) == repo(&r.reference))
            })
            .map(|rec| rec.name().to_string())
            .collect();
        v.sort();
        v
    }

    /// Removes the image's record (its layers go at the next prune);
    /// refused while a container uses it.
    pub fn remove_image(&self, reference: &str) -> Result<()> {
        let Some(r) = self.images.records.get(reference) else {
            return Err(Error::ImageNotFound(reference.into()));
        };
        let users = self.users_of(&r);
        if !users.is_empty() {
            return Err(Error::ImageInUse {
                reference: reference.into(),
                containers: users,
            });
        }
        self.images
            .records
            .remove(reference)
            .map_err(|source| Error::Prepare {
                path: self.paths.images(),
                source,
            })?;
        let mut ev = Event::now("", Action::ImageDelete);
        ev.image = Some(reference.into());
        ev.digest = Some(r.digest);
        self.events.publish(ev);
        Ok(())
    }

    /// Deletes the layers that no image and no container uses.
    pub async fn prune_images(&self) -> Result<Pruned> {
        let (layers, bytes) =
            self.images
                .prune(|| self.layers_in_use())
                .await
                .map_err(|source| Error::Prepare {
                    path: self.paths.layers(),
                    source,
                })?;
        Ok(Pruned { layers, bytes })
    }

    fn layers_in_use(&self) -> HashSet<PathBuf> {
        self.registry
            .all()
            .iter()
            .flat_map(|e| e.rec().facts().layers.clone())
            .collect()
    }
}
