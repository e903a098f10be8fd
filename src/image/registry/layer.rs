//! One layer from a registry into the layer store, as one pipeline:
//! download (on the reactor) -> a bounded channel -> decompress and unpack
//! (on a blocking thread) into a staging directory. The compressed bytes
//! are counted and hashed as they arrive: a blob longer than its
//! descriptor is cut off at the first byte too many, a shorter one or one
//! with another digest is refused, and the uncompressed stream must hash to
//! the config's diff_id. Only then is the staging directory renamed into
//! place: a layer in the store is always whole and verified.

use super::super::oci::error::OciError;
use super::super::unpack;
use super::super::ImageError;
use super::Progress;
use bytes::Bytes;
use futures_util::StreamExt;
use oci_client::manifest::OciDescriptor;
use sha2::{Digest as _, Sha256};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// Chunks in flight between the download and the unpack: what bounds the
/// memory of a pull whatever the layer's size.
const CHANNEL: usize = 8;

/// Reads what the download sends; the end of the channel is the end of
/// the blob.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// What a fetch needs to know of its pull.
pub(super) struct Job<'a> {
    pub reference: &'a str,
    pub desc: &'a OciDescriptor,
    pub hex: &'a str,
    pub diff_id: &'a str,
    pub store: &'a Path,
    pub timeout: Duration,
    /// Bytes the layer may unpack to (`images.max_layer_unpacked`).
    pub max_unpacked: u64,
    pub progress: &'a super::ProgressTx,
}

/// Downloads and unpacks the layer into `<store>/sha256/<hex>`.
pub(super) async fn fetch(
    job: Job<'_>,
    mut stream: oci_client::client::SizedStream,
) -> Result<(), ImageError> {
    let size = job.desc.size as u64;
    let label = PathBuf::from(format!("{}@{}", job.reference, job.desc.digest));
    let invalid = |message: String| ImageError::Invalid {
        reference: job.reference.into(),
        message,
    };
    if stream.content_length.is_some_and(|n| n > size) {
        return Err(invalid(format!(
            "layer {}: the registry announces {} bytes, its descriptor says {size}",
            job.desc.digest,
            stream.content_length.unwrap_or(0)
        )));
    }
    let dir = job.store.join("sha256");
    std::fs::create_dir_all(&dir).map_err(|source| store_err(job.reference, &dir, source))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        job.hex,
        std::process::id(),
        unpack::unique()
    ));
    std::fs::create_dir(&tmp).map_err(|source| store_err(job.reference, &tmp, source))?;
    let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL);
    let (t2, l2, max) = (tmp.clone(), label.clone(), job.max_unpacked);
    let unpacker = tokio::task::spawn_blocking(move || {
        let r = BufReader::with_capacity(
            64 << 10,
            ChannelReader {
                rx,
                cur: Bytes::new(),
            },
        );
        unpack::extract(r, &l2, &t2, max)
    });
    let downloaded = download(&job, &mut stream, tx, size).await;
    let unpacked = unpacker
        .await
        .map_err(|e| invalid(format!("the unpack of {} panicked: {e}", job.desc.digest)));
    let verified = downloaded.and_then(|()| {
        let uncompressed = unpacked?.map_err(|e| e.image(job.reference))?;
        if format!("sha256:{uncompressed}") != job.diff_id {
            return Err(OciError::DiffId {
                digest: job.desc.digest.clone(),
                got: uncompressed,
                diff_id: job.diff_id.into(),
            }
            .image(job.reference));
        }
        Ok(())
    });
    let (dest, ok) = (dir.join(job.hex), verified.is_ok());
    let (d2, t2) = (dest.clone(), tmp.clone());
    let placed = tokio::task::spawn_blocking(move || place(&t2, &d2, ok))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
    verified?;
    placed.map_err(|e| store_err(job.reference, &dest, e))
}

/// A verified layer (`ok`) made durable and renamed into place; else its
/// staging deleted (either can be long: off the reactor).
fn place(tmp: &Path, dest: &Path, ok: bool) -> io::Result<()> {
    if ok {
        // its files on disk before the name that makes it trusted
        rustix::fs::syncfs(std::fs::File::open(tmp)?)?;
        match std::fs::rename(tmp, dest) {
            Ok(()) => {}
            // another pull placed it first
            Err(_) if dest.is_dir() => {}
            Err(e) => {
                let _ = std::fs::remove_dir_all(tmp);
                return Err(e);
            }
        }
        if let Some(dir) = dest.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    if tmp.exists() {
        let _ = std::fs::remove_dir_all(tmp);
    }
    Ok(())
}

/// Sends the blob's bytes down the channel, counting and hashing them;
/// the error says what was wrong with the blob.
async fn download(
    job: &Job<'_>,
    stream: &mut oci_client::client::SizedStream,
    tx: mpsc::Sender<Bytes>,
    size: u64,
) -> Result<(), ImageError> {
    let mut tx = Some(tx);
    let invalid = |message: String| ImageError::Invalid {
        reference: job.reference.into(),
        message: format!("layer {}: {message}", job.desc.digest),
    };
    let mut hash = Sha256::new();
    let mut got = 0u64;
    let mut reported = 0u64;
    while let Some(chunk) = next_chunk(job, stream, got, size).await? {
        got += chunk.len() as u64;
        if got > size {
            return Err(invalid(format!(
                "the registry sent more than the descriptor's {size} bytes"
            )));
        }
        hash.update(&chunk);
        // an unpack that stopped (a corrupt stream) says why, unless the
        // blob itself is wrong: the rest is still hashed (bounded by its
        // size) so that a wrong blob is reported as such
        if let Some(t) = &tx {
            if t.send(chunk).await.is_err() {
                tx = None;
            }
        }
        if got - reported >= 1 << 20 {
            reported = got;
            super::report(
                job.progress,
                Progress::layer(&job.desc.digest, got, size, false),
            );
        }
    }
    drop(tx);
    if got < size {
        return Err(invalid(format!(
            "the registry sent {got} of the descriptor's {size} bytes"
        )));
    }
    let hex = hex::encode(hash.finalize());
    if hex != job.hex {
        return Err(invalid(format!(
            "the registry sent a blob with digest sha256:{hex}"
        )));
    }
    super::report(
        job.progress,
        Progress::layer(&job.desc.digest, got, size, true),
    );
    Ok(())
}

/// The blob's next bytes; None at its end.
async fn next_chunk(
    job: &Job<'_>,
    stream: &mut oci_client::client::SizedStream,
    got: u64,
    size: u64,
) -> Result<Option<Bytes>, ImageError> {
    let unreachable = |message: String| ImageError::Unreachable {
        reference: job.reference.into(),
        message: format!("layer {}: {message}", job.desc.digest),
    };
    match tokio::time::timeout(job.timeout, stream.stream.next()).await {
        Err(_) => Err(unreachable(format!(
            "no byte from the registry for {} s after {got} of {size} bytes",
            job.timeout.as_secs()
        ))),
        Ok(None) => Ok(None),
        // the client's own digest check fails at the end of the bytes:
        // ours (in download) says more
        Ok(Some(Err(e))) if is_digest_error(&e) => Ok(None),
        Ok(Some(Err(e))) => Err(unreachable(format!(
            "the download failed after {got} of {size} bytes: {e}"
        ))),
        Ok(Some(Ok(b))) => Ok(Some(b)),
    }
}

/// The error `oci-client`'s verifying stream ends a blob with when its
/// bytes do not hash to the digest.
fn is_digest_error(e: &io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>())
}

fn store_err(reference: &str, path: &Path, source: io::Error) -> ImageError {
    ImageError::Store {
        reference: reference.into(),
        path: path.to_path_buf(),
        source,
    }
}
