//! The journaled-operation engine: multi-step work on Proxmox (provisioning, self-restore-tests,
//! later guest-loss recovery and updates) recorded step by step in the state database, so that
//! after a crash every operation is either finished or rolled back — never left half done.
//!
//! The API, in the order an operation uses it:
//! - [`JournalWriter::begin`] an operation of a kind on a vmid (refused while an earlier
//!   operation on that vmid is unfinished);
//! - [`step`] runs one step: records it, lets the body record what it creates
//!   ([`JournalWriter::record_created`], *before* the call that creates it) and returns the
//!   Proxmox task to wait for, whose UPID is recorded before the wait;
//! - [`JournalWriter::mark_completed`] when every step is done, or [`compensate`] to remove
//!   exactly what the operation recorded as created (and nothing else), ending `compensated`;
//! - at start-up, [`recover`] resolves every unfinished operation: re-attaches to an in-flight
//!   step's task, completes an operation whose [`Plans`] step list is done, compensates the
//!   rest. [`recover_kind`] does the same for one kind when its owner knows none is running.
//!
//! Guests are the resource kind compensation can remove today ([`restore_new_guest`] creates
//! one the journaled way). The restore POST tags the guest with a random [`GuestMarker`] the
//! journal records beside the vmid; compensation stops and destroys a guest only while it
//! carries that marker, so a guest created later on a reused vmid is never taken for ours. A
//! guest recorded before its restore POST whose UPID never reached the journal is also
//! waited for through this agent's own creating task, when Proxmox lists one.
//!
//! Test hook: `FELHOM_AGENT_FAILPOINT=journal:<n>` makes the process SIGKILL itself right after
//! its n-th journal write of the run (writes made through [`JournalWriter`]). Only the crash
//! test sets it; unset, it does nothing.

mod compensate;
mod failpoint;
mod marker;
mod recover;
mod step;
mod writer;

pub use compensate::{compensate, new_guest_restore, restore_new_guest};
pub use marker::GuestMarker;
pub use recover::{Plans, recover, recover_kind};
pub use step::step;
pub use writer::JournalWriter;

use crate::infra::pve::PveError;
use crate::infra::state::{JournalError, OperationId};

/// Why a journaled step, compensation or recovery failed.
#[derive(Debug, thiserror::Error)]
pub enum JournaledError {
    #[error("Step {step} failed")]
    Pve {
        step: &'static str,
        #[source]
        source: PveError,
    },
    #[error("Cannot write the operation journal")]
    Journal(#[from] JournalError),
    #[error("Interrupted by agent shutdown; the operation is resumed at the next start")]
    Interrupted,
    #[error(
        "Guest {vmid} has an unfinished operation {operation}; it must be resolved first (at the next agent start, or by an operator)"
    )]
    Held { vmid: u32, operation: OperationId },
    #[error("Guest {0} already exists")]
    AlreadyExists(u32),
    /// Compensation cannot decide yet (a create is under way whose task is not listed yet);
    /// it is retried later.
    #[error("Guest {0} is being created by a task not listed yet; compensation is retried")]
    Undecided(u32),
    #[error("Cannot compensate {0}: not a resource this engine removes")]
    NotRemovable(String),
    #[error("{0}")]
    Refused(String),
}

impl JournaledError {
    /// Wraps a Proxmox error of step `step`.
    pub fn pve(step: &'static str) -> impl FnOnce(PveError) -> JournaledError {
        move |source| JournaledError::Pve { step, source }
    }
}
