//! The OpenAPI 3.1 description, made from the route table ([`ROUTES`]):
//! every row becomes one operation; what it takes and answers is chosen
//! per operation id in [`answers::route_io`], which panics on an id it does not know, so
//! a route added to the table without a mapping fails the tests that
//! build the document. The schemas are the wire types' own
//! (`#[derive(utoipa::ToSchema)]`), so they follow the serde attributes.
//! `docs/openapi.json` is [`json`], checked by a test.

use super::auth::Role;
use super::error::ErrorBody;
use super::request::{DEFAULT_STOP_TIMEOUT_S, MAX_STOP_TIMEOUT_S, MAX_TAIL};
use super::routes::{Route, Scope, ROUTES};
use super::wire::{
    Allowlist, AllowlistEdit, ContainerInfo, ExitStatus, HostInfo, ImageInfo, PortsInfo,
    PruneReport, PullRequest,
};
use crate::cgroup::Stats;
use crate::image::registry::Progress;
use crate::model::{ContainerSpec, Event};
use crate::telemetry::logs::Record as LogRecord;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::openapi::security::{SecurityRequirement, SecurityScheme};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, LicenseBuilder, OpenApi, OpenApiBuilder,
    OpenApiVersion, Paths, RefOr, Required,
};
use utoipa::{PartialSchema, ToSchema};

mod answers;

use answers::{error_meaning, error_response, ok_response, route_io, schema_ref};

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// The schema name of a `PUT /v1/containers/{name}` body.
const PUT_SPEC: &str = "ContainerPutSpec";

const DESCRIPTION: &str = "\
The per-host node agent's API: HTTP/1.1 with JSON bodies (NDJSON streams for events, logs and \
pulls).

It is served on two front ends with the same routes and answers:

* **The Unix socket** (by default `/run/hydra-agent/agent.sock`, mode 0660): role-free; \
any local user the socket's mode lets in may call every route.
* **TCP with mutual TLS** (when configured): the client must present a certificate the agent's \
CA issued; its role is a URI SAN `hydra://role/admin`, `hydra://role/operator` or \
`hydra://role/observer` (the highest one counts; the subject's CN is never read). `observer` \
may call the GET routes only; `operator` also changes containers, images and the firewall; \
`admin` may call everything. A certificate without a role, or a role a route does not allow, \
gets 403. Each operation's description names the roles that may call it.

Errors are `{\"error\": {\"code\", \"message\", \"field\"?}}` (`ErrorBody`) with the status \
chosen from the failure; `field`, when present, is the JSON path or parameter at fault. \
Every operation's description ends with what a retry after a lost answer does.";

/// The tag of a route: its area.
fn tag(route: &Route) -> &'static str {
    let p = route.path;
    if p.starts_with("/v1/containers") {
        "containers"
    } else if p.starts_with("/v1/images") {
        "images"
    } else if p.starts_with("/v1/firewall") || p.starts_with("/v1/ports") {
        "network"
    } else {
        "agent"
    }
}

const TAGS: [(&str, &str); 4] = [
    (
        "agent",
        "The agent itself: liveness, metrics, the host, events, this description.",
    ),
    (
        "containers",
        "Containers: create, inspect, control, logs, stats.",
    ),
    ("images", "Registry images on this host."),
    ("network", "Host ports and the firewall's allowlist."),
];

/// The roles that may call a route of `scope` on the TCP API.
fn roles(scope: Scope) -> String {
    let names: Vec<&str> = [Role::Admin, Role::Operator, Role::Observer]
        .into_iter()
        .filter(|r| r.allows(scope))
        .map(Role::as_str)
        .collect();
    names.join(", ")
}

fn description(route: &Route) -> String {
    format!(
        "{}\n\nRetry: {}\n\nRoles (TCP API): {}. The Unix socket serves it to every local caller it lets in.",
        route.summary,
        route.retry,
        roles(route.scope)
    )
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn integer(min: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(min))
}

fn boolean() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Boolean)
}

fn param(name: &str, at: ParameterIn, desc: &str, schema: ObjectBuilder) -> ParameterBuilder {
    let required = if at == ParameterIn::Path {
        Required::True
    } else {
        Required::False
    };
    ParameterBuilder::new()
        .name(name)
        .parameter_in(at)
        .required(required)
        .description(Some(desc))
        .schema(Some(schema))
}

/// The path and query parameters of a route.
fn parameters(route: &Route) -> Vec<ParameterBuilder> {
    use ParameterIn::{Path, Query};
    let mut out = Vec::new();
    if route.path.contains("{name}") {
        let name = string().pattern(Some("^[a-z0-9][a-z0-9_.-]{0,62}$"));
        out.push(param("name", Path, "The container's name.", name));
    }
    if route.path.contains("{ref}") {
        let d = "The image reference, percent-encoded (`127.0.0.1%3A5000%2Fapp%3A1` for `127.0.0.1:5000/app:1`).";
        out.push(param("ref", Path, d, string()));
    }
    let bool_note = |p: &str| format!("; also 1 or 0, and a bare `?{p}` is true");
    match route.id {
        "stop" | "restart" => out.push(param(
            "timeout",
            Query,
            "Seconds between SIGTERM and SIGKILL.",
            integer(0)
                .maximum(Some(MAX_STOP_TIMEOUT_S as f64))
                .default(Some(DEFAULT_STOP_TIMEOUT_S.into())),
        )),
        "kill" => out.push(param(
            "signal",
            Query,
            "The signal: a name in any case with or without SIG (`TERM`, `SIGTERM`) or a number 1 to 64.",
            string().default(Some("KILL".into())).examples(["TERM", "SIGHUP", "9"]),
        )),
        "remove" => out.push(param(
            "force",
            Query,
            &format!("Kill a running container first{}.", bool_note("force")),
            boolean().default(Some(false.into())),
        )),
        "logs" => {
            let follow = format!("Go on with new records while it runs{}.", bool_note("follow"));
            out.push(param("follow", Query, &follow, boolean().default(Some(false.into()))));
            let tail = integer(0).maximum(Some(MAX_TAIL as f64));
            out.push(param("tail", Query, "Only the last this many records (default: all).", tail));
        }
        _ => {}
    }
    out
}

/// The operation of one route.
fn operation(route: &Route) -> utoipa::openapi::path::Operation {
    let io = route_io(route);
    let params: Vec<_> = parameters(route).into_iter().map(|p| p.build()).collect();
    let mut errors: Vec<u16> = vec![403, 413, 500];
    if params.iter().any(|p| p.parameter_in == ParameterIn::Query) || io.body.is_some() {
        errors.push(400);
    }
    errors.extend(io.errors);
    errors.sort_unstable();
    errors.dedup();
    let mut op = OperationBuilder::new()
        .operation_id(Some(route.id))
        .summary(Some(route.summary))
        .description(Some(description(route)))
        .tag(tag(route));
    for p in params {
        op = op.parameter(p);
    }
    if let Some((schema, d)) = io.body {
        let c = ContentBuilder::new()
            .schema(Some(schema_ref(schema)))
            .build();
        let body = RequestBodyBuilder::new()
            .description(Some(d))
            .required(Some(Required::True));
        op = op.request_body(Some(body.content(JSON, c).build()));
    }
    for ok in io.ok {
        let (status, resp) = ok_response(ok);
        op = op.response(status, resp);
    }
    for e in errors {
        op = op.response(e.to_string(), error_response(error_meaning(e)));
    }
    op.response("default", error_response("Any other error."))
        .build()
}

fn method(route: &Route) -> HttpMethod {
    match route.method {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "DELETE" => HttpMethod::Delete,
        "PATCH" => HttpMethod::Patch,
        m => panic!("route {}: method {m} is not mapped", route.id),
    }
}

/// Adds `T` and every schema it refers to.
fn add<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into(), T::schema()));
    T::schemas(schemas);
}

/// Every schema a body refers to, sorted by name.
fn schemas() -> BTreeMap<String, RefOr<Schema>> {
    let mut v = Vec::new();
    add::<ContainerSpec>(&mut v);
    add::<ContainerInfo>(&mut v);
    add::<ExitStatus>(&mut v);
    add::<HostInfo>(&mut v);
    add::<PortsInfo>(&mut v);
    add::<Allowlist>(&mut v);
    add::<AllowlistEdit>(&mut v);
    add::<ImageInfo>(&mut v);
    add::<PruneReport>(&mut v);
    add::<PullRequest>(&mut v);
    add::<Progress>(&mut v);
    add::<Stats>(&mut v);
    add::<Event>(&mut v);
    add::<LogRecord>(&mut v);
    add::<ErrorBody>(&mut v);
    let mut map: BTreeMap<_, _> = v.into_iter().collect();
    map.insert(PUT_SPEC.into(), put_spec());
    map
}

/// `ContainerSpec` with `name` optional (a PUT's body).
fn put_spec() -> RefOr<Schema> {
    let RefOr::T(Schema::Object(mut o)) = ContainerSpec::schema() else {
        panic!("ContainerSpec's schema is an object");
    };
    o.required.retain(|f| f != "name");
    o.description = Some(
        "A container spec as in `ContainerSpec`, but `name` may be left out: the path names \
         the container, and a `name` given must be the path's."
            .into(),
    );
    RefOr::T(Schema::Object(o))
}

/// The description, built from [`ROUTES`].
pub fn document() -> OpenApi {
    let mut paths = Paths::new();
    for route in ROUTES {
        paths.add_path_operation(route.path, vec![method(route)], operation(route));
    }
    let mtls = SecurityScheme::MutualTls {
        description: Some("The TCP API: a client certificate the agent's CA issued, its role a URI SAN `hydra://role/admin|operator|observer`. The Unix socket needs none.".into()),
        deprecated: None,
        extensions: None,
    };
    let components = ComponentsBuilder::new()
        .schemas_from_iter(schemas())
        .security_scheme("mtls", mtls)
        .build();
    let info = InfoBuilder::new()
        .title("hydra-agent")
        .version(crate::VERSION)
        .description(Some(DESCRIPTION))
        .license(Some(
            LicenseBuilder::new()
                .name("Apache-2.0")
                .identifier(Some("Apache-2.0"))
                .build(),
        ))
        .build();
    let tags = TAGS.map(|(n, d)| TagBuilder::new().name(n).description(Some(d)).build());
    OpenApiBuilder::new()
        .openapi(OpenApiVersion::Version31)
        .info(info)
        .paths(paths)
        .components(Some(components))
        .security(Some([
            SecurityRequirement::new("mtls", Vec::<String>::new()),
            SecurityRequirement::default(),
        ]))
        .tags(Some(tags))
        .build()
}

/// The description as pretty JSON with a trailing newline, made once.
pub fn json() -> &'static str {
    static JSON_TEXT: OnceLock<String> = OnceLock::new();
    JSON_TEXT.get_or_init(|| {
        let mut s = document()
            .to_pretty_json()
            .expect("the description serializes");
        s.push('\n');
        s
    })
}

#[cfg(test)]
mod tests;
