//! One HTTP request → one response: route lookup, token shape, rate limit, body, one LocalApi
//! call, envelope.
//!
//! Order of checks, cheapest and least revealing first: route (404/405) → the public OpenAPI
//! document → declared body size (413, before anything is read) → per-source-address rate limit
//! (429) → `Authorization` and token shape (401, no gRPC call) → per-token rate limit (429) → not-yet-available endpoint (501) → body
//! (415/413/408/400) → the call. Access is logged at debug level with method, route, status
//! and duration only; the token and the raw path never reach the log.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::action::Action;
use crate::auth::BearerToken;
use crate::config::Limits;
use crate::envelope::{self, Body};
use crate::ratelimit::{RateLimiter, retry_after_secs};
use crate::routes::{self, Handling, Lookup, Route, Verb};
use crate::status;
use crate::throttle::LogThrottle;
use crate::upstream::{self, LocalApiClient};

/// The OpenAPI 3.1 document of the local API, served at `GET /openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub client: LocalApiClient,
    pub limits: Limits,
    pub limiter: RateLimiter,
    /// Checked before the token, so made-up tokens cannot each buy a fresh bucket.
    pub source_limiter: RateLimiter<IpAddr>,
    /// Agent failures are logged at most once a minute (any caller can provoke them).
    pub upstream_error_log: LogThrottle,
}

/// Handles one request; never fails (every failure is an envelope).
pub(crate) async fn handle(
    shared: Arc<Shared>,
    source: IpAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let method = request.method().clone();
    let (route, response) = dispatch(&shared, source, request).await;
    tracing::debug!(
        method = %method,
        route = route.map_or("-", |r| r.path),
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_millis() as u64,
        "local API request"
    );
    response
}

async fn dispatch(
    shared: &Shared,
    source: IpAddr,
    request: Request<Incoming>,
) -> (Option<&'static Route>, Response<Body>) {
    let route = match routes::lookup(request.method(), request.uri().path()) {
        Lookup::Found(route) => route,
        Lookup::WrongMethod(allow) => {
            let mut r = envelope::failure(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!(
                    "method {} is not allowed here; allowed: {allow}",
                    request.method()
                ),
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                r.headers_mut().insert(ALLOW, v);
            }
            return (None, r);
        }
        Lookup::NotFound => {
            return (
                None,
                envelope::failure(StatusCode::NOT_FOUND, "no such endpoint"),
            );
        }
    };
    (
        Some(route),
        handle_route(shared, source, route, request).await,
    )
}

async fn handle_route(
    shared: &Shared,
    source: IpAddr,
    route: &'static Route,
    request: Request<Incoming>,
) -> Response<Body> {
    let rpc = match route.handling {
        Handling::OpenApiDocument => return envelope::raw_json(OPENAPI_JSON),
        Handling::Call(rpc) => Some(rpc),
        Handling::NotAvailable => None,
    };
    if declared_length(&request).is_some_and(|n| n > shared.limits.max_body_bytes as u64) {
        return too_large(shared.limits.max_body_bytes);
    }
    if let Err(wait) = shared.source_limiter.check(&source, Instant::now()) {
        return rate_limited("rate limit exceeded for this address; retry later", wait);
    }
    let token = match BearerToken::from_headers(request.headers()) {
        Ok(token) => token,
        Err(e) => return unauthorized(&e.to_string()),
    };
    if let Err(wait) = shared.limiter.check(&token.fingerprint(), Instant::now()) {
        return rate_limited("rate limit exceeded for this token; retry later", wait);
    }
    let Some(rpc) = rpc else {
        return envelope::failure(
            StatusCode::NOT_IMPLEMENTED,
            &format!(
                "{} {} is not available in this agent version",
                route.verb.as_str(),
                route.path
            ),
        );
    };
    let body = match route.verb {
        // GET bodies carry no meaning here and are not read.
        Verb::Get => Vec::new(),
        Verb::Post => match read_body(&shared.limits, request).await {
            Ok(body) => body,
            Err(response) => return response,
        },
    };
    let action: Action = match rpc.action(&body) {
        Ok(action) => action,
        Err(e) => return envelope::failure(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match upstream::call(
        &shared.client,
        &token,
        action,
        shared.limits.upstream_timeout,
    )
    .await
    {
        Ok(reply) => envelope::success(reply.http_status(), &reply),
        Err(grpc) => {
            let http = status::http_status(grpc.code());
            if http.is_server_error() && shared.upstream_error_log.allow() {
                // The agent's own text (not the token, which is only in the request metadata).
                tracing::warn!(code = ?grpc.code(), detail = grpc.message(), route = route.path, "LocalApi call failed");
            }
            let mut r = envelope::failure(http, &status::caller_message(&grpc));
            if http == StatusCode::UNAUTHORIZED {
                r.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            r
        }
    }
}

/// Reads a POST body: JSON only, capped at the body limit, within the header timeout.
async fn read_body(limits: &Limits, request: Request<Incoming>) -> Result<Vec<u8>, Response<Body>> {
    if let Some(ct) = request.headers().get(CONTENT_TYPE) {
        let media = ct
            .to_str()
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        if !media.eq_ignore_ascii_case("application/json") {
            return Err(envelope::failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Content-Type must be application/json",
            ));
        }
    }
    let limited = Limited::new(request.into_body(), limits.max_body_bytes);
    // A body trickled byte by byte would otherwise hold the connection forever.
    match tokio::time::timeout(body_timeout(limits), limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes().to_vec()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(too_large(limits.max_body_bytes))
        }
        Ok(Err(_)) => Err(envelope::failure(
            StatusCode::BAD_REQUEST,
            "cannot read the request body",
        )),
        Err(_) => Err(envelope::failure(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )),
    }
}

fn body_timeout(limits: &Limits) -> Duration {
    limits.header_read_timeout
}

fn declared_length(request: &Request<Incoming>) -> Option<u64> {
    request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn rate_limited(message: &str, wait: Duration) -> Response<Body> {
    let mut r = envelope::failure(StatusCode::TOO_MANY_REQUESTS, message);
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
    r
}

fn too_large(max: usize) -> Response<Body> {
    envelope::failure(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body is larger than {max} bytes"),
    )
}

fn unauthorized(message: &str) -> Response<Body> {
    let mut r = envelope::failure(StatusCode::UNAUTHORIZED, message);
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    r
}
