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
//! Limits: LXC guests only (the product runs no VMs); one node per client (single-node hosts).

mod api;
mod client;
mod error;
mod task;
mod tls;
pub(crate) mod token;
pub mod types;
mod upid;

pub use api::{
    BackupMode, ConfigUpdate, DestroyOptions, RestoreRequest, TaskFilter, TaskSource, Vmid,
    VzdumpRequest, validate_snapshot_name, validate_storage_id,
};
pub use client::{PveClient, PveClientConfig};
pub use error::{PermissionDenied, PveError, TaskFailure};
pub use task::{TaskOutcome, WaitOptions, classify_exitstatus};
// Shared with the PBS client, which talks to the same kind of task machinery and TLS setup.
pub(crate) use task::{PollEnd, encode_path_segment, poll_until_stopped};
pub use tls::{CertFingerprint, TlsError, TlsTrust, client_config, provider};
pub(crate) use tls::{check_endpoint, url_host};
pub use token::{ApiToken, TokenError};
pub use upid::{Upid, UpidError};
