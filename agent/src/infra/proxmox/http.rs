//! One request/decode path for both Proxmox APIs: builds the request under `/api2/json/`, sends
//! the token, applies the per-request timeout, unwraps the `{"data": …}` envelope of a 200, and
//! hands anything else to the product as [`HttpError::Status`] — the product's
//! `From<HttpError>` reads it its own way (PVE: the reason phrase, PBS: the body).

use std::marker::PhantomData;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;

use super::Product;
use super::tls::{self, TlsTrust, url_host::Host};
use super::token::ApiToken;

/// Request parameters as Proxmox takes them (form fields or query pairs).
pub type Params = Vec<(&'static str, String)>;

/// A failed request, before the product words it. Never holds the token.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid client setting")]
    Setup(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("cannot reach the server for {method} {path}")]
    Transport {
        method: &'static str,
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{method} {path} timed out after {timeout:?}")]
    Timeout {
        method: &'static str,
        path: String,
        timeout: Duration,
    },
    #[error("unexpected answer to {method} {path}")]
    Decode {
        method: &'static str,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{method} {path} answered {}", .answer.status)]
    Status {
        method: &'static str,
        path: String,
        answer: ErrorAnswer,
    },
}

/// Implements `From<HttpError>` for a product's error enum whose `Setup`, `InvalidRequest`,
/// `Transport`, `Timeout` and `Decode` variants mirror [`HttpError`]'s (each product words
/// them in its own `#[error]` texts); [`HttpError::Status`] goes to `$from_answer(method, path,
/// answer)`, the product's reading of a failed answer.
macro_rules! product_error_from_http {
    ($error:ident, $from_answer:path) => {
        impl From<$crate::infra::proxmox::http::HttpError> for $error {
            fn from(e: $crate::infra::proxmox::http::HttpError) -> Self {
                use $crate::infra::proxmox::http::HttpError as H;
                match e {
                    H::Setup(source) => $error::Setup(source),
                    H::InvalidRequest(text) => $error::InvalidRequest(text),
                    H::Transport {
                        method,
                        path,
                        source,
                    } => $error::Transport {
                        method,
                        path,
                        source,
                    },
                    H::Timeout {
                        method,
                        path,
                        timeout,
                    } => $error::Timeout {
                        method,
                        path,
                        timeout,
                    },
                    H::Decode {
                        method,
                        path,
                        source,
                    } => $error::Decode {
                        method,
                        path,
                        source,
                    },
                    H::Status {
                        method,
                        path,
                        answer,
                    } => $from_answer(method, path, answer),
                }
            }
        }
    };
}
pub(crate) use product_error_from_http;

/// A non-200 answer as received, for the product to read.
#[derive(Debug, Clone)]
pub struct ErrorAnswer {
    pub status: StatusCode,
    /// The reason phrase as the server sent it (hyper keeps it only when it differs from the
    /// canonical one), else the canonical phrase.
    pub reason: String,
    pub body: Vec<u8>,
}

/// The HTTP side of a Proxmox client of product `P`.
pub(crate) struct HttpCore<P> {
    http: reqwest::Client,
    api_base: Url,
    auth: HeaderValue,
    authid: String,
    request_timeout: Duration,
    product: PhantomData<fn() -> P>,
}

// Written out: a derive would demand `P: Clone` of the marker type.
impl<P> Clone for HttpCore<P> {
    fn clone(&self) -> Self {
        Self {
            http: self.http.clone(),
            api_base: self.api_base.clone(),
            auth: self.auth.clone(),
            authid: self.authid.clone(),
            request_timeout: self.request_timeout,
            product: PhantomData,
        }
    }
}

fn setup_err(e: impl std::error::Error + Send + Sync + 'static) -> HttpError {
    HttpError::Setup(Box::new(e))
}

/// Extracts the endpoint host for the loopback check of `insecure_skip_verify`.
fn endpoint_host(url: &Url) -> Result<Host<'_>, HttpError> {
    let host = url
        .host_str()
        .ok_or_else(|| HttpError::InvalidRequest(format!("endpoint '{url}' has no host")))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Ok(match bare.parse() {
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(host),
    })
}

/// The verb as the errors spell it.
fn verb(method: &Method) -> &'static str {
    match *method {
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        _ => "GET",
    }
}

impl<P: Product> HttpCore<P> {
    /// Builds the core for `endpoint` (e.g. `https://127.0.0.1:8006`; the `/api2/json` prefix
    /// is added). `request_timeout` limits one request, connect included. Fails for a
    /// non-https endpoint, bad TLS material, or `insecure_skip_verify` on a non-loopback
    /// endpoint.
    pub(crate) fn new(
        endpoint: &Url,
        token: &ApiToken<P>,
        trust: &TlsTrust,
        request_timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, HttpError> {
        if endpoint.scheme() != "https" {
            return Err(HttpError::InvalidRequest(format!(
                "endpoint '{}' must use https",
                endpoint
            )));
        }
        tls::check_endpoint(trust, &endpoint_host(endpoint)?).map_err(setup_err)?;
        let tls = tls::client_config(trust).map_err(setup_err)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            // pveproxy speaks HTTP/1.1 and carries its error text in the reason phrase, which
            // only exists in HTTP/1; PBS's proxy speaks HTTP/1.1 too.
            .http1_only()
            .connect_timeout(connect_timeout)
            .timeout(request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("felhom-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(setup_err)?;
        let mut auth =
            HeaderValue::from_str(token.header_value().expose_secret()).map_err(|_| {
                HttpError::InvalidRequest(format!("{} has invalid characters", P::TOKEN_LABEL))
            })?;
        auth.set_sensitive(true);
        let mut api_base = endpoint.clone();
        api_base.set_path("/api2/json/");
        Ok(Self {
            http,
            api_base,
            auth,
            authid: token.authid().to_owned(),
            request_timeout,
            product: PhantomData,
        })
    }

    /// `https://host:port/api2/json/`.
    pub(crate) fn api_base(&self) -> &Url {
        &self.api_base
    }

    /// The token's authid (who the agent acts as).
    /// Whether the API is reached over loopback (127.0.0.0/8, ::1 or `localhost`).
    pub(crate) fn is_loopback(&self) -> bool {
        endpoint_host(&self.api_base).is_ok_and(|h| h.is_loopback())
    }

    pub(crate) fn authid(&self) -> &str {
        &self.authid
    }

    /// Per-request timeout.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// One request; `params` go into the form for POST and PUT (the only methods Proxmox's
    /// proxies accept a body on) and into the query otherwise. `timeout` overrides the
    /// client's per-request timeout.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: Params,
        timeout: Option<Duration>,
    ) -> Result<T, P::Error> {
        self.send(method, path, params, timeout)
            .await
            .map_err(P::Error::from)
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        params: Params,
        timeout: Option<Duration>,
    ) -> Result<T, HttpError> {
        let verb = verb(&method);
        let url = self
            .api_base
            .join(path.trim_start_matches('/'))
            .map_err(|_| HttpError::InvalidRequest(format!("bad API path '{path}'")))?;
        let with_body = method == Method::POST || method == Method::PUT;
        let mut req = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone());
        req = if with_body {
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
                HttpError::Timeout {
                    method: verb,
                    path: path.to_owned(),
                    timeout: effective_timeout,
                }
            } else {
                HttpError::Transport {
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
        decode(verb, path, status, reason, &body)
    }
}

/// The reason phrase as the server sent it, else the canonical phrase.
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

/// Turns one answer into data, a decode error, or [`HttpError::Status`]. Separate from I/O so
/// each product's status mapping is unit-tested against the exact real texts.
pub(crate) fn decode<T: DeserializeOwned>(
    method: &'static str,
    path: &str,
    status: StatusCode,
    reason: String,
    body: &[u8],
) -> Result<T, HttpError> {
    if status == StatusCode::OK {
        let env: Envelope<T> =
            serde_json::from_slice(body).map_err(|source| HttpError::Decode {
                method,
                path: path.to_owned(),
                source,
            })?;
        return Ok(env.data);
    }
    Err(HttpError::Status {
        method,
        path: path.to_owned(),
        answer: ErrorAnswer {
            status,
            reason,
            body: body.to_vec(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_200_unwraps_the_data_envelope() {
        let v: Vec<u32> = decode(
            "GET",
            "/x",
            StatusCode::OK,
            "OK".into(),
            br#"{"data":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(v, [1, 2]);
    }

    #[test]
    fn a_200_without_data_is_a_decode_error() {
        let err = decode::<String>("POST", "/x", StatusCode::OK, "OK".into(), b"{}").unwrap_err();
        assert!(matches!(err, HttpError::Decode { .. }), "{err:?}");
    }

    #[test]
    fn other_statuses_are_passed_on_whole() {
        let err = decode::<()>(
            "GET",
            "/x",
            StatusCode::FORBIDDEN,
            "Permission check failed (/, Sys.Audit)".into(),
            b"body",
        )
        .unwrap_err();
        let HttpError::Status { answer, .. } = err else {
            panic!("{err:?}");
        };
        assert_eq!(answer.status, 403);
        assert_eq!(answer.reason, "Permission check failed (/, Sys.Audit)");
        assert_eq!(answer.body, b"body");
    }
}
