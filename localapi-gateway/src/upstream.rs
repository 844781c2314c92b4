//! The gRPC side: the way to the agent's LocalApi service, and one typed call per action.
//!
//! Two ways, the same calls:
//! - [`connect_unix`]: a tonic channel to the agent's Unix socket (a gateway in its own
//!   process). It connects lazily and reconnects on its own, so the gateway can start before
//!   the agent's socket exists and survives an agent restart; a call while the agent is
//!   unreachable fails with UNAVAILABLE, which the status table turns into 503.
//! - [`in_process`]: the LocalApi service itself, called without a socket (the gateway
//!   embedded in the agent). Requests and replies are still gRPC messages, encoded and decoded
//!   by the service exactly as on the socket; only HTTP/2 framing and the socket's syscalls
//!   are saved, which were most of the gateway's own cost per request.
//!
//! The caller's bearer token is forwarded as `authorization` metadata and nothing else about
//! the caller is sent: the agent derives the guest from the token alone.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::Duration;

use felhom_proto::agent::v1 as pb;
use felhom_proto::agent::v1::local_api_client::LocalApiClient as GeneratedClient;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::body::Body;
use tonic::transport::Endpoint;
use tower::util::BoxCloneSyncService;

use crate::action::{Action, Reply, RestoreTestStatusData};
use crate::auth::BearerToken;

/// Whatever carries gRPC requests to the LocalApi service: a socket channel or the service.
pub type Transport = BoxCloneSyncService<http::Request<Body>, http::Response<Body>, TransportError>;

/// A transport failure (the socket channel's; the in-process service has none). A struct, not
/// a boxed `dyn Error`: rustc cannot prove the request futures `Send` through the latter. Its
/// source is the channel's own error, so tonic still finds a connect failure in the chain and
/// answers UNAVAILABLE (503).
#[derive(Debug)]
pub struct TransportError(tonic::transport::Error);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// The LocalApi client the gateway calls through.
pub type LocalApiClient = GeneratedClient<Transport>;

/// How long connecting to the agent's socket may take before the call fails as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for the agent's LocalApi on the Unix socket at `socket` (connects on first use).
pub fn connect_unix(socket: impl Into<PathBuf>) -> LocalApiClient {
    let socket = socket.into();
    // The URI is required by tonic but unused: the connector below ignores it.
    let endpoint =
        Endpoint::from_static("http://agent.localapi.invalid").connect_timeout(CONNECT_TIMEOUT);
    let channel = endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| {
        let socket = socket.clone();
        async move { UnixStream::connect(socket).await.map(TokioIo::new) }
    }));
    GeneratedClient::new(BoxCloneSyncService::new(tower::ServiceExt::map_err(
        channel,
        transport_error,
    )))
}

/// A client that calls `service` (the agent's `LocalApiServer`) in this process.
pub fn in_process<S>(service: S) -> LocalApiClient
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    GeneratedClient::new(BoxCloneSyncService::new(tower::ServiceExt::map_err(
        service,
        unreachable_error,
    )))
}

fn transport_error(e: tonic::transport::Error) -> TransportError {
    TransportError(e)
}

fn unreachable_error(never: Infallible) -> TransportError {
    match never {}
}

/// Performs `action` as exactly one LocalApi call on behalf of `token`'s guest, waiting at most
/// `timeout` (after which the caller gets DEADLINE_EXCEEDED, i.e. 504).
pub async fn call(
    client: &LocalApiClient,
    token: &BearerToken,
    action: Action,
    timeout: Duration,
) -> Result<Reply, tonic::Status> {
    let mut client = client.clone();
    let call = async move {
        match action {
            Action::GetStorage => client
                .get_storage(request(token, pb::GetStorageRequest {}))
                .await
                .map(|r| Reply::Storage(r.into_inner().into())),
            Action::Snapshot(m) => client
                .snapshot(request(token, m))
                .await
                .map(|r| Reply::Snapshot(r.into_inner().into())),
            Action::Rollback(m) => client
                .rollback(request(token, m))
                .await
                .map(|r| Reply::Snapshot(r.into_inner().into())),
            Action::StartBackup => client
                .start_backup(request(token, pb::StartBackupRequest {}))
                .await
                .map(|r| Reply::BackupJob(r.into_inner().into())),
            Action::GetBackupDue => client
                .get_backup_due(request(token, pb::GetBackupDueRequest {}))
                .await
                .map(|r| Reply::BackupDue(r.into_inner().into())),
            Action::GetBackupStatus => client
                .get_backup_status(request(token, pb::GetBackupStatusRequest {}))
                .await
                .map(|r| Reply::BackupStatus(r.into_inner().into())),
            Action::GetRestoreTestStatus => {
                let status = client
                    .get_restore_test_status(request(token, pb::GetRestoreTestStatusRequest {}))
                    .await?
                    .into_inner();
                // An unshowable time is the agent's fault: INTERNAL → 500, detail logged only.
                RestoreTestStatusData::try_from(status)
                    .map(Reply::RestoreTestStatus)
                    .map_err(|e| {
                        tonic::Status::internal(format!("GetRestoreTestStatus reply: {e}"))
                    })
            }
        }
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result,
        Err(_) => Err(tonic::Status::deadline_exceeded(format!(
            "the host agent did not answer within {} s",
            timeout.as_secs()
        ))),
    }
}

fn request<T>(token: &BearerToken, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", token.metadata_value());
    request
}
