//! One set of requests for every front end: the Unix-socket and TCP servers
//! parse HTTP into a [`Request`] ([`Request::from_http`]), `hydractl`'s
//! client turns a [`Request`] into HTTP ([`Request::to_http`]); both
//! directions live here, so they cannot drift apart.

use super::error::ApiError;
use super::wire::{Allowlist, AllowlistEdit, PullRequest};
use crate::model::spec::validate;
use crate::model::{Cidr, ContainerSpec};
use percent_encoding::{percent_decode_str, utf8_percent_encode, NON_ALPHANUMERIC};

/// Every operation of the API.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Healthz,
    Metrics,
    /// `GET /v1/openapi.json`.
    OpenApi,
    Host,
    Events,
    List,
    Create(Box<ContainerSpec>),
    /// `PUT /v1/containers/{name}`: create, or the existing one if its spec
    /// is identical.
    Put(Box<ContainerSpec>),
    Inspect(String),
    Start(String),
    Stop {
        name: String,
        timeout_s: u64,
    },
    Restart {
        name: String,
        timeout_s: u64,
    },
    Kill {
        name: String,
        signal: i32,
    },
    Remove {
        name: String,
        force: bool,
    },
    Wait(String),
    Logs {
        name: String,
        follow: bool,
        tail: Option<usize>,
    },
    Stats(String),
    Ports,
    GetAllowlist,
    SetAllowlist(Vec<Cidr>),
    EditAllowlist {
        add: Vec<Cidr>,
        remove: Vec<Cidr>,
    },
    /// `POST /v1/images/pull`: NDJSON progress, the image last.
    Pull(String),
    Images,
    /// `DELETE /v1/images/{ref}` (the reference percent-encoded).
    RemoveImage(String),
    PruneImages,
}

/// Seconds `stop` and `restart` wait before SIGKILL when not given.
pub const DEFAULT_STOP_TIMEOUT_S: u64 = 10;
/// The longest stop timeout accepted (a day); more is a 400 naming `timeout`.
pub const MAX_STOP_TIMEOUT_S: u64 = 86_400;
/// The largest `tail` accepted (what the description's int64 holds).
pub const MAX_TAIL: u64 = i64::MAX as u64;

/// An HTTP request as the client sends it: method, path with query, body.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpRequest {
    pub method: &'static str,
    pub path: String,
    pub body: Option<Vec<u8>>,
}

fn http(method: &'static str, path: String, body: Option<Vec<u8>>) -> HttpRequest {
    HttpRequest { method, path, body }
}

fn json<T: serde::Serialize>(v: &T) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(v).expect("request bodies serialize"))
}

impl Request {
    /// The request as the client sends it.
    pub fn to_http(&self) -> HttpRequest {
        use Request::*;
        let c = |n: &str, rest: &str| format!("/v1/containers/{n}{rest}");
        match self {
            Healthz => http("GET", "/healthz".into(), None),
            Metrics => http("GET", "/metrics".into(), None),
            OpenApi => http("GET", "/v1/openapi.json".into(), None),
            Host => http("GET", "/v1/host".into(), None),
            Events => http("GET", "/v1/events".into(), None),
            List => http("GET", "/v1/containers".into(), None),
            Create(spec) => http("POST", "/v1/containers".into(), json(spec)),
            Put(spec) => http("PUT", c(&spec.name, ""), json(spec)),
            Inspect(n) => http("GET", c(n, ""), None),
            Start(n) => http("POST", c(n, "/start"), None),
            Stop { name, timeout_s } => {
                http("POST", c(name, &format!("/stop?timeout={timeout_s}")), None)
            }
            Restart { name, timeout_s } => http(
                "POST",
                c(name, &format!("/restart?timeout={timeout_s}")),
                None,
            ),
            Kill { name, signal } => http("POST", c(name, &format!("/kill?signal={signal}")), None),
            Remove { name, force } => http("DELETE", c(name, &format!("?force={force}")), None),
            Wait(n) => http("GET", c(n, "/wait"), None),
            Logs { name, follow, tail } => {
                let tail = tail.map(|t| format!("&tail={t}")).unwrap_or_default();
                http(
                    "GET",
                    c(name, &format!("/logs?follow={follow}{tail}")),
                    None,
                )
            }
            Stats(n) => http("GET", c(n, "/stats"), None),
            Ports => http("GET", "/v1/ports".into(), None),
            GetAllowlist => http("GET", "/v1/firewall/allowlist".into(), None),
            SetAllowlist(cidrs) => http(
                "PUT",
                "/v1/firewall/allowlist".into(),
                json(&Allowlist {
                    cidrs: cidrs.clone(),
                }),
            ),
            EditAllowlist { add, remove } => http(
                "PATCH",
                "/v1/firewall/allowlist".into(),
                json(&AllowlistEdit {
                    add: add.clone(),
                    remove: remove.clone(),
                }),
            ),
            Pull(r) => http(
                "POST",
                "/v1/images/pull".into(),
                json(&PullRequest { image: r.clone() }),
            ),
            Images => http("GET", "/v1/images".into(), None),
            RemoveImage(r) => http(
                "DELETE",
                format!("/v1/images/{}", utf8_percent_encode(r, NON_ALPHANUMERIC)),
                None,
            ),
            PruneImages => http("POST", "/v1/images/prune".into(), None),
        }
    }

    /// Parses an HTTP request (the body already read, at most
    /// [`super::MAX_BODY`] bytes); errors name the field or the route.
    pub fn from_http(
        method: &str,
        path: &str,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Request, ApiError> {
        let q = Query(query.unwrap_or(""));
        let trimmed = path.trim_end_matches('/');
        let segs: Vec<&str> = trimmed.split('/').skip(1).collect();
        let no_route = || ApiError::not_found(format!("no route {method} {trimmed}"));
        Ok(match (method, segs.as_slice()) {
            ("GET", ["healthz"]) => Request::Healthz,
            ("GET", ["metrics"]) => Request::Metrics,
            ("GET", ["v1", "openapi.json"]) => Request::OpenApi,
            ("GET", ["v1", "host"]) => Request::Host,
            ("GET", ["v1", "events"]) => Request::Events,
            ("GET", ["v1", "containers"]) => Request::List,
            ("POST", ["v1", "containers"]) => Request::Create(Box::new(parse_spec(body)?)),
            ("GET", ["v1", "ports"]) => Request::Ports,
            ("GET", ["v1", "firewall", "allowlist"]) => Request::GetAllowlist,
            ("PUT", ["v1", "firewall", "allowlist"]) => {
                Request::SetAllowlist(parse_body::<Allowlist>(body, "cidrs")?.cidrs)
            }
            ("PATCH", ["v1", "firewall", "allowlist"]) => {
                let e: AllowlistEdit = parse_body(body, "body")?;
                Request::EditAllowlist {
                    add: e.add,
                    remove: e.remove,
                }
            }
            ("POST", ["v1", "images", "pull"]) => {
                Request::Pull(parse_body::<PullRequest>(body, "image")?.image)
            }
            ("GET", ["v1", "images"]) => Request::Images,
            ("POST", ["v1", "images", "prune"]) => Request::PruneImages,
            ("DELETE", ["v1", "images", r]) => Request::RemoveImage(
                percent_decode_str(r)
                    .decode_utf8()
                    .map_err(|_| ApiError::bad("image", "the reference is not UTF-8 once decoded"))?
                    .into_owned(),
            ),
            (_, ["v1", "containers", name, rest @ ..]) => {
                container_route(method, name, rest, &q, body, no_route)?
            }
            _ => return Err(no_route()),
        })
    }
}

/// The routes under `/v1/containers/{name}`.
fn container_route(
    method: &str,
    name: &str,
    rest: &[&str],
    q: &Query,
    body: &[u8],
    no_route: impl FnOnce() -> ApiError,
) -> Result<Request, ApiError> {
    let name = name.to_string();
    let timeout = || {
        Ok::<_, ApiError>(
            q.num("timeout", MAX_STOP_TIMEOUT_S)?
                .unwrap_or(DEFAULT_STOP_TIMEOUT_S),
        )
    };
    Ok(match (method, rest) {
        ("GET", []) => Request::Inspect(name),
        ("PUT", []) => Request::Put(Box::new(parse_put_spec(&name, body)?)),
        ("DELETE", []) => Request::Remove {
            name,
            force: q.flag("force")?,
        },
        ("POST", ["start"]) => Request::Start(name),
        ("POST", ["stop"]) => Request::Stop {
            name,
            timeout_s: timeout()?,
        },
        ("POST", ["restart"]) => Request::Restart {
            name,
            timeout_s: timeout()?,
        },
        ("POST", ["kill"]) => Request::Kill {
            name,
            signal: parse_signal(q.get("signal").unwrap_or("KILL"))?,
        },
        ("GET", ["wait"]) => Request::Wait(name),
        ("GET", ["stats"]) => Request::Stats(name),
        ("GET", ["logs"]) => Request::Logs {
            name,
            follow: q.flag("follow")?,
            tail: q.num("tail", MAX_TAIL)?.map(|t| t as usize),
        },
        _ => return Err(no_route()),
    })
}

/// The query string of a request.
struct Query<'a>(&'a str);

impl Query<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then_some(v)
        })
    }

    fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(v) => Err(ApiError::bad(key, format!("{v:?} is not true or false"))),
        }
    }

    fn num(&self, key: &str, max: u64) -> Result<Option<u64>, ApiError> {
        self.get(key)
            .map(|v| match v.parse::<u64>() {
                Ok(n) if n <= max => Ok(n),
                Ok(_) => Err(ApiError::bad(key, format!("{v} is more than {max}"))),
                Err(_) => Err(ApiError::bad(
                    key,
                    format!("{v:?} is not a non-negative integer"),
                )),
            })
            .transpose()
    }
}

/// A JSON body; a serde error names the JSON path of the offending field
/// (`default_field` when it has none).
fn parse_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    default_field: &str,
) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return ApiError::bad("body", format!("malformed JSON: {inner}"));
        }
        let field = if path == "." || path.is_empty() {
            unknown_field_name(&inner.to_string()).unwrap_or_else(|| default_field.into())
        } else {
            path
        };
        ApiError::bad(field, format!("invalid request: {inner}"))
    })
}

fn unknown_field_name(msg: &str) -> Option<String> {
    let rest = msg.split("field `").nth(1)?;
    Some(rest.split('`').next()?.to_string())
}

/// Parses and validates a container spec.
pub fn parse_spec(body: &[u8]) -> Result<ContainerSpec, ApiError> {
    let spec: ContainerSpec = parse_body(body, "body").map_err(|mut e| {
        e.message = e
            .message
            .replacen("invalid request", "invalid container spec", 1);
        e
    })?;
    validate(&spec)?;
    Ok(spec)
}

/// The spec of `PUT /v1/containers/{name}`: its `name` may be left out
/// (the path's is taken), and must be the path's when given.
fn parse_put_spec(name: &str, body: &[u8]) -> Result<ContainerSpec, ApiError> {
    let mut v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return Err(ApiError::bad("body", format!("malformed JSON: {e}"))),
    };
    let Some(obj) = v.as_object_mut() else {
        return Err(ApiError::bad("body", "a container spec is a JSON object"));
    };
    match obj.get("name") {
        None => {
            obj.insert("name".into(), name.into());
        }
        Some(serde_json::Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(ApiError::bad(
                "name",
                format!("the body names {other}, the path {name:?}: they must be the same"),
            ))
        }
    }
    parse_spec(&serde_json::to_vec(&v).expect("a JSON value serializes"))
}

/// `TERM`, `SIGTERM` or `15`.
pub fn parse_signal(s: &str) -> Result<i32, ApiError> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(ApiError::bad(
            "signal",
            format!("{n} is not a signal number (1 to 64)"),
        ));
    }
    let up = s.to_ascii_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|sig| sig as i32)
        .map_err(|_| ApiError::bad("signal", format!("{s:?} is not a signal name")))
}

#[cfg(test)]
mod tests;
