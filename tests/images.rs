//! OCI layouts built here: whiteouts and opaque directories across layers,
//! layers unpacked once and shared.

mod common;
use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn whiteouts_opaque_dirs_and_image_defaults() {
    require_root!();
    images();
    let a = Agent::start("").await;
    let tmp = tempfile::tempdir().unwrap();
    let l1 = tar(&[
        ("data", None),
        ("data/a", Some("A")),
        ("data/b", Some("B")),
        ("keep", None),
        ("keep/x", Some("X")),
    ]);
    let l2 = tar(&[
        ("data/.wh.a", Some("")),
        ("keep/.wh..wh..opq", Some("")),
        ("keep/y", Some("Y")),
    ]);
    write_layout(tmp.path(), &[l1, l2], &repo().join("build/images/busybox"));
    let image = format!("oci-layout:{}:v1", tmp.path().display());

    // the image's Cmd, Env and WorkingDir are the defaults
    a.run(json!({"name": "defaults", "image": image}))
        .await
        .unwrap();
    assert_eq!(a.wait("defaults").await.exit_code, Some(0));
    assert_eq!(a.logs("defaults").await[0].line, "default-cmd");

    a.run(json!({"name": "layers", "image": image, "env": {"EXTRA": "1"},
                 "command": ["sh", "-c", "ls /data; echo --; ls /keep; echo --; pwd; echo $FROM_IMAGE$EXTRA"]}))
        .await
        .unwrap();
    assert_eq!(a.wait("layers").await.exit_code, Some(0));
    let lines: Vec<String> = a.logs("layers").await.into_iter().map(|r| r.line).collect();
    assert_eq!(
        lines,
        vec!["b", "--", "y", "--", "/data", "yes1"],
        "a whited out, keep/ opaque"
    );

    // layers are unpacked once and shared by every container of the image
    let store = a.state().join("layers/sha256");
    let before: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name(), e.metadata().unwrap().modified().unwrap()))
        .collect();
    assert_eq!(before.len(), 3);
    a.run(json!({"name": "again", "image": image, "command": ["true"]}))
        .await
        .unwrap();
    let after: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name(), e.metadata().unwrap().modified().unwrap()))
        .collect();
    assert_eq!(before.len(), after.len());
    for b in &before {
        assert!(after.contains(b), "layer {:?} was not unpacked again", b.0);
    }
    // writes go to the container's own upper dir, never into the shared layers
    a.run(json!({"name": "writer", "image": image, "command": ["sh", "-c", "echo changed > /data/b; rm /keep/y"]})).await.unwrap();
    assert_eq!(a.wait("writer").await.exit_code, Some(0));
    a.run(json!({"name": "reader", "image": image, "command": ["sh", "-c", "cat /data/b; echo; ls /keep"]})).await.unwrap();
    a.wait("reader").await;
    let lines: Vec<String> = a.logs("reader").await.into_iter().map(|r| r.line).collect();
    assert_eq!(lines, vec!["B", "y"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn process_settings_and_filesystem_inside() {
    require_root!();
    let a = Agent::start("").await;
    a.run(json!({"name": "inside", "image": busybox(), "user": "1000:1000", "workdir": "/tmp/work",
                 "command": ["sh", "-c", "id -u; id -g; pwd; hostname; ls /dev | tr '\\n' ' '; echo; \
                              if echo x 2>/dev/null >/sys/kernel/x; then echo sys-writable; else echo sys-ro; fi; \
                              cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /proc | grep -c '^[0-9]'"]}))
        .await
        .unwrap();
    assert_eq!(a.wait("inside").await.exit_code, Some(0));
    let lines: Vec<String> = a.logs("inside").await.into_iter().map(|r| r.line).collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1000");
    assert_eq!(lines[2], "/tmp/work");
    assert_eq!(lines[3], "inside");
    for dev in [
        "null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm",
    ] {
        assert!(
            lines[4].split_whitespace().any(|d| d == dev),
            "/dev/{dev} in {}",
            lines[4]
        );
    }
    assert_eq!(lines[5], "sys-ro");
    assert!(
        lines[6].starts_with("sh -c"),
        "the container's process is pid 1: {}",
        lines[6]
    );
    assert_eq!(
        lines[7], "3",
        "only the container's processes are visible (sh, ls, grep)"
    );
}
