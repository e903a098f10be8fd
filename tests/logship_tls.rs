//! Log shipping to a TCP syslog receiver over TLS: rsyslog's imtcp with its
//! gtls driver and a certificate from a CA made by the test (openssl); the
//! agent checks the receiver against that CA, and refuses one it cannot
//! verify without sending it anything.

mod common;
use common::*;
use serde_json::json;
use std::path::Path;

/// Runs `openssl` with whitespace-separated `args` in `dir`.
fn openssl(dir: &Path, args: &str) {
    let st = std::process::Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl {args}");
}

/// A CA and a certificate for 127.0.0.1 signed by it; a second CA.
fn certs(dir: &Path) {
    for ca in ["ca", "other"] {
        openssl(
            dir,
            &format!("req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN={ca} -keyout {ca}.key -out {ca}.pem"),
        );
    }
    openssl(
        dir,
        "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout srv.key -out srv.csr",
    );
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        "x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out srv.pem",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_syslog_receiver_verified_by_its_ca() {
    require_root!();
    if lacks("rsyslogd", "-v") || lacks("openssl", "version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    certs(dir.path());
    std::fs::create_dir_all(dir.path().join("work")).unwrap();
    std::fs::write(
        dir.path().join("rsyslog.conf"),
        format!(
            "global(workDirectory=\"{d}/work\" DefaultNetstreamDriver=\"gtls\" \
               DefaultNetstreamDriverCAFile=\"{d}/ca.pem\" DefaultNetstreamDriverCertFile=\"{d}/srv.pem\" \
               DefaultNetstreamDriverKeyFile=\"{d}/srv.key\")\n\
             module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"anon\")\n\
             input(type=\"imtcp\" port=\"20614\" address=\"127.0.0.1\")\n\
             template(name=\"t\" type=\"string\" string=\"%app-name% %msg%\\n\")\n\
             action(type=\"omfile\" file=\"{d}/out.log\" template=\"t\")\n"
        ),
    )
    .unwrap();
    // first an agent that trusts another CA: it must not deliver anything
    let wrong = Agent::start(&format!(
        "[collector]\nsyslog = \"127.0.0.1:20614\"\nsyslog_tls = true\nsyslog_ca = \"{d}/other.pem\"\n"
    ))
    .await;
    let _rs = wrong
        .host
        .spawn_bg(&format!("exec rsyslogd -n -f {d}/rsyslog.conf -i {d}/pid"));
    wrong
        .run(json!({"name": "web", "image": busybox(), "command": ["sh", "-c", "echo secret-line; exec sleep 100000"]}))
        .await
        .unwrap();
    eventually(30, "the bad certificate logged", async || {
        wrong.log().contains("invalid peer certificate")
    })
    .await;
    let out = std::fs::read_to_string(dir.path().join("out.log")).unwrap_or_default();
    assert!(!out.contains("secret-line"), "{out}");
    drop(_rs);
    drop(wrong);

    // then one that trusts the right CA
    let a = Agent::start(&format!(
        "[collector]\nsyslog = \"127.0.0.1:20614\"\nsyslog_tls = true\nsyslog_ca = \"{d}/ca.pem\"\n"
    ))
    .await;
    let _rs = a
        .host
        .spawn_bg(&format!("exec rsyslogd -n -f {d}/rsyslog.conf -i {d}/pid"));
    a.run(json!({"name": "web", "image": busybox(),
                 "command": ["sh", "-c", "for i in $(seq 1 50); do echo n=$i; done; exec sleep 100000"]}))
        .await
        .unwrap();
    let mut out = String::new();
    eventually(30, "50 lines over TLS", async || {
        out = std::fs::read_to_string(dir.path().join("out.log")).unwrap_or_default();
        out.contains("web n=50")
    })
    .await;
    for i in 1..=50 {
        assert!(
            out.contains(&format!("web n={i}\n")),
            "n={i} missing:\n{out}"
        );
    }
    // a CA file with no certificate is a config error naming the key
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, format!("[collector]\nsyslog = \"127.0.0.1:20614\"\nsyslog_tls = true\nsyslog_ca = \"{d}/ext\"\n")).unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_hydra-agent"))
        .args([
            "--root",
            &format!("{d}/root"),
            "--config",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("collector.syslog_ca"), "{err}");
    assert!(!dir.path().join("root/var").exists(), "nothing written");
}
