//! Request bodies → typed actions, and LocalApi replies → the `data` payloads of LOCAL-API.md.
//!
//! Bodies are JSON objects only, decoded into `deny_unknown_fields` structs with the shapes of
//! LOCAL-API.md, so a misspelled field is a 400 naming it rather than silently ignored (`POST
//! /backup` takes no fields at all: `{"x":1}` is refused naming `x`). An empty body counts as
//! `{}` (clients differ in whether they send one for all-optional bodies); a JSON array is
//! refused rather than read positionally into the fields. GET routes take no body: theirs is
//! never read (see `service`).
//!
//! Replies are explicit serde structs (not the proto3 JSON mapping): field names are exactly the
//! document's snake_case keys, `vmid` first, and optional fields are omitted when empty. Each is
//! built field by field from the proto message, so the operator-only fields some of those
//! messages carry (`BackupStatus.trigger`/`runs`/…, `RestoreTestStatus.job_id`/`volid`/…) never
//! reach a guest. Field by field:
//! - `POST /backup` → `{vmid, job_id, phase}`; `BackupAccepted.new_job` is not data but the HTTP
//!   status ([`Reply::http_status`]: 202 for a new job, 200 for joining the queued/running one).
//! - `GET /backup/due` → `{vmid, due, reason}`.
//! - `GET /backup/status` → `{vmid, phase, job_id, error}`, empty `job_id`/`error` kept as keys.
//! - `GET /restore-test/status` → `{vmid, phase, last_run_at?, result, detail?}`: `last_run_at`
//!   as RFC 3339 UTC text ([`crate::timestamp`]), omitted when 0; `detail` omitted when empty.
//!   A `last_run_at` RFC 3339 cannot show is an agent fault (INTERNAL, i.e. 500).
//!
//! Only shape is checked here. What a valid snapshot name is, whether the guest has it, whether
//! the guest has a backup policy, and the `phase`/`result` words are the agent's (it knows
//! Proxmox's rules and owns the job state); its INVALID_ARGUMENT comes back as 400, its
//! FAILED_PRECONDITION ("guest has no backup policy") as 409.

use felhom_proto::agent::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::routes::Rpc;
use crate::timestamp::{self, TimestampError};

/// Longest accepted snapshot description; Proxmox stores it in the guest config, where a huge
/// one does harm. (The body limit bounds it anyway; this gives a clearer error.)
pub const MAX_DESCRIPTION_LEN: usize = 8 * 1024;

/// One LocalApi call, fully decoded.
#[derive(Debug, PartialEq)]
pub enum Action {
    GetStorage,
    Snapshot(pb::SnapshotRequest),
    Rollback(pb::RollbackRequest),
    StartBackup,
    GetBackupDue,
    GetBackupStatus,
    GetRestoreTestStatus,
}

/// A request body the gateway cannot turn into an action; the text is what the caller sees.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("invalid request body: {0}")]
    Json(String),
    #[error("invalid request body: {field} must not be empty")]
    Empty { field: &'static str },
    #[error("invalid request body: {field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("invalid request body: expected a JSON object, found an array")]
    NotAnObject,
}

/// `POST /snapshot` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

/// `POST /rollback` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    snapshot: String,
}

/// `POST /backup` body: no fields (the caller is the guest; what to back up is its policy).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupBody {}

/// `GET /storage` data.
#[derive(Debug, Serialize, PartialEq)]
pub struct StorageData {
    pub vmid: u32,
    pub mounts: Vec<MountData>,
}

/// One entry of [`StorageData::mounts`].
#[derive(Debug, Serialize, PartialEq)]
pub struct MountData {
    pub key: String,
    pub storage: String,
    pub mount_point: String,
    pub class: String,
    pub backup: bool,
}

/// `POST /snapshot` and `POST /rollback` data.
#[derive(Debug, Serialize, PartialEq)]
pub struct SnapshotData {
    pub vmid: u32,
    pub snapshot: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// `POST /backup` data: the job the caller polls `GET /backup/status` for.
#[derive(Debug, Serialize, PartialEq)]
pub struct BackupJobData {
    pub vmid: u32,
    pub job_id: String,
    pub phase: String,
    /// Whether this call enqueued the job (202) or joined one already queued or running (200).
    /// The HTTP status says it; it is not part of the documented data.
    #[serde(skip)]
    pub new_job: bool,
}

/// `GET /backup/due` data.
#[derive(Debug, Serialize, PartialEq)]
pub struct BackupDueData {
    pub vmid: u32,
    pub due: bool,
    pub reason: String,
}

/// `GET /backup/status` data. `job_id` and `error` are sent even when empty (LOCAL-API.md).
#[derive(Debug, Serialize, PartialEq)]
pub struct BackupStatusData {
    pub vmid: u32,
    pub phase: String,
    pub job_id: String,
    pub error: String,
}

/// `GET /restore-test/status` data.
#[derive(Debug, Serialize, PartialEq)]
pub struct RestoreTestStatusData {
    pub vmid: u32,
    pub phase: String,
    /// RFC 3339 UTC; absent while no test has finished.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<String>,
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A decoded LocalApi reply, ready to be the envelope's `data`.
#[derive(Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Reply {
    Storage(StorageData),
    Snapshot(SnapshotData),
    BackupJob(BackupJobData),
    BackupDue(BackupDueData),
    BackupStatus(BackupStatusData),
    RestoreTestStatus(RestoreTestStatusData),
}

impl Reply {
    /// The success status this reply is sent with: 200, except 202 for a newly enqueued backup
    /// (the client accepts both on POST; GETs are always 200).
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            Reply::BackupJob(job) if job.new_job => http::StatusCode::ACCEPTED,
            Reply::BackupJob(_)
            | Reply::Storage(_)
            | Reply::Snapshot(_)
            | Reply::BackupDue(_)
            | Reply::BackupStatus(_)
            | Reply::RestoreTestStatus(_) => http::StatusCode::OK,
        }
    }
}

impl Rpc {
    /// Decodes the request body for this RPC. GET routes ignore their body.
    pub fn action(self, body: &[u8]) -> Result<Action, BodyError> {
        match self {
            Rpc::GetStorage => Ok(Action::GetStorage),
            Rpc::Snapshot => {
                let b: SnapshotBody = decode(body)?;
                let description = b.description.unwrap_or_default();
                if description.len() > MAX_DESCRIPTION_LEN {
                    return Err(BodyError::TooLong {
                        field: "description",
                        max: MAX_DESCRIPTION_LEN,
                    });
                }
                Ok(Action::Snapshot(pb::SnapshotRequest {
                    name: b.name.unwrap_or_default(),
                    description,
                }))
            }
            Rpc::Rollback => {
                let b: RollbackBody = decode(body)?;
                if b.snapshot.is_empty() {
                    return Err(BodyError::Empty { field: "snapshot" });
                }
                Ok(Action::Rollback(pb::RollbackRequest {
                    snapshot: b.snapshot,
                }))
            }
            Rpc::StartBackup => {
                let BackupBody {} = decode(body)?;
                Ok(Action::StartBackup)
            }
            Rpc::GetBackupDue => Ok(Action::GetBackupDue),
            Rpc::GetBackupStatus => Ok(Action::GetBackupStatus),
            Rpc::GetRestoreTestStatus => Ok(Action::GetRestoreTestStatus),
        }
    }
}

impl From<pb::GuestStorage> for StorageData {
    fn from(s: pb::GuestStorage) -> Self {
        Self {
            vmid: s.vmid,
            mounts: s
                .mounts
                .into_iter()
                .map(|m| MountData {
                    key: m.key,
                    storage: m.storage,
                    mount_point: m.mount_point,
                    class: m.class,
                    backup: m.backup,
                })
                .collect(),
        }
    }
}

impl From<pb::SnapshotResult> for SnapshotData {
    fn from(s: pb::SnapshotResult) -> Self {
        Self {
            vmid: s.vmid,
            snapshot: s.snapshot,
            job_id: Some(s.job_id).filter(|j| !j.is_empty()),
        }
    }
}

impl From<pb::BackupAccepted> for BackupJobData {
    fn from(b: pb::BackupAccepted) -> Self {
        Self {
            vmid: b.vmid,
            job_id: b.job_id,
            phase: b.phase,
            new_job: b.new_job,
        }
    }
}

impl From<pb::BackupDue> for BackupDueData {
    fn from(d: pb::BackupDue) -> Self {
        Self {
            vmid: d.vmid,
            due: d.due,
            reason: d.reason,
        }
    }
}

impl From<pb::BackupStatus> for BackupStatusData {
    /// Keeps the four guest-facing fields; trigger, consistency, runs and times are operator
    /// detail.
    fn from(s: pb::BackupStatus) -> Self {
        Self {
            vmid: s.vmid,
            phase: s.phase,
            job_id: s.job_id,
            error: s.error,
        }
    }
}

impl TryFrom<pb::RestoreTestStatus> for RestoreTestStatusData {
    type Error = TimestampError;

    /// Keeps the five guest-facing fields; job id, volid, tier, scratch guest and duration are
    /// operator detail.
    fn try_from(s: pb::RestoreTestStatus) -> Result<Self, TimestampError> {
        Ok(Self {
            vmid: s.vmid,
            phase: s.phase,
            last_run_at: timestamp::rfc3339_utc(s.last_run_at)?,
            result: s.result,
            detail: Some(s.detail).filter(|d| !d.is_empty()),
        })
    }
}

fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BodyError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let body: &[u8] = match first {
        None => b"{}",
        // serde reads a struct from a sequence too, positionally; bodies are objects.
        Some(b'[') => return Err(BodyError::NotAnObject),
        Some(_) => body,
    };
    serde_json::from_slice(body).map_err(|e| BodyError::Json(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_field_is_named() {
        let err = Rpc::Snapshot
            .action(br#"{"name":"a","vmid":7}"#)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid request body: unknown field `vmid`, expected `name` or `description` at line 1 column 18"
        );
    }

    #[test]
    fn empty_body_is_an_empty_object() {
        assert_eq!(
            Rpc::Snapshot.action(b"").unwrap(),
            Action::Snapshot(pb::SnapshotRequest::default())
        );
    }

    #[test]
    fn rollback_needs_a_snapshot() {
        assert_eq!(
            Rpc::Rollback.action(b"{}").unwrap_err().to_string(),
            "invalid request body: missing field `snapshot` at line 1 column 2"
        );
        assert_eq!(
            Rpc::Rollback.action(br#"{"snapshot":""}"#).unwrap_err(),
            BodyError::Empty { field: "snapshot" }
        );
    }

    #[test]
    fn non_json_is_refused() {
        let err = Rpc::Rollback.action(b"snapshot=a").unwrap_err().to_string();
        assert!(
            err.starts_with("invalid request body: expected value"),
            "{err}"
        );
    }

    #[test]
    fn storage_data_has_the_documented_keys_in_order() {
        let d = StorageData::from(pb::GuestStorage {
            vmid: 101,
            mounts: vec![pb::GuestMount {
                key: "rootfs".into(),
                storage: "local-lvm".into(),
                mount_point: "/".into(),
                class: "fast".into(),
                backup: true,
            }],
        });
        assert_eq!(
            serde_json::to_string(&Reply::Storage(d)).unwrap(),
            r#"{"vmid":101,"mounts":[{"key":"rootfs","storage":"local-lvm","mount_point":"/","class":"fast","backup":true}]}"#
        );
    }

    #[test]
    fn snapshot_data_omits_an_empty_job_id() {
        let d = SnapshotData::from(pb::SnapshotResult {
            vmid: 102,
            snapshot: "s1".into(),
            job_id: String::new(),
        });
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"vmid":102,"snapshot":"s1"}"#
        );
    }

    #[test]
    fn backup_body_takes_no_fields() {
        assert_eq!(Rpc::StartBackup.action(b"").unwrap(), Action::StartBackup);
        assert_eq!(
            Rpc::StartBackup.action(b" {} ").unwrap(),
            Action::StartBackup
        );
        assert_eq!(
            Rpc::StartBackup
                .action(br#"{"x":1}"#)
                .unwrap_err()
                .to_string(),
            "invalid request body: unknown field `x`, there are no fields at line 1 column 4"
        );
    }

    #[test]
    fn array_body_is_refused_not_read_positionally() {
        assert_eq!(
            Rpc::StartBackup.action(b" []").unwrap_err(),
            BodyError::NotAnObject
        );
        assert_eq!(
            Rpc::Snapshot
                .action(br#"["a","b"]"#)
                .unwrap_err()
                .to_string(),
            "invalid request body: expected a JSON object, found an array"
        );
    }

    #[test]
    fn new_backup_job_is_202_and_a_joined_one_200() {
        let job = |new_job| {
            Reply::BackupJob(BackupJobData::from(pb::BackupAccepted {
                vmid: 101,
                job_id: "j1".into(),
                phase: "running".into(),
                new_job,
            }))
        };
        assert_eq!(job(true).http_status(), http::StatusCode::ACCEPTED);
        assert_eq!(job(false).http_status(), http::StatusCode::OK);
        assert_eq!(
            serde_json::to_string(&job(true)).unwrap(),
            r#"{"vmid":101,"job_id":"j1","phase":"running"}"#
        );
    }

    #[test]
    fn backup_status_keeps_empty_keys_and_drops_operator_detail() {
        let d = BackupStatusData::from(pb::BackupStatus {
            vmid: 101,
            phase: "idle".into(),
            trigger: "schedule".into(),
            consistency: "crash".into(),
            runs: vec![pb::BackupRun {
                tier: "local".into(),
                volid: "local:backup/x.tar.zst".into(),
                ..Default::default()
            }],
            started_at: 1,
            finished_at: 2,
            ..Default::default()
        });
        assert_eq!(
            serde_json::to_string(&Reply::BackupStatus(d)).unwrap(),
            r#"{"vmid":101,"phase":"idle","job_id":"","error":""}"#
        );
    }

    #[test]
    fn restore_test_status_formats_time_and_drops_operator_detail() {
        let d = RestoreTestStatusData::try_from(pb::RestoreTestStatus {
            vmid: 101,
            phase: "done".into(),
            last_run_at: 1_795_406_412,
            result: "pass".into(),
            detail: "guest started and stayed running".into(),
            job_id: "rt-1".into(),
            volid: "local:backup/x.tar.zst".into(),
            tier: "local".into(),
            scratch_vmid: 9900,
            duration_ms: 1234,
        })
        .unwrap();
        assert_eq!(
            serde_json::to_string(&Reply::RestoreTestStatus(d)).unwrap(),
            r#"{"vmid":101,"phase":"done","last_run_at":"2026-11-23T04:00:12Z","result":"pass","detail":"guest started and stayed running"}"#
        );
    }

    #[test]
    fn restore_test_never_run_omits_time_and_detail() {
        let d = RestoreTestStatusData::try_from(pb::RestoreTestStatus {
            vmid: 102,
            phase: "idle".into(),
            result: "none".into(),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"vmid":102,"phase":"idle","result":"none"}"#
        );
    }

    #[test]
    fn restore_test_time_out_of_range_is_an_error() {
        let err = RestoreTestStatusData::try_from(pb::RestoreTestStatus {
            vmid: 101,
            last_run_at: -5,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(err, TimestampError::OutOfRange(-5));
    }
}
