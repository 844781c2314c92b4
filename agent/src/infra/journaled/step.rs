//! One journaled step.

use std::future::Future;

use tokio_util::sync::CancellationToken;

use super::{JournalWriter, JournaledError};
use crate::core::error_chain;
use crate::infra::pve::{PveClient, Upid, WaitOptions};
use crate::infra::state::{OperationId, StepRef};

/// Runs one journaled step: `f` gets the step and returns the task to wait for, if any. The
/// step's error type is the caller's (any error the engine's own failures convert into), so a
/// capability keeps its typed errors through the engine.
pub async fn step<E, F, Fut>(
    journal: &JournalWriter,
    pve: &PveClient,
    wait: &WaitOptions,
    cancel: &CancellationToken,
    op: OperationId,
    name: &'static str,
    f: F,
) -> Result<(), E>
where
    E: From<JournaledError> + std::error::Error,
    F: FnOnce(StepRef) -> Fut,
    Fut: Future<Output = Result<Option<Upid>, E>>,
{
    // Nothing new starts once the agent is shutting down.
    if cancel.is_cancelled() {
        return Err(JournaledError::Interrupted.into());
    }
    let s = journal.step_started(op, name).await?;
    let result: Result<(), E> = async {
        if let Some(upid) = f(s).await? {
            journal.record_upid(s, &upid).await?;
            pve.wait_task(&upid, wait, cancel)
                .await
                .map_err(JournaledError::pve(name))?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => Ok(journal.step_done(s).await?),
        Err(e) => {
            journal.step_failed(s, error_chain(&e)).await?;
            Err(e)
        }
    }
}
