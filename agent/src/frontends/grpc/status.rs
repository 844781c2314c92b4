//! One place that turns agent-side errors into gRPC statuses. Exhaustive by design: a new error
//! variant must be given a status here before the code compiles.
//!
//! Messages are what the caller may see: Proxmox's own texts (lock conflicts, task exit status)
//! are passed on, since they tell a controller or operator what to do; the token never is.

use tonic::Status;

use crate::core::InvalidValue;

use crate::capabilities::backup::BackupError;
use crate::capabilities::backup::restore_test::RestoreTestError;
use crate::frontends::local_api_gateway::GatewaySlotError;
use crate::infra::pbs::PbsError;
use crate::infra::pve::PveError;
use crate::infra::queue::QueueError;
use crate::infra::state::{AuditError, Interrupted, JobsError, JournalError, TokensError};

/// An identifier that failed validation.
pub fn invalid(e: &InvalidValue) -> Status {
    Status::invalid_argument(e.to_string())
}

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
        QueueError::Lost(_) | QueueError::History(_) => Status::internal(e.to_string()),
    }
}

/// State-database errors are the agent's own failures.
pub fn state(e: &dyn std::error::Error) -> Status {
    Status::internal(format!("state database: {e}"))
}

/// Token-store errors.
pub fn tokens(e: &TokensError) -> Status {
    match e {
        TokensError::AlreadyMinted { .. } => Status::already_exists(e.to_string()),
        TokensError::NoToken { .. } => Status::not_found(e.to_string()),
        TokensError::Malformed => Status::unauthenticated("malformed token"),
        TokensError::InvalidField(_) => Status::invalid_argument(e.to_string()),
        TokensError::Sqlite(_) | TokensError::Entropy(_) | TokensError::Interrupted(_) => state(e),
    }
}

impl From<Interrupted> for Status {
    fn from(_: Interrupted) -> Self {
        Status::unavailable("the agent is shutting down")
    }
}

/// Journal, audit and job-history failures.
pub fn journal(e: &JournalError) -> Status {
    state(e)
}

/// Audit failures.
pub fn audit(e: &AuditError) -> Status {
    state(e)
}

/// Job-history failures.
pub fn jobs(e: &JobsError) -> Status {
    state(e)
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
    let text = crate::core::error_chain(e);
    match e {
        BackupError::NoPve => Status::unavailable(text),
        BackupError::NoPolicy(_)
        | BackupError::NoPolicyForTier { .. }
        | BackupError::NotPbs(_)
        | BackupError::NoPbsTier(_)
        | BackupError::NoPbsApi
        | BackupError::NoSnapshot { .. }
        | BackupError::KeyMissing { .. } => Status::failed_precondition(text),
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
        BackupError::History(h) => state(h),
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
