//! The image mechanism on the host (root): the filesystem holds what the
//! limit says, no more, and its life (mount, lock, clean unmount, reset).

use super::image::{self, HEADROOM};
use super::*;
use std::io::Write;

fn fill(dir: &Path) -> u64 {
    let p = image::mount_point(dir).join("upper/fill");
    let mut f = std::fs::File::create(&p).unwrap();
    let buf = vec![7u8; 1 << 20];
    let mut n = 0u64;
    loop {
        match f.write(&buf) {
            Ok(k) => n += k as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                return n;
            }
        }
    }
}

#[test]
fn an_image_holds_its_limit_and_its_inodes() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path();
    for (bytes, inodes) in [
        (32u64 << 20, 1u64 << 20),
        (64 << 20, 1000),
        (10 << 30, 1 << 20),
    ] {
        let (size, n) = image::plan(bytes, inodes);
        assert!(size > bytes && n <= inodes, "{bytes} {inodes}: {size} {n}");
    }
    let got = image::make(
        &image::image_path(dir),
        32 << 20,
        1000,
        &dir.join("templates"),
    )
    .unwrap();
    // a second layer of that size is a copy of the same template
    image::make(
        &dir.join("second.img"),
        32 << 20,
        1000,
        &dir.join("templates"),
    )
    .unwrap();
    assert_eq!(std::fs::read_dir(dir.join("templates")).unwrap().count(), 1);
    std::fs::remove_file(dir.join("second.img")).unwrap();
    assert!((1000..1100).contains(&got), "{got}");
    // sparse: the host pays for what is written, not for the limit
    let held = std::fs::metadata(image::image_path(dir)).unwrap();
    assert!(std::os::unix::fs::MetadataExt::blocks(&held) * 512 < 2 << 20);
    image::mount(dir).unwrap();
    let written = fill(dir);
    let lim = 32u64 << 20;
    assert!(
        written > lim - (2 << 20) && written <= lim + HEADROOM,
        "{written}"
    );
    // a full layer mounts its overlay dirs again: the headroom is there
    image::reserve_headroom(dir);
    std::fs::remove_file(image::mount_point(dir).join("upper/fill")).unwrap();
    let u = image::usage(dir).unwrap();
    assert!(u.bytes < 1 << 20, "{u:?}");
    // a second attach of the same image is refused, not mounted twice
    let other = t.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::hard_link(image::image_path(dir), image::image_path(&other)).unwrap();
    let e = image::mount(&other).unwrap_err();
    assert!(e.to_string().contains("attached already"), "{e}");
    // while mounted the filesystem is marked in use; unmounted, clean
    assert!(
        image::reset_if_unclean(&other).unwrap(),
        "a mounted image's superblock says clean"
    );
    image::unmount(dir);
    assert!(!image::reset_if_unclean(dir).unwrap());
    assert!(image::image_path(dir).exists());
}
