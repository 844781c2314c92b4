//! Operation journal: multi-step operations, their steps, in-flight UPIDs and created
//! resources, so a restarted agent can resume or compensate whatever a crash interrupted.
//!
//! An operation (`restore guest 9001`, say) is [`Journal::begin`]-ed in state `running`, then
//! runs its steps one at a time: [`Journal::step_started`] (with the UPID if the Proxmox call
//! already returned one), [`Journal::record_upid`] once it does, and [`Journal::step_done`] or
//! [`Journal::step_failed`] when the task ends. A step that is about to create something
//! records it first with [`Journal::record_created`] — *before* issuing the Proxmox call, since
//! a crash between Proxmox creating the guest and the journal noting it would otherwise orphan
//! it. The operation ends [`Journal::mark_completed`], or goes through
//! [`Journal::begin_compensation`] (its undo steps are journaled like any other step and each
//! destroyed resource is noted with [`Journal::record_removed`]) to
//! [`Journal::mark_compensated`], which refuses while any created resource is not yet removed.
//! [`Journal::mark_failed`] is the terminal "gave up, an operator must look" state.
//!
//! The rule "the agent may destroy without a signature only what it created in the same
//! journaled operation" is answered by [`Journal::created_resources`] and
//! [`Journal::creator_of`]; [`Journal::record_removed`] refuses a resource the operation did
//! not create.
//!
//! After a crash, a step in flight *with* a UPID can be re-attached to its Proxmox task; one
//! *without* a UPID may or may not have reached Proxmox, which is why its resources were
//! recorded first: compensation checks each recorded resource and destroys what exists.
//!
//! States: operation `running → completed | compensating | failed`,
//! `compensating → compensated | failed`; step `started → done | failed`. Only one step of an
//! operation is in flight at a time. At restart, [`Journal::unfinished`] lists every operation
//! still `running` or `compensating`, with its steps and resources.

use std::fmt;
use std::str::FromStr;

use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use serde::{Deserialize, Serialize};

use super::{Interrupted, InvalidField, StateDb, Timestamp, check_text, check_vmid, truncate_text};

const MAX_KIND: usize = 64;
const MAX_STEP_NAME: usize = 256;
const MAX_KEY: usize = 255;
const MAX_UPID: usize = 512;
const MAX_ERROR: usize = 4096;
const MAX_RESOURCE_TEXT: usize = 256;

/// Journal failure.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("State database query failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    InvalidField(#[from] InvalidField),
    #[error("Operation {0} does not exist")]
    UnknownOperation(OperationId),
    #[error("Operation {operation} has no step {index}")]
    UnknownStep { operation: OperationId, index: u32 },
    #[error("Operation {operation} is {state}; cannot {action}")]
    WrongOperationState {
        operation: OperationId,
        state: OperationState,
        action: &'static str,
    },
    #[error("Step {index} of operation {operation} is {state}, not started")]
    StepNotInFlight {
        operation: OperationId,
        index: u32,
        state: StepState,
    },
    #[error("Step {index} of operation {operation} is still in flight; cannot {action}")]
    StepInFlight {
        operation: OperationId,
        index: u32,
        action: &'static str,
    },
    #[error("Step {index} of operation {operation} already records task {recorded}")]
    UpidAlreadyRecorded {
        operation: OperationId,
        index: u32,
        recorded: String,
    },
    #[error("Idempotency key {key:?} already belongs to operation {operation}")]
    KeyInUse { key: String, operation: OperationId },
    #[error("Operation {operation} did not create {resource}")]
    NotCreatedHere {
        operation: OperationId,
        resource: Resource,
    },
    #[error("Operation {operation} cannot be compensated yet: {remaining} not removed")]
    ResourcesRemain {
        operation: OperationId,
        remaining: String,
    },
    #[error("Journal holds an unreadable {what}: {value:?}")]
    Corrupt { what: &'static str, value: String },
}

/// Identifier of a journaled operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OperationId(i64);

impl OperationId {
    /// The numeric id, as stored and shown.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for OperationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

impl FromStr for OperationId {
    type Err = InvalidField;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix('#').unwrap_or(s);
        match digits.parse::<i64>() {
            Ok(id) if id > 0 => Ok(Self(id)),
            Ok(_) | Err(_) => Err(InvalidField {
                field: "operation id",
                reason: format!("{s:?} is not a positive number"),
            }),
        }
    }
}

/// Lifecycle state of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperationState {
    Running,
    Completed,
    Compensating,
    Compensated,
    Failed,
}

impl OperationState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
            Self::Failed => "failed",
        }
    }

    fn parse(value: &str) -> Result<Self, JournalError> {
        match value {
            "running" => Ok(Self::Running),
            "completed" => Ok(Self::Completed),
            "compensating" => Ok(Self::Compensating),
            "compensated" => Ok(Self::Compensated),
            "failed" => Ok(Self::Failed),
            other => Err(JournalError::Corrupt {
                what: "operation state",
                value: other.into(),
            }),
        }
    }

    /// Whether the operation still needs the agent (resume or compensate).
    pub const fn is_unfinished(self) -> bool {
        match self {
            Self::Running | Self::Compensating => true,
            Self::Completed | Self::Compensated | Self::Failed => false,
        }
    }
}

impl fmt::Display for OperationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lifecycle state of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepState {
    Started,
    Done,
    Failed,
}

impl StepState {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Done => "done",
            Self::Failed => "failed",
        }
    }

    fn parse(value: &str) -> Result<Self, JournalError> {
        match value {
            "started" => Ok(Self::Started),
            "done" => Ok(Self::Done),
            "failed" => Ok(Self::Failed),
            other => Err(JournalError::Corrupt {
                what: "step state",
                value: other.into(),
            }),
        }
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something a step creates on the host, which compensation may have to destroy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Resource {
    /// A guest (LXC container) with this vmid. `marker` is the random tag the creating POST
    /// gave it: compensation destroys a guest only while it still carries that tag, so a
    /// guest someone else later created on the same vmid is never taken for this one. Absent
    /// on records that predate markers (such a guest is left for an operator).
    Guest {
        vmid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        marker: Option<String>,
    },
    /// A snapshot of a guest.
    Snapshot { vmid: u32, name: String },
    /// A storage volume, by Proxmox volume id (`local-lvm:vm-9001-disk-0`).
    Volume { volid: String },
    /// A backup archive, by Proxmox volume id.
    BackupArchive { volid: String },
}

impl Resource {
    fn validate(&self) -> Result<(), InvalidField> {
        match self {
            Self::Guest { vmid, marker } => {
                check_vmid(*vmid)?;
                marker
                    .as_deref()
                    .map_or(Ok(()), |m| check_text("guest marker", m, MAX_RESOURCE_TEXT))
            }
            Self::Snapshot { vmid, name } => {
                check_vmid(*vmid)?;
                check_text("snapshot name", name, MAX_RESOURCE_TEXT)
            }
            Self::Volume { volid } | Self::BackupArchive { volid } => {
                check_text("volume id", volid, MAX_RESOURCE_TEXT)
            }
        }
    }

    /// Canonical stored form (serde_json writes fields in declaration order).
    fn encode(&self) -> String {
        serde_json::to_string(self).expect("a resource is plain strings and integers")
    }

    fn decode(text: &str) -> Result<Self, JournalError> {
        serde_json::from_str(text).map_err(|_| JournalError::Corrupt {
            what: "resource",
            value: text.into(),
        })
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Guest { vmid, .. } => write!(f, "guest {vmid}"),
            Self::Snapshot { vmid, name } => write!(f, "snapshot {name:?} of guest {vmid}"),
            Self::Volume { volid } => write!(f, "volume {volid}"),
            Self::BackupArchive { volid } => write!(f, "backup archive {volid}"),
        }
    }
}

/// What [`Journal::begin`] needs to start an operation.
#[derive(Debug, Clone, Copy)]
pub struct NewOperation<'a> {
    /// What the operation does, e.g. `provision`, `restore-test`.
    pub kind: &'a str,
    /// The guest it works on, if any.
    pub vmid: Option<u32>,
    /// Caller's idempotency key; a second `begin` with the same key is refused.
    pub idempotency_key: Option<&'a str>,
}

/// Reference to one step of one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StepRef {
    pub operation: OperationId,
    pub index: u32,
}

/// A resource an operation's step created, and whether compensation has removed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedResource {
    pub resource: Resource,
    pub step: u32,
    pub created_at: Timestamp,
    pub removed_at: Option<Timestamp>,
}

/// A journaled step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub index: u32,
    pub name: String,
    pub state: StepState,
    pub upid: Option<String>,
    pub error: Option<String>,
    pub started_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// A journaled operation with its steps and created resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub id: OperationId,
    pub kind: String,
    pub vmid: Option<u32>,
    pub state: OperationState,
    pub idempotency_key: Option<String>,
    pub error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub finished_at: Option<Timestamp>,
    pub steps: Vec<Step>,
    pub resources: Vec<CreatedResource>,
}

impl Operation {
    /// The step currently in flight, if any.
    pub fn in_flight_step(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.state == StepState::Started)
    }

    /// Created resources not yet removed.
    pub fn remaining_resources(&self) -> impl Iterator<Item = &Resource> {
        self.resources
            .iter()
            .filter(|r| r.removed_at.is_none())
            .map(|r| &r.resource)
    }
}

/// Typed access to the operation journal; get one from [`StateDb::journal`].
#[derive(Debug, Clone, Copy)]
pub struct Journal<'db> {
    db: &'db StateDb,
}

impl<'db> Journal<'db> {
    pub(super) fn new(db: &'db StateDb) -> Self {
        Self { db }
    }

    /// Starts a new operation in state `running`.
    pub fn begin(&self, new: NewOperation<'_>) -> Result<OperationId, JournalError> {
        check_text("operation kind", new.kind, MAX_KIND)?;
        if let Some(vmid) = new.vmid {
            check_vmid(vmid)?;
        }
        if let Some(key) = new.idempotency_key {
            check_text("idempotency key", key, MAX_KEY)?;
        }
        let now = self.db.now();
        self.write(|tx| {
            if let Some(key) = new.idempotency_key {
                let existing: Option<i64> = tx
                    .query_row(
                        "SELECT id FROM operations WHERE idempotency_key = ?1",
                        [key],
                        |row| row.get(0),
                    )
                    .optional()?;
                if let Some(id) = existing {
                    return Err(JournalError::KeyInUse {
                        key: key.to_owned(),
                        operation: OperationId(id),
                    });
                }
            }
            tx.execute(
                "INSERT INTO operations (kind, vmid, state, idempotency_key, created_at, updated_at)
                 VALUES (?1, ?2, 'running', ?3, ?4, ?4)",
                params![new.kind, new.vmid, new.idempotency_key, now],
            )?;
            Ok(OperationId(tx.last_insert_rowid()))
        })
    }

    /// Records that the next step of `operation` has started, with its UPID if already known.
    pub fn step_started(
        &self,
        operation: OperationId,
        name: &str,
        upid: Option<&str>,
    ) -> Result<StepRef, JournalError> {
        check_text("step name", name, MAX_STEP_NAME)?;
        if let Some(upid) = upid {
            check_upid(upid)?;
        }
        let now = self.db.now();
        self.write(|tx| {
            let state = operation_state(tx, operation)?;
            require_open(operation, state, "start a step")?;
            require_no_step_in_flight(tx, operation, "start another step")?;
            let index: u32 = tx.query_row(
                "SELECT COALESCE(MAX(step_index) + 1, 0) FROM operation_steps WHERE operation_id = ?1",
                [operation.0],
                |row| row.get(0),
            )?;
            tx.execute(
                "INSERT INTO operation_steps (operation_id, step_index, name, state, upid, started_at)
                 VALUES (?1, ?2, ?3, 'started', ?4, ?5)",
                params![operation.0, index, name, upid, now],
            )?;
            touch(tx, operation, now)?;
            Ok(StepRef { operation, index })
        })
    }

    /// Records the UPID of the Proxmox task a running step is waiting for.
    pub fn record_upid(&self, step: StepRef, upid: &str) -> Result<(), JournalError> {
        check_upid(upid)?;
        let now = self.db.now();
        self.write(|tx| {
            let (state, recorded) = step_row(tx, step)?;
            require_step_started(step, state)?;
            match recorded {
                Some(recorded) if recorded == upid => return Ok(()),
                Some(recorded) => {
                    return Err(JournalError::UpidAlreadyRecorded {
                        operation: step.operation,
                        index: step.index,
                        recorded,
                    });
                }
                None => {}
            }
            tx.execute(
                "UPDATE operation_steps SET upid = ?3 WHERE operation_id = ?1 AND step_index = ?2",
                params![step.operation.0, step.index, upid],
            )?;
            touch(tx, step.operation, now)
        })
    }

    /// Records that the in-flight `step` is about to create (or has created) `resource`.
    /// Call this before issuing the Proxmox call that creates it.
    pub fn record_created(&self, step: StepRef, resource: &Resource) -> Result<(), JournalError> {
        resource.validate()?;
        let now = self.db.now();
        self.write(|tx| {
            let (state, _) = step_row(tx, step)?;
            require_step_started(step, state)?;
            tx.execute(
                "INSERT INTO operation_resources (operation_id, step_index, resource, created_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (operation_id, resource) DO UPDATE SET
                     step_index = excluded.step_index, removed_at = NULL",
                params![step.operation.0, step.index, resource.encode(), now],
            )?;
            touch(tx, step.operation, now)
        })
    }

    /// Marks the in-flight `step` done.
    pub fn step_done(&self, step: StepRef) -> Result<(), JournalError> {
        self.finish_step(step, StepState::Done, None)
    }

    /// Marks the in-flight `step` failed with `error` (kept, shortened if very long).
    pub fn step_failed(&self, step: StepRef, error: &str) -> Result<(), JournalError> {
        self.finish_step(step, StepState::Failed, Some(error))
    }

    /// Moves a running operation to `compensating`, recording why.
    pub fn begin_compensation(
        &self,
        operation: OperationId,
        reason: &str,
    ) -> Result<(), JournalError> {
        self.transition(
            operation,
            &[OperationState::Running],
            OperationState::Compensating,
            Some(reason),
            "begin compensation",
        )
    }

    /// Records that compensation (or a later step of the operation itself) removed `resource`,
    /// which this operation must have created.
    pub fn record_removed(
        &self,
        operation: OperationId,
        resource: &Resource,
    ) -> Result<(), JournalError> {
        let now = self.db.now();
        self.write(|tx| {
            let state = operation_state(tx, operation)?;
            require_open(operation, state, "record a removal")?;
            let changed = tx.execute(
                "UPDATE operation_resources SET removed_at = COALESCE(removed_at, ?3)
                 WHERE operation_id = ?1 AND resource = ?2",
                params![operation.0, resource.encode(), now],
            )?;
            if changed == 0 {
                return Err(JournalError::NotCreatedHere {
                    operation,
                    resource: resource.clone(),
                });
            }
            touch(tx, operation, now)
        })
    }

    /// Marks a running operation completed; no step may be in flight.
    pub fn mark_completed(&self, operation: OperationId) -> Result<(), JournalError> {
        self.transition(
            operation,
            &[OperationState::Running],
            OperationState::Completed,
            None,
            "complete",
        )
    }

    /// Marks a compensating operation compensated; no step may be in flight and every
    /// resource it created must be recorded as removed.
    pub fn mark_compensated(&self, operation: OperationId) -> Result<(), JournalError> {
        self.transition(
            operation,
            &[OperationState::Compensating],
            OperationState::Compensated,
            None,
            "mark compensated",
        )
    }

    /// Gives up on an operation (terminal; an operator must look). A step still in flight is
    /// marked failed with the same error.
    pub fn mark_failed(&self, operation: OperationId, error: &str) -> Result<(), JournalError> {
        self.transition(
            operation,
            &[OperationState::Running, OperationState::Compensating],
            OperationState::Failed,
            Some(error),
            "mark failed",
        )
    }

    /// One operation with its steps and resources.
    pub fn get(&self, operation: OperationId) -> Result<Option<Operation>, JournalError> {
        self.db.with_conn(|conn| {
            let tx = conn.transaction()?;
            let found = load_operations(&tx, "WHERE id = ?1", params![operation.0])?;
            Ok(found.into_iter().next())
        })
    }

    /// Every operation still `running` or `compensating`, oldest first: the restart to-do list.
    pub fn unfinished(&self) -> Result<Vec<Operation>, JournalError> {
        self.db.with_conn(|conn| {
            let tx = conn.transaction()?;
            load_operations(
                &tx,
                "WHERE state IN ('running', 'compensating') ORDER BY id",
                params![],
            )
        })
    }

    /// The `limit` most recent operations, newest first.
    pub fn recent(&self, limit: u32) -> Result<Vec<Operation>, JournalError> {
        self.db.with_conn(|conn| {
            let tx = conn.transaction()?;
            load_operations(&tx, "ORDER BY id DESC LIMIT ?1", params![limit])
        })
    }

    /// Resources `operation` created, in the order recorded.
    pub fn created_resources(
        &self,
        operation: OperationId,
    ) -> Result<Vec<CreatedResource>, JournalError> {
        self.db.with_conn(|conn| {
            let tx = conn.transaction()?;
            operation_state(&tx, operation)?;
            load_resources(&tx, operation)
        })
    }

    /// The operation that created `resource` and has not recorded removing it, if any: the
    /// only operation allowed to destroy it without an operator signature.
    pub fn creator_of(&self, resource: &Resource) -> Result<Option<OperationId>, JournalError> {
        self.db.with_conn(|conn| {
            let id: Option<i64> = conn
                .query_row(
                    "SELECT operation_id FROM operation_resources
                     WHERE resource = ?1 AND removed_at IS NULL
                     ORDER BY operation_id DESC LIMIT 1",
                    [resource.encode()],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(id.map(OperationId))
        })
    }

    fn finish_step(
        &self,
        step: StepRef,
        to: StepState,
        error: Option<&str>,
    ) -> Result<(), JournalError> {
        let now = self.db.now();
        let error = error.map(|e| truncate_text(e, MAX_ERROR));
        self.write(|tx| {
            let (state, _) = step_row(tx, step)?;
            require_step_started(step, state)?;
            tx.execute(
                "UPDATE operation_steps SET state = ?3, error = ?4, finished_at = ?5
                 WHERE operation_id = ?1 AND step_index = ?2",
                params![step.operation.0, step.index, to.as_str(), error, now],
            )?;
            touch(tx, step.operation, now)
        })
    }

    fn transition(
        &self,
        operation: OperationId,
        from: &[OperationState],
        to: OperationState,
        error: Option<&str>,
        action: &'static str,
    ) -> Result<(), JournalError> {
        let now = self.db.now();
        let error = error.map(|e| truncate_text(e, MAX_ERROR));
        self.write(|tx| {
            let state = operation_state(tx, operation)?;
            if !from.contains(&state) {
                return Err(JournalError::WrongOperationState {
                    operation,
                    state,
                    action,
                });
            }
            match to {
                OperationState::Failed => {
                    tx.execute(
                        "UPDATE operation_steps SET state = 'failed', error = ?2, finished_at = ?3
                         WHERE operation_id = ?1 AND state = 'started'",
                        params![operation.0, error, now],
                    )?;
                }
                OperationState::Compensated => {
                    require_no_step_in_flight(tx, operation, action)?;
                    let remaining: Vec<Resource> = load_resources(tx, operation)?
                        .into_iter()
                        .filter(|r| r.removed_at.is_none())
                        .map(|r| r.resource)
                        .collect();
                    if !remaining.is_empty() {
                        let remaining = remaining
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ");
                        return Err(JournalError::ResourcesRemain {
                            operation,
                            remaining,
                        });
                    }
                }
                OperationState::Completed | OperationState::Compensating => {
                    require_no_step_in_flight(tx, operation, action)?;
                }
                OperationState::Running => {}
            }
            let finished = if to.is_unfinished() { None } else { Some(now) };
            tx.execute(
                "UPDATE operations SET state = ?2, error = COALESCE(?3, error), updated_at = ?4,
                 finished_at = ?5 WHERE id = ?1",
                params![operation.0, to.as_str(), error, now, finished],
            )?;
            Ok(())
        })
    }

    /// Runs `f` in an immediate (write-locking) transaction, committing if it succeeds.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        self.db.with_conn(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
    }
}

/// A UPID as Proxmox prints it: `UPID:` … `:`, printable ASCII, bounded.
fn check_upid(upid: &str) -> Result<(), InvalidField> {
    let shaped = upid.starts_with("UPID:")
        && upid.ends_with(':')
        && upid.len() <= MAX_UPID
        && upid.bytes().all(|b| b.is_ascii_graphic());
    if shaped {
        Ok(())
    } else {
        Err(InvalidField {
            field: "UPID",
            reason: "expected UPID:<node>:...: in printable ASCII".into(),
        })
    }
}

fn operation_state(
    tx: &Transaction<'_>,
    operation: OperationId,
) -> Result<OperationState, JournalError> {
    let state: Option<String> = tx
        .query_row(
            "SELECT state FROM operations WHERE id = ?1",
            [operation.0],
            |row| row.get(0),
        )
        .optional()?;
    let state = state.ok_or(JournalError::UnknownOperation(operation))?;
    OperationState::parse(&state)
}

fn require_open(
    operation: OperationId,
    state: OperationState,
    action: &'static str,
) -> Result<(), JournalError> {
    if state.is_unfinished() {
        Ok(())
    } else {
        Err(JournalError::WrongOperationState {
            operation,
            state,
            action,
        })
    }
}

fn require_no_step_in_flight(
    tx: &Transaction<'_>,
    operation: OperationId,
    action: &'static str,
) -> Result<(), JournalError> {
    let in_flight: Option<u32> = tx
        .query_row(
            "SELECT step_index FROM operation_steps WHERE operation_id = ?1 AND state = 'started'",
            [operation.0],
            |row| row.get(0),
        )
        .optional()?;
    match in_flight {
        Some(index) => Err(JournalError::StepInFlight {
            operation,
            index,
            action,
        }),
        None => Ok(()),
    }
}

fn step_row(
    tx: &Transaction<'_>,
    step: StepRef,
) -> Result<(StepState, Option<String>), JournalError> {
    let row: Option<(String, Option<String>)> = tx
        .query_row(
            "SELECT state, upid FROM operation_steps WHERE operation_id = ?1 AND step_index = ?2",
            params![step.operation.0, step.index],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let (state, upid) = match row {
        Some(row) => row,
        None => {
            operation_state(tx, step.operation)?;
            return Err(JournalError::UnknownStep {
                operation: step.operation,
                index: step.index,
            });
        }
    };
    Ok((StepState::parse(&state)?, upid))
}

fn require_step_started(step: StepRef, state: StepState) -> Result<(), JournalError> {
    match state {
        StepState::Started => Ok(()),
        StepState::Done | StepState::Failed => Err(JournalError::StepNotInFlight {
            operation: step.operation,
            index: step.index,
            state,
        }),
    }
}

fn touch(tx: &Transaction<'_>, operation: OperationId, now: Timestamp) -> Result<(), JournalError> {
    tx.execute(
        "UPDATE operations SET updated_at = ?2 WHERE id = ?1",
        params![operation.0, now],
    )?;
    Ok(())
}

fn load_operations(
    tx: &Transaction<'_>,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Operation>, JournalError> {
    let sql = format!(
        "SELECT id, kind, vmid, state, idempotency_key, error, created_at, updated_at, finished_at
         FROM operations {filter}"
    );
    let mut stmt = tx.prepare(&sql)?;
    let rows = stmt.query_map(args, |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, Option<u32>>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, Option<String>>(4)?,
            row.get::<_, Option<String>>(5)?,
            row.get::<_, Timestamp>(6)?,
            row.get::<_, Timestamp>(7)?,
            row.get::<_, Option<Timestamp>>(8)?,
        ))
    })?;
    let mut operations = Vec::new();
    for row in rows {
        let (id, kind, vmid, state, idempotency_key, error, created_at, updated_at, finished_at) =
            row?;
        let id = OperationId(id);
        operations.push(Operation {
            id,
            kind,
            vmid,
            state: OperationState::parse(&state)?,
            idempotency_key,
            error,
            created_at,
            updated_at,
            finished_at,
            steps: load_steps(tx, id)?,
            resources: load_resources(tx, id)?,
        });
    }
    Ok(operations)
}

fn load_steps(tx: &Transaction<'_>, operation: OperationId) -> Result<Vec<Step>, JournalError> {
    let mut stmt = tx.prepare_cached(
        "SELECT step_index, name, state, upid, error, started_at, finished_at
         FROM operation_steps WHERE operation_id = ?1 ORDER BY step_index",
    )?;
    let rows = stmt.query_map([operation.0], |row| {
        Ok((
            row.get::<_, u32>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, Option<String>>(3)?,
            row.get::<_, Option<String>>(4)?,
            row.get::<_, Timestamp>(5)?,
            row.get::<_, Option<Timestamp>>(6)?,
        ))
    })?;
    let mut steps = Vec::new();
    for row in rows {
        let (index, name, state, upid, error, started_at, finished_at) = row?;
        steps.push(Step {
            index,
            name,
            state: StepState::parse(&state)?,
            upid,
            error,
            started_at,
            finished_at,
        });
    }
    Ok(steps)
}

fn load_resources(
    tx: &Transaction<'_>,
    operation: OperationId,
) -> Result<Vec<CreatedResource>, JournalError> {
    let mut stmt = tx.prepare_cached(
        "SELECT resource, step_index, created_at, removed_at FROM operation_resources
         WHERE operation_id = ?1 ORDER BY created_at, rowid",
    )?;
    let rows = stmt.query_map([operation.0], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, u32>(1)?,
            row.get::<_, Timestamp>(2)?,
            row.get::<_, Option<Timestamp>>(3)?,
        ))
    })?;
    let mut resources = Vec::new();
    for row in rows {
        let (resource, step, created_at, removed_at) = row?;
        resources.push(CreatedResource {
            resource: Resource::decode(&resource)?,
            step,
            created_at,
            removed_at,
        });
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::infra::state::FakeClock;

    const UPID: &str =
        "UPID:pve1:0001E240:00A2F3B1:6745A1C2:vzrestore:9001:felhom-agent@pve!agent:";

    fn db() -> (tempfile::TempDir, StateDb, FakeClock) {
        let dir = tempfile::tempdir().unwrap();
        let clock = FakeClock::new(Timestamp::from_unix_millis(1_000_000));
        let db = StateDb::open_with_clock(dir.path(), Arc::new(clock.clone())).unwrap();
        (dir, db, clock)
    }

    fn begin(db: &StateDb) -> OperationId {
        db.journal()
            .begin(NewOperation {
                kind: "provision",
                vmid: Some(9001),
                idempotency_key: None,
            })
            .unwrap()
    }

    #[test]
    fn steps_are_numbered_in_order_and_record_their_upid() {
        let (_dir, db, _clock) = db();
        let journal = db.journal();
        let op = begin(&db);
        let first = journal
            .step_started(op, "restore golden image", None)
            .unwrap();
        journal.record_upid(first, UPID).unwrap();
        journal.step_done(first).unwrap();
        let second = journal.step_started(op, "start guest", Some(UPID)).unwrap();
        assert_eq!((first.index, second.index), (0, 1));
        let loaded = journal.get(op).unwrap().unwrap();
        assert_eq!(loaded.steps[0].upid.as_deref(), Some(UPID));
        assert_eq!(loaded.steps[0].state, StepState::Done);
        assert_eq!(loaded.in_flight_step().map(|s| s.index), Some(1));
    }

    #[test]
    fn a_second_step_cannot_start_while_one_is_in_flight() {
        let (_dir, db, _clock) = db();
        let op = begin(&db);
        db.journal().step_started(op, "restore", None).unwrap();
        let err = db.journal().step_started(op, "start", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Step 0 of operation #1 is still in flight; cannot start another step"
        );
    }

    #[test]
    fn a_different_upid_for_the_same_step_is_refused() {
        let (_dir, db, _clock) = db();
        let op = begin(&db);
        let step = db
            .journal()
            .step_started(op, "restore", Some(UPID))
            .unwrap();
        db.journal().record_upid(step, UPID).unwrap();
        let other = UPID.replace("0001E240", "0001E241");
        let err = db.journal().record_upid(step, &other).unwrap_err();
        assert!(
            matches!(err, JournalError::UpidAlreadyRecorded { .. }),
            "{err}"
        );
    }

    #[test]
    fn malformed_upid_is_refused() {
        let (_dir, db, _clock) = db();
        let op = begin(&db);
        let err = db
            .journal()
            .step_started(op, "restore", Some("not a upid"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid UPID: expected UPID:<node>:...: in printable ASCII"
        );
    }

    #[test]
    fn finished_step_cannot_finish_again() {
        let (_dir, db, _clock) = db();
        let op = begin(&db);
        let step = db.journal().step_started(op, "restore", None).unwrap();
        db.journal()
            .step_failed(step, "task failed: exit code 1")
            .unwrap();
        let err = db.journal().step_done(step).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Step 0 of operation #1 is failed, not started"
        );
    }

    #[test]
    fn completed_operation_accepts_no_more_steps() {
        let (_dir, db, _clock) = db();
        let op = begin(&db);
        let step = db.journal().step_started(op, "restore", None).unwrap();
        db.journal().step_done(step).unwrap();
        db.journal().mark_completed(op).unwrap();
        let err = db.journal().step_started(op, "again", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Operation #1 is completed; cannot start a step"
        );
        assert!(db.journal().unfinished().unwrap().is_empty());
    }

    #[test]
    fn compensated_requires_every_created_resource_removed() {
        let (_dir, db, _clock) = db();
        let journal = db.journal();
        let op = begin(&db);
        let step = journal.step_started(op, "restore", None).unwrap();
        journal
            .record_created(
                step,
                &Resource::Guest {
                    vmid: 9001,
                    marker: None,
                },
            )
            .unwrap();
        journal.step_failed(step, "task failed").unwrap();
        journal.begin_compensation(op, "restore failed").unwrap();
        let undo = journal
            .step_started(op, "destroy guest 9001", None)
            .unwrap();
        journal.step_done(undo).unwrap();
        let err = journal.mark_compensated(op).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Operation #1 cannot be compensated yet: guest 9001 not removed"
        );
        journal
            .record_removed(
                op,
                &Resource::Guest {
                    vmid: 9001,
                    marker: None,
                },
            )
            .unwrap();
        journal.mark_compensated(op).unwrap();
        let loaded = journal.get(op).unwrap().unwrap();
        assert_eq!(loaded.state, OperationState::Compensated);
        assert_eq!(loaded.error.as_deref(), Some("restore failed"));
        assert!(loaded.finished_at.is_some());
    }

    #[test]
    fn only_the_creating_operation_may_record_a_removal() {
        let (_dir, db, _clock) = db();
        let journal = db.journal();
        let creator = begin(&db);
        let step = journal.step_started(creator, "restore", None).unwrap();
        journal
            .record_created(
                step,
                &Resource::Guest {
                    vmid: 9001,
                    marker: None,
                },
            )
            .unwrap();
        let other = journal
            .begin(NewOperation {
                kind: "cleanup",
                vmid: Some(9001),
                idempotency_key: None,
            })
            .unwrap();
        let err = journal
            .record_removed(
                other,
                &Resource::Guest {
                    vmid: 9001,
                    marker: None,
                },
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "Operation #2 did not create guest 9001");
        assert_eq!(
            journal
                .creator_of(&Resource::Guest {
                    vmid: 9001,
                    marker: None
                })
                .unwrap(),
            Some(creator)
        );
        assert_eq!(
            journal
                .creator_of(&Resource::Guest {
                    vmid: 9002,
                    marker: None
                })
                .unwrap(),
            None
        );
    }

    #[test]
    fn recreating_a_removed_resource_makes_it_remaining_again() {
        let (_dir, db, _clock) = db();
        let journal = db.journal();
        let op = begin(&db);
        let guest = Resource::Guest {
            vmid: 9001,
            marker: None,
        };
        let first = journal.step_started(op, "restore", None).unwrap();
        journal.record_created(first, &guest).unwrap();
        journal.record_removed(op, &guest).unwrap();
        journal
            .step_failed(first, "restore failed; removed the partial guest")
            .unwrap();
        let retry = journal.step_started(op, "restore again", None).unwrap();
        journal.record_created(retry, &guest).unwrap();
        let loaded = journal.get(op).unwrap().unwrap();
        assert_eq!(loaded.remaining_resources().collect::<Vec<_>>(), [&guest]);
        assert_eq!(loaded.resources[0].step, 1);
        assert_eq!(journal.creator_of(&guest).unwrap(), Some(op));
    }

    #[test]
    fn idempotency_key_cannot_begin_two_operations() {
        let (_dir, db, _clock) = db();
        let new = NewOperation {
            kind: "provision",
            vmid: Some(9001),
            idempotency_key: Some("k-1"),
        };
        let first = db.journal().begin(new).unwrap();
        let err = db.journal().begin(new).unwrap_err();
        assert!(matches!(err, JournalError::KeyInUse { operation, .. } if operation == first));
    }

    #[test]
    fn failing_an_operation_closes_its_in_flight_step() {
        let (_dir, db, _clock) = db();
        let op = begin(&db);
        db.journal()
            .step_started(op, "restore", Some(UPID))
            .unwrap();
        db.journal().mark_failed(op, "task vanished").unwrap();
        let loaded = db.journal().get(op).unwrap().unwrap();
        assert_eq!(loaded.state, OperationState::Failed);
        assert_eq!(loaded.steps[0].state, StepState::Failed);
        assert_eq!(loaded.steps[0].error.as_deref(), Some("task vanished"));
    }

    #[test]
    fn unknown_operation_is_named() {
        let (_dir, db, _clock) = db();
        let err = db.journal().mark_completed(OperationId(77)).unwrap_err();
        assert_eq!(err.to_string(), "Operation #77 does not exist");
    }

    #[test]
    fn timestamps_come_from_the_clock() {
        let (_dir, db, clock) = db();
        let op = begin(&db);
        clock.advance(std::time::Duration::from_secs(5));
        let step = db.journal().step_started(op, "restore", None).unwrap();
        db.journal().step_done(step).unwrap();
        let loaded = db.journal().get(op).unwrap().unwrap();
        assert_eq!(loaded.created_at.unix_millis(), 1_000_000);
        assert_eq!(loaded.steps[0].started_at.unix_millis(), 1_005_000);
        assert_eq!(loaded.updated_at.unix_millis(), 1_005_000);
    }

    #[test]
    fn operation_id_parses_with_or_without_hash() {
        assert_eq!("#12".parse::<OperationId>().unwrap(), OperationId(12));
        assert_eq!("12".parse::<OperationId>().unwrap(), OperationId(12));
        assert!("0".parse::<OperationId>().is_err());
        assert!("x".parse::<OperationId>().is_err());
    }
}
