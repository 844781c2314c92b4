//! Shared test harness: a fake LocalApi gRPC server on a real Unix socket, the real gateway on
//! real loopback TLS in front of it, and pinning clients built the way guests build theirs.
//!
//! The fake stands behind the gRPC seam only: two tokens map to guests 101 and 102, anything
//! else is UNAUTHENTICATED (with the agent's wording), and every call is recorded so tests can
//! show which requests never reached the agent.
//!
//! Backups: guest 101 has a backup policy, guest 102 has none (StartBackup and GetBackupDue
//! answer FAILED_PRECONDITION for it). A backup job stays `running` until the test calls
//! [`Fake::finish_backup`]; the status and restore-test replies carry operator detail (trigger,
//! runs, volid, scratch guest, …) so tests can show it never reaches the guest.
//! [`Fake::fail_next`] makes one RPC's next authenticated call fail with a chosen status.

#![allow(dead_code)]
// Each test binary uses a different part of the harness.
// Test harness, also compiled into the bench (outside test cfg): a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use felhom_localapi_gateway::{
    Gateway, GatewayConfig, Limits, LocalApiClient, connect_unix, in_process,
};
use felhom_proto::agent::v1 as pb;
use felhom_proto::agent::v1::local_api_server::{LocalApi, LocalApiServer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

pub const TOKEN_A: &str = "fhg_guest-a-0123456789abcdef0123456789abcdef012";
pub const TOKEN_B: &str = "fhg_guest-b-fedcba9876543210fedcba9876543210fed";
pub const VMID_A: u32 = 101;
pub const VMID_B: u32 = 102;
/// A snapshot name the fake treats as "guest locked" (ABORTED).
pub const BUSY_SNAPSHOT: &str = "busy";
/// A snapshot name the fake refuses as not allowed for the guest (PERMISSION_DENIED).
pub const FORBIDDEN_SNAPSHOT: &str = "forbidden";
/// A snapshot name the fake holds until [`Fake::release_slow`] (for shutdown tests).
pub const SLOW_SNAPSHOT: &str = "slow";
/// When the fake's backup jobs start and finish (Unix seconds).
pub const BACKUP_STARTED_AT: i64 = 1_795_401_000;
pub const BACKUP_FINISHED_AT: i64 = 1_795_401_300;

/// One call the fake received.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    pub rpc: &'static str,
    /// The `authorization` metadata exactly as received.
    pub authorization: Option<String>,
}

/// The fake agent's state, shared with the test.
#[derive(Clone)]
pub struct Fake {
    calls: Arc<Mutex<Vec<Call>>>,
    snapshots: Arc<Mutex<HashMap<u32, Vec<String>>>>,
    slow_gate: Arc<tokio::sync::Semaphore>,
    /// Per guest: how many backup jobs it had, and the newest.
    backups: Arc<Mutex<HashMap<u32, (u32, pb::BackupStatus)>>>,
    restore_tests: Arc<Mutex<HashMap<u32, pb::RestoreTestStatus>>>,
    /// RPC name → the status its next authenticated call fails with.
    failures: Arc<Mutex<HashMap<&'static str, (tonic::Code, String)>>>,
}

impl Default for Fake {
    fn default() -> Self {
        Self {
            calls: Arc::default(),
            snapshots: Arc::default(),
            slow_gate: Arc::new(tokio::sync::Semaphore::new(0)),
            backups: Arc::default(),
            restore_tests: Arc::default(),
            failures: Arc::default(),
        }
    }
}

impl Fake {
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    pub fn snapshots_of(&self, vmid: u32) -> Vec<String> {
        self.snapshots
            .lock()
            .unwrap()
            .get(&vmid)
            .cloned()
            .unwrap_or_default()
    }

    /// Lets one held [`SLOW_SNAPSHOT`] call finish.
    pub fn release_slow(&self) {
        self.slow_gate.add_permits(1);
    }

    /// Makes the next authenticated call of `rpc` (e.g. "GetBackupStatus") fail with `code`.
    pub fn fail_next(&self, rpc: &'static str, code: tonic::Code, message: &str) {
        self.failures
            .lock()
            .unwrap()
            .insert(rpc, (code, message.to_owned()));
    }

    /// Ends guest `vmid`'s running backup job: done, or failed with `error`.
    pub fn finish_backup(&self, vmid: u32, error: Option<&str>) {
        let mut backups = self.backups.lock().unwrap();
        let (_, job) = backups.get_mut(&vmid).expect("the guest has a backup job");
        assert_eq!(job.phase, "running", "only a running job can finish");
        job.phase = if error.is_some() { "failed" } else { "done" }.into();
        job.error = error.unwrap_or_default().to_owned();
        job.finished_at = BACKUP_FINISHED_AT;
        for run in &mut job.runs {
            run.phase.clone_from(&job.phase);
            run.actual_mode = "snapshot".into();
            run.error.clone_from(&job.error);
            run.volid = format!("local:backup/vzdump-lxc-{vmid}-2026_11_23-02_30_00.tar.zst");
        }
    }

    /// What GetRestoreTestStatus answers for the status's guest from now on.
    pub fn set_restore_test(&self, status: pb::RestoreTestStatus) {
        self.restore_tests
            .lock()
            .unwrap()
            .insert(status.vmid, status);
    }

    fn guest<T>(&self, rpc: &'static str, req: &tonic::Request<T>) -> Result<u32, tonic::Status> {
        let authorization = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.calls.lock().unwrap().push(Call {
            rpc,
            authorization: authorization.clone(),
        });
        let vmid = match authorization
            .as_deref()
            .and_then(|a| a.strip_prefix("Bearer "))
        {
            Some(TOKEN_A) => VMID_A,
            Some(TOKEN_B) => VMID_B,
            _ => return Err(tonic::Status::unauthenticated("unknown or revoked token")),
        };
        if let Some((code, message)) = self.failures.lock().unwrap().remove(rpc) {
            return Err(tonic::Status::new(code, message));
        }
        Ok(vmid)
    }

    /// The agent's refusal for a guest without a backup policy (guest 102 here).
    fn require_policy(vmid: u32) -> Result<(), tonic::Status> {
        if vmid == VMID_B {
            return Err(tonic::Status::failed_precondition(format!(
                "guest {vmid} has no backup policy"
            )));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl LocalApi for Fake {
    async fn get_storage(
        &self,
        req: tonic::Request<pb::GetStorageRequest>,
    ) -> Result<tonic::Response<pb::GuestStorage>, tonic::Status> {
        let vmid = self.guest("GetStorage", &req)?;
        Ok(tonic::Response::new(storage_of(vmid)))
    }

    async fn snapshot(
        &self,
        req: tonic::Request<pb::SnapshotRequest>,
    ) -> Result<tonic::Response<pb::SnapshotResult>, tonic::Status> {
        let vmid = self.guest("Snapshot", &req)?;
        let name = match req.into_inner().name {
            n if n.is_empty() => "felhom_20260101T000000Z".to_owned(),
            n => n,
        };
        if name == BUSY_SNAPSHOT {
            return Err(tonic::Status::aborted(format!(
                "guest {vmid} is locked (backup)"
            )));
        }
        if name == FORBIDDEN_SNAPSHOT {
            return Err(tonic::Status::permission_denied(format!(
                "guest {vmid} may not create snapshots"
            )));
        }
        if name == SLOW_SNAPSHOT {
            let _permit = self.slow_gate.acquire().await.unwrap();
        }
        let mut snaps = self.snapshots.lock().unwrap();
        let list = snaps.entry(vmid).or_default();
        if list.contains(&name) {
            return Err(tonic::Status::already_exists(format!(
                "snapshot '{name}' already exists"
            )));
        }
        list.push(name.clone());
        Ok(tonic::Response::new(pb::SnapshotResult {
            vmid,
            snapshot: name,
            job_id: format!("job-{vmid}-{}", list.len()),
        }))
    }

    async fn rollback(
        &self,
        req: tonic::Request<pb::RollbackRequest>,
    ) -> Result<tonic::Response<pb::SnapshotResult>, tonic::Status> {
        let vmid = self.guest("Rollback", &req)?;
        let name = req.into_inner().snapshot;
        let snaps = self.snapshots.lock().unwrap();
        if !snaps.get(&vmid).is_some_and(|l| l.contains(&name)) {
            return Err(tonic::Status::not_found(format!(
                "snapshot '{name}' does not exist on guest {vmid}"
            )));
        }
        Ok(tonic::Response::new(pb::SnapshotResult {
            vmid,
            snapshot: name,
            job_id: format!("job-{vmid}-rollback"),
        }))
    }

    async fn start_backup(
        &self,
        req: tonic::Request<pb::StartBackupRequest>,
    ) -> Result<tonic::Response<pb::BackupAccepted>, tonic::Status> {
        let vmid = self.guest("StartBackup", &req)?;
        Self::require_policy(vmid)?;
        let mut backups = self.backups.lock().unwrap();
        if let Some((_, job)) = backups.get(&vmid).filter(|(_, j)| j.phase == "running") {
            return Ok(tonic::Response::new(pb::BackupAccepted {
                vmid,
                job_id: job.job_id.clone(),
                phase: job.phase.clone(),
                new_job: false,
            }));
        }
        let count = backups.get(&vmid).map_or(0, |(n, _)| *n) + 1;
        let job = pb::BackupStatus {
            vmid,
            phase: "running".into(),
            job_id: format!("backup-{vmid}-{count}"),
            error: String::new(),
            trigger: "controller".into(),
            consistency: "app".into(),
            runs: vec![pb::BackupRun {
                tier: "local".into(),
                storage: "local".into(),
                phase: "running".into(),
                requested_mode: "snapshot".into(),
                upid: format!(
                    "UPID:pve:0000A1B2:00C3D4E5:6789ABCD:vzdump:{vmid}:felhom@pve!agent:"
                ),
                ..Default::default()
            }],
            started_at: BACKUP_STARTED_AT,
            finished_at: 0,
        };
        let accepted = pb::BackupAccepted {
            vmid,
            job_id: job.job_id.clone(),
            phase: job.phase.clone(),
            new_job: true,
        };
        backups.insert(vmid, (count, job));
        Ok(tonic::Response::new(accepted))
    }

    async fn get_backup_due(
        &self,
        req: tonic::Request<pb::GetBackupDueRequest>,
    ) -> Result<tonic::Response<pb::BackupDue>, tonic::Status> {
        let vmid = self.guest("GetBackupDue", &req)?;
        Self::require_policy(vmid)?;
        let backups = self.backups.lock().unwrap();
        let (due, reason) = match backups.get(&vmid).map(|(_, j)| j.phase.as_str()) {
            None => (true, "never backed up"),
            Some("running") => (false, "a backup is running"),
            Some("failed") => (true, "the last backup failed"),
            Some(_) => (false, "next due 2026-11-24 02:30 UTC"),
        };
        Ok(tonic::Response::new(pb::BackupDue {
            vmid,
            due,
            reason: reason.into(),
        }))
    }

    async fn get_backup_status(
        &self,
        req: tonic::Request<pb::GetBackupStatusRequest>,
    ) -> Result<tonic::Response<pb::BackupStatus>, tonic::Status> {
        let vmid = self.guest("GetBackupStatus", &req)?;
        let status = self
            .backups
            .lock()
            .unwrap()
            .get(&vmid)
            .map(|(_, j)| j.clone())
            .unwrap_or_else(|| pb::BackupStatus {
                vmid,
                phase: "idle".into(),
                ..Default::default()
            });
        Ok(tonic::Response::new(status))
    }

    async fn get_restore_test_status(
        &self,
        req: tonic::Request<pb::GetRestoreTestStatusRequest>,
    ) -> Result<tonic::Response<pb::RestoreTestStatus>, tonic::Status> {
        let vmid = self.guest("GetRestoreTestStatus", &req)?;
        let status = self
            .restore_tests
            .lock()
            .unwrap()
            .get(&vmid)
            .cloned()
            .unwrap_or_else(|| pb::RestoreTestStatus {
                vmid,
                phase: "idle".into(),
                result: "none".into(),
                ..Default::default()
            });
        Ok(tonic::Response::new(status))
    }
}

/// What the fake reports as a guest's storage (distinct per guest).
pub fn storage_of(vmid: u32) -> pb::GuestStorage {
    pb::GuestStorage {
        vmid,
        mounts: vec![
            pb::GuestMount {
                key: "rootfs".into(),
                storage: "local-lvm".into(),
                mount_point: "/".into(),
                class: "fast".into(),
                backup: true,
            },
            pb::GuestMount {
                key: "mp0".into(),
                storage: format!("usb-{vmid}"),
                mount_point: "/srv/data".into(),
                class: "slow".into(),
                backup: false,
            },
        ],
    }
}

/// The fake agent serving on a Unix socket.
pub struct FakeAgent {
    pub fake: Fake,
    pub socket: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeAgent {
    pub async fn start(dir: &Path) -> Self {
        let socket = dir.join("agent.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let fake = Fake::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let service = LocalApiServer::new(fake.clone());
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            fake,
            socket,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Gateway + fake agent in a temp dir.
pub struct Harness {
    pub gateway: Gateway,
    pub addr: SocketAddr,
    pub agent: FakeAgent,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub async fn start() -> Self {
        Self::with_limits(Limits::default()).await
    }

    pub async fn with_limits(limits: Limits) -> Self {
        Self::serving(limits, |agent| connect_unix(&agent.socket)).await
    }

    /// The fake agent, and the gateway calling it through the client `client` makes.
    async fn serving(limits: Limits, client: impl FnOnce(&FakeAgent) -> LocalApiClient) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let agent = FakeAgent::start(dir.path()).await;
        let mut config = GatewayConfig::new(vec!["127.0.0.1:0".parse().unwrap()], dir.path());
        config.limits = limits;
        let gateway = Gateway::start(config, client(&agent)).await.unwrap();
        let addr = gateway.local_addrs()[0];
        Self {
            gateway,
            addr,
            agent,
            dir,
        }
    }

    /// [`Harness::with_limits`] with the gateway calling the fake LocalApi service in process
    /// (as when embedded in the agent) instead of over its socket.
    pub async fn in_process_with_limits(limits: Limits) -> Self {
        Self::serving(limits, |agent| in_process(agent.fake.clone())).await
    }

    pub fn fake(&self) -> &Fake {
        &self.agent.fake
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// A client pinned to this gateway's leaf certificate.
    pub fn client(&self) -> reqwest::Client {
        leaf_pinned_client(&self.gateway.pins().leaf_sha256_hex)
    }

    /// [`Harness::client`] connecting from the loopback address `source`.
    pub fn client_from(&self, source: std::net::IpAddr) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_backend_preconfigured(pinned_tls_config(
                Pin::LeafHex(self.gateway.pins().leaf_sha256_hex),
                &[b"http/1.1"],
            ))
            .local_address(source)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap()
    }

    pub async fn shutdown(self) {
        self.gateway.shutdown().await;
        self.agent.stop().await;
    }
}

pub async fn start_gateway(state_dir: &Path, socket: &Path, limits: Limits) -> Gateway {
    let mut config = GatewayConfig::new(vec!["127.0.0.1:0".parse().unwrap()], state_dir);
    config.limits = limits;
    Gateway::start(config, connect_unix(socket)).await.unwrap()
}

/// How a client identifies the server: by leaf DER or SPKI SHA-256.
#[derive(Debug, Clone)]
pub enum Pin {
    LeafHex(String),
    SpkiBase64(String),
}

/// Accepts exactly the pinned certificate; chain and name are not checked (the pin is the
/// identity), the handshake signature is.
#[derive(Debug)]
pub struct PinVerifier {
    pin: Pin,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let matches = match &self.pin {
            Pin::LeafHex(hex_pin) => {
                hex::encode(Sha256::digest(end_entity.as_ref())) == hex_pin.to_lowercase()
            }
            Pin::SpkiBase64(b64) => {
                let cert = webpki::EndEntityCert::try_from(end_entity)
                    .map_err(|_| rustls::Error::General("unparsable certificate".into()))?;
                let spki = cert.subject_public_key_info();
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    Sha256::digest(spki.as_ref()),
                ) == *b64
            }
        };
        if matches {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A rustls client config that trusts only `pin`.
pub fn pinned_tls_config(pin: Pin, alpn: &[&[u8]]) -> rustls::ClientConfig {
    pinned_tls_config_with(pin, alpn, rustls::DEFAULT_VERSIONS)
}

/// [`pinned_tls_config`] limited to `versions`.
pub fn pinned_tls_config_with(
    pin: Pin,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, algorithms }))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

pub fn client_with_pin(pin: Pin) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(pinned_tls_config(pin, &[b"http/1.1"]))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub fn leaf_pinned_client(pin_hex: &str) -> reqwest::Client {
    client_with_pin(Pin::LeafHex(pin_hex.to_owned()))
}

/// A decoded gateway response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

pub async fn send(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "body is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Reply {
        status,
        headers,
        body,
    }
}

/// The status and exact body text of one request (for byte-for-byte payload checks).
pub async fn send_text(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// The failure envelope with `error`.
pub fn error_envelope(error: &str) -> serde_json::Value {
    serde_json::json!({"ok": false, "data": null, "error": error})
}

/// Opens a raw TLS connection (HTTP/1.1 ALPN) pinned to `pin_hex`.
pub async fn raw_tls(
    addr: SocketAddr,
    pin_hex: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    raw_tls_with(addr, pin_hex, None, b"http/1.1").await
}

/// [`raw_tls`] from the loopback address `source` (any of 127.0.0.0/8), offering `alpn`.
pub async fn raw_tls_with(
    addr: SocketAddr,
    pin_hex: &str,
    source: Option<std::net::IpAddr>,
    alpn: &[u8],
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(pinned_tls_config(
        Pin::LeafHex(pin_hex.to_owned()),
        &[alpn],
    )));
    let tcp = match source {
        None => tokio::net::TcpStream::connect(addr).await?,
        Some(source) => {
            let socket = tokio::net::TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(source, 0))?;
            socket.connect(addr).await?
        }
    };
    connector
        .connect(
            ServerName::try_from("localapi.felhom.invalid").unwrap(),
            tcp,
        )
        .await
}

/// Polls `cond` every 20 ms for up to 60 s.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// For the benchmarks: a minimal HTTPS server: rustls (same provider, versions and key type as the gateway) and
/// hyper HTTP/1 keep-alive, answering every request with `body`.
pub async fn start_bare(state_dir: &Path, body: hyper::body::Bytes) -> SocketAddr {
    let cert = <CertificateDer<'_> as rustls::pki_types::pem::PemObject>::from_pem_file(
        state_dir.join(felhom_localapi_gateway::cert::CERT_FILE),
    )
    .expect("the certificate was just written");
    let key =
        <rustls::pki_types::PrivateKeyDer<'_> as rustls::pki_types::pem::PemObject>::from_pem_file(
            state_dir.join(felhom_localapi_gateway::cert::KEY_FILE),
        )
        .expect("the key was just written");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
    .expect("ring supports TLS 1.2 and 1.3")
    .with_no_client_auth()
    .with_single_cert(vec![cert], key)
    .expect("the key matches the certificate");
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("loopback can be bound");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        let mut r = hyper::Response::new(http_body_util::Full::new(body));
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .keep_alive(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}
