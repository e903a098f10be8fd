//! Container logs as NDJSON records `{"ts","stream","line","seq"}` in size-capped
//! segments `log-00000001.ndjson`, `log-00000002.ndjson`, ... The newest
//! segment is the one being written. A segment is never renamed: rotation
//! creates the next number and deletes the oldest beyond `max_files`, so a
//! rotation costs O(1) and a reader (`follow`, a shipper's cursor) always
//! knows where it is by (segment number, offset). A line longer than
//! [`MAX_LINE`] is split into records marked `"partial": true`. `seq` numbers
//! a container's records 1, 2, 3, ... across runs, so a reader that finds a
//! gap knows exactly how many records the size cap dropped before it read
//! them, and a collector can tell a resent record from a new one.
//!
//! The shim writes them (so nothing is lost while the agent is down); the
//! agent only reads them.

mod follow;

pub use follow::read;

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Longest line stored as one record.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    pub ts: String,
    pub stream: String,
    pub line: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// 0 in records written before numbering existed.
    #[serde(default)]
    pub seq: u64,
}

/// Path of segment `seq` in `dir`.
pub fn segment(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("log-{seq:08}.ndjson"))
}

/// The segments present in `dir`, oldest first.
pub fn segments(dir: &Path) -> Vec<u64> {
    let mut seqs: Vec<u64> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            n.strip_prefix("log-")?
                .strip_suffix(".ndjson")?
                .parse()
                .ok()
        })
        .collect();
    seqs.sort_unstable();
    seqs
}

/// Appends records to the newest segment, starting the next one when a
/// record would take it past `max_size`.
pub struct LogWriter {
    dir: PathBuf,
    max_size: u64,
    max_files: u32,
    seq: u64,
    file: File,
    size: u64,
    /// `seq` of the next record.
    next: u64,
}

impl LogWriter {
    pub fn open(dir: &Path, max_size: u64, max_files: u32) -> io::Result<LogWriter> {
        fs::create_dir_all(dir)?;
        let present = segments(dir);
        let seq = present.last().copied().unwrap_or(1);
        let keep_from = (seq + 1).saturating_sub(u64::from(max_files.max(1)));
        for old in present.into_iter().take_while(|s| *s < keep_from) {
            let _ = fs::remove_file(segment(dir, old));
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment(dir, seq))?;
        let size = file.metadata()?.len();
        let next = segments(dir)
            .iter()
            .rev()
            .find_map(|s| last_record_seq(&segment(dir, *s)))
            .unwrap_or(0)
            + 1;
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            max_size,
            max_files: max_files.max(1),
            seq,
            file,
            size,
            next,
        })
    }

    pub fn write(&mut self, stream: &str, line: &[u8], partial: bool) -> io::Result<()> {
        let rec = Record {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            stream: stream.to_string(),
            line: String::from_utf8_lossy(line).into_owned(),
            partial,
            seq: self.next,
        };
        self.next += 1;
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
        let next = self.seq + 1;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment(&self.dir, next))?;
        self.seq = next;
        self.size = 0;
        // O(1): only the segment that just fell off the end (open() sweeps
        // older leftovers, e.g. after max_files was lowered).
        if let Some(old) = next.checked_sub(u64::from(self.max_files)) {
            let _ = fs::remove_file(segment(&self.dir, old));
        }
        Ok(())
    }
}

/// `seq` of the last complete record of a segment (None: empty or unreadable).
fn last_record_seq(path: &Path) -> Option<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    // a record is at most MAX_LINE bytes of text, escaped (6 bytes per
    // control character at worst), plus its fields
    let back = len.min(6 * MAX_LINE as u64 + 4096);
    f.seek(SeekFrom::Start(len - back)).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    tail.split(|&b| b == b'\n')
        .rev()
        .filter(|l| !l.is_empty())
        .find_map(|l| serde_json::from_slice::<Record>(l).ok())
        .map(|r| r.seq)
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
}
