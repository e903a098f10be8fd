//! Reading a container's log for the API: the last records, then (when
//! following) new ones as they are written, across rotations.

use super::{segment, segments};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    let (mut f, lines) = Follower::open(dir)?;
    let skip = tail.map_or(0, |t| lines.len().saturating_sub(t));
    for l in lines.into_iter().skip(skip) {
        if !out(l) {
            return Ok(());
        }
    }
    // Without follow: still drain what was written meanwhile and walk to the
    // newest segment, then stop.
    f.follow(&|| follow && keep_going(), out)
}

/// Where reading has got to: the segment being read and its unterminated
/// last line.
struct Follower {
    dir: PathBuf,
    current: Option<File>,
    cur_seq: Option<u64>,
    pending: Vec<u8>,
}

impl Follower {
    /// The backlog's complete lines: every segment but the newest, read
    /// whole; the newest is read through `current` and followed from there.
    /// Segments are never renamed, so each one is read exactly once, in order.
    fn open(dir: &Path) -> io::Result<(Follower, Vec<String>)> {
        let listed = segments(dir);
        let mut lines: Vec<String> = Vec::new();
        let mut f = Follower {
            dir: dir.to_path_buf(),
            current: None,
            cur_seq: None,
            pending: Vec::new(),
        };
        for (i, &seq) in listed.iter().enumerate() {
            let Ok(file) = File::open(segment(dir, seq)) else {
                continue; // dropped by the cap meanwhile
            };
            if i + 1 == listed.len() {
                (f.current, f.cur_seq) = (Some(file), Some(seq));
            } else {
                lines.extend(BufReader::new(file).lines().map_while(Result::ok));
            }
        }
        if let Some(file) = f.current.as_mut() {
            file.read_to_end(&mut f.pending)?;
        }
        let cut = f
            .pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        lines.extend(
            String::from_utf8_lossy(&f.pending[..cut])
                .lines()
                .map(String::from),
        );
        f.pending.drain(..cut);
        Ok((f, lines))
    }

    /// Passes on new lines until `out` or `keep_going` says stop.
    fn follow(
        &mut self,
        keep_going: &dyn Fn() -> bool,
        out: &mut dyn FnMut(String) -> bool,
    ) -> io::Result<()> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            let got = self.read_available(&mut buf)?;
            if !emit_lines(&mut self.pending, out) {
                return Ok(());
            }
            if got > 0 {
                continue;
            }
            #[cfg(test)]
            tests::AFTER_DRAIN.with(|h| h.borrow_mut().as_mut().map(|f| f()));
            // Drained. A newer segment means this one is finished: the writer
            // created the newer one before writing there, and never comes back.
            let newer = segments(&self.dir)
                .into_iter()
                .find(|s| self.cur_seq.is_none_or(|c| *s > c));
            if let Some(next) = newer {
                if !self.move_to(next, out)? {
                    return Ok(());
                }
                continue;
            }
            if !keep_going() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reads what the current segment has now into `pending`; returns how
    /// many bytes came.
    fn read_available(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        if let Some(f) = self.current.as_mut() {
            loop {
                let n = f.read(buf)?;
                if n == 0 {
                    break;
                }
                got += n;
                self.pending.extend_from_slice(&buf[..n]);
            }
        }
        Ok(got)
    }

    /// Finishes the current segment (what came since the last read) and
    /// moves to segment `next`. False when `out` asked to stop.
    fn move_to(&mut self, next: u64, out: &mut dyn FnMut(String) -> bool) -> io::Result<bool> {
        if let Some(f) = self.current.as_mut() {
            f.read_to_end(&mut self.pending)?;
            if !emit_lines(&mut self.pending, out) {
                return Ok(false);
            }
        }
        self.pending.clear();
        // `next` may be dropped by the cap before we open it: then the
        // next listing finds the oldest one left after it.
        self.cur_seq = Some(next);
        self.current = File::open(segment(&self.dir, next)).ok();
        Ok(true)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::logs::{LogWriter, Record};
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
