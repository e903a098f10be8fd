//! Storage limits with project quotas, on an ext4 made with `-O
//! project,quota` and mounted `prjquota` as the agent's state filesystem
//! (in the test host's mount namespace). This host's kernel has no quota
//! format (CONFIG_QFMT_V2): the test runs in scripts/vm.

mod common;
use common::*;
use serde_json::json;
use std::path::Path;

#[tokio::test(flavor = "multi_thread")]
async fn project_quotas_bound_layers_on_a_prjquota_filesystem() {
    require_root!();
    let img = tempfile::NamedTempFile::new().unwrap();
    img.as_file().set_len(512 << 20).unwrap();
    let out = std::process::Command::new("mke2fs")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-O",
            "project,quota",
            "-E",
            "quotatype=prjquota",
        ])
        .arg(img.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut a = Agent::unstarted(
        Host::new(),
        "[storage]\nproject_ids = \"5000-5002\"\n",
        None,
    );
    let state = a.state();
    let mounted = a.host.sh(&format!(
        "mkdir -p {s} && mount -o loop,prjquota {i} {s} && echo mounted || true",
        s = state.display(),
        i = img.path().display()
    ));
    if !mounted.contains("mounted") && !Path::new("/sys/module/quota_v2").exists() {
        eprintln!(
            "SKIPPED: this kernel has no quota format (CONFIG_QFMT_V2); scripts/vm runs this test"
        );
        return;
    }
    assert!(mounted.contains("mounted"), "{mounted}");
    a.spawn().await;
    assert_eq!(
        a.client.host().await.unwrap().storage_limits,
        "project_quota"
    );

    // a write past the limit: EDQUOT near 32 MiB, in that container only
    let dd = "dd if=/dev/zero of=/big bs=64k count=1600; sync";
    let lines = output(
        &a,
        "full",
        json!({"image": busybox(), "limits": {"disk": "32Mi"}, "command": ["sh", "-c", dd]}),
    )
    .await;
    assert!(
        lines.iter().any(|l| l.contains("Disk quota exceeded")),
        "{lines:?}"
    );
    let n = dd_copied(&lines);
    assert!(
        n > 30 << 20 && n <= 33 << 20,
        "wrote {n} bytes under a 32Mi limit"
    );
    let d = a.inspect("full").await.limits.disk.unwrap();
    assert_eq!((d.mechanism.as_str(), d.bytes), ("project_quota", 32 << 20));
    let s = a.stats("full").await.disk.unwrap();
    assert!(
        s.used > 30 << 20 && s.used <= 33 << 20 && s.limit == 32 << 20,
        "{s:?}"
    );

    // inodes
    let sh = "mkdir /many; i=0; while [ $i -lt 5000 ] && touch /many/$i 2>/dev/null; do i=$((i+1)); done; echo made=$i";
    let lines = output(
        &a,
        "files",
        json!({"image": busybox(), "limits": {"inodes": 1000}, "command": ["sh", "-c", sh]}),
    )
    .await;
    let made: u64 = field(&lines, "made").parse().unwrap();
    assert!(
        (900..=1010).contains(&made),
        "made {made} files under limits.inodes = 1000"
    );

    // ids: distinct, kept across an agent SIGKILL, never handed out twice
    let id = |c: &hydra_agent::api::ContainerInfo| c.limits.disk.as_ref().unwrap().project.unwrap();
    let (i1, i2) = (id(&a.inspect("full").await), id(&a.inspect("files").await));
    assert!(i1 != i2 && (5000..=5002).contains(&i1) && (5000..=5002).contains(&i2));
    a.kill9();
    a.spawn().await;
    let c3 = a
        .run(json!({"name": "third", "image": busybox(), "command": ["true"]}))
        .await
        .unwrap();
    let i3 = id(&c3);
    assert!(i3 != i1 && i3 != i2, "{i3} handed out twice");
    assert_eq!(a.stats("full").await.disk.unwrap().limit, 32 << 20);
    // exhausted: a 409 naming limits.disk, nothing left behind
    let e = a
        .run(json!({"name": "fourth", "image": busybox(), "command": ["true"]}))
        .await
        .unwrap_err();
    assert_eq!(api_field(&e), (409, Some("limits.disk".into())));
    assert!(!a.state().join("containers/fourth").exists());
    // a removed container's id comes back once its files are gone
    let (st, _) = a
        .client
        .raw("DELETE", "/v1/containers/full?force=true", None)
        .await
        .unwrap();
    assert_eq!(st, 204);
    let mut again = None;
    eventually(30, "the removed container's id free again", async || {
        again = a
            .run(json!({"name": "fourth", "image": busybox(), "command": ["true"]}))
            .await
            .ok();
        again.is_some()
    })
    .await;
    assert_eq!(id(&again.unwrap()), i1);
}
