//! The guests' local API: HTTPS in, LocalApi gRPC out.
//!
//! In-guest controllers call `https://<host bridge IP>:8443/…` with a pinned self-signed
//! certificate and a per-guest bearer token (LOCAL-API.md is the wire contract, byte for byte).
//! This crate terminates that TLS, turns each request into a typed action and makes exactly one
//! call on the agent's `felhom.agent.v1.LocalApi` gRPC service, forwarding the bearer token as
//! `authorization` metadata, then wraps the reply in the `{"ok","data","error"}` envelope.
//!
//! It holds no tokens and decides no authorization — the agent maps a token to its guest and
//! answers UNAUTHENTICATED / PERMISSION_DENIED — so it can run inside the agent process (the
//! default; the agent depends on this crate, and calls its LocalApi service's methods directly
//! with [`in_process`]) or as its own process (`felhom-localapi-gateway`, over the agent's LocalApi
//! socket with [`connect_unix`]). What it does decide is resource use: body size, timeouts,
//! connection cap, per-token rate limit (see [`Limits`]).
//!
//! Embedding (what the agent does; the standalone binary is the same in a few more lines):
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use felhom_localapi_gateway::{Gateway, GatewayConfig, connect_unix};
//!
//! let config = GatewayConfig::new(vec!["192.0.2.10:8443".parse()?], "/var/lib/felhom-agent");
//! let gateway = Gateway::start(config, connect_unix("/run/felhom/agent.sock")).await?;
//! let pins = gateway.pins(); // for bootstrap.json: leaf hex and SPKI base64
//! # let _ = pins;
//! // … on SIGTERM:
//! gateway.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Modules: [`cert`] (persisted identity and pins), [`config`], [`routes`] (the route table),
//! [`action`] (bodies → actions, replies → data), [`timestamp`] (Unix seconds → RFC 3339),
//! [`auth`] (token shape), [`status`] (gRPC code → HTTP status), [`upstream`] (the gRPC call),
//! [`ratelimit`], `envelope`, `service` (one request), `server` (listeners, TLS, connections,
//! shutdown).
//!
//! Endpoints with a back end: `GET /storage`, `POST /snapshot`, `POST /rollback`, `POST /backup`,
//! `GET /backup/due`, `GET /backup/status`, `GET /restore-test/status`; the disk and host-metrics
//! endpoints answer 501 until their LocalApi RPCs exist (see [`routes`]).

pub mod action;
pub mod auth;
pub mod cert;
pub mod config;
mod envelope;
pub mod ratelimit;
pub mod routes;
mod server;
mod service;
pub mod status;
mod throttle;
pub mod timestamp;
pub mod upstream;

pub use cert::{CertError, Pins, ServerIdentity};
pub use config::{ConfigError, DEFAULT_PORT, GatewayConfig, Limits};
pub use server::{Gateway, RotateError, StartError};
pub use service::OPENAPI_JSON;
pub use upstream::{LocalApiClient, connect_unix, in_process};
