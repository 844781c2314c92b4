//! Typed Proxmox VE API client (reqwest + rustls, API-token auth).
//!
//! - [`PveClient`] talks to `https://<host>:8006/api2/json` with a [`ApiToken`]; TLS trust by
//!   CA file, pinned leaf SHA-256, or loopback-only `insecure_skip_verify` ([`TlsTrust`]).
//! - Reads decode into [`types`]; mutations return a [`Upid`] and [`PveClient::wait_task`]
//!   waits for it, succeeding only on `exitstatus == "OK"` (or `WARNINGS: n`, reported apart).
//! - Errors ([`PveError`]) keep what a caller must act on apart: permission (with ACL path and
//!   privilege), auth, missing guest, validation, 5xx, transport, timeout, task failure with the
//!   log tail. No error, log line or `Debug` output contains the token secret.
//!
//! The HTTP side (token, call/decode, task waiter, UPID field parsing, TLS) is the core shared
//! with the PBS client, [`crate::infra::proxmox`]; this module is what is PVE's own: the
//! endpoints, the answers' types, how PVE words errors (reason phrase), the UPID grammar.
//!
//! Limits: LXC guests only (the product runs no VMs); one node per client (single-node hosts).

mod api;
mod client;
mod config_cache;
mod error;
mod task;
mod token;
pub mod types;
mod upid;
mod worker;

pub use api::{
    BackupMode, ConfigUpdate, DestroyOptions, PbsStorageRequest, RestoreRequest, TaskFilter,
    TaskSource, Vmid, VzdumpRequest, validate_snapshot_name, validate_storage_id,
};
pub use client::{PveClient, PveClientConfig};
pub use config_cache::CONFIG_MAX_AGE;
pub use error::{PermissionDenied, PveError, TaskFailure};
// The shared core's public types, at the paths callers have always used.
pub use crate::infra::proxmox::task::{TaskOutcome, WaitOptions, classify_exitstatus};
pub use crate::infra::proxmox::tls::{
    CertFingerprint, TlsError, TlsTrust, client_config, provider,
};
pub use token::{ApiToken, Pve, TokenError};
pub use upid::{Upid, UpidError};
