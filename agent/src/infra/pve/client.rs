//! The Proxmox VE client: PVE's settings and paths over the shared HTTP core
//! ([`crate::infra::proxmox::http`]), which builds requests, sends the token, applies the
//! per-request timeout and unwraps answers; PVE's reading of a failed answer is
//! `From<HttpError> for PveError` (`super::error`).

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, Url};
use serde::de::DeserializeOwned;

use super::config_cache::{CONFIG_MAX_AGE, ConfigCache};
use super::error::PveError;
use super::token::{ApiToken, Pve};
use super::upid::Upid;
use crate::infra::proxmox::TlsTrust;
use crate::infra::proxmox::http::HttpCore;

/// Request parameters as PVE takes them (form fields or query pairs).
pub use crate::infra::proxmox::http::Params;

/// Settings of a [`PveClient`].
#[derive(Debug, Clone)]
pub struct PveClientConfig {
    /// Base URL, e.g. `https://127.0.0.1:8006` (the `/api2/json` prefix is added).
    pub endpoint: Url,
    /// Node this agent manages (single-node hosts: the host's own node name).
    pub node: String,
    pub token: ApiToken,
    pub trust: TlsTrust,
    /// Limit for one HTTP request, connect included.
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
}

/// A typed client for the Proxmox VE API over HTTPS with an API token.
#[derive(Clone)]
pub struct PveClient {
    pub(super) core: HttpCore<Pve>,
    node: String,
    /// Guest configs for [`PveClient::lxc_config_recent`]; emptied by every mutation.
    pub(super) configs: Arc<ConfigCache>,
}

impl std::fmt::Debug for PveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveClient")
            .field("api_base", &self.core.api_base().as_str())
            .field("node", &self.node)
            .field("authid", &self.core.authid())
            .finish_non_exhaustive()
    }
}

impl PveClient {
    /// Builds the client. Fails for a non-https endpoint, bad TLS material, or
    /// `insecure_skip_verify` on a non-loopback endpoint.
    pub fn new(config: PveClientConfig) -> Result<Self, PveError> {
        let c = &config;
        let core = HttpCore::new(
            &c.endpoint,
            &c.token,
            &c.trust,
            c.request_timeout,
            c.connect_timeout,
        )?;
        Ok(Self {
            core,
            node: config.node,
            configs: Arc::new(ConfigCache::new(CONFIG_MAX_AGE)),
        })
    }

    /// The node this client manages.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The token's authid (who the agent acts as).
    pub fn authid(&self) -> &str {
        self.core.authid()
    }

    /// Per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.core.request_timeout()
    }

    /// `GET` and decode `data`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: Params,
    ) -> Result<T, PveError> {
        self.core.call(Method::GET, path, query, None).await
    }

    /// A mutation: the answer, with the config cache emptied before and after it (a read
    /// overlapping the change is then never kept).
    async fn mutate<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: Params,
    ) -> Result<T, PveError> {
        self.configs.clear();
        let answer = self.core.call(method, path, params, None).await;
        self.configs.clear();
        answer
    }

    /// `POST` form parameters; the answer is a UPID.
    pub(crate) async fn post_upid(&self, path: &str, form: Params) -> Result<Upid, PveError> {
        self.mutate(Method::POST, path, form).await
    }

    /// `PUT` form parameters; the answer is a UPID.
    pub(crate) async fn put_upid(&self, path: &str, form: Params) -> Result<Upid, PveError> {
        self.mutate(Method::PUT, path, form).await
    }

    /// `PUT` form parameters; synchronous, no data in the answer.
    pub(crate) async fn put_sync(&self, path: &str, form: Params) -> Result<(), PveError> {
        let _: serde_json::Value = self.mutate(Method::PUT, path, form).await?;
        Ok(())
    }

    /// `POST` form parameters; synchronous, the answer's data is dropped unread.
    pub(crate) async fn post_sync(&self, path: &str, form: Params) -> Result<(), PveError> {
        let _: serde_json::Value = self.mutate(Method::POST, path, form).await?;
        Ok(())
    }

    /// `DELETE` with query parameters; the answer is a UPID.
    pub(crate) async fn delete_upid(&self, path: &str, query: Params) -> Result<Upid, PveError> {
        self.mutate(Method::DELETE, path, query).await
    }
}

#[cfg(test)]
mod tests {
    use reqwest::StatusCode;

    use super::*;
    use crate::infra::proxmox::http;

    /// One PVE answer through the shared decode path and PVE's reading of errors.
    fn decode_answer<T: DeserializeOwned>(
        method: &'static str,
        path: &str,
        status: StatusCode,
        reason: String,
        body: &[u8],
    ) -> Result<T, PveError> {
        http::decode(method, path, status, reason, body).map_err(PveError::from)
    }

    fn decode(status: u16, reason: &str, body: &str) -> Result<serde_json::Value, PveError> {
        decode_answer(
            "POST",
            "/nodes/pve1/vzdump",
            StatusCode::from_u16(status).unwrap(),
            reason.to_owned(),
            body.as_bytes(),
        )
    }

    #[test]
    fn a_403_becomes_a_permission_error_naming_path_and_privilege() {
        let err = decode(
            403,
            "Permission check failed (/vms/9001, VM.Backup)",
            r#"{"data":null}"#,
        )
        .unwrap_err();
        match &err {
            PveError::Permission { denied, .. } => {
                assert_eq!(denied.path, "/vms/9001");
                assert_eq!(denied.privileges, ["VM.Backup"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "Proxmox VE denied POST /nodes/pve1/vzdump: Permission check failed (/vms/9001, VM.Backup)"
        );
    }

    #[test]
    fn a_401_is_an_auth_error() {
        let err = decode(401, "authentication failure", r#"{"data":null}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Proxmox VE refused the API token (authentication failure)"
        );
    }

    #[test]
    fn a_500_for_a_missing_config_is_guest_not_found() {
        let err = decode(
            500,
            "Configuration file 'nodes/pve1/lxc/999.conf' does not exist",
            "{\"data\":null}",
        )
        .unwrap_err();
        assert!(
            matches!(err, PveError::GuestNotFound { vmid: 999, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn other_5xx_are_server_errors_and_transient() {
        let err = decode(503, "Service Unavailable", "").unwrap_err();
        assert!(matches!(err, PveError::Server { status: 503, .. }));
        assert!(err.is_transient());
    }

    #[test]
    fn a_400_carries_the_parameter_errors() {
        let err = decode(
            400,
            "Parameter verification failed.",
            r#"{"errors":{"storage":"property is missing and it is not optional\n"},"data":null}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("(storage: property is missing and it is not optional)"),
            "{err}"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn a_200_without_data_is_a_decode_error() {
        let err =
            decode_answer::<Upid>("POST", "/x", StatusCode::OK, "OK".into(), b"{}").unwrap_err();
        assert!(matches!(err, PveError::Decode { .. }));
    }
}
