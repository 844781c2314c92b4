//! What a guest's controller is told when a LocalApi call fails: one fixed text per kind of
//! failure, with the status `LOCAL-API.md` gives it (through the gateway: 400, 401, 403, 404,
//! 409, 429, 500, 503, 504).
//!
//! The gateway forwards the texts of 4xx codes and replaces those of `UNAVAILABLE`/`INTERNAL`
//! with its own, so a guest-useful reason that is not transient is a 409.
//!
//! A guest is not the host's operator: Proxmox paths, UPIDs, task exit texts, the agent's
//! token id, other storages and state-database detail never reach it. The caller logs the
//! whole error chain for the operator ([`logged`]); the guest gets a sentence it can show or
//! act on. Texts built from the guest's own input (a snapshot name it sent, its own vmid, the
//! limit it ran into) are kept, since they tell it what to change.
//!
//! "Not allowed for this guest" (no backup or restore-test policy) is 403, as the contract
//! says; a conflict with the guest's state (a lock, a limit) is 409.

use tonic::Status;

use crate::capabilities::access::AccessError;
use crate::capabilities::backup::BackupError;
use crate::capabilities::backup::restore_test::RestoreTestError;
use crate::capabilities::guests::GuestsError;
use crate::capabilities::guests::snapshot_limits::{LimitsError, SnapshotRefusal};
use crate::capabilities::records::guest_ledger::GuestBudgetError;
use crate::capabilities::storage::StorageError;
use crate::core::{Vmid, error_chain};
use crate::infra::pbs::PbsError;
use crate::infra::pve::PveError;
use crate::infra::queue::QueueError;
use crate::infra::state::TokensError;

const NOT_PERMITTED: &str = "the host agent is not permitted to do this on Proxmox; the host operator must fix the agent's role";
const PVE_DOWN: &str = "Proxmox VE is not reachable; try again later";
const PVE_SLOW: &str = "Proxmox VE did not finish in time; the task may still complete";
const TASK_FAILED: &str =
    "the Proxmox task failed; the host operator can see why in the agent's log";
const SHUTTING_DOWN: &str = "the host agent is restarting; try again shortly";
const INTERNAL: &str =
    "internal error in the host agent; the host operator can see it in the agent's log";
const BACKUP_FAILED: &str = "the backup failed; the host operator can see why in the agent's log";
const PBS_DOWN: &str = "the backup server is not reachable or refused the host; try again later";

/// Logs `e` with its whole chain for the operator and returns `status` for the guest.
pub fn logged(
    vmid: Option<Vmid>,
    call: &'static str,
    e: &dyn std::error::Error,
    status: Status,
) -> Status {
    let vmid = vmid.map_or(0, Vmid::get);
    match status.code() {
        tonic::Code::Internal | tonic::Code::Unavailable | tonic::Code::DataLoss => {
            tracing::warn!(vmid, call, error = %error_chain(e), "local API call failed");
        }
        // A flood of bad tokens must not flood the log.
        tonic::Code::Unauthenticated => {
            tracing::debug!(call, error = %error_chain(e), "local API token refused");
        }
        _ => tracing::info!(vmid, call, error = %error_chain(e), "local API call refused"),
    }
    status
}

/// The `error` of a failed job as a guest sees it.
pub fn job_error(job_id: &str) -> String {
    format!("the job failed; the host operator can see why in the agent's log and in job {job_id}")
}

/// Proxmox VE failures.
pub fn pve(e: &PveError) -> Status {
    match e {
        PveError::InvalidRequest(_) | PveError::Rejected { status: 400, .. } => {
            Status::invalid_argument("Proxmox VE rejected the request as invalid")
        }
        PveError::GuestNotFound { vmid, .. } => {
            Status::not_found(format!("guest {vmid} does not exist on this host"))
        }
        // Not transient, and the gateway forwards only conflict texts: 409 with the reason.
        PveError::Permission { .. } => Status::failed_precondition(NOT_PERMITTED),
        PveError::TaskFailed(f) if f.permission.is_some() => {
            Status::failed_precondition(NOT_PERMITTED)
        }
        PveError::Unauthorized { .. } => Status::unavailable(NOT_PERMITTED),
        PveError::TaskFailed(_) => Status::aborted(TASK_FAILED),
        PveError::Rejected { .. } => Status::failed_precondition(
            "Proxmox VE refused the request; the guest may be locked by another task",
        ),
        PveError::Transport { .. } | PveError::Server { .. } => Status::unavailable(PVE_DOWN),
        PveError::Timeout { .. } | PveError::TaskDeadline { .. } => {
            Status::deadline_exceeded(PVE_SLOW)
        }
        PveError::Cancelled { .. } => Status::unavailable(SHUTTING_DOWN),
        PveError::Decode { .. } | PveError::Setup(_) => Status::internal(INTERNAL),
    }
}

fn pbs(e: &PbsError) -> Status {
    match e {
        PbsError::Timeout { .. } | PbsError::TaskDeadline { .. } => {
            Status::deadline_exceeded("the backup server did not finish in time")
        }
        PbsError::Cancelled { .. } => Status::unavailable(SHUTTING_DOWN),
        PbsError::TaskFailed(_) => Status::aborted(BACKUP_FAILED),
        PbsError::InvalidRequest(_)
        | PbsError::Permission { .. }
        | PbsError::Unauthorized { .. }
        | PbsError::Rejected { .. }
        | PbsError::Setup(_)
        | PbsError::Transport { .. }
        | PbsError::Server { .. }
        | PbsError::Decode { .. } => Status::unavailable(PBS_DOWN),
    }
}

fn queue(e: &QueueError) -> Status {
    match e {
        QueueError::GuestFull { .. } => Status::resource_exhausted(
            "this guest already has the most jobs waiting; try again when one has finished",
        ),
        QueueError::Full { .. } => {
            Status::resource_exhausted("the host's work queue is full; try again later")
        }
        QueueError::ShuttingDown => Status::unavailable(SHUTTING_DOWN),
        QueueError::UnknownJob(_) => Status::not_found("no such job"),
        QueueError::InvalidField(_) | QueueError::Lost(_) | QueueError::History(_) => {
            Status::internal(INTERNAL)
        }
    }
}

/// `GET /storage`.
pub fn storage(e: &StorageError) -> Status {
    match e {
        StorageError::NoPve => unconfigured(),
        StorageError::Pve(p) => pve(p),
    }
}

/// A guest's controller retries a 503; the host simply has no Proxmox VE configured yet.
fn unconfigured() -> Status {
    Status::unavailable("Proxmox VE is not configured")
}

/// `POST /snapshot`, `POST /rollback`.
pub fn guests(e: &GuestsError) -> Status {
    match e {
        GuestsError::NoPve => unconfigured(),
        // The guest's own input, echoed so it can correct it.
        GuestsError::Invalid { .. } | GuestsError::Description => {
            Status::invalid_argument(e.to_string())
        }
        GuestsError::NoSnapshot { .. } => Status::not_found(e.to_string()),
        GuestsError::SnapshotRefused(r) => match r {
            SnapshotRefusal::TooMany { .. } | SnapshotRefusal::StorageFull { .. } => {
                Status::failed_precondition(r.to_string())
            }
            SnapshotRefusal::TooSoon { .. } => Status::resource_exhausted(r.to_string()),
        },
        GuestsError::Pve(p) | GuestsError::SnapshotLimits(LimitsError::Pve(p)) => pve(p),
        GuestsError::Queue(q) => queue(q),
        GuestsError::JobFailed(_) => Status::aborted("the job did not run to its end; try again"),
        GuestsError::Dropped => Status::unavailable(SHUTTING_DOWN),
        GuestsError::Tokens(_)
        | GuestsError::Provision(_)
        | GuestsError::NoResult
        | GuestsError::SnapshotLimits(LimitsError::State(_)) => Status::internal(INTERNAL),
    }
}

/// `POST /backup`, `GET /backup/due`, `GET /backup/status`.
pub fn backup(e: &BackupError) -> Status {
    match e {
        BackupError::NoPve => unconfigured(),
        BackupError::NoPolicy(_) | BackupError::NoPolicyForTier { .. } => {
            Status::permission_denied("backups are not enabled for this guest")
        }
        BackupError::NoSnapshot { .. } => {
            Status::failed_precondition("there is no backup of this guest to check yet")
        }
        BackupError::NotEncrypted { .. }
        | BackupError::KeyNotPinned { .. }
        | BackupError::NoStorage { .. } => Status::unavailable(
            "the host's backup encryption is not set up; the host operator must fix it",
        ),
        BackupError::LandedUnencrypted { .. } | BackupError::WrongKey { .. } => Status::aborted(
            "the backup failed the host's encryption check and does not count; the host operator can see why in the agent's log",
        ),
        BackupError::Vzdump { .. }
        | BackupError::VerifyNotRecorded(_)
        | BackupError::NoArchive(_) => Status::aborted(BACKUP_FAILED),
        BackupError::ShutDown(_) | BackupError::Interrupted(_) => {
            Status::unavailable(SHUTTING_DOWN)
        }
        BackupError::Pve(p) => pve(p),
        BackupError::Pbs(p) => pbs(p),
        BackupError::Queue(q) => queue(q),
        // Guests name no tier and never verify: these are the agent's own.
        BackupError::UnknownTier(_)
        | BackupError::NotPbs(_)
        | BackupError::NoPbsTier(_)
        | BackupError::NoPbsApi
        | BackupError::Invalid(_)
        | BackupError::History(_)
        | BackupError::Jobs(_) => Status::internal(INTERNAL),
    }
}

/// `GET /restore-test/status`.
pub fn restore_test(e: &RestoreTestError) -> Status {
    match e {
        RestoreTestError::NoPolicy(_) => {
            Status::permission_denied("restore-tests are not enabled for this guest")
        }
        RestoreTestError::Backup(b) => backup(b),
        RestoreTestError::Cleanup(_) => Status::internal(INTERNAL),
    }
}

/// A change refused because the guest is over its row budget (429 through the gateway). The
/// budget's size is the operator's business; the guest learns to slow down.
pub fn budget(e: &GuestBudgetError) -> Status {
    match e {
        GuestBudgetError::OverBudget { .. } => Status::resource_exhausted(
            "this guest has asked for too many changes in the last hour; try again later",
        ),
    }
}

/// Authenticating the bearer token: every way a token fails looks alike (401).
pub fn access(e: &AccessError) -> Status {
    match e {
        AccessError::UnknownToken | AccessError::Tokens(TokensError::Malformed) => {
            Status::unauthenticated("unknown or revoked token")
        }
        AccessError::Tokens(TokensError::Interrupted(_)) => Status::unavailable(SHUTTING_DOWN),
        AccessError::NoPve
        | AccessError::Invalid(_)
        | AccessError::Pve(_)
        | AccessError::Tokens(_)
        | AccessError::CorruptOwner(_) => Status::internal(INTERNAL),
    }
}
