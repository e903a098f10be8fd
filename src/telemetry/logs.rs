//! Container logs as NDJSON records `{"ts","stream","line"}` in size-capped
//! rotating files: `container.log` (newest), `container.log.1`, ... A line
//! longer than [`MAX_LINE`] is split into records marked `"partial": true`.
//!
//! The shim writes them (so nothing is lost while the agent is down); the
//! agent only reads them.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest line stored as one record.
pub const MAX_LINE: usize = 16 * 1024;
pub const FILE: &str = "container.log";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub ts: String,
    pub stream: String,
    pub line: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// Appends records to the current file, rotating when it would pass `max_size`.
pub struct LogWriter {
    dir: PathBuf,
    max_size: u64,
    max_files: u32,
    file: File,
    size: u64,
}

impl LogWriter {
    pub fn open(dir: &Path, max_size: u64, max_files: u32) -> io::Result<LogWriter> {
        fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(FILE))?;
        let size = file.metadata()?.len();
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            max_size,
            max_files: max_files.max(1),
            file,
            size,
        })
    }

    pub fn write(&mut self, stream: &str, line: &[u8], partial: bool) -> io::Result<()> {
        let rec = Record {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            stream: stream.to_string(),
            line: String::from_utf8_lossy(line).into_owned(),
            partial,
        };
        let mut data = serde_json::to_vec(&rec).expect("records serialize");
        data.push(b'\n');
        if self.size > 0 && self.size + data.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(&data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let path = |i: u32| {
            if i == 0 {
                self.dir.join(FILE)
            } else {
                self.dir.join(format!("{FILE}.{i}"))
            }
        };
        let last = self.max_files - 1;
        let _ = fs::remove_file(path(last));
        for i in (0..last).rev() {
            let _ = fs::rename(path(i), path(i + 1));
        }
        self.file = OpenOptions::new().create(true).append(true).open(path(0))?;
        self.size = 0;
        Ok(())
    }
}

/// Cuts a byte stream into lines; overlong ones into [`MAX_LINE`] pieces on
/// UTF-8 boundaries, every piece but the last of a line marked partial.
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feeds bytes; calls `emit(line, partial)` for every complete piece.
    pub fn feed(&mut self, data: &[u8], emit: &mut dyn FnMut(&[u8], bool)) {
        self.buf.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &self.buf[start..];
            if let Some(nl) = rest.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
                emit(&rest[..nl], false);
                start += nl + 1;
            } else if rest.len() > MAX_LINE {
                let mut cut = MAX_LINE;
                while cut > MAX_LINE - 4 && (rest[cut] & 0xC0) == 0x80 {
                    cut -= 1;
                }
                emit(&rest[..cut], true);
                start += cut;
            } else {
                break;
            }
        }
        self.buf.drain(..start);
    }

    /// At end of stream: an unterminated last line is stored, marked partial.
    pub fn finish(&mut self, emit: &mut dyn FnMut(&[u8], bool)) {
        if !self.buf.is_empty() {
            emit(&self.buf, true);
            self.buf.clear();
        }
    }
}

fn files_oldest_first(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let i: u32 = n.strip_prefix(&format!("{FILE}."))?.parse().ok()?;
            Some((i, e.path()))
        })
        .collect();
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    rotated.into_iter().map(|(_, p)| p).collect()
}

fn numbered(dir: &Path, i: u32) -> PathBuf {
    if i == 0 {
        dir.join(FILE)
    } else {
        dir.join(format!("{FILE}.{i}"))
    }
}

/// Index of the file holding inode `ino` (0 is the current file).
fn index_of(dir: &Path, ino: u64) -> Option<u32> {
    (0..1024)
        .take_while(|i| *i == 0 || numbered(dir, *i).exists() || numbered(dir, i + 1).exists())
        .find(|i| fs::metadata(numbered(dir, *i)).is_ok_and(|m| m.ino() == ino))
}

/// After the file with inode `ino` was rotated away: the file written right
/// after it (one index newer), or the oldest one left if it was dropped.
fn next_file(dir: &Path, ino: u64) -> Option<File> {
    for _ in 0..100 {
        let Some(k) = index_of(dir, ino) else {
            // Dropped by the size cap: continue from the oldest file left.
            return files_oldest_first(dir)
                .first()
                .and_then(|p| File::open(p).ok())
                .or_else(|| File::open(dir.join(FILE)).ok());
        };
        if k == 0 {
            return File::open(dir.join(FILE)).ok();
        }
        let f = File::open(numbered(dir, k - 1)).ok();
        // A rotation between the two looks shifts every name: try again.
        if index_of(dir, ino) == Some(k) {
            return f;
        }
    }
    File::open(dir.join(FILE)).ok()
}

/// Follows a container's log: the last `tail` records, then (if `follow`) new
/// ones across rotations until `keep_going` says stop and the file is drained.
/// Each record is passed to `out` as a JSON line; `out` returning false stops.
pub fn read(
    dir: &Path,
    tail: Option<usize>,
    follow: bool,
    keep_going: &dyn Fn() -> bool,
    out: &mut dyn FnMut(String) -> bool,
) -> io::Result<()> {
    let current_path = dir.join(FILE);
    let mut current = match File::open(&current_path) {
        Ok(f) => Some(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let mut lines: Vec<String> = Vec::new();
    // If the file we opened as current has been rotated since, it is among
    // the rotated ones: stop there (it is read through `current`), and reach
    // the newer files by walking forward below, so nothing is read twice.
    let cur_ino = match current.as_ref() {
        Some(f) => Some(f.metadata()?.ino()),
        None => None,
    };
    for p in files_oldest_first(dir) {
        if let Ok(f) = File::open(&p) {
            if Some(f.metadata()?.ino()) == cur_ino {
                break;
            }
            lines.extend(BufReader::new(f).lines().map_while(Result::ok));
        }
    }
    let mut pending = Vec::new();
    if let Some(f) = current.as_mut() {
        f.read_to_end(&mut pending)?;
    }
    let cut = pending
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    lines.extend(
        String::from_utf8_lossy(&pending[..cut])
            .lines()
            .map(String::from),
    );
    pending.drain(..cut);
    let skip = tail.map_or(0, |t| lines.len().saturating_sub(t));
    for l in lines.into_iter().skip(skip) {
        if !out(l) {
            return Ok(());
        }
    }
    // Without follow: still drain what was written meanwhile and walk past
    // rotations up to the current file, then stop.
    let keep_going = || follow && keep_going();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let mut got = 0;
        if let Some(f) = current.as_mut() {
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                got += n;
                pending.extend_from_slice(&buf[..n]);
            }
        }
        while let Some(i) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=i).collect();
            if !out(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned()) {
                return Ok(());
            }
        }
        if got > 0 {
            continue;
        }
        // Drained: has the file been rotated away under us?
        let rotated = match (fs::metadata(&current_path), current.as_ref()) {
            (Ok(m), Some(f)) => m.ino() != f.metadata()?.ino(),
            (Ok(_), None) => true,
            (Err(_), _) => false,
        };
        if rotated {
            current = match current.as_ref() {
                Some(f) => next_file(dir, f.metadata()?.ino()),
                None => File::open(&current_path).ok(),
            };
            if let Some(f) = current.as_mut() {
                f.seek(SeekFrom::Start(0))?;
            }
            continue;
        }
        if !keep_going() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_long_lines_and_marks_them() {
        let mut s = LineSplitter::default();
        let mut got: Vec<(usize, bool)> = Vec::new();
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        s.feed(b"short\n", &mut |l, p| got.push((l.len(), p)));
        s.feed(&long, &mut |l, p| got.push((l.len(), p)));
        s.feed(b"\nend", &mut |l, p| got.push((l.len(), p)));
        s.finish(&mut |l, p| got.push((l.len(), p)));
        assert_eq!(
            got,
            vec![
                (5, false),
                (MAX_LINE, true),
                (MAX_LINE, true),
                (10, false),
                (3, true)
            ]
        );
    }

    #[test]
    fn splits_on_utf8_boundaries() {
        let mut s = LineSplitter::default();
        let mut text = "é".repeat(MAX_LINE);
        text.push('\n');
        let mut pieces = Vec::new();
        s.feed(text.as_bytes(), &mut |l, _| pieces.push(l.to_vec()));
        assert!(pieces.iter().all(|p| std::str::from_utf8(p).is_ok()));
        assert_eq!(pieces.concat(), "é".repeat(MAX_LINE).as_bytes());
    }

    #[test]
    fn rotation_keeps_order_and_caps_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = LogWriter::open(tmp.path(), 4096, 3).unwrap();
        for i in 0..300 {
            w.write("stdout", format!("line {i}").as_bytes(), false)
                .unwrap();
        }
        let names: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        let mut seen = Vec::new();
        read(tmp.path(), None, false, &|| false, &mut |l| {
            let r: Record = serde_json::from_str(&l).unwrap();
            seen.push(
                r.line
                    .strip_prefix("line ")
                    .unwrap()
                    .parse::<u32>()
                    .unwrap(),
            );
            true
        })
        .unwrap();
        assert!(
            seen.windows(2).all(|w| w[1] == w[0] + 1),
            "in order, no gaps"
        );
        assert_eq!(*seen.last().unwrap(), 299);
        let mut tail = Vec::new();
        read(tmp.path(), Some(2), false, &|| false, &mut |l| {
            tail.push(l);
            true
        })
        .unwrap();
        assert_eq!(tail.len(), 2);
        assert!(tail[1].contains("line 299"));
    }

    #[test]
    fn follow_crosses_rotation() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut w = LogWriter::open(&dir, 4096, 2).unwrap();
        w.write("stdout", b"line 0", false).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let d2 = dir.clone();
        let reader = std::thread::spawn(move || {
            let mut n = 0;
            read(&d2, None, true, &|| true, &mut |l| {
                let r: Record = serde_json::from_str(&l).unwrap();
                assert_eq!(r.line, format!("line {n}"));
                n += 1;
                tx.send(()).unwrap();
                n < 60
            })
            .unwrap();
            n
        });
        rx.recv().unwrap();
        for i in 1..60 {
            w.write("stdout", format!("line {i}").as_bytes(), false)
                .unwrap();
            // one record at a time, so the reader meets every rotation
            rx.recv().unwrap();
        }
        assert_eq!(reader.join().unwrap(), 60);
    }
}
