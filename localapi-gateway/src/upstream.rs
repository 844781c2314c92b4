//! The gRPC side: the way to the agent's LocalApi service, and one typed call per action.
//!
//! Two ways, the same calls:
//! - [`connect_unix`]: a tonic channel to the agent's Unix socket (a gateway in its own
//!   process). It connects lazily and reconnects on its own, so the gateway can start before
//!   the agent's socket exists and survives an agent restart; a call while the agent is
//!   unreachable fails with UNAVAILABLE, which the status table turns into 503.
//! - [`in_process`]: the LocalApi service itself, called as the Rust trait tonic generates for
//!   it (the gateway embedded in the agent): the same request messages with the same
//!   `authorization` metadata reach the same service methods, but nothing is encoded, framed or
//!   buffered in between. The agent's service authenticates inside its methods (no tower layer
//!   or interceptor sits in front of it), so the direct call checks exactly what the socket
//!   path checks.
//!
//! The caller's bearer token is forwarded as `authorization` metadata and nothing else about
//! the caller is sent: the agent derives the guest from the token alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use felhom_proto::agent::v1 as pb;
use felhom_proto::agent::v1::local_api_client::LocalApiClient as GeneratedClient;
use felhom_proto::agent::v1::local_api_server::LocalApi;
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
/// The agent's LocalApi, over its socket or in this process.
#[derive(Clone)]
pub enum LocalApiClient {
    /// A tonic client over the agent's Unix socket.
    Grpc(GeneratedClient<Transport>),
    /// The service in this process, called directly.
    Direct(Arc<dyn LocalApi>),
}

impl std::fmt::Debug for LocalApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Grpc(_) => "LocalApiClient::Grpc",
            Self::Direct(_) => "LocalApiClient::Direct",
        })
    }
}

/// One method per LocalApi call, the same on both ways.
macro_rules! calls {
    ($($name:ident($req:ty) -> $reply:ty;)*) => {
        impl LocalApiClient {
            $(
                async fn $name(
                    &self,
                    request: tonic::Request<$req>,
                ) -> Result<tonic::Response<$reply>, tonic::Status> {
                    match self {
                        Self::Grpc(client) => client.clone().$name(request).await,
                        Self::Direct(service) => service.$name(request).await,
                    }
                }
            )*
        }
    };
}

calls! {
    get_storage(pb::GetStorageRequest) -> pb::GuestStorage;
    snapshot(pb::SnapshotRequest) -> pb::SnapshotResult;
    rollback(pb::RollbackRequest) -> pb::SnapshotResult;
    start_backup(pb::StartBackupRequest) -> pb::BackupAccepted;
    get_backup_due(pb::GetBackupDueRequest) -> pb::BackupDue;
    get_backup_status(pb::GetBackupStatusRequest) -> pb::BackupStatus;
    get_restore_test_status(pb::GetRestoreTestStatusRequest) -> pb::RestoreTestStatus;
}

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
    LocalApiClient::Grpc(GeneratedClient::new(BoxCloneSyncService::new(
        tower::ServiceExt::map_err(channel, transport_error),
    )))
}

/// A client that calls `service` (the agent's LocalApi implementation) in this process.
pub fn in_process(service: impl LocalApi) -> LocalApiClient {
    LocalApiClient::Direct(Arc::new(service))
}

fn transport_error(e: tonic::transport::Error) -> TransportError {
    TransportError(e)
}

/// Performs `action` as exactly one LocalApi call on behalf of `token`'s guest, waiting at most
/// `timeout` (after which the caller gets DEADLINE_EXCEEDED, i.e. 504).
pub async fn call(
    client: &LocalApiClient,
    token: &BearerToken,
    action: Action,
    timeout: Duration,
) -> Result<Reply, tonic::Status> {
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
