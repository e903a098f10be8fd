//! Unpacking one layer's tar stream into a directory: gzip, zstd or plain;
//! `..` refused, device nodes dropped, OCI whiteouts made overlayfs ones,
//! nothing written through a symlink; the uncompressed stream hashed for
//! the config's diff_id.

use super::oci::error::OciError;
use sha2::{Digest as _, Sha256};
use std::fs;
use std::io::{self, BufRead, Read};
use std::path::{Component, Path, PathBuf};

pub(super) struct HashingReader<R> {
    pub(super) inner: R,
    pub(super) hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Extracts the layer stream `r` (gzip, zstd or plain tar; `blob` names it
/// in errors) into `dest`, turning OCI whiteouts into overlayfs ones;
/// returns the sha256 of the uncompressed tar.
/// `max`: bytes the uncompressed stream may have (beyond: refused).
pub(super) fn extract(
    r: impl BufRead,
    blob: &Path,
    dest: &Path,
    max: u64,
) -> Result<String, OciError> {
    let corrupt = |source| OciError::Corrupt {
        blob: blob.to_path_buf(),
        source,
    };
    let mut hr = HashingReader {
        inner: super::targuard::TarGuard::new(decompress(r).map_err(corrupt)?, max),
        hash: Sha256::new(),
    };
    {
        let mut ar = tar::Archive::new(&mut hr);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_preserve_mtime(true);
        ar.set_unpack_xattrs(false);
        ar.set_overwrite(true);
        let entries = ar.entries().map_err(|source| OciError::Layer {
            blob: blob.to_path_buf(),
            source,
        })?;
        for entry in entries {
            unpack_entry(&mut entry.map_err(corrupt)?, blob, dest)?;
        }
    }
    // Trailing padding after the end-of-archive blocks counts for diff_id too.
    io::copy(&mut hr, &mut io::sink()).map_err(corrupt)?;
    Ok(hex::encode(hr.hash.finalize()))
}

/// The uncompressed tar stream of a layer, told by its first bytes: gzip,
/// zstd or plain.
fn decompress<'a>(mut r: impl BufRead + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let head = r.fill_buf()?;
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        // several members (eStargz) are one stream
        Box::new(flate2::bufread::MultiGzDecoder::new(r))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut z = zstd::stream::read::Decoder::with_buffer(r)?;
        // a frame may ask for a window of up to 2 GiB; 32 MiB covers every
        // level the usual tools write (19 uses 8 MiB), so one layer cannot
        // take the agent's memory
        z.window_log_max(25)?;
        Box::new(z)
    } else {
        Box::new(r)
    })
}

/// One tar entry into `dest`: `..` refused, an absolute path taken as
/// relative, device nodes dropped, whiteouts made overlayfs ones; the rest
/// unpacked by the tar crate (which keeps it inside `dest`).
fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    blob: &Path,
    dest: &Path,
) -> Result<(), OciError> {
    let path = entry
        .path()
        .map_err(|source| OciError::EntryPath {
            blob: blob.to_path_buf(),
            source,
        })?
        .into_owned();
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(OciError::Escape {
            blob: blob.to_path_buf(),
            entry: path,
        });
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
        return Ok(());
    }
    if let Some(hidden) = fname.strip_prefix(".wh.") {
        return whiteout(blob, dest, &path, &rel, hidden);
    }
    entry.unpack_in(dest).map_err(|source| OciError::Unpack {
        blob: blob.to_path_buf(),
        entry: path,
        source,
    })?;
    Ok(())
}

/// The whiteout entry `path` (`rel` inside `dest`, its file name `.wh.`
/// and `hidden`): `.wh..opq` makes its directory opaque (an xattr), any
/// other hides `hidden` (a 0:0 character device in its place).
fn whiteout(
    blob: &Path,
    dest: &Path,
    path: &Path,
    rel: &Path,
    hidden: &str,
) -> Result<(), OciError> {
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
        return Err(OciError::WhiteoutEscape {
            blob: blob.to_path_buf(),
            entry: path.to_path_buf(),
        });
    }
    fs::create_dir_all(&parent).map_err(|source| OciError::WhiteoutDir {
        dir: parent.clone(),
        source,
    })?;
    if hidden == ".wh..opq" {
        xattr::set(&parent, "trusted.overlay.opaque", b"y").map_err(|source| OciError::Opaque {
            dir: parent.clone(),
            source,
        })?;
    } else {
        let target = parent.join(hidden);
        let _ = fs::remove_file(&target);
        nix::sys::stat::mknod(
            &target,
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .map_err(|source| OciError::WhiteoutNode {
            path: target.clone(),
            source,
        })?;
    }
    Ok(())
}

/// A number no other unpack in this process is using (two pulls of one
/// layer must not share a temp dir).
pub(super) fn unique() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
