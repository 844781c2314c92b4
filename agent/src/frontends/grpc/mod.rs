//! The agent's internal gRPC server: the `Agent` operator service (and, as issues land, the
//! guests' `LocalApi`), with server reflection so `grpcurl` and `felhomctl` can list and describe
//! everything. Served on a Unix socket only; who may connect is decided by the socket's owner,
//! group and mode (0660, operator group).

mod agent_service;
mod local_api;
pub mod status;

use std::path::Path;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

pub use agent_service::AgentService;
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

/// Builds the reflection services for the agent's services.
pub fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    ServeError,
> {
    felhom_proto::reflection(&[AGENT_SERVICE, LOCAL_API_SERVICE]).map_err(ServeError::Reflection)
}

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

/// Serves the agent's services on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: UnixListener,
    ctx: std::sync::Arc<crate::app::context::AgentContext>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    use felhom_proto::agent::v1::{agent_server::AgentServer, local_api_server::LocalApiServer};
    let (v1, v1alpha) = reflection()?;
    tonic::transport::Server::builder()
        .add_service(AgentServer::new(AgentService::new(ctx.clone())))
        .add_service(LocalApiServer::new(LocalApiService::new(ctx)))
        .add_service(v1)
        .add_service(v1alpha)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(ServeError::Transport)
}
