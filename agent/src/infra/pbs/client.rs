//! The PBS client: PBS's settings over the shared HTTP core ([`crate::infra::proxmox::http`],
//! which builds requests, sends the token, applies the per-request timeout and unwraps answers;
//! PBS's reading of a failed answer is `From<HttpError> for PbsError` in `super::error`), plus
//! the two datastore calls the agent needs (snapshot listing and verify).
//!
//! Endpoints and privileges, confirmed in proxmox-backup `src/api2/admin/datastore.rs`:
//! - `GET /admin/datastore/{store}/snapshots` with optional `ns`, `backup-type`, `backup-id`:
//!   needs `Datastore.Audit` (all groups) or `Datastore.Backup` (owned groups only) on
//!   `/datastore/{store}[/{ns}…]`.
//! - `POST /admin/datastore/{store}/verify` with optional `ns`, `backup-type`, `backup-id`,
//!   `backup-time`, `ignore-verified` (default **true**: snapshots with a verify state are
//!   skipped unless older than `outdated-after` days), `outdated-after`, `max-depth`: needs
//!   `Datastore.Verify` (any group) or `Datastore.Backup` (owned groups). Type+id+time verifies
//!   one snapshot (worker `verify_snapshot`), type+id a group (`verify_group`), none the whole
//!   datastore (`verify`); any other combination is refused with
//!   `parameters do not specify a backup group or snapshot`. Answers `{"data":"<UPID>"}`; the
//!   verdict lands in each snapshot's `verification` and, for any failure, in the task's exit
//!   status `verification failed - please check the log for details`.

use std::time::Duration;

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;

use super::error::PbsError;
use super::token::{Pbs, PbsToken};
use super::types::{BackupType, PbsSnapshot, WireSnapshot};
use super::upid::PbsUpid;
use crate::infra::proxmox::TlsTrust;
use crate::infra::proxmox::http::HttpCore;

/// Request parameters (form fields or query pairs).
pub(crate) use crate::infra::proxmox::http::Params;

/// Settings of a [`PbsClient`].
#[derive(Debug, Clone)]
pub struct PbsClientConfig {
    /// Base URL, e.g. `https://pbs.example:8007` (the `/api2/json` prefix is added).
    pub endpoint: Url,
    pub token: PbsToken,
    pub trust: TlsTrust,
    /// Limit for one HTTP request, connect included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

/// A typed client for the PBS API over HTTPS with an API token.
#[derive(Clone)]
pub struct PbsClient {
    pub(super) core: HttpCore<Pbs>,
}

impl std::fmt::Debug for PbsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbsClient")
            .field("api_base", &self.core.api_base().as_str())
            .field("authid", &self.core.authid())
            .finish_non_exhaustive()
    }
}

/// What to verify: a snapshot (type + id + time), a group (type + id) or everything the token
/// may verify in a namespace (none of them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyRequest {
    /// Namespace; `None` for the root namespace.
    pub ns: Option<String>,
    pub backup_type: Option<BackupType>,
    pub backup_id: Option<String>,
    /// Snapshot time (epoch seconds); needs type and id.
    pub backup_time: Option<i64>,
    /// Skip snapshots that already have a verify state (PBS default: true).
    pub ignore_verified: Option<bool>,
    /// With `ignore_verified`, re-verify snapshots whose last verify is older than this many days.
    pub outdated_after: Option<u32>,
}

impl PbsClient {
    /// Builds the client. Fails for a non-https endpoint, bad TLS material, or
    /// `insecure_skip_verify` on a non-loopback endpoint.
    pub fn new(config: PbsClientConfig) -> Result<Self, PbsError> {
        let c = &config;
        let core = HttpCore::new(
            &c.endpoint,
            &c.token,
            &c.trust,
            c.request_timeout,
            c.connect_timeout,
        )?;
        Ok(Self { core })
    }

    /// The token's authid (who the agent acts as on PBS).
    pub fn authid(&self) -> &str {
        self.core.authid()
    }

    /// Per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.core.request_timeout()
    }

    /// Lists the snapshots of a datastore namespace, optionally only one backup type and/or id.
    pub async fn snapshots(
        &self,
        store: &str,
        ns: Option<&str>,
        backup_type: Option<BackupType>,
        backup_id: Option<&str>,
    ) -> Result<Vec<PbsSnapshot>, PbsError> {
        validate_datastore(store)?;
        let mut q: Params = Vec::new();
        if let Some(ns) = ns.filter(|ns| !ns.is_empty()) {
            validate_namespace(ns)?;
            q.push(("ns", ns.to_owned()));
        }
        if let Some(t) = backup_type {
            q.push(("backup-type", t.as_str().to_owned()));
        }
        if let Some(id) = backup_id {
            validate_backup_id(id)?;
            q.push(("backup-id", id.to_owned()));
        }
        let path = format!("/admin/datastore/{store}/snapshots");
        let wire: Vec<WireSnapshot> = self.get(&path, q, None).await?;
        Ok(wire
            .into_iter()
            .map(|w| PbsSnapshot::from_wire(w, ns))
            .collect())
    }

    /// Starts a verify task; its UPID names the node whose task API reports on it.
    pub async fn verify(&self, store: &str, req: &VerifyRequest) -> Result<PbsUpid, PbsError> {
        validate_datastore(store)?;
        let mut form: Params = Vec::new();
        if let Some(ns) = req.ns.as_deref().filter(|ns| !ns.is_empty()) {
            validate_namespace(ns)?;
            form.push(("ns", ns.to_owned()));
        }
        match (req.backup_type, req.backup_id.as_deref(), req.backup_time) {
            (Some(t), Some(id), time) => {
                validate_backup_id(id)?;
                form.push(("backup-type", t.as_str().to_owned()));
                form.push(("backup-id", id.to_owned()));
                if let Some(time) = time {
                    if time < 1 {
                        return Err(PbsError::InvalidRequest(format!(
                            "backup time {time} is not a positive epoch"
                        )));
                    }
                    form.push(("backup-time", time.to_string()));
                }
            }
            (None, None, None) => {}
            (Some(_), None, _) | (None, Some(_), _) | (None, None, Some(_)) => {
                return Err(PbsError::InvalidRequest(
                    "verify takes a backup type and id together, and a backup time only with both"
                        .into(),
                ));
            }
        }
        if let Some(ignore) = req.ignore_verified {
            form.push(("ignore-verified", ignore.to_string()));
        }
        if let Some(days) = req.outdated_after {
            form.push(("outdated-after", days.to_string()));
        }
        let path = format!("/admin/datastore/{store}/verify");
        self.core.call(Method::POST, &path, form, None).await
    }

    /// `GET` and decode `data`, with an optional timeout for this request.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: Params,
        timeout: Option<Duration>,
    ) -> Result<T, PbsError> {
        self.core.call(Method::GET, path, query, timeout).await
    }
}

/// PBS's safe id (`PROXMOX_SAFE_ID_REGEX`): `[A-Za-z0-9_][A-Za-z0-9._-]*`.
fn is_safe_id(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A datastore name: a safe id of 3 to 32 characters (`DATASTORE_SCHEMA`).
pub fn validate_datastore(store: &str) -> Result<(), PbsError> {
    if (3..=32).contains(&store.len()) && is_safe_id(store) {
        Ok(())
    } else {
        Err(PbsError::InvalidRequest(format!(
            "datastore name '{store}' must be 3-32 characters of A-Z a-z 0-9 _ . - (not starting with . or -)"
        )))
    }
}

/// A backup id (`BACKUP_ID_RE`): a safe id, e.g. the guest's vmid.
pub fn validate_backup_id(id: &str) -> Result<(), PbsError> {
    if is_safe_id(id) && id.len() <= 128 {
        Ok(())
    } else {
        Err(PbsError::InvalidRequest(format!(
            "backup id '{id}' must be characters of A-Z a-z 0-9 _ . - (not starting with . or -)"
        )))
    }
}

/// A namespace: up to 7 `/`-separated safe ids, at most 256 characters.
pub fn validate_namespace(ns: &str) -> Result<(), PbsError> {
    let parts: Vec<&str> = ns.split('/').collect();
    if ns.len() <= 256 && parts.len() <= 7 && parts.iter().all(|p| is_safe_id(p)) {
        Ok(())
    } else {
        Err(PbsError::InvalidRequest(format!(
            "namespace '{ns}' must be up to 7 '/'-separated names of A-Z a-z 0-9 _ . -"
        )))
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;
    use crate::infra::proxmox::http;

    /// One PBS answer through the shared decode path and PBS's reading of errors.
    fn decode(status: u16, body: &str) -> Result<serde_json::Value, PbsError> {
        let status = StatusCode::from_u16(status).unwrap();
        http::decode(
            "POST",
            "/admin/datastore/felhom-store/verify",
            status,
            status.canonical_reason().unwrap_or("").to_owned(),
            body.as_bytes(),
        )
        .map_err(PbsError::from)
    }

    #[test]
    fn a_403_body_becomes_a_permission_error_naming_the_privileges() {
        let err = decode(
            403,
            "permission check failed - missing Datastore.Verify|Datastore.Backup on /datastore/felhom-store",
        )
        .unwrap_err();
        let PbsError::Permission { denied, .. } = &err else {
            panic!("unexpected {err:?}");
        };
        let denied = denied.as_ref().unwrap();
        assert_eq!(denied.path, "/datastore/felhom-store");
        assert_eq!(denied.privileges, ["Datastore.Verify", "Datastore.Backup"]);
        assert_eq!(
            err.to_string(),
            "PBS denied POST /admin/datastore/felhom-store/verify: permission check failed - missing Datastore.Verify|Datastore.Backup on /datastore/felhom-store"
        );
    }

    #[test]
    fn a_401_is_an_auth_error_with_pbs_text() {
        let err = decode(401, "authentication failed - invalid credentials").unwrap_err();
        assert_eq!(
            err.to_string(),
            "PBS refused the API token (authentication failed - invalid credentials)"
        );
    }

    #[test]
    fn a_400_keeps_the_message_and_is_not_transient() {
        let err = decode(
            400,
            "parameters do not specify a backup group or snapshot\n",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "PBS rejected POST /admin/datastore/felhom-store/verify: 400 parameters do not specify a backup group or snapshot"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn a_5xx_is_transient_and_an_empty_body_falls_back_to_the_reason() {
        let err = decode(503, "").unwrap_err();
        assert_eq!(
            err.to_string(),
            "PBS server error on POST /admin/datastore/felhom-store/verify: 503 Service Unavailable"
        );
        assert!(err.is_transient());
    }

    #[test]
    fn a_huge_error_body_is_cut() {
        let err = decode(400, &"x".repeat(10_000)).unwrap_err();
        assert!(err.to_string().len() < 1200, "{}", err.to_string().len());
    }

    #[test]
    fn names_are_validated_before_any_request() {
        assert!(validate_datastore("felhom-store").is_ok());
        assert!(validate_datastore("ab").is_err());
        assert!(validate_datastore("../x").is_err());
        assert!(validate_backup_id("101").is_ok());
        assert!(validate_backup_id("-1").is_err());
        assert!(validate_namespace("site-a/host1").is_ok());
        assert!(validate_namespace("a//b").is_err());
        assert!(validate_namespace("a/b/c/d/e/f/g/h").is_err());
    }
}
