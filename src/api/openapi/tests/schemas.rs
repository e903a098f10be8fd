//! The answers' schemas against serde: real values serialized validate,
//! and the fields a value always writes are exactly the required ones.

use super::doc;
use crate::api::error::ApiError;
use crate::api::wire::*;
use crate::cgroup::{CpuStats, MemoryStats, Pressure, Psi, PsiLine, Stats};
use crate::image::registry::Progress;
use crate::model::*;
use crate::telemetry::logs::Record as LogRecord;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;

pub(super) fn validator(name: &str) -> jsonschema::Validator {
    let doc = doc();
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": doc["components"],
    });
    jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{name}: {e}"))
}

pub(super) fn assert_valid(name: &str, v: &Value) {
    let val = validator(name);
    let errors: Vec<String> = val.iter_errors(v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name}: {v} is refused: {errors:?}");
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

/// `min` and `max` (the fewest and the most fields serde writes) validate;
/// `max` writes no field the schema lacks; an answer's required fields are
/// exactly those `min` writes (a request's: some of them).
pub(super) fn shape<T: Serialize>(name: &str, min: &T, max: &T, answer: bool) {
    let (min, max) = (
        serde_json::to_value(min).unwrap(),
        serde_json::to_value(max).unwrap(),
    );
    assert_valid(name, &min);
    assert_valid(name, &max);
    let doc = doc();
    let schema = &doc["components"]["schemas"][name];
    let props: BTreeSet<String> = keys(&schema["properties"]);
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    assert_eq!(keys(&max), props, "{name}: the fields serde writes");
    if answer {
        assert_eq!(keys(&min), required, "{name}: the fields always written");
    } else {
        assert!(required.is_subset(&keys(&min)), "{name}: {required:?}");
    }
}

fn info(full: bool) -> ContainerInfo {
    let some = |s: &str| full.then(|| s.to_string());
    ContainerInfo {
        name: "web".into(),
        app: some("app"),
        version: some("1"),
        image: "127.0.0.1:5000/app:1".into(),
        image_digest: some("sha256:ab"),
        state: "running".into(),
        pid: full.then_some(42),
        exit_code: full.then_some(1),
        signal: full.then_some(9),
        oom_killed: full,
        created_at: "2024-01-01T00:00:00.000000Z".into(),
        started_at: some("2024-01-01T00:00:01.000000Z"),
        finished_at: some("2024-01-01T00:00:02.000000Z"),
        restart_count: 3,
        command: vec!["sh".into()],
        limits: limits(full),
        cgroup: "/hydra/web".into(),
        ip: some("10.88.0.2"),
        ports: vec![PortMapping {
            host_ip: "0.0.0.0".into(),
            host_port: 20000,
            container_port: 80,
        }],
        health: Health {
            status: HealthStatus::Unhealthy,
            failures: 3,
        },
        selinux_label: some("system_u:system_r:container_t:s0"),
    }
}

fn limits(full: bool) -> AppliedLimits {
    if !full {
        return AppliedLimits::default();
    }
    AppliedLimits {
        memory: Some(1 << 30),
        memory_high: Some(1 << 29),
        memory_swap: Some(0),
        cpus: Some(1.5),
        cpu_quota_us: Some(150_000),
        cpu_period_us: Some(100_000),
        cpu_weight: Some(100),
        cpu_shares: Some(1024),
        pids: Some(100),
        io: vec![IoApplied {
            device: "8:0".into(),
            read_bps: Some(1 << 20),
            write_bps: None,
        }],
        disk: Some(DiskApplied {
            bytes: 1 << 30,
            inodes: 1000,
            mechanism: "project_quota".into(),
            project: Some(7),
        }),
    }
}

#[test]
fn containers_and_exits() {
    shape("ContainerInfo", &info(false), &info(true), true);
    shape("AppliedLimits", &limits(false), &limits(true), true);
    let disk = limits(true).disk.unwrap();
    let no_project = DiskApplied {
        project: None,
        ..disk.clone()
    };
    shape("DiskApplied", &no_project, &disk, true);
    let io = IoApplied::default();
    shape("IoApplied", &io, &io, true);
    for status in ["none", "starting", "healthy", "unhealthy"] {
        assert_valid("Health", &json!({"status": status, "failures": 0}));
    }
    assert!(!validator("HealthStatus").is_valid(&json!("sick")));
    let exit = |full: bool| ExitStatus {
        name: "web".into(),
        exit_code: full.then_some(0),
        signal: full.then_some(15),
        oom_killed: false,
        finished_at: full.then(|| "2024-01-01T00:00:00Z".into()),
    };
    shape("ExitStatus", &exit(false), &exit(true), true);
}

fn stats(full: bool) -> Stats {
    if !full {
        return Stats::default();
    }
    let line = PsiLine {
        avg10: 0.5,
        avg60: 0.25,
        avg300: 0.0,
        total: 1234,
    };
    let psi = Psi {
        some: line.clone(),
        full: Some(line),
    };
    let mut s = Stats {
        cpu: CpuStats {
            usage_usec: 1,
            ..Default::default()
        },
        memory: MemoryStats {
            current: 1 << 20,
            peak: Some(2 << 20),
            max: Some(4 << 20),
            ..Default::default()
        },
        pressure: Some(Pressure {
            cpu: Some(psi.clone()),
            memory: Some(psi),
            io: None,
        }),
        disk: Some(DiskStats::default()),
        ..Default::default()
    };
    s.memory.stat.insert("anon".into(), 4096);
    s.pids.max = Some(100);
    s.io.push(Default::default());
    s
}

#[test]
fn stats_host_ports_images() {
    shape("Stats", &stats(false), &stats(true), true);
    let (s0, s1) = (stats(false), stats(true));
    shape("MemoryStats", &s0.memory, &s1.memory, true);
    shape("PidsStats", &s0.pids, &s1.pids, true);
    let p = s1.pressure.unwrap();
    shape(
        "Psi",
        p.io.as_ref().unwrap_or(&Psi::default()),
        p.cpu.as_ref().unwrap(),
        true,
    );
    shape("Pressure", &Pressure::default(), &p, true);
    let host = HostInfo {
        hostname: "h".into(),
        agent_version: crate::VERSION.into(),
        kernel: "6.1.0".into(),
        cgroup_mode: "v2".into(),
        storage_limits: "image".into(),
        cpus: 2,
        memory_bytes: 1 << 34,
        containers: ContainerCounts::default(),
        images: ImageUsage::default(),
    };
    shape("HostInfo", &host, &host, true);
    let taken = |full: bool| TakenPort {
        port: 22,
        pid: full.then_some(1),
        process: full.then(|| "sshd".into()),
    };
    shape("TakenPort", &taken(false), &taken(true), true);
    let ports = PortsInfo {
        range: PortRange {
            start: 20000,
            end: 30000,
        },
        free: 9999,
        allocated: vec![AllocatedPort {
            host_port: 20000,
            container_port: 80,
            container: "web".into(),
            ip: "10.88.0.2".into(),
        }],
        taken_by_others: vec![taken(true), taken(false)],
    };
    shape("PortsInfo", &ports, &ports, true);
    let image = |full: bool| ImageInfo {
        reference: "127.0.0.1:5000/app:1".into(),
        digest: "sha256:ab".into(),
        manifest_digest: "sha256:cd".into(),
        size: 1,
        disk_bytes: 2,
        layers: vec!["sha256:ef".into()],
        created: full.then(|| "2024-01-01T00:00:00Z".into()),
        pulled_at: "2024-01-01T00:00:00Z".into(),
        used_by: vec!["web".into()],
    };
    shape("ImageInfo", &image(false), &image(true), true);
    let prune = PruneReport {
        layers_removed: 1,
        bytes_freed: 2,
    };
    shape("PruneReport", &prune, &prune, true);
}

#[test]
fn streams_and_errors() {
    let progress = Progress {
        layer: "sha256:ab".into(),
        bytes: 1,
        total: 2,
        done: false,
        cached: false,
    };
    shape("PullProgress", &progress, &progress, true);
    let mut ev = Event::now("", Action::Pull);
    let min = ev.clone();
    ev.container = "web".into();
    ev.image = Some("127.0.0.1:5000/app:1".into());
    ev.digest = Some("sha256:ab".into());
    (ev.exit_code, ev.signal, ev.dropped) = (Some(1), Some(9), Some(3));
    ev.reason = Some("size_cap".into());
    shape("Event", &min, &ev, true);
    let actions = [
        "create",
        "start",
        "die",
        "oom",
        "stop",
        "kill",
        "restart",
        "destroy",
        "health_status: unhealthy",
        "logs_dropped",
        "layer_reset",
        "pull",
        "image_delete",
    ];
    for a in actions {
        let action: Action = serde_json::from_value(json!(a)).unwrap();
        assert_valid("Action", &serde_json::to_value(action).unwrap());
    }
    let rec = |full: bool| LogRecord {
        ts: "2024-01-01T00:00:00Z".into(),
        stream: "stdout".into(),
        line: "hi".into(),
        partial: full,
        seq: 7,
        dropped: full.then_some(2),
    };
    shape("LogRecord", &rec(false), &rec(true), true);
    let e = ApiError::not_found("no such container").body();
    let f = ApiError::bad("limits.memory", "too small").body();
    shape("ErrorBody", &e, &f, true);
    shape("ErrorDetail", &e.error, &f.error, true);
}
