//! Authentication and authorization as pve-access-control does it.
//!
//! - Token header: `Authorization: PVEAPIToken=<user>@<realm>!<tokenid>=<secret>`. Failures are
//!   401 with the `die` text of `PVE::AccessControl::verify_token` as reason phrase (verified in
//!   pve-access-control `src/PVE/AccessControl.pm`): `no such user ('<user>')`,
//!   `no such token '<tokenid>' for user '<user>'`, `invalid token value!`,
//!   `no tokenid specified`, `'<id>' is not a valid token ID - not able to split into user and
//!   token parts` (`split_tokenid`); without any credentials `No ticket` (pve-manager
//!   `PVE/HTTPServer.pm` `auth_handler`). pve-http-server `AnyEvent.pm` turns an auth `die` into
//!   `HTTP::Response->new(HTTP_UNAUTHORIZED, $err)` (assumed: no login formatter is registered for the json format).
//! - Effective privileges on a path: the ACL tree is walked from `/` down to the path; at each
//!   level the entries for the subject replace what was inherited (entries on ancestors only
//!   count with `propagate`). `root@pam` has every privilege. A privilege-separated token gets
//!   the intersection of its own and its user's privileges; a non-separated token its user's.
//! - Check failures raise `raise_perm_exc("$path, $priv")` → HTTP 403 with reason
//!   `Permission check failed (<path>, <priv>)` (pve-common `src/PVE/Exception.pm`); any-of
//!   checks (`check_any`) join the privileges with `|`.
//!
//! Limits: no ticket (password) auth, no groups, no pools, no token expiry.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Who an ACL entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AclKind {
    User,
    Token,
}

/// One ACL entry (`pveum acl modify <path> -user|-token <ugid> -role <role>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclFixture {
    pub path: String,
    pub role: String,
    pub kind: AclKind,
    pub ugid: String,
    #[serde(default = "yes")]
    pub propagate: bool,
}

fn yes() -> bool {
    true
}

/// Every privilege PVE 8 knows (used to validate fixtures and for `root@pam`/Administrator).
pub const ALL_PRIVILEGES: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.Migrate",
    "VM.Monitor",
    "VM.PowerMgmt",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

/// Built-in roles the simulator knows besides fixture roles.
pub fn builtin_role(roleid: &str) -> Option<Vec<&'static str>> {
    match roleid {
        "Administrator" => Some(ALL_PRIVILEGES.to_vec()),
        "NoAccess" => Some(Vec::new()),
        "PVEAuditor" => Some(vec![
            "Datastore.Audit",
            "Mapping.Audit",
            "Pool.Audit",
            "SDN.Audit",
            "Sys.Audit",
            "VM.Audit",
        ]),
        _ => None,
    }
}

/// A set of privileges.
pub type Privs = BTreeSet<String>;

/// The access-control configuration (`user.cfg` + `token.cfg`).
#[derive(Debug, Clone, Default)]
pub struct AccessConfig {
    pub users: BTreeMap<String, bool>,
    /// authid → (privsep, secret)
    pub tokens: BTreeMap<String, TokenEntry>,
    pub roles: BTreeMap<String, Privs>,
    pub acls: Vec<AclFixture>,
}

/// A token's config.
#[derive(Clone)]
pub struct TokenEntry {
    pub privsep: bool,
    pub secret: String,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("privsep", &self.privsep)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Why a request is not authenticated (the reason phrase of the 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("No ticket")]
    NoTicket,
    #[error("no tokenid specified")]
    NoTokenId,
    #[error("'{0}' is not a valid token ID - not able to split into user and token parts")]
    NotATokenId(String),
    #[error("no such user ('{0}')")]
    NoSuchUser(String),
    #[error("user '{0}' is disabled")]
    UserDisabled(String),
    #[error("no such token '{token}' for user '{user}'")]
    NoSuchToken { user: String, token: String },
    #[error("invalid token value!")]
    InvalidValue,
}

impl AccessConfig {
    /// Authenticates an `Authorization` header value; returns the authid (`user@realm!token`).
    pub fn authenticate(&self, header: Option<&str>) -> Result<String, AuthError> {
        let Some(value) = header.and_then(|h| h.strip_prefix("PVEAPIToken=")) else {
            return Err(AuthError::NoTicket);
        };
        let Some((tokenid, secret)) = value.rsplit_once('=') else {
            return Err(AuthError::NoTokenId);
        };
        let Some((user, token)) = tokenid
            .split_once('!')
            .filter(|(u, t)| u.contains('@') && !t.is_empty())
        else {
            return Err(AuthError::NotATokenId(tokenid.to_owned()));
        };
        match self.users.get(user) {
            None => return Err(AuthError::NoSuchUser(user.to_owned())),
            Some(false) => return Err(AuthError::UserDisabled(user.to_owned())),
            Some(true) => {}
        }
        let Some(entry) = self.tokens.get(tokenid) else {
            return Err(AuthError::NoSuchToken {
                user: user.to_owned(),
                token: token.to_owned(),
            });
        };
        use subtle_eq::ct_eq;
        if !ct_eq(entry.secret.as_bytes(), secret.as_bytes()) {
            return Err(AuthError::InvalidValue);
        }
        Ok(tokenid.to_owned())
    }

    /// Effective privileges of `authid` (a user or token id) on `path`.
    pub fn privileges(&self, authid: &str, path: &str) -> Privs {
        let (user, token) = match authid.split_once('!') {
            Some((u, _)) => (u, Some(authid)),
            None => (authid, None),
        };
        if user == "root@pam" {
            let all: Privs = ALL_PRIVILEGES.iter().map(|p| (*p).to_owned()).collect();
            return match token {
                Some(t) if self.tokens.get(t).is_some_and(|e| e.privsep) => {
                    self.walk(AclKind::Token, t, path)
                }
                Some(_) | None => all,
            };
        }
        let user_privs = self.walk(AclKind::User, user, path);
        match token {
            None => user_privs,
            Some(t) => match self.tokens.get(t) {
                Some(entry) if entry.privsep => {
                    let token_privs = self.walk(AclKind::Token, t, path);
                    token_privs.intersection(&user_privs).cloned().collect()
                }
                Some(_) => user_privs,
                None => Privs::new(),
            },
        }
    }

    /// True when `authid` holds `privilege` on `path`.
    pub fn has(&self, authid: &str, path: &str, privilege: &str) -> bool {
        self.privileges(authid, path).contains(privilege)
    }

    /// Every ACL path plus the usual roots, for `/access/permissions`.
    pub fn known_paths(&self) -> BTreeSet<String> {
        let mut paths: BTreeSet<String> = ["/", "/vms", "/storage", "/nodes", "/sdn", "/access"]
            .iter()
            .map(|p| (*p).to_owned())
            .collect();
        paths.extend(self.acls.iter().map(|a| a.path.clone()));
        paths
    }

    fn walk(&self, kind: AclKind, ugid: &str, path: &str) -> Privs {
        let mut current = Privs::new();
        for prefix in path_prefixes(path) {
            let exact = prefix == normalize(path);
            let entries: Vec<&AclFixture> = self
                .acls
                .iter()
                .filter(|a| a.kind == kind && a.ugid == ugid && normalize(&a.path) == prefix)
                .filter(|a| exact || a.propagate)
                .collect();
            if !entries.is_empty() {
                current = entries
                    .iter()
                    .flat_map(|a| self.role_privs(&a.role))
                    .collect();
            }
        }
        current
    }

    fn role_privs(&self, roleid: &str) -> Privs {
        if let Some(p) = self.roles.get(roleid) {
            return p.clone();
        }
        builtin_role(roleid)
            .unwrap_or_default()
            .into_iter()
            .map(str::to_owned)
            .collect()
    }
}

fn normalize(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

fn path_prefixes(path: &str) -> Vec<String> {
    let mut out = vec!["/".to_owned()];
    let mut acc = String::new();
    for part in normalize(path).split('/').filter(|p| !p.is_empty()) {
        acc.push('/');
        acc.push_str(part);
        out.push(acc.clone());
    }
    out
}

mod subtle_eq {
    /// Constant-time comparison so the sim does not teach clients timing-leaky habits.
    pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AccessConfig {
        let mut c = AccessConfig::default();
        c.users.insert("a@pve".into(), true);
        c.tokens.insert(
            "a@pve!t".into(),
            TokenEntry {
                privsep: true,
                secret: "s".into(),
            },
        );
        c.roles
            .insert("R".into(), ["VM.Audit".to_owned()].into_iter().collect());
        c
    }

    #[test]
    fn privsep_token_without_user_grant_has_nothing() {
        let mut c = cfg();
        c.acls.push(AclFixture {
            path: "/".into(),
            role: "R".into(),
            kind: AclKind::Token,
            ugid: "a@pve!t".into(),
            propagate: true,
        });
        assert!(!c.has("a@pve!t", "/vms/100", "VM.Audit"));
    }

    #[test]
    fn more_specific_acl_replaces_inherited() {
        let mut c = cfg();
        for (path, role) in [("/", "R"), ("/vms/100", "NoAccess")] {
            c.acls.push(AclFixture {
                path: path.into(),
                role: role.into(),
                kind: AclKind::User,
                ugid: "a@pve".into(),
                propagate: true,
            });
        }
        assert!(c.has("a@pve", "/vms/101", "VM.Audit"));
        assert!(!c.has("a@pve", "/vms/100", "VM.Audit"));
    }

    #[test]
    fn wrong_secret_is_invalid_token_value() {
        let c = cfg();
        assert_eq!(
            c.authenticate(Some("PVEAPIToken=a@pve!t=x")),
            Err(AuthError::InvalidValue)
        );
        assert_eq!(
            c.authenticate(Some("PVEAPIToken=a@pve!t=s")).unwrap(),
            "a@pve!t"
        );
    }
}
