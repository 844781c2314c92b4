//! `felhom-pvesim`: a simulated Proxmox VE 8 node for tests.
//!
//! Serves the subset of `https://<host>:8006/api2/json` the felhom agent uses, over real
//! HTTPS (rustls, HTTP/1.1), with PVE's envelope (`{"data":…}`, plus `total` on task
//! listings), status codes and reason phrases, `PVEAPIToken` auth with privilege-separated
//! tokens, ACL privilege checks with PVE's error texts, UPIDs and the task lifecycle, guest
//! locks, vzdump/restore with archived configs, and fault injection (see [`faults`]).
//!
//! # Using it
//! In process: [`PveSim::start`] → [`PveSimHandle`] (`url`, `fingerprint`, `ca_pem`, `token`,
//! `state`, `faults`, `shutdown`). As a process: the `felhom-pvesim` binary (loopback only,
//! `--state-json` for discovery). Fault injection also works over HTTP under `/_sim/faults`.
//! The node's root CLI (`pct create`, used by the `felhom-sim-pct` stand-in) is
//! `POST /_sim/cli/pct-create`, authenticated with a `root@pam` token.
//!
//! # Backed by a PBS simulator
//! [`PveSimOptions::pbs_link`] (or [`pbs_link::LinkedSims::start`], which starts both) makes
//! the `pbs` storage `felhom-pbs` keep its backups in a running PBS simulator's datastore:
//! vzdump writes snapshots there, the storage listing and prune go through it, restores read
//! from it. [`SimState::set_pbs_encryption_key`] (or a fixture storage's `encryption_key`)
//! gives such a storage a client encryption key. See [`pbs_link`].
//!
//! # The default fixture (`tests/fixtures/pve-default.json`)
//! Node `pve1`; guests 101 `felhom-home` (running, unprivileged, `keyctl=1,nesting=1`, rootfs
//! on local-lvm, `mp0` with `backup=0`), 102 `felhom-tunnel` (running), 103 `scratch`
//! (stopped); storages `local` (dir: iso,vztmpl,backup), `local-lvm` (lvmthin: images,rootdir),
//! `felhom-pbs` (pbs: backup); a protected golden archive
//! `local:backup/vzdump-lxc-9000-2026_06_01-03_00_12.tar.zst` (features `keyctl=1,nesting=1`)
//! and a PBS backup of 101. Tokens (secrets generated at start unless the fixture sets them):
//! - `felhom-agent@pve!agent` (privsep) — role `FelhomAgent` (16 privileges) on `/` for both
//!   the user and the token;
//! - `tokenonly@pve!agent` (privsep) — the role granted to the token only, so it is refused
//!   everything (its own user: granting `felhom-agent@pve` would make any of its tokens work);
//! - `root@pam!sim` (no privsep) — every privilege, but still a token (see below);
//! - `auditor@pve!ro` (privsep) — `PVEAuditor` on `/` for user and token.
//!
//! # Fidelity notes
//! What was checked against Proxmox's sources is listed in each submodule: [`acl`] (auth
//! failures, permission texts), [`reply`] (error → status line + body, 501 text), [`ops`]
//! (pve-container/pve-manager texts and which checks run synchronously vs inside the worker),
//! [`state`] (UPID format from pve-common `PVE::Tools::upid_encode`:
//! `UPID:%s:%08X:%08X:%08X:%s:%s:%s:`; logs end with `TASK OK` / `TASK ERROR: …`).
//!
//! `root@pam`: pve-container waives the feature-flag restriction only when the authenticated
//! id *is* `root@pam` (ticket login or the node CLI). An API token's id is `root@pam!<name>`,
//! so every token — including `root@pam!sim` — gets `Permission check failed (changing feature
//! flags (except nesting) is only allowed for root@pam)` for `keyctl`. The CLI path
//! (`pct create` as root, how the golden image is built) is [`SimState::create_as_root`].
//!
//! pveproxy only accepts a request body on POST and PUT (`501 Unexpected content for method
//! 'DELETE'`); DELETE/GET parameters go in the query string.
//!
//! Limits: LXC only (no QEMU), one node, no ticket/password auth, no pools or groups, no
//! pending config changes, snapshots keep no per-snapshot config (rollback moves `parent` and
//! stops the guest) and show no `snapstate` while being taken, the config `digest` is a
//! SHA-256 prefix (PVE uses SHA-1), disk/usage numbers are static, and pveproxy's 3-second
//! delay on every 401 is off by default ([`PveSimOptions::unauthorized_delay`]).

pub mod access_api;
pub mod acl;
pub mod api;
pub mod call;
pub mod faults;
pub mod fixture;
pub mod ops;
pub mod pbs_link;
pub mod prune;
pub mod reply;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use faults::{FaultSpec, Faults};
pub use fixture::Fixture;
pub use pbs_link::PbsLink;
pub use state::{SimState, World};

/// Largest request body accepted (PVE's own limit is far larger; nothing here needs more).
const MAX_BODY: usize = 1 << 20;

/// Errors starting the simulator.
#[derive(Debug, thiserror::Error)]
pub enum PveSimError {
    #[error("Cannot keep storage keys in the private directory: {0}")]
    PrivDir(String),
    #[error("Cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("Refusing to listen on non-loopback address {0}")]
    NotLoopback(SocketAddr),
    #[error("Cannot build the TLS identity")]
    Tls(#[from] crate::tls::TlsError),
    #[error("Storage '{storage}' has an unusable encryption key")]
    EncryptionKey {
        storage: String,
        #[source]
        source: crate::pbs::key::KeyError,
    },
    #[error("Cannot link storage '{0}' to PBS: it is not a storage of type pbs in the fixture")]
    LinkTarget(String),
}

/// How to start the simulator.
#[derive(Debug, Clone)]
pub struct PveSimOptions {
    /// Listen address; must be loopback. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Seed data. Default: the embedded default host.
    pub fixture: Fixture,
    /// How long a task stays `running`. Default 300 ms.
    pub task_duration: Duration,
    /// Delay before answering a 401 (real pveproxy: 3 s). Default zero.
    pub unauthorized_delay: Duration,
    /// Back a `pbs` storage with a running PBS simulator (see [`pbs_link`]). Default none.
    pub pbs_link: Option<PbsLink>,
    /// Stands in for `/etc/pve/priv`: a `pbs` storage's client key is the file
    /// `storage/<id>.enc` in it, read at every backup and restore as PVE does. Default none
    /// (keys kept in memory).
    pub priv_dir: Option<std::path::PathBuf>,
}

impl Default for PveSimOptions {
    fn default() -> Self {
        PveSimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            fixture: Fixture::default_host(),
            task_duration: Duration::from_millis(300),
            unauthorized_delay: Duration::ZERO,
            pbs_link: None,
            priv_dir: None,
        }
    }
}

/// The simulator's entry point.
#[derive(Debug)]
pub struct PveSim;

/// A running simulator.
#[derive(Debug)]
pub struct PveSimHandle {
    url: String,
    addr: SocketAddr,
    fingerprint: String,
    ca_pem: String,
    cert_pem: String,
    state: SimState,
    faults: Faults,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

struct Shared {
    state: SimState,
    faults: Faults,
    unauthorized_delay: Duration,
}

impl PveSim {
    /// Binds, generates the TLS identity and starts serving.
    pub async fn start(opts: PveSimOptions) -> Result<PveSimHandle, PveSimError> {
        if !opts.listen.ip().is_loopback() {
            return Err(PveSimError::NotLoopback(opts.listen));
        }
        let node = opts.fixture.node.name.clone();
        let identity = crate::tls::TlsIdentity::generate(&node)?;
        let listener =
            TcpListener::bind(opts.listen)
                .await
                .map_err(|source| PveSimError::Bind {
                    addr: opts.listen,
                    source,
                })?;
        let addr = listener.local_addr().map_err(|source| PveSimError::Bind {
            addr: opts.listen,
            source,
        })?;
        for s in &opts.fixture.storages {
            if let Some(key) = &s.encryption_key {
                crate::pbs::PbsKey::from_json(key).map_err(|source| {
                    PveSimError::EncryptionKey {
                        storage: s.storage.clone(),
                        source,
                    }
                })?;
            }
        }
        if let Some(link) = &opts.pbs_link
            && !opts
                .fixture
                .storages
                .iter()
                .any(|s| s.storage == link.storage && s.kind == "pbs")
        {
            return Err(PveSimError::LinkTarget(link.storage.clone()));
        }
        let faults = Faults::default();
        let mut world = World::from_fixture(opts.fixture);
        if let Some(dir) = opts.priv_dir {
            world.use_priv_dir(dir).map_err(PveSimError::PrivDir)?;
        }
        if let Some(link) = opts.pbs_link {
            pbs_link::attach(&mut world, link);
        }
        let state = SimState::new(
            world,
            faults.clone(),
            opts.task_duration,
            identity.fingerprint.clone(),
        );
        let shared = Arc::new(Shared {
            state: state.clone(),
            faults: faults.clone(),
            unauthorized_delay: opts.unauthorized_delay,
        });
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config.clone());
        let (stop_tx, stop_rx) = oneshot::channel();
        let handler = move |req| {
            let shared = shared.clone();
            async move { handle(shared, req).await }
        };
        let server = tokio::spawn(crate::https::serve(listener, acceptor, handler, stop_rx));
        let host = match addr {
            SocketAddr::V4(a) => a.ip().to_string(),
            SocketAddr::V6(a) => format!("[{}]", a.ip()),
        };
        Ok(PveSimHandle {
            url: format!("https://{host}:{}", addr.port()),
            addr,
            fingerprint: identity.fingerprint,
            ca_pem: identity.ca_pem,
            cert_pem: crate::tls::pem("CERTIFICATE", &identity.leaf_der),
            state,
            faults,
            stop: Some(stop_tx),
            server: Some(server),
        })
    }
}

impl PveSimHandle {
    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// SHA-256 of the leaf certificate, `AA:BB:…` (as `/nodes` reports `ssl_fingerprint`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// PEM of the CA that signed the leaf.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// PEM of the leaf certificate itself (what `/etc/pve/local/pve-ssl.pem` holds).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The full `user@realm!tokenid=secret` for a fixture token.
    pub fn token(&self, authid: &str) -> Option<String> {
        self.state.token(authid)
    }

    /// The node name.
    pub fn node(&self) -> String {
        self.state.node()
    }

    /// The in-memory state (inspect/mutate from tests).
    pub fn state(&self) -> &SimState {
        &self.state
    }

    /// Fault injection.
    pub fn faults(&self) -> &Faults {
        &self.faults
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

impl Drop for PveSimHandle {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}

/// Returned by the service to make hyper close the connection without an answer.
#[derive(Debug, thiserror::Error)]
#[error("Connection dropped by fault injection")]
struct DropConnection;

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, DropConnection> {
    let path = req.uri().path().to_owned();
    if let Some(admin) = path.strip_prefix("/_sim/") {
        return Ok(admin_api(&shared, req.method().clone(), admin.to_owned(), req).await);
    }
    let Some(rel) = path.strip_prefix("/api2/json") else {
        return Ok(reply::json_response(
            501,
            Some("no such uri"),
            &json!({"data": null}),
        ));
    };
    let rel = if rel.is_empty() {
        "/".to_owned()
    } else {
        rel.to_owned()
    };
    match shared.faults.take_request(&rel) {
        Some(faults::RequestFault::Drop) => return Err(DropConnection),
        Some(faults::RequestFault::Error { status, reason }) => {
            return Ok(reply::json_response(
                status,
                Some(&reason),
                &json!({"data": null}),
            ));
        }
        Some(faults::RequestFault::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
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
            return Ok(reply::respond(Err(reply::ApiError::new(
                401,
                e.to_string(),
            ))));
        }
    };
    let method = req.method().clone();
    // pve-http-server AnyEvent.pm: a body is only accepted for PUT and POST.
    let has_body = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > 0)
        || req.headers().contains_key(hyper::header::TRANSFER_ENCODING);
    if has_body && method != Method::PUT && method != Method::POST {
        return Ok(reply::json_response(
            501,
            Some(&format!("Unexpected content for method '{method}'")),
            &json!({"data": null}),
        ));
    }
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(e) => return Ok(reply::respond(Err(e))),
    };
    let segs: Vec<String> = rel
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| crate::percent::percent_decode(s, false))
        .collect();
    *shared
        .state
        .lock()
        .request_counts
        .entry(format!("{method} {rel}"))
        .or_default() += 1;
    let call = api::Call {
        state: shared.state.clone(),
        authid,
        params,
    };
    Ok(reply::respond_with_total(api::route(
        &call, &method, &rel, &segs,
    )))
}

async fn read_params(req: Request<Incoming>) -> Result<reply::Params, reply::ApiError> {
    let mut params = reply::Params::default();
    if let Some(q) = req.uri().query() {
        params.add_form(q);
    }
    let ctype = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let body = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| reply::ApiError::new(400, format!("parameter parser failed: {e}")))?
        .to_bytes();
    if body.is_empty() {
        return Ok(params);
    }
    if ctype.starts_with("application/json") {
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| reply::ApiError::new(400, format!("parameter parser failed: {e}")))?;
        params.add_json(&v)?;
    } else {
        let text = std::str::from_utf8(&body).map_err(|_| {
            reply::ApiError::new(400, "parameter parser failed: body is not UTF-8".to_owned())
        })?;
        params.add_form(text);
    }
    Ok(params)
}

/// `POST /_sim/cli/pct-create`: what `pct create` run as root on the node does. pct calls
/// `PVE::API2::LXC::create_vm` inside the node's CLI environment, where the caller *is*
/// `root@pam` (so feature flags such as `keyctl` are allowed, unlike for any API token); the
/// form parameters are those of `POST /nodes/{node}/lxc` and the answer is the same (a UPID,
/// or PVE's error). Being root on the node is proven with a token of `root@pam` (the
/// fixture's `root@pam!sim`): anyone else gets 403. Used by `felhom-sim-pct`.
async fn pct_create_as_root(shared: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let authid = shared.state.lock().access.authenticate(auth.as_deref());
    match authid {
        Ok(id)
            if id
                .split_once('!')
                .is_some_and(|(user, _)| user == "root@pam") => {}
        Ok(id) => {
            let msg = format!("{id} is not root@pam on the node");
            return reply::json_response(403, Some(&msg), &json!({"data": null}));
        }
        Err(e) => return reply::respond(Err(reply::ApiError::new(401, e.to_string()))),
    }
    let params = match read_params(req).await {
        Ok(p) => p,
        Err(e) => return reply::respond(Err(e)),
    };
    let node = shared.state.node();
    let call = api::Call {
        state: shared.state.clone(),
        authid: "root@pam".to_owned(),
        params,
    };
    let rel = format!("/nodes/{node}/lxc");
    let segs = ["nodes".to_owned(), node, "lxc".to_owned()];
    reply::respond_with_total(api::route(&call, &Method::POST, &rel, &segs))
}

async fn admin_api(
    shared: &Shared,
    method: Method,
    path: String,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let bad =
        |status: u16, msg: String| reply::json_response(status, Some(&msg), &json!({"error": msg}));
    match (method.as_str(), path.as_str()) {
        ("GET", "faults") => reply::json_response(200, None, &json!(shared.faults.snapshot())),
        ("DELETE", "faults") => {
            shared.faults.clear();
            reply::json_response(200, None, &json!({"cleared": true}))
        }
        ("POST", "faults") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => return bad(400, format!("Cannot read body: {e}")),
            };
            let spec: FaultSpec = match serde_json::from_slice(&body) {
                Ok(s) => s,
                Err(e) => return bad(400, format!("Invalid fault: {e}")),
            };
            match shared.faults.add(spec) {
                Ok(()) => reply::json_response(200, None, &json!({"installed": true})),
                Err(e) => bad(400, e.to_string()),
            }
        }
        ("POST", "cli/pct-create") => pct_create_as_root(shared, req).await,
        _ => bad(404, format!("No admin endpoint {method} /_sim/{path}")),
    }
}
