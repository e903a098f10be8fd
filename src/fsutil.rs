//! Writing files so a reader sees the old or the new content, never half.
//! A bottom-layer utility: it imports nothing of the crate.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A write that failed: what was being done, to which path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {path}")]
pub struct WriteError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl WriteError {
    /// True when the filesystem is full (ENOSPC) or over quota (EDQUOT).
    pub fn is_no_space(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        )
    }
}

/// The mount point of the filesystem holding `path` (the longest mount
/// point of this process's mount table that is a prefix of it).
pub fn mount_point_of(path: &Path) -> Option<PathBuf> {
    let table = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let path = path
        .ancestors()
        .find_map(|a| fs::canonicalize(a).ok())
        .unwrap_or_else(|| path.to_path_buf());
    table
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
}

/// Writes `data` to `path` so a reader sees the old or the new content, never
/// half (temp file, rename); `durable` adds fsync of the file and directory.
/// A failed write removes its temp file.
pub fn write_atomic(path: &Path, data: &[u8], durable: bool) -> Result<(), WriteError> {
    let dir = path
        .parent()
        .expect("atomic writes name a file in a directory");
    fs::create_dir_all(dir).map_err(|source| WriteError {
        action: "create the directory of",
        path: path.to_path_buf(),
        source,
    })?;
    replace_file(path, data, durable)
}

/// [`write_atomic`] into a directory that must exist: never makes one (a
/// record is never written into a directory made anew where the real one
/// vanished, even if it vanishes between a check and the write).
pub fn replace_file(path: &Path, data: &[u8], durable: bool) -> Result<(), WriteError> {
    let err = |action, source| WriteError {
        action,
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .expect("atomic writes name a file in a directory");
    // a name of this write's own: two writers of one file must not share
    // (and truncate) one temporary file, whose rename would then install
    // the other's half-written bytes
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let res = (|| {
        let mut f = File::create(&tmp).map_err(|e| err("create", e))?;
        f.write_all(data).map_err(|e| err("write", e))?;
        if durable {
            f.sync_all().map_err(|e| err("fsync", e))?;
        }
        fs::rename(&tmp, path).map_err(|e| err("rename into", e))
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res?;
    if durable {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| err("fsync the directory of", e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mount_of_a_path() {
        assert_eq!(
            mount_point_of(Path::new("/proc/self/status")),
            Some(PathBuf::from("/proc"))
        );
        assert_eq!(mount_point_of(Path::new("/")), Some(PathBuf::from("/")));
    }

    #[test]
    fn replace_file_makes_no_directory() {
        let d = tempfile::tempdir().unwrap();
        let e = replace_file(&d.path().join("gone/rec.json"), b"x", false).unwrap_err();
        assert_eq!(e.source.kind(), std::io::ErrorKind::NotFound);
        assert!(!d.path().join("gone").exists());
    }

    #[test]
    fn replaces_whole_and_leaves_no_temp_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/rec.json");
        write_atomic(&p, b"one", true).unwrap();
        write_atomic(&p, b"two", false).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("rec.json")]);
    }

    #[test]
    fn concurrent_writers_of_one_file_never_mix_their_bytes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("rec.json");
        // contents of different lengths: a mix shows as a wrong length or byte
        let content = |w: usize| vec![b'a' + w as u8; 100 + 3000 * w];
        std::thread::scope(|s| {
            for w in 0..6 {
                let (p, data) = (&p, content(w));
                s.spawn(move || {
                    for _ in 0..300 {
                        replace_file(p, &data, false).unwrap();
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..2000 {
                    if let Ok(b) = fs::read(&p) {
                        assert!(!b.is_empty(), "an empty file was installed");
                        let w = (b[0] - b'a') as usize;
                        assert_eq!(b, content(w), "bytes of two writers mixed");
                    }
                }
            });
        });
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("rec.json")]);
    }
}
