//! The agent's typed client of `felhom-helper`, the root helper.
//!
//! The agent never spawns privileged programs: golden create, host mounts and hardware reads
//! are requests to the helper over its Unix socket (`paths::HELPER_SOCKET`), which checks the
//! agent's uid by SO_PEERCRED, validates every field and audits the call. Orchestration code
//! depends on the [`Helper`] trait; [`HelperClient`] is the real implementation over a tonic
//! channel, and unit tests use the fake in `tests` below.
//!
//! Errors: every gRPC status maps to one [`HelperError`] variant by an exhaustive match on
//! the status code. An INVALID_ARGUMENT names the offending request field (the helper puts it
//! in the `felhom-field` metadata entry and at the start of the message).
//!
//! Limits: the channel connects lazily, so the agent can start before the helper; a call
//! made while the helper is down fails with [`HelperError::Unavailable`]. There is no client
//! timeout: the helper enforces its own per-operation timeouts (up to 15 minutes for a
//! golden create) and reports DEADLINE_EXCEEDED as [`HelperError::TimedOut`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use felhom_proto::helper::v1 as pb;
pub use felhom_proto::helper::v1::{
    CreateGoldenRequest, DriveProtocol, Mount, MountByUuidRequest, SmartHealth, SmartReport,
    TemperatureReading,
};
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};

/// A failed helper call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelperError {
    /// The helper is not reachable (not running, socket missing, connection dropped).
    #[error("felhom-helper is unavailable: {0}")]
    Unavailable(String),
    /// The helper refused this process (wrong uid).
    #[error("felhom-helper refused the caller: {0}")]
    PermissionDenied(String),
    /// A request field failed the helper's validation.
    #[error("felhom-helper rejected field {field}: {message}")]
    InvalidArgument {
        /// The request field, e.g. `mount_point`.
        field: String,
        /// The helper's full message.
        message: String,
    },
    /// The thing asked about does not exist (UUID, device, mount).
    #[error("Not found: {0}")]
    NotFound(String),
    /// The device or mount point is already mounted.
    #[error("Already exists: {0}")]
    AlreadyExists(String),
    /// The operation is not possible in the current state (busy mount, protected device,
    /// filesystem refused by the kernel).
    #[error("Refused: {0}")]
    Refused(String),
    /// A program the helper ran hit its timeout and was killed.
    #[error("Timed out: {0}")]
    TimedOut(String),
    /// The helper's program failed (e.g. `pct create` exited non-zero).
    #[error("Operation failed: {0}")]
    Failed(String),
    /// Anything else the helper reported (a helper bug or an unexpected status).
    #[error("felhom-helper error ({code:?}): {message}")]
    Internal {
        /// The gRPC code.
        code: Code,
        /// The message.
        message: String,
    },
}

impl From<Status> for HelperError {
    fn from(status: Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::Unavailable | Code::Cancelled => Self::Unavailable(message),
            Code::PermissionDenied | Code::Unauthenticated => Self::PermissionDenied(message),
            Code::InvalidArgument => {
                let field = status
                    .metadata()
                    .get("felhom-field")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
                    .or_else(|| message.split_once(':').map(|(f, _)| f.to_owned()))
                    .unwrap_or_default();
                Self::InvalidArgument { field, message }
            }
            Code::NotFound => Self::NotFound(message),
            Code::AlreadyExists => Self::AlreadyExists(message),
            Code::FailedPrecondition => Self::Refused(message),
            Code::DeadlineExceeded => Self::TimedOut(message),
            Code::Aborted => Self::Failed(message),
            code @ (Code::Ok
            | Code::Unknown
            | Code::ResourceExhausted
            | Code::OutOfRange
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss) => Self::Internal { code, message },
        }
    }
}

/// The helper's operations, as the agent sees them.
pub trait Helper: Send + Sync {
    /// `pct create` of the golden base container; returns its vmid.
    fn create_golden(
        &self,
        spec: CreateGoldenRequest,
    ) -> impl Future<Output = Result<u32, HelperError>> + Send;
    /// Mounts a filesystem by UUID under the helper's prefix.
    fn mount_by_uuid(
        &self,
        request: MountByUuidRequest,
    ) -> impl Future<Output = Result<Mount, HelperError>> + Send;
    /// Unmounts a mount point under the prefix; `lazy` detaches a busy mount.
    fn unmount(
        &self,
        mount_point: &str,
        lazy: bool,
    ) -> impl Future<Output = Result<(), HelperError>> + Send;
    /// Mounts under the prefix.
    fn list_mounts(&self) -> impl Future<Output = Result<Vec<Mount>, HelperError>> + Send;
    /// SMART report of a whole drive (`/dev/sdX`, `/dev/nvmeXnY`, `/dev/disk/by-id/...`).
    fn read_smart(
        &self,
        device: &str,
    ) -> impl Future<Output = Result<SmartReport, HelperError>> + Send;
    /// Host temperature sensors.
    fn read_sensors(
        &self,
    ) -> impl Future<Output = Result<Vec<TemperatureReading>, HelperError>> + Send;
}

/// The real client over the helper's Unix socket.
#[derive(Debug, Clone)]
pub struct HelperClient {
    inner: pb::helper_client::HelperClient<Channel>,
    socket: PathBuf,
}

impl HelperClient {
    /// A client for the socket at `path`; connects on first use (and reconnects after the
    /// helper restarts).
    pub fn new(path: &Path) -> Self {
        let socket = path.to_path_buf();
        let connect_to = socket.clone();
        // The URI is required by the API but unused: the connector below dials the socket.
        let channel = Endpoint::from_static("http://felhom-helper.invalid")
            .connect_timeout(Duration::from_secs(5))
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = connect_to.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }));
        Self {
            inner: pb::helper_client::HelperClient::new(channel),
            socket,
        }
    }

    /// The socket this client dials.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Helper for HelperClient {
    async fn create_golden(&self, spec: CreateGoldenRequest) -> Result<u32, HelperError> {
        let reply = self.inner.clone().create_golden(spec).await?;
        Ok(reply.into_inner().vmid)
    }

    async fn mount_by_uuid(&self, request: MountByUuidRequest) -> Result<Mount, HelperError> {
        let reply = self.inner.clone().mount_by_uuid(request).await?;
        reply
            .into_inner()
            .mount
            .ok_or_else(|| HelperError::Internal {
                code: Code::Internal,
                message: "mount reply without a mount".to_owned(),
            })
    }

    async fn unmount(&self, mount_point: &str, lazy: bool) -> Result<(), HelperError> {
        self.inner
            .clone()
            .unmount(pb::UnmountRequest {
                mount_point: mount_point.to_owned(),
                lazy,
            })
            .await?;
        Ok(())
    }

    async fn list_mounts(&self) -> Result<Vec<Mount>, HelperError> {
        let reply = self
            .inner
            .clone()
            .list_mounts(pb::ListMountsRequest {})
            .await?;
        Ok(reply.into_inner().mounts)
    }

    async fn read_smart(&self, device: &str) -> Result<SmartReport, HelperError> {
        let reply = self
            .inner
            .clone()
            .read_smart(pb::ReadSmartRequest {
                device: device.to_owned(),
            })
            .await?;
        Ok(reply.into_inner())
    }

    async fn read_sensors(&self) -> Result<Vec<TemperatureReading>, HelperError> {
        let reply = self
            .inner
            .clone()
            .read_sensors(pb::ReadSensorsRequest {})
            .await?;
        Ok(reply.into_inner().temperatures)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use felhom_proto::helper::v1::helper_server::{Helper as HelperService, HelperServer};
    use tonic::metadata::MetadataValue;
    use tonic::{Request, Response};

    use super::*;

    /// In-memory helper for unit tests of orchestration code: mounts are kept in a map,
    /// SMART reports are preset per device, and a mount point can be marked busy.
    #[derive(Debug, Default)]
    pub(crate) struct FakeHelper {
        pub(crate) mounts: Mutex<BTreeMap<String, Mount>>,
        pub(crate) busy: Mutex<Vec<String>>,
        pub(crate) smart: BTreeMap<String, SmartReport>,
        pub(crate) sensors: Vec<TemperatureReading>,
        pub(crate) golden_created: Mutex<Vec<CreateGoldenRequest>>,
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    impl Helper for FakeHelper {
        async fn create_golden(&self, spec: CreateGoldenRequest) -> Result<u32, HelperError> {
            let vmid = spec.vmid;
            lock(&self.golden_created).push(spec);
            Ok(vmid)
        }

        async fn mount_by_uuid(&self, request: MountByUuidRequest) -> Result<Mount, HelperError> {
            let mut mounts = lock(&self.mounts);
            if mounts.contains_key(&request.mount_point) {
                return Err(HelperError::AlreadyExists(format!(
                    "{} is already a mount point",
                    request.mount_point
                )));
            }
            let mut options = vec!["rw".to_owned(), "nosuid".to_owned(), "nodev".to_owned()];
            options.extend(request.options);
            let mount = Mount {
                mount_point: request.mount_point.clone(),
                device: format!("/dev/disk/by-uuid/{}", request.fs_uuid),
                fs_type: request.fs_type,
                options,
            };
            mounts.insert(request.mount_point, mount.clone());
            Ok(mount)
        }

        async fn unmount(&self, mount_point: &str, lazy: bool) -> Result<(), HelperError> {
            if !lazy && lock(&self.busy).iter().any(|b| b == mount_point) {
                return Err(HelperError::Refused(format!("{mount_point} is busy")));
            }
            match lock(&self.mounts).remove(mount_point) {
                Some(_) => Ok(()),
                None => Err(HelperError::NotFound(format!(
                    "Nothing is mounted at {mount_point}"
                ))),
            }
        }

        async fn list_mounts(&self) -> Result<Vec<Mount>, HelperError> {
            Ok(lock(&self.mounts).values().cloned().collect())
        }

        async fn read_smart(&self, device: &str) -> Result<SmartReport, HelperError> {
            self.smart
                .get(device)
                .cloned()
                .ok_or_else(|| HelperError::NotFound(format!("smartctl cannot open {device}")))
        }

        async fn read_sensors(&self) -> Result<Vec<TemperatureReading>, HelperError> {
            Ok(self.sensors.clone())
        }
    }

    #[tokio::test]
    async fn fake_refuses_busy_unmount_unless_lazy() {
        let fake = FakeHelper::default();
        fake.mount_by_uuid(MountByUuidRequest {
            fs_uuid: "1A2B-3C4D".into(),
            mount_point: "/mnt/felhom/usb".into(),
            fs_type: "vfat".into(),
            options: vec![],
        })
        .await
        .expect("fake mounts");
        lock(&fake.busy).push("/mnt/felhom/usb".into());
        assert_eq!(
            fake.unmount("/mnt/felhom/usb", false).await,
            Err(HelperError::Refused("/mnt/felhom/usb is busy".into()))
        );
        fake.unmount("/mnt/felhom/usb", true)
            .await
            .expect("lazy unmount detaches");
        assert!(fake.list_mounts().await.expect("list").is_empty());
    }

    #[test]
    fn invalid_argument_names_the_field_from_metadata() {
        let mut status = Status::invalid_argument("mount_point: must be under /mnt/felhom");
        status
            .metadata_mut()
            .insert("felhom-field", MetadataValue::from_static("mount_point"));
        assert_eq!(
            HelperError::from(status),
            HelperError::InvalidArgument {
                field: "mount_point".into(),
                message: "mount_point: must be under /mnt/felhom".into(),
            }
        );
    }

    #[test]
    fn timeouts_and_refusals_map_to_their_own_variants() {
        assert_eq!(
            HelperError::from(Status::deadline_exceeded("smartctl timed out")),
            HelperError::TimedOut("smartctl timed out".into())
        );
        assert_eq!(
            HelperError::from(Status::failed_precondition("/mnt/felhom/x is busy")),
            HelperError::Refused("/mnt/felhom/x is busy".into())
        );
        assert_eq!(
            HelperError::from(Status::permission_denied(
                "uid 1000 may not call felhom-helper"
            )),
            HelperError::PermissionDenied("uid 1000 may not call felhom-helper".into())
        );
    }

    /// A scripted server standing in for the helper, to exercise the real client over a real
    /// Unix socket.
    struct Scripted;

    #[tonic::async_trait]
    impl HelperService for Scripted {
        async fn create_golden(
            &self,
            request: Request<pb::CreateGoldenRequest>,
        ) -> Result<Response<pb::CreateGoldenResponse>, Status> {
            Ok(Response::new(pb::CreateGoldenResponse {
                vmid: request.into_inner().vmid,
            }))
        }
        async fn mount_by_uuid(
            &self,
            _request: Request<pb::MountByUuidRequest>,
        ) -> Result<Response<pb::MountByUuidResponse>, Status> {
            Err(Status::not_found("No filesystem with UUID 1A2B-3C4D"))
        }
        async fn unmount(
            &self,
            _request: Request<pb::UnmountRequest>,
        ) -> Result<Response<pb::UnmountResponse>, Status> {
            Ok(Response::new(pb::UnmountResponse {}))
        }
        async fn list_mounts(
            &self,
            _request: Request<pb::ListMountsRequest>,
        ) -> Result<Response<pb::ListMountsResponse>, Status> {
            Ok(Response::new(pb::ListMountsResponse {
                mounts: vec![Mount {
                    mount_point: "/mnt/felhom/usb".into(),
                    device: "/dev/sdc1".into(),
                    fs_type: "ext4".into(),
                    options: vec!["rw".into(), "nosuid".into(), "nodev".into()],
                }],
            }))
        }
        async fn read_smart(
            &self,
            request: Request<pb::ReadSmartRequest>,
        ) -> Result<Response<pb::SmartReport>, Status> {
            Ok(Response::new(pb::SmartReport {
                device: request.into_inner().device,
                health: SmartHealth::Passed.into(),
                ..Default::default()
            }))
        }
        async fn read_sensors(
            &self,
            _request: Request<pb::ReadSensorsRequest>,
        ) -> Result<Response<pb::SensorsReport>, Status> {
            Err(Status::deadline_exceeded(
                "sensors timed out after 60s and was killed",
            ))
        }
    }

    #[tokio::test]
    async fn real_client_round_trips_over_a_unix_socket() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("helper.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(HelperServer::new(Scripted))
                .serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        let client = HelperClient::new(&path);
        assert_eq!(
            client
                .create_golden(CreateGoldenRequest {
                    vmid: 9001,
                    ..Default::default()
                })
                .await,
            Ok(9001)
        );
        let mounts = client.list_mounts().await.expect("list mounts");
        assert_eq!(mounts.len(), 1);
        assert_eq!(
            client.read_smart("/dev/sda").await.map(|r| r.health()),
            Ok(SmartHealth::Passed)
        );
        assert_eq!(
            client.mount_by_uuid(MountByUuidRequest::default()).await,
            Err(HelperError::NotFound(
                "No filesystem with UUID 1A2B-3C4D".into()
            ))
        );
        assert_eq!(
            client.read_sensors().await,
            Err(HelperError::TimedOut(
                "sensors timed out after 60s and was killed".into()
            ))
        );
        server.abort();
    }

    #[tokio::test]
    async fn missing_helper_is_unavailable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let client = HelperClient::new(&dir.path().join("absent.sock"));
        let err = client.list_mounts().await.expect_err("no helper");
        assert!(matches!(err, HelperError::Unavailable(_)), "{err:?}");
    }
}
