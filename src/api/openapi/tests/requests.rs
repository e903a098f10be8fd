//! The request bodies' schemas against the parser: a body is accepted by
//! the schema exactly when [`crate::api::parse_spec`] (or serde) accepts
//! it, but for the rules a schema cannot say, which are listed.

use super::doc;
use super::schemas::{shape, validator};
use crate::api::wire::{Allowlist, AllowlistEdit, PullRequest};
use crate::model::units::parse_size;
use crate::model::{Cidr, ContainerSpec, HealthSpec, Limits, Size};
use serde_json::{json, Value};

#[test]
fn request_bodies_have_the_parsers_fields() {
    let full = json!({
        "name": "web", "app": "a", "version": "1", "image": "rootfs:/x",
        "command": ["sh", "-c", "true"], "env": {"A": "b"}, "workdir": "/w",
        "user": "1000:1000",
        "limits": {"memory": "1Gi", "memory_high": 536870912, "memory_swap": 0,
            "cpus": 1.5, "cpu_weight": 100, "pids": 100,
            "io": {"read_bps": "1Mi", "write_bps": 1048576}, "disk": "1Gi", "inodes": 1000},
        "ports": [{"container_port": 80, "host_port": 20000}],
        "restart": {"policy": "on-failure", "max_retries": 3},
        "health": {"http_path": "/h", "port": 8080, "interval_s": 10, "timeout_s": 2,
            "retries": 3},
        "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
        "userns": true,
    });
    let spec: ContainerSpec = serde_json::from_value(full.clone()).unwrap();
    let min: ContainerSpec =
        serde_json::from_value(json!({"name": "web", "image": "rootfs:/x"})).unwrap();
    shape("ContainerSpec", &min, &spec, false);
    shape("Limits", &Limits::default(), &spec.limits, false);
    shape(
        "HealthSpec",
        &HealthSpec::http("/"),
        spec.health.as_ref().unwrap(),
        false,
    );
    shape("RestartSpec", &min.restart, &spec.restart, false);
    shape(
        "CapabilitiesSpec",
        &min.capabilities,
        &spec.capabilities,
        false,
    );
    let cidrs = vec![Cidr::parse("10.0.0.0/8").unwrap()];
    let list = Allowlist {
        cidrs: cidrs.clone(),
    };
    shape("Allowlist", &list, &list, false);
    let edit = AllowlistEdit {
        add: cidrs.clone(),
        remove: cidrs,
    };
    shape("AllowlistEdit", &AllowlistEdit::default(), &edit, false);
    let pull = PullRequest {
        image: "127.0.0.1:5000/a:1".into(),
    };
    shape("PullRequest", &pull, &pull, false);
    let doc = doc();
    let schemas = &doc["components"]["schemas"];
    for name in [
        "ContainerSpec",
        "ContainerPutSpec",
        "CapabilitiesSpec",
        "Limits",
        "IoLimits",
        "PortSpec",
        "RestartSpec",
        "HealthSpec",
        "Allowlist",
        "AllowlistEdit",
        "PullRequest",
    ] {
        let extra = &schemas[name]["additionalProperties"];
        assert_eq!(extra, &json!(false), "{name}: deny_unknown_fields");
    }
    let defaults = &schemas["HealthSpec"]["properties"];
    let h: HealthSpec = serde_json::from_value(json!({"http_path": "/"})).unwrap();
    assert_eq!(defaults["port"]["default"], json!(h.port));
    assert_eq!(defaults["interval_s"]["default"], json!(h.interval_s));
    assert_eq!(defaults["timeout_s"]["default"], json!(h.timeout_s));
    assert_eq!(defaults["retries"]["default"], json!(h.retries));
    let put = &schemas["ContainerPutSpec"]["required"];
    assert_eq!(put, &json!(["image"]), "a PUT's name may be left out");
}

/// A body and whether [`crate::api::parse_spec`] takes it.
fn spec_cases() -> Vec<(Value, bool)> {
    let with = |k: &str, v: Value| {
        let mut s = json!({"name": "web", "image": "rootfs:/x"});
        s[k] = v;
        s
    };
    let lim = |k: &str, v: Value| with("limits", json!({ k: v }));
    vec![
        (json!({"name": "web", "image": "rootfs:/x"}), true),
        (json!({"name": "web"}), false),
        (json!({"image": "rootfs:/x"}), false),
        (with("name", json!("Upper")), false),
        (with("name", json!("")), false),
        (with("name", json!("a".repeat(63))), true),
        (with("name", json!("a".repeat(64))), false),
        (with("name", json!("a.b-c_d")), true),
        (with("bogus", json!(1)), false),
        (with("image", json!(5)), false),
        (with("command", json!([])), false),
        (with("command", json!(["sh"])), true),
        (with("userns", json!("yes")), false),
        (lim("memory", json!("64Mi")), true),
        (lim("memory", json!(" 64Mi\n")), true),
        (lim("memory", json!(1 << 20)), true),
        (lim("memory", json!("1.5Gi")), false),
        (lim("memory", json!("64 Mi")), false),
        (lim("memory", json!(-1)), false),
        (lim("memory", json!(1.5)), false),
        (lim("memory", json!(null)), true),
        (lim("cpus", json!(0.01)), true),
        (lim("cpus", json!(0.001)), false),
        (lim("cpus", json!(1024)), true),
        (lim("cpus", json!(1025)), false),
        (lim("cpu_weight", json!(0)), false),
        (lim("cpu_weight", json!(10000)), true),
        (lim("pids", json!(0)), false),
        (lim("pids", json!(4194305)), false),
        (lim("inodes", json!(15)), false),
        (lim("inodes", json!(4294967295u64)), true),
        (lim("inodes", json!(4294967296u64)), false),
        (lim("bogus", json!(1)), false),
        (lim("io", json!({"read_bps": "1Mi", "x": 1})), false),
        (with("ports", json!([{"container_port": 80}])), true),
        (
            with("ports", json!([{"container_port": 80, "host_port": null}])),
            true,
        ),
        (with("ports", json!([{"container_port": 0}])), false),
        (with("ports", json!([{"container_port": 70000}])), false),
        (
            with("ports", json!([{"container_port": 80, "host_port": 0}])),
            false,
        ),
        (with("restart", json!({"policy": "always"})), true),
        (with("restart", json!({"policy": "sometimes"})), false),
        (with("restart", json!({})), true),
        (with("health", json!({"http_path": "/h"})), true),
        (with("health", json!({"http_path": "/h", "port": 0})), false),
        (
            with("health", json!({"http_path": "/h", "retries": 0})),
            false,
        ),
        (with("health", json!({"port": 80})), false),
        (with("capabilities", json!({"drop": ["ALL"]})), true),
        (with("capabilities", json!({"keep": []})), false),
    ]
}

#[test]
fn the_spec_schema_accepts_what_the_parser_accepts() {
    let val = validator("ContainerSpec");
    for (body, ok) in spec_cases() {
        let parsed = crate::api::parse_spec(body.to_string().as_bytes());
        assert_eq!(parsed.is_ok(), ok, "the parser on {body}: {parsed:?}");
        assert_eq!(val.is_valid(&body), ok, "the schema on {body}");
    }
    // What the schema cannot say: relations between fields, byte lengths,
    // capability names, the rest of a string's rules. The parser refuses
    // these; the schema lets them through.
    let with = |k: &str, v: Value| {
        let mut s = json!({"name": "web", "image": "rootfs:/x"});
        s[k] = v;
        s
    };
    for body in [
        with("limits", json!({"memory_swap": 0})),
        with("limits", json!({"memory": "2Mi", "memory_high": "4Mi"})),
        with("limits", json!({"memory": 100})),
        with("limits", json!({"disk": "1Mi"})),
        with("image", json!(" ")),
        with("app", json!("é".repeat(100))),
        with("command", json!([""])),
        with("env", json!({"A=B": "c"})),
        with("workdir", json!("relative")),
        with("capabilities", json!({"add": ["NOT_A_CAP"]})),
        with("health", json!({"http_path": "no-slash"})),
        with(
            "ports",
            json!([{"container_port": 1, "host_port": 9}, {"container_port": 2, "host_port": 9}]),
        ),
    ] {
        assert!(
            crate::api::parse_spec(body.to_string().as_bytes()).is_err(),
            "{body}"
        );
        assert!(val.is_valid(&body), "{body}");
    }
}

#[test]
fn sizes_and_cidrs_match_their_parsers() {
    let size = validator("Size");
    for s in [
        "0",
        "4096",
        "64Mi",
        "1Gi",
        "2Ti",
        "8Ki",
        " 64Mi ",
        "\t1Gi\n",
        "\u{3000}1Mi\u{85}",
        "\u{feff}1Mi",
        "Mi",
        "",
        " ",
        "1.5Gi",
        "-1",
        "+1",
        "1 Mi",
        "1mi",
        "1KiB",
        "0x10",
    ] {
        let ok = parse_size(s).is_ok();
        assert_eq!(size.is_valid(&json!(s)), ok, "Size {s:?}");
    }
    for (n, ok) in [
        (json!(0), true),
        (json!(u64::MAX), true),
        (json!(-1), false),
        (json!(1.5), false),
    ] {
        let parsed = serde_json::from_value::<Size>(n.clone()).is_ok();
        assert_eq!((parsed, size.is_valid(&n)), (ok, ok), "Size {n}");
    }
    // Past 2^64 bytes: a string the schema cannot bound.
    assert!(size.is_valid(&json!("17179869184Gi")) && parse_size("17179869184Gi").is_err());
    let cidr = validator("Cidr");
    for s in [
        "10.0.0.0/8",
        "10.1.2.3/24",
        "0.0.0.0/0",
        "255.255.255.255/32",
        "1.2.3.4/+8",
        "1.2.3.4/008",
        "1.2.3.4/0032",
        "1.2.3.4/33",
        "1.2.3.4/",
        "1.2.3/8",
        "01.2.3.4/8",
        "256.0.0.0/8",
        "1.2.3.4",
        "1.2.3.4/8/9",
        " 1.2.3.4/8",
        "1.2.3.4/-0",
        "1.2.3.4/+",
        "a.b.c.d/8",
        "1.2.3.4/8 ",
        "1.2.3.4.5/8",
    ] {
        let ok = serde_json::from_value::<Cidr>(json!(s)).is_ok();
        assert_eq!(cidr.is_valid(&json!(s)), ok, "Cidr {s:?}");
    }
}
