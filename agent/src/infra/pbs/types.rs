//! Typed Proxmox Backup Server answers and the snapshot model the agent works with.
//!
//! Wire shapes confirmed in proxmox-backup `pbs-api-types/src/datastore.rs`:
//! - `SnapshotListItem` (kebab-case): `backup-type`, `backup-id`, `backup-time` (flattened
//!   `BackupDir`), `comment?`, `verification?` (`SnapshotVerifyState {upid, state}`, absent until
//!   a verify ran), `fingerprint?` (encryption key), `files` (`BackupContent {filename,
//!   crypt-mode?, size?}`), `size?`, `owner?`, `protected` (default false). The list endpoint
//!   answers for one namespace (the `ns` parameter) and upstream items carry no `ns` key; a
//!   client-side `snapshot list` was seen printing `ns` for non-root namespaces, so an `ns` key is
//!   honoured when present and the requested namespace is used otherwise.
//! - `BackupType`: `vm`, `ct`, `host`. `CryptMode`: `none`, `encrypt`, `sign-only`.
//!   `VerifyState`: `ok`, `failed`.
//! - The manifest (`index.json.blob`) is listed with `sign-only` when signed, `none` otherwise;
//!   files present on disk but not in the manifest (a `client.log.blob` uploaded after the
//!   backup finished) are listed without `crypt-mode` and `size`.
//!
//! [`PbsSnapshot::encrypted`] rule: true iff the snapshot has at least one data file with a known
//! crypt mode and every such file is `encrypt`. The manifest `index.json.blob` is not a data file
//! (it is only ever signed, never encrypted, and holds no guest data), and files without a crypt
//! mode (not in the manifest) are not judged. One `none` or `sign-only` data file makes the whole
//! snapshot unencrypted: the guest's data would be readable on the server.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::upid::PbsUpid;

/// Name of the backup manifest inside every snapshot.
pub const MANIFEST_BLOB_NAME: &str = "index.json.blob";

/// What a backup group holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Vm,
    Ct,
    Host,
}

impl BackupType {
    /// The wire name (`vm`, `ct`, `host`).
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Vm => "vm",
            BackupType::Ct => "ct",
            BackupType::Host => "host",
        }
    }
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown backup type name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("backup type must be 'vm', 'ct' or 'host', not '{0}'")]
pub struct BackupTypeError(pub String);

impl FromStr for BackupType {
    type Err = BackupTypeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "vm" => Ok(BackupType::Vm),
            "ct" => Ok(BackupType::Ct),
            "host" => Ok(BackupType::Host),
            other => Err(BackupTypeError(other.to_owned())),
        }
    }
}

/// How one file of a snapshot is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CryptMode {
    /// Plain data.
    None,
    /// Encrypted (and authenticated) with the client's key.
    Encrypt,
    /// Signed with the client's key, not encrypted (the manifest of an encrypted backup).
    SignOnly,
}

/// One file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BackupFile {
    pub filename: String,
    /// Absent for files not recorded in the manifest.
    #[serde(default)]
    pub crypt_mode: Option<CryptMode>,
    #[serde(default)]
    pub size: Option<u64>,
}

/// Result of the last verify of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyState {
    /// Every file and chunk checked out.
    Ok,
    /// The verify found at least one damaged file or chunk.
    Failed,
    /// Never verified (PBS omits `verification`).
    None,
}

/// The wire form of `verification`.
#[derive(Debug, Clone, Deserialize)]
struct WireVerification {
    state: WireVerifyState,
    upid: PbsUpid,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum WireVerifyState {
    Ok,
    Failed,
}

/// The wire form of one `GET /admin/datastore/{store}/snapshots` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct WireSnapshot {
    backup_type: BackupType,
    backup_id: String,
    backup_time: i64,
    #[serde(default)]
    comment: Option<String>,
    #[serde(default)]
    verification: Option<WireVerification>,
    #[serde(default)]
    fingerprint: Option<String>,
    files: Vec<BackupFile>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    protected: bool,
    #[serde(default)]
    ns: Option<String>,
}

/// A backup snapshot on a PBS datastore, as the agent reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PbsSnapshot {
    /// `None` for the datastore's root namespace.
    pub namespace: Option<String>,
    pub backup_type: BackupType,
    /// The guest id for `ct`/`vm` backups.
    pub backup_id: String,
    /// Snapshot time, seconds since the Unix epoch.
    pub backup_time: i64,
    /// Sum of the file sizes PBS knows.
    pub size: Option<u64>,
    /// Authid owning the group (the token that made the backups), when PBS reports it.
    pub owner: Option<String>,
    /// Protected from pruning.
    pub protected: bool,
    /// See the module docs for the rule.
    pub encrypted: bool,
    /// Fingerprint of the encryption key, when encrypted.
    pub key_fingerprint: Option<String>,
    /// First line of the snapshot notes.
    pub comment: Option<String>,
    pub verify_state: VerifyState,
    /// The verify task that set `verify_state`.
    pub verify_upid: Option<PbsUpid>,
    pub files: Vec<BackupFile>,
}

impl PbsSnapshot {
    pub(crate) fn from_wire(wire: WireSnapshot, requested_ns: Option<&str>) -> Self {
        let namespace = wire
            .ns
            .filter(|ns| !ns.is_empty())
            .or_else(|| requested_ns.filter(|ns| !ns.is_empty()).map(str::to_owned));
        let (verify_state, verify_upid) = match wire.verification {
            None => (VerifyState::None, None),
            Some(WireVerification {
                state: WireVerifyState::Ok,
                upid,
            }) => (VerifyState::Ok, Some(upid)),
            Some(WireVerification {
                state: WireVerifyState::Failed,
                upid,
            }) => (VerifyState::Failed, Some(upid)),
        };
        PbsSnapshot {
            namespace,
            backup_type: wire.backup_type,
            encrypted: all_data_files_encrypted(&wire.files),
            backup_id: wire.backup_id,
            backup_time: wire.backup_time,
            size: wire.size,
            owner: wire.owner,
            protected: wire.protected,
            key_fingerprint: wire.fingerprint,
            comment: wire.comment,
            verify_state,
            verify_upid,
            files: wire.files,
        }
    }

    /// `<type>/<id>/<RFC 3339 UTC time>`, e.g. `ct/101/2026-06-09T14:18:33Z`: PBS's snapshot
    /// path, and the tail of the PVE volid (`<storage>:backup/ct/101/2026-06-09T14:18:33Z`).
    pub fn snapshot_path(&self) -> String {
        format!(
            "{}/{}/{}",
            self.backup_type,
            self.backup_id,
            epoch_to_rfc3339_utc(self.backup_time)
        )
    }
}

/// The [`PbsSnapshot::encrypted`] rule.
pub fn all_data_files_encrypted(files: &[BackupFile]) -> bool {
    let mut judged = files
        .iter()
        .filter(|f| f.filename != MANIFEST_BLOB_NAME)
        .filter_map(|f| f.crypt_mode)
        .peekable();
    judged.peek().is_some() && judged.all(|mode| mode == CryptMode::Encrypt)
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub fn epoch_to_rfc3339_utc(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `GET /nodes/{node}/tasks/{upid}/status` (confirmed in proxmox-backup
/// `src/api2/node/tasks.rs`, `get_task_status`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct PbsTaskStatus {
    pub upid: PbsUpid,
    pub node: String,
    /// `running` or `stopped`.
    pub status: String,
    /// Once stopped: `OK`, `WARNINGS: <n>`, the error message, or `unknown`.
    #[serde(default)]
    pub exitstatus: Option<String>,
    #[serde(rename = "type")]
    pub worker_type: String,
    /// Worker id, unescaped; absent/null when the task has none.
    #[serde(default)]
    pub id: Option<String>,
    /// The user part of the authid that started the task.
    pub user: String,
    /// The token name when a token started it.
    #[serde(default)]
    pub tokenid: Option<String>,
    pub starttime: i64,
}

/// One line of `GET /nodes/{node}/tasks/{upid}/log`: `n` counts from 1; `t` is the line as
/// written, `<RFC 3339 time>: <message>`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct PbsTaskLogLine {
    pub n: u64,
    pub t: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing entry as PBS 4 sends it for an encrypted, never verified container backup.
    const ENCRYPTED_UNVERIFIED: &str = r#"{
        "backup-type":"ct","backup-id":"9001","backup-time":1781014713,
        "files":[
          {"filename":"catalog.pcat1.didx","crypt-mode":"encrypt","size":44527},
          {"filename":"pct.conf.blob","crypt-mode":"encrypt","size":398},
          {"filename":"root.pxar.didx","crypt-mode":"encrypt","size":1073741824},
          {"filename":"index.json.blob","crypt-mode":"sign-only","size":717},
          {"filename":"client.log.blob"}
        ],
        "fingerprint":"01:36:e9:fe:e1:ee:3d:7a:9d:bf:3d:63:d0:68:fd:24:45:b7:5f:bc:b6:82:bc:6d:d2:b4:7a:b0:1a:86:6d:a1",
        "owner":"felhom@pbs!n100","protected":false,"size":1073787466
    }"#;

    fn decode(json: &str) -> PbsSnapshot {
        PbsSnapshot::from_wire(serde_json::from_str(json).unwrap(), None)
    }

    #[test]
    fn an_encrypted_unverified_snapshot_decodes() {
        let s = decode(ENCRYPTED_UNVERIFIED);
        assert_eq!(s.backup_type, BackupType::Ct);
        assert_eq!(s.backup_id, "9001");
        assert_eq!(s.namespace, None);
        assert!(s.encrypted);
        assert_eq!(s.verify_state, VerifyState::None);
        assert_eq!(s.verify_upid, None);
        assert_eq!(s.owner.as_deref(), Some("felhom@pbs!n100"));
        assert_eq!(s.snapshot_path(), "ct/9001/2026-06-09T14:18:33Z");
    }

    #[test]
    fn a_verified_snapshot_carries_state_and_upid() {
        let json = ENCRYPTED_UNVERIFIED.replace(
            r#""protected":false"#,
            r#""protected":true,"verification":{"state":"failed","upid":"UPID:dooplex:000004D2:0000A1B2:00000003:6745A1C2:verify:felhom\\x2dspike:felhom@pbs!n100:"}"#,
        );
        let s = decode(&json);
        assert!(s.protected);
        assert_eq!(s.verify_state, VerifyState::Failed);
        assert_eq!(s.verify_upid.unwrap().worker_id(), Some("felhom-spike"));
    }

    #[test]
    fn one_plain_data_file_makes_the_snapshot_unencrypted() {
        let json = ENCRYPTED_UNVERIFIED.replace(
            r#""filename":"pct.conf.blob","crypt-mode":"encrypt""#,
            r#""filename":"pct.conf.blob","crypt-mode":"none""#,
        );
        assert!(!decode(&json).encrypted);
    }

    #[test]
    fn the_signed_manifest_alone_does_not_count_as_encrypted() {
        let files = vec![BackupFile {
            filename: MANIFEST_BLOB_NAME.into(),
            crypt_mode: Some(CryptMode::SignOnly),
            size: Some(1),
        }];
        assert!(!all_data_files_encrypted(&files));
    }

    #[test]
    fn a_namespace_comes_from_the_entry_or_the_request() {
        let wire: WireSnapshot = serde_json::from_str(ENCRYPTED_UNVERIFIED).unwrap();
        assert_eq!(
            PbsSnapshot::from_wire(wire.clone(), Some("site-a"))
                .namespace
                .as_deref(),
            Some("site-a")
        );
        let json = ENCRYPTED_UNVERIFIED.replace(r#""protected":false"#, r#""ns":"site-b""#);
        assert_eq!(decode(&json).namespace.as_deref(), Some("site-b"));
        assert_eq!(PbsSnapshot::from_wire(wire, Some("")).namespace, None);
    }

    #[test]
    fn rfc3339_formatting_matches_known_dates() {
        assert_eq!(epoch_to_rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(epoch_to_rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(epoch_to_rfc3339_utc(1_781_014_713), "2026-06-09T14:18:33Z");
    }
}
