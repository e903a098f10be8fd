//! A guard in front of the tar crate: it follows the tar stream's headers
//! as the bytes pass (changing none) and refuses what would make the tar
//! crate allocate without bound, or a layer fill the disk: an extension
//! entry (GNU long name or link, PAX header) over 1 MiB (tar reads those
//! whole into memory, whatever size they declare), and a stream longer than
//! its cap. A PAX `size=` record moves the next entry's end, as in tar.

use std::io::{self, Read};

/// The largest extension entry let through.
const MAX_EXTENSION: u64 = 1 << 20;

pub(super) struct TarGuard<R> {
    inner: R,
    /// Bytes passed so far.
    pos: u64,
    /// Where the next header block starts.
    next: u64,
    /// The header block being collected.
    hdr: Vec<u8>,
    /// A PAX header's data being collected (bytes, size).
    pax: Option<(Vec<u8>, u64)>,
    /// `size=` of the last PAX header, for the next entry.
    pending: Option<u64>,
    /// A zero block was seen: the archive ended, only bytes are counted.
    ended: bool,
    max: u64,
}

impl<R: Read> TarGuard<R> {
    pub(super) fn new(inner: R, max: u64) -> TarGuard<R> {
        TarGuard {
            inner,
            pos: 0,
            next: 0,
            hdr: Vec::with_capacity(512),
            pax: None,
            pending: None,
            ended: false,
            max,
        }
    }

    fn follow(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut i = 0;
        while i < bytes.len() && !self.ended {
            let at = self.pos + i as u64;
            if at >= self.next {
                let take = (512 - self.hdr.len()).min(bytes.len() - i);
                self.hdr.extend_from_slice(&bytes[i..i + take]);
                i += take;
                if self.hdr.len() == 512 {
                    self.header()?;
                    self.hdr.clear();
                }
            } else {
                let take = ((self.next - at) as usize).min(bytes.len() - i);
                if let Some((buf, size)) = &mut self.pax {
                    let room = (*size as usize).saturating_sub(buf.len()).min(take);
                    buf.extend_from_slice(&bytes[i..i + room]);
                }
                i += take;
            }
        }
        Ok(())
    }

    /// One whole header block at `self.next`.
    fn header(&mut self) -> io::Result<()> {
        if self.hdr.iter().all(|&b| b == 0) {
            self.ended = true;
            return Ok(());
        }
        if let Some((buf, _)) = self.pax.take() {
            self.pending = pax_size(&buf).or(self.pending);
        }
        let kind = self.hdr[156];
        let mut size = field(&self.hdr[124..136])?;
        let extension = matches!(kind, b'L' | b'K' | b'x' | b'g');
        if extension && size > MAX_EXTENSION {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a tar extension entry of {size} bytes (at most {MAX_EXTENSION})"),
            ));
        }
        if !extension {
            size = self.pending.take().unwrap_or(size);
        }
        if kind == b'x' {
            self.pax = Some((Vec::with_capacity(size as usize), size));
        }
        self.next += 512 + size.div_ceil(512) * 512;
        Ok(())
    }
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.follow(&buf[..n])?;
        self.pos += n as u64;
        if self.pos > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the layer unpacks to more than {} bytes (images.max_layer_unpacked)",
                    self.max
                ),
            ));
        }
        Ok(n)
    }
}

/// A numeric header field: octal text, or base-256 when its first bit is set.
fn field(f: &[u8]) -> io::Result<u64> {
    if f[0] & 0x80 != 0 {
        return Ok(f[1..]
            .iter()
            .fold(0u64, |n, &b| n.saturating_mul(256).saturating_add(b as u64)));
    }
    let text = String::from_utf8_lossy(f);
    let t = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if t.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(t, 8).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a tar header with a bad size field {t:?}"),
        )
    })
}

/// The `size=` record of a PAX header's data (`LEN key=value\n` records).
fn pax_size(data: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(data);
    text.lines()
        .rev()
        .filter_map(|l| l.split_once(' ').map(|(_, kv)| kv))
        .find_map(|kv| kv.strip_prefix("size="))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(data: &[u8], max: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        // small reads: headers straddle them
        let mut g = TarGuard::new(io::BufReader::with_capacity(7, data), max);
        let mut buf = [0u8; 13];
        loop {
            let n = g.read(&mut buf)?;
            if n == 0 {
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn a_tar_with_long_names_and_pax_sizes_passes_unchanged() {
        let mut b = tar::Builder::new(Vec::new());
        let long = format!("{}/file", "d".repeat(300));
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
        // a PAX header whose size= says the next entry has 1000 bytes of
        // data, where that entry's own size field says 0 (as for files
        // over 8 GiB): tar follows the PAX size, so must the guard
        b.append_pax_extensions([("size", &b"1000"[..])]).unwrap();
        let mut data = b.into_inner().unwrap();
        data.truncate(data.len() - 1024); // the builder's end blocks
        let mut h = tar::Header::new_ustar();
        h.set_path("big").unwrap();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        data.extend_from_slice(h.as_bytes());
        data.extend_from_slice(&[7u8; 1000]);
        data.resize(data.len().div_ceil(512) * 512, 0);
        let mut b = tar::Builder::new(data);
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        b.append_data(&mut h, "after", &b"z"[..]).unwrap();
        let data = b.into_inner().unwrap();
        assert_eq!(pass(&data, u64::MAX).unwrap(), data);
        let mut ar = tar::Archive::new(TarGuard::new(&data[..], u64::MAX));
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, vec![long, "big".to_string(), "after".to_string()]);
    }

    #[test]
    fn a_huge_extension_entry_and_an_overlong_stream_are_refused() {
        // a GNU long-name entry that declares 4 GiB: tar would read it all
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(4 << 30);
        h.set_cksum();
        let mut data = h.as_bytes().to_vec();
        data.extend_from_slice(&[b'a'; 4096]);
        let e = pass(&data, u64::MAX).unwrap_err();
        assert!(
            e.to_string()
                .contains("extension entry of 4294967296 bytes"),
            "{e}"
        );
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(4096);
        b.append_data(&mut h, "f", &[0u8; 4096][..]).unwrap();
        let data = b.into_inner().unwrap();
        assert!(pass(&data, 2048)
            .unwrap_err()
            .to_string()
            .contains("more than 2048 bytes"));
    }
}
