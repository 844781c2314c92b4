//! Connecting to a gRPC server on a Unix socket, with connect failures an operator can act on.
//!
//! The socket is connected once up front so that a missing socket, a denied permission or a
//! dead server is reported as such (tonic would wrap it in a generic transport error). That
//! first stream is handed to tonic's channel; should the channel ever reconnect, it connects
//! to the same path again.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use super::CtlError;
use crate::app::paths;

/// Why a socket could not be connected; the `Display` text tells the operator what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    #[error("no such file — is {daemon} running? (--socket to choose another)")]
    Missing { daemon: &'static str },
    #[error(
        "permission denied — operators must be in the {group} group (then log in again), or use sudo"
    )]
    PermissionDenied { group: &'static str },
    #[error("connection refused — nobody is listening; is {daemon} running?")]
    Refused { daemon: &'static str },
    #[error("{0}")]
    Other(std::io::Error),
}

/// Opens a gRPC channel over the Unix socket at `socket`.
/// A tonic channel over the Unix socket `socket` (connects once now, again on reconnects).
pub async fn unix_channel(socket: &Path) -> Result<Channel, CtlError> {
    let first = UnixStream::connect(socket)
        .await
        .map_err(|e| CtlError::Connect {
            socket: socket.to_owned(),
            failure: classify(socket, e),
        })?;
    let first = Arc::new(Mutex::new(Some(first)));
    let path = socket.to_owned();
    // The authority is never used for a Unix socket; tonic needs a syntactically valid URI.
    let endpoint = Endpoint::from_static("http://felhom.invalid");
    endpoint
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let first = first.lock().map(|mut slot| slot.take()).unwrap_or_default();
            let path = path.clone();
            async move {
                let stream = match first {
                    Some(stream) => stream,
                    None => UnixStream::connect(&path).await?,
                };
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(CtlError::Transport)
}

/// Names the daemon that should be serving `socket`, for hints.
fn daemon_for(socket: &Path) -> &'static str {
    if socket == Path::new(paths::HELPER_SOCKET)
        || socket.file_name() == Some(std::ffi::OsStr::new("helper.sock"))
    {
        "felhom-helper"
    } else {
        "felhom-agent"
    }
}

fn classify(socket: &Path, error: std::io::Error) -> ConnectFailure {
    let daemon = daemon_for(socket);
    match error.kind() {
        ErrorKind::NotFound => ConnectFailure::Missing { daemon },
        ErrorKind::PermissionDenied => ConnectFailure::PermissionDenied {
            group: if daemon == "felhom-helper" {
                paths::AGENT_USER
            } else {
                paths::OPS_GROUP
            },
        },
        ErrorKind::ConnectionRefused => ConnectFailure::Refused { daemon },
        _ => ConnectFailure::Other(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helper_socket_hints_name_the_helper() {
        let failure = classify(
            Path::new("/run/felhom-helper/helper.sock"),
            std::io::Error::from(ErrorKind::NotFound),
        );
        assert_eq!(
            failure.to_string(),
            "no such file — is felhom-helper running? (--socket to choose another)"
        );
    }

    #[test]
    fn agent_socket_permission_hint_names_the_ops_group() {
        let failure = classify(
            Path::new(paths::AGENT_SOCKET),
            std::io::Error::from(ErrorKind::PermissionDenied),
        );
        assert_eq!(
            failure.to_string(),
            "permission denied — operators must be in the felhom-ops group (then log in again), or use sudo"
        );
    }
}
