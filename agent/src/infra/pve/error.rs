//! Errors of the Proxmox VE client, one variant per thing a caller must handle differently.
//!
//! PVE puts its error message in the HTTP reason phrase (the body is `{"data":null}`, plus
//! `errors` for parameter validation). Those texts are parsed here into typed errors: a 403's
//! `Permission check failed (<path>, <privilege>)` becomes [`PermissionDenied`] with path and
//! privileges; a 500 `Configuration file 'nodes/<node>/lxc/<vmid>.conf' does not exist` becomes
//! [`PveError::GuestNotFound`]. Reading a failed answer this way is PVE's half of the shared
//! call path: the HTTP core hands every non-200 answer over as an `HttpError`, and
//! `From<HttpError>` here words it. No variant ever carries the API token.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::upid::Upid;
use crate::infra::proxmox::http::{ErrorAnswer, product_error_from_http};

/// A privilege check Proxmox refused: the ACL path and the privilege(s) it wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionDenied {
    /// ACL path, e.g. `/vms/9001`.
    pub path: String,
    /// Privileges checked; several when PVE accepts any of them (`A|B` in its text).
    pub privileges: Vec<String>,
}

impl PermissionDenied {
    /// Finds `Permission check failed (<path>, <privs>)` anywhere in a PVE message.
    pub fn parse(text: &str) -> Option<Self> {
        const MARK: &str = "Permission check failed (";
        let start = text.find(MARK)? + MARK.len();
        let inner = &text[start..];
        let inner = &inner[..inner.find(')')?];
        let (path, privs) = inner.split_once(", ")?;
        if !path.starts_with('/') || privs.is_empty() {
            return None;
        }
        Some(Self {
            path: path.to_owned(),
            privileges: privs.split('|').map(|p| p.trim().to_owned()).collect(),
        })
    }
}

impl fmt::Display for PermissionDenied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Permission check failed ({}, {})",
            self.path,
            self.privileges.join("|")
        )
    }
}

/// A task that stopped with an exit status other than `OK` / `WARNINGS: n`.
#[derive(Debug, Clone)]
pub struct TaskFailure {
    pub upid: Upid,
    /// PVE's exit status text, e.g. `command 'vzdump 101 …' failed: exit code 1`.
    pub exitstatus: String,
    /// Set when the task failed a privilege check at run time.
    pub permission: Option<PermissionDenied>,
    /// The last lines of the task log, oldest first.
    pub log_tail: Vec<String>,
}

/// Everything that can go wrong talking to Proxmox VE.
#[derive(Debug, thiserror::Error)]
pub enum PveError {
    #[error("invalid Proxmox VE client setting")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("cannot reach Proxmox VE for {method} {path}")]
    Transport {
        method: &'static str,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {path} timed out after {timeout:?}")]
    Timeout {
        method: &'static str,
        path: String,
        timeout: Duration,
    },
    #[error("Proxmox VE refused the API token ({reason})")]
    Unauthorized { reason: String },
    #[error("Proxmox VE denied {method} {path}: {denied}")]
    Permission {
        method: &'static str,
        path: String,
        denied: PermissionDenied,
    },
    #[error("guest {vmid} does not exist on node {node}")]
    GuestNotFound { node: String, vmid: u32 },
    #[error("Proxmox VE rejected {method} {path}: {status} {reason}{}", format_param_errors(.errors))]
    Rejected {
        method: &'static str,
        path: String,
        status: u16,
        reason: String,
        errors: BTreeMap<String, String>,
    },
    #[error("Proxmox VE server error on {method} {path}: {status} {reason}")]
    Server {
        method: &'static str,
        path: String,
        status: u16,
        reason: String,
    },
    #[error("unexpected answer to {method} {path}")]
    Decode {
        method: &'static str,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("task {} failed: {}", .0.upid, .0.exitstatus)]
    TaskFailed(Box<TaskFailure>),
    #[error("task {upid} still running after the {deadline:?} deadline")]
    TaskDeadline { upid: Upid, deadline: Duration },
    #[error("waiting for task {upid} was cancelled")]
    Cancelled { upid: Upid },
}

fn format_param_errors(errors: &BTreeMap<String, String>) -> String {
    if errors.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = errors
        .iter()
        .map(|(k, v)| format!("{k}: {}", v.trim_end()))
        .collect();
    format!(" ({})", parts.join("; "))
}

impl PveError {
    /// True for failures worth retrying later (network, timeouts, 5xx), false for answers that
    /// will not change by asking again (auth, permission, validation, task failure).
    pub fn is_transient(&self) -> bool {
        match self {
            PveError::Transport { .. } | PveError::Timeout { .. } | PveError::Server { .. } => true,
            PveError::Setup(_)
            | PveError::InvalidRequest(_)
            | PveError::Unauthorized { .. }
            | PveError::Permission { .. }
            | PveError::GuestNotFound { .. }
            | PveError::Rejected { .. }
            | PveError::Decode { .. }
            | PveError::TaskFailed(_)
            | PveError::TaskDeadline { .. }
            | PveError::Cancelled { .. } => false,
        }
    }
}

product_error_from_http!(PveError, from_answer);

#[derive(serde::Deserialize, Default)]
struct ErrorEnvelope {
    #[serde(default)]
    errors: BTreeMap<String, String>,
    #[serde(default)]
    message: Option<String>,
}

/// A non-200 PVE answer: the message is the reason phrase, parameter errors are in the body.
fn from_answer(method: &'static str, path: String, answer: ErrorAnswer) -> PveError {
    let extra: ErrorEnvelope = serde_json::from_slice(&answer.body).unwrap_or_default();
    // Some PVE versions also put the message in the body; the status line is authoritative.
    let reason = if answer.reason.trim().is_empty() {
        extra.message.clone().unwrap_or_default().trim().to_owned()
    } else {
        answer.reason.trim().to_owned()
    };
    match answer.status.as_u16() {
        401 => PveError::Unauthorized { reason },
        403 => match PermissionDenied::parse(&reason) {
            Some(denied) => PveError::Permission {
                method,
                path,
                denied,
            },
            None => PveError::Rejected {
                method,
                path,
                status: 403,
                reason,
                errors: extra.errors,
            },
        },
        code @ 500..=599 => match parse_missing_guest(&reason) {
            Some((node, vmid)) => PveError::GuestNotFound { node, vmid },
            None => PveError::Server {
                method,
                path,
                status: code,
                reason,
            },
        },
        code => PveError::Rejected {
            method,
            path,
            status: code,
            reason,
            errors: extra.errors,
        },
    }
}

/// Recognises PVE's "no such guest" 500: `Configuration file 'nodes/pve1/lxc/101.conf' does not exist`.
pub(crate) fn parse_missing_guest(reason: &str) -> Option<(String, u32)> {
    let rest = reason.strip_prefix("Configuration file 'nodes/")?;
    let (node, rest) = rest.split_once('/')?;
    let rest = rest
        .strip_prefix("lxc/")
        .or_else(|| rest.strip_prefix("qemu-server/"))?;
    let (vmid, rest) = rest.split_once(".conf'")?;
    if !rest.trim_start().starts_with("does not exist") {
        return None;
    }
    Some((node.to_owned(), vmid.parse().ok()?))
}

impl From<crate::core::InvalidValue> for PveError {
    fn from(e: crate::core::InvalidValue) -> Self {
        PveError::InvalidRequest(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_real_permission_text() {
        let p = PermissionDenied::parse("Permission check failed (/vms/9001, VM.Backup)").unwrap();
        assert_eq!(p.path, "/vms/9001");
        assert_eq!(p.privileges, vec!["VM.Backup"]);
        assert_eq!(
            p.to_string(),
            "Permission check failed (/vms/9001, VM.Backup)"
        );
    }

    #[test]
    fn parses_an_any_of_permission_text() {
        let p = PermissionDenied::parse(
            "Permission check failed (/storage/local, Datastore.Audit|Datastore.AllocateSpace)",
        )
        .unwrap();
        assert_eq!(p.path, "/storage/local");
        assert_eq!(
            p.privileges,
            vec!["Datastore.Audit", "Datastore.AllocateSpace"]
        );
    }

    #[test]
    fn finds_the_permission_text_inside_a_task_exitstatus() {
        let p = PermissionDenied::parse(
            "TASK ERROR: Permission check failed (/storage/felhom-pbs, Datastore.AllocateSpace)",
        )
        .unwrap();
        assert_eq!(p.path, "/storage/felhom-pbs");
    }

    #[test]
    fn other_403_texts_are_not_permission_texts() {
        assert_eq!(PermissionDenied::parse("Forbidden"), None);
        assert_eq!(PermissionDenied::parse("Permission check failed"), None);
    }

    #[test]
    fn recognises_the_missing_guest_text() {
        assert_eq!(
            parse_missing_guest("Configuration file 'nodes/pve1/lxc/999.conf' does not exist"),
            Some(("pve1".to_owned(), 999))
        );
        assert_eq!(
            parse_missing_guest("Configuration file 'nodes/pve1/lxc/x.conf' does not exist"),
            None
        );
        assert_eq!(parse_missing_guest("Internal Server Error"), None);
    }

    #[test]
    fn parameter_errors_are_listed_in_the_message() {
        let mut errors = BTreeMap::new();
        errors.insert(
            "vmid".to_owned(),
            "value must have a minimum value of 100\n".to_owned(),
        );
        let err = PveError::Rejected {
            method: "POST",
            path: "/nodes/pve1/lxc".into(),
            status: 400,
            reason: "Parameter verification failed.".into(),
            errors,
        };
        assert_eq!(
            err.to_string(),
            "Proxmox VE rejected POST /nodes/pve1/lxc: 400 Parameter verification failed. (vmid: value must have a minimum value of 100)"
        );
    }
}
