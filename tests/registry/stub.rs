//! A registry that lies, for the refusal tests: the OCI distribution API
//! over plain HTTP (an `insecure = true` registry), serving an OCI layout,
//! with faults per blob: other bytes under the digest, fewer bytes, more
//! bytes, a blob that never ends, a stall, a connection cut mid-blob. It
//! runs on threads of the test inside the test host's network namespace.

use crate::common::Host;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Same length, other bytes.
    Other,
    /// The first bytes only, the Content-Length saying so.
    Truncated,
    /// The blob and then more, the Content-Length saying so.
    Longer,
    /// The blob and then more, with no Content-Length (the end is the close).
    LongerUnannounced,
    /// Bytes for as long as the client reads, no Content-Length.
    Endless,
    /// This many bytes, then nothing until [`Stub::release`] (then the rest).
    StallAfter(usize),
    /// This many bytes, then the connection is closed.
    CutAfter(usize),
}

#[derive(Clone)]
pub struct Stub {
    /// Repository name -> OCI layout.
    layouts: Arc<HashMap<String, PathBuf>>,
    faults: Arc<Mutex<HashMap<String, Fault>>>,
    released: Arc<AtomicBool>,
    port: u16,
    tokens: Arc<Mutex<Option<Tokens>>>,
}

/// Bearer-token auth as a registry's token service does it: `GET /token`
/// with the right basic credentials answers a token, good for `uses`
/// requests; anything else without a good token is a 401 with the challenge.
#[derive(Default)]
pub struct Tokens {
    pub basic: String,
    pub uses: usize,
    pub issued: usize,
    left: HashMap<String, usize>,
}

impl Stub {
    /// Serves each `(repository, layout)` (its tags as in index.json) on
    /// 127.0.0.1:`port` in `host`.
    pub fn start(host: &Host, port: u16, layouts: &[(&str, &Path)]) -> Stub {
        let ns = std::fs::File::open(host.netns()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            tx.send(TcpListener::bind(("127.0.0.1", port)).unwrap())
                .unwrap();
        });
        let listener = rx.recv().unwrap();
        let stub = Stub {
            layouts: Arc::new(
                layouts
                    .iter()
                    .map(|(n, p)| (n.to_string(), p.to_path_buf()))
                    .collect(),
            ),
            faults: Arc::default(),
            released: Arc::default(),
            port,
            tokens: Arc::default(),
        };
        let s = stub.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = s.clone();
                std::thread::spawn(move || s.serve(conn));
            }
        });
        stub
    }

    pub fn set(&self, digest: &str, f: Fault) {
        self.faults.lock().unwrap().insert(digest.into(), f);
    }

    pub fn clear(&self) {
        self.faults.lock().unwrap().clear();
    }

    /// From now on, tokens are needed: `user:password` gets one at
    /// `/token`, good for `uses` requests.
    pub fn require_tokens(&self, user: &str, password: &str, uses: usize) {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        *self.tokens.lock().unwrap() = Some(Tokens {
            basic: format!("Basic {basic}"),
            uses,
            ..Default::default()
        });
    }

    /// How many tokens were handed out.
    pub fn tokens_issued(&self) -> usize {
        self.tokens.lock().unwrap().as_ref().map_or(0, |t| t.issued)
    }

    /// Stalled blobs go on.
    pub fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
    }

    fn serve(&self, mut conn: TcpStream) {
        let mut r = BufReader::new(conn.try_clone().unwrap());
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (method, path) = (
                parts.first().copied().unwrap_or(""),
                parts.get(1).copied().unwrap_or(""),
            );
            let mut authz = String::new();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        authz = v.trim().to_string();
                    }
                }
            }
            if self.token_gate(&mut conn, path, &authz) {
                continue;
            }
            if !self.answer(&mut conn, method, path) {
                return;
            }
        }
    }

    /// With tokens required: answers `/token` and refuses a request without
    /// a good token (true: answered); false: the request goes on.
    fn token_gate(&self, conn: &mut TcpStream, path: &str, authz: &str) -> bool {
        let mut guard = self.tokens.lock().unwrap();
        let Some(t) = guard.as_mut() else {
            return false;
        };
        let answer = |c: &mut TcpStream, status: &str, extra: &str, body: &str| {
            let _ = write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            true
        };
        if path.starts_with("/token") {
            if authz != t.basic {
                let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#;
                return answer(conn, "401 Unauthorized", "", body);
            }
            t.issued += 1;
            let tok = format!("tok-{}", t.issued);
            t.left.insert(tok.clone(), t.uses);
            return answer(
                conn,
                "200 OK",
                "",
                &format!(r#"{{"token":"{tok}","expires_in":300}}"#),
            );
        }
        if let Some(left) = authz
            .strip_prefix("Bearer ")
            .and_then(|k| t.left.get_mut(k))
        {
            if *left > 0 {
                *left -= 1;
                return false;
            }
        }
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{}/token\",service=\"stub\"\r\n",
            self.port
        );
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"token needed"}]}"#;
        answer(conn, "401 Unauthorized", &challenge, body)
    }

    /// Answers one request; false when the connection must end.
    fn answer(&self, conn: &mut TcpStream, method: &str, path: &str) -> bool {
        let head = |c: &mut TcpStream, status: &str, extra: &str, len: Option<usize>| {
            let len = len
                .map(|n| format!("Content-Length: {n}\r\n"))
                .unwrap_or_else(|| "Connection: close\r\n".into());
            let _ = write!(c, "HTTP/1.1 {status}\r\n{extra}{len}\r\n");
        };
        if path == "/v2/" || path == "/v2" {
            head(
                conn,
                "200 OK",
                "Content-Type: application/json\r\n",
                Some(2),
            );
            return conn.write_all(b"{}").is_ok();
        }
        let not_found = |c: &mut TcpStream, code: &str| {
            let body = format!("{{\"errors\":[{{\"code\":\"{code}\",\"message\":\"unknown\"}}]}}");
            head(
                c,
                "404 Not Found",
                "Content-Type: application/json\r\n",
                Some(body.len()),
            );
            c.write_all(body.as_bytes()).is_ok()
        };
        let Some((name, rest)) = path
            .split_once("/manifests/")
            .or_else(|| path.split_once("/blobs/"))
        else {
            return not_found(conn, "NAME_UNKNOWN");
        };
        let Some(layout) = self.layouts.get(name.trim_start_matches("/v2/")) else {
            return not_found(conn, "NAME_UNKNOWN");
        };
        let is_manifest = path.contains("/manifests/");
        let digest = if is_manifest && !rest.starts_with("sha256:") {
            match tag(layout, rest) {
                Some(d) => d,
                None => return not_found(conn, "MANIFEST_UNKNOWN"),
            }
        } else {
            rest.to_string()
        };
        let Ok(data) = std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        ) else {
            return not_found(
                conn,
                if is_manifest {
                    "MANIFEST_UNKNOWN"
                } else {
                    "BLOB_UNKNOWN"
                },
            );
        };
        let ctype = if is_manifest {
            "application/vnd.oci.image.manifest.v1+json"
        } else {
            "application/octet-stream"
        };
        let extra = format!("Content-Type: {ctype}\r\nDocker-Content-Digest: {digest}\r\n");
        let fault = self.faults.lock().unwrap().get(&digest).cloned();
        if method == "HEAD" {
            head(conn, "200 OK", &extra, Some(data.len()));
            return true;
        }
        match fault {
            None => {
                head(conn, "200 OK", &extra, Some(data.len()));
                conn.write_all(&data).is_ok()
            }
            Some(Fault::Other) => {
                let other: Vec<u8> = data.iter().map(|b| b ^ 0x5a).collect();
                head(conn, "200 OK", &extra, Some(other.len()));
                conn.write_all(&other).is_ok()
            }
            Some(Fault::Truncated) => {
                let n = data.len() / 2;
                head(conn, "200 OK", &extra, Some(n));
                conn.write_all(&data[..n]).is_ok()
            }
            Some(Fault::Longer) => {
                head(conn, "200 OK", &extra, Some(data.len() + 4096));
                let _ = conn
                    .write_all(&data)
                    .and_then(|()| conn.write_all(&[0u8; 4096]));
                false
            }
            Some(Fault::LongerUnannounced) => {
                head(conn, "200 OK", &extra, None);
                let _ = conn
                    .write_all(&data)
                    .and_then(|()| conn.write_all(&[0u8; 4096]));
                false
            }
            Some(Fault::Endless) => {
                head(conn, "200 OK", &extra, None);
                let chunk = vec![0u8; 64 << 10];
                while conn.write_all(&chunk).is_ok() {}
                false
            }
            Some(Fault::StallAfter(n)) => {
                head(conn, "200 OK", &extra, Some(data.len()));
                if conn.write_all(&data[..n.min(data.len())]).is_err() {
                    return false;
                }
                while !self.released.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                conn.write_all(&data[n.min(data.len())..]).is_ok()
            }
            Some(Fault::CutAfter(n)) => {
                head(conn, "200 OK", &extra, Some(data.len()));
                let _ = conn.write_all(&data[..n.min(data.len())]);
                let _ = conn.shutdown(std::net::Shutdown::Both);
                false
            }
        }
    }
}

/// The manifest digest of `tag` in the layout's index.json.
fn tag(layout: &Path, tag: &str) -> Option<String> {
    {
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).ok()?).ok()?;
        index["manifests"]
            .as_array()?
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .and_then(|m| m["digest"].as_str().map(str::to_string))
    }
}
