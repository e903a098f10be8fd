//! A registry that lies or fails (tests/registry/stub.rs, plain HTTP):
//! other bytes under a digest, short, long and endless blobs, a stall, a
//! cut connection, an image over the size cap, a layer escaping its
//! directory, and an agent SIGKILLed mid-pull. Each refusal names the
//! image and what was wrong, and leaves nothing: no staging directory, no
//! layer, no image record, no container.

mod common;
#[path = "registry/stub.rs"]
mod stub;
use common::*;
use serde_json::json;
use std::path::Path;
use stub::{Fault, Stub};

const STUB: &str = "127.0.0.1:5002";

/// (manifest digest, config digest, layer digests) of a layout's `v1`.
fn digests(layout: &Path) -> (String, String, Vec<String>) {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = |d: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest: serde_json::Value = serde_json::from_slice(&blob(&m)).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    (
        m,
        manifest["config"]["digest"].as_str().unwrap().to_string(),
        layers,
    )
}

/// A layer whose one entry is `../escape` (written into the header by hand:
/// the tar crate's builder refuses such paths).
fn escaping_layer() -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..9].copy_from_slice(b"../escape");
    h.set_size(2);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &b"hi"[..]).unwrap();
    b.into_inner().unwrap()
}

/// A layer that plants a symlink to `target` and then writes through it.
fn through_symlink_layer(target: &Path) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_link(&mut h, "lnk", target).unwrap();
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "lnk/pwned", &b"x"[..]).unwrap();
    b.into_inner().unwrap()
}

/// A layer of `n` bytes that do not compress.
fn incompressible(n: usize) -> Vec<u8> {
    let mut data = vec![0u8; n];
    let mut x: u64 = 0x9e3779b97f4a7c15;
    for b in data.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(n as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "big.bin", &data[..]).unwrap();
    b.into_inner().unwrap()
}

/// What is refused: (what, the fault and the blob it hits, the reference, status, a part of the message).
type Case<'a> = (&'a str, Option<(&'a str, Fault)>, String, u16, &'a str);

struct Setup {
    a: Agent,
    stub: Stub,
    img: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let base = repo().join("build/images/busybox");
    let _ = images();
    let (img, big, evil) = (
        dir.path().join("img"),
        dir.path().join("big"),
        dir.path().join("evil"),
    );
    write_layout(&img, &[tar(&[("app.txt", Some("app"))])], &base);
    write_layout(&big, &[incompressible(9 << 20)], &base);
    write_layout(&evil, &[escaping_layer()], &base);
    let canary = dir.path().join("canary");
    std::fs::create_dir_all(&canary).unwrap();
    write_layout(
        &dir.path().join("sym"),
        &[through_symlink_layer(&canary)],
        &base,
    );
    let host = Host::new();
    let stub = Stub::start(
        &host,
        5002,
        &[
            ("lie/img", &img),
            ("lie/big", &big),
            ("lie/evil", &evil),
            ("lie/sym", &dir.path().join("sym")),
        ],
    );
    let cfg = format!("[[registry]]\nhost = \"{STUB}\"\ninsecure = true\n[images]\ntimeout_s = 3\nmax_image_size = \"8Mi\"\n");
    let a = Agent::start_on(host, &cfg).await;
    Setup {
        a,
        stub,
        img,
        _dir: dir,
    }
}

/// Nothing of a refused pull is left.
fn nothing_left(a: &Agent, what: &str) {
    let layers: Vec<String> = std::fs::read_dir(a.state().join("layers/sha256"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        layers.iter().all(|l| !l.contains(".tmp-")),
        "{what}: staging left: {layers:?}"
    );
    let records = std::fs::read_dir(a.state().join("images"))
        .into_iter()
        .flatten()
        .count();
    assert_eq!(records, 0, "{what}: an image record");
    assert!(
        !a.state().join("containers/x").exists(),
        "{what}: a container directory"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lying_or_failing_registry_is_refused_and_leaves_nothing() {
    require_root!();
    let s = setup().await;
    let (manifest, config, layers) = digests(&s.img);
    let tag = format!("{STUB}/lie/img:v1");
    let cases: Vec<Case> = vec![
        (
            "other bytes",
            Some((&layers[0], Fault::Other)),
            tag.clone(),
            422,
            "digest",
        ),
        (
            "a short blob",
            Some((&layers[0], Fault::Truncated)),
            tag.clone(),
            422,
            "of the descriptor's",
        ),
        (
            "a long blob",
            Some((&layers[0], Fault::Longer)),
            tag.clone(),
            422,
            "its descriptor says",
        ),
        (
            "a long blob, unannounced",
            Some((&layers[0], Fault::LongerUnannounced)),
            tag.clone(),
            422,
            "more than the descriptor's",
        ),
        (
            "an endless blob",
            Some((&layers[0], Fault::Endless)),
            tag.clone(),
            422,
            "more than the descriptor's",
        ),
        (
            "a cut connection",
            Some((&layers[0], Fault::CutAfter(64 << 10))),
            tag.clone(),
            502,
            "after",
        ),
        (
            "a stall",
            Some((&layers[0], Fault::StallAfter(64 << 10))),
            tag.clone(),
            502,
            "no byte from the registry for 3 s",
        ),
        (
            "another config",
            Some((&config, Fault::Other)),
            tag.clone(),
            422,
            "config",
        ),
        (
            "another manifest",
            Some((&manifest, Fault::Other)),
            format!("{STUB}/lie/img@{manifest}"),
            422,
            "igest",
        ),
        (
            "over the size cap",
            None,
            format!("{STUB}/lie/big:v1"),
            422,
            "images.max_image_size",
        ),
        (
            "a layer escaping",
            None,
            format!("{STUB}/lie/evil:v1"),
            422,
            "escaping the root",
        ),
        (
            "a write through a planted symlink",
            None,
            format!("{STUB}/lie/sym:v1"),
            422,
            "lnk/pwned",
        ),
    ];
    for (what, fault, r, status, says) in cases {
        s.stub.clear();
        if let Some((d, f)) = &fault {
            s.stub.set(d, f.clone());
        }
        let e =
            s.a.run(json!({"name": "x", "image": r, "command": ["/bin/true"]}))
                .await
                .expect_err(what);
        assert_eq!(api_field(&e), (status, Some("image".into())), "{what}: {e}");
        assert!(e.to_string().contains(says), "{what}: {e}");
        nothing_left(&s.a, what);
        if let Some((d, _)) = fault {
            let dir =
                s.a.state()
                    .join("layers/sha256")
                    .join(d.trim_start_matches("sha256:"));
            assert!(!dir.exists(), "{what}: the refused blob is in the store");
        }
    }
    let escaped = std::process::Command::new("find")
        .arg(s.a.state())
        .args(["-name", "escape"])
        .output()
        .unwrap();
    assert!(
        escaped.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&escaped.stdout)
    );
    s.stub.clear();
    s.stub.release();
    let c =
        s.a.run(json!({"name": "x", "image": tag, "command": ["cat", "/app.txt"]}))
            .await
            .unwrap();
    assert_eq!(c.image_digest.as_deref(), Some(manifest.as_str()));
    assert_eq!(s.a.wait("x").await.exit_code, Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_killed_mid_pull_cleans_its_staging_and_pulls_again() {
    require_root!();
    let mut s = setup().await;
    let (_, _, layers) = digests(&s.img);
    s.stub.set(&layers[0], Fault::StallAfter(64 << 10));
    let client = hydra_agent::api::client::Client::new(s.a.socket());
    let tag = format!("{STUB}/lie/img:v1");
    let spec = json!({"name": "x", "image": tag, "command": ["cat", "/app.txt"]});
    let pending = tokio::spawn(async move {
        client
            .raw(
                "POST",
                "/v1/containers",
                Some(serde_json::to_vec(&spec).unwrap()),
            )
            .await
    });
    let staging = s.a.state().join("layers/sha256");
    let staged = || {
        std::fs::read_dir(&staging)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".tmp-"))
    };
    eventually(20, "a layer being staged", async || staged()).await;
    s.a.kill9();
    let _ = pending.await;
    assert!(staged(), "the killed agent's staging is still there");
    s.stub.clear();
    s.stub.release();
    s.a.spawn().await;
    assert!(
        !staged(),
        "the next agent removed the staging directory at its start"
    );
    nothing_left(&s.a, "after the restart");
    let c =
        s.a.run(json!({"name": "x", "image": tag, "command": ["cat", "/app.txt"]}))
            .await
            .unwrap();
    assert!(c.image_digest.is_some());
    assert_eq!(s.a.wait("x").await.exit_code, Some(0));
    assert_eq!(
        s.a.logs("x")
            .await
            .iter()
            .map(|r| r.line.as_str())
            .collect::<Vec<_>>(),
        vec!["app"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_are_fetched_and_refreshed_during_a_pull() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let base = repo().join("build/images/busybox");
    let _ = images();
    let img = dir.path().join("img");
    write_layout(&img, &[tar(&[("app.txt", Some("app"))])], &base);
    let host = Host::new();
    let stub = Stub::start(&host, 5002, &[("tok/img", &img)]);
    // each token is good for two requests: the manifest and the config
    // use the first, each layer needs a fresh one
    stub.require_tokens("ci", "right", 2);
    std::fs::write(dir.path().join("right"), "right\n").unwrap();
    std::fs::write(dir.path().join("wrong"), "wrong\n").unwrap();
    let cfg = |pw: &str| {
        format!(
            "[[registry]]\nhost = \"{STUB}\"\ninsecure = true\nusername = \"ci\"\npassword_file = \"{}\"\n",
            dir.path().join(pw).display()
        )
    };
    let mut a = Agent::start_on(host, &cfg("wrong")).await;
    let r = format!("{STUB}/tok/img:v1");
    let e = a
        .run(json!({"name": "x", "image": r, "command": ["cat", "/app.txt"]}))
        .await
        .unwrap_err();
    assert_eq!(api_field(&e), (401, Some("image".into())), "{e}");
    assert!(
        !e.to_string().contains("wrong"),
        "the password is not in {e}"
    );
    nothing_left(&a, "a wrong password");
    // the right password, written into the same file: no restart needed
    std::fs::write(dir.path().join("wrong"), "right\n").unwrap();
    let c = a
        .run(json!({"name": "x", "image": r, "command": ["cat", "/app.txt"]}))
        .await
        .unwrap();
    assert!(c.image_digest.is_some());
    assert!(
        stub.tokens_issued() >= 2,
        "a token refreshed mid-pull: {} issued",
        stub.tokens_issued()
    );
    assert_eq!(a.wait("x").await.exit_code, Some(0));
    assert!(
        !a.log().contains("right"),
        "no credential in the agent's log"
    );
    a.kill9();
}
