//! The route table: every endpoint of LOCAL-API.md, and how the gateway handles it.
//!
//! A route is (method, exact path) → [`Handling`]. Paths match exactly (no trailing slash, no
//! prefix matching; the query string is ignored). A path in the table with another method is
//! 405 with `Allow`; a path not in the table is 404.
//!
//! Implemented: `GET /storage`, `POST /snapshot`, `POST /rollback`, `POST /backup`,
//! `GET /backup/due`, `GET /backup/status`, `GET /restore-test/status` (and the public
//! `GET /openapi.json`). Endpoints whose LocalApi RPC does not exist yet (`GET /disks`,
//! `POST /disks/assign`, `POST /disks/eject`, `POST /disks/format`, `GET /host/metrics`) are in
//! the table as [`Handling::NotAvailable`] and answer 501; giving one a back end is changing its
//! entry to `Handling::Call(Rpc::…)`, plus the new [`Rpc`] variant's body parsing and reply data
//! ([`crate::action`]), its call ([`crate::upstream`]), and its operation in `openapi.json`
//! (drop `x-felhom-available: false`; the parity test in `tests/openapi.rs` checks it), plus
//! the fake agent in `tests/common`. `POST /disks/format` will be the one
//! route whose refusal (403) carries a payload in the envelope; its `Rpc` arm will build that
//! response from the status details rather than the default error envelope.

/// The HTTP methods the local API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verb {
    Get,
    Post,
}

/// The LocalApi RPCs the gateway can call, one per implemented endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rpc {
    GetStorage,
    Snapshot,
    Rollback,
    StartBackup,
    GetBackupDue,
    GetBackupStatus,
    GetRestoreTestStatus,
}

impl Rpc {
    /// The `felhom.agent.v1.LocalApi` method this calls (the surface policy test checks that
    /// every LocalApi method is reached by exactly one route).
    pub const fn method(self) -> &'static str {
        match self {
            Rpc::GetStorage => "GetStorage",
            Rpc::Snapshot => "Snapshot",
            Rpc::Rollback => "Rollback",
            Rpc::StartBackup => "StartBackup",
            Rpc::GetBackupDue => "GetBackupDue",
            Rpc::GetBackupStatus => "GetBackupStatus",
            Rpc::GetRestoreTestStatus => "GetRestoreTestStatus",
        }
    }
}

/// What the gateway does with a request to a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Handling {
    /// Serves the OpenAPI document itself; no token needed.
    OpenApiDocument,
    /// Authenticated, then translated into exactly one LocalApi call.
    Call(Rpc),
    /// Authenticated, then answered 501: this agent version has no RPC behind it.
    NotAvailable,
}

/// One entry of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub verb: Verb,
    pub path: &'static str,
    pub handling: Handling,
}

/// Every route the gateway serves.
pub const ROUTES: &[Route] = &[
    route(Verb::Get, "/openapi.json", Handling::OpenApiDocument),
    route(Verb::Get, "/storage", Handling::Call(Rpc::GetStorage)),
    route(Verb::Post, "/snapshot", Handling::Call(Rpc::Snapshot)),
    route(Verb::Post, "/rollback", Handling::Call(Rpc::Rollback)),
    route(Verb::Post, "/backup", Handling::Call(Rpc::StartBackup)),
    route(Verb::Get, "/backup/due", Handling::Call(Rpc::GetBackupDue)),
    route(
        Verb::Get,
        "/backup/status",
        Handling::Call(Rpc::GetBackupStatus),
    ),
    route(
        Verb::Get,
        "/restore-test/status",
        Handling::Call(Rpc::GetRestoreTestStatus),
    ),
    route(Verb::Get, "/disks", Handling::NotAvailable),
    route(Verb::Post, "/disks/assign", Handling::NotAvailable),
    route(Verb::Post, "/disks/eject", Handling::NotAvailable),
    route(Verb::Post, "/disks/format", Handling::NotAvailable),
    route(Verb::Get, "/host/metrics", Handling::NotAvailable),
];

/// The outcome of looking a request up in [`ROUTES`].
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(&'static Route),
    /// The path exists with other methods; the value is the `Allow` header.
    WrongMethod(String),
    NotFound,
}

impl Verb {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Post => "POST",
        }
    }

    fn of(method: &http::Method) -> Option<Self> {
        if method == http::Method::GET {
            Some(Self::Get)
        } else if method == http::Method::POST {
            Some(Self::Post)
        } else {
            None
        }
    }
}

/// Finds the route for a request.
pub fn lookup(method: &http::Method, path: &str) -> Lookup {
    let verb = Verb::of(method);
    let mut allow: Vec<&'static str> = Vec::new();
    for r in ROUTES.iter().filter(|r| r.path == path) {
        if Some(r.verb) == verb {
            return Lookup::Found(r);
        }
        allow.push(r.verb.as_str());
    }
    if allow.is_empty() {
        Lookup::NotFound
    } else {
        Lookup::WrongMethod(allow.join(", "))
    }
}

const fn route(verb: Verb, path: &'static str, handling: Handling) -> Route {
    Route {
        verb,
        path,
        handling,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn table_has_every_local_api_md_endpoint_once() {
        let expected = [
            "GET /storage",
            "POST /snapshot",
            "POST /rollback",
            "POST /backup",
            "GET /backup/due",
            "GET /backup/status",
            "GET /restore-test/status",
            "GET /disks",
            "POST /disks/assign",
            "POST /disks/eject",
            "POST /disks/format",
            "GET /host/metrics",
            "GET /openapi.json",
        ];
        let mut have: Vec<String> = ROUTES
            .iter()
            .map(|r| format!("{} {}", r.verb.as_str(), r.path))
            .collect();
        have.sort();
        let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(have, want);
    }

    #[test]
    fn wrong_method_lists_allowed_methods() {
        assert_eq!(
            lookup(&Method::DELETE, "/storage"),
            Lookup::WrongMethod("GET".into())
        );
        assert_eq!(
            lookup(&Method::GET, "/snapshot"),
            Lookup::WrongMethod("POST".into())
        );
    }

    #[test]
    fn near_misses_are_not_found() {
        for p in ["/storage/", "/Storage", "/", "/disks/format/x", ""] {
            assert_eq!(lookup(&Method::GET, p), Lookup::NotFound, "{p}");
        }
    }
}
