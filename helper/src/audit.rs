//! The audit trail: one structured line per call (and per refused connection).
//!
//! Every line goes to the log (`tracing`, target `felhom_helper::audit`) and, if configured,
//! is appended to the audit file (mode 0600). A line names the caller's uid and pid (from
//! the kernel, never from the request), the operation, the *validated* arguments (raw
//! rejected input is never echoed: only the name of the field that failed), the outcome and
//! the duration. Values are written with `{:?}` so no field can inject a line break.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::caller::Caller;

/// The audit sink.
#[derive(Debug)]
pub struct Audit {
    file: Option<Mutex<File>>,
}

/// Outcome of one call.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The operation succeeded.
    Ok,
    /// The caller was refused by peer credentials.
    Denied,
    /// A field failed validation (only the field name is recorded).
    Invalid(&'static str),
    /// The operation ran and failed; the message is the helper's own error text.
    Failed(String),
}

impl Audit {
    /// Opens the audit file for appending (created 0600), or logs only.
    pub fn open(path: Option<&Path>) -> std::io::Result<Self> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(p)?,
            )),
            None => None,
        };
        Ok(Self { file })
    }

    /// Records one event.
    pub fn record(
        &self,
        caller: &Caller,
        op: &str,
        args: &str,
        outcome: &Outcome,
        duration: Duration,
    ) {
        let pid = caller
            .pid
            .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        let (outcome_word, detail) = match outcome {
            Outcome::Ok => ("ok", String::new()),
            Outcome::Denied => ("denied", String::new()),
            Outcome::Invalid(field) => ("invalid", format!("field={field}")),
            Outcome::Failed(msg) => ("failed", format!("error={msg:?}")),
        };
        let ms = duration.as_millis();
        tracing::info!(
            target: "felhom_helper::audit",
            uid = caller.uid,
            pid = %pid,
            op,
            args,
            outcome = outcome_word,
            detail = %detail,
            duration_ms = ms as u64,
            "audit"
        );
        if let Some(file) = &self.file {
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let line = format!(
                "ts={ts} uid={} pid={pid} op={op} args={args:?} outcome={outcome_word} {detail} duration_ms={ms}\n",
                caller.uid
            );
            // A poisoned lock only means another writer panicked mid-line; keep auditing.
            let mut f = file
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Err(e) = f.write_all(line.as_bytes()) {
                tracing::error!(error = %e, "cannot append to the audit file");
            }
        }
    }
}
