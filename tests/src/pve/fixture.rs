//! The simulator's seed data: a JSON document describing one Proxmox VE node — its users,
//! API tokens, roles, ACLs, storages, LXC guests and existing backups.
//!
//! Parsing is strict (`deny_unknown_fields` everywhere) so a typo in a test fixture fails
//! loudly with serde's message naming the field, instead of silently seeding less than meant.
//! [`Fixture::default_host`] is the embedded default (`tests/fixtures/pve-default.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

// ACL entries are the ACL model's own types; a fixture lists them.
pub use super::acl::{AclFixture, AclKind};

/// The embedded default fixture: node `pve1`, three LXC guests, `local`/`local-lvm`/`felhom-pbs`
/// storages, a golden backup and the FelhomAgent role setup.
pub const DEFAULT_FIXTURE_JSON: &str = include_str!("../../fixtures/pve-default.json");

/// Errors loading a fixture.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("Fixture is not valid: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("Fixture is inconsistent: {0}")]
    Inconsistent(String),
    #[error("Cannot read fixture file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A whole seeded host.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    pub node: NodeFixture,
    pub version: VersionFixture,
    #[serde(default)]
    pub users: Vec<UserFixture>,
    #[serde(default)]
    pub tokens: Vec<TokenFixture>,
    #[serde(default)]
    pub roles: Vec<RoleFixture>,
    #[serde(default)]
    pub acls: Vec<AclFixture>,
    #[serde(default)]
    pub storages: Vec<StorageFixture>,
    #[serde(default)]
    pub guests: Vec<GuestFixture>,
    #[serde(default)]
    pub backups: Vec<BackupFixture>,
}

/// The node (PVE reports it under `/nodes`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFixture {
    pub name: String,
    pub cpus: u32,
    pub cpu_model: String,
    pub memory_total: u64,
    pub memory_used: u64,
    pub rootfs_total: u64,
    pub rootfs_used: u64,
    pub uptime: u64,
    pub kversion: String,
    pub pveversion: String,
    #[serde(default)]
    pub disks: Vec<serde_json::Value>,
    #[serde(default)]
    pub lvmthin: Vec<serde_json::Value>,
}

/// `GET /version`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionFixture {
    pub version: String,
    pub release: String,
    pub repoid: String,
}

/// A user (`user@realm`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFixture {
    pub userid: String,
    #[serde(default = "yes")]
    pub enable: bool,
}

/// An API token (`user@realm!tokenid`). Debug output redacts the secret.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFixture {
    pub authid: String,
    /// Privilege separation: effective rights = token ACL ∩ user ACL.
    pub privsep: bool,
    /// The secret UUID; generated at start when absent.
    #[serde(default)]
    pub secret: Option<String>,
}

impl std::fmt::Debug for TokenFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenFixture")
            .field("authid", &self.authid)
            .field("privsep", &self.privsep)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A role and its privileges.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFixture {
    pub roleid: String,
    pub privs: Vec<String>,
}

/// A storage as configured in `storage.cfg` plus its node-local usage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFixture {
    pub storage: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub content: Vec<String>,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub server: Option<String>,
    #[serde(default)]
    pub datastore: Option<String>,
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// `pbs`: the server port when not 8007.
    #[serde(default)]
    pub port: Option<u16>,
    /// `pbs`: the PBS user PVE logs in as (default `felhom-backup@pbs`).
    #[serde(default)]
    pub username: Option<String>,
    /// `pbs`: the client encryption key JSON (PVE keeps it in
    /// `/etc/pve/priv/storage/<id>.enc`; the config shows only its fingerprint).
    #[serde(default)]
    pub encryption_key: Option<String>,
    #[serde(default)]
    pub vgname: Option<String>,
    #[serde(default)]
    pub thinpool: Option<String>,
    #[serde(default)]
    pub shared: bool,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "yes")]
    pub active: bool,
    pub total: u64,
    pub used: u64,
}

/// A snapshot in a guest's snapshot tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFixture {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub snaptime: i64,
    #[serde(default)]
    pub parent: Option<String>,
}

/// An LXC guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestFixture {
    pub vmid: u32,
    pub status: GuestStatus,
    /// The raw config keys as in `/etc/pve/lxc/<vmid>.conf` (values as strings).
    pub config: BTreeMap<String, String>,
    #[serde(default)]
    pub snapshots: Vec<SnapshotFixture>,
    #[serde(default)]
    pub uptime: u64,
}

/// Run state of a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestStatus {
    Running,
    Stopped,
}

impl GuestStatus {
    /// The PVE spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            GuestStatus::Running => "running",
            GuestStatus::Stopped => "stopped",
        }
    }
}

/// An existing backup volume, with the guest config it archived.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupFixture {
    pub volid: String,
    pub vmid: u32,
    pub ctime: i64,
    pub size: u64,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub protected: bool,
    /// The guest config inside the archive (what a restore reproduces).
    pub config: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

impl Fixture {
    /// Parses and checks a fixture document.
    pub fn from_json(text: &str) -> Result<Fixture, FixtureError> {
        let fixture: Fixture = serde_json::from_str(text)?;
        fixture.check()?;
        Ok(fixture)
    }

    /// Reads a fixture file.
    pub fn from_file(path: &std::path::Path) -> Result<Fixture, FixtureError> {
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Fixture::from_json(&text)
    }

    /// The embedded default host.
    pub fn default_host() -> Fixture {
        Fixture::from_json(DEFAULT_FIXTURE_JSON)
            .expect("the embedded default fixture is checked by a unit test")
    }

    fn check(&self) -> Result<(), FixtureError> {
        let bad = |m: String| Err(FixtureError::Inconsistent(m));
        for token in &self.tokens {
            let Some((user, _)) = token.authid.split_once('!') else {
                return bad(format!(
                    "tokens: '{}' is not user@realm!tokenid",
                    token.authid
                ));
            };
            if !self.users.iter().any(|u| u.userid == user) {
                return bad(format!(
                    "tokens: '{}' belongs to unknown user '{user}'",
                    token.authid
                ));
            }
        }
        for acl in &self.acls {
            if !acl.path.starts_with('/') {
                return bad(format!("acls: path '{}' must start with '/'", acl.path));
            }
            let known = match acl.kind {
                AclKind::User => self.users.iter().any(|u| u.userid == acl.ugid),
                AclKind::Token => self.tokens.iter().any(|t| t.authid == acl.ugid),
            };
            if !known {
                return bad(format!("acls: unknown {:?} '{}'", acl.kind, acl.ugid));
            }
            if !self.roles.iter().any(|r| r.roleid == acl.role)
                && super::acl::builtin_role(&acl.role).is_none()
            {
                return bad(format!("acls: unknown role '{}'", acl.role));
            }
        }
        for role in &self.roles {
            for p in &role.privs {
                if !super::acl::ALL_PRIVILEGES.contains(&p.as_str()) {
                    return bad(format!(
                        "roles: '{}' has unknown privilege '{p}'",
                        role.roleid
                    ));
                }
            }
        }
        for st in &self.storages {
            if let Some(key) = &st.encryption_key {
                if st.kind != "pbs" {
                    return bad(format!(
                        "storages: '{}' has an encryption_key but is not of type pbs",
                        st.storage
                    ));
                }
                if let Err(e) = crate::pbs::PbsKey::from_json(key) {
                    return bad(format!("storages: '{}' encryption_key: {e}", st.storage));
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for g in &self.guests {
            if !seen.insert(g.vmid) {
                return bad(format!("guests: duplicate vmid {}", g.vmid));
            }
        }
        for b in &self.backups {
            let Some((sid, _)) = b.volid.split_once(':') else {
                return bad(format!(
                    "backups: volid '{}' has no storage prefix",
                    b.volid
                ));
            };
            if !self.storages.iter().any(|s| s.storage == sid) {
                return bad(format!(
                    "backups: volid '{}' names unknown storage",
                    b.volid
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_fixture_parses() {
        let f = Fixture::from_json(DEFAULT_FIXTURE_JSON).unwrap();
        assert_eq!(f.node.name, "pve1");
    }

    #[test]
    fn unknown_field_is_named() {
        let mut v: serde_json::Value = serde_json::from_str(DEFAULT_FIXTURE_JSON).unwrap();
        v["guests"][0]["colour"] = serde_json::json!("red");
        let err = Fixture::from_json(&v.to_string()).unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }
}
