//! The agent's internal gRPC servers, each on its own Unix socket, each with server reflection
//! so `grpcurl` and `felhomctl` can list and describe what it serves:
//!
//! - the operators' `Agent` service on `agent.sock` (0660, operator group);
//! - the guests' `LocalApi` on `localapi.sock` (0600, the agent user; or 0660 with a configured
//!   gateway group for a standalone gateway), which only a standalone local-API gateway calls;
//!   the embedded one calls the same service's methods in process ([`local_api_service`]).
//!
//! Who may connect is decided by each socket's owner, group and mode; neither server answers
//! the other's methods (UNIMPLEMENTED), so an operator cannot act as a guest.

mod agent;
mod guest_status;
mod local_api;
pub mod status;

use std::path::Path;
use std::sync::Arc;

use felhom_proto::agent::v1::{agent_server::AgentServer, local_api_server::LocalApiServer};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::capabilities::Capabilities;
use crate::frontends::local_api_gateway::GatewaySlot;

pub use agent::AgentService;
pub use local_api::LocalApiService;

/// Errors starting or running the gRPC server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot bind gRPC socket {path}")]
    Bind {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC reflection setup failed")]
    Reflection(#[source] tonic_reflection::server::Error),
    #[error("gRPC server failed")]
    Transport(#[source] tonic::transport::Error),
}

/// Fully qualified names of the services the agent serves.
pub const AGENT_SERVICE: &str = "felhom.agent.v1.Agent";
/// See [`AGENT_SERVICE`].
pub const LOCAL_API_SERVICE: &str = "felhom.agent.v1.LocalApi";

/// Binds `path` (removing a stale socket file first) and returns the listener.
pub fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            // A socket file left by a previous run; nobody can be listening on it if binding
            // it is our job (systemd starts one instance).
            std::fs::remove_file(path).map_err(|source| ServeError::Bind {
                path: path.to_owned(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(ServeError::Bind {
                path: path.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "exists and is not a socket; refusing to replace it",
                ),
            });
        }
        Err(_) => {}
    }
    UnixListener::bind(path).map_err(|source| ServeError::Bind {
        path: path.to_owned(),
        source,
    })
}

/// Serves the operators' `Agent` service on `listener` until `shutdown` resolves.
pub async fn serve_agent(
    listener: UnixListener,
    caps: Arc<Capabilities>,
    gateway: GatewaySlot,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let (v1, v1alpha) =
        felhom_proto::reflection(&[AGENT_SERVICE]).map_err(ServeError::Reflection)?;
    tonic::transport::Server::builder()
        .add_service(AgentServer::new(AgentService::new(caps, gateway)))
        .add_service(v1)
        .add_service(v1alpha)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(ServeError::Transport)
}

/// The guests' `LocalApi` service, as served on the LocalApi socket.
pub fn local_api_server(caps: Arc<Capabilities>) -> LocalApiServer<LocalApiService> {
    LocalApiServer::new(local_api_service(caps))
}

/// The guests' `LocalApi` service itself (the embedded gateway calls it directly).
pub fn local_api_service(caps: Arc<Capabilities>) -> LocalApiService {
    LocalApiService::new(caps)
}

/// Serves the guests' `LocalApi` service on `listener` until `shutdown` resolves, then writes
/// what the guests' audit ledger still holds
/// ([`crate::capabilities::records::Records::flush_coalesced`]).
pub async fn serve_local_api(
    listener: UnixListener,
    caps: Arc<Capabilities>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let (v1, v1alpha) =
        felhom_proto::reflection(&[LOCAL_API_SERVICE]).map_err(ServeError::Reflection)?;
    let served = tonic::transport::Server::builder()
        .add_service(local_api_server(caps.clone()))
        .add_service(v1)
        .add_service(v1alpha)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(ServeError::Transport);
    // The guests' calls have finished: write the repeat and refusal counts still pending.
    caps.records.flush_coalesced().await;
    served
}
