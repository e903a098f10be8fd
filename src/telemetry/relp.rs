//! A RELP client (the Reliable Event Logging Protocol of rsyslog's imrelp):
//! frames `TXNR SP COMMAND SP DATALEN [SP DATA] LF`; every `syslog` frame is
//! answered by a `rsp` frame with the same transaction number, so a message
//! is delivered once its `200` arrives. Hand-written: no maintained Rust
//! crate speaks RELP, and the protocol is these few frames.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One frame received from the server.
#[derive(Debug, PartialEq)]
pub enum Frame {
    /// An answer: transaction, status code, text.
    Rsp(u32, u16, String),
    /// The server is going away.
    ServerClose,
}

pub struct Relp {
    stream: TcpStream,
    rbuf: Vec<u8>,
    next: u32,
}

impl Relp {
    /// Connects and opens a session (offering the `syslog` command).
    pub fn open(addr: &str, timeout: Duration) -> io::Result<Relp> {
        let sa = std::net::ToSocketAddrs::to_socket_addrs(addr)?
            .next()
            .ok_or_else(|| io::Error::other(format!("{addr}: no address")))?;
        let stream = TcpStream::connect_timeout(&sa, timeout)?;
        stream.set_nodelay(true)?;
        // a receiver that stops reading must not hold the sender forever
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut r = Relp {
            stream,
            rbuf: Vec::with_capacity(4096),
            next: 1,
        };
        let offer = b"relp_version=0\nrelp_software=hydra-agent\ncommands=syslog";
        let mut out = Vec::new();
        let t = r.frame(&mut out, "open", offer);
        r.stream.write_all(&out)?;
        match r.wait(timeout)? {
            Some(Frame::Rsp(n, 200, _)) if n == t => Ok(r),
            Some(Frame::Rsp(_, code, text)) => Err(io::Error::other(format!(
                "the server refused the session: {code} {text}"
            ))),
            Some(Frame::ServerClose) => Err(io::Error::other("the server closed the session")),
            None => Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to open")),
        }
    }

    /// Appends a frame to `out`; returns its transaction number.
    fn frame(&mut self, out: &mut Vec<u8>, cmd: &str, data: &[u8]) -> u32 {
        let t = self.next;
        self.next = if self.next >= 999_999_999 {
            1
        } else {
            self.next + 1
        };
        out.extend_from_slice(format!("{t} {cmd} {}", data.len()).as_bytes());
        if !data.is_empty() {
            out.push(b' ');
            out.extend_from_slice(data);
        }
        out.push(b'\n');
        t
    }

    /// Appends a `syslog` frame carrying `msg` to `out`.
    pub fn syslog(&mut self, out: &mut Vec<u8>, msg: &[u8]) -> u32 {
        self.frame(out, "syslog", msg)
    }

    pub fn send(&mut self, out: &[u8]) -> io::Result<()> {
        self.stream.write_all(out)
    }

    /// The next frame, waiting at most `timeout` for it (None: none came).
    pub fn wait(&mut self, timeout: Duration) -> io::Result<Option<Frame>> {
        if let Some(f) = parse(&mut self.rbuf)? {
            return Ok(Some(f));
        }
        self.stream
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut chunk = [0u8; 8192];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed",
                    ))
                }
                Ok(n) => {
                    self.rbuf.extend_from_slice(&chunk[..n]);
                    if let Some(f) = parse(&mut self.rbuf)? {
                        return Ok(Some(f));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("not RELP: {what}"))
}

/// Takes one complete frame off the front of `buf`, if there is one.
pub fn parse(buf: &mut Vec<u8>) -> io::Result<Option<Frame>> {
    // header: TXNR SP COMMAND SP DATALEN, each field bounded
    let field = |from: usize, max: usize| -> io::Result<Option<usize>> {
        match buf[from..]
            .iter()
            .take(max + 1)
            .position(|&b| b == b' ' || b == b'\n')
        {
            Some(i) => Ok(Some(from + i)),
            None if buf.len() - from > max => Err(bad("overlong header field")),
            None => Ok(None),
        }
    };
    let Some(e1) = field(0, 9)? else {
        return Ok(None);
    };
    let Some(e2) = field(e1 + 1, 32)? else {
        return Ok(None);
    };
    let Some(e3) = field(e2 + 1, 9)? else {
        return Ok(None);
    };
    let txnr: u32 = std::str::from_utf8(&buf[..e1])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("transaction number"))?;
    let cmd = String::from_utf8_lossy(&buf[e1 + 1..e2]).into_owned();
    let len: usize = std::str::from_utf8(&buf[e2 + 1..e3])
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&l| l <= 128 * 1024)
        .ok_or_else(|| bad("data length"))?;
    let (data_start, end) = match (len, buf[e3]) {
        (0, b'\n') => (e3, e3),
        (0, _) => {
            // "0 " followed by the trailer
            if buf.len() < e3 + 2 {
                return Ok(None);
            }
            (e3 + 1, e3 + 1)
        }
        (_, b' ') => (e3 + 1, e3 + 1 + len),
        _ => return Err(bad("missing data")),
    };
    if buf.len() <= end {
        return Ok(None);
    }
    if buf[end] != b'\n' {
        return Err(bad("missing trailer"));
    }
    let data = String::from_utf8_lossy(&buf[data_start..end]).into_owned();
    buf.drain(..=end);
    match cmd.as_str() {
        "rsp" => {
            let code = data
                .get(..3)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| bad("rsp without a status"))?;
            let text = data
                .get(4..)
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            Ok(Some(Frame::Rsp(txnr, code, text)))
        }
        "serverclose" => Ok(Some(Frame::ServerClose)),
        other => Err(bad(&format!("unexpected command {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers_and_refuses_garbage() {
        let offer = "200 OK\nrelp_version=0\nrelp_software=librelp,1.11.0,http://librelp.adiscon.com\ncommands=syslog";
        let mut b = format!("1 rsp 6 200 OK\n2 rsp {} {offer}\n", offer.len()).into_bytes();
        b.extend_from_slice(b"0 serverclose 0\n3 rsp");
        assert_eq!(
            parse(&mut b).unwrap(),
            Some(Frame::Rsp(1, 200, "OK".into()))
        );
        assert_eq!(
            parse(&mut b).unwrap(),
            Some(Frame::Rsp(2, 200, "OK".into()))
        );
        assert_eq!(parse(&mut b).unwrap(), Some(Frame::ServerClose));
        // incomplete: wait for more
        assert_eq!(parse(&mut b).unwrap(), None);
        b.extend_from_slice(b" 9 500 error\n");
        assert_eq!(
            parse(&mut b).unwrap(),
            Some(Frame::Rsp(3, 500, "error".into()))
        );
        for garbage in [
            &b"HTTP/1.1 400 Bad Request\r\n"[..],
            b"1 rsp 5 200 OKX",
            b"12345678901234 rsp 0\n",
            b"1 hello 0\n",
        ] {
            let mut g = garbage.to_vec();
            assert!(
                parse(&mut g).is_err(),
                "{:?}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    #[test]
    fn frames_messages() {
        // a Relp needs a socket; frame() is checked through a loopback pair
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).unwrap();
            let open = String::from_utf8_lossy(&buf[..n]).into_owned();
            s.write_all(b"1 rsp 6 200 OK\n").unwrap();
            let n = s.read(&mut buf).unwrap();
            s.write_all(b"2 rsp 6 200 OK\n").unwrap();
            (open, String::from_utf8_lossy(&buf[..n]).into_owned())
        });
        let mut r = Relp::open(&addr, Duration::from_secs(5)).unwrap();
        let mut out = Vec::new();
        let t = r.syslog(&mut out, b"<14>1 hello");
        r.send(&out).unwrap();
        assert_eq!(
            r.wait(Duration::from_secs(5)).unwrap(),
            Some(Frame::Rsp(t, 200, "OK".into()))
        );
        let (open, msg) = server.join().unwrap();
        assert!(open.starts_with("1 open 56 relp_version=0\n"), "{open:?}");
        assert_eq!(msg, "2 syslog 11 <14>1 hello\n");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// The longest header the parser waits on: TXNR (9 digits), COMMAND
        /// (32), DATALEN (9), their separators.
        const MAX_HEADER: usize = 9 + 1 + 32 + 1 + 9 + 1;

        /// A well-formed frame a server may send, and what it parses to.
        fn frame() -> impl Strategy<Value = (Vec<u8>, Frame)> {
            let rsp = (
                0..=999_999_999u32,
                100..=999u16,
                // `CODE [SP TEXT [LF MORE]]`: the status line, then any
                // bytes (LFs inside the counted data do not end the frame)
                proptest::option::of((
                    "[ -~]{0,64}",
                    proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
                )),
            )
                .prop_map(|(t, code, text)| {
                    let mut data = code.to_string().into_bytes();
                    let mut line = String::new();
                    if let Some((text, more)) = text {
                        data.push(b' ');
                        data.extend_from_slice(text.as_bytes());
                        if let Some(more) = more {
                            data.push(b'\n');
                            data.extend_from_slice(&more);
                        }
                        line = text;
                    }
                    (
                        with_header(t, "rsp", &data, false),
                        Frame::Rsp(t, code, line),
                    )
                });
            let close = (
                0..=999_999_999u32,
                proptest::collection::vec(any::<u8>(), 0..16),
                any::<bool>(),
            )
                .prop_map(|(t, data, sp)| {
                    (with_header(t, "serverclose", &data, sp), Frame::ServerClose)
                });
            prop_oneof![3 => rsp, 1 => close]
        }

        /// `TXNR SP COMMAND SP DATALEN [SP DATA] LF`; `sp`: "0 " before the
        /// LF of an empty frame (allowed, and sent by some servers).
        fn with_header(t: u32, cmd: &str, data: &[u8], sp: bool) -> Vec<u8> {
            let mut b = format!("{t} {cmd} {}", data.len()).into_bytes();
            if !data.is_empty() || sp {
                b.push(b' ');
            }
            b.extend_from_slice(data);
            b.push(b'\n');
            b
        }

        /// Bytes that reach the parser's header paths often, not only its
        /// first check.
        fn noise() -> impl Strategy<Value = Vec<u8>> {
            let byte = prop_oneof![
                any::<u8>(),
                proptest::sample::select(b"0123456789 \nrsperverclose".to_vec()),
            ];
            proptest::collection::vec(byte, 0..200)
        }

        proptest! {
            /// Incomplete: asked for more, the buffer untouched; complete:
            /// the frame, and only its bytes taken.
            #[test]
            fn a_frame_parses_once_complete_and_not_before(
                (f, want) in frame(),
                cut in any::<proptest::sample::Index>(),
                rest in noise(),
            ) {
                let mut b = f[..cut.index(f.len())].to_vec();
                let before = b.clone();
                prop_assert_eq!(parse(&mut b).unwrap(), None);
                prop_assert_eq!(&b, &before);
                let mut b = [&f[..], &rest[..]].concat();
                prop_assert_eq!(parse(&mut b).unwrap(), Some(want));
                prop_assert_eq!(b, rest);
            }

            /// A stream of frames arriving in chunks of any size yields them
            /// all, in order, and leaves nothing behind.
            #[test]
            fn frames_come_out_of_a_stream_cut_anywhere(
                frames in proptest::collection::vec(frame(), 1..8),
                chunks in proptest::collection::vec(1..40usize, 1..20),
            ) {
                let stream: Vec<u8> = frames.iter().flat_map(|(f, _)| f.clone()).collect();
                let (mut buf, mut got, mut at) = (Vec::new(), Vec::new(), 0);
                for size in chunks.iter().cycle() {
                    if at == stream.len() {
                        break;
                    }
                    let end = (at + size).min(stream.len());
                    buf.extend_from_slice(&stream[at..end]);
                    at = end;
                    while let Some(f) = parse(&mut buf).unwrap() {
                        got.push(f);
                    }
                }
                let want: Vec<Frame> = frames.into_iter().map(|(_, f)| f).collect();
                prop_assert_eq!(got, want);
                prop_assert!(buf.is_empty());
            }

            /// Whatever arrives: no panic; a frame takes bytes off the front
            /// only; "more" leaves the buffer as it was and is only asked
            /// for while a frame could still be completing (a peer cannot
            /// make the client buffer without bound).
            #[test]
            fn any_bytes_give_a_frame_more_or_an_error(input in noise()) {
                let mut b = input.clone();
                match parse(&mut b) {
                    Ok(Some(_)) => {
                        prop_assert!(b.len() < input.len());
                        prop_assert!(input.ends_with(&b));
                    }
                    Ok(None) => {
                        prop_assert_eq!(&b, &input);
                        prop_assert!(b.len() <= MAX_HEADER + 128 * 1024 + 1);
                    }
                    Err(e) => prop_assert_eq!(e.kind(), io::ErrorKind::InvalidData),
                }
            }

            /// A transaction number longer than 9 digits (or any first field
            /// without a separator in reach) is refused at once, not waited
            /// on.
            #[test]
            fn an_overlong_first_field_is_an_error(
                head in proptest::collection::vec(any::<u8>().prop_filter("no separator", |b| *b != b' ' && *b != b'\n'), 10..20),
                rest in noise(),
            ) {
                let mut b = [head, rest].concat();
                prop_assert!(parse(&mut b).is_err());
            }

            /// The byte after the counted data must be the LF trailer: any
            /// other is an error, not a wait for more.
            #[test]
            fn a_wrong_trailer_is_an_error(
                (f, want) in frame(),
                last in any::<u8>().prop_filter("not LF", |b| *b != b'\n'),
            ) {
                prop_assume!(matches!(want, Frame::Rsp(..)));
                let mut b = f.clone();
                *b.last_mut().unwrap() = last;
                prop_assert!(parse(&mut b).is_err());
            }
        }
    }
}
