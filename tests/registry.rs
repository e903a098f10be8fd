//! Images from a real registry (Debian's docker-registry with TLS from a
//! CA the test makes and htpasswd auth; images pushed with skopeo): pulls
//! by tag, by digest and by both, a cloud-code app run from the registry
//! behind its host port, and refusals that leave nothing behind.

mod common;
#[path = "registry/peer.rs"]
mod peer;
use common::*;
use peer::{Registry, ADDR};
use serde_json::json;

const CENTRAL: &str = "10.99.1.0/24";

/// A host running the registry with the demo app pushed as `shop/demo:v1`,
/// and an agent on it configured for the registry (and for the same
/// registry under `localhost:5000` with a wrong password).
async fn setup(dir: &std::path::Path) -> (Agent, Registry) {
    let host = Host::new();
    let reg = Registry::start(&host, dir);
    let demo = repo().join("build/images/demo");
    let _ = images();
    reg.push(
        &host,
        &format!("{}:latest", demo.display()),
        "shop/demo:v1",
        "",
    );
    let wrong = reg.config("wrong-password").replace(ADDR, "localhost:5000");
    let cfg = format!(
        "{}{wrong}[network]\nallowlist = [\"{CENTRAL}\"]\n",
        reg.config("password")
    );
    (Agent::start_on(host, &cfg).await, reg)
}

/// Nothing of a failed pull: no staging directory, no image record.
fn nothing_staged(a: &Agent) {
    let layers = a.state().join("layers/sha256");
    let staged: Vec<_> = std::fs::read_dir(&layers)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(staged.is_empty(), "staging left: {staged:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_by_tag_digest_and_both_and_runs_the_app_behind_its_port() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let (a, reg) = setup(dir.path()).await;
    let tag = format!("{ADDR}/shop/demo:v1");
    // what the registry itself says the tag points to
    let want = a.host.sh(&format!(
        "skopeo inspect --creds {}:{} --cert-dir {}/certs docker://{tag} | jq -r .Digest",
        peer::USER,
        peer::PASSWORD,
        reg.dir.display()
    ));
    let want = want.trim().to_string();
    assert!(want.starts_with("sha256:"), "{want}");
    let app = a
        .run(
            json!({"name": "cart", "image": tag, "limits": {"memory": "64Mi", "cpus": 0.5},
                    "ports": [{"container_port": 8080}]}),
        )
        .await
        .unwrap();
    assert_eq!(app.image_digest.as_deref(), Some(want.as_str()));
    let central = a.host.peer(1);
    let url = format!("10.99.1.1:{}", app.ports[0].host_port);
    eventually(
        30,
        "the app from the registry answers through its host port",
        async || central.http("GET", &url, "/heartbeat", b"").0 == 200,
    )
    .await;
    // by digest, and by tag and digest: the same image, nothing downloaded again
    let blobs = reg.gets_of("/blobs/sha256:");
    for (name, r) in [
        ("by-digest", format!("{ADDR}/shop/demo@{want}")),
        ("both", format!("{tag}@{want}")),
    ] {
        let c = a
            .run(json!({"name": name, "image": r, "command": ["/bin/true"]}))
            .await
            .unwrap_or_else(|e| panic!("{r}: {e}"));
        assert_eq!(c.image_digest.as_deref(), Some(want.as_str()), "{r}");
        assert_eq!(a.wait(name).await.exit_code, Some(0));
    }
    assert_eq!(
        reg.gets_of("/blobs/sha256:"),
        blobs,
        "layers and config are not fetched twice"
    );
    nothing_staged(&a);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_name_the_image_and_leave_nothing() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let (a, _reg) = setup(dir.path()).await;
    let zeros = "0".repeat(64);
    let cases = [
        (
            "127.0.0.2:5000/shop/demo:v1".to_string(),
            403,
            "127.0.0.2:5000",
        ),
        (
            "localhost:5000/shop/demo:v1".to_string(),
            401,
            "localhost:5000",
        ),
        (format!("{ADDR}/shop/demo:v2"), 404, ADDR),
        (format!("{ADDR}/shop/nothing:v1"), 404, ADDR),
        (format!("{ADDR}/shop/demo@sha256:{zeros}"), 404, ADDR),
        (format!("{ADDR}/shop/demo:v1@sha256:{zeros}"), 404, ADDR),
    ];
    for (r, status, names) in cases {
        let e = a
            .run(json!({"name": "x", "image": r, "command": ["/bin/true"]}))
            .await
            .expect_err(&r);
        assert_eq!(api_field(&e), (status, Some("image".into())), "{r}: {e}");
        let msg = e.to_string();
        assert!(msg.contains(names), "{r}: {msg}");
        assert!(
            !msg.contains(peer::PASSWORD) && !msg.contains("not-it"),
            "{r}: a credential in {msg}"
        );
        nothing_staged(&a);
        assert!(
            a.client.list().await.unwrap().is_empty(),
            "{r}: no container"
        );
        assert!(
            !a.state().join("containers/x").exists(),
            "{r}: no container dir"
        );
    }
    // a pull from an unlisted registry is refused before any line
    let e = a
        .client
        .stream(
            &hydra_agent::api::Request::Pull("127.0.0.2:5000/shop/demo:v1".into()),
            |_| true,
        )
        .await
        .unwrap_err();
    assert_eq!(api_field(&e), (403, Some("image".into())), "{e}");
    // no credential in the agent's log either
    let log = a.log();
    assert!(
        !log.contains(peer::PASSWORD) && !log.contains("not-it"),
        "a credential in the log"
    );
}

/// Writes `data` as a blob of the layout `dir`; its descriptor's digest and size.
fn put_blob(dir: &std::path::Path, data: &[u8]) -> (String, usize) {
    let hex = sha(data);
    std::fs::write(dir.join("blobs/sha256").join(&hex), data).unwrap();
    (format!("sha256:{hex}"), data.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multi_platform_index_resolves_to_this_hosts_platform() {
    require_root!();
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new();
    let reg = Registry::start(&host, dir.path());
    // the demo app (linux/amd64) and an arm64 image, under one index
    let _ = images();
    let lay = dir.path().join("multi");
    host.sh(&format!(
        "cp -a {} {}",
        repo().join("build/images/demo").display(),
        lay.display()
    ));
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lay.join("index.json")).unwrap()).unwrap();
    let amd64 = index["manifests"][0].clone();
    let layer = tar(&[("arm.txt", Some("arm"))]);
    let (ldig, lsize) = put_blob(&lay, &layer);
    let config = json!({"architecture": "arm64", "os": "linux", "config": {"Cmd": ["/arm"]},
        "rootfs": {"type": "layers", "diff_ids": [ldig.clone()]}});
    let (cdig, csize) = put_blob(&lay, &serde_json::to_vec(&config).unwrap());
    let arm = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig, "size": csize},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ldig, "size": lsize}]});
    let (adig, asize) = put_blob(&lay, &serde_json::to_vec(&arm).unwrap());
    let nested = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": adig, "size": asize,
         "platform": {"architecture": "arm64", "os": "linux"}},
        {"mediaType": amd64["mediaType"], "digest": amd64["digest"], "size": amd64["size"],
         "platform": {"architecture": "amd64", "os": "linux"}}]});
    let (ndig, isize) = put_blob(&lay, &serde_json::to_vec(&nested).unwrap());
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": ndig, "size": isize, "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(lay.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    reg.push(
        &host,
        &format!("{}:multi", lay.display()),
        "shop/multi:v1",
        "--all",
    );
    // what the registry holds under the tag (skopeo writes the index anew)
    let raw = host.sh(&format!(
        "skopeo inspect --raw --creds {}:{} --cert-dir {}/certs docker://{ADDR}/shop/multi:v1",
        peer::USER,
        peer::PASSWORD,
        reg.dir.display()
    ));
    assert!(
        raw.contains("image.index") && raw.contains("arm64"),
        "{raw}"
    );
    let idig = format!("sha256:{}", sha(raw.trim_end().as_bytes()));
    let a = Agent::start_on(
        host,
        &format!("{}[network]\nenabled = false\n", reg.config("password")),
    )
    .await;
    let c = a
        .run(json!({"name": "m", "image": format!("{ADDR}/shop/multi:v1"), "command": ["/bin/demo-app", "--version"]}))
        .await
        .unwrap();
    assert_eq!(
        c.image_digest.as_deref(),
        Some(idig.as_str()),
        "the index's digest is what the tag resolved to"
    );
    let listed: Vec<hydra_agent::api::ImageInfo> = a
        .client
        .send(&hydra_agent::api::Request::Images)
        .await
        .unwrap();
    let pushed: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let want = pushed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == "amd64")
        .map(|m| m["digest"].as_str().unwrap().to_string())
        .unwrap();
    assert_eq!(
        listed[0].manifest_digest, want,
        "the amd64 manifest was taken"
    );
    assert!(!listed[0].layers.contains(&ldig), "no arm64 layer");
}
