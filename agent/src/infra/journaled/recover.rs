//! Start-up recovery of unfinished operations.

use tokio_util::sync::CancellationToken;

use super::{JournalWriter, JournaledError, compensate};
use crate::core::{Vmid, error_chain};
use crate::infra::pve::{PveClient, PveError, TaskFilter, TaskSource, Upid, WaitOptions};
use crate::infra::state::{JournalError, Operation, OperationState, StateDb, StepRef, StepState};

/// Which operation kinds recovery may complete, by the step names that make them complete.
/// Kinds not listed (restore-tests: their end is always removal) are compensated.
#[derive(Debug, Clone, Copy)]
pub struct Plans(pub &'static [(&'static str, &'static [&'static str])]);

impl Plans {
    fn steps_of(&self, kind: &str) -> Option<&'static [&'static str]> {
        self.0.iter().find(|(k, _)| *k == kind).map(|(_, s)| *s)
    }
}

/// Resolves every unfinished operation a previous run left (see module docs). Errors of one
/// operation are logged and do not stop the others. `shutdown` ends the waits on Proxmox tasks
/// without recording anything, leaving what is left for the next start.
pub async fn recover(
    pve: Option<&PveClient>,
    db: &StateDb,
    wait: &WaitOptions,
    shutdown: &CancellationToken,
    plans: &Plans,
) {
    let journal = JournalWriter::new(db.clone());
    let ops = match db.run(|db| db.journal().unfinished()).await {
        Ok(ops) => ops,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "recovery: cannot read unfinished operations");
            return;
        }
    };
    for op in ops {
        if shutdown.is_cancelled() {
            tracing::info!(
                "recovery: stopped by agent shutdown; the rest is resumed at the next start"
            );
            return;
        }
        let Some(pve) = pve else {
            tracing::warn!(operation = %op.id, "recovery: Proxmox VE is not configured; left unfinished");
            continue;
        };
        match recover_one(pve, &journal, wait, &op, shutdown, plans).await {
            Ok(()) => {}
            Err(JournaledError::Interrupted) => {
                tracing::info!(operation = %op.id, "recovery: stopped by agent shutdown; resumed at the next start");
                return;
            }
            Err(e) => {
                tracing::error!(operation = %op.id, error = %error_chain(&e), "recovery failed; left for an operator");
            }
        }
    }
}

/// Resolves the unfinished operations of one `kind` the way start-up recovery does, for a
/// caller that knows none of them is still being worked on (the restore-test lock). Returns
/// how many were resolved and how many are still left (each logged).
pub async fn recover_kind(
    pve: &PveClient,
    db: &StateDb,
    wait: &WaitOptions,
    kind: &str,
    shutdown: &CancellationToken,
    plans: &Plans,
) -> Result<(usize, usize), JournaledError> {
    let journal = JournalWriter::new(db.clone());
    let ops = db.run(|db| db.journal().unfinished()).await?;
    let ops: Vec<&Operation> = ops.iter().filter(|op| op.kind == kind).collect();
    let mut resolved = 0;
    for op in &ops {
        if shutdown.is_cancelled() {
            break;
        }
        match recover_one(pve, &journal, wait, op, shutdown, plans).await {
            Ok(()) => resolved += 1,
            Err(JournaledError::Interrupted) => break,
            Err(e) => {
                tracing::warn!(operation = %op.id, kind, error = %error_chain(&e), "still cannot resolve an unfinished operation; trying again later");
            }
        }
    }
    Ok((resolved, ops.len() - resolved))
}

async fn recover_one(
    pve: &PveClient,
    journal: &JournalWriter,
    wait: &WaitOptions,
    op: &Operation,
    cancel: &CancellationToken,
    plans: &Plans,
) -> Result<(), JournaledError> {
    tracing::info!(operation = %op.id, kind = %op.kind, state = %op.state, "recovery: resolving");
    if let Some(s) = op.in_flight_step() {
        let step = StepRef {
            operation: op.id,
            index: s.index,
        };
        match s.upid.as_deref().map(str::parse::<Upid>) {
            Some(Ok(upid)) => {
                tracing::info!(operation = %op.id, step = %s.name, %upid, "recovery: re-attaching to the step's task");
                match pve.wait_task(&upid, wait, cancel).await {
                    Ok(_) => journal.step_done(step).await?,
                    // Our shutdown says nothing about the task: record nothing.
                    Err(PveError::Cancelled { .. }) => return Err(JournaledError::Interrupted),
                    Err(e) => journal.step_failed(step, error_chain(&e)).await?,
                }
            }
            Some(Err(_)) | None => {
                if let Some(vmid) = op.vmid.and_then(|v| Vmid::new(v).ok()) {
                    wait_guest_tasks(pve, wait, cancel, vmid).await?;
                }
                tracing::info!(operation = %op.id, step = %s.name, "recovery: step had no task recorded; counted as failed");
                journal
                    .step_failed(step, "interrupted by an agent restart".into())
                    .await?;
            }
        }
    } else if let Some(vmid) = op.vmid.and_then(|v| Vmid::new(v).ok()) {
        // A crash right after a POST (before its step was even recorded) is impossible here
        // (steps start before calls), but a task of this guest may still hold its lock.
        wait_guest_tasks(pve, wait, cancel, vmid).await?;
    }
    let record = journal.get(op.id).await?.ok_or(JournaledError::Journal(
        JournalError::UnknownOperation(op.id),
    ))?;
    match record.state {
        OperationState::Running => {
            if all_steps_done(&record, plans) {
                tracing::info!(operation = %op.id, "recovery: every step is done; completing");
                journal.mark_completed(op.id).await
            } else {
                tracing::info!(operation = %op.id, "recovery: steps remain; compensating");
                compensate(
                    pve,
                    journal,
                    wait,
                    op.id,
                    Some("interrupted by an agent restart".into()),
                    cancel,
                )
                .await
            }
        }
        OperationState::Compensating => {
            tracing::info!(operation = %op.id, "recovery: continuing compensation");
            compensate(pve, journal, wait, op.id, None, cancel).await
        }
        OperationState::Completed | OperationState::Compensated | OperationState::Failed => Ok(()),
    }
}

/// Whether an operation's full step list (by its kind's plan) is done; a kind without a plan
/// is never "done" by recovery and is always compensated.
fn all_steps_done(op: &Operation, plans: &Plans) -> bool {
    let Some(expected) = plans.steps_of(&op.kind) else {
        return false;
    };
    expected.iter().all(|name| {
        op.steps
            .iter()
            .any(|s| s.name == *name && s.state == StepState::Done)
    })
}

/// Waits for every running task of `vmid` (so its lock is released).
async fn wait_guest_tasks(
    pve: &PveClient,
    wait: &WaitOptions,
    cancel: &CancellationToken,
    vmid: Vmid,
) -> Result<(), JournaledError> {
    let tasks = pve
        .tasks(&TaskFilter {
            vmid: Some(vmid),
            // Proxmox lists only finished tasks by default.
            source: Some(TaskSource::Active),
            ..TaskFilter::default()
        })
        .await
        .map_err(JournaledError::pve("recovery"))?;
    // A running task has no end time (its status reads `RUNNING` in the active list).
    for t in tasks.into_iter().filter(|t| t.endtime.is_none()) {
        tracing::info!(%vmid, upid = %t.upid, "recovery: waiting for the guest's running task");
        match pve.wait_task(&t.upid, wait, cancel).await {
            Ok(_) => {}
            Err(PveError::Cancelled { .. }) => return Err(JournaledError::Interrupted),
            Err(e) => {
                tracing::info!(upid = %t.upid, error = %error_chain(&e), "recovery: task ended with an error");
            }
        }
    }
    Ok(())
}
