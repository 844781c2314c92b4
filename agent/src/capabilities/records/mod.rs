//! Records: the audit log (append, tail, verify the hash chain), the job history and the
//! operation journal as operators read them.

use crate::core::{Actor, InvalidValue, Vmid};
use crate::infra::state::{
    AuditEntry, AuditError, ChainSummary, JobRecord, JobsError, JournalError, NewAuditEntry,
    Operation, StateDb,
};

/// Default and maximum row counts of list calls.
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 1000;

/// Rows a list call returns: `0` asks for the default, anything above the maximum is capped.
pub fn row_limit(requested: u32) -> u32 {
    match requested {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error("vmid: {0}")]
    Invalid(InvalidValue),
    #[error("Cannot read the job history")]
    Jobs(#[source] JobsError),
    #[error("Cannot read the operation journal")]
    Journal(#[source] JournalError),
    #[error("Cannot read the audit log")]
    Audit(#[source] AuditError),
}

/// The audit chain as checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainCheck {
    Intact(ChainSummary),
    /// A row was altered, unlinked or removed; the text names it.
    Broken(String),
}

/// The records capability.
#[derive(Debug, Clone)]
pub struct Records {
    db: StateDb,
}

impl Records {
    pub fn new(db: StateDb) -> Self {
        Self { db }
    }

    /// Appends an audit row. A failed append is logged, not returned: the change it records
    /// has already happened.
    pub async fn audit(&self, actor: Actor, action: &'static str, target: String, detail: String) {
        let actor = actor.to_string();
        let result = self
            .db
            .run(move |db| {
                db.audit().append(NewAuditEntry {
                    actor: &actor,
                    action,
                    target: &target,
                    detail: &detail,
                })
            })
            .await;
        if let Err(e) = result {
            tracing::error!(action, error = %crate::core::error_chain(&e), "cannot append to the audit log");
        }
    }

    /// Newest jobs, of one guest or all.
    /// (`vmid` `0`: every guest's.)
    pub async fn jobs(&self, vmid: u32, limit: u32) -> Result<Vec<JobRecord>, RecordsError> {
        let guest = match vmid {
            0 => None,
            v => Some(Vmid::new(v).map_err(RecordsError::Invalid)?),
        };
        let n = row_limit(limit);
        self.db
            .run(move |db| match guest {
                Some(v) => db.jobs().list_for_vmid(v.get(), n),
                None => db.jobs().recent(n),
            })
            .await
            .map_err(RecordsError::Jobs)
    }

    /// Journaled operations: the unfinished ones, or the newest.
    pub async fn operations(
        &self,
        unfinished_only: bool,
        limit: u32,
    ) -> Result<Vec<Operation>, RecordsError> {
        let n = row_limit(limit);
        self.db
            .run(move |db| {
                if unfinished_only {
                    db.journal().unfinished()
                } else {
                    db.journal().recent(n)
                }
            })
            .await
            .map_err(RecordsError::Journal)
    }

    /// Records that the local API's certificate was replaced (the gateway, a front end, does
    /// the rotation itself).
    pub async fn certificate_rotated(&self, actor: Actor, leaf_sha256_hex: &str) {
        self.audit(
            actor,
            "local_api.rotate_certificate",
            "local-api".to_owned(),
            format!("new leaf sha256 {leaf_sha256_hex}"),
        )
        .await;
    }

    /// Newest audit rows.
    pub async fn audit_tail(&self, limit: u32) -> Result<Vec<AuditEntry>, RecordsError> {
        let n = row_limit(limit);
        self.db
            .run(move |db| db.audit().tail(n))
            .await
            .map_err(RecordsError::Audit)
    }

    /// Walks the whole hash chain.
    pub async fn audit_verify(&self) -> Result<ChainCheck, RecordsError> {
        match self.db.run(|db| db.audit().verify()).await {
            Ok(summary) => Ok(ChainCheck::Intact(summary)),
            Err(
                e @ (AuditError::Altered { .. }
                | AuditError::BrokenLink { .. }
                | AuditError::Missing { .. }),
            ) => Ok(ChainCheck::Broken(e.to_string())),
            Err(
                e @ (AuditError::Sqlite(_)
                | AuditError::Interrupted(_)
                | AuditError::InvalidField(_)),
            ) => Err(RecordsError::Audit(e)),
        }
    }
}
