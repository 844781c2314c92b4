//! One place that turns agent-side errors into gRPC statuses. Exhaustive by design: a new error
//! variant must be given a status here before the code compiles.
//!
//! Messages are what the caller may see: Proxmox's own texts (lock conflicts, task exit status)
//! are passed on, since they tell a controller or operator what to do; the token never is.

use tonic::Status;

use crate::capabilities::access::AccessError;
use crate::capabilities::backup::BackupError;
use crate::capabilities::backup::restore_test::RestoreTestError;
use crate::capabilities::guests::GuestsError;
use crate::capabilities::guests::provision::ProvisionError;
use crate::capabilities::guests::snapshot_limits::{LimitsError, SnapshotRefusal};
use crate::capabilities::records::RecordsError;
use crate::capabilities::selftest::SelftestError;
use crate::core::error_chain;
use crate::frontends::local_api_gateway::GatewaySlotError;
use crate::infra::journaled::JournaledError;
use crate::infra::pbs::PbsError;
use crate::infra::pve::PveError;
use crate::infra::queue::QueueError;
use crate::infra::state::{
    AuditError, BackupsError, Interrupted, JobsError, JournalError, TokensError,
};

/// Proxmox VE errors.
pub fn pve(e: &PveError) -> Status {
    match e {
        PveError::InvalidRequest(m) => Status::invalid_argument(m.clone()),
        PveError::GuestNotFound { vmid, .. } => {
            Status::not_found(format!("guest {vmid} does not exist"))
        }
        // The agent's own token lacks a privilege: the operation cannot work until an operator
        // fixes the role; not the caller's fault, not transient.
        PveError::Permission { denied, .. } => Status::failed_precondition(format!(
            "the agent's Proxmox token is not allowed: {denied}"
        )),
        PveError::Unauthorized { .. } => {
            Status::unavailable("the agent cannot authenticate to Proxmox VE")
        }
        PveError::Rejected { status: 400, .. } => Status::invalid_argument(e.to_string()),
        PveError::Rejected { .. } => Status::failed_precondition(e.to_string()),
        PveError::Transport { .. } | PveError::Server { .. } => Status::unavailable(e.to_string()),
        PveError::Timeout { .. } => Status::deadline_exceeded(e.to_string()),
        PveError::TaskFailed(f) => match &f.permission {
            Some(denied) => Status::failed_precondition(format!(
                "the agent's Proxmox token is not allowed: {denied}"
            )),
            None => Status::aborted(format!("Proxmox task failed: {}", f.exitstatus)),
        },
        PveError::TaskDeadline { .. } => Status::deadline_exceeded(e.to_string()),
        PveError::Cancelled { .. } => Status::cancelled(e.to_string()),
        PveError::Decode { .. } | PveError::Setup(_) => Status::internal(e.to_string()),
    }
}

/// Work-queue errors.
pub fn queue(e: &QueueError) -> Status {
    match e {
        QueueError::GuestFull { .. } | QueueError::Full { .. } => {
            Status::resource_exhausted(e.to_string())
        }
        QueueError::ShuttingDown => Status::unavailable(e.to_string()),
        QueueError::InvalidField(_) => Status::invalid_argument(e.to_string()),
        QueueError::UnknownJob(_) => Status::not_found(e.to_string()),
        QueueError::Lost(_) => Status::internal(e.to_string()),
        QueueError::History(h) => jobs(h),
    }
}

/// A state-database failure of the agent's own: the caller cannot fix it.
fn internal(e: &dyn std::error::Error) -> Status {
    Status::internal(format!("state database: {}", error_chain(e)))
}

/// Token-store errors.
pub fn tokens(e: &TokensError) -> Status {
    match e {
        TokensError::AlreadyMinted { .. } => Status::already_exists(e.to_string()),
        TokensError::NoToken { .. } => Status::not_found(e.to_string()),
        TokensError::Malformed => Status::unauthenticated("malformed token"),
        TokensError::InvalidField(_) => Status::invalid_argument(e.to_string()),
        TokensError::Interrupted(i) => interrupted(i),
        TokensError::Sqlite(_) | TokensError::Entropy(_) | TokensError::Audit(_) => internal(e),
    }
}

fn interrupted(_: &Interrupted) -> Status {
    Status::unavailable("the agent is shutting down")
}

impl From<Interrupted> for Status {
    fn from(i: Interrupted) -> Self {
        interrupted(&i)
    }
}

/// Journal errors. Most are the agent misusing its own journal (a bug), not the caller's.
pub fn journal(e: &JournalError) -> Status {
    match e {
        JournalError::Interrupted(i) => interrupted(i),
        JournalError::InvalidField(_) => Status::invalid_argument(e.to_string()),
        JournalError::UnknownOperation(_) => Status::not_found(e.to_string()),
        JournalError::KeyInUse { .. } => Status::already_exists(e.to_string()),
        JournalError::ResourcesRemain { .. } => Status::failed_precondition(e.to_string()),
        JournalError::Corrupt { .. } => Status::data_loss(e.to_string()),
        JournalError::Sqlite(_)
        | JournalError::UnknownStep { .. }
        | JournalError::WrongOperationState { .. }
        | JournalError::StepNotInFlight { .. }
        | JournalError::StepInFlight { .. }
        | JournalError::UpidAlreadyRecorded { .. }
        | JournalError::NotCreatedHere { .. } => internal(e),
    }
}

/// Audit failures; a broken chain is data loss.
pub fn audit(e: &AuditError) -> Status {
    match e {
        AuditError::Interrupted(i) => interrupted(i),
        AuditError::InvalidField(_) | AuditError::MalformedHead(_) => {
            Status::invalid_argument(e.to_string())
        }
        AuditError::HeadMismatch { .. } => Status::failed_precondition(e.to_string()),
        AuditError::Altered { .. }
        | AuditError::BrokenLink { .. }
        | AuditError::Missing { .. }
        | AuditError::PrunedUnsigned { .. }
        | AuditError::CheckpointMismatch { .. } => Status::data_loss(e.to_string()),
        AuditError::Sqlite(_) => internal(e),
    }
}

/// Job-history failures.
pub fn jobs(e: &JobsError) -> Status {
    match e {
        JobsError::Interrupted(i) => interrupted(i),
        JobsError::InvalidField(_) => Status::invalid_argument(e.to_string()),
        JobsError::UnknownJob(_) => Status::not_found(e.to_string()),
        JobsError::WrongPhase { .. } => Status::failed_precondition(e.to_string()),
        JobsError::Corrupt { .. } => Status::data_loss(e.to_string()),
        JobsError::Sqlite(_) | JobsError::Entropy(_) => internal(e),
    }
}

/// Backup-history failures.
pub fn backups(e: &BackupsError) -> Status {
    match e {
        BackupsError::Interrupted(i) => interrupted(i),
        BackupsError::InvalidField(_) => Status::invalid_argument(e.to_string()),
        BackupsError::Sqlite(_) => internal(e),
    }
}

/// Local API gateway problems.
pub fn gateway(e: &GatewaySlotError) -> Status {
    match e {
        GatewaySlotError::Off => Status::failed_precondition(e.to_string()),
        GatewaySlotError::Rotate(source) => Status::internal(format!("{e}: {source}")),
    }
}

/// PBS errors.
pub fn pbs(e: &PbsError) -> Status {
    match e {
        PbsError::InvalidRequest(m) => Status::invalid_argument(m.clone()),
        PbsError::Permission { .. } => {
            Status::failed_precondition(format!("the agent's PBS token is not allowed: {e}"))
        }
        PbsError::Unauthorized { .. } => {
            Status::unavailable("the agent cannot authenticate to the Proxmox Backup Server")
        }
        PbsError::Rejected { .. } => Status::failed_precondition(e.to_string()),
        PbsError::Setup(_)
        | PbsError::Transport { .. }
        | PbsError::Server { .. }
        | PbsError::Decode { .. } => Status::unavailable(e.to_string()),
        PbsError::Timeout { .. } | PbsError::TaskDeadline { .. } => {
            Status::deadline_exceeded(e.to_string())
        }
        PbsError::TaskFailed(_) => Status::aborted(e.to_string()),
        PbsError::Cancelled { .. } => Status::cancelled(e.to_string()),
    }
}

/// Backup, verify and status errors.
pub fn backup(e: &BackupError) -> Status {
    let text = error_chain(e);
    match e {
        BackupError::NoPve => Status::unavailable(text),
        BackupError::NoPolicy(_)
        | BackupError::NoPolicyForTier { .. }
        | BackupError::NotPbs(_)
        | BackupError::NoPbsTier(_)
        | BackupError::NoPbsApi
        | BackupError::NoSnapshot { .. }
        | BackupError::NotEncrypted { .. }
        | BackupError::KeyNotPinned { .. }
        | BackupError::NoStorage { .. } => Status::failed_precondition(text),
        BackupError::UnknownTier(_) => Status::invalid_argument(text),
        BackupError::Vzdump { .. }
        | BackupError::LandedUnencrypted { .. }
        | BackupError::WrongKey { .. }
        | BackupError::ShutDown(_)
        | BackupError::Interrupted(_)
        | BackupError::VerifyNotRecorded(_)
        | BackupError::NoArchive(_) => Status::aborted(text),
        BackupError::Invalid(_) => Status::invalid_argument(text),
        BackupError::Pve(p) => pve(p),
        BackupError::Pbs(p) => pbs(p),
        BackupError::Queue(q) => queue(q),
        BackupError::History(h) => backups(h),
        BackupError::Jobs(j) => jobs(j),
    }
}

/// Restore-test errors.
pub fn restore_test(e: &RestoreTestError) -> Status {
    match e {
        RestoreTestError::NoPolicy(_) => Status::failed_precondition(e.to_string()),
        RestoreTestError::Backup(b) => backup(b),
        RestoreTestError::Cleanup(_) => Status::internal(e.to_string()),
    }
}

/// Journaled-operation failures, with the whole cause chain in the message.
pub fn journaled(e: &JournaledError) -> Status {
    let msg = error_chain(e);
    match e {
        JournaledError::AlreadyExists(_) => Status::already_exists(msg),
        JournaledError::Pve { source, .. } => Status::new(pve(source).code(), msg),
        JournaledError::Journal(j) => Status::new(journal(j).code(), msg),
        JournaledError::NotRemovable(_) => Status::internal(msg),
        JournaledError::Interrupted => Status::unavailable(msg),
        JournaledError::Held { .. } | JournaledError::Undecided(_) => {
            Status::failed_precondition(msg)
        }
        JournaledError::Refused(_) => Status::invalid_argument(msg),
    }
}

/// Provisioning failures, with the whole cause chain in the message.
pub fn provision(e: &ProvisionError) -> Status {
    match e {
        ProvisionError::Invalid(_) | ProvisionError::Shrink { .. } => {
            Status::invalid_argument(error_chain(e))
        }
        ProvisionError::Journaled(j) => journaled(j),
    }
}

/// Guest calls (list, tasks, snapshot, rollback, provision).
pub fn guests(e: &GuestsError) -> Status {
    match e {
        GuestsError::NoPve => Status::failed_precondition(e.to_string()),
        GuestsError::Invalid { .. } | GuestsError::Description => {
            Status::invalid_argument(e.to_string())
        }
        GuestsError::NoSnapshot { .. } => Status::not_found(e.to_string()),
        GuestsError::Pve(p) => pve(p),
        GuestsError::Queue(q) => queue(q),
        GuestsError::Tokens(t) => tokens(t),
        GuestsError::Provision(p) => provision(p),
        GuestsError::JobFailed(text) => Status::aborted(text.clone()),
        GuestsError::NoResult => Status::internal(e.to_string()),
        GuestsError::Dropped => Status::unavailable(e.to_string()),
        GuestsError::SnapshotRefused(r) => snapshot_refusal(r),
        GuestsError::SnapshotLimits(LimitsError::Pve(p)) => pve(p),
        GuestsError::SnapshotLimits(LimitsError::State(_)) => Status::internal(error_chain(e)),
    }
}

/// A snapshot limit: the cap and a full storage are conflicts with the guest's state (409);
/// the interval is a rate limit (429) that passes by itself.
fn snapshot_refusal(r: &SnapshotRefusal) -> Status {
    match r {
        SnapshotRefusal::TooMany { .. } | SnapshotRefusal::StorageFull { .. } => {
            Status::failed_precondition(r.to_string())
        }
        SnapshotRefusal::TooSoon { .. } => Status::resource_exhausted(r.to_string()),
    }
}

/// Token calls and guest authentication. Every way a presented token fails looks alike.
pub fn access(e: &AccessError) -> Status {
    match e {
        AccessError::NoPve => Status::failed_precondition(e.to_string()),
        AccessError::Invalid(_) => Status::invalid_argument(e.to_string()),
        AccessError::Pve(p) => pve(p),
        AccessError::Tokens(t) => tokens(t),
        AccessError::UnknownToken => Status::unauthenticated(e.to_string()),
        AccessError::CorruptOwner(_) => Status::data_loss(error_chain(e)),
    }
}

/// Reading jobs, the journal and the audit log.
pub fn records(e: &RecordsError) -> Status {
    match e {
        RecordsError::Invalid(_) => Status::invalid_argument(e.to_string()),
        RecordsError::Jobs(j) => jobs(j),
        RecordsError::Journal(j) => journal(j),
        RecordsError::Audit(a) => audit(a),
    }
}

/// The selftest.
pub fn selftest(e: &SelftestError) -> Status {
    match e {
        SelftestError::NoPve => Status::failed_precondition(e.to_string()),
    }
}
