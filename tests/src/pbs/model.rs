//! The data a simulated PBS holds: snapshots in the shape PBS lists them (the fixture format is
//! the listing format plus `ns` and `owner`), and tasks.

use serde::{Deserialize, Serialize};

/// `vm`, `ct` or `host`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    // Declaration order is PBS's group sort order (ct < host < vm).
    Ct,
    Host,
    Vm,
}

impl BackupType {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupType::Ct => "ct",
            BackupType::Host => "host",
            BackupType::Vm => "vm",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ct" => Some(BackupType::Ct),
            "host" => Some(BackupType::Host),
            "vm" => Some(BackupType::Vm),
            _ => None,
        }
    }
}

/// `none`, `encrypt` or `sign-only`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CryptMode {
    None,
    Encrypt,
    SignOnly,
}

/// One file of a snapshot as listed. Files without `crypt-mode`/`size` are on disk but not in
/// the manifest (e.g. `client.log.blob`), and a verify does not check them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SimFile {
    pub filename: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crypt_mode: Option<CryptMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// `ok` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyState {
    Ok,
    Failed,
}

/// A snapshot's `verification`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimVerification {
    pub state: VerifyState,
    pub upid: String,
}

/// One backup snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SimSnapshot {
    /// Namespace (`a/b`); `None` for the root namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ns: Option<String>,
    pub backup_type: BackupType,
    pub backup_id: String,
    pub backup_time: i64,
    /// Owner of the snapshot's group (PBS keeps one owner per group).
    pub owner: String,
    #[serde(default)]
    pub protected: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Encryption key fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    pub files: Vec<SimFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<SimVerification>,
}

impl SimSnapshot {
    /// `ct/101/2026-06-09T14:18:33Z` (`BackupDir`'s display).
    pub fn dir(&self) -> String {
        format!(
            "{}/{}/{}",
            self.backup_type.as_str(),
            self.backup_id,
            rfc3339_utc(self.backup_time, "Z")
        )
    }

    /// `ns/a/ns/b/ct/101/…` or just the dir for the root namespace (`print_ns_and_snapshot`).
    pub fn ns_and_dir(&self) -> String {
        match &self.ns {
            None => self.dir(),
            Some(ns) => format!("{}/{}", ns_display_as_path(ns), self.dir()),
        }
    }

    /// Whether this snapshot is in namespace `ns` (`None` = root).
    pub fn in_ns(&self, ns: Option<&str>) -> bool {
        self.ns.as_deref().filter(|n| !n.is_empty()) == ns.filter(|n| !n.is_empty())
    }

    /// The JSON PBS lists for this snapshot.
    pub fn listing(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "backup-type": self.backup_type.as_str(),
            "backup-id": self.backup_id,
            "backup-time": self.backup_time,
            "files": self.files,
            "size": self.files.iter().map(|f| f.size.unwrap_or(0)).sum::<u64>(),
            "owner": self.owner,
            "protected": self.protected,
        });
        if let Some(c) = &self.comment {
            v["comment"] = c.clone().into();
        }
        if let Some(f) = &self.fingerprint {
            v["fingerprint"] = f.clone().into();
        }
        if let Some(ver) = &self.verification {
            v["verification"] = serde_json::json!(ver);
        }
        v
    }
}

/// `BackupNamespace::display_as_path`: `a/b` → `ns/a/ns/b`; root → ``.
pub fn ns_display_as_path(ns: &str) -> String {
    ns.split('/')
        .filter(|p| !p.is_empty())
        .map(|p| format!("ns/{p}"))
        .collect::<Vec<_>>()
        .join("/")
}

/// `YYYY-MM-DDTHH:MM:SS<suffix>` for an epoch (UTC; `suffix` `Z` or `+00:00`).
pub fn rfc3339_utc(epoch: i64, suffix: &str) -> String {
    let t = crate::utc::datetime(epoch).format("%Y-%m-%dT%H:%M:%S");
    format!("{t}{suffix}")
}

/// Seconds since the epoch, now.
pub fn now_epoch() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
