//! OCI image layouts and layer tars for the image tests.

use std::path::Path;

pub fn sha(b: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(b))
}

/// A tar with the given (path, content) entries; content None is a directory.
pub fn tar(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        match content {
            Some(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, path, c.as_bytes()).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                h.set_mode(0o755);
                b.append_data(&mut h, path, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

pub fn write_layout(dir: &Path, layers: &[Vec<u8>], base: &Path) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |b: &[u8]| {
        let d = sha(b);
        std::fs::write(blobs.join(&d), b).unwrap();
        d
    };
    // the busybox rootfs as the first layer, so the test can run commands
    let mut bb = tar::Builder::new(Vec::new());
    bb.follow_symlinks(false);
    bb.append_dir_all(".", base).unwrap();
    let bb = bb.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &bb).unwrap();
    let bbgz = gz.finish().unwrap();
    let mut descs = vec![
        serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": format!("sha256:{}", put(&bbgz)), "size": bbgz.len()}),
    ];
    let mut diff_ids = vec![format!("sha256:{}", sha(&bb))];
    for l in layers {
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": format!("sha256:{}", put(l)), "size": l.len()}));
        diff_ids.push(format!("sha256:{}", sha(l)));
    }
    let config = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh", "-c", "echo default-cmd"], "Env": ["PATH=/bin", "FROM_IMAGE=yes"], "WorkingDir": "/data"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}}))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", put(&config)), "size": config.len()},
        "layers": descs}))
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", put(&manifest)), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "v1"}}]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}
