//! Journaled provisioning (front half): restore a guest from a backup archive, configure it,
//! grow its rootfs and optionally start it — each step journaled so a crash at any point is
//! either finished or rolled back by [`recover`] at the next start.
//!
//! Steps, in order: `restore` (the guest is recorded as created *before* the restore POST, with
//! `unique=1`, `force=0`, so a crash between Proxmox creating it and the journal noting the UPID
//! cannot orphan it), `configure` (hostname, memory, cores), `resize` (rootfs to an absolute
//! size; journaled even when skipped because the size already matches, so the step list of a
//! finished operation is always the same), and `start` (only when asked; the operation kind is
//! then [`KIND_START`] so recovery knows the full step list). Any failure compensates: the
//! operation destroys only what it recorded as created (stop if running, destroy with purge),
//! and the original error is returned.
//!
//! Recovery ([`recover`]) runs in the daemon *before* the gRPC socket is bound, so no
//! `ProvisionGuest` can start on a guest whose previous operation is still being resolved.
//! A vmid that already exists is refused before anything is journaled as created; a restore
//! POST that Proxmox rejects outright (4xx, or pve-container's synchronous `CT <vmid> already
//! exists on node '<node>'` 500 if another client won a race) is recorded as "not created"
//! without destroying anything. A restore whose UPID never made it into the journal (a crash
//! right around the POST, or an ambiguous failure: transport error, timeout, other 5xx) is
//! destroyed by compensation only if Proxmox lists a `vzrestore` task of this agent's token for
//! that vmid since the step began; otherwise whatever exists there is not ours and is left
//! alone. Limits: one node. Recovery runs before the socket is bound and before READY=1 / the
//! watchdog (extending systemd's start timeout meanwhile), so a Proxmox VE that is down delays
//! start-up by up to the task deadline per stuck task.
//!
//! Test hook: `FELHOM_AGENT_FAILPOINT=journal:<n>` makes the process SIGKILL itself right after
//! its n-th journal write of the run (writes made through [`JournalWriter`]). Only the crash
//! test sets it; unset, it does nothing.

use crate::core::error_chain;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use crate::infra::pve::{
    ConfigUpdate, DestroyOptions, PveClient, PveError, RestoreRequest, TaskFilter, TaskSource,
    Upid, Vmid, WaitOptions,
};
use crate::infra::state::{
    JournalError, NewOperation, Operation, OperationId, OperationState, Resource, StateDb, StepRef,
    StepState,
};

/// Operation kind of a provision that does not start the guest.
pub const KIND: &str = "provision";
/// Operation kind of a provision that starts the guest at the end.
pub const KIND_START: &str = "provision+start";

const FAILPOINT_ENV: &str = "FELHOM_AGENT_FAILPOINT";

/// What to provision.
#[derive(Debug, Clone)]
pub struct ProvisionRequest {
    /// `None`: the next free vmid.
    pub vmid: Option<Vmid>,
    /// Backup volid to restore from.
    pub archive: String,
    /// Target storage of the guest's volumes.
    pub storage: String,
    pub hostname: String,
    pub memory_mib: u64,
    pub cores: u32,
    /// Absolute rootfs size; must not be smaller than the archive's.
    pub rootfs_gib: u64,
    pub start: bool,
}

/// Why provisioning or recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("Invalid provision request: {0}")]
    Invalid(String),
    #[error("Guest {0} already exists")]
    AlreadyExists(u32),
    #[error("Step {step} failed")]
    Pve {
        step: &'static str,
        #[source]
        source: PveError,
    },
    #[error(
        "Requested rootfs size {requested} GiB is smaller than the current {current_bytes} bytes"
    )]
    Shrink { requested: u64, current_bytes: u64 },
    #[error("Cannot write the operation journal")]
    Journal(#[from] JournalError),
    #[error("Interrupted by agent shutdown; the operation is resumed at the next start")]
    Interrupted,
    #[error(
        "Guest {vmid} has an unfinished operation {operation}; it must be resolved first (at the next agent start, or by an operator)"
    )]
    Held { vmid: u32, operation: OperationId },
}

pub(crate) fn pve_err(step: &'static str) -> impl FnOnce(PveError) -> ProvisionError {
    move |source| ProvisionError::Pve { step, source }
}

impl ProvisionRequest {
    /// Checks what Proxmox would reject late, so no operation is journaled for it.
    pub fn validate(&self) -> Result<(), ProvisionError> {
        let bad = |m: String| Err(ProvisionError::Invalid(m));
        if self.archive.is_empty() {
            return bad("archive is empty".into());
        }
        crate::infra::pve::validate_storage_id(&self.storage)
            .map_err(|e| ProvisionError::Invalid(format!("storage: {e}")))?;
        let host_ok = !self.hostname.is_empty()
            && self.hostname.len() <= 63
            && self
                .hostname
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !self.hostname.starts_with('-');
        if !host_ok {
            return bad(format!("hostname {:?} is not a DNS label", self.hostname));
        }
        if self.memory_mib < 16 {
            return bad(format!("memory_mib {} is below 16", self.memory_mib));
        }
        if self.cores == 0 || self.cores > 8192 {
            return bad(format!("cores {} is not 1..8192", self.cores));
        }
        if self.rootfs_gib == 0 {
            return bad("rootfs_gib must be at least 1".into());
        }
        Ok(())
    }
}

/// Whether the failpoint fires after this many journal writes (test hook, see module docs).
fn failpoint_target() -> Option<u64> {
    static TARGET: OnceLock<Option<u64>> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let raw = std::env::var(FAILPOINT_ENV).ok()?;
        let n = raw.strip_prefix("journal:").and_then(|n| n.parse().ok());
        if n.is_none() {
            tracing::warn!(value = %raw, "ignoring malformed {FAILPOINT_ENV}");
        }
        n
    })
}

fn journal_written() {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let Some(target) = failpoint_target() else {
        return;
    };
    if WRITES.fetch_add(1, Ordering::SeqCst) + 1 == target {
        tracing::warn!(
            write = target,
            "failpoint: killing the agent after a journal write"
        );
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// The journal calls provisioning and recovery make, off the async runtime, each counted for
/// the failpoint.
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
        r.map_err(ProvisionError::from)
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
    ) -> Result<OperationId, ProvisionError> {
        let unfinished = self.db.run(|db| db.journal().unfinished()).await?;
        if let Some(op) = unfinished.iter().find(|op| op.vmid == Some(vmid)) {
            return Err(ProvisionError::Held {
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

    pub(crate) async fn step_started(
        &self,
        op: OperationId,
        name: &'static str,
    ) -> Result<StepRef, ProvisionError> {
        write_call!(self, |j| j.step_started(op, name, None))
    }

    pub(crate) async fn record_upid(
        &self,
        step: StepRef,
        upid: &Upid,
    ) -> Result<(), ProvisionError> {
        let upid = upid.as_str().to_owned();
        write_call!(self, |j| j.record_upid(step, &upid))
    }

    pub(crate) async fn record_created(
        &self,
        step: StepRef,
        r: Resource,
    ) -> Result<(), ProvisionError> {
        write_call!(self, |j| j.record_created(step, &r))
    }

    pub(crate) async fn step_done(&self, step: StepRef) -> Result<(), ProvisionError> {
        write_call!(self, |j| j.step_done(step))
    }

    pub(crate) async fn step_failed(
        &self,
        step: StepRef,
        error: String,
    ) -> Result<(), ProvisionError> {
        write_call!(self, |j| j.step_failed(step, &error))
    }

    pub(crate) async fn begin_compensation(
        &self,
        op: OperationId,
        reason: String,
    ) -> Result<(), ProvisionError> {
        write_call!(self, |j| j.begin_compensation(op, &reason))
    }

    pub(crate) async fn record_removed(
        &self,
        op: OperationId,
        r: Resource,
    ) -> Result<(), ProvisionError> {
        write_call!(self, |j| j.record_removed(op, &r))
    }

    pub(crate) async fn mark_completed(&self, op: OperationId) -> Result<(), ProvisionError> {
        write_call!(self, |j| j.mark_completed(op))
    }

    pub(crate) async fn mark_compensated(&self, op: OperationId) -> Result<(), ProvisionError> {
        write_call!(self, |j| j.mark_compensated(op))
    }

    pub(crate) async fn mark_failed(
        &self,
        op: OperationId,
        error: String,
    ) -> Result<(), ProvisionError> {
        write_call!(self, |j| j.mark_failed(op, &error))
    }

    pub(crate) async fn get(&self, op: OperationId) -> Result<Option<Operation>, ProvisionError> {
        Ok(self.db.run(move |db| db.journal().get(op)).await?)
    }
}

/// Runs the steps of a begun operation, compensating on failure.
pub async fn run(
    pve: &PveClient,
    journal: &JournalWriter,
    wait: &WaitOptions,
    op: OperationId,
    vmid: Vmid,
    req: &ProvisionRequest,
) -> Result<(), ProvisionError> {
    let cancel = CancellationToken::new();
    match steps(pve, journal, wait, &cancel, op, vmid, req).await {
        Ok(()) => {
            journal.mark_completed(op).await?;
            tracing::info!(operation = %op, %vmid, "provisioning completed");
            Ok(())
        }
        Err(e) => {
            let reason = error_chain(&e);
            tracing::warn!(operation = %op, %vmid, error = %reason, "provisioning failed; compensating");
            if let Err(ce) = compensate(pve, journal, wait, op, Some(reason), &cancel).await {
                tracing::error!(operation = %op, error = %error_chain(&ce), "compensation failed");
            }
            Err(e)
        }
    }
}

/// Runs one journaled step: `f` gets the step and returns the task to wait for, if any.
pub(crate) async fn step<F, Fut>(
    journal: &JournalWriter,
    pve: &PveClient,
    wait: &WaitOptions,
    cancel: &CancellationToken,
    op: OperationId,
    name: &'static str,
    f: F,
) -> Result<(), ProvisionError>
where
    F: FnOnce(StepRef) -> Fut,
    Fut: Future<Output = Result<Option<Upid>, ProvisionError>>,
{
    // Nothing new starts once the agent is shutting down.
    if cancel.is_cancelled() {
        return Err(ProvisionError::Interrupted);
    }
    let s = journal.step_started(op, name).await?;
    let result = async {
        if let Some(upid) = f(s).await? {
            journal.record_upid(s, &upid).await?;
            pve.wait_task(&upid, wait, cancel)
                .await
                .map_err(pve_err(name))?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => journal.step_done(s).await,
        Err(e) => {
            journal.step_failed(s, error_chain(&e)).await?;
            Err(e)
        }
    }
}

async fn steps(
    pve: &PveClient,
    journal: &JournalWriter,
    wait: &WaitOptions,
    cancel: &CancellationToken,
    op: OperationId,
    vmid: Vmid,
    req: &ProvisionRequest,
) -> Result<(), ProvisionError> {
    let restore = new_guest_restore(vmid, &req.archive, &req.storage);
    step(journal, pve, wait, cancel, op, "restore", |s| {
        restore_new_guest(pve, journal, s, &restore)
    })
    .await?;
    step(
        journal,
        pve,
        wait,
        cancel,
        op,
        "configure",
        |_| async move {
            let mut update = ConfigUpdate::default();
            update.set.insert("hostname".into(), req.hostname.clone());
            update
                .set
                .insert("memory".into(), req.memory_mib.to_string());
            update.set.insert("cores".into(), req.cores.to_string());
            pve.set_config(vmid, &update)
                .await
                .map_err(pve_err("configure"))?;
            Ok(None)
        },
    )
    .await?;
    step(journal, pve, wait, cancel, op, "resize", |_| async move {
        let config = pve.lxc_config(vmid).await.map_err(pve_err("resize"))?;
        let current = config.rootfs.as_deref().and_then(rootfs_size_bytes);
        let wanted = req.rootfs_gib.saturating_mul(1 << 30);
        match current {
            Some(c) if c == wanted => return Ok(None),
            Some(c) if c > wanted => {
                return Err(ProvisionError::Shrink {
                    requested: req.rootfs_gib,
                    current_bytes: c,
                });
            }
            Some(_) | None => {}
        }
        let upid = pve
            .resize(vmid, "rootfs", &format!("{}G", req.rootfs_gib))
            .await
            .map_err(pve_err("resize"))?;
        Ok(Some(upid))
    })
    .await?;
    if req.start {
        step(journal, pve, wait, cancel, op, "start", |_| async move {
            Ok(Some(pve.start(vmid).await.map_err(pve_err("start"))?))
        })
        .await?;
    }
    Ok(())
}

/// A restore of `archive` into a new guest `vmid`, not started, with new MACs (`unique=1`).
pub(crate) fn new_guest_restore(vmid: Vmid, archive: &str, storage: &str) -> RestoreRequest {
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
/// *before* the restore POST (so a crash cannot orphan it), and un-records it when Proxmox
/// refused the request outright (nothing was created). Never overwrites (`force` is refused).
pub(crate) async fn restore_new_guest(
    pve: &PveClient,
    journal: &JournalWriter,
    s: StepRef,
    restore: &RestoreRequest,
) -> Result<Option<Upid>, ProvisionError> {
    if restore.force {
        return Err(ProvisionError::Invalid(
            "a new guest's restore must not overwrite (force)".into(),
        ));
    }
    let op = s.operation;
    let vmid = restore.vmid;
    match pve.lxc_status(vmid).await {
        Err(PveError::GuestNotFound { .. }) => {}
        Ok(_) => return Err(ProvisionError::AlreadyExists(vmid.get())),
        Err(e) => return Err(pve_err("restore")(e)),
    }
    let guest = Resource::Guest { vmid: vmid.get() };
    journal.record_created(s, guest.clone()).await?;
    match pve.restore_lxc(restore).await {
        Ok(upid) => Ok(Some(upid)),
        // Proxmox refused the request itself: nothing was created.
        Err(
            e @ (PveError::Rejected { .. }
            | PveError::InvalidRequest(_)
            | PveError::Permission { .. }
            | PveError::Unauthorized { .. }),
        ) => {
            journal.record_removed(op, guest).await?;
            Err(pve_err("restore")(e))
        }
        // pve-container's create_vm dies synchronously (HTTP 500) with `CT <vmid> already
        // exists on node '<node>'` (check_vmid_unused) when someone else created the vmid
        // after our check: that guest is not ours.
        Err(e @ PveError::Server { .. }) if e.to_string().contains("already exists") => {
            journal.record_removed(op, guest).await?;
            Err(pve_err("restore")(e))
        }
        Err(e) => Err(pve_err("restore")(e)),
    }
}

/// `size=` of a rootfs/mp value in bytes (`local-lvm:vm-101-disk-0,size=8G`).
pub fn rootfs_size_bytes(raw: &str) -> Option<u64> {
    let size = raw.split(',').find_map(|p| p.strip_prefix("size="))?;
    let (num, unit) = size.split_at(
        size.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(size.len()),
    );
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Destroys what `op` recorded as created and still exists, then marks it compensated.
/// `reason` is `Some` when the operation is still `running` and must enter compensation.
/// `cancel` (agent shutdown) ends the task waits; the operation then stays in compensation
/// for the next attempt.
pub(crate) async fn compensate(
    pve: &PveClient,
    journal: &JournalWriter,
    wait: &WaitOptions,
    op: OperationId,
    reason: Option<String>,
    cancel: &CancellationToken,
) -> Result<(), ProvisionError> {
    if let Some(reason) = reason {
        journal.begin_compensation(op, reason).await?;
    }
    let record = journal
        .get(op)
        .await?
        .ok_or(ProvisionError::Journal(JournalError::UnknownOperation(op)))?;
    let remaining: Vec<(Resource, u32)> = record
        .resources
        .iter()
        .filter(|r| r.removed_at.is_none())
        .map(|r| (r.resource.clone(), r.step))
        .collect();
    for (resource, created_by) in remaining {
        match &resource {
            Resource::Guest { vmid } => {
                let vmid = Vmid::new(*vmid).map_err(|e| pve_err("compensate")(e.into()))?;
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
                remove_guest(pve, journal, wait, cancel, op, vmid).await?;
                journal.record_removed(op, resource.clone()).await?;
                tracing::info!(operation = %op, %vmid, "compensation: guest removed");
            }
            Resource::Snapshot { .. }
            | Resource::Volume { .. }
            | Resource::BackupArchive { .. } => {
                // Provisioning creates only guests; anything else is another operation's kind.
                let msg = format!("cannot compensate {resource}: not a provisioning resource");
                journal.mark_failed(op, msg.clone()).await?;
                return Err(ProvisionError::Invalid(msg));
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
) -> Result<bool, ProvisionError> {
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
        .map_err(pve_err("compensate"))?;
    let ours: Vec<_> = tasks
        .into_iter()
        .filter(|t| t.upid.authid() == pve.authid() && t.starttime <= until)
        .collect();
    for t in ours.iter().filter(|t| t.endtime.is_none()) {
        tracing::info!(%vmid, upid = %t.upid, "compensation: waiting for the task that created the guest");
        match pve.wait_task(&t.upid, wait, cancel).await {
            Ok(_) | Err(PveError::TaskFailed(_)) => {}
            Err(PveError::Cancelled { .. }) => return Err(ProvisionError::Interrupted),
            Err(e) => return Err(pve_err("compensate")(e)),
        }
    }
    if !ours.is_empty() {
        return Ok(true);
    }
    match pve.lxc_status(vmid).await {
        Ok(status) if status.lock.as_deref() == Some("create") => {
            Err(ProvisionError::Invalid(format!(
                "guest {vmid} is being created by a task not listed yet; compensation is retried"
            )))
        }
        Ok(_) | Err(PveError::GuestNotFound { .. }) => Ok(false),
        Err(e) => Err(pve_err("compensate")(e)),
    }
}

/// `user@realm` of an authid (`user@realm!token`).
fn user_of(authid: &str) -> &str {
    authid.split_once('!').map_or(authid, |(user, _)| user)
}

/// Stops (if running) and destroys a guest this operation created; gone already is fine.
async fn remove_guest(
    pve: &PveClient,
    journal: &JournalWriter,
    wait: &WaitOptions,
    cancel: &CancellationToken,
    op: OperationId,
    vmid: Vmid,
) -> Result<(), ProvisionError> {
    let status = match pve.lxc_status(vmid).await {
        Ok(s) => s,
        Err(PveError::GuestNotFound { .. }) => return Ok(()),
        Err(e) => return Err(pve_err("compensate")(e)),
    };
    if status.status == "running" {
        step(
            journal,
            pve,
            wait,
            cancel,
            op,
            "undo: stop",
            |_| async move { Ok(Some(pve.stop(vmid).await.map_err(pve_err("undo: stop"))?)) },
        )
        .await?;
    }
    step(
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
                    DestroyOptions {
                        purge: true,
                        destroy_unreferenced_disks: true,
                        force: false,
                    },
                )
                .await
            {
                Ok(upid) => Ok(Some(upid)),
                Err(PveError::GuestNotFound { .. }) => Ok(None),
                Err(e) => Err(pve_err("undo: destroy")(e)),
            }
        },
    )
    .await
}

/// Resolves every unfinished operation a previous run left (see module docs). Errors of one
/// operation are logged and do not stop the others. `shutdown` ends the waits on Proxmox tasks
/// without recording anything, leaving what is left for the next start.
pub async fn recover(
    pve: Option<&PveClient>,
    db: &StateDb,
    wait: &WaitOptions,
    shutdown: &CancellationToken,
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
        match recover_one(pve, &journal, wait, &op, shutdown).await {
            Ok(()) => {}
            Err(ProvisionError::Interrupted) => {
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
pub(crate) async fn recover_kind(
    pve: &PveClient,
    db: &StateDb,
    wait: &WaitOptions,
    kind: &str,
    shutdown: &CancellationToken,
) -> Result<(usize, usize), ProvisionError> {
    let journal = JournalWriter::new(db.clone());
    let ops = db.run(|db| db.journal().unfinished()).await?;
    let ops: Vec<&Operation> = ops.iter().filter(|op| op.kind == kind).collect();
    let mut resolved = 0;
    for op in &ops {
        if shutdown.is_cancelled() {
            break;
        }
        match recover_one(pve, &journal, wait, op, shutdown).await {
            Ok(()) => resolved += 1,
            Err(ProvisionError::Interrupted) => break,
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
) -> Result<(), ProvisionError> {
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
                    Err(PveError::Cancelled { .. }) => return Err(ProvisionError::Interrupted),
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
    let record = journal.get(op.id).await?.ok_or(ProvisionError::Journal(
        JournalError::UnknownOperation(op.id),
    ))?;
    match record.state {
        OperationState::Running => {
            if all_steps_done(&record) {
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

/// Whether a provision's full step list is done (other kinds are never "done" by recovery).
fn all_steps_done(op: &Operation) -> bool {
    let expected: &[&str] = match op.kind.as_str() {
        KIND => &["restore", "configure", "resize"],
        KIND_START => &["restore", "configure", "resize", "start"],
        _ => return false,
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
) -> Result<(), ProvisionError> {
    let tasks = pve
        .tasks(&TaskFilter {
            vmid: Some(vmid),
            // Proxmox lists only finished tasks by default.
            source: Some(TaskSource::Active),
            ..TaskFilter::default()
        })
        .await
        .map_err(pve_err("recovery"))?;
    // A running task has no end time (its status reads `RUNNING` in the active list).
    for t in tasks.into_iter().filter(|t| t.endtime.is_none()) {
        tracing::info!(%vmid, upid = %t.upid, "recovery: waiting for the guest's running task");
        match pve.wait_task(&t.upid, wait, cancel).await {
            Ok(_) => {}
            Err(PveError::Cancelled { .. }) => return Err(ProvisionError::Interrupted),
            Err(e) => {
                tracing::info!(upid = %t.upid, error = %error_chain(&e), "recovery: task ended with an error");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootfs_size_is_read_from_the_size_option() {
        assert_eq!(
            rootfs_size_bytes("local-lvm:vm-101-disk-0,size=8G"),
            Some(8 << 30)
        );
        assert_eq!(
            rootfs_size_bytes("local:101/vm-101-disk-0.raw,size=512M"),
            Some(512 << 20)
        );
        assert_eq!(
            rootfs_size_bytes("local-lvm:vm-101-disk-0,size=1024"),
            Some(1024)
        );
        assert_eq!(rootfs_size_bytes("local-lvm:vm-101-disk-0"), None);
        assert_eq!(rootfs_size_bytes("local-lvm:vm-101-disk-0,size=8X"), None);
    }

    fn request() -> ProvisionRequest {
        ProvisionRequest {
            vmid: None,
            archive: "local:backup/vzdump-lxc-9000-2026_06_01-03_00_12.tar.zst".into(),
            storage: "local-lvm".into(),
            hostname: "web-1".into(),
            memory_mib: 1024,
            cores: 2,
            rootfs_gib: 8,
            start: true,
        }
    }

    #[test]
    fn a_valid_request_passes_validation() {
        request().validate().expect("valid request");
    }

    #[test]
    fn a_hostname_that_is_not_a_dns_label_is_refused_by_name() {
        let mut r = request();
        r.hostname = "web_1".into();
        let err = r.validate().expect_err("underscore is not allowed");
        assert_eq!(
            err.to_string(),
            "Invalid provision request: hostname \"web_1\" is not a DNS label"
        );
    }

    #[test]
    fn zero_cores_are_refused() {
        let mut r = request();
        r.cores = 0;
        let err = r.validate().expect_err("no cores");
        assert_eq!(
            err.to_string(),
            "Invalid provision request: cores 0 is not 1..8192"
        );
    }
}
