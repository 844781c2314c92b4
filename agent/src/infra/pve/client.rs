//! The HTTP side of the Proxmox VE client: one place that builds requests, sends the token,
//! applies the per-request timeout and turns PVE's answers into typed data or [`PveError`].

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

use super::error::{PermissionDenied, PveError, parse_missing_guest};
use super::tls::{self, TlsTrust, url_host::Host};
use super::token::ApiToken;
use super::upid::Upid;

/// Request parameters as PVE takes them (form fields or query pairs).
pub type Params = Vec<(&'static str, String)>;

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
    http: reqwest::Client,
    api_base: Url,
    node: String,
    auth: HeaderValue,
    authid: String,
    request_timeout: Duration,
}

impl std::fmt::Debug for PveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PveClient")
            .field("api_base", &self.api_base.as_str())
            .field("node", &self.node)
            .field("authid", &self.authid)
            .finish_non_exhaustive()
    }
}

fn setup_err(e: impl std::error::Error + Send + Sync + 'static) -> PveError {
    PveError::Setup(Box::new(e))
}

/// Extracts the endpoint host for the loopback check of `insecure_skip_verify`.
fn endpoint_host(url: &Url) -> Result<Host<'_>, PveError> {
    let host = url
        .host_str()
        .ok_or_else(|| PveError::InvalidRequest(format!("endpoint '{url}' has no host")))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Ok(match bare.parse() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(host),
    })
}

impl PveClient {
    /// Builds the client. Fails for a non-https endpoint, bad TLS material, or
    /// `insecure_skip_verify` on a non-loopback endpoint.
    pub fn new(config: PveClientConfig) -> Result<Self, PveError> {
        if config.endpoint.scheme() != "https" {
            return Err(PveError::InvalidRequest(format!(
                "endpoint '{}' must use https",
                config.endpoint
            )));
        }
        tls::check_endpoint(&config.trust, &endpoint_host(&config.endpoint)?).map_err(setup_err)?;
        let tls = tls::client_config(&config.trust).map_err(setup_err)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            // pveproxy speaks HTTP/1.1 and carries its error text in the reason phrase, which
            // only exists in HTTP/1.
            .http1_only()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("felhom-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(setup_err)?;
        let mut auth = HeaderValue::from_str(config.token.header_value().expose_secret())
            .map_err(|_| PveError::InvalidRequest("API token has invalid characters".into()))?;
        auth.set_sensitive(true);
        let mut api_base = config.endpoint.clone();
        api_base.set_path("/api2/json/");
        Ok(Self {
            http,
            api_base,
            node: config.node,
            auth,
            authid: config.token.authid().to_owned(),
            request_timeout: config.request_timeout,
        })
    }

    /// The node this client manages.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The token's authid (who the agent acts as).
    pub fn authid(&self) -> &str {
        &self.authid
    }

    /// Per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// `GET` and decode `data`.
    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: Params,
    ) -> Result<T, PveError> {
        self.call(Method::GET, "GET", path, query, None).await
    }

    /// `GET` with an explicit timeout for this request.
    pub(crate) async fn get_with_timeout<T: DeserializeOwned>(
        &self,
        path: &str,
        query: Params,
        timeout: Duration,
    ) -> Result<T, PveError> {
        self.call(Method::GET, "GET", path, query, Some(timeout))
            .await
    }

    /// `POST` form parameters; the answer is a UPID.
    pub(crate) async fn post_upid(&self, path: &str, form: Params) -> Result<Upid, PveError> {
        self.call(Method::POST, "POST", path, form, None).await
    }

    /// `PUT` form parameters; the answer is a UPID.
    pub(crate) async fn put_upid(&self, path: &str, form: Params) -> Result<Upid, PveError> {
        self.call(Method::PUT, "PUT", path, form, None).await
    }

    /// `PUT` form parameters; synchronous, no data in the answer.
    pub(crate) async fn put_sync(&self, path: &str, form: Params) -> Result<(), PveError> {
        let _: serde_json::Value = self.call(Method::PUT, "PUT", path, form, None).await?;
        Ok(())
    }

    /// `DELETE` with query parameters; the answer is a UPID.
    pub(crate) async fn delete_upid(&self, path: &str, query: Params) -> Result<Upid, PveError> {
        self.call(Method::DELETE, "DELETE", path, query, None).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        verb: &'static str,
        path: &str,
        params: Params,
        timeout: Option<Duration>,
    ) -> Result<T, PveError> {
        let url = self
            .api_base
            .join(path.trim_start_matches('/'))
            .map_err(|_| PveError::InvalidRequest(format!("bad API path '{path}'")))?;
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(AUTHORIZATION, self.auth.clone());
        req = if method == Method::POST || method == Method::PUT {
            req.form(&params)
        } else {
            req.query(&params)
        };
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let effective_timeout = timeout.unwrap_or(self.request_timeout);
        let transport = |source: reqwest::Error| {
            if source.is_timeout() {
                PveError::Timeout {
                    method: verb,
                    path: path.to_owned(),
                    timeout: effective_timeout,
                }
            } else {
                PveError::Transport {
                    method: verb,
                    path: path.to_owned(),
                    source,
                }
            }
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let reason = reason_phrase(&resp);
        let body = resp.bytes().await.map_err(transport)?;
        decode_answer(verb, path, status, reason, &body)
    }
}

/// The reason phrase as the server sent it (hyper keeps it only when it differs from the
/// canonical one), else the canonical phrase.
fn reason_phrase(resp: &reqwest::Response) -> String {
    resp.extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
        .or_else(|| resp.status().canonical_reason().map(str::to_owned))
        .unwrap_or_default()
}

#[derive(serde::Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(serde::Deserialize, Default)]
struct ErrorEnvelope {
    #[serde(default)]
    errors: BTreeMap<String, String>,
    #[serde(default)]
    message: Option<String>,
}

/// Turns one PVE answer into data or a typed error. Separate from I/O so the status mapping is
/// unit-tested against the exact real texts.
pub(crate) fn decode_answer<T: DeserializeOwned>(
    method: &'static str,
    path: &str,
    status: StatusCode,
    reason: String,
    body: &[u8],
) -> Result<T, PveError> {
    if status == StatusCode::OK {
        let env: Envelope<T> = serde_json::from_slice(body).map_err(|source| PveError::Decode {
            method,
            path: path.to_owned(),
            source,
        })?;
        return Ok(env.data);
    }
    let extra: ErrorEnvelope = serde_json::from_slice(body).unwrap_or_default();
    // Some PVE versions also put the message in the body; the status line is authoritative.
    let reason = if reason.trim().is_empty() {
        extra.message.clone().unwrap_or_default().trim().to_owned()
    } else {
        reason.trim().to_owned()
    };
    let path = path.to_owned();
    match status.as_u16() {
        401 => Err(PveError::Unauthorized { reason }),
        403 => match PermissionDenied::parse(&reason) {
            Some(denied) => Err(PveError::Permission {
                method,
                path,
                denied,
            }),
            None => Err(PveError::Rejected {
                method,
                path,
                status: 403,
                reason,
                errors: extra.errors,
            }),
        },
        code @ 500..=599 => match parse_missing_guest(&reason) {
            Some((node, vmid)) => Err(PveError::GuestNotFound { node, vmid }),
            None => Err(PveError::Server {
                method,
                path,
                status: code,
                reason,
            }),
        },
        code => Err(PveError::Rejected {
            method,
            path,
            status: code,
            reason,
            errors: extra.errors,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
