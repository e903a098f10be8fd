//! An image built by a real dockerd (`docker build`, several layers: files
//! deleted, a directory replaced by a file, a directory emptied and made
//! again (an opaque whiteout), a hard link, a symlink), pushed with `docker
//! push` to a real registry (and copied there with zstd layers by skopeo),
//! pulled by the agent: the files its container sees are the ones `docker
//! run` sees.

mod common;
#[path = "docker/dockerd.rs"]
mod dockerd;
#[path = "registry/peer.rs"]
mod peer;
use common::*;
use dockerd::*;
use peer::{Registry, ADDR};
use serde_json::json;

const DOCKERFILE: &str = "FROM scratch
COPY rootfs/ /
RUN mkdir -p /data/dir /data/replaced /data/opq && echo one > /data/file && echo keep > /data/keep \
 && echo x > /data/replaced/inner && echo old > /data/dir/old && echo o1 > /data/opq/a && echo o2 > /data/opq/b \
 && ln /data/keep /data/hardlink && ln -s /data/keep /data/symlink
RUN rm /data/file && rm -rf /data/replaced && echo now-a-file > /data/replaced && rm /data/dir/old \
 && echo new > /data/dir/new && rm -rf /data/opq && mkdir /data/opq && echo fresh > /data/opq/fresh
";

/// Every path under /data: a symlink's target, a file's md5 and link
/// count, or `dir`.
const LIST: &str = r#"cd /data && find . | sort | while read f; do if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; elif [ -f "$f" ]; then echo "$f $(md5sum < "$f" | cut -c1-32) $(stat -c %h "$f")"; else echo "$f dir"; fi; done"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_docker_built_image_pulled_from_the_registry_has_dockers_files() {
    require_root!();
    if !have_dockerd() {
        return;
    }
    let host = Host::new();
    let regdir = tempfile::tempdir().unwrap();
    let reg = Registry::start(&host, regdir.path());
    let ddir = tempfile::Builder::new()
        .prefix("hydra-test-docker-")
        .tempdir()
        .unwrap();
    let d = ddir.path().display().to_string();
    let dockerd = Dockerd::start_with(&host, ddir.path(), &format!("--insecure-registry {ADDR}"));
    let ctx = ddir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let _ = images();
    host.sh(&format!(
        "cp -a {} {}/rootfs",
        repo().join("build/images/busybox").display(),
        ctx.display()
    ));
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();
    let image = format!("{ADDR}/shop/built:v1");
    let docker = |args: &str| docker(&host, ddir.path(), &format!("--config {d}/cli {args}"));
    docker(&format!("build -q -t {image} {}", ctx.display()));
    docker(&format!(
        "login -u {} -p {} {ADDR}",
        peer::USER,
        peer::PASSWORD
    ));
    docker(&format!("push -q {image}"));
    let want = docker(&format!(
        "run --rm --network none {image} sh -c '{}'",
        LIST.replace('\'', "'\\''")
    ));
    // the same image with zstd layers, copied inside the registry by skopeo
    let zstd = format!("{ADDR}/shop/built:zstd");
    let creds = format!("{}:{}", peer::USER, peer::PASSWORD);
    let certs = format!("{}/certs", reg.dir.display());
    // (skopeo recompresses into a layout, not from registry to registry)
    host.sh(&format!(
        "skopeo copy --quiet --src-creds {creds} --src-cert-dir {certs} --dest-compress --dest-compress-format zstd \
         docker://{image} oci:{d}/zlayout:zstd"
    ));
    reg.push(&host, &format!("{d}/zlayout:zstd"), "shop/built:zstd", "");
    let raw = host.sh(&format!(
        "skopeo inspect --raw --creds {creds} --cert-dir {certs} docker://{zstd}"
    ));
    assert!(raw.contains("tar+zstd"), "zstd layers: {raw}");
    let a = Agent::start_on(
        host,
        &format!("{}[network]\nenabled = false\n", reg.config("password")),
    )
    .await;
    for (name, r) in [("gzip", &image), ("zstd", &zstd)] {
        let got = output(
            &a,
            name,
            json!({"name": name, "image": r, "command": ["sh", "-c", LIST]}),
        )
        .await;
        assert_eq!(
            got.join("\n"),
            want,
            "{r}: the files differ from docker run's"
        );
    }
    // and what the Dockerfile made is there, not just the same
    for line in [
        "./dir/new",
        "./hardlink b260098afc93a054427d63c4de6be6a1 2",
        "./symlink -> /data/keep",
        "./opq/fresh",
        "./replaced",
    ] {
        assert!(
            want.lines().any(|l| l.starts_with(line)),
            "{line} in {want}"
        );
    }
    for gone in ["./file ", "./dir/old", "./opq/a", "./replaced/inner"] {
        assert!(
            !want.lines().any(|l| l.starts_with(gone)),
            "{gone} in {want}"
        );
    }
    drop(a);
    drop(dockerd);
}
