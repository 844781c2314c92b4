//! Creating guests the journaled way, and removing what an operation created.

use tokio_util::sync::CancellationToken;

use super::{GuestMarker, JournalWriter, JournaledError, step};
use crate::core::Vmid;
use crate::infra::pve::{
    DestroyOptions, PveClient, PveError, RestoreRequest, TaskFilter, TaskSource, Upid, WaitOptions,
};
use crate::infra::state::{JournalError, OperationId, Resource, StepRef};

/// A restore of `archive` into a new guest `vmid`, not started, with new MACs (`unique=1`).
pub fn new_guest_restore(vmid: Vmid, archive: &str, storage: &str) -> RestoreRequest {
    RestoreRequest {
        vmid,
        archive: archive.to_owned(),
        storage: storage.to_owned(),
        force: false,
        unique: true,
        start: false,
        hostname: None,
        memory_mib: None,
        cores: None,
        onboot: None,
        tags: None,
        protection: None,
    }
}

/// The body of a `restore` step: refuses an existing vmid, records the guest as created
/// *before* the restore POST (so a crash cannot orphan it) with a fresh [`GuestMarker`] that
/// the POST adds to the guest's tags, and un-records it when Proxmox refused the request
/// outright (nothing was created). Never overwrites (`force` is refused).
pub async fn restore_new_guest(
    pve: &PveClient,
    journal: &JournalWriter,
    s: StepRef,
    restore: &RestoreRequest,
) -> Result<Option<Upid>, JournaledError> {
    if restore.force {
        return Err(JournaledError::Refused(
            "a new guest's restore must not overwrite (force)".into(),
        ));
    }
    let op = s.operation;
    let vmid = restore.vmid;
    match pve.lxc_status(vmid).await {
        Err(PveError::GuestNotFound { .. }) => {}
        Ok(_) => return Err(JournaledError::AlreadyExists(vmid.get())),
        Err(e) => return Err(JournaledError::pve("restore")(e)),
    }
    let marker = GuestMarker::random();
    let mut restore = restore.clone();
    restore.tags = Some(marker.add_to(restore.tags.as_deref()));
    let guest = Resource::Guest {
        vmid: vmid.get(),
        marker: Some(marker.as_str().to_owned()),
    };
    journal.record_created(s, guest.clone()).await?;
    match pve.restore_lxc(&restore).await {
        Ok(upid) => Ok(Some(upid)),
        // Proxmox refused the request itself: nothing was created.
        Err(
            e @ (PveError::Rejected { .. }
            | PveError::InvalidRequest(_)
            | PveError::Permission { .. }
            | PveError::Unauthorized { .. }),
        ) => {
            journal.record_removed(op, guest).await?;
            Err(JournaledError::pve("restore")(e))
        }
        // pve-container's create_vm dies synchronously (HTTP 500) with `CT <vmid> already
        // exists on node '<node>'` (check_vmid_unused) when someone else created the vmid
        // after our check: that guest is not ours.
        Err(e @ PveError::Server { .. }) if e.to_string().contains("already exists") => {
            journal.record_removed(op, guest).await?;
            Err(JournaledError::pve("restore")(e))
        }
        Err(e) => Err(JournaledError::pve("restore")(e)),
    }
}

/// Destroys what `op` recorded as created and still exists, then marks it compensated.
/// `reason` is `Some` when the operation is still `running` and must enter compensation.
/// `cancel` (agent shutdown) ends the task waits; the operation then stays in compensation
/// for the next attempt.
pub async fn compensate(
    pve: &PveClient,
    journal: &JournalWriter,
    wait: &WaitOptions,
    op: OperationId,
    reason: Option<String>,
    cancel: &CancellationToken,
) -> Result<(), JournaledError> {
    if let Some(reason) = reason {
        journal.begin_compensation(op, reason).await?;
    }
    let record = journal
        .get(op)
        .await?
        .ok_or(JournaledError::Journal(JournalError::UnknownOperation(op)))?;
    let remaining: Vec<(Resource, u32)> = record
        .resources
        .iter()
        .filter(|r| r.removed_at.is_none())
        .map(|r| (r.resource.clone(), r.step))
        .collect();
    for (resource, created_by) in remaining {
        match &resource {
            Resource::Guest { vmid, marker } => {
                let vmid =
                    Vmid::new(*vmid).map_err(|e| JournaledError::pve("compensate")(e.into()))?;
                // A guest is recorded before the POST that creates it. Without the task's UPID
                // (a crash or an ambiguous failure right around the POST) it is ours only if
                // Proxmox shows a task of ours that created it.
                let unproven = record
                    .steps
                    .iter()
                    .find(|s| s.index == created_by && s.upid.is_none());
                if let Some(s) = unproven
                    && !created_by_us(pve, wait, cancel, vmid, s).await?
                {
                    tracing::warn!(operation = %op, %vmid, step = %s.name,
                        "compensation: no task of this agent created the guest; left alone");
                    journal.record_removed(op, resource.clone()).await?;
                    continue;
                }
                match remove_guest(pve, journal, wait, cancel, op, vmid, marker.as_deref()).await? {
                    Removal::Removed => {
                        tracing::info!(operation = %op, %vmid, "compensation: guest removed");
                    }
                    Removal::Gone => {}
                    Removal::NotOurs => {
                        tracing::warn!(operation = %op, %vmid,
                            "compensation: the guest on this vmid does not carry this operation's marker; left alone");
                    }
                }
                journal.record_removed(op, resource.clone()).await?;
            }
            Resource::Snapshot { .. }
            | Resource::Volume { .. }
            | Resource::BackupArchive { .. } => {
                // Operations create only guests so far; a record of anything else cannot be
                // undone here and is left for an operator.
                let e = JournaledError::NotRemovable(resource.to_string());
                journal.mark_failed(op, e.to_string()).await?;
                return Err(e);
            }
        }
    }
    journal.mark_compensated(op).await?;
    Ok(())
}

/// Task types that create a guest, by the step that records it.
fn creating_task_type(step: &str) -> Option<&'static str> {
    match step {
        "restore" => Some("vzrestore"),
        _ => None,
    }
}

/// Whether the task `step` POSTed ran: a task of this agent's token that creates a guest,
/// for `vmid`, started between the step's start and the latest moment its POST could have
/// been answered (so a later operation's task on a reused vmid never counts). Waits for such
/// a task still running, so its lock is gone before a destroy. When none is listed but the
/// guest is locked `create`, a create is under way whose task may not be listed yet: that is
/// an error, and compensation is tried again later instead of deciding now.
async fn created_by_us(
    pve: &PveClient,
    wait: &WaitOptions,
    cancel: &CancellationToken,
    vmid: Vmid,
    step: &crate::infra::state::Step,
) -> Result<bool, JournaledError> {
    let Some(task_type) = creating_task_type(&step.name) else {
        // Not a creating step: nothing to check it against, so keep the record's word.
        return Ok(true);
    };
    // Same host, same clock; a little slack for the second boundaries.
    let began = step.started_at.unix_millis().div_euclid(1000);
    let since = u64::try_from(began - 2).unwrap_or(0);
    let until = u64::try_from(began).unwrap_or(0) + pve.request_timeout().as_secs() + 5;
    let tasks = pve
        .tasks(&TaskFilter {
            vmid: Some(vmid),
            typefilter: Some(task_type.to_owned()),
            source: Some(TaskSource::All),
            since: Some(since),
            until: Some(until),
            // Proxmox lists a token's tasks under its user (`tokenid` apart); the UPID names
            // the token itself.
            userfilter: Some(user_of(pve.authid()).to_owned()),
            ..TaskFilter::default()
        })
        .await
        .map_err(JournaledError::pve("compensate"))?;
    let ours: Vec<_> = tasks
        .into_iter()
        .filter(|t| t.upid.authid() == pve.authid() && t.starttime <= until)
        .collect();
    for t in ours.iter().filter(|t| t.endtime.is_none()) {
        tracing::info!(%vmid, upid = %t.upid, "compensation: waiting for the task that created the guest");
        match pve.wait_task(&t.upid, wait, cancel).await {
            Ok(_) | Err(PveError::TaskFailed(_)) => {}
            Err(PveError::Cancelled { .. }) => return Err(JournaledError::Interrupted),
            Err(e) => return Err(JournaledError::pve("compensate")(e)),
        }
    }
    if !ours.is_empty() {
        return Ok(true);
    }
    match pve.lxc_status(vmid).await {
        Ok(status) if status.lock.as_deref() == Some("create") => {
            Err(JournaledError::Undecided(vmid.get()))
        }
        Ok(_) | Err(PveError::GuestNotFound { .. }) => Ok(false),
        Err(e) => Err(JournaledError::pve("compensate")(e)),
    }
}

/// `user@realm` of an authid (`user@realm!token`).
fn user_of(authid: &str) -> &str {
    authid.split_once('!').map_or(authid, |(user, _)| user)
}

/// What [`remove_guest`] found.
enum Removal {
    Removed,
    /// Nothing on the vmid any more.
    Gone,
    /// A guest without this operation's marker: someone else's, left alone.
    NotOurs,
}

/// Stops (if running) and destroys the guest this operation created, identified by its
/// `marker` tag; a guest without it (or a record without a marker) is not touched.
async fn remove_guest(
    pve: &PveClient,
    journal: &JournalWriter,
    wait: &WaitOptions,
    cancel: &CancellationToken,
    op: OperationId,
    vmid: Vmid,
    marker: Option<&str>,
) -> Result<Removal, JournaledError> {
    let config = match pve.lxc_config(vmid).await {
        Ok(c) => c,
        Err(PveError::GuestNotFound { .. }) => return Ok(Removal::Gone),
        Err(e) => return Err(JournaledError::pve("compensate")(e)),
    };
    if !marker.is_some_and(|m| config.tags.iter().any(|t| t == m)) {
        return Ok(Removal::NotOurs);
    }
    let status = match pve.lxc_status(vmid).await {
        Ok(s) => s,
        Err(PveError::GuestNotFound { .. }) => return Ok(Removal::Gone),
        Err(e) => return Err(JournaledError::pve("compensate")(e)),
    };
    if status.status == "running" {
        step::<JournaledError, _, _>(
            journal,
            pve,
            wait,
            cancel,
            op,
            "undo: stop",
            |_| async move {
                Ok(Some(
                    pve.stop(vmid)
                        .await
                        .map_err(JournaledError::pve("undo: stop"))?,
                ))
            },
        )
        .await?;
    }
    step::<JournaledError, _, _>(
        journal,
        pve,
        wait,
        cancel,
        op,
        "undo: destroy",
        |_| async move {
            match pve
                .destroy(
                    vmid,
                    // Not `destroy-unreferenced-disks`: it removes every `vm-<vmid>-disk-*`
                    // volume on every storage, which on a reused vmid may be someone else's.
                    // A restore Proxmox finished references all the volumes it made.
                    DestroyOptions {
                        purge: true,
                        destroy_unreferenced_disks: false,
                        force: false,
                    },
                )
                .await
            {
                Ok(upid) => Ok(Some(upid)),
                Err(PveError::GuestNotFound { .. }) => Ok(None),
                Err(e) => Err(JournaledError::pve("undo: destroy")(e)),
            }
        },
    )
    .await?;
    Ok(Removal::Removed)
}
