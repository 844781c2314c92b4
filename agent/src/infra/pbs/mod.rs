//! Typed Proxmox Backup Server client (reqwest + rustls, PBS API-token auth).
//!
//! The agent needs three things from PBS (see the field findings in `seeds/pbs-findings.md`):
//! the snapshot inventory with each snapshot's encryption and verify state, a way to start a
//! server-side verify (PBS's client has no verify command; it runs on the server), and the verify
//! task's outcome.
//!
//! - [`PbsClient`] talks to `https://<host>:8007/api2/json` with a [`PbsToken`]
//!   (`Authorization: PBSAPIToken=<user>@<realm>!<token>:<secret>`), trusting the server the same
//!   way as the PVE client ([`TlsTrust`]: pinned leaf SHA-256, CA file, or loopback-only
//!   insecure). PBS serves a self-signed certificate; pin its fingerprint.
//! - [`PbsClient::snapshots`] decodes into [`PbsSnapshot`] (namespace, type, id, time, size, owner,
//!   protected, `encrypted` from the files' crypt modes, verify state ok|failed|none and the
//!   verify task's UPID).
//! - [`PbsClient::verify`] starts a verify and returns its [`PbsUpid`]; [`PbsClient::wait_task`]
//!   polls the node named in the UPID with the waiter shared with the PVE client (success only
//!   on `OK`, `WARNINGS: n` reported apart, per-request timeout, overall deadline, the poll
//!   schedule of [`crate::infra::proxmox::task`], cancellation); afterwards the listing shows
//!   the snapshots' new `verification`.
//! - Errors ([`PbsError`]): auth (401), permission (403, with PBS's path and privileges parsed),
//!   rejection (4xx), server (5xx), transport, timeout, decode, task failure with the log tail.
//!   No error, log line or `Debug` output contains the token secret.
//!
//! What was confirmed in proxmox-backup / proxmox sources is stated in each submodule's docs
//! (`client`: endpoints and privileges; `error`: error envelope and texts; `types`: wire shapes
//! and the encryption rule; `upid`: the UPID format and worker-id escaping; `task`: task status
//! and log). PBS privilege separation: a token's rights are its own ACL intersected with its
//! user's (`CachedUserInfo::lookup_privs`), so a role must be granted to both user and token.
//!
//! Token, call/decode path, task waiter, UPID field parsing and TLS are the core shared with
//! the PVE client ([`crate::infra::proxmox`]); what is PBS's own is here: the endpoints, the
//! answers' types, how PBS words errors (the body), the 9-field UPID grammar.
//!
//! Limits: read and verify only (no prune, backup or restore — PVE drives those through its PBS
//! storage); no ticket/password login; no namespace recursion (`max-depth`) on verify.

mod client;
mod error;
mod task;
mod token;
pub mod types;
mod upid;

pub use crate::infra::proxmox::{CertFingerprint, TaskOutcome, TlsTrust, WaitOptions};
pub use client::{
    PbsClient, PbsClientConfig, VerifyRequest, validate_backup_id, validate_datastore,
    validate_namespace,
};
pub use error::{PbsError, PbsPermissionDenied, PbsTaskFailure};
pub use token::{Pbs, PbsToken, PbsTokenError};
pub use types::{
    BackupFile, BackupType, CryptMode, PbsSnapshot, PbsTaskLogLine, PbsTaskStatus, VerifyState,
};
pub use upid::{PbsUpid, PbsUpidError, escape_worker_id, unescape_worker_id};
