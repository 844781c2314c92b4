//! Errors of the PBS client, one variant per thing a caller must handle differently.
//!
//! Confirmed in proxmox `proxmox-rest-server/src/formatter.rs` (`error_to_response`): unlike PVE,
//! PBS sends an error's message as the response *body* (plain text, though labelled
//! `application/json`) with the status code of the `HttpError` — or 400 for any other error —
//! and the canonical reason phrase. Texts this module parses (proxmox-backup sources):
//! - 401: `authentication failed - <why>`, e.g. `… - invalid credentials`,
//!   `… - user account or token disabled or expired.`,
//!   `… - no authentication credentials provided.` (proxmox-rest-server `rest.rs`, PBS `auth.rs`).
//! - 403 from a datastore privilege check (`src/backup/hierarchy.rs`, `check_ns_privs_full`):
//!   `permission check failed - missing <Priv>|<Priv> on /datastore/<store>[/<ns>…]`, privileges
//!   named in the order of PBS's privilege table (e.g. `Datastore.Verify|Datastore.Backup`: either
//!   suffices, the second only for owned groups). The router's own check says just
//!   `permission check failed`.
//!
//! Reading a failed answer this way is PBS's half of the shared call path: the HTTP core hands
//! every non-200 answer over as an `HttpError`, and `From<HttpError>` here words it. No
//! variant ever carries the token.

use std::fmt;
use std::time::Duration;

use super::upid::PbsUpid;
use crate::infra::proxmox::http::{ErrorAnswer, product_error_from_http};

/// Longest error message kept from a PBS answer (the body is untrusted input).
const MAX_ERROR_LEN: usize = 1024;

/// A PBS privilege check that failed: the ACL path and the privileges of which one was needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PbsPermissionDenied {
    /// ACL path, e.g. `/datastore/felhom-store`.
    pub path: String,
    /// Privileges PBS names; any one of them would have done.
    pub privileges: Vec<String>,
}

impl PbsPermissionDenied {
    /// Parses `permission check failed - missing <privs> on <path>` anywhere in a message.
    pub fn parse(text: &str) -> Option<Self> {
        const MARK: &str = "permission check failed - missing ";
        let rest = &text[text.find(MARK)? + MARK.len()..];
        let (privs, path) = rest.split_once(" on ")?;
        let path = path.split_whitespace().next()?;
        if !path.starts_with('/') || privs.is_empty() || privs.contains(' ') {
            return None;
        }
        Some(Self {
            path: path.to_owned(),
            privileges: privs.split('|').map(str::to_owned).collect(),
        })
    }
}

impl fmt::Display for PbsPermissionDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "permission check failed - missing {} on {}",
            self.privileges.join("|"),
            self.path
        )
    }
}

/// A PBS task that stopped with an exit status other than `OK` / `WARNINGS: n`.
#[derive(Debug, Clone)]
pub struct PbsTaskFailure {
    pub upid: PbsUpid,
    /// PBS's exit status, e.g. `verification failed - please check the log for details`.
    pub exitstatus: String,
    /// For verify tasks: the snapshots/groups PBS listed as failed (`ct/101/2026-…Z`).
    pub failed_snapshots: Vec<String>,
    /// The last lines of the task log, oldest first.
    pub log_tail: Vec<String>,
}

/// Everything that can go wrong talking to a Proxmox Backup Server.
#[derive(Debug, thiserror::Error)]
pub enum PbsError {
    #[error("invalid PBS client setting")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("invalid PBS request: {0}")]
    InvalidRequest(String),
    #[error("cannot reach PBS for {method} {path}")]
    Transport {
        method: &'static str,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("PBS {method} {path} timed out after {timeout:?}")]
    Timeout {
        method: &'static str,
        path: String,
        timeout: Duration,
    },
    #[error("PBS refused the API token ({reason})")]
    Unauthorized { reason: String },
    #[error("PBS denied {method} {path}: {reason}")]
    Permission {
        method: &'static str,
        path: String,
        reason: String,
        /// Parsed when PBS named the path and privileges.
        denied: Option<PbsPermissionDenied>,
    },
    #[error("PBS rejected {method} {path}: {status} {reason}")]
    Rejected {
        method: &'static str,
        path: String,
        status: u16,
        reason: String,
    },
    #[error("PBS server error on {method} {path}: {status} {reason}")]
    Server {
        method: &'static str,
        path: String,
        status: u16,
        reason: String,
    },
    #[error("unexpected answer from PBS to {method} {path}")]
    Decode {
        method: &'static str,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("PBS task {} failed: {}", .0.upid, .0.exitstatus)]
    TaskFailed(Box<PbsTaskFailure>),
    #[error("PBS task {upid} still running after the {deadline:?} deadline")]
    TaskDeadline { upid: PbsUpid, deadline: Duration },
    #[error("waiting for PBS task {upid} was cancelled")]
    Cancelled { upid: PbsUpid },
}

impl PbsError {
    /// True for failures worth retrying later (network, timeouts, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            PbsError::Transport { .. } | PbsError::Timeout { .. } | PbsError::Server { .. } => true,
            PbsError::Setup(_)
            | PbsError::InvalidRequest(_)
            | PbsError::Unauthorized { .. }
            | PbsError::Permission { .. }
            | PbsError::Rejected { .. }
            | PbsError::Decode { .. }
            | PbsError::TaskFailed(_)
            | PbsError::TaskDeadline { .. }
            | PbsError::Cancelled { .. } => false,
        }
    }
}

product_error_from_http!(PbsError, from_answer);

/// A non-200 PBS answer: the message is the body.
fn from_answer(method: &'static str, path: String, answer: ErrorAnswer) -> PbsError {
    // PBS always sends the canonical reason phrase; only it is the fallback for an empty body.
    let canonical = answer.status.canonical_reason().unwrap_or_default();
    let reason = error_message(&answer.body, canonical);
    match answer.status.as_u16() {
        401 => PbsError::Unauthorized { reason },
        403 => PbsError::Permission {
            method,
            path,
            denied: PbsPermissionDenied::parse(&reason),
            reason,
        },
        code @ 500..=599 => PbsError::Server {
            method,
            path,
            status: code,
            reason,
        },
        code => PbsError::Rejected {
            method,
            path,
            status: code,
            reason,
        },
    }
}

/// PBS's error message: the body text; tolerates an ExtJS-style `{"message": …}` body and
/// falls back to the reason phrase for an empty body.
fn error_message(body: &[u8], reason: &str) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let msg = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(obj)) => obj
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned)
            .unwrap_or_default(),
        Ok(serde_json::Value::String(s)) => s,
        _ => text.to_owned(),
    };
    let msg = msg.trim();
    let msg = if msg.is_empty() { reason.trim() } else { msg };
    let mut out: String = msg.chars().take(MAX_ERROR_LEN).collect();
    if out.len() < msg.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_datastore_permission_text() {
        let p = PbsPermissionDenied::parse(
            "permission check failed - missing Datastore.Verify|Datastore.Backup on /datastore/felhom-store",
        )
        .unwrap();
        assert_eq!(p.path, "/datastore/felhom-store");
        assert_eq!(p.privileges, ["Datastore.Verify", "Datastore.Backup"]);
        assert_eq!(
            p.to_string(),
            "permission check failed - missing Datastore.Verify|Datastore.Backup on /datastore/felhom-store"
        );
    }

    #[test]
    fn the_bare_router_text_has_no_details() {
        assert_eq!(PbsPermissionDenied::parse("permission check failed"), None);
        assert_eq!(
            PbsPermissionDenied::parse("Permission check failed (/vms/1, VM.Audit)"),
            None
        );
    }
}
