//! Storage limits (`limits.disk`, `limits.inodes`) enforced by the kernel,
//! with the mechanism this host has (`image` here: a loop-mounted ext4 per
//! layer; the same tests run in the VM).

mod common;
use common::*;
use serde_json::json;

/// Mounts of the agent's state dir in its mount namespace.
fn layer_mounts(a: &Agent) -> usize {
    let st = a.state().display().to_string();
    a.host
        .sh("cat /proc/self/mountinfo")
        .lines()
        .filter(|l| l.contains(&st))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_layer_stops_at_its_limit_and_nothing_else_notices() {
    require_root!();
    let a = Agent::start("").await;
    assert_eq!(a.client.host().await.unwrap().storage_limits, "image");
    let dd = "dd if=/dev/zero of=/big bs=64k count=1600; sync; sleep 600";
    let spec = json!({"name": "filler", "image": busybox(), "limits": {"disk": "32Mi"},
                      "command": ["sh", "-c", dd]});
    let c = a.run(spec).await.unwrap();
    let d = c.limits.disk.clone().expect("applied");
    assert_eq!((d.bytes, d.mechanism.as_str()), (32 << 20, "image"));
    let mut lines = Vec::new();
    eventually(60, "dd to end", async || {
        lines = a.logs("filler").await.into_iter().map(|r| r.line).collect();
        lines.iter().any(|l| l.ends_with("records out"))
    })
    .await;
    assert!(
        lines.iter().any(|l| l.contains("No space left on device")),
        "{lines:?}"
    );
    let n = dd_copied(&lines);
    assert!(
        n > 30 << 20 && n <= 33 << 20,
        "wrote {n} bytes under a 32Mi limit"
    );
    // the host pays for what was written, not more
    let img = a.state().join("containers/filler/disk.img");
    let held = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&img).unwrap()) * 512;
    assert!(held < 40 << 20, "the image holds {held} bytes on the host");
    let s = a.stats("filler").await.disk.expect("disk stats");
    assert_eq!(s.limit, 32 << 20);
    assert!(s.used > 30 << 20 && s.used <= 33 << 20, "{s:?}");
    // another container with the default limit writes, the agent creates
    let lines = output(
        &a,
        "other",
        json!({"image": busybox(),
        "command": ["sh", "-c", "dd if=/dev/zero of=/f bs=1M count=8 && echo wrote"]}),
    )
    .await;
    assert!(lines.iter().any(|l| l == "wrote"), "{lines:?}");
    let other = a
        .inspect("other")
        .await
        .limits
        .disk
        .expect("default applied");
    assert_eq!(other.bytes, 10 << 30);
    // metrics say the same (from the sampler's next pass)
    eventually(30, "the disk series in /metrics", async || {
        let (_, m) = a.client.raw("GET", "/metrics", None).await.unwrap();
        String::from_utf8_lossy(&m).lines().any(|l| {
            l.starts_with("hydra_container_disk_limit_bytes{container=\"filler\"")
                && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())
                    == Some((32u64 << 20) as f64)
        })
    })
    .await;
    // removal unmounts (in the trash's thread) and deletes the layer; its
    // loop device goes with it
    assert_eq!(layer_mounts(&a), 2);
    for n in ["filler", "other"] {
        let (st, _) = a
            .client
            .raw("DELETE", &format!("/v1/containers/{n}?force=true"), None)
            .await
            .unwrap();
        assert_eq!(st, 204);
    }
    eventually(10, "the layers unmounted", async || layer_mounts(&a) == 0).await;
    let st = a.state().display().to_string();
    eventually(10, "the loop devices detached", async || {
        loop_devices_of(&st).is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_stop_near_the_inode_limit() {
    require_root!();
    let a = Agent::start("").await;
    let sh = "mkdir /many; i=0; while [ $i -lt 5000 ] && touch /many/$i 2>/dev/null; do i=$((i+1)); done; echo made=$i";
    let lines = output(
        &a,
        "files",
        json!({"image": busybox(), "limits": {"disk": "64Mi", "inodes": 1000},
        "command": ["sh", "-c", sh]}),
    )
    .await;
    let made: u64 = field(&lines, "made").parse().unwrap();
    assert!(
        (900..=1100).contains(&made),
        "made {made} files under limits.inodes = 1000"
    );
    let applied = a.inspect("files").await.limits.disk.unwrap().inodes;
    assert!((1000..1100).contains(&applied), "{applied}");
    let s = a.stats("files").await.disk.unwrap();
    assert!(s.inodes_used >= made && s.inodes_limit == applied, "{s:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_layer_and_its_limit_survive_an_agent_kill_and_a_restart() {
    require_root!();
    let mut a = Agent::start("").await;
    let spec = json!({"name": "keep", "image": busybox(), "limits": {"disk": "16Mi"},
        "command": ["sh", "-c", "[ -f /kept ] || dd if=/dev/zero of=/kept bs=1M count=8; sleep 600"]});
    a.run(spec).await.unwrap();
    eventually(30, "8 MiB written", async || {
        a.stats("keep")
            .await
            .disk
            .is_some_and(|d| d.used >= 8 << 20)
    })
    .await;
    a.kill9();
    a.spawn().await;
    let s = a.stats("keep").await.disk.expect("adopted with its layer");
    assert!(s.used >= 8 << 20 && s.limit == 16 << 20, "{s:?}");
    // a restart keeps the layer (the file is not written again) and the limit
    for op in ["stop?timeout=5", "start"] {
        let (st, body) = a
            .client
            .raw("POST", &format!("/v1/containers/keep/{op}"), None)
            .await
            .unwrap();
        assert!(st < 300, "{op}: {st} {body:?}");
    }
    let lines = output(
        &a,
        "probe",
        json!({"image": busybox(), "limits": {"disk": "16Mi"},
        "command": ["sh", "-c", "dd if=/dev/zero of=/x bs=1M count=40; echo done"]}),
    )
    .await;
    assert!(
        lines.iter().any(|l| l.contains("No space left")),
        "{lines:?}"
    );
    let s = a.stats("keep").await.disk.unwrap();
    assert!(
        s.used >= 8 << 20 && s.used < 9 << 20,
        "the layer was kept: {s:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_mechanism_creates_are_refused_unless_opted_out() {
    require_root!();
    let a = Agent::start("[storage]\nmechanism = \"none\"\n").await;
    assert_eq!(a.client.host().await.unwrap().storage_limits, "none");
    let e = a
        .run(json!({"name": "x", "image": busybox(), "limits": {"disk": "1Gi"}, "command": ["true"]}))
        .await
        .unwrap_err();
    assert_eq!(api_field(&e), (422, Some("limits.disk".into())));
    assert!(e.to_string().contains("require_limits"), "{e}");
    // nothing is left of the refused create
    assert!(!a.state().join("containers/x").exists());
    let b = Agent::start("[storage]\nmechanism = \"none\"\nrequire_limits = false\n").await;
    let c = b
        .run(json!({"name": "x", "image": busybox(), "command": ["true"]}))
        .await
        .unwrap();
    assert!(c.limits.disk.is_none());
    b.wait("x").await;
    assert!(b.stats("x").await.disk.is_none());
}

/// After a reboot (simulated: the layer unmounted as a shutdown would,
/// this boot's id forgotten), a cleanly unmounted image is mounted again
/// with what it held; one a crash left unclean is dropped, with a
/// `layer_reset` event, and the container starts from its image.
#[tokio::test(flavor = "multi_thread")]
async fn after_a_reboot_a_clean_layer_is_kept_and_an_unclean_one_reset() {
    require_root!();
    let mut a = Agent::start("").await;
    let sh = "echo \"before: $(cat /kept 2>/dev/null | wc -l)\"; echo x >> /kept";
    for n in ["clean", "crashed"] {
        let spec = json!({"name": n, "image": busybox(), "limits": {"disk": "16Mi"}, "command": ["sh", "-c", sh]});
        a.run(spec).await.unwrap();
        assert_eq!(a.wait(n).await.exit_code, Some(0));
    }
    a.kill9();
    for n in ["clean", "crashed"] {
        let mp = a.state().join(format!("containers/{n}/layer"));
        a.host.sh(&format!("umount {}", mp.display()));
    }
    // a crash: the superblock still says "in use" (s_state bit 0 clear)
    let img = a.state().join("containers/crashed/disk.img");
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0, 0], 1024 + 58).unwrap();
    drop(f);
    std::fs::write(a.state().join("boot_id"), "00000000-previous-boot\n").unwrap();
    a.spawn().await;
    for (n, want) in [("clean", "before: 1"), ("crashed", "before: 0")] {
        let (st, body) = a
            .client
            .raw("POST", &format!("/v1/containers/{n}/start"), None)
            .await
            .unwrap();
        assert!(st < 300, "{st} {body:?}");
        a.wait(n).await;
        let lines: Vec<String> = a.logs(n).await.into_iter().map(|r| r.line).collect();
        assert_eq!(
            lines.last().map(String::as_str),
            Some(want),
            "{n}: {lines:?}"
        );
    }
    let events = std::fs::read_dir(a.state().join("events"))
        .unwrap()
        .flatten();
    let text: String = events
        .map(|f| std::fs::read_to_string(f.path()).unwrap_or_default())
        .collect();
    let reset = |n: &str| {
        text.lines()
            .any(|l| l.contains(n) && l.contains("layer_reset"))
    };
    assert!(reset("crashed") && !reset("clean"), "{text}");
}

/// Loop devices backed by a file whose path contains `part`: (device, file).
fn loops_with(part: &str) -> Vec<(String, String)> {
    std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let b = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            let name = e.file_name().to_string_lossy().into_owned();
            b.contains(part).then(|| (name, b.trim().to_string()))
        })
        .collect()
}

/// The pool's images are mounted ahead, attached to no directory: a create
/// moves one into place (same loop device, no new mount on its path), and
/// a killed agent takes the pool's mounts with it.
#[tokio::test(flavor = "multi_thread")]
async fn prepared_layers_are_mounted_ahead_and_go_with_the_agent() {
    require_root!();
    let mut a = Agent::start("[storage]\nprepared_images = 1\n").await;
    let pool = format!("{}/disk-pool/", a.state().display());
    eventually(30, "an image mounted ahead", async || {
        loops_with(&pool).len() == 1
    })
    .await;
    let (dev, _) = loops_with(&pool).remove(0);
    // attached to no directory: not in the agent's mount table
    assert_eq!(layer_mounts(&a), 0);
    a.run(json!({"name": "c1", "image": busybox(), "command": ["sleep", "600"]}))
        .await
        .unwrap();
    let backing = std::fs::read_to_string(format!("/sys/block/{dev}/loop/backing_file")).unwrap();
    assert!(
        backing.trim().ends_with("/c1/disk.img"),
        "the pool's device now holds c1's layer: {backing}"
    );
    assert_eq!(layer_mounts(&a), 1);
    eventually(30, "the pool refilled", async || {
        loops_with(&pool).len() == 1
    })
    .await;
    a.kill9();
    eventually(10, "the pool's mounts gone with the agent", async || {
        loops_with(&pool).is_empty()
    })
    .await;
    // c1's layer stays mounted across the crash; the next agent mounts
    // the pool's image again
    assert_eq!(layer_mounts(&a), 1);
    a.spawn().await;
    eventually(30, "mounted ahead again", async || {
        loops_with(&pool).len() == 1
    })
    .await;
    eprintln!("{}", a.log());
    let (st, _) = a
        .client
        .raw("DELETE", "/v1/containers/c1?force=true", None)
        .await
        .unwrap();
    assert_eq!(st, 204);
    eventually(10, "c1's layer unmounted", async || layer_mounts(&a) == 0).await;
}
