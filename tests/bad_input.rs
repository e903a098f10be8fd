//! Bad input gets a clear error naming the field, and leaves nothing behind:
//! cgroups, mounts, processes and state files are compared before and after.

mod common;
use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::Path;

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// Copies the demo layout and lets `f` damage it.
fn damaged_layout(dir: &Path, f: impl FnOnce(&Path, &mut Value)) -> String {
    let src = repo().join("build/images/demo");
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    for e in std::fs::read_dir(src.join("blobs/sha256"))
        .unwrap()
        .flatten()
    {
        std::fs::copy(e.path(), dir.join("blobs/sha256").join(e.file_name())).unwrap();
    }
    std::fs::copy(src.join("index.json"), dir.join("index.json")).unwrap();
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let mdig = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(&mdig)).unwrap())
            .unwrap();
    f(dir, &mut manifest);
    let mbytes = serde_json::to_vec(&manifest).unwrap();
    let newdig = sha(&mbytes);
    std::fs::write(dir.join("blobs/sha256").join(&newdig), &mbytes).unwrap();
    let mut index = index;
    index["manifests"][0]["digest"] = format!("sha256:{newdig}").into();
    index["manifests"][0]["size"] = mbytes.len().into();
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    format!("oci-layout:{}:latest", dir.display())
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_requests_name_the_field_and_leave_nothing() {
    require_root!();
    let a = Agent::start("").await;
    // one good container, so "nothing changed" is checked against a live agent
    a.run(json!({"name": "dup", "image": busybox(), "command": ["sleep", "100000"]}))
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();

    // a layer blob whose bytes do not match its digest
    let bad_digest = damaged_layout(&tmp.path().join("bad-digest"), |dir, m| {
        let d = m["layers"][1]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        let p = dir.join("blobs/sha256").join(d);
        let mut b = std::fs::read(&p).unwrap();
        let n = b.len();
        b[n / 2] ^= 0xff;
        std::fs::write(&p, b).unwrap();
    });
    // a truncated gzip layer whose (new) digest matches: unpacking must fail
    let truncated = damaged_layout(&tmp.path().join("truncated"), |dir, m| {
        let d = m["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
            .to_string();
        let b = std::fs::read(dir.join("blobs/sha256").join(&d)).unwrap();
        let cut = &b[..b.len() / 2];
        let nd = sha(cut);
        std::fs::write(dir.join("blobs/sha256").join(&nd), cut).unwrap();
        m["layers"][0]["digest"] = format!("sha256:{nd}").into();
        m["layers"][0]["size"] = cut.len().into();
    });
    let demo_dir = repo().join("build/images/demo");

    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (
            br#"{"name":"../x","image":"rootfs:/"}"#.to_vec(),
            400,
            "name",
        ),
        (
            br#"{"name":"UPPER","image":"rootfs:/"}"#.to_vec(),
            400,
            "name",
        ),
        (br#"{"name":"","image":"rootfs:/"}"#.to_vec(), 400, "name"),
        (
            format!(r#"{{"name":"{}","image":"rootfs:/"}}"#, "a".repeat(64)).into_bytes(),
            400,
            "name",
        ),
        (
            br#"{"name":"x","image":"rootfs:/","colour":"red"}"#.to_vec(),
            400,
            "colour",
        ),
        (
            br#"{"name":"x","image":"rootfs:/","limits":{"memroy":"1Mi"}}"#.to_vec(),
            400,
            "limits.memroy",
        ),
        (br#"{"name":"x","image":"#.to_vec(), 400, "body"),
        (br#"not json"#.to_vec(), 400, "body"),
        (
            br#"{"name":"x","image":"rootfs:/","limits":{"memory":0}}"#.to_vec(),
            400,
            "limits.memory",
        ),
        (
            br#"{"name":"x","image":"rootfs:/","limits":{"memory":-1}}"#.to_vec(),
            400,
            "limits.memory",
        ),
        (
            br#"{"name":"x","image":"rootfs:/","limits":{"memory":"99999999999999Gi"}}"#.to_vec(),
            400,
            "limits.memory",
        ),
        (
            br#"{"name":"x","image":"rootfs:/","limits":{"memory":1e30}}"#.to_vec(),
            400,
            "limits.memory",
        ),
        (
            br#"{"name":"x","image":"rootfs:/","limits":{"cpus":0}}"#.to_vec(),
            400,
            "limits.cpus",
        ),
        (
            br#"{"name":"x","image":"rootfs:/","limits":{"cpus":-1}}"#.to_vec(),
            400,
            "limits.cpus",
        ),
        (
            br#"{"name":"x","image":"rootfs:/","limits":{"pids":0}}"#.to_vec(),
            400,
            "limits.pids",
        ),
        (
            br#"{"name":"x","image":"rootfs:/","limits":{"pids":18446744073709551616}}"#.to_vec(),
            400,
            "limits.pids",
        ),
        (
            br#"{"name":"x","image":"rootfs:/","limits":{"cpu_weight":0}}"#.to_vec(),
            400,
            "limits.cpu_weight",
        ),
        (
            br#"{"name":"x","image":"rootfs:/nonexistent-dir"}"#.to_vec(),
            422,
            "image",
        ),
        (
            format!(
                r#"{{"name":"x","image":"oci-layout:{}:nosuchtag"}}"#,
                demo_dir.display()
            )
            .into_bytes(),
            422,
            "image",
        ),
        (
            format!(r#"{{"name":"x","image":"{bad_digest}"}}"#).into_bytes(),
            422,
            "image",
        ),
        (
            format!(r#"{{"name":"x","image":"{truncated}"}}"#).into_bytes(),
            422,
            "image",
        ),
        (
            format!(
                r#"{{"name":"x","image":"{}","command":["/bin/nope"]}}"#,
                busybox()
            )
            .into_bytes(),
            422,
            "command",
        ),
        (
            format!(
                r#"{{"name":"x","image":"{}","command":["nope-not-on-path"]}}"#,
                busybox()
            )
            .into_bytes(),
            422,
            "command",
        ),
        (
            format!(
                r#"{{"name":"x","image":"{}","command":["/etc/passwd"]}}"#,
                busybox()
            )
            .into_bytes(),
            422,
            "command",
        ),
        (
            format!(
                r#"{{"name":"x","image":"{}","command":["true"],"user":"nobody-here"}}"#,
                busybox()
            )
            .into_bytes(),
            422,
            "user",
        ),
        (
            format!(
                r#"{{"name":"dup","image":"{}","command":["true"]}}"#,
                busybox()
            )
            .into_bytes(),
            409,
            "",
        ),
        (vec![b' '; 2 << 20], 413, ""),
    ];
    for (body, status, field) in cases {
        let before = a.snapshot();
        let (st, resp) = a
            .client
            .raw("POST", "/v1/containers", Some(body.clone()))
            .await
            .unwrap();
        let shown = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        assert_eq!(st, status, "{shown} -> {}", String::from_utf8_lossy(&resp));
        let err: hydra_agent::api::ErrorBody = serde_json::from_slice(&resp)
            .unwrap_or_else(|e| panic!("{shown}: JSON error body: {e}"));
        assert!(!err.error.message.is_empty());
        if !field.is_empty() {
            assert_eq!(
                err.error.field.as_deref(),
                Some(field),
                "{shown}: {}",
                err.error.message
            );
        }
        assert_eq!(a.snapshot(), before, "{shown} left something behind");
    }
    // no half-unpacked layer is left in the store
    let leftovers: Vec<_> = std::fs::read_dir(a.state().join("layers/sha256"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // unknown containers and routes
    for (m, p) in [
        ("GET", "/v1/containers/ghost"),
        ("POST", "/v1/containers/ghost/stop"),
        ("DELETE", "/v1/containers/ghost"),
        ("GET", "/v1/containers/ghost/logs"),
        ("GET", "/v1/nothing"),
    ] {
        let (st, resp) = a.client.raw(m, p, None).await.unwrap();
        assert_eq!(st, 404, "{m} {p}");
        serde_json::from_slice::<hydra_agent::api::ErrorBody>(&resp).unwrap();
    }
    // a route's path with a method it has not: 405, naming the ones it has
    let (st, resp) = a
        .client
        .raw("PATCH", "/v1/containers/ghost", None)
        .await
        .unwrap();
    assert_eq!(st, 405);
    let e: hydra_agent::api::ErrorBody = serde_json::from_slice(&resp).unwrap();
    assert!(e.error.message.contains("PUT, GET, DELETE"), "{e:?}");
    let (st, resp) = a
        .client
        .raw("POST", "/v1/containers/dup/kill?signal=NOPE", None)
        .await
        .unwrap();
    assert_eq!(st, 400);
    assert_eq!(
        serde_json::from_slice::<hydra_agent::api::ErrorBody>(&resp)
            .unwrap()
            .error
            .field
            .as_deref(),
        Some("signal")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creates_of_one_name_exactly_one_wins() {
    require_root!();
    let a = Agent::start("").await;
    for round in 0..5 {
        let name = format!("race{round}");
        let spec = serde_json::to_vec(
            &json!({"name": name, "image": busybox(), "command": ["sleep", "100000"]}),
        )
        .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let c = a.client.clone();
            let s = spec.clone();
            tasks.push(tokio::spawn(async move {
                c.raw("POST", "/v1/containers", Some(s)).await.unwrap().0
            }));
        }
        let mut codes = Vec::new();
        for t in tasks {
            codes.push(t.await.unwrap());
        }
        codes.sort();
        assert_eq!(codes, vec![201, 409, 409, 409], "round {round}");
    }
    assert_eq!(Agent::layout().children(&a.parent).len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn corrupt_record_is_quarantined_not_a_crash_loop() {
    require_root!();
    let mut a = Agent::start("").await;
    a.run(json!({"name": "good", "image": busybox(), "command": ["sleep", "100000"]}))
        .await
        .unwrap();
    a.run(json!({"name": "broken", "image": busybox(), "command": ["sleep", "100000"]}))
        .await
        .unwrap();
    let broken_pid = a.inspect("broken").await.pid.unwrap();
    a.kill9();
    let rec = a.state().join("containers/broken/container.json");
    let len = std::fs::metadata(&rec).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&rec)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    a.spawn().await;
    let list: Vec<hydra_agent::api::ContainerInfo> =
        a.client.call("GET", "/v1/containers", None).await.unwrap();
    assert_eq!(
        list.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        vec!["good"]
    );
    assert_eq!(
        std::fs::read_dir(a.state().join("quarantine"))
            .unwrap()
            .count(),
        1
    );
    assert!(
        a.log().contains("quarantined"),
        "a clear log line: {}",
        a.log()
    );
    // the unmanageable container was cleaned up, not leaked
    eventually(10, "broken container killed", async || {
        !Path::new(&format!("/proc/{broken_pid}")).exists()
    })
    .await;
    assert_eq!(
        Agent::layout().children(&a.parent),
        vec!["good".to_string()]
    );
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[logs]\nmax_filez = 3\n", "max_filez"),
        ("[network]\nport_range = \"9-1\"\n", "network.port_range"),
        ("[cgroup]\nparent = \"../escape\"\n", "cgroup.parent"),
        ("[logs]\nmax_file_size = \"lots\"\n", "lots"),
        // the TCP API: its files are read before anything starts
        (
            "[api]\ntcp = \"127.0.0.1:7443\"\ntls_cert = \"/nonexistent.pem\"\ntls_key = \"/nonexistent.key\"\nclient_ca = \"/nonexistent-ca.pem\"\n",
            "api.client_ca",
        ),
        ("[api]\ntcp = \"127.0.0.1:7443\"\n", "api.tls_cert"),
    ] {
        let cfg = tmp.path().join("agent.toml");
        std::fs::write(&cfg, text).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hydra-agent"))
            .args([
                "--root",
                tmp.path().to_str().unwrap(),
                "--config",
                cfg.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{text}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one message: {err}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hydra-agent"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(!tmp.path().join("var").exists(), "nothing written");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_start_stuck_before_exec_is_given_up_and_cleaned() {
    require_root!();
    // (debug builds) the init sleeps 60 s before its exec: a start that
    // never finishes must not hold every later start
    let a = Agent::start("[agent]\nstart_timeout_s = 2\n").await;
    let before = a.snapshot();
    let t0 = std::time::Instant::now();
    let e = a
        .run(
            json!({"name": "stuck", "image": busybox(), "command": ["true"],
                    "env": {"HYDRA_FAULT_STALL_INIT_S": "60"}}),
        )
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(e.to_string().contains("did not start within 2 s"), "{e}");
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    let after = a.snapshot();
    assert_eq!(
        (&after.cgroups, &after.mounts, &after.files),
        (&before.cgroups, &before.mounts, &before.files),
        "left something behind"
    );
    // the shim let go once its init was killed; the launcher was replaced
    eventually(10, "no shim or launcher left", async || {
        processes_mentioning(a.root.path()).is_empty()
    })
    .await;
    // the next start gets a new launcher and works
    a.run(json!({"name": "next", "image": busybox(), "command": ["true"]}))
        .await
        .unwrap();
    assert_eq!(a.wait("next").await.exit_code, Some(0));
}
