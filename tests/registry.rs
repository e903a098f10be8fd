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
    // no credential in the agent's log either
    let log = a.log();
    assert!(
        !log.contains(peer::PASSWORD) && !log.contains("not-it"),
        "a credential in the log"
    );
}
