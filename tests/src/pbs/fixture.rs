//! Seed data for the PBS simulator: node name, datastores with their snapshots, users, tokens
//! and ACLs. JSON, so `felhom-pbssim --fixture FILE` can load the same shape.
//!
//! The embedded default (`tests/fixtures/pbs-default.json`): node `pbs1`, datastore
//! `felhom-store`, user `felhom@pbs` with token `felhom@pbs!agent`, `DatastoreAdmin` on
//! `/datastore/felhom-store` for both (PBS intersects token and user rights), and four ct
//! snapshots owned by the token: two encrypted of guest 101, one encrypted and one
//! unencrypted of guest 102, none verified yet. Token secrets not given in a fixture are
//! generated at start.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::acl::AclEntry;
use super::model::SimSnapshot;

/// One datastore and its snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixtureDatastore {
    pub name: String,
    #[serde(default)]
    pub snapshots: Vec<SimSnapshot>,
}

/// An API token; without `secret`, one is generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixtureToken {
    pub authid: String,
    #[serde(default)]
    pub secret: Option<String>,
}

/// The whole seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PbsFixture {
    pub node: String,
    pub datastores: Vec<FixtureDatastore>,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub tokens: Vec<FixtureToken>,
    #[serde(default)]
    pub acl: Vec<AclEntry>,
}

/// A fixture that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error("Cannot read fixture {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("Fixture {path} is not valid")]
    Parse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("Fixture is inconsistent: {0}")]
    Inconsistent(String),
}

/// Datastore of [`PbsFixture::linked_host`] (what the PVE fixture's `felhom-pbs` names).
pub const LINKED_DATASTORE: &str = "felhom";
/// The PVE storage's PBS user in [`PbsFixture::linked_host`].
pub const LINKED_BACKUP_USER: &str = "felhom-backup@pbs";
/// The agent's PBS token in [`PbsFixture::linked_host`].
pub const LINKED_AGENT_TOKEN: &str = "felhom-agent@pbs!agent";

fn user_of_token(authid: &str) -> &str {
    authid.split_once('!').map_or(authid, |(u, _)| u)
}

const DEFAULT_FIXTURE: &str = include_str!("../../fixtures/pbs-default.json");

impl PbsFixture {
    /// The embedded default described in the module docs.
    pub fn default_host() -> Self {
        serde_json::from_str(DEFAULT_FIXTURE)
            .expect("the embedded default fixture is valid JSON checked by a unit test")
    }

    /// The PBS behind the PVE simulator's `felhom-pbs` storage (see `crate::pve::pbs_link`):
    /// node `pbs1`, an empty datastore [`LINKED_DATASTORE`], the PVE storage's user
    /// [`LINKED_BACKUP_USER`] with `DatastoreBackup` (it owns what vzdump writes), and the
    /// agent's token [`LINKED_AGENT_TOKEN`] with `DatastoreReader` (Audit + Verify + Read: list
    /// snapshots, start verifies, read task logs of its own verifies) granted to both the user
    /// and the token (PBS intersects them).
    pub fn linked_host() -> Self {
        let user = user_of_token(LINKED_AGENT_TOKEN);
        let acl = |ugid: &str, role| AclEntry {
            path: format!("/datastore/{LINKED_DATASTORE}"),
            ugid: ugid.to_owned(),
            role,
            propagate: true,
        };
        PbsFixture {
            node: "pbs1".to_owned(),
            datastores: vec![FixtureDatastore {
                name: LINKED_DATASTORE.to_owned(),
                snapshots: Vec::new(),
            }],
            users: vec![LINKED_BACKUP_USER.to_owned(), user.to_owned()],
            tokens: vec![FixtureToken {
                authid: LINKED_AGENT_TOKEN.to_owned(),
                secret: None,
            }],
            acl: vec![
                acl(LINKED_BACKUP_USER, super::acl::Role::DatastoreBackup),
                acl(user, super::acl::Role::DatastoreReader),
                acl(LINKED_AGENT_TOKEN, super::acl::Role::DatastoreReader),
            ],
        }
    }

    /// Loads and checks a fixture file.
    pub fn from_file(path: &Path) -> Result<Self, FixtureError> {
        let text = std::fs::read_to_string(path).map_err(|source| FixtureError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let fx: PbsFixture = serde_json::from_str(&text).map_err(|source| FixtureError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        fx.check()?;
        Ok(fx)
    }

    /// Tokens belong to listed users; the node name is a valid PBS node name.
    pub fn check(&self) -> Result<(), FixtureError> {
        let node_ok = !self.node.is_empty()
            && self
                .node
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !self.node.starts_with('-')
            && !self.node.ends_with('-');
        if !node_ok {
            return Err(FixtureError::Inconsistent(format!(
                "node '{}' is not a valid node name",
                self.node
            )));
        }
        for t in &self.tokens {
            let Some((user, name)) = t.authid.split_once('!') else {
                return Err(FixtureError::Inconsistent(format!(
                    "token '{}' is not of the form user@realm!name",
                    t.authid
                )));
            };
            if name.is_empty() || !self.users.iter().any(|u| u == user) {
                return Err(FixtureError::Inconsistent(format!(
                    "token '{}' belongs to no listed user",
                    t.authid
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_fixture_loads_and_is_consistent() {
        let fx = PbsFixture::default_host();
        fx.check().unwrap();
        assert_eq!(fx.datastores[0].name, "felhom-store");
        assert_eq!(fx.datastores[0].snapshots.len(), 4);
        assert!(
            fx.datastores[0]
                .snapshots
                .iter()
                .all(|s| s.verification.is_none())
        );
    }
}
