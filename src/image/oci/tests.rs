//! Layer unpacking: what a plain layer becomes, what is refused, and (a
//! property) that no layer, however crafted, makes `extract` write outside
//! its destination. Whiteouts need root (mknod, trusted.* xattrs); without
//! it they fail, which the property allows.

use super::error::chain;
use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// The layer file `blob` unpacked into `dest` (what a create does).
fn extract(blob: &Path, dest: &Path) -> Result<String, OciError> {
    let f = File::open(blob).unwrap();
    unpack::extract(BufReader::new(f), blob, dest, u64::MAX)
}

/// One tar entry as generated: names and link targets may hold `@ROOT`,
/// the temp root's absolute path (known only when the test runs).
#[derive(Debug, Clone)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    HardLink(String),
    Char,
    Block,
    Fifo,
}

#[derive(Debug, Clone)]
struct Item {
    path: String,
    kind: Kind,
    mode: u32,
    uid: u64,
}

/// A header with a raw name and link name (the tar crate's setters refuse
/// `..` and absolute names, which are exactly what is tested).
fn header(
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    mode: u32,
    uid: u64,
    size: u64,
) -> Option<tar::Header> {
    if name.len() >= 100 || link.is_some_and(|l| l.len() >= 100) {
        return None;
    }
    let mut h = tar::Header::new_gnu();
    {
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            g.linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
    }
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_mtime(1_000_000);
    h.set_size(size);
    if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        // a host disk
        h.set_device_major(8).unwrap();
        h.set_device_minor(0).unwrap();
    }
    h.set_cksum();
    Some(h)
}

/// The tar of `items` (names too long for a plain header are left out),
/// gzipped or not.
fn build(items: &[Item], root: &Path, gz: bool) -> Vec<u8> {
    let root = root.to_str().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for it in items {
        let name = it.path.replace("@ROOT", root);
        let (kind, link, data): (_, Option<String>, &[u8]) = match &it.kind {
            Kind::File(d) => (tar::EntryType::Regular, None, d),
            Kind::Dir => (tar::EntryType::Directory, None, b""),
            Kind::Symlink(t) => (tar::EntryType::Symlink, Some(t.replace("@ROOT", root)), b""),
            Kind::HardLink(t) => (tar::EntryType::Link, Some(t.replace("@ROOT", root)), b""),
            Kind::Char => (tar::EntryType::Char, None, b""),
            Kind::Block => (tar::EntryType::Block, None, b""),
            Kind::Fifo => (tar::EntryType::Fifo, None, b""),
        };
        if let Some(h) = header(
            &name,
            kind,
            link.as_deref(),
            it.mode,
            it.uid,
            data.len() as u64,
        ) {
            b.append(&h, data).unwrap();
        }
    }
    let tar = b.into_inner().unwrap();
    if !gz {
        return tar;
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut e, &tar).unwrap();
    e.finish().unwrap()
}

/// The names entries share, so that links, whiteouts and files meet.
const SHARED: [&str; 2] = ["lnk", "a"];

/// Link targets outside the destination: next to it, the canary, the victim
/// file, up to the temp root (not above it: a broken unpack must not reach
/// the host).
const OUTSIDE: [&str; 11] = [
    "@ROOT",
    "@ROOT/a",
    "@ROOT/a/victim",
    "@ROOT/a/b/canary",
    "@ROOT/a/b/canary/x",
    "../canary",
    "../canary/x",
    "../../victim",
    "..",
    "../..",
    "../../..",
];

/// A path component: a shared name, `..` and `.`, the temp root, a
/// whiteout of any kind (`.wh..wh..opq` is the opaque marker).
fn segment() -> impl Strategy<Value = String> {
    let s = |v: Vec<&'static str>| prop::sample::select(v).prop_map(String::from);
    prop_oneof![
        6 => s(SHARED.to_vec()),
        2 => s(vec!["x", "canary", "victim"]),
        3 => s(vec![
            ".wh.x", ".wh.a", ".wh.lnk", ".wh.victim", ".wh..opq", ".wh..wh..opq", ".wh..", ".wh...",
            ".wh.",
        ]),
        1 => s(vec!["..", ".", "@ROOT"]),
        1 => "[a-z.]{1,4}",
    ]
}

fn rel_path(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..=max).prop_map(|s| s.join("/"))
}

/// Relative or (a quarter) absolute, an eighth with a trailing `/`.
fn entry_path() -> impl Strategy<Value = String> {
    (0..4u8, rel_path(3), 0..8u8).prop_map(|(abs, p, dir)| {
        format!(
            "{}{p}{}",
            if abs == 0 { "/" } else { "" },
            if dir == 0 { "/" } else { "" }
        )
    })
}

fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => rel_path(3),
        2 => prop::sample::select(OUTSIDE.to_vec()).prop_map(String::from),
    ]
}

fn item() -> impl Strategy<Value = Item> {
    let kind = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..8).prop_map(Kind::File),
        2 => Just(Kind::Dir),
        3 => link_target().prop_map(Kind::Symlink),
        2 => link_target().prop_map(Kind::HardLink),
        1 => Just(Kind::Char),
        1 => Just(Kind::Block),
        1 => Just(Kind::Fifo),
    ];
    let mode = prop::sample::select(vec![0o644, 0o755, 0o777, 0o4755, 0o000]);
    let uid = prop::sample::select(vec![0u64, 1000]);
    (entry_path(), kind, mode, uid).prop_map(|(path, kind, mode, uid)| Item {
        path,
        kind,
        mode,
        uid,
    })
}

/// A link out under a shared name, first in the layer (so later entries
/// may go through it), then anything.
fn layer() -> impl Strategy<Value = Vec<Item>> {
    let way_out = (
        prop::sample::select(vec!["lnk", "a", "a/lnk"]),
        prop::sample::select(OUTSIDE.to_vec()),
        0..4u8,
    )
        .prop_map(|(path, to, hard)| Item {
            path: path.into(),
            kind: match hard {
                0 => Kind::HardLink(to.into()),
                _ => Kind::Symlink(to.into()),
            },
            mode: 0o777,
            uid: 0,
        });
    (
        prop::collection::vec(way_out, 0..=2),
        prop::collection::vec(item(), 1..12),
    )
        .prop_map(|(mut first, rest)| {
            first.extend(rest);
            first
        })
}

/// Everything under `root` but `skip` (kept as itself, not its contents):
/// each node's type, mode, owner, size, times, links, xattrs, content.
fn snapshot(root: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(p: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let m = fs::symlink_metadata(p).unwrap();
        if p == skip {
            out.insert(p.into(), format!("dest dir={}", m.is_dir()));
            return;
        }
        let xattrs: Vec<_> = xattr::list(p).map(|l| l.collect()).unwrap_or_default();
        let content = if m.is_file() {
            fs::read(p).unwrap()
        } else {
            Vec::new()
        };
        out.insert(
            p.into(),
            format!(
                "{:?} {:o} {}:{} {} {}.{} {}.{} {} {xattrs:?} {content:?}",
                m.file_type(),
                m.mode(),
                m.uid(),
                m.gid(),
                m.size(),
                m.mtime(),
                m.mtime_nsec(),
                m.ctime(),
                m.ctime_nsec(),
                m.nlink()
            ),
        );
        if m.is_dir() {
            for e in fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), skip, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, skip, &mut out);
    out
}

/// `<root>/a/victim` (a file), `<root>/a/b/dest` and its sibling
/// `<root>/a/b/canary` (empty).
fn layout(root: &Path) -> (PathBuf, PathBuf) {
    let b = root.join("a/b");
    fs::create_dir_all(&b).unwrap();
    fs::write(root.join("a/victim"), "intact").unwrap();
    let (dest, canary) = (b.join("dest"), b.join("canary"));
    fs::create_dir(&dest).unwrap();
    fs::create_dir(&canary).unwrap();
    (dest, canary)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_layer_writes_outside_its_destination(
        items in layer(),
        gz in any::<bool>(),
    ) {
        let root = tempfile::tempdir().unwrap();
        let (dest, canary) = layout(root.path());
        let blobs = tempfile::tempdir().unwrap();
        let blob = blobs.path().join("layer");
        fs::write(&blob, build(&items, root.path(), gz)).unwrap();
        let before = snapshot(root.path(), &dest);
        let res = extract(&blob, &dest);
        prop_assert!(
            fs::read_dir(&canary).unwrap().next().is_none(),
            "the canary got an entry ({res:?})"
        );
        let after = snapshot(root.path(), &dest);
        for (p, was) in &before {
            prop_assert_eq!(Some(was), after.get(p), "{} changed ({:?})", p.display(), res);
        }
        prop_assert_eq!(before.len(), after.len(), "new entries outside: {:?} ({:?})",
            after.keys().filter(|k| !before.contains_key(*k)).collect::<Vec<_>>(), res);
    }
}

fn entry(path: &str, kind: Kind) -> Item {
    Item {
        path: path.into(),
        kind,
        mode: 0o644,
        uid: 0,
    }
}

fn unpack(
    items: &[Item],
    gz: bool,
) -> (
    tempfile::TempDir,
    PathBuf,
    Result<String, OciError>,
    Vec<u8>,
) {
    let root = tempfile::tempdir().unwrap();
    let (dest, _) = layout(root.path());
    let blob = root.path().join("layer");
    let data = build(items, root.path(), gz);
    fs::write(&blob, &data).unwrap();
    let res = extract(&blob, &dest);
    (root, dest, res, data)
}

#[test]
fn a_layer_unpacks_with_its_whiteouts() {
    let items = [
        entry("etc/", Kind::Dir),
        entry("etc/motd", Kind::File(b"hi".to_vec())),
        entry("/abs", Kind::File(b"abs".to_vec())),
        entry("motd", Kind::Symlink("etc/motd".into())),
        entry("hard", Kind::HardLink("etc/motd".into())),
        entry("sda", Kind::Block),
        entry("gone/.wh.old", Kind::File(Vec::new())),
        entry("opaque/.wh..wh..opq", Kind::File(Vec::new())),
    ];
    for gz in [false, true] {
        let (_root, dest, res, tar) = unpack(&items, gz);
        if gz {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&tar[..])
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(res.unwrap(), hex::encode(Sha256::digest(&plain)));
        } else {
            assert_eq!(
                res.unwrap(),
                hex::encode(Sha256::digest(&tar)),
                "the digest of the tar"
            );
        }
        assert_eq!(fs::read(dest.join("etc/motd")).unwrap(), b"hi");
        assert_eq!(
            fs::read(dest.join("abs")).unwrap(),
            b"abs",
            "an absolute path lands inside"
        );
        assert_eq!(
            fs::read_link(dest.join("motd")).unwrap(),
            Path::new("etc/motd")
        );
        assert_eq!(
            fs::metadata(dest.join("hard")).unwrap().ino(),
            fs::metadata(dest.join("etc/motd")).unwrap().ino()
        );
        assert!(!dest.join("sda").exists(), "device nodes are dropped");
        let wh = fs::symlink_metadata(dest.join("gone/old")).unwrap();
        assert!(
            wh.file_type().is_char_device() && wh.rdev() == 0,
            "a 0:0 whiteout"
        );
        assert_eq!(
            xattr::get(dest.join("opaque"), "trusted.overlay.opaque")
                .unwrap()
                .as_deref(),
            Some(&b"y"[..])
        );
    }
}

#[test]
fn escapes_are_refused_naming_the_layer_and_entry() {
    let (root, _, res, _) = unpack(
        &[entry("a/../../../escaped", Kind::File(b"x".to_vec()))],
        false,
    );
    let e = res.unwrap_err();
    assert!(matches!(e, OciError::Escape { .. }), "{e:?}");
    let msg = chain(&e);
    assert!(
        msg.contains(&root.path().join("layer").display().to_string())
            && msg.contains("a/../../../escaped"),
        "{msg}"
    );

    let (root, _, res, _) = unpack(
        &[
            entry("lnk", Kind::Symlink("@ROOT/a/b/canary".into())),
            entry("lnk/.wh.victim", Kind::File(Vec::new())),
        ],
        false,
    );
    let e = res.unwrap_err();
    assert!(matches!(e, OciError::WhiteoutEscape { .. }), "{e:?}");
    assert!(chain(&e).contains("lnk/.wh.victim"), "{e}");
    assert!(fs::read_dir(root.path().join("a/b/canary"))
        .unwrap()
        .next()
        .is_none());

    let (_root, _, res, _) = unpack(
        &[
            entry("lnk", Kind::Symlink("../canary".into())),
            entry("lnk/x", Kind::File(b"x".to_vec())),
        ],
        false,
    );
    let e = res.unwrap_err();
    assert!(matches!(e, OciError::Unpack { .. }), "{e:?}");
    let msg = OciError::image(e, "oci-layout:/x").to_string();
    assert!(
        msg.starts_with("image \"oci-layout:/x\": layer ") && msg.contains(" entry lnk/x: "),
        "{msg}"
    );
}
