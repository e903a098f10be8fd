//! The container's user: `user` of the spec resolved against the image's
//! /etc/passwd and /etc/group, read safely while the init is still root.

use super::init::{fail, InitError};
use std::fs;
use std::os::unix::fs::OpenOptionsExt;

/// `UID[:GID]` or `NAME[:GROUP]`, names looked up in the image's /etc files.
pub fn resolve_user(user: Option<&str>) -> Result<(u32, u32), InitError> {
    let Some(user) = user else { return Ok((0, 0)) };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, lookup_by_uid(n)),
        Err(_) => {
            let (uid, gid) = lookup_name("/etc/passwd", u).ok_or_else(|| {
                fail(
                    "user",
                    format!("user {u:?} is not in the image's /etc/passwd"),
                )
            })?;
            (uid, gid)
        }
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                lookup_name("/etc/group", g)
                    .ok_or_else(|| {
                        fail(
                            "user",
                            format!("group {g:?} is not in the image's /etc/group"),
                        )
                    })?
                    .0
            }
        },
        None => primary.unwrap_or(uid),
    };
    Ok((uid, gid))
}

/// An image's /etc/passwd or /etc/group, read while the init still has every
/// capability: only a regular file (not a symlink to /proc/kmsg or
/// /dev/zero), opened without blocking, at most 4 MiB.
fn read_image_file(path: &str) -> Option<String> {
    use std::io::Read;
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut text = String::new();
    f.take(4 << 20).read_to_string(&mut text).ok()?;
    Some(text)
}

fn lookup_by_uid(uid: u32) -> Option<u32> {
    let text = read_image_file("/etc/passwd")?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[3].parse().ok())?
    })
}

/// `(id, next field as a number)` of `name` in a passwd or group file.
fn lookup_name(file: &str, name: &str) -> Option<(u32, Option<u32>)> {
    let text = read_image_file(file)?;
    for l in text.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            return Some((f[2].parse().ok()?, f.get(3).and_then(|g| g.parse().ok())));
        }
    }
    None
}
