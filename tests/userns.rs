//! `userns: true`: container root is an unprivileged host id from a range
//! given to that container alone, kept across agent restarts.

mod common;
use common::*;
use hydra_agent::api::client::ClientError;
use serde_json::json;
use std::os::unix::fs::MetadataExt;

const START: u32 = 1_000_000;
const SIZE: u32 = 65536;

/// `Uid:` and `Gid:` lines of a host process, as the host sees them.
fn host_ids(pid: i32) -> (String, String) {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    (get("Uid:"), get("Gid:"))
}

async fn remove(a: &Agent, name: &str) {
    let (st, body) = a
        .client
        .raw("DELETE", &format!("/v1/containers/{name}?force=true"), None)
        .await
        .unwrap();
    assert_eq!(st, 204, "{}", String::from_utf8_lossy(&body));
}

#[tokio::test(flavor = "multi_thread")]
async fn container_root_is_an_unprivileged_host_id_of_its_own() {
    require_root!();
    let mut a = Agent::start(&format!(
        "[security]\nuserns_uid_start = {START}\nuserns_ranges = 2\n"
    ))
    .await;
    // inside: root, with the default capabilities over what it owns, able
    // to write its root filesystem and to listen on port 80
    let script = r#"
echo uid=$(id -u) gid=$(id -g)
echo map=$(cat /proc/self/uid_map)
grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status
echo busybox_owner=$(stat -c %u:%g /bin/busybox)
echo root_owner=$(stat -c %u /)
echo dev_owner=$(stat -c %u /dev)
touch /made && echo made=ok || echo made=failed
mkdir -p /srv/app && echo mkdir=ok
echo hello > /dev/null && echo null=ok
mknod /tmp/sda b 8 0 2>/dev/null && echo mknod=ok || echo mknod=refused
hostname other 2>/dev/null && echo hostname=changed || echo hostname=refused
nc -l -p 80 >/dev/null 2>&1 &
sleep 0.3
cat /proc/net/tcp /proc/net/tcp6 | grep -q ':0050 [0:]* 0A' && echo listen80=ok || echo listen80=refused
echo ready
exec sleep 100000
"#;
    let info = a
        .run(json!({"name": "u1", "image": busybox(), "userns": true,
                    "command": ["sh", "-c", script]}))
        .await
        .unwrap();
    let pid = info.pid.unwrap();
    let mut lines = Vec::new();
    eventually(20, "u1 ready", async || {
        lines = a.logs("u1").await.into_iter().map(|r| r.line).collect();
        lines.iter().any(|l| l == "ready")
    })
    .await;
    let has = |l: &str| {
        let l: String = l.split_whitespace().collect();
        lines
            .iter()
            .any(|x| x.split_whitespace().collect::<String>() == l)
    };
    for want in [
        "uid=0 gid=0",
        &format!("map=0 {START} {SIZE}"),
        "CapEff: 00000000000005fb",
        "NoNewPrivs: 1",
        "Seccomp: 2",
        "busybox_owner=0:0",
        "root_owner=0",
        "dev_owner=0",
        "made=ok",
        "mkdir=ok",
        "null=ok",
        "mknod=refused",
        "hostname=refused",
        "listen80=ok",
    ] {
        assert!(has(want), "{want:?} not in {lines:?}");
    }
    // outside: the process and what it wrote belong to the range, the shared
    // image layers are untouched
    let ids = format!("{START} {START} {START} {START}");
    assert_eq!(host_ids(pid), (ids.clone(), ids));
    // the layer is mounted in the agent's mount namespace (its host's)
    let upper = std::path::PathBuf::from(format!(
        "/proc/{}/root{}",
        a.host.pid(),
        a.state().join("containers/u1/layer/upper").display()
    ));
    for f in ["made", "srv/app"] {
        let m = std::fs::metadata(upper.join(f)).unwrap();
        assert_eq!((m.uid(), m.gid()), (START, START), "{f}");
    }
    let layers = a.state().join("layers");
    let owners: std::collections::BTreeSet<u32> = walk_uids(&layers);
    assert!(
        owners.iter().all(|&u| u < SIZE),
        "layers still owned by low ids: {owners:?}"
    );

    // a plain container beside it stays host root; a second userns one gets
    // the next range; a third finds none (409 naming userns, nothing left)
    let plain = a
        .run(json!({"name": "plain", "image": busybox(), "command": ["sleep", "100000"]}))
        .await
        .unwrap();
    assert_eq!(host_ids(plain.pid.unwrap()).0, "0 0 0 0");
    let u2 = a
        .run(json!({"name": "u2", "image": busybox(), "userns": true, "command": ["sleep", "100000"]}))
        .await
        .unwrap();
    let second = START + SIZE;
    assert_eq!(
        host_ids(u2.pid.unwrap()).0,
        format!("{second} {second} {second} {second}")
    );
    let e = a
        .run(json!({"name": "u3", "image": busybox(), "userns": true, "command": ["true"]}))
        .await
        .unwrap_err();
    match &e {
        ClientError::Api { status, body } => {
            assert_eq!(
                (*status, body.error.field.as_deref()),
                (409, Some("userns")),
                "{e}"
            )
        }
        other => panic!("{other}"),
    }
    assert!(
        !a.state().join("containers/u3").exists(),
        "nothing left of u3"
    );

    // across a restart (SIGKILL) the ranges in use stay taken: with u1
    // removed, a new container gets u1's range and u2's stays u2's
    a.kill9();
    a.spawn().await;
    remove(&a, "u1").await;
    let u4 = a
        .run(json!({"name": "u4", "image": busybox(), "userns": true, "command": ["sleep", "100000"]}))
        .await
        .unwrap();
    let ids = format!("{START} {START} {START} {START}");
    assert_eq!(host_ids(u4.pid.unwrap()).0, ids);
    let e = a
        .run(json!({"name": "u5", "image": busybox(), "userns": true, "command": ["true"]}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("userns"), "{e}");
    for n in ["u2", "u4", "plain"] {
        remove(&a, n).await;
    }
}

fn walk_uids(dir: &std::path::Path) -> std::collections::BTreeSet<u32> {
    let mut out = std::collections::BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let m = e.path().symlink_metadata().unwrap();
            out.insert(m.uid());
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    out
}
