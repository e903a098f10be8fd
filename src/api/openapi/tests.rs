//! The description's shape, its committed copy, and its schemas checked
//! against what serde really writes and reads ([`schemas`]).

mod requests;
mod schemas;

use super::*;
use serde_json::Value;

fn doc() -> Value {
    serde_json::from_str(json()).expect("the description is JSON")
}

/// `docs/openapi.json` is [`json`]; `HYDRA_UPDATE_OPENAPI=1` rewrites it.
#[test]
fn the_committed_copy_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    if std::env::var_os("HYDRA_UPDATE_OPENAPI").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, json()).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != json() {
        let line = committed
            .lines()
            .zip(json().lines())
            .position(|(a, b)| a != b)
            .map_or("its end".to_string(), |n| format!("line {}", n + 1));
        panic!(
            "docs/openapi.json is stale: run `HYDRA_UPDATE_OPENAPI=1 cargo test --lib openapi` \
             (the first difference is at {line})"
        );
    }
}

/// Whether `v` is `{"$ref": "#/components/schemas/ErrorBody"}`.
fn is_error_body(v: &Value) -> bool {
    v["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ErrorBody"
}

/// Every row of the table is one operation, with its method, id, and at
/// least one success and the error body.
#[test]
fn every_route_is_documented_once() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "hydra-agent");
    assert_eq!(doc["info"]["version"], crate::VERSION);
    let paths = doc["paths"].as_object().expect("paths");
    let methods = [
        "get", "put", "post", "delete", "patch", "head", "options", "trace",
    ];
    let mut seen = Vec::new();
    for (path, item) in paths {
        for m in methods {
            if let Some(op) = item.get(m) {
                seen.push((m.to_uppercase(), path.clone(), op["operationId"].clone()));
            }
        }
    }
    assert_eq!(
        seen.len(),
        ROUTES.len(),
        "one operation per route: {seen:?}"
    );
    for route in ROUTES {
        let op = &doc["paths"][route.path][route.method.to_lowercase()];
        assert_eq!(
            op["operationId"], route.id,
            "{} {}",
            route.method, route.path
        );
        let desc = op["description"].as_str().unwrap();
        assert!(
            desc.contains(&format!("Retry: {}", route.retry)),
            "{}",
            route.id
        );
        assert!(desc.contains("admin"), "{}", route.id);
        assert_eq!(
            desc.contains("observer"),
            route.scope == Scope::Read,
            "{}",
            route.id
        );
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|k| k.starts_with('2')),
            "{}: no 2xx",
            route.id
        );
        let errors: Vec<_> = responses
            .iter()
            .filter(|(k, _)| k.starts_with('4') || k.starts_with('5') || *k == "default")
            .collect();
        assert!(!errors.is_empty(), "{}: no error answer", route.id);
        for (status, resp) in errors {
            assert!(is_error_body(resp), "{} {status}: not ErrorBody", route.id);
        }
        for p in route.path.split('/').filter(|s| s.starts_with('{')) {
            let name = p.trim_matches(|c| c == '{' || c == '}');
            let params = op["parameters"].as_array().unwrap();
            assert!(
                params
                    .iter()
                    .any(|x| x["name"] == name && x["in"] == "path"),
                "{}: path parameter {name}",
                route.id
            );
        }
    }
}

/// Every `$ref` in the document names a schema it has.
#[test]
fn every_reference_resolves() {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let doc = doc();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").expect(&r);
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} is not in components"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["mtls"]["type"],
        "mutualTLS"
    );
}

/// A route whose id has no mapping is caught when the document is built.
#[test]
#[should_panic(expected = "no request/response mapping")]
fn an_unmapped_route_panics() {
    let mut route = crate::api::routes::HEALTHZ;
    route.id = "frobnicate";
    operation(&route);
}
