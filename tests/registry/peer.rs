//! A real registry for the tests: Debian's `docker-registry` (distribution
//! 2.8) on 127.0.0.1:5000 inside a test host, TLS from a CA the test makes,
//! htpasswd (bcrypt) auth, its access log kept; images pushed into it with
//! `skopeo copy`.
#![allow(dead_code)] // each test binary uses a part of it

use crate::common::{scaled, Bg, Host};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const ADDR: &str = "127.0.0.1:5000";
pub const USER: &str = "tenant-ci";
pub const PASSWORD: &str = "s3cret-Pa55";

pub struct Registry {
    pub dir: PathBuf,
    _bg: Bg,
}

/// Runs `prog args` in `dir`; panics with its output if it fails.
pub fn run(dir: &Path, prog: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(prog)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Registry {
    /// Starts the registry in `host`, its files in `dir`.
    pub fn start(host: &Host, dir: &Path) -> Registry {
        let d = dir.display();
        run(
            dir,
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=hydra-test-ca",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        run(
            dir,
            "openssl",
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "srv.key",
                "-out",
                "srv.csr",
            ],
        );
        std::fs::write(
            dir.join("ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        run(
            dir,
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "srv.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "ext",
                "-out",
                "srv.pem",
            ],
        );
        // skopeo's --dest-cert-dir wants the CA as ca.crt
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        std::fs::copy(dir.join("ca.pem"), dir.join("certs/ca.crt")).unwrap();
        let htpasswd = run(dir, "htpasswd", &["-Bbn", USER, PASSWORD]);
        std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
        std::fs::write(dir.join("password"), format!("{PASSWORD}\n")).unwrap();
        std::fs::write(dir.join("wrong-password"), "not-it\n").unwrap();
        std::fs::write(
            dir.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {d}/data\n  delete:\n    enabled: true\n\
                 http:\n  addr: {ADDR}\n  tls:\n    certificate: {d}/srv.pem\n    key: {d}/srv.key\n\
                 auth:\n  htpasswd:\n    realm: hydra-test\n    path: {d}/htpasswd\n"
            ),
        )
        .unwrap();
        let bg = host.spawn_bg(&format!(
            "exec docker-registry serve {d}/config.yml > {d}/registry.log 2>&1"
        ));
        let deadline = Instant::now() + scaled(30);
        // listening on 127.0.0.1:5000 (0x1388), state LISTEN
        while !host
            .sh("cat /proc/net/tcp")
            .lines()
            .any(|l| l.contains("0100007F:1388 00000000:0000 0A"))
        {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            dir: dir.to_path_buf(),
            _bg: bg,
        }
    }

    /// Pushes the OCI layout `src` (`DIR:TAG`) as `ADDR/repo`; `dest_compress`
    /// e.g. `--dest-compress-format=zstd`.
    pub fn push(&self, host: &Host, src: &str, repo: &str, extra: &str) {
        host.sh(&format!(
            "skopeo copy --quiet {extra} --dest-creds {USER}:{PASSWORD} --dest-cert-dir {}/certs oci:{src} docker://{ADDR}/{repo}",
            self.dir.display()
        ));
    }

    /// The `[[registry]]` table for this registry, with `password_file`.
    pub fn config(&self, password_file: &str) -> String {
        format!(
            "[[registry]]\nhost = \"{ADDR}\"\nca = \"{d}/ca.pem\"\nusername = \"{USER}\"\npassword_file = \"{d}/{password_file}\"\n",
            d = self.dir.display()
        )
    }

    /// Access-log lines (GET requests) whose path contains `needle`.
    pub fn gets_of(&self, needle: &str) -> usize {
        std::fs::read_to_string(self.dir.join("registry.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(needle) && l.contains("\" 200 "))
            .count()
    }
}
