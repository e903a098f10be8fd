use super::*;
use crate::config::Config;
use crate::model::{Allocation, Exit, Facts, PortMapping, ProcRef, ProcessConfig, Run, RunState};
use proptest::prelude::*;

fn facts(name: &str) -> Facts {
    Facts {
        spec: serde_json::from_str(&format!(r#"{{"name":"{name}","image":"rootfs:/x"}}"#)).unwrap(),
        process: ProcessConfig::default(),
        layers: vec!["/layers/a".into()],
        image_digest: None,
        cgroup_parent: "hydra".into(),
        limits: Default::default(),
        net: Allocation::default(),
        userns_base: None,
        created_at: "2026-01-01T00:00:00.000000Z".into(),
    }
}

fn store() -> (tempfile::TempDir, Store, Paths) {
    let tmp = tempfile::tempdir().unwrap();
    let paths = Paths::new(Some(tmp.path()), &Config::default(), None);
    let st = Store::new(&paths).unwrap();
    (tmp, st, paths)
}

#[test]
fn save_load_and_quarantine() {
    let (_tmp, st, paths) = store();
    let good = Record::new(facts("good"));
    st.save(&good, true).unwrap();
    st.save(&Record::new(facts("bad")), true).unwrap();
    // truncate one record: it must be quarantined, not crash the load
    let bad = st.dir("bad").join(RECORD);
    let len = fs::metadata(&bad).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&bad)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    fs::create_dir_all(st.dir("halfmade")).unwrap();
    let l = st.load_all();
    assert_eq!(l.records, vec![good]);
    assert_eq!(l.orphans, vec!["bad".to_string(), "halfmade".to_string()]);
    assert_eq!(fs::read_dir(paths.quarantine()).unwrap().count(), 1);
    assert!(!bad.exists());
}

/// Records exactly as the release before record layouts had a version wrote them.
const RELEASE_1: [(&str, &str); 3] = [
    (
        "run",
        r#"{"spec":{"name":"run","image":"rootfs:/srv","ports":[{"container_port":8080,"host_port":null}],"limits":{"memory":67108864},"restart":{"policy":"on-failure","max_retries":null}},"process":{"argv":["/bin/app"],"env":["PATH=/bin"],"cwd":"/","user":null},"layers":["/srv"],"state":"running","pid":4242,"pid_start":99,"shim_pid":4241,"shim_start":98,"exit_code":null,"signal":null,"oom_killed":false,"oom_base":2,"created_at":"2026-11-20T10:00:00.000000Z","started_at":"2026-11-20T10:00:01.000000Z","finished_at":null,"restart_count":1,"stop_requested":false,"cgroup_parent":"hydra","limits":{"memory":67108864,"memory_high":null,"memory_swap":0,"cpus":null,"cpu_quota_us":null,"cpu_period_us":100000,"cpu_weight":100,"cpu_shares":null,"pids":4096,"io":[]},"ip":"172.17.0.2","ports":[{"host_ip":"0.0.0.0","host_port":20000,"container_port":8080}],"userns_base":2147483648}"#,
    ),
    (
        "gone",
        r#"{"spec":{"name":"gone","image":"rootfs:/srv","limits":{},"restart":{"policy":"no","max_retries":null}},"process":{"argv":["true"],"env":[],"cwd":"/","user":null},"layers":["/srv"],"state":"exited","pid":null,"pid_start":null,"shim_pid":null,"shim_start":null,"exit_code":null,"signal":9,"oom_killed":true,"oom_base":0,"created_at":"2026-11-20T10:00:00.000000Z","started_at":"2026-11-20T10:00:01.000000Z","finished_at":"2026-11-20T10:05:00.000000Z","restart_count":0,"stop_requested":true,"cgroup_parent":"old-parent","limits":{"memory":null,"memory_high":null,"memory_swap":null,"cpus":null,"cpu_quota_us":null,"cpu_period_us":null,"cpu_weight":null,"cpu_shares":null,"pids":4096,"io":[]},"ip":null,"ports":[]}"#,
    ),
    (
        "new",
        r#"{"spec":{"name":"new","image":"rootfs:/srv","limits":{},"restart":{"policy":"no","max_retries":null}},"process":{"argv":["true"],"env":[],"cwd":"/","user":null},"layers":["/srv"],"state":"created","pid":null,"pid_start":null,"shim_pid":null,"shim_start":null,"exit_code":null,"signal":null,"oom_killed":false,"oom_base":0,"created_at":"2026-11-20T10:00:00.000000Z","started_at":null,"finished_at":null,"restart_count":0,"stop_requested":false,"cgroup_parent":"hydra","limits":{"memory":null,"memory_high":null,"memory_swap":null,"cpus":null,"cpu_quota_us":null,"cpu_period_us":null,"cpu_weight":null,"cpu_shares":null,"pids":4096,"io":[]}}"#,
    ),
];

#[test]
fn records_of_the_previous_release_load_and_keep_their_meaning() {
    let (_tmp, st, _) = store();
    for (name, json) in RELEASE_1 {
        fs::create_dir_all(st.dir(name)).unwrap();
        fs::write(st.dir(name).join(RECORD), json).unwrap();
    }
    let l = st.load_all();
    assert!(l.orphans.is_empty() && l.foreign.is_empty(), "{l:?}");
    let [gone, new, run] = &l.records[..] else {
        panic!("{l:?}")
    };
    let r = run.running().unwrap();
    assert_eq!(
        (r.init, r.shim, r.oom_base),
        (
            ProcRef {
                pid: 4242,
                start: 99
            },
            ProcRef {
                pid: 4241,
                start: 98
            },
            2
        )
    );
    assert_eq!(run.restart_count(), 1);
    assert_eq!(run.facts().userns_base, Some(1 << 31));
    assert_eq!(
        run.facts().net.ports,
        vec![PortMapping {
            host_ip: "0.0.0.0".into(),
            host_port: 20000,
            container_port: 8080
        }]
    );
    let x = gone.exit().unwrap();
    assert_eq!((x.exit_code, x.signal, x.oom_killed), (None, Some(9), true));
    assert!(gone.stop_requested());
    assert_eq!(gone.facts().cgroup_parent, "old-parent");
    assert_eq!(new.state(), crate::model::State::Created);
    // written back in today's layout, they read the same, and stay readable
    // by the previous release (same fields, plus `format`)
    for r in &l.records {
        st.save(r, false).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&fs::read(st.dir(r.name()).join(RECORD)).unwrap()).unwrap();
        assert_eq!(v["format"], FORMAT);
        let old: serde_json::Value =
            serde_json::from_str(RELEASE_1.iter().find(|(n, _)| *n == r.name()).unwrap().1)
                .unwrap();
        for k in old.as_object().unwrap().keys() {
            assert!(v.get(k).is_some(), "{k} is still written");
        }
    }
    assert_eq!(st.load_all().records, l.records);
}

#[test]
fn a_record_of_a_newer_layout_is_left_alone() {
    let (_tmp, st, _) = store();
    let mut v: serde_json::Value = serde_json::from_str(RELEASE_1[2].1).unwrap();
    v["format"] = (FORMAT + 1).into();
    fs::create_dir_all(st.dir("new")).unwrap();
    fs::write(st.dir("new").join(RECORD), v.to_string()).unwrap();
    let l = st.load_all();
    assert_eq!(l.foreign, vec!["new".to_string()]);
    assert!(l.records.is_empty() && l.orphans.is_empty());
    assert!(st.dir("new").join(RECORD).exists(), "not quarantined");
}

fn run_state() -> impl Strategy<Value = RunState> {
    let t = "2026-11-2[0-9]T10:00:0[0-9].000000Z";
    prop_oneof![
        Just(RunState::Created),
        (
            1..1 << 22i32,
            any::<u64>(),
            1..1 << 22i32,
            any::<u64>(),
            t,
            any::<u64>()
        )
            .prop_map(|(p, ps, s, ss, at, oom)| RunState::Running(Run {
                init: ProcRef { pid: p, start: ps },
                shim: ProcRef { pid: s, start: ss },
                started_at: at,
                oom_base: oom,
            })),
        (
            proptest::option::of(t),
            proptest::option::of(0..256i32),
            proptest::option::of(1..65i32),
            any::<bool>(),
            t
        )
            .prop_map(|(started_at, exit_code, signal, oom_killed, finished_at)| {
                RunState::Exited {
                    started_at,
                    exit: Exit {
                        exit_code,
                        signal,
                        oom_killed,
                        finished_at,
                    },
                }
            }),
    ]
}

proptest! {
    #[test]
    fn any_record_survives_the_disk(
        name in "[a-z][a-z0-9-]{0,20}",
        run in run_state(),
        restarts in any::<u32>(),
        stop in any::<bool>(),
        ip in proptest::option::of(any::<u32>()),
        userns in proptest::option::of(any::<u32>()),
    ) {
        let (_tmp, st, _) = store();
        let mut f = facts(&name);
        f.net.ip = ip.map(std::net::Ipv4Addr::from);
        f.userns_base = userns;
        let rec = Record::restore(f, run, restarts, stop);
        st.save(&rec, false).unwrap();
        let l = st.load_all();
        prop_assert_eq!(l.records, vec![rec]);
    }
}

/// Polls `f` for up to 10 s.
fn within_10s(what: &str, f: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[test]
fn a_discarded_directory_frees_its_name_at_once_and_is_deleted() {
    let (_tmp, st, paths) = store();
    st.save(&Record::new(facts("a")), false).unwrap();
    fs::create_dir_all(st.dir("a").join("upper/etc")).unwrap();
    fs::write(st.dir("a").join("upper/etc/hosts"), "x").unwrap();
    st.discard("a").unwrap();
    assert!(
        !st.dir("a").exists(),
        "the name is free when discard returns"
    );
    st.save(&Record::new(facts("a")), false).unwrap();
    assert_eq!(st.load_all().records.len(), 1);
    within_10s("the trash emptied", || {
        fs::read_dir(paths.trash()).unwrap().count() == 0
    });
    // nothing there: nothing to do
    st.discard("never").unwrap();
}

#[test]
fn what_a_crash_left_in_the_trash_is_deleted_at_the_next_open() {
    let (_tmp, st, paths) = store();
    drop(st);
    let left = paths.trash().join("x.1.0/upper");
    fs::create_dir_all(&left).unwrap();
    fs::write(left.join("f"), "x").unwrap();
    let _st = Store::new(&paths).unwrap();
    within_10s("the trash emptied", || {
        fs::read_dir(paths.trash()).unwrap().count() == 0
    });
}
