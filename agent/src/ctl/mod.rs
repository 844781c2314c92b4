//! `felhomctl`: a grpcurl-style operator CLI for the agent's and the helper's Unix sockets.
//!
//! Everything is driven by gRPC server reflection (`grpc.reflection.v1`), so the CLI knows no
//! service at compile time: it asks the server which services exist, fetches their file
//! descriptors, and builds requests and prints responses as `prost_reflect::DynamicMessage`s
//! using the proto3 JSON mapping. A new RPC on the server is callable without a new felhomctl.
//!
//! - [`Session::connect`] opens a channel to a socket and classifies connect failures (missing
//!   socket, permission denied, nobody listening) into operator-readable errors.
//! - [`Session::list`], [`Session::describe`], [`Session::call`] are `list`, `describe` and
//!   `call`; [`shortcut`] holds the friendly reads (`felhomctl selftest`), one table row each;
//!   [`token`] is `felhomctl token mint|rotate|revoke --vmid N`; [`backup`] is `felhomctl
//!   backup now|list|status|due`, `restore-test run|status` and `verify run|status`, whose
//!   `--wait` follows a job to its end (`wait`).
//! - [`CtlError::exit`] maps every error to a documented exit code ([`Exit`]).
//!
//! Limits: only reflection v1 is spoken (both felhom servers serve v1 and v1alpha; grpcurl
//! falls back to v1alpha for old servers, which felhom does not have). Responses are printed
//! with default values included (`"ok": false` is shown, unlike plain proto3 JSON), because an
//! operator reading a report should not have to know which fields were omitted. Request JSON is
//! strict: unknown fields and unknown enum values are errors.

pub mod backup;
mod call;
mod cli;
mod connect;
mod describe;
mod json;
mod reflection;
pub mod shortcut;
mod symbols;
pub mod token;
mod wait;

use std::path::{Path, PathBuf};

use prost_reflect::DescriptorPool;
use tonic::transport::Channel;

pub use cli::{command, main};
pub use connect::{ConnectFailure, unix_channel};
pub use json::RequestSource;
pub use shortcut::{SHORTCUTS, Shortcut, ShortcutOutput};

/// Process exit codes of felhomctl (also listed in `felhomctl --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// The call succeeded but the report says something is not ok (e.g. a failed selftest).
    NotOk = 1,
    /// Usage error: bad arguments, unknown service/method/symbol, invalid request JSON.
    Usage = 2,
    /// Cannot connect to the socket (missing, permission denied, nobody listening).
    Connect = 3,
    /// The server answered with a gRPC error status.
    Status = 4,
    /// Anything else: transport failure, malformed descriptors, cannot write output.
    Failed = 5,
}

/// Text of the exit-code table for `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  success
  1  the call succeeded but the report is not ok (e.g. a failed selftest check)
  2  usage error: bad arguments, unknown service/method/symbol, invalid request JSON
  3  cannot connect to the socket (missing, permission denied, nobody listening)
  4  the server answered with a gRPC error status (printed as CODE: message)
  5  other failure (transport, malformed descriptors, cannot write output)";

/// Errors of felhomctl. The `Display` text is what the operator sees after `felhomctl: `.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot connect to {}: {failure}", socket.display())]
    Connect {
        socket: PathBuf,
        failure: ConnectFailure,
    },
    #[error("{}: {}", call::code_name(status.code()), status.message())]
    Status { status: tonic::Status },
    #[error("unknown service `{name}`; services: {}", known.join(", "))]
    UnknownService { name: String, known: Vec<String> },
    #[error("service {service} has no method `{name}`; methods: {}", known.join(", "))]
    UnknownMethod {
        service: String,
        name: String,
        known: Vec<String>,
    },
    #[error("`{name}` is a service, not a method; name one of: {}", known.join(", "))]
    ServiceNotMethod { name: String, known: Vec<String> },
    #[error("unknown symbol `{name}`; services: {}", services.join(", "))]
    UnknownSymbol { name: String, services: Vec<String> },
    #[error("invalid JSON {source_name}: {detail}")]
    BadJson { source_name: String, detail: String },
    #[error("invalid request {source_name} for {message}: {detail}")]
    BadRequest {
        source_name: String,
        message: String,
        detail: String,
    },
    #[error("{method} takes exactly one request message, got {count}")]
    RequestCount { method: String, count: usize },
    #[error("cannot read request {source_name}")]
    ReadRequest {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server reflection: {detail}")]
    Reflection { detail: String },
    #[error("response of {method} lacks field `{field}` needed for the table")]
    ResponseShape { method: String, field: String },
    #[error("{method} answered unexpected {field} `{value}`")]
    UnexpectedValue {
        method: String,
        field: String,
        value: String,
    },
    #[error(
        "{kind} job {job} of guest {vmid} ended, but job {newest} replaced it before its result was read; see `felhomctl jobs`"
    )]
    JobReplaced {
        kind: &'static str,
        vmid: u32,
        job: String,
        newest: String,
    },
    #[error("gRPC transport failed")]
    Transport(#[source] tonic::transport::Error),
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
}

impl CtlError {
    /// The exit code for this error. Exhaustive on purpose: a new error decides its code.
    pub fn exit(&self) -> Exit {
        match self {
            CtlError::Connect { .. } => Exit::Connect,
            CtlError::Status { .. } => Exit::Status,
            CtlError::UnknownService { .. }
            | CtlError::UnknownMethod { .. }
            | CtlError::ServiceNotMethod { .. }
            | CtlError::UnknownSymbol { .. }
            | CtlError::BadJson { .. }
            | CtlError::BadRequest { .. }
            | CtlError::RequestCount { .. }
            | CtlError::ReadRequest { .. } => Exit::Usage,
            CtlError::Reflection { .. }
            | CtlError::ResponseShape { .. }
            | CtlError::UnexpectedValue { .. }
            | CtlError::JobReplaced { .. }
            | CtlError::Transport(_)
            | CtlError::Output(_) => Exit::Failed,
        }
    }
}

impl From<tonic::Status> for CtlError {
    fn from(status: tonic::Status) -> Self {
        CtlError::Status { status }
    }
}

/// A connection to one server socket plus the descriptors it serves (fetched on first need).
#[derive(Debug)]
pub struct Session {
    channel: Channel,
    services: Option<Vec<String>>,
    pool: Option<DescriptorPool>,
}

impl Session {
    /// Connects to the gRPC server on the Unix socket `socket`.
    pub async fn connect(socket: &Path) -> Result<Self, CtlError> {
        let channel = connect::unix_channel(socket).await?;
        Ok(Self {
            channel,
            services: None,
            pool: None,
        })
    }

    /// `list`: the services (sorted), or with `service` the full names of its methods.
    pub async fn list(&mut self, service: Option<&str>) -> Result<Vec<String>, CtlError> {
        match service {
            None => Ok(self.services().await?.to_vec()),
            Some(name) => {
                let services = self.services().await?.to_vec();
                let pool = self.pool().await?;
                let service = symbols::service(pool, &services, name)?;
                Ok(service
                    .methods()
                    .map(|m| m.full_name().to_owned())
                    .collect())
            }
        }
    }

    /// `describe`: a service, method, message or enum in proto-ish text.
    pub async fn describe(&mut self, symbol: &str) -> Result<String, CtlError> {
        let services = self.services().await?.to_vec();
        let pool = self.pool().await?;
        let symbol = symbols::resolve(pool, &services, symbol)?;
        Ok(describe::render(&symbol))
    }

    /// `call`: invokes `method` (`pkg.Service/Method` or `pkg.Service.Method`) with the request
    /// message(s) read from `request`, handing each response to `on_response` as pretty JSON as
    /// it arrives.
    pub async fn call(
        &mut self,
        method: &str,
        request: &RequestSource,
        mut on_response: impl FnMut(&serde_json::Value) -> Result<(), CtlError>,
    ) -> Result<(), CtlError> {
        let services = self.services().await?.to_vec();
        let pool = self.pool().await?;
        let method = symbols::method(pool, &services, method)?;
        let text = request.read()?;
        let requests = json::parse_requests(&method.input(), &text, &request.name())?;
        if !method.is_client_streaming() && requests.len() > 1 {
            return Err(CtlError::RequestCount {
                method: method.full_name().to_owned(),
                count: requests.len(),
            });
        }
        call::invoke(self.channel.clone(), &method, requests, |message| {
            on_response(&json::to_json(&message)?)
        })
        .await
    }

    async fn services(&mut self) -> Result<&[String], CtlError> {
        if self.services.is_none() {
            let mut client = reflection::Reflector::new(self.channel.clone());
            self.services = Some(client.list_services().await?);
        }
        Ok(self
            .services
            .as_deref()
            .expect("set just above when it was missing"))
    }

    async fn pool(&mut self) -> Result<&DescriptorPool, CtlError> {
        if self.pool.is_none() {
            let services = self.services().await?.to_vec();
            let mut client = reflection::Reflector::new(self.channel.clone());
            self.pool = Some(client.pool_for(&services).await?);
        }
        Ok(self
            .pool
            .as_ref()
            .expect("set just above when it was missing"))
    }
}

/// Runs the `selftest` shortcut against the agent socket `socket`: the agent's Selftest report
/// as JSON plus its verdict. What `felhomctl --socket SOCKET selftest` prints.
pub async fn selftest(socket: &Path) -> Result<ShortcutOutput, CtlError> {
    let shortcut = shortcut::find("selftest").expect("selftest is in SHORTCUTS");
    shortcut::run(socket, shortcut).await
}

/// Runs the shortcut called `name` (e.g. `guests`, `audit verify`) against `socket`: what
/// `felhomctl --socket SOCKET NAME` prints, as JSON plus table and verdict. `None` when there
/// is no such shortcut.
pub async fn run_shortcut(socket: &Path, name: &str) -> Option<Result<ShortcutOutput, CtlError>> {
    let shortcut = shortcut::find(name)?;
    Some(shortcut::run(socket, shortcut).await)
}
