//! Request bodies → typed actions, and LocalApi replies → the `data` payloads of LOCAL-API.md.
//!
//! Bodies are JSON only, decoded into `deny_unknown_fields` structs with the shapes of
//! LOCAL-API.md, so a misspelled field is a 400 naming it rather than silently ignored. An empty
//! body counts as `{}` (clients differ in whether they send one for all-optional bodies).
//! Replies are explicit serde structs (not the proto3 JSON mapping): field names are exactly the
//! document's snake_case keys, `vmid` first, and optional fields are omitted when empty.
//!
//! Only shape is checked here. What a valid snapshot name is, and whether the guest has it, is
//! the agent's decision (it knows Proxmox's rules); its INVALID_ARGUMENT comes back as 400.

use felhom_proto::agent::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::routes::Rpc;

/// Longest accepted snapshot description; Proxmox stores it in the guest config, where a huge
/// one does harm. (The body limit bounds it anyway; this gives a clearer error.)
pub const MAX_DESCRIPTION_LEN: usize = 8 * 1024;

/// One LocalApi call, fully decoded.
#[derive(Debug, PartialEq)]
pub enum Action {
    GetStorage,
    Snapshot(pb::SnapshotRequest),
    Rollback(pb::RollbackRequest),
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

/// A decoded LocalApi reply, ready to be the envelope's `data`.
#[derive(Debug, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Reply {
    Storage(StorageData),
    Snapshot(SnapshotData),
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

fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, BodyError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
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
}
