//! Where a shipper is in a source's log: (segment, offset, next record
//! number), persisted beside the segments; reading records from there across
//! rotations and past segments the size cap deleted.

use super::logs::{segment, segments, Record};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    pub segment: u64,
    pub offset: u64,
    /// Number of the next record expected (a higher one means a gap).
    pub next: u64,
}

pub const CURSOR_FILE: &str = "ship-cursor.json";

/// The persisted cursor of a source, if it has one.
pub fn load_cursor(dir: &Path) -> Option<Cursor> {
    std::fs::read(dir.join(CURSOR_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Reads up to `max` records from `cur` on; returns them with the cursor
/// after each. Moves to the next segment when this one is finished (a newer
/// one exists and this one is drained), or to the oldest left when the size
/// cap deleted it.
pub fn read_records(dir: &Path, cur: &mut Cursor, max: usize) -> Vec<(Record, Cursor)> {
    let mut out = Vec::new();
    for _ in 0..8 {
        let mut f = match File::open(segment(dir, cur.segment)) {
            Ok(f) => f,
            Err(_) => {
                // not there: deleted by the size cap (or the cursor is new):
                // the oldest one left after it
                match segments(dir).into_iter().find(|s| *s > cur.segment) {
                    Some(next) => {
                        *cur = Cursor {
                            segment: next,
                            offset: 0,
                            next: cur.next,
                        };
                        continue;
                    }
                    None => return out,
                }
            }
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len > cur.offset {
            if f.seek(SeekFrom::Start(cur.offset)).is_err() {
                return out;
            }
            let mut buf = Vec::new();
            let _ = (&mut f)
                .take((len - cur.offset).min(256 << 10))
                .read_to_end(&mut buf);
            let mut pos = 0;
            while out.len() < max {
                let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
                    break;
                };
                let line = &buf[pos..pos + nl];
                pos += nl + 1;
                cur.offset += (nl + 1) as u64;
                if let Ok(r) = serde_json::from_slice::<Record>(line) {
                    out.push((r, *cur));
                }
            }
            if out.len() >= max || pos == 0 {
                // full, or only the start of a record being written
                return out;
            }
            continue;
        }
        // At the end of this segment. Segments go oldest first, so if any
        // newer one exists the next number does; the writer made it before
        // writing there and never comes back to this one: drain what came
        // since the length above, then move on.
        if !segment(dir, cur.segment + 1).exists() {
            return out;
        }
        if f.metadata().map(|m| m.len()).unwrap_or(0) > cur.offset {
            continue;
        }
        *cur = Cursor {
            segment: cur.segment + 1,
            offset: 0,
            next: cur.next,
        };
    }
    out
}

/// Bytes not yet read past `cur`.
pub fn backlog(dir: &Path, cur: &Cursor) -> u64 {
    segments(dir)
        .into_iter()
        .filter(|s| *s >= cur.segment)
        .map(|s| {
            let len = std::fs::metadata(segment(dir, s))
                .map(|m| m.len())
                .unwrap_or(0);
            if s == cur.segment {
                len.saturating_sub(cur.offset)
            } else {
                len
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::logs::LogWriter;

    #[test]
    fn reads_across_segments_and_past_deleted_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // ~100-byte records, 300-byte segments, 2 kept
        let mut w = LogWriter::open(dir, 300, 2).unwrap();
        for i in 1..=4 {
            w.write("stdout", format!("line {i}").as_bytes(), false)
                .unwrap();
        }
        let mut cur = load_cursor(dir).unwrap_or_default();
        let got = read_records(dir, &mut cur, 100);
        let seqs: Vec<u64> = got.iter().map(|(r, _)| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4], "across a rotation, in order");
        // at the end: nothing more, the cursor stays
        let at = cur;
        assert!(read_records(dir, &mut cur, 100).is_empty());
        assert_eq!(cur, at);
        // the writer moves on and the cap deletes segments never read
        for i in 5..=12 {
            w.write("stdout", format!("line {i}").as_bytes(), false)
                .unwrap();
        }
        let got = read_records(dir, &mut cur, 100);
        let seqs: Vec<u64> = got.iter().map(|(r, _)| r.seq).collect();
        assert!(!seqs.is_empty() && seqs[0] > 5, "a gap: {seqs:?}");
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        assert_eq!(*seqs.last().unwrap(), 12);
        // the cursor after each record resumes right after it
        let (_, after_first) = got[0];
        let mut c = after_first;
        let again = read_records(dir, &mut c, 1);
        assert_eq!(again[0].0.seq, seqs[1]);
    }
}
