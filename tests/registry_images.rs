//! Images from a real registry, managed: `POST /v1/images/pull` with its
//! progress, the list with what uses each image, removal refused while a
//! container uses it, the prune of unused layers (a shared layer stays),
//! the events, and concurrent creates of one new image downloading each
//! blob once.

mod common;
#[path = "registry/peer.rs"]
mod peer;
use common::*;
use hydra_agent::api::{ImageInfo, Request};
use peer::{Registry, ADDR};
use serde_json::json;
use std::collections::BTreeSet;

/// Two images sharing their base layer (busybox), each with a file of its
/// own on top, pushed as `shop/one:v1` and `shop/two:v1`.
fn push_two(host: &Host, reg: &Registry, dir: &std::path::Path) {
    let base = repo().join("build/images/busybox");
    let _ = images();
    for (name, file) in [("one", "a.txt"), ("two", "b.txt")] {
        let lay = dir.join(name);
        write_layout(&lay, &[tar(&[(file, Some(name))])], &base);
        reg.push(
            host,
            &format!("{}:v1", lay.display()),
            &format!("shop/{name}:v1"),
            "",
        );
    }
}

/// A registry holding `shop/one:v1` and `shop/two:v1`, and an agent
/// configured for it (the directory holds the registry's files).
async fn two_images() -> (Agent, Registry, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::new();
    let reg = Registry::start(&host, dir.path());
    push_two(&host, &reg, dir.path());
    let a = Agent::start_on(host, &reg.config("password")).await;
    (a, reg, dir)
}

fn layer_dirs(a: &Agent) -> BTreeSet<String> {
    std::fs::read_dir(a.state().join("layers/sha256"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Pulls through the API; (progress lines, the last line).
async fn pull(a: &Agent, r: &str) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut lines: Vec<serde_json::Value> = Vec::new();
    a.client
        .stream(&Request::Pull(r.into()), |l| {
            lines.push(serde_json::from_str(l).unwrap());
            true
        })
        .await
        .unwrap();
    let last = lines.pop().expect("a last line");
    (lines, last)
}

#[tokio::test(flavor = "multi_thread")]
async fn pulled_images_are_listed_removed_when_unused_and_pruned() {
    require_root!();
    let (a, _reg, _dir) = two_images().await;
    let (one, two) = (format!("{ADDR}/shop/one:v1"), format!("{ADDR}/shop/two:v1"));
    let (progress, last) = pull(&a, &one).await;
    let info: ImageInfo =
        serde_json::from_value(last.clone()).unwrap_or_else(|e| panic!("{e}: {last}"));
    assert_eq!(info.reference, one);
    assert_eq!(info.layers.len(), 2);
    for l in &info.layers {
        let done = progress
            .iter()
            .find(|p| p["layer"] == l.as_str() && p["done"] == true);
        let done = done.unwrap_or_else(|| panic!("no done line for {l}: {progress:?}"));
        assert_eq!(done["bytes"], done["total"], "{done}");
    }
    let (progress, _) = pull(&a, &two).await;
    let base = &info.layers[0];
    assert!(
        progress
            .iter()
            .any(|p| p["layer"] == base.as_str() && p["cached"] == true),
        "the shared base is not downloaded again: {progress:?}"
    );
    let h = a.client.host().await.unwrap();
    assert_eq!((h.images.count, h.images.layers), (2, 3), "{h:?}");
    assert!(h.images.disk_bytes > 0);
    let listed: Vec<ImageInfo> = a.client.send(&Request::Images).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|i| i.reference.as_str())
            .collect::<Vec<_>>(),
        vec![one.as_str(), two.as_str()]
    );
    assert!(listed
        .iter()
        .all(|i| i.disk_bytes > 0 && i.used_by.is_empty()));
    // in use: refused, naming the image
    let out = output(
        &a,
        "user",
        json!({"name": "user", "image": one, "command": ["cat", "/a.txt"]}),
    )
    .await;
    assert_eq!(out, vec!["one"]);
    let listed: Vec<ImageInfo> = a.client.send(&Request::Images).await.unwrap();
    assert_eq!(listed[0].used_by, vec!["user"]);
    let e = a
        .client
        .send::<()>(&Request::RemoveImage(one.clone()))
        .await
        .unwrap_err();
    assert_eq!(api_field(&e), (409, Some("image".into())), "{e}");
    // removed with its container gone; its own layer goes at the prune, the shared base stays
    let before = layer_dirs(&a);
    a.client
        .raw("DELETE", "/v1/containers/user?force=true", None)
        .await
        .unwrap();
    a.client
        .send::<()>(&Request::RemoveImage(one.clone()))
        .await
        .unwrap();
    let e = a
        .client
        .send::<()>(&Request::RemoveImage(one.clone()))
        .await
        .unwrap_err();
    assert_eq!(api_field(&e).0, 404, "{e}");
    let p: hydra_agent::api::PruneReport = a.client.send(&Request::PruneImages).await.unwrap();
    let after = layer_dirs(&a);
    let gone: Vec<_> = before.difference(&after).cloned().collect();
    assert_eq!(
        gone,
        vec![info.layers[1].trim_start_matches("sha256:").to_string()]
    );
    assert_eq!(p.layers_removed, 1);
    assert!(p.bytes_freed > 0);
    assert!(
        after.contains(base.trim_start_matches("sha256:")),
        "the shared base stays"
    );
    // the last image goes: nothing is left in the store
    a.client
        .send::<()>(&Request::RemoveImage(two.clone()))
        .await
        .unwrap();
    let p: hydra_agent::api::PruneReport = a.client.send(&Request::PruneImages).await.unwrap();
    assert_eq!(p.layers_removed, 2);
    assert!(layer_dirs(&a).is_empty(), "{:?}", layer_dirs(&a));
    let h = a.client.host().await.unwrap();
    assert_eq!((h.images.count, h.images.layers), (0, 0), "{h:?}");
    // the events: two pulls and two removals, with the image and digest
    eventually(10, "the image events in the journal", async || {
        let ev: Vec<String> = std::fs::read_dir(a.state().join("events"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|f| {
                // journal records: the event is the record's line
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                text.lines()
                    .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                    .filter_map(|r| r["line"].as_str().map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect();
        ev.iter()
            .filter(|l| l.contains("\"pull\"") && l.contains("sha256:"))
            .count()
            == 2
            && ev.iter().filter(|l| l.contains("\"image_delete\"")).count() == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_creates_of_a_new_image_download_each_blob_once() {
    require_root!();
    let (a, reg, _dir) = two_images().await;
    let one = format!("{ADDR}/shop/one:v1");
    let runs = (0..10).map(|i| {
        a.run(json!({"name": format!("c{i}"), "image": one, "command": ["cat", "/a.txt"]}))
    });
    for r in futures_util::future::join_all(runs).await {
        r.unwrap();
    }
    // 2 layers and the config, each fetched once; one manifest request
    assert_eq!(
        reg.gets_of("/v2/shop/one/blobs/sha256:"),
        3,
        "{}",
        std::fs::read_to_string(reg.dir.join("registry.log")).unwrap()
    );
    assert_eq!(reg.gets_of("/v2/shop/one/manifests/"), 1);
    for i in 0..10 {
        assert_eq!(a.wait(&format!("c{i}")).await.exit_code, Some(0));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hydractl_pulls_lists_removes_and_prunes() {
    require_root!();
    let (a, _reg, _dir) = two_images().await;
    let one = format!("{ADDR}/shop/one:v1");
    let ctl = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hydractl"))
            .arg("--socket")
            .arg(a.socket())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = ctl(&["pull", &one]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with(&format!("{one}  sha256:")), "{out}");
    assert_eq!(
        err.lines().filter(|l| l.contains(": ")).count(),
        2,
        "a line per layer: {err}"
    );
    let (code, out, _) = ctl(&["images"]);
    assert_eq!(code, Some(0));
    assert!(
        out.lines().nth(1).is_some_and(|l| l.starts_with(&one)),
        "{out}"
    );
    let (code, _, err) = ctl(&["pull", &format!("{ADDR}/shop/none:v1")]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("shop/none") && err.contains("(field: image)"),
        "{err}"
    );
    let (code, out, err) = ctl(&["rmi", &one]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, _) = ctl(&["image", "prune"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("removed 2 layers, freed "), "{out}");
}
