//! Images crafted to escape: /proc as a symlink, /sys as a file, `..`
//! entries, whiteouts and files through symlinks, hard links out, absolute
//! paths, device nodes, a planted /dev/null, /etc/hosts and resolv.conf as
//! symlinks out, a symlink-out workdir, setuid files: refused or
//! neutralised, a host canary untouched.

mod common;
use common::*;
use serde_json::json;

/// A layer tar entry with a raw name (the tar crate refuses `..` when
/// building, so the name is written into the header directly).
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    mode: u32,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(data.len() as u64);
    if let Some(l) = link {
        h.set_link_name(l).unwrap();
    }
    if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        h.set_device_major(8).unwrap();
        h.set_device_minor(0).unwrap();
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn layer(f: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b);
    b.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn crafted_images_do_not_reach_the_host() {
    require_root!();
    let a = Agent::start("").await;
    let canary = tempfile::Builder::new()
        .prefix("hydra-canary-")
        .tempdir()
        .unwrap();
    let cdir = canary.path().display().to_string();
    std::fs::write(canary.path().join("victim"), "intact").unwrap();
    let untouched = || {
        let names: Vec<String> = std::fs::read_dir(canary.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names == ["victim"]
            && std::fs::read_to_string(canary.path().join("victim")).unwrap() == "intact"
    };
    let base = repo().join("build/images/busybox");
    let mut n = 0;
    let mut image = |layers: Vec<Vec<u8>>| {
        n += 1;
        let d = tempfile::tempdir().unwrap().keep();
        write_layout(&d, &layers, &base);
        format!("oci-layout:{}:v1", d.display())
    };
    let reg = tar::EntryType::Regular;
    let sym = tar::EntryType::Symlink;
    let up = "../../../../../../../../../..";

    // 1. /proc or /sys not a directory: refused, naming the image
    for (what, l) in [
        (
            "proc symlink",
            layer(|b| raw_entry(b, "proc", sym, Some("/etc"), 0o777, b"")),
        ),
        (
            "sys file",
            layer(|b| raw_entry(b, "sys", reg, None, 0o644, b"x")),
        ),
        (
            "dev symlink",
            layer(|b| raw_entry(b, "dev", sym, Some(&cdir), 0o777, b"")),
        ),
    ] {
        let e = a
            .run(json!({"name": "bad", "image": image(vec![l]), "command": ["true"]}))
            .await
            .unwrap_err();
        assert_eq!(api_field(&e).1.as_deref(), Some("image"), "{what}: {e}");
    }

    // 2. escapes in the layer itself: `..`, a whiteout through a symlink,
    // a hard link out of the layer, a file through a symlink: refused
    for (what, l) in [
        (
            "dotdot",
            layer(|b| raw_entry(b, &format!("{up}{cdir}/dotdot"), reg, None, 0o644, b"x")),
        ),
        (
            "whiteout under a symlink to /",
            layer(|b| {
                raw_entry(b, "root", sym, Some("/"), 0o777, b"");
                raw_entry(b, &format!("root{cdir}/made/.wh.y"), reg, None, 0o644, b"");
            }),
        ),
        (
            "whiteout via symlink",
            layer(|b| {
                raw_entry(b, "lnk", sym, Some(&cdir), 0o777, b"");
                raw_entry(b, "lnk/.wh.victim", reg, None, 0o644, b"");
            }),
        ),
        (
            "file via symlink",
            layer(|b| {
                raw_entry(b, "lnk", sym, Some(&cdir), 0o777, b"");
                raw_entry(b, "lnk/pwned", reg, None, 0o644, b"x");
            }),
        ),
        (
            "hard link out",
            layer(|b| {
                raw_entry(
                    b,
                    "hl",
                    tar::EntryType::Link,
                    Some(&format!("{cdir}/victim")),
                    0o644,
                    b"",
                )
            }),
        ),
    ] {
        let res = a
            .run(json!({"name": "bad", "image": image(vec![l]), "command": ["true"]}))
            .await;
        assert!(res.is_err(), "{what} was accepted");
        assert!(untouched(), "{what} touched the host");
    }

    // 3. neutralised: an absolute path lands inside, a device node is
    // dropped, a setuid file elevates nothing; /dev/null planted as a symlink
    // to the host canary is hidden by our /dev (the container writes to it);
    // a symlink out used as workdir stays inside; /etc/hosts and resolv.conf
    // planted as symlinks out are replaced, not followed
    let l = layer(|b| {
        raw_entry(
            b,
            "etc/hosts",
            sym,
            Some(&format!("{cdir}/victim")),
            0o777,
            b"",
        );
        let rel = format!("{up}{cdir}/victim");
        raw_entry(b, "etc/resolv.conf", sym, Some(&rel), 0o777, b"");
        raw_entry(b, "dev", tar::EntryType::Directory, None, 0o755, b"");
        raw_entry(
            b,
            "dev/null",
            sym,
            Some(&format!("{cdir}/victim")),
            0o777,
            b"",
        );
        raw_entry(b, &format!("{cdir}/abs"), reg, None, 0o644, b"abs");
        raw_entry(b, "blk", tar::EntryType::Block, None, 0o666, b"");
        raw_entry(b, "suid", reg, None, 0o4755, b"#!/bin/sh\nid -u\n");
        raw_entry(b, "out", sym, Some(&format!("{up}{cdir}")), 0o777, b"");
    });
    let img = image(vec![l]);
    let script = format!(
        "echo $(cat {cdir}/abs); ls /blk 2>/dev/null && echo blk=present || echo blk=absent; \
         echo pwned > /dev/null; echo pwned > pwned && echo cwd=$(pwd); \
         grep -c neutral /etc/hosts; test -L /etc/resolv.conf || echo resolv=own"
    );
    let out = output(
        &a,
        "neutral",
        json!({"image": img, "workdir": "/out", "command": ["sh", "-c", script]}),
    )
    .await;
    assert_eq!(
        out[0], "abs",
        "the absolute path was put inside the image: {out:?}"
    );
    assert!(out.contains(&"blk=absent".to_string()), "{out:?}");
    assert!(
        out.contains(&"1".to_string()),
        "its own /etc/hosts: {out:?}"
    );
    assert!(out.contains(&"resolv=own".to_string()), "{out:?}");
    assert!(
        out.contains(&format!("cwd={cdir}")),
        "wrote in its own {cdir}: {out:?}"
    );
    assert!(untouched(), "the host canary dir was written: {out:?}");
    // the setuid file runs as the user (nosuid, no_new_privs)
    let out = output(
        &a,
        "suid",
        json!({"image": img, "user": "app", "command": ["/suid"]}),
    )
    .await;
    assert_eq!(out, vec!["1000"]);
    assert!(untouched());
}
