//! Journal writes made off the async runtime, each counted for the failpoint.

use super::JournaledError;
use super::failpoint::journal_written;
use crate::infra::pve::Upid;
use crate::infra::state::{NewOperation, Operation, OperationId, Resource, StateDb, StepRef};

/// The journal calls an operation and recovery make.
#[derive(Debug, Clone)]
pub struct JournalWriter {
    db: StateDb,
}

macro_rules! write_call {
    ($self:ident, |$j:ident| $body:expr) => {{
        let r = $self
            .db
            .run(move |db| {
                let $j = db.journal();
                $body
            })
            .await;
        if r.is_ok() {
            journal_written();
        }
        r.map_err(JournaledError::from)
    }};
}

impl JournalWriter {
    pub fn new(db: StateDb) -> Self {
        Self { db }
    }

    /// Begins an operation on `vmid`, refused while an earlier one on it is unfinished: its
    /// compensation could otherwise reach the new operation's guest.
    pub async fn begin(
        &self,
        kind: &'static str,
        vmid: u32,
    ) -> Result<OperationId, JournaledError> {
        let unfinished = self.db.run(|db| db.journal().unfinished()).await?;
        if let Some(op) = unfinished.iter().find(|op| op.vmid == Some(vmid)) {
            return Err(JournaledError::Held {
                vmid,
                operation: op.id,
            });
        }
        write_call!(self, |j| j.begin(NewOperation {
            kind,
            vmid: Some(vmid),
            idempotency_key: None,
        }))
    }

    pub async fn step_started(
        &self,
        op: OperationId,
        name: &'static str,
    ) -> Result<StepRef, JournaledError> {
        write_call!(self, |j| j.step_started(op, name, None))
    }

    pub async fn record_upid(&self, step: StepRef, upid: &Upid) -> Result<(), JournaledError> {
        let upid = upid.as_str().to_owned();
        write_call!(self, |j| j.record_upid(step, &upid))
    }

    pub async fn record_created(&self, step: StepRef, r: Resource) -> Result<(), JournaledError> {
        write_call!(self, |j| j.record_created(step, &r))
    }

    pub async fn step_done(&self, step: StepRef) -> Result<(), JournaledError> {
        write_call!(self, |j| j.step_done(step))
    }

    pub async fn step_failed(&self, step: StepRef, error: String) -> Result<(), JournaledError> {
        write_call!(self, |j| j.step_failed(step, &error))
    }

    pub async fn begin_compensation(
        &self,
        op: OperationId,
        reason: String,
    ) -> Result<(), JournaledError> {
        write_call!(self, |j| j.begin_compensation(op, &reason))
    }

    pub async fn record_removed(&self, op: OperationId, r: Resource) -> Result<(), JournaledError> {
        write_call!(self, |j| j.record_removed(op, &r))
    }

    pub async fn mark_completed(&self, op: OperationId) -> Result<(), JournaledError> {
        write_call!(self, |j| j.mark_completed(op))
    }

    pub async fn mark_compensated(&self, op: OperationId) -> Result<(), JournaledError> {
        write_call!(self, |j| j.mark_compensated(op))
    }

    pub async fn mark_failed(&self, op: OperationId, error: String) -> Result<(), JournaledError> {
        write_call!(self, |j| j.mark_failed(op, &error))
    }

    pub async fn get(&self, op: OperationId) -> Result<Option<Operation>, JournaledError> {
        Ok(self.db.run(move |db| db.journal().get(op)).await?)
    }
}
