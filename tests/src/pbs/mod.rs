//! `felhom-pbssim`: a simulated Proxmox Backup Server for tests.
//!
//! Serves the part of `https://<host>:8007/api2/json` the felhom agent uses, over real HTTPS
//! (rustls, HTTP/1.1, a self-signed certificate clients pin), with PBS's `PBSAPIToken` auth,
//! always-privilege-separated tokens, datastore privilege checks, error texts and envelope, PBS
//! UPIDs (with the task-id field and `\x2d`-escaped worker ids) and the task lifecycle:
//! - `GET /admin/datastore/{store}/snapshots` (`ns`, `backup-type`, `backup-id`)
//! - `POST /admin/datastore/{store}/verify` → UPID; the verify task records `verification`
//!   `{state, upid}` on each snapshot it checked and fails with PBS's text when any failed
//! - `GET /nodes/{node}/tasks/{upid}/status` and `/log`
//! - `GET /version`
//!
//! What each part follows in proxmox-backup's sources is in the submodule docs: `acl` (auth texts,
//! roles, privsep, permission texts), `api` (envelope, parameter and status rules), `state`
//! (verify worker behaviour and texts), `model` (listing shape).
//!
//! TLS and the accept loop are shared with the PVE simulator (`crate::tls`,
//! `crate::https`). Real PBS serves a self-signed `proxy.pem`; here the leaf is signed by a
//! throwaway CA like PVE's, which a fingerprint pin does not see (it hashes the leaf only).
//!
//! The PVE simulator can write into a datastore here as vzdump to a `pbs` storage would
//! (`crate::pve::pbs_link`); [`PbsFixture::linked_host`] is the matching seed, and
//! [`key::PbsKey`] makes PBS client key files with PBS's fingerprint.
//!
//! Limits: one node; datastores are only their snapshot lists (no chunks, no backup/restore
//! protocol, no GC; snapshots are removed only in process, [`PbsState::forget_snapshot`]); no
//! ticket login; ACLs without `NoAccess` overrides; 401s are not
//! delayed unless [`PbsSimOptions::unauthorized_delay`] says so (real PBS: 3 s).

pub mod acl;
pub mod api;
pub mod fixture;
pub mod key;
pub mod model;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::percent::percent_decode;
use crate::tls::{TlsError, TlsIdentity};

pub use acl::Role;
pub use fixture::PbsFixture;
pub use key::PbsKey;
pub use model::{BackupType, CryptMode, SimFile, SimSnapshot, SimVerification, VerifyState};
pub use state::{PbsState, SimTask, VERIFY_FAILED};

/// Largest request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum PbsSimError {
    #[error("Cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("Refusing to listen on non-loopback address {0}")]
    NotLoopback(SocketAddr),
    #[error("Cannot build the TLS identity")]
    Tls(#[from] TlsError),
    #[error("Invalid fixture")]
    Fixture(#[from] fixture::FixtureError),
}

/// How to start the simulator.
#[derive(Debug, Clone)]
pub struct PbsSimOptions {
    /// Listen address; must be loopback. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Seed data. Default: [`PbsFixture::default_host`].
    pub fixture: PbsFixture,
    /// How long a task stays `running`. Default 300 ms.
    pub task_duration: Duration,
    /// Delay before answering a 401 (real PBS: 3 s). Default zero.
    pub unauthorized_delay: Duration,
}

impl Default for PbsSimOptions {
    fn default() -> Self {
        PbsSimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            fixture: PbsFixture::default_host(),
            task_duration: Duration::from_millis(300),
            unauthorized_delay: Duration::ZERO,
        }
    }
}

/// The simulator's entry point.
#[derive(Debug)]
pub struct PbsSim;

/// A running simulator. Dropping it stops serving; [`PbsSimHandle::shutdown`] also waits.
#[derive(Debug)]
pub struct PbsSimHandle {
    url: String,
    addr: SocketAddr,
    fingerprint: String,
    ca_pem: String,
    datastore: Option<String>,
    state: PbsState,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

struct Shared {
    state: PbsState,
    unauthorized_delay: Duration,
}

impl PbsSim {
    /// Checks the fixture, binds, generates the certificate and starts serving.
    pub async fn start(opts: PbsSimOptions) -> Result<PbsSimHandle, PbsSimError> {
        if !opts.listen.ip().is_loopback() {
            return Err(PbsSimError::NotLoopback(opts.listen));
        }
        opts.fixture.check()?;
        let identity = TlsIdentity::generate(&opts.fixture.node)?;
        let listener =
            TcpListener::bind(opts.listen)
                .await
                .map_err(|source| PbsSimError::Bind {
                    addr: opts.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| PbsSimError::Bind {
            addr: opts.listen,
            source,
        })?;
        let datastore = opts.fixture.datastores.first().map(|d| d.name.clone());
        let state = PbsState::new(opts.fixture, opts.task_duration);
        let shared = Arc::new(Shared {
            state: state.clone(),
            unauthorized_delay: opts.unauthorized_delay,
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config.clone());
        let (stop_tx, stop_rx) = oneshot::channel();
        let handler = move |req| {
            let shared = shared.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(&shared, req).await) }
        };
        let server = tokio::spawn(crate::https::serve(listener, acceptor, handler, stop_rx));
        let host = match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        Ok(PbsSimHandle {
            url: format!("https://{host}:{}", addr.port()),
            addr,
            // PBS shows fingerprints in lower case (`proxmox-backup-manager cert info`).
            fingerprint: identity.fingerprint.to_lowercase(),
            ca_pem: identity.ca_pem,
            datastore,
            state,
            stop: Some(stop_tx),
            server: Some(server),
        })
    }
}

impl PbsSimHandle {
    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SHA-256 of the server's leaf certificate, `aa:bb:…` (PBS's display form): the pin.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// PEM of the CA that signed the leaf (for CA-file trust).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The full `user@realm!token:secret` of a token.
    pub fn token(&self, authid: &str) -> Option<String> {
        self.state.token(authid)
    }

    /// The node name (what the UPIDs carry).
    pub fn node(&self) -> String {
        self.state.node()
    }

    /// The first datastore of the fixture.
    pub fn datastore(&self) -> Option<&str> {
        self.datastore.as_deref()
    }

    /// The state: seed and inspect snapshots, add tokens and ACLs, inject verify failures.
    pub fn state(&self) -> &PbsState {
        &self.state
    }

    /// Stops serving and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

impl Drop for PbsSimHandle {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

const JSON_CONTENT_TYPE: &str = "application/json;charset=UTF-8";

fn respond(status: u16, body: Bytes) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    resp
}

fn error(e: api::ApiError) -> Response<Full<Bytes>> {
    respond(e.status, Bytes::from(e.message))
}

async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let full_path = req.uri().path().to_owned();
    let Some(rel) = full_path.strip_prefix("/api2/json/") else {
        return error(api::ApiError::new(
            404,
            format!("Path '{full_path}' not found."),
        ));
    };
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let authid = shared.state.lock().access.authenticate(auth.as_deref());
    let authid = match authid {
        Ok(a) => a,
        Err(e) => {
            tokio::time::sleep(shared.unauthorized_delay).await;
            return error(api::ApiError::new(
                401,
                format!("authentication failed - {e}"),
            ));
        }
    };
    let method = req.method().as_str().to_owned();
    let segs: Vec<String> = rel
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    match api::route(&shared.state, &authid, &method, &full_path, &segs, &params) {
        Ok(api::Answer::Data(data)) => respond(
            200,
            Bytes::from(serde_json::json!({ "data": data }).to_string()),
        ),
        Ok(api::Answer::Body(body)) => respond(200, Bytes::from(body.to_string())),
        Err(e) => error(e),
    }
}

fn add_form(params: &mut api::Params, text: &str) {
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_decode(s, true);
        params.insert(decode(k), decode(v));
    }
}

async fn read_params(req: Request<Incoming>) -> Result<api::Params, api::ApiError> {
    let mut params = api::Params::new();
    if let Some(q) = req.uri().query() {
        add_form(&mut params, q);
    }
    let json_body = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.to_ascii_lowercase().starts_with("application/json"));
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| api::ApiError::new(400, format!("unable to read request body - {e}")))?
        .to_bytes();
    if body.is_empty() {
        return Ok(params);
    }
    if json_body {
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| api::ApiError::new(400, format!("unable to parse json body - {e}")))?;
        let Some(obj) = v.as_object() else {
            return Err(api::ApiError::new(400, "json body is not an object"));
        };
        for (k, v) in obj {
            let s = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            params.insert(k.clone(), s);
        }
    } else {
        let text = std::str::from_utf8(&body)
            .map_err(|_| api::ApiError::new(400, "request body is not UTF-8"))?;
        add_form(&mut params, text);
    }
    Ok(params)
}
