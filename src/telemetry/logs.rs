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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[schema(as = LogRecord)]
pub struct Record {
    pub ts: String,
    pub stream: String,
    pub line: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// 0 in records written before numbering existed.
    #[serde(default)]
    #[schema(required)]
    pub seq: u64,
    /// On a note of the writer (stream `hydra`): how many records just
    /// before it could not be stored (the disk was full); their numbers are
    /// the gap before this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

/// The stream of the writer's own notes in a container's log.
pub const NOTE_STREAM: &str = "hydra";

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
/// record would take it past `max_size`. A record that cannot be stored
/// (a full disk, a vanished directory) is lost, never half-written: the
/// segment is cut back to its last whole record, the loss counted, and the
/// next record that can be stored is preceded by a note saying how many
/// were lost. Writing never fails for the caller; the shim keeps draining
/// the container's output whatever the disk does.
pub struct LogWriter {
    dir: PathBuf,
    max_size: u64,
    max_files: u32,
    seq: u64,
    /// None while the segment cannot be opened (retried on the next record).
    file: Option<File>,
    size: u64,
    /// `seq` of the next record.
    next: u64,
    /// Records lost since the last note.
    lost: u64,
    /// Records lost since the writer was made, for the caller's accounting.
    pub lost_total: u64,
    /// After a failed write, records are counted as lost without trying
    /// until then (a flood on a full disk costs no system calls).
    retry_at: Option<std::time::Instant>,
}

/// How long after a failed write the next one is tried.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_millis(100);

impl LogWriter {
    /// Opens the newest segment of `dir` (made if missing). Fails only when
    /// the directory cannot be made; see [`LogWriter::open_resilient`].
    pub fn open(dir: &Path, max_size: u64, max_files: u32) -> io::Result<LogWriter> {
        fs::create_dir_all(dir)?;
        let mut w = LogWriter::open_resilient(dir, max_size, max_files);
        if w.file.is_none() {
            w.reopen()?;
        }
        Ok(w)
    }

    /// A writer even when nothing can be stored now (a full disk): the
    /// numbering goes on from what is on disk, and the segment is opened
    /// when the next record comes.
    pub fn open_resilient(dir: &Path, max_size: u64, max_files: u32) -> LogWriter {
        let _ = fs::create_dir_all(dir);
        let present = segments(dir);
        let seq = present.last().copied().unwrap_or(1);
        let keep_from = (seq + 1).saturating_sub(u64::from(max_files.max(1)));
        for old in present.into_iter().take_while(|s| *s < keep_from) {
            let _ = fs::remove_file(segment(dir, old));
        }
        let next = segments(dir)
            .iter()
            .rev()
            .find_map(|s| last_record_seq(&segment(dir, *s)))
            .unwrap_or(0)
            + 1;
        let mut w = LogWriter {
            dir: dir.to_path_buf(),
            max_size,
            max_files: max_files.max(1),
            seq,
            file: None,
            size: 0,
            next,
            lost: 0,
            lost_total: 0,
            retry_at: None,
        };
        let _ = w.reopen();
        w
    }

    fn reopen(&mut self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(segment(&self.dir, self.seq))?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    /// Appends one record; Err when it could not be stored (it is then
    /// counted as lost and noted before the next one stored).
    pub fn write(&mut self, stream: &str, line: &[u8], partial: bool) -> io::Result<()> {
        if self.retry_at.is_some_and(|t| std::time::Instant::now() < t) {
            // counted, but the retry time stays: a steady flood must not
            // push it back forever
            self.next += 1;
            self.lost += 1;
            self.lost_total += 1;
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        self.retry_at = None;
        if self.lost > 0 {
            let note = format!(
                "{} log records were not stored: the disk was full",
                self.lost
            );
            let dropped = Some(self.lost);
            if let Err(e) = self.append(NOTE_STREAM, note.as_bytes(), false, dropped) {
                // the number the note took is the lost line's
                return self.lose(stream, e);
            }
            self.lost = 0;
        }
        match self.append(stream, line, partial, None) {
            Ok(()) => Ok(()),
            Err(e) => self.lose(stream, e),
        }
    }

    fn lose(&mut self, _stream: &str, e: io::Error) -> io::Result<()> {
        self.lost += 1;
        self.lost_total += 1;
        self.retry_at = Some(std::time::Instant::now() + RETRY_AFTER);
        Err(e)
    }

    /// Writes one record whole, or nothing (the segment is cut back).
    fn append(
        &mut self,
        stream: &str,
        line: &[u8],
        partial: bool,
        dropped: Option<u64>,
    ) -> io::Result<()> {
        let rec = Record {
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            stream: stream.to_string(),
            line: String::from_utf8_lossy(line).into_owned(),
            partial,
            seq: self.next,
            dropped,
        };
        self.next += 1;
        let mut data = serde_json::to_vec(&rec).expect("records serialize");
        data.push(b'\n');
        if self.file.is_none() {
            self.reopen()?;
        }
        if self.size > 0 && self.size + data.len() as u64 > self.max_size {
            self.rotate()?;
        }
        let f = self.file.as_mut().expect("opened above");
        if let Err(e) = f.write_all(&data) {
            // a partial record would glue onto the next one: cut it off
            // (shrinking needs no space)
            if f.set_len(self.size).is_err() {
                self.file = None;
            }
            return Err(e);
        }
        self.size += data.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let next = self.seq + 1;
        self.file = Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment(&self.dir, next))?,
        );
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

#[cfg(test)]
mod disk_tests {
    use super::*;

    /// A steady flood (a line every few ms, faster than the retry period)
    /// must not push the retry back forever: the writer tries again at the
    /// time set by the first failure.
    #[test]
    fn a_flood_does_not_postpone_the_retry() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("logs");
        std::fs::write(&dir, b"not a directory").unwrap();
        let mut w = LogWriter::open_resilient(&dir, 1 << 20, 3);
        assert!(w.write("stdout", b"lost", false).is_err());
        let first = w.retry_at.expect("a retry time after a failure");
        for _ in 0..100 {
            assert!(w.write("stdout", b"lost", false).is_err());
        }
        assert_eq!(w.retry_at, Some(first), "the retry time stays put");
        assert_eq!(w.lost_total, 101);
        std::fs::remove_file(&dir).unwrap();
        let deadline = first + RETRY_AFTER * 50;
        while w.write("stdout", b"back", false).is_err() {
            assert!(std::time::Instant::now() < deadline, "never retried");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let text = std::fs::read_to_string(segment(&dir, 1)).unwrap();
        assert!(text.contains("\"dropped\":"), "{text}");
    }

    /// A full disk, simulated by a directory the writer can no longer open
    /// files in: records are lost and numbered, never half-written, and the
    /// next one stored is preceded by a note with the count.
    #[test]
    fn a_write_that_cannot_be_stored_is_counted_and_noted() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("logs");
        let mut w = LogWriter::open(&dir, 1 << 20, 3).unwrap();
        w.write("stdout", b"one", false).unwrap();
        // the segment vanishes and cannot be made again: a read-only dir
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, b"not a directory").unwrap();
        w.file = None;
        for _ in 0..3 {
            assert!(w.write("stdout", b"lost", false).is_err());
        }
        assert_eq!(w.lost_total, 3);
        std::fs::remove_file(&dir).unwrap();
        w.retry_at = None;
        w.write("stdout", b"two", false).unwrap();
        let text = std::fs::read_to_string(segment(&dir, 1)).unwrap();
        let recs: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), 2, "{text}");
        assert_eq!(
            (recs[0].stream.as_str(), recs[0].dropped, recs[0].seq),
            (NOTE_STREAM, Some(3), 5)
        );
        assert_eq!((recs[1].line.as_str(), recs[1].seq), ("two", 6));
        // a later writer goes on numbering from the disk
        let w2 = LogWriter::open(&dir, 1 << 20, 3).unwrap();
        assert_eq!(w2.next, 7);
    }
}
