//! The route table: every route of the API once, with the part of the agent
//! it touches (which decides the roles that may call it, [`Scope`]), what a
//! retry of it does, and its description. [`Request::route`] maps every
//! request onto its row (an exhaustive match: a new request cannot go
//! without one); the OpenAPI description and the role tests are made from
//! this table.

use super::request::Request;

/// What a route touches; a role is granted scopes, not routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Reads only (`GET`): the observer role's.
    Read,
    /// Changes containers.
    Containers,
    /// Changes the image store.
    Images,
    /// Changes the firewall's allowlist.
    Firewall,
}

/// One route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    /// The path, its parameters in braces (`{name}`, `{ref}`).
    pub path: &'static str,
    pub scope: Scope,
    /// The OpenAPI `operationId`.
    pub id: &'static str,
    pub summary: &'static str,
    /// What repeating the request does (for a caller that lost an answer).
    pub retry: &'static str,
}

const fn r(
    method: &'static str,
    path: &'static str,
    scope: Scope,
    id: &'static str,
    summary: &'static str,
    retry: &'static str,
) -> Route {
    Route {
        method,
        path,
        scope,
        id,
        summary,
        retry,
    }
}

const SAFE: &str = "Safe: it changes nothing.";
use Scope::*;

pub const HEALTHZ: Route = r(
    "GET",
    "/healthz",
    Read,
    "healthz",
    "Liveness: the agent answers.",
    SAFE,
);
pub const METRICS: Route = r(
    "GET",
    "/metrics",
    Read,
    "metrics",
    "The agent's and its containers' metrics (OpenMetrics text).",
    SAFE,
);
pub const OPENAPI: Route = r(
    "GET",
    "/v1/openapi.json",
    Read,
    "openapi",
    "This description (OpenAPI 3.1).",
    SAFE,
);
pub const HOST: Route = r(
    "GET",
    "/v1/host",
    Read,
    "host",
    "The host: kernel, cgroup mode, CPUs, memory, container counts, images.",
    SAFE,
);
pub const EVENTS: Route = r(
    "GET",
    "/v1/events",
    Read,
    "events",
    "Every event from now on, one JSON object per line (NDJSON), until the client goes.",
    SAFE,
);
pub const LIST: Route = r(
    "GET",
    "/v1/containers",
    Read,
    "list",
    "Every container.",
    SAFE,
);
pub const CREATE: Route = r("POST", "/v1/containers", Containers, "create", "Creates and starts a container (its image pulled first when it comes from a registry).", "Not idempotent: a retry after a lost answer gets 409 (the name is taken); use PUT /v1/containers/{name} to retry safely.");
pub const PUT: Route = r("PUT", "/v1/containers/{name}", Containers, "put", "Creates and starts the container named in the path from the body's spec (201), or answers 200 with the existing container when its spec is identical; 409 when it differs. The body's name may be left out.", "Idempotent: a retry with the same spec gives 200 and the same container; concurrent ones make one container.");
pub const INSPECT: Route = r(
    "GET",
    "/v1/containers/{name}",
    Read,
    "inspect",
    "One container.",
    SAFE,
);
pub const REMOVE: Route = r(
    "DELETE",
    "/v1/containers/{name}",
    Containers,
    "remove",
    "Removes a stopped container (running ones with force=true: killed first).",
    "Idempotent in effect: a retry after a lost answer gets 404.",
);
pub const START: Route = r(
    "POST",
    "/v1/containers/{name}/start",
    Containers,
    "start",
    "Starts a created or exited container.",
    "Idempotent in effect: a retry while it runs gets 409 already running.",
);
pub const STOP: Route = r(
    "POST",
    "/v1/containers/{name}/stop",
    Containers,
    "stop",
    "SIGTERM, then SIGKILL after `timeout` seconds.",
    "Idempotent: stopping a stopped container answers 200 with it.",
);
pub const RESTART: Route = r(
    "POST",
    "/v1/containers/{name}/restart",
    Containers,
    "restart",
    "Stops (as stop) and starts again.",
    "Not idempotent: each call restarts once more.",
);
pub const KILL: Route = r(
    "POST",
    "/v1/containers/{name}/kill",
    Containers,
    "kill",
    "Sends a signal to the container's init.",
    "Not idempotent: each call sends the signal again (409 once it has exited).",
);
pub const WAIT: Route = r(
    "GET",
    "/v1/containers/{name}/wait",
    Read,
    "wait",
    "Waits until the container exits; its exit status.",
    SAFE,
);
pub const LOGS: Route = r(
    "GET",
    "/v1/containers/{name}/logs",
    Read,
    "logs",
    "Its log lines (NDJSON), the last `tail` of them, then new ones with follow=true.",
    SAFE,
);
pub const STATS: Route = r(
    "GET",
    "/v1/containers/{name}/stats",
    Read,
    "stats",
    "Its cgroup's figures now.",
    SAFE,
);
pub const PORTS: Route = r(
    "GET",
    "/v1/ports",
    Read,
    "ports",
    "The host-port inventory: the range, what is allocated, what else listens.",
    SAFE,
);
pub const GET_ALLOWLIST: Route = r(
    "GET",
    "/v1/firewall/allowlist",
    Read,
    "get_allowlist",
    "The CIDRs allowed to reach containers' ports.",
    SAFE,
);
pub const SET_ALLOWLIST: Route = r(
    "PUT",
    "/v1/firewall/allowlist",
    Firewall,
    "set_allowlist",
    "Replaces the allowlist (one firewall transaction).",
    "Idempotent: the same list again changes nothing.",
);
pub const EDIT_ALLOWLIST: Route = r(
    "PATCH",
    "/v1/firewall/allowlist",
    Firewall,
    "edit_allowlist",
    "Adds and removes CIDRs in one transaction.",
    "Idempotent: adding a present CIDR or removing an absent one changes nothing.",
);
pub const PULL: Route = r("POST", "/v1/images/pull", Images, "pull", "Pulls an image from its registry; NDJSON progress, the image last (or an error object).", "Idempotent: an image already here answers at once; concurrent pulls of one image share one download.");
pub const IMAGES: Route = r(
    "GET",
    "/v1/images",
    Read,
    "images",
    "The registry images on this host and the containers using them.",
    SAFE,
);
pub const REMOVE_IMAGE: Route = r(
    "DELETE",
    "/v1/images/{ref}",
    Images,
    "remove_image",
    "Forgets an image (the reference percent-encoded); 409 while a container uses it.",
    "Idempotent in effect: a retry gets 404.",
);
pub const PRUNE_IMAGES: Route = r(
    "POST",
    "/v1/images/prune",
    Images,
    "prune_images",
    "Removes the layers no image or container uses.",
    "Idempotent: a second prune finds nothing more.",
);

/// Every route, in the order of the documentation.
pub const ROUTES: &[Route] = &[
    HEALTHZ,
    METRICS,
    OPENAPI,
    HOST,
    EVENTS,
    LIST,
    CREATE,
    PUT,
    INSPECT,
    REMOVE,
    START,
    STOP,
    RESTART,
    KILL,
    WAIT,
    LOGS,
    STATS,
    PORTS,
    GET_ALLOWLIST,
    SET_ALLOWLIST,
    EDIT_ALLOWLIST,
    PULL,
    IMAGES,
    REMOVE_IMAGE,
    PRUNE_IMAGES,
];

impl Request {
    /// Its row of the route table.
    pub fn route(&self) -> &'static Route {
        use Request::*;
        match self {
            Healthz => &HEALTHZ,
            Metrics => &METRICS,
            OpenApi => &OPENAPI,
            Host => &HOST,
            Events => &EVENTS,
            List => &LIST,
            Create(_) => &CREATE,
            Put(_) => &PUT,
            Inspect(_) => &INSPECT,
            Remove { .. } => &REMOVE,
            Start(_) => &START,
            Stop { .. } => &STOP,
            Restart { .. } => &RESTART,
            Kill { .. } => &KILL,
            Wait(_) => &WAIT,
            Logs { .. } => &LOGS,
            Stats(_) => &STATS,
            Ports => &PORTS,
            GetAllowlist => &GET_ALLOWLIST,
            SetAllowlist(_) => &SET_ALLOWLIST,
            EditAllowlist { .. } => &EDIT_ALLOWLIST,
            Pull(_) => &PULL,
            Images => &IMAGES,
            RemoveImage(_) => &REMOVE_IMAGE,
            PruneImages => &PRUNE_IMAGES,
        }
    }

    /// Whether it only reads (the observer role's routes).
    pub fn is_read_only(&self) -> bool {
        self.route().scope == Scope::Read
    }
}

/// The route of `method` and `path` (a parameter matches one segment),
/// before the request is parsed: what a caller may do is decided on it.
pub fn find(method: &str, path: &str) -> Option<&'static Route> {
    ROUTES
        .iter()
        .find(|r| r.method == method && r.matches(path))
}

/// The methods `path` has routes for (for a 405's `Allow`).
pub fn methods(path: &str) -> Vec<&'static str> {
    ROUTES
        .iter()
        .filter(|r| r.matches(path))
        .map(|r| r.method)
        .collect()
}

impl Route {
    /// Whether `path` is this route's (a parameter matches one segment).
    fn matches(&self, path: &str) -> bool {
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let t: Vec<&str> = self.path.split('/').skip(1).collect();
        t.len() == segs.len()
            && t.iter()
                .zip(&segs)
                .all(|(t, s)| *t == *s || (t.starts_with('{') && !s.is_empty()))
    }

    /// A concrete path of this route, its parameters filled with `name`.
    pub fn example_path(&self, name: &str) -> String {
        self.path.replace("{name}", name).replace("{ref}", name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row parses back to a request of that row, and the methods
    /// that change things are exactly the non-read scopes.
    #[test]
    fn the_table_and_the_parser_agree() {
        let spec = br#"{"name":"a","image":"rootfs:/x"}"#;
        for route in ROUTES {
            let body: &[u8] = match route.id {
                "create" | "put" => spec,
                "set_allowlist" => br#"{"cidrs":[]}"#,
                "edit_allowlist" => br#"{"add":[]}"#,
                "pull" => br#"{"image":"127.0.0.1:5000/a:1"}"#,
                _ => b"",
            };
            let req = Request::from_http(route.method, &route.example_path("a"), None, body)
                .unwrap_or_else(|e| panic!("{} {}: {e:?}", route.method, route.path));
            assert_eq!(req.route(), route, "{} {}", route.method, route.path);
            assert_eq!(find(route.method, &route.example_path("a")), Some(route));
            assert_eq!(
                route.scope == Scope::Read,
                route.method == "GET",
                "{}",
                route.path
            );
        }
        assert_eq!(find("GET", "/v1/containers/a/nope"), None);
        assert_eq!(find("POST", "/v1/host"), None);
        assert_eq!(methods("/v1/containers/a"), ["PUT", "GET", "DELETE"]);
        let mut ids: Vec<_> = ROUTES.iter().map(|r| r.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), ROUTES.len(), "operation ids are unique");
    }
}
