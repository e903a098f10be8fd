use super::*;
use crate::model::{RestartPolicy, Size};

fn spec(json: &str) -> Result<ContainerSpec, ApiError> {
    parse_spec(json.as_bytes())
}

#[test]
fn good_spec() {
    let s = spec(
        r#"{"name":"app1-v2-0","image":"rootfs:/x","command":["/bin/sh"],
        "limits":{"memory":"128Mi","cpus":0.5,"pids":256,"io":{"read_bps":"10Mi"}},
        "restart":{"policy":"on-failure","max_retries":5}}"#,
    )
    .unwrap();
    assert_eq!(s.limits.memory, Some(Size(128 << 20)));
    assert_eq!(s.restart.policy, RestartPolicy::OnFailure);
}

#[test]
fn errors_name_the_field() {
    for (json, field) in [
        (r#"{"name":"../x","image":"a"}"#, "name"),
        (r#"{"name":"Upper","image":"a"}"#, "name"),
        (r#"{"name":"","image":"a"}"#, "name"),
        (r#"{"name":"a","image":"a","bogus":1}"#, "bogus"),
        (
            r#"{"name":"a","image":"a","limits":{"memory":0}}"#,
            "limits.memory",
        ),
        (
            r#"{"name":"a","image":"a","limits":{"memory":-5}}"#,
            "limits.memory",
        ),
        (
            r#"{"name":"a","image":"a","limits":{"memory":"99999999999Gi"}}"#,
            "limits.memory",
        ),
        (
            r#"{"name":"a","image":"a","limits":{"pids":0}}"#,
            "limits.pids",
        ),
        (
            r#"{"name":"a","image":"a","limits":{"pids":-1}}"#,
            "limits.pids",
        ),
        (
            r#"{"name":"a","image":"a","limits":{"cpus":-0.5}}"#,
            "limits.cpus",
        ),
        (
            r#"{"name":"a","image":"a","limits":{"cpus":0}}"#,
            "limits.cpus",
        ),
        (
            r#"{"name":"a","image":"a","limits":{"cpu_weight":20000}}"#,
            "limits.cpu_weight",
        ),
        (
            r#"{"name":"a","image":"a","limits":{"io":{"read_bps":0}}}"#,
            "limits.io.read_bps",
        ),
        (r#"{"name":"a","image":"a","limits":{"frobs":1}}"#, "frobs"),
        (r#"{"name":"a","image":"a","command":[]}"#, "command"),
        (r#"{"name":"a"}"#, "image"),
    ] {
        let e = spec(json).unwrap_err();
        assert_eq!(e.status, 400, "{json}");
        assert!(
            e.field.as_deref().unwrap_or("").contains(field),
            "{json}: {e:?}"
        );
    }
    let e = spec("{not json").unwrap_err();
    assert_eq!((e.status, e.field.as_deref()), (400, Some("body")));
}

#[test]
fn signals() {
    assert_eq!(parse_signal("TERM").unwrap(), 15);
    assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
    assert_eq!(parse_signal("10").unwrap(), 10);
    assert!(parse_signal("NOPE").is_err());
    assert!(parse_signal("0").is_err());
}

fn every_request() -> Vec<Request> {
    let spec =
        spec(r#"{"name":"a","image":"rootfs:/x","ports":[{"container_port":8080}]}"#).unwrap();
    let cidr = |s: &str| Cidr::parse(s).unwrap();
    vec![
        Request::Healthz,
        Request::Metrics,
        Request::Host,
        Request::Events,
        Request::List,
        Request::Create(Box::new(spec)),
        Request::Inspect("a".into()),
        Request::Start("a".into()),
        Request::Stop {
            name: "a".into(),
            timeout_s: 3,
        },
        Request::Restart {
            name: "a".into(),
            timeout_s: 0,
        },
        Request::Kill {
            name: "a".into(),
            signal: 15,
        },
        Request::Remove {
            name: "a".into(),
            force: true,
        },
        Request::Remove {
            name: "a".into(),
            force: false,
        },
        Request::Wait("a".into()),
        Request::Logs {
            name: "a".into(),
            follow: true,
            tail: Some(5),
        },
        Request::Logs {
            name: "a".into(),
            follow: false,
            tail: None,
        },
        Request::Stats("a".into()),
        Request::Ports,
        Request::GetAllowlist,
        Request::SetAllowlist(vec![cidr("10.1.0.0/24"), cidr("192.0.2.7/32")]),
        Request::EditAllowlist {
            add: vec![cidr("10.2.0.0/16")],
            remove: vec![cidr("10.1.0.0/24")],
        },
        Request::Pull("127.0.0.1:5000/shop/cart:v7@sha256:ab".into()),
        Request::Images,
        Request::RemoveImage("127.0.0.1:5000/shop/cart:v7@sha256:ab".into()),
        Request::PruneImages,
    ]
}

#[test]
fn client_and_server_mappings_agree() {
    for req in every_request() {
        let h = req.to_http();
        let (path, query) = match h.path.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (h.path.clone(), None),
        };
        let back = Request::from_http(
            h.method,
            &path,
            query.as_deref(),
            h.body.as_deref().unwrap_or(b""),
        )
        .unwrap_or_else(|e| panic!("{req:?} -> {h:?}: {e:?}"));
        assert_eq!(back, req, "{h:?}");
    }
}

#[test]
fn routes_and_queries_are_checked() {
    let r = |m: &str, p: &str, q: Option<&str>| Request::from_http(m, p, q, b"");
    assert_eq!(r("GET", "/v1/nope", None).unwrap_err().status, 404);
    assert_eq!(
        r("PUT", "/v1/containers/a/start", None).unwrap_err().status,
        404
    );
    let e = r("POST", "/v1/containers/a/stop", Some("timeout=soon")).unwrap_err();
    assert_eq!((e.status, e.field.as_deref()), (400, Some("timeout")));
    let e = r("DELETE", "/v1/containers/a", Some("force=maybe")).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("force"));
    let e = r("POST", "/v1/containers/a/kill", Some("signal=NOPE")).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("signal"));
    assert_eq!(
        r("POST", "/v1/containers/a/kill/", None).unwrap(),
        Request::Kill {
            name: "a".into(),
            signal: 9
        }
    );
    let e = Request::from_http(
        "PUT",
        "/v1/firewall/allowlist",
        None,
        br#"{"cidrs":["10.0.0.0/8","x"]}"#,
    )
    .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("cidrs[1]"));
    assert!(Request::Inspect("a".into()).is_read_only());
    assert!(!Request::EditAllowlist {
        add: vec![],
        remove: vec![]
    }
    .is_read_only());
}
