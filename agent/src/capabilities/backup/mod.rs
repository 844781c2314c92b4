//! Backups of guests: policies and schedules, due-ness, the vzdump runs on the guest's queue,
//! PBS verify, and the history that answers "when was this guest last backed up, how, where".
//!
//! - [`settings`]: the `[backup]` configuration (tiers, policies, scratch range).
//! - [`schedule`]: calendar events (`daily 02:30`, `sun 04:00`) evaluated in local time.
//! - [`due`]: whether a guest's backup is due and the human reason.
//! - [`service`]: starting backups (controller, operator, scheduler), their status, listing
//!   what exists on each tier, and PBS verify.
//! - [`restore_test`]: self-restore-tests into scratch guests, always destroyed again.
//!
//! The scheduler that acts on these by itself is a front end (`frontends::scheduler`).
//!
//! Limits: one node. A backup interrupted by an agent restart is recorded as failed even if
//! Proxmox finished it; the archive still counts for due-ness, which is read from the storage.

pub mod due;
pub mod restore_test;
pub mod schedule;
pub mod service;
pub mod settings;

pub use schedule::{Schedule, ScheduleError};
pub use service::{BackupError, BackupService, Trigger};
pub(crate) use settings::RawBackup;
pub use settings::{BackupSettings, Policy, Retention, Tier, TierKind};

use felhom_proto::agent::v1 as pb;

use crate::capabilities::records::Records;
use crate::core::{Actor, Vmid};
use restore_test::RestoreTestError;
pub use service::Accepted;

/// The backup capability as front ends reach it: the [`BackupService`] plus the audit of every
/// job an operator or a guest starts (joins and refusals included).
#[derive(Debug, Clone)]
pub struct Backups {
    svc: BackupService,
    records: Records,
}

impl Backups {
    pub fn new(svc: BackupService, records: Records) -> Self {
        Self { svc, records }
    }

    /// The service itself (the scheduler drives it directly).
    pub fn service(&self) -> &BackupService {
        &self.svc
    }

    /// Starts (or joins) a backup of `vmid`: by an operator on one tier or all, or by the
    /// guest's controller (app-consistent).
    pub async fn start(
        &self,
        actor: Actor,
        vmid: u32,
        tier: Option<&str>,
    ) -> Result<Accepted, BackupError> {
        let guest = Vmid::new(vmid)?;
        let (trigger, action) = match actor {
            Actor::Operator { .. } => (Trigger::Operator, "backup.start"),
            Actor::Guest(_) => (Trigger::Controller, "guest.backup"),
        };
        let result = self.svc.start(guest.get(), trigger, tier).await;
        let queued = match trigger {
            Trigger::Controller => "app-consistent backup",
            Trigger::Operator | Trigger::Schedule => "backup",
        };
        self.audit_start(actor, action, guest, ("backup", queued), &result)
            .await;
        result
    }

    /// The guest's newest backup job.
    pub async fn status(&self, vmid: u32) -> Result<pb::BackupStatus, BackupError> {
        self.svc.status(Vmid::new(vmid)?.get()).await
    }

    /// Whether the guest's backup is due, and why.
    pub async fn due(&self, vmid: u32) -> Result<due::Due, BackupError> {
        self.svc.due(Vmid::new(vmid)?.get()).await
    }

    /// Backups on every reachable tier, of one guest (`0`: all).
    pub async fn list(&self, vmid: u32) -> Result<pb::ListBackupsResponse, BackupError> {
        let guest = match vmid {
            0 => None,
            v => Some(Vmid::new(v)?.get()),
        };
        self.svc.list(guest).await
    }

    /// Starts (or joins) a self-restore-test of `vmid`.
    pub async fn start_restore_test(
        &self,
        actor: Actor,
        vmid: u32,
    ) -> Result<Accepted, RestoreTestError> {
        let guest = Vmid::new(vmid).map_err(|e| RestoreTestError::Backup(e.into()))?;
        let result = restore_test::start(&self.svc, guest.get()).await;
        let detail = match &result {
            Ok(a) if a.new_job => format!("restore-test queued (job {})", a.job_id),
            Ok(a) => format!("joined restore-test job {} already under way", a.job_id),
            Err(e) => format!("restore-test refused: {e}"),
        };
        self.records
            .audit(
                actor,
                "restore_test.start",
                format!("guest:{guest}"),
                detail,
            )
            .await;
        result
    }

    /// The guest's newest restore-test.
    pub async fn restore_test_status(
        &self,
        vmid: u32,
    ) -> Result<pb::RestoreTestStatus, RestoreTestError> {
        let guest = Vmid::new(vmid).map_err(|e| RestoreTestError::Backup(e.into()))?;
        restore_test::status(&self.svc, guest.get()).await
    }

    /// Starts (or joins) a PBS verify of the guest's newest snapshot on `tier` (or its PBS tier).
    pub async fn start_verify(
        &self,
        actor: Actor,
        vmid: u32,
        tier: Option<&str>,
    ) -> Result<Accepted, BackupError> {
        let guest = Vmid::new(vmid)?;
        let result = self.svc.start_verify(guest.get(), tier).await;
        self.audit_start(actor, "verify.start", guest, ("verify", "verify"), &result)
            .await;
        result
    }

    /// Audits a start: queued, joined or refused. `what` is the job's noun and how a new one
    /// is described; a guest's own call is audited with the guest as its target.
    async fn audit_start<E: std::fmt::Display>(
        &self,
        actor: Actor,
        action: &'static str,
        guest: Vmid,
        (noun, queued): (&str, &str),
        result: &Result<Accepted, E>,
    ) {
        if matches!(result, Ok(a) if a.new_job) {
            self.records.job_queued(actor).await;
        }
        let detail = match result {
            Ok(a) if a.new_job => format!("{queued} queued (job {})", a.job_id),
            Ok(a) => format!("joined {noun} job {} already under way", a.job_id),
            Err(e) => format!("{noun} refused: {e}"),
        };
        let target = match actor {
            Actor::Guest(_) => actor.to_string(),
            Actor::Operator { .. } => format!("guest:{guest}"),
        };
        self.records.audit(actor, action, target, detail).await;
    }

    /// The guest's newest verify.
    pub async fn verify_status(&self, vmid: u32) -> Result<pb::VerifyStatus, BackupError> {
        self.svc.verify_status(Vmid::new(vmid)?.get()).await
    }
}
