//! What each route of the table takes and answers ([`route_io`], by
//! operation id), and the responses made of it.

use super::{JSON, NDJSON, PUT_SPEC};
use crate::api::error::ErrorBody;
use crate::api::routes::Route;
use crate::api::wire::{
    Allowlist, ContainerInfo, ExitStatus, HostInfo, ImageInfo, PortsInfo, PruneReport,
};
use crate::cgroup::Stats;
use crate::image::registry::Progress;
use crate::model::Event;
use crate::telemetry::logs::Record as LogRecord;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::ToSchema;

/// A success answer of an operation.
pub(super) enum Answer {
    Json(u16, &'static str, RefOr<Schema>),
    /// An NDJSON stream of these items.
    Ndjson(&'static str, RefOr<Schema>),
    /// 204, no body.
    Empty(&'static str),
    Metrics,
}

/// What an operation takes and answers, besides what every one does.
pub(super) struct Io {
    /// The body's schema name and description.
    pub body: Option<(&'static str, &'static str)>,
    pub ok: Vec<Answer>,
    /// Error statuses this route can answer, besides 403, 413 and 500
    /// (every route's) and 400 (every route with query parameters or a body).
    pub errors: &'static [u16],
}

fn io(body: Option<(&'static str, &'static str)>, ok: Answer, errors: &'static [u16]) -> Io {
    Io {
        body,
        ok: vec![ok],
        errors,
    }
}

pub(super) fn schema_ref(name: &str) -> RefOr<Schema> {
    Ref::from_schema_name(name).into()
}

fn r<T: ToSchema>() -> RefOr<Schema> {
    schema_ref(&T::name())
}

fn array<T: ToSchema>() -> RefOr<Schema> {
    ArrayBuilder::new().items(r::<T>()).into()
}

/// Errors of the routes that change a container.
const CONTAINER_WRITE: &[u16] = &[404, 409, 422, 503, 507];
/// Errors of a create: the spec, the image (a pull), the runtime, the state.
const CREATE: &[u16] = &[401, 404, 409, 422, 502, 503, 507];

/// The request body, success answers and errors of `route`, by its id;
/// panics on an id it does not know.
pub(super) fn route_io(route: &Route) -> Io {
    use Answer::*;
    match route.id {
        "healthz" => io(None, Json(200, "Alive.", alive()), &[]),
        "metrics" => io(None, Metrics, &[]),
        "openapi" => io(None, Json(200, "This document.", any_object()), &[]),
        "host" => io(None, Json(200, "The host.", r::<HostInfo>()), &[]),
        "events" => io(None, Ndjson("Events as they happen.", r::<Event>()), &[]),
        "ports" => io(
            None,
            Json(200, "The host-port inventory.", r::<PortsInfo>()),
            &[404],
        ),
        "get_allowlist" => io(None, Json(200, "The allowlist.", r::<Allowlist>()), &[404]),
        "set_allowlist" | "edit_allowlist" => {
            let body = match route.id {
                "set_allowlist" => ("Allowlist", "The whole new allowlist."),
                _ => ("AllowlistEdit", "CIDRs to add and to remove."),
            };
            let ok = Json(200, "The allowlist now.", r::<Allowlist>());
            io(Some(body), ok, &[404])
        }
        "pull" => io(
            Some(("PullRequest", "The image to pull.")),
            Ndjson(
                "Progress lines, then the image; or, when the pull failed once the answer had \
                 started, an error object as a refused request's body (its `code` e.g. \
                 `registry_unauthorized`, `image_not_found`, `registry_unreachable`, `no_space`).",
                pull_line(),
            ),
            // refused before the answer starts: a reference that is not a
            // registry's (422) or a registry the config does not list (403)
            &[422],
        ),
        "images" => io(None, Json(200, "The images.", array::<ImageInfo>()), &[]),
        // 400: a reference that is not UTF-8 once decoded
        "remove_image" => io(None, Empty("Removed."), &[400, 404, 409, 503, 507]),
        "prune_images" => io(
            None,
            Json(200, "What was freed.", r::<PruneReport>()),
            &[503, 507],
        ),
        _ => container_io(route),
    }
}

/// [`route_io`] of the container routes.
fn container_io(route: &Route) -> Io {
    use Answer::*;
    let info = || r::<ContainerInfo>();
    match route.id {
        "list" => io(
            None,
            Json(200, "Every container.", array::<ContainerInfo>()),
            &[],
        ),
        "create" => io(
            Some(("ContainerSpec", "The container spec.")),
            Json(201, "Created and started.", info()),
            CREATE,
        ),
        "put" => Io {
            body: Some((
                PUT_SPEC,
                "The container spec; `name` may be left out (the path's is taken) and must be \
                 the path's when given.",
            )),
            ok: vec![
                Json(200, "It exists with this very spec: unchanged.", info()),
                Json(201, "Created and started.", info()),
            ],
            errors: CREATE,
        },
        "inspect" => io(None, Json(200, "The container.", info()), &[404]),
        "wait" => io(None, Json(200, "How it exited.", r::<ExitStatus>()), &[404]),
        "logs" => io(
            None,
            Ndjson("Log records, oldest first.", r::<LogRecord>()),
            &[404],
        ),
        "stats" => io(
            None,
            Json(200, "Its cgroup's figures.", r::<Stats>()),
            &[404],
        ),
        "remove" => io(None, Empty("Removed."), &[404, 409, 503, 507]),
        "start" | "stop" | "restart" | "kill" => io(
            None,
            Json(200, "The container after it.", info()),
            CONTAINER_WRITE,
        ),
        id => panic!("route {id:?} has no request/response mapping in api::openapi"),
    }
}

/// `{"status": "ok"}`.
fn alive() -> RefOr<Schema> {
    ObjectBuilder::new()
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(["ok"])),
        )
        .required("status")
        .into()
}

fn any_object() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::Object).into()
}

/// One line of a pull's answer.
fn pull_line() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(r::<Progress>())
        .item(r::<ImageInfo>())
        .item(r::<ErrorBody>())
        .into()
}

/// What an error status means, whichever route answers it.
pub(super) fn error_meaning(status: u16) -> &'static str {
    match status {
        400 => "Invalid: a malformed query parameter or body, or a spec out of range (`field` names it).",
        401 => "The registry refused the agent's credentials for the image.",
        403 => "Refused: the client certificate's role may not call this route (TCP API), or the agent's config does not allow a capability or registry asked for.",
        404 => "Not found: the container or image (or host networking is disabled on this agent).",
        409 => "Conflict with the current state: a name taken, a container in the wrong state, an image in use, host ports, addresses or ids exhausted.",
        413 => "The request body is larger than 1 MiB.",
        422 => "Well-formed but not possible here: the image, runtime, cgroup or network refused it (`field` names the part).",
        500 => "Internal error; the message has the cause.",
        502 => "The image's registry could not be reached.",
        503 => "The agent's state directory is read-only or gone.",
        507 => "No space left on the filesystem of the agent's state.",
        _ => panic!("no meaning for error status {status}"),
    }
}

pub(super) fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            JSON,
            ContentBuilder::new().schema(Some(r::<ErrorBody>())).build(),
        )
        .build()
}

pub(super) fn ok_response(ok: Answer) -> (String, Response) {
    let content = |ty: &str, schema| {
        let c = ContentBuilder::new().schema(Some(schema)).build();
        ResponseBuilder::new().content(ty, c)
    };
    match ok {
        Answer::Json(status, d, schema) => (
            status.to_string(),
            content(JSON, schema).description(d).build(),
        ),
        Answer::Ndjson(d, item) => {
            let text = ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(
                    "Newline-delimited JSON: one object per line, of the schema `x-ndjson-item`.",
                ));
            let item = serde_json::to_value(item).expect("a schema serializes");
            let ext = ExtensionsBuilder::new().add("x-ndjson-item", item).build();
            let c = ContentBuilder::new()
                .schema(Some(text))
                .extensions(Some(ext))
                .build();
            (
                "200".into(),
                ResponseBuilder::new()
                    .description(d)
                    .content(NDJSON, c)
                    .build(),
            )
        }
        Answer::Empty(d) => ("204".into(), ResponseBuilder::new().description(d).build()),
        Answer::Metrics => {
            let text = ObjectBuilder::new().schema_type(Type::String).into();
            let ty = crate::telemetry::metrics::CONTENT_TYPE;
            (
                "200".into(),
                content(ty, text)
                    .description("The OpenMetrics exposition.")
                    .build(),
            )
        }
    }
}
