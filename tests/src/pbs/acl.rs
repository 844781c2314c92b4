//! Authentication and privileges of the PBS simulator, as real PBS does them.
//!
//! Confirmed in proxmox-backup sources:
//! - Token auth (`src/auth.rs` / `proxmox-auth-api`): header `PBSAPIToken=<authid>:<secret>`
//!   (also `PBSAPIToken <authid>:<secret>`), split once at `:`. Failures are HTTP 401 with body
//!   `authentication failed - <why>`: `no authentication credentials provided.` (no PBS header),
//!   `user account or token disabled or expired.` (unknown user/token), `failed to split API
//!   token header` (no `:`), `not an API token ID` (a user id), `invalid credentials` (wrong secret).
//! - Privileges and roles (`pbs-api-types/src/acl.rs`): the privilege table order below is PBS's
//!   (it decides the order of names in error texts). `DatastoreAdmin` = Audit, Modify, Read,
//!   Verify, Backup, Prune; `DatastoreReader` = Audit, Verify, Read; `DatastoreBackup` = Backup;
//!   `DatastorePowerUser` = Prune, Backup; `DatastoreAudit` = Audit; `Audit` = Sys.Audit +
//!   Datastore.Audit; `Admin` = everything.
//! - A token's privileges are its own ACL's intersected with its user's
//!   (`CachedUserInfo::lookup_privs`): PBS tokens are always privilege-separated.
//! - Datastore checks (`src/backup/hierarchy.rs`, `check_ns_privs_full`): full privileges, else
//!   partial ones (then only owned groups), else HTTP 403
//!   `permission check failed - missing <A>|<B> on /datastore/<store>[/<ns>…]`.
//! - Ownership (`pbs-datastore`, `check_backup_owner`): the owner itself, or the user whose token
//!   owns the group; else `backup owner check failed (<authid> != <owner>)`.
//!
//! Simplifications: ACL roles on a path and its ancestors (propagating ones) are unioned; PBS's
//! "more specific path replaces" rule and `NoAccess` overrides are not modelled. No groups, no
//! expiry, no ticket login; `root@pam` (the user, never a token) has every privilege.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::percent::percent_decode;

/// PBS's privilege table, in its order.
pub const PRIVILEGES: &[(&str, u64)] = &[
    ("Sys.Audit", 1 << 0),
    ("Sys.Modify", 1 << 1),
    ("Sys.PowerManagement", 1 << 2),
    ("Datastore.Audit", 1 << 3),
    ("Datastore.Allocate", 1 << 4),
    ("Datastore.Modify", 1 << 5),
    ("Datastore.Read", 1 << 6),
    ("Datastore.Verify", 1 << 7),
    ("Datastore.Backup", 1 << 8),
    ("Datastore.Prune", 1 << 9),
    ("Permissions.Modify", 1 << 10),
    ("Remote.Audit", 1 << 11),
    ("Remote.Modify", 1 << 12),
    ("Remote.Read", 1 << 13),
    ("Sys.Console", 1 << 14),
    ("Tape.Audit", 1 << 15),
    ("Tape.Modify", 1 << 16),
    ("Tape.Write", 1 << 17),
    ("Tape.Read", 1 << 18),
    ("Realm.Allocate", 1 << 19),
];

pub const PRIV_SYS_AUDIT: u64 = 1 << 0;
pub const PRIV_DATASTORE_AUDIT: u64 = 1 << 3;
pub const PRIV_DATASTORE_MODIFY: u64 = 1 << 5;
pub const PRIV_DATASTORE_READ: u64 = 1 << 6;
pub const PRIV_DATASTORE_VERIFY: u64 = 1 << 7;
pub const PRIV_DATASTORE_BACKUP: u64 = 1 << 8;
pub const PRIV_DATASTORE_PRUNE: u64 = 1 << 9;

/// The names of the privileges in `privs`, in PBS's table order.
pub fn priv_names(privs: u64) -> Vec<&'static str> {
    PRIVILEGES
        .iter()
        .filter(|(_, bit)| privs & bit != 0)
        .map(|(name, _)| *name)
        .collect()
}

/// PBS's built-in roles (the datastore-related ones and the two global ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Admin,
    Audit,
    NoAccess,
    DatastoreAdmin,
    DatastoreReader,
    DatastoreBackup,
    DatastorePowerUser,
    DatastoreAudit,
}

impl Role {
    /// The role's privileges (values from `pbs-api-types/src/acl.rs`).
    pub fn privileges(self) -> u64 {
        match self {
            Role::Admin => u64::MAX,
            Role::Audit => PRIV_SYS_AUDIT | PRIV_DATASTORE_AUDIT,
            Role::NoAccess => 0,
            Role::DatastoreAdmin => {
                PRIV_DATASTORE_AUDIT
                    | PRIV_DATASTORE_MODIFY
                    | PRIV_DATASTORE_READ
                    | PRIV_DATASTORE_VERIFY
                    | PRIV_DATASTORE_BACKUP
                    | PRIV_DATASTORE_PRUNE
            }
            Role::DatastoreReader => {
                PRIV_DATASTORE_AUDIT | PRIV_DATASTORE_VERIFY | PRIV_DATASTORE_READ
            }
            Role::DatastoreBackup => PRIV_DATASTORE_BACKUP,
            Role::DatastorePowerUser => PRIV_DATASTORE_PRUNE | PRIV_DATASTORE_BACKUP,
            Role::DatastoreAudit => PRIV_DATASTORE_AUDIT,
        }
    }
}

/// One ACL entry: `role` for `ugid` (a user `u@realm` or a token `u@realm!name`) on `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclEntry {
    pub path: String,
    pub ugid: String,
    pub role: Role,
    #[serde(default = "yes")]
    pub propagate: bool,
}

fn yes() -> bool {
    true
}

/// Why authentication failed; the text is PBS's (after `authentication failed - `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no authentication credentials provided.")]
    NoData,
    #[error("failed to split API token header")]
    Split,
    #[error("user account or token disabled or expired.")]
    Inactive,
    #[error("not an API token ID")]
    NotToken,
    #[error("invalid credentials")]
    BadSecret,
}

/// Users, tokens and ACLs.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub users: BTreeSet<String>,
    /// Token authid → secret.
    pub tokens: BTreeMap<String, String>,
    pub acl: Vec<AclEntry>,
}

/// `user@realm` of an authid (the authid itself for a user).
pub fn user_of(authid: &str) -> &str {
    authid.split_once('!').map_or(authid, |(user, _)| user)
}

impl Access {
    /// Checks an `Authorization` header; returns the authenticated authid.
    pub fn authenticate(&self, header: Option<&str>) -> Result<String, AuthError> {
        let value = header
            .and_then(|h| {
                h.strip_prefix("PBSAPIToken=")
                    .or_else(|| h.strip_prefix("PBSAPIToken "))
            })
            .ok_or(AuthError::NoData)?;
        let (authid, secret) = match value.split_once(':') {
            Some((a, s)) => (a, Some(s)),
            None => (value, None),
        };
        if !self.is_active(authid) {
            return Err(AuthError::Inactive);
        }
        let secret = secret.ok_or(AuthError::Split)?;
        if !authid.contains('!') {
            return Err(AuthError::NotToken);
        }
        let stored = self.tokens.get(authid).ok_or(AuthError::BadSecret)?;
        // A simulator needs no constant-time comparison; real PBS compares crypt(3) hashes.
        if stored.as_bytes() == percent_decode(secret, false).as_bytes() {
            Ok(authid.to_owned())
        } else {
            Err(AuthError::BadSecret)
        }
    }

    fn is_active(&self, authid: &str) -> bool {
        let user_ok = self.users.contains(user_of(authid)) || user_of(authid) == "root@pam";
        if authid.contains('!') {
            user_ok && self.tokens.contains_key(authid)
        } else {
            user_ok
        }
    }

    /// The privileges of `ugid` itself on `path` (no token/user intersection).
    fn own_privs(&self, ugid: &str, path: &str) -> u64 {
        self.acl
            .iter()
            .filter(|e| e.ugid == ugid)
            .filter(|e| e.path == path || (e.propagate && is_ancestor(&e.path, path)))
            .fold(0, |acc, e| acc | e.role.privileges())
    }

    /// Effective privileges of an authid on an ACL path.
    pub fn lookup_privs(&self, authid: &str, path: &str) -> u64 {
        if authid == "root@pam" {
            return u64::MAX;
        }
        let own = self.own_privs(authid, path);
        if authid.contains('!') {
            own & self.lookup_privs(user_of(authid), path)
        } else {
            own
        }
    }

    /// `check_ns_privs_full`: `Ok(false)` with full access, `Ok(true)` when only the partial
    /// privileges hold (owner checks needed), else the 403 text.
    pub fn check_datastore_privs(
        &self,
        authid: &str,
        acl_path: &str,
        full: u64,
        partial: u64,
    ) -> Result<bool, String> {
        let privs = self.lookup_privs(authid, acl_path);
        if full != 0 && privs & full != 0 {
            return Ok(false);
        }
        if partial != 0 && privs & partial != 0 {
            return Ok(true);
        }
        Err(format!(
            "permission check failed - missing {} on {acl_path}",
            priv_names(full | partial).join("|")
        ))
    }
}

/// `check_backup_owner`.
pub fn check_backup_owner(owner: &str, authid: &str) -> Result<(), String> {
    let ok = owner == authid || (owner.contains('!') && user_of(owner) == authid);
    if ok {
        Ok(())
    } else {
        Err(format!("backup owner check failed ({authid} != {owner})"))
    }
}

fn is_ancestor(ancestor: &str, path: &str) -> bool {
    ancestor == "/"
        || path
            .strip_prefix(ancestor)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        let mut a = Access::default();
        a.users.insert("felhom@pbs".into());
        a.tokens.insert("felhom@pbs!agent".into(), "s3cret".into());
        a.acl.push(AclEntry {
            path: "/datastore/store1".into(),
            ugid: "felhom@pbs!agent".into(),
            role: Role::DatastoreAdmin,
            propagate: true,
        });
        a
    }

    #[test]
    fn a_token_only_grant_gives_nothing() {
        let a = access();
        assert_eq!(a.lookup_privs("felhom@pbs!agent", "/datastore/store1"), 0);
        let err = a
            .check_datastore_privs(
                "felhom@pbs!agent",
                "/datastore/store1",
                PRIV_DATASTORE_VERIFY,
                PRIV_DATASTORE_BACKUP,
            )
            .unwrap_err();
        assert_eq!(
            err,
            "permission check failed - missing Datastore.Verify|Datastore.Backup on /datastore/store1"
        );
    }

    #[test]
    fn auth_failures_use_pbs_texts() {
        let a = access();
        assert_eq!(a.authenticate(None), Err(AuthError::NoData));
        assert_eq!(
            a.authenticate(Some("PVEAPIToken=felhom@pbs!agent=s3cret")),
            Err(AuthError::NoData)
        );
        assert_eq!(
            a.authenticate(Some("PBSAPIToken=felhom@pbs!agent:wrong")),
            Err(AuthError::BadSecret)
        );
        assert_eq!(
            a.authenticate(Some("PBSAPIToken=felhom@pbs!other:s3cret")),
            Err(AuthError::Inactive)
        );
        assert_eq!(
            a.authenticate(Some("PBSAPIToken=felhom@pbs!agent:s3cret"))
                .unwrap(),
            "felhom@pbs!agent"
        );
    }
}
