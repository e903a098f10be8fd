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

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// Emits every complete line in `pending`, keeping an unterminated tail.
/// False when `out` asked to stop.
fn emit_lines(pending: &mut Vec<u8>, out: &mut dyn FnMut(String) -> bool) -> bool {
    let mut start = 0;
    while let Some(i) = pending[start..].iter().position(|&b| b == b'\n') {
        if !out(String::from_utf8_lossy(&pending[start..start + i]).into_owned()) {
            return false;
        }
        start += i + 1;
    }
    pending.drain(..start);
    true
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
    // The backlog: every segment but the newest, read whole; the newest is
    // read through `current` and followed from there. Segments are never
    // renamed, so each one is read exactly once, in order.
    let listed = segments(dir);
    let mut lines: Vec<String> = Vec::new();
    let mut current: Option<File> = None;
    let mut cur_seq: Option<u64> = None;
    for (i, &seq) in listed.iter().enumerate() {
        let Ok(f) = File::open(segment(dir, seq)) else {
            continue; // dropped by the cap meanwhile
        };
        if i + 1 == listed.len() {
            (current, cur_seq) = (Some(f), Some(seq));
        } else {
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
    // Without follow: still drain what was written meanwhile and walk to the
    // newest segment, then stop.
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
        if !emit_lines(&mut pending, out) {
            return Ok(());
        }
        if got > 0 {
            continue;
        }
        #[cfg(test)]
        tests::AFTER_DRAIN.with(|h| h.borrow_mut().as_mut().map(|f| f()));
        // Drained. A newer segment means this one is finished: the writer
        // created the newer one before writing there, and never comes back.
        let newer = segments(dir)
            .into_iter()
            .find(|s| cur_seq.is_none_or(|c| *s > c));
        if let Some(next) = newer {
            if let Some(f) = current.as_mut() {
                f.read_to_end(&mut pending)?;
                if !emit_lines(&mut pending, out) {
                    return Ok(());
                }
            }
            pending.clear();
            // `next` may be dropped by the cap before we open it: then the
            // next listing finds the oldest one left after it.
            cur_seq = Some(next);
            current = File::open(segment(dir, next)).ok();
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
    use std::cell::RefCell;

    thread_local! {
        /// Runs in `read` between draining a segment and looking for a newer
        /// one: the window a writer's last line + rotation can fall into.
        pub static AFTER_DRAIN: RefCell<Option<Box<dyn FnMut()>>> = RefCell::new(None);
    }

    #[test]
    fn a_line_written_just_before_a_rotation_is_not_lost() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let w = std::rc::Rc::new(RefCell::new(LogWriter::open(&dir, 200, 10).unwrap()));
        w.borrow_mut().write("stdout", b"line 0", false).unwrap();
        let (w2, mut step) = (w.clone(), 0);
        AFTER_DRAIN.with(|h| {
            *h.borrow_mut() = Some(Box::new(move || {
                // line 1 is appended to segment 1 after the reader's last
                // read of it; then the writer moves on to segments 2 and 3
                if step == 0 {
                    let mut w = w2.borrow_mut();
                    w.write("stdout", b"line 1", false).unwrap();
                    w.write("stdout", &[b'x'; 150], false).unwrap();
                    w.write("stdout", b"line 2", false).unwrap();
                }
                step += 1;
            }))
        });
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        read(
            &dir,
            None,
            true,
            &|| std::time::Instant::now() < deadline,
            &mut |l| {
                let r: Record = serde_json::from_str(&l).unwrap();
                seen.push(r.line);
                seen.len() < 4
            },
        )
        .unwrap();
        AFTER_DRAIN.with(|h| h.borrow_mut().take());
        assert_eq!(segments(&dir), vec![1, 2, 3], "the writer rotated twice");
        assert_eq!(
            seen[..2],
            ["line 0", "line 1"],
            "line 1 came from segment 1 after its last read"
        );
        assert_eq!(seen[3], "line 2");
    }

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

    /// Writer and follower race freely: the follower still sees every line
    /// once, in order (the writer never drops a file here: the cap is high).
    #[test]
    fn follow_races_a_fast_writer() {
        const N: u32 = 5000;
        for _ in 0..2 {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().to_path_buf();
            let mut w = LogWriter::open(&dir, 1024, 100_000).unwrap();
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (d2, done2) = (dir.clone(), done.clone());
            let reader = std::thread::spawn(move || {
                let mut seen = Vec::new();
                read(
                    &d2,
                    None,
                    true,
                    &|| !done2.load(std::sync::atomic::Ordering::SeqCst),
                    &mut |l| {
                        let r: Record = serde_json::from_str(&l).unwrap();
                        seen.push(r.line[5..].parse::<u32>().unwrap());
                        true
                    },
                )
                .unwrap();
                seen
            });
            for i in 0..N {
                w.write("stdout", format!("line {i}").as_bytes(), false)
                    .unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            let seen = reader.join().unwrap();
            assert_eq!(seen.len(), N as usize, "every line once");
            assert!(
                seen.iter().enumerate().all(|(i, n)| *n == i as u32),
                "in order"
            );
        }
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
