//! Fault injection: bounded, self-clearing misbehaviour for client robustness tests.
//!
//! Every fault carries a count and disappears once used up. Path prefixes are matched against
//! the API path without `/api2/json` (e.g. `/nodes/pve1/vzdump`). Kinds:
//! - `fail_task`: the next N tasks of a type (`vzdump`, `vzstart`, …) end with an error
//!   exitstatus (a realistic default per type, or the given text) and matching log lines;
//! - `hang_task`: the next N tasks of a type stay `running` forever (task-deadline tests);
//! - `http_error`: the next N matching requests get the given 5xx and reason phrase;
//! - `delay`: the next N matching requests are answered after a delay (capped at 10 minutes);
//! - `drop`: the next N matching requests get their connection closed without any response.
//!
//! The same faults can be installed over HTTP (unauthenticated, loopback only) through
//! `POST /_sim/faults` with one [`FaultSpec`] as JSON, listed with `GET /_sim/faults` and
//! cleared with `DELETE /_sim/faults`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest delay a fault may inject.
pub const MAX_DELAY: Duration = Duration::from_secs(600);

/// One fault, as installed in process or through `/_sim/faults`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultSpec {
    FailTask {
        task_type: String,
        count: u32,
        #[serde(default)]
        exitstatus: Option<String>,
    },
    HangTask {
        task_type: String,
        count: u32,
    },
    HttpError {
        path_prefix: String,
        count: u32,
        status: u16,
        #[serde(default)]
        reason: Option<String>,
    },
    Delay {
        path_prefix: String,
        count: u32,
        delay_ms: u64,
    },
    Drop {
        path_prefix: String,
        count: u32,
    },
}

/// Why a fault cannot be installed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FaultError {
    #[error("Fault count must be at least 1")]
    ZeroCount,
    #[error("Injected HTTP status must be 5xx, got {0}")]
    NotServerError(u16),
    #[error("Injected delay must be at most {} seconds", MAX_DELAY.as_secs())]
    DelayTooLong,
    #[error("Reason phrase must be printable ASCII without line breaks")]
    BadReason,
}

/// What the HTTP layer must do for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFault {
    Error { status: u16, reason: String },
    Delay(Duration),
    Drop,
}

/// The installed faults (cheap to clone; shared).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<Vec<FaultSpec>>>,
}

impl Faults {
    /// Installs a fault.
    pub fn add(&self, spec: FaultSpec) -> Result<(), FaultError> {
        let count = match &spec {
            FaultSpec::FailTask { count, .. }
            | FaultSpec::HangTask { count, .. }
            | FaultSpec::Drop { count, .. } => *count,
            FaultSpec::HttpError {
                count,
                status,
                reason,
                ..
            } => {
                if !(500..=599).contains(status) {
                    return Err(FaultError::NotServerError(*status));
                }
                if let Some(r) = reason
                    && !r.bytes().all(|b| (0x20..0x7f).contains(&b))
                {
                    return Err(FaultError::BadReason);
                }
                *count
            }
            FaultSpec::Delay {
                count, delay_ms, ..
            } => {
                if Duration::from_millis(*delay_ms) > MAX_DELAY {
                    return Err(FaultError::DelayTooLong);
                }
                *count
            }
        };
        if count == 0 {
            return Err(FaultError::ZeroCount);
        }
        self.list().push(spec);
        Ok(())
    }

    /// Makes the next `count` tasks of `task_type` fail (default exit status when `None`).
    ///
    /// # Panics
    /// When the fault is invalid (see [`Faults::add`]); these helpers are for tests.
    pub fn fail_next_tasks(&self, task_type: &str, count: u32, exitstatus: Option<&str>) {
        self.add_checked(FaultSpec::FailTask {
            task_type: task_type.to_owned(),
            count,
            exitstatus: exitstatus.map(str::to_owned),
        });
    }

    /// Makes the next `count` tasks of `task_type` never finish.
    ///
    /// # Panics
    /// When the fault is invalid (see [`Faults::add`]); these helpers are for tests.
    pub fn hang_next_tasks(&self, task_type: &str, count: u32) {
        self.add_checked(FaultSpec::HangTask {
            task_type: task_type.to_owned(),
            count,
        });
    }

    /// Answers the next `count` requests under `path_prefix` with `status` (5xx).
    ///
    /// # Panics
    /// When the fault is invalid (see [`Faults::add`]); these helpers are for tests.
    pub fn http_error(&self, path_prefix: &str, count: u32, status: u16, reason: Option<&str>) {
        self.add_checked(FaultSpec::HttpError {
            path_prefix: path_prefix.to_owned(),
            count,
            status,
            reason: reason.map(str::to_owned),
        });
    }

    /// Delays the next `count` answers under `path_prefix`.
    ///
    /// # Panics
    /// When the fault is invalid (see [`Faults::add`]); these helpers are for tests.
    pub fn delay(&self, path_prefix: &str, count: u32, delay: Duration) {
        self.add_checked(FaultSpec::Delay {
            path_prefix: path_prefix.to_owned(),
            count,
            delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
        });
    }

    /// Closes the connection without answering for the next `count` requests under the prefix.
    ///
    /// # Panics
    /// When the fault is invalid (see [`Faults::add`]); these helpers are for tests.
    pub fn drop_connections(&self, path_prefix: &str, count: u32) {
        self.add_checked(FaultSpec::Drop {
            path_prefix: path_prefix.to_owned(),
            count,
        });
    }

    /// Removes every fault.
    pub fn clear(&self) {
        self.list().clear();
    }

    /// The installed faults with their remaining counts.
    pub fn snapshot(&self) -> Vec<FaultSpec> {
        self.list().clone()
    }

    /// The convenience methods above are for tests: an invalid fault (count 0, non-5xx status,
    /// over-long delay) is a bug in the test, so they panic with the reason instead of
    /// returning an error the test would have to unwrap anyway. Use [`Faults::add`] for a
    /// `Result`.
    fn add_checked(&self, spec: FaultSpec) {
        if let Err(e) = self.add(spec) {
            panic!("invalid fault injected by a test: {e}");
        }
    }

    /// The request-level fault for `path`, consuming one use.
    pub(crate) fn take_request(&self, path: &str) -> Option<RequestFault> {
        let mut list = self.list();
        let idx = list.iter().position(|f| match f {
            FaultSpec::HttpError { path_prefix, .. }
            | FaultSpec::Delay { path_prefix, .. }
            | FaultSpec::Drop { path_prefix, .. } => path.starts_with(path_prefix.as_str()),
            FaultSpec::FailTask { .. } | FaultSpec::HangTask { .. } => false,
        })?;
        let out = match &list[idx] {
            FaultSpec::HttpError { status, reason, .. } => RequestFault::Error {
                status: *status,
                reason: reason.clone().unwrap_or_else(|| default_reason(*status)),
            },
            FaultSpec::Delay { delay_ms, .. } => {
                RequestFault::Delay(Duration::from_millis(*delay_ms))
            }
            FaultSpec::Drop { .. } => RequestFault::Drop,
            FaultSpec::FailTask { .. } | FaultSpec::HangTask { .. } => return None,
        };
        consume(&mut list, idx);
        Some(out)
    }

    /// `Some(exitstatus override)` when the next task of `kind` must fail.
    pub(crate) fn take_task_failure(&self, kind: &str) -> Option<Option<String>> {
        let mut list = self.list();
        let idx = list.iter().position(
            |f| matches!(f, FaultSpec::FailTask { task_type, .. } if task_type == kind),
        )?;
        let status = match &list[idx] {
            FaultSpec::FailTask { exitstatus, .. } => exitstatus.clone(),
            FaultSpec::HangTask { .. }
            | FaultSpec::HttpError { .. }
            | FaultSpec::Delay { .. }
            | FaultSpec::Drop { .. } => None,
        };
        consume(&mut list, idx);
        Some(status)
    }

    /// True when the next task of `kind` must never finish.
    pub(crate) fn take_hang(&self, kind: &str) -> bool {
        let mut list = self.list();
        let Some(idx) = list
            .iter()
            .position(|f| matches!(f, FaultSpec::HangTask { task_type, .. } if task_type == kind))
        else {
            return false;
        };
        consume(&mut list, idx);
        true
    }

    fn list(&self) -> std::sync::MutexGuard<'_, Vec<FaultSpec>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn consume(list: &mut Vec<FaultSpec>, idx: usize) {
    let count = match &mut list[idx] {
        FaultSpec::FailTask { count, .. }
        | FaultSpec::HangTask { count, .. }
        | FaultSpec::HttpError { count, .. }
        | FaultSpec::Delay { count, .. }
        | FaultSpec::Drop { count, .. } => count,
    };
    *count = count.saturating_sub(1);
    if *count == 0 {
        list.remove(idx);
    }
}

/// Reason phrases pveproxy really uses for these codes (596 is pveproxy's own
/// "Connection timed out" when proxying to a node fails).
fn default_reason(status: u16) -> String {
    match status {
        500 => "Internal Server Error".to_owned(),
        501 => "Not Implemented".to_owned(),
        502 => "Bad Gateway".to_owned(),
        503 => "Service Unavailable".to_owned(),
        504 => "Gateway Timeout".to_owned(),
        595 => "Errors during connection establishment, proxy handshake".to_owned(),
        596 => "Connection timed out".to_owned(),
        other => format!("Server Error {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_fault_clears_itself_after_count() {
        let f = Faults::default();
        f.drop_connections("/nodes", 1);
        assert_eq!(f.take_request("/nodes/pve1"), Some(RequestFault::Drop));
        assert_eq!(f.take_request("/nodes/pve1"), None);
    }

    #[test]
    fn non_5xx_is_refused() {
        let f = Faults::default();
        let err = f
            .add(FaultSpec::HttpError {
                path_prefix: "/".into(),
                count: 1,
                status: 404,
                reason: None,
            })
            .unwrap_err();
        assert_eq!(err, FaultError::NotServerError(404));
    }
}
