//! The gRPC side: socket setup, the `felhom.helper.v1.Helper` service, error → status maps.
//!
//! Socket lifecycle ([`bind`]): the socket's directory must be the helper's own (root-owned,
//! writable by no one else, not a symlink), so the agent — allowed only to connect — cannot
//! swap the socket; refuse if something other than a socket sits at the path; if a socket is
//! there and something answers on it, another helper runs → refuse; otherwise it is stale →
//! remove. Bind under umask 0117 (born 0660, never wider), set the group without following
//! symlinks, check the result. Readiness is sent by the caller after the privilege drop.
//!
//! Every handler: take the [`Caller`] the peer check put into the request, validate every
//! field into newtypes (an [`Invalid`] becomes INVALID_ARGUMENT naming the field, also in
//! the `felhom-field` metadata entry), run the operation, audit the outcome with the
//! validated arguments and the duration. Error → status maps are exhaustive matches.

use std::future::Future;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::sync::Arc;
use std::time::Instant;

use felhom_proto::helper::v1 as pb;
use felhom_proto::helper::v1::helper_server::{Helper, HelperServer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use crate::audit::{Audit, Outcome};
use crate::caller::Caller;
use crate::config::Config;
use crate::exec::ExecError;
use crate::golden::{self, GoldenConfig, GoldenError, GoldenSpec};
use crate::hostns::{HostNs, HostNsError};
use crate::mounts::{self, MountConfig, MountError};
use crate::peer::{PeerCheck, Policy};
use crate::sensors::{self, SensorsConfig, SensorsError};
use crate::smart::{self, SmartConfig, SmartError};
use crate::validate::{
    Bridge, DevicePath, FsType, FsUuid, Hostname, Invalid, MountOption, MountPoint, StorageId,
    TemplateVolid, Vmid, bounded,
};

/// Fully qualified name of the one service the helper serves (the only one its reflection
/// advertises besides the reflection services themselves).
pub const HELPER_SERVICE: &str = <HelperServer<HelperService> as tonic::server::NamedService>::NAME;

/// Output cap for pct, smartctl and sensors (each of stdout and stderr).
pub const OUTPUT_CAP: usize = 1 << 20;

/// Socket setup or serving failure.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Something that is not a socket sits at the socket path.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(std::path::PathBuf),
    /// The socket path has no directory part.
    #[error("--socket {0} must name a file inside a directory")]
    NoDirectory(std::path::PathBuf),
    /// The socket's directory could let the agent replace the socket.
    #[error("Refusing the socket directory {dir}")]
    Directory {
        /// The directory.
        dir: std::path::PathBuf,
        /// Why.
        #[source]
        source: DirError,
    },
    /// After binding, the socket path is not the socket just bound with the expected mode.
    #[error("{path} changed while binding (mode {mode:04o}, group {gid}); refusing to serve")]
    Replaced {
        /// The socket path.
        path: std::path::PathBuf,
        /// Mode found.
        mode: u32,
        /// Group found.
        gid: u32,
    },
    /// Another process answers on the socket.
    #[error("Another helper is already serving on {0}")]
    AlreadyServing(std::path::PathBuf),
    /// A socket step failed.
    #[error("Cannot {step} {path}")]
    Socket {
        /// What was being done.
        step: &'static str,
        /// The socket path.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The reflection service could not be built from the descriptor set.
    #[error("Cannot build gRPC reflection")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Transport(#[from] tonic::transport::Error),
    /// The host-namespace thread could not be started.
    #[error("Cannot start the host-namespace thread")]
    HostNs(#[from] HostNsError),
}

/// Binds the socket: checks its directory, stale-socket handling, bind, group.
///
/// The directory must be the helper's own (owned by its euid, writable by no one else, every
/// ancestor likewise or sticky): then the agent cannot swap the socket, or a symlink in its
/// place, between the steps below. A missing directory is created 0750 with the socket's
/// group. The socket is born 0660 (umask 0117 around bind) and its group is set with
/// `lchown`, which never follows a symlink; the result is checked with `lstat`.
///
/// Returns a std listener (non-blocking) so the binary can bind, then drop capabilities,
/// and only then start the (multi-threaded) runtime: capability sets are per thread, so the
/// drop must happen while the process has one thread.
pub fn bind(cfg: &Config) -> Result<std::os::unix::net::UnixListener, ServeError> {
    let path = &cfg.socket;
    let sock_err = |step: &'static str| {
        move |source| ServeError::Socket {
            step,
            path: path.clone(),
            source,
        }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .ok_or_else(|| ServeError::NoDirectory(path.clone()))?;
    socket_dir(dir, cfg).map_err(|source| ServeError::Directory {
        dir: dir.to_path_buf(),
        source,
    })?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ServeError::AlreadyServing(path.clone()));
            }
            std::fs::remove_file(path).map_err(sock_err("remove stale socket"))?;
        }
        Ok(_) => return Err(ServeError::NotASocket(path.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err("inspect")(e)),
    }
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o117));
    let listener = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = listener.map_err(sock_err("bind"))?;
    listener
        .set_nonblocking(true)
        .map_err(sock_err("make non-blocking"))?;
    if !cfg.unprivileged_dev {
        std::os::unix::fs::lchown(path, None, Some(cfg.socket_gid)).map_err(sock_err("chown"))?;
    }
    let meta = std::fs::symlink_metadata(path).map_err(sock_err("inspect"))?;
    let mode = meta.permissions().mode() & 0o7777;
    let group_ok = cfg.unprivileged_dev || meta.gid() == cfg.socket_gid;
    if !meta.file_type().is_socket() || mode != 0o660 || !group_ok {
        return Err(ServeError::Replaced {
            path: path.clone(),
            mode,
            gid: meta.gid(),
        });
    }
    Ok(listener)
}

/// Why a socket directory is refused.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// Not a directory (a symlink counts as not a directory).
    #[error("{0} is not a directory (symlinks are refused)")]
    NotADirectory(std::path::PathBuf),
    /// Owned by someone other than the helper.
    #[error("{path} is owned by uid {uid}, not by the helper's uid {euid}")]
    Owner {
        /// The directory or ancestor.
        path: std::path::PathBuf,
        /// Its owner.
        uid: u32,
        /// The helper's effective uid.
        euid: u32,
    },
    /// Writable by its group or others (and not sticky, for an ancestor).
    #[error("{path} is writable by group or others (mode {mode:04o})")]
    Writable {
        /// The directory or ancestor.
        path: std::path::PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The socket's group cannot reach the socket.
    #[error(
        "group {gid} cannot enter it (mode {mode:04o}, group {dir_gid}): the agent could not connect"
    )]
    Unreachable {
        /// The socket group.
        gid: u32,
        /// The directory's group.
        dir_gid: u32,
        /// Its mode bits.
        mode: u32,
    },
    /// A file-system call failed.
    #[error("cannot {step} {path}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// The path.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Checks (or creates) the socket directory `dir` and its ancestors; see [`bind`].
fn socket_dir(dir: &std::path::Path, cfg: &Config) -> Result<(), DirError> {
    let euid = nix::unistd::geteuid().as_raw();
    let io = |step: &'static str, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| DirError::Io { step, path, source }
    };
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o027));
            let made = std::fs::DirBuilder::new().mode(0o750).create(dir);
            nix::sys::stat::umask(old);
            made.map_err(io("create", dir))?;
            if !cfg.unprivileged_dev {
                std::os::unix::fs::lchown(dir, None, Some(cfg.socket_gid))
                    .map_err(io("chown", dir))?;
            }
            std::fs::symlink_metadata(dir).map_err(io("inspect", dir))?
        }
        Err(e) => return Err(io("inspect", dir)(e)),
    };
    if !meta.file_type().is_dir() {
        return Err(DirError::NotADirectory(dir.to_path_buf()));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if meta.uid() != euid {
        return Err(DirError::Owner {
            path: dir.to_path_buf(),
            uid: meta.uid(),
            euid,
        });
    }
    if mode & 0o022 != 0 {
        return Err(DirError::Writable {
            path: dir.to_path_buf(),
            mode,
        });
    }
    let reachable = mode & 0o001 != 0 || (meta.gid() == cfg.socket_gid && mode & 0o010 != 0);
    if !reachable && !cfg.unprivileged_dev {
        return Err(DirError::Unreachable {
            gid: cfg.socket_gid,
            dir_gid: meta.gid(),
            mode,
        });
    }
    // Whoever can rename an ancestor can swap the whole directory. Ancestors are checked as
    // resolved (`/var/run` → `/run`); the directory itself must not be a symlink (above).
    let parent = dir.parent().unwrap_or(std::path::Path::new("/"));
    let parent = parent.canonicalize().map_err(io("resolve", parent))?;
    for ancestor in parent.ancestors() {
        let meta = std::fs::symlink_metadata(ancestor).map_err(io("inspect", ancestor))?;
        let mode = meta.permissions().mode() & 0o7777;
        if meta.uid() != 0 && meta.uid() != euid {
            return Err(DirError::Owner {
                path: ancestor.to_path_buf(),
                uid: meta.uid(),
                euid,
            });
        }
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(DirError::Writable {
                path: ancestor.to_path_buf(),
                mode,
            });
        }
    }
    Ok(())
}

/// Serves the helper service and reflection on `listener` until `shutdown` completes, with
/// mounts and pct running in the helper's own mount namespace (no setns; for tests and
/// stand-ins). The binary uses [`serve_in`] with the host namespace.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    cfg: Arc<Config>,
    audit: Arc<Audit>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let host_ns = HostNs::start(std::path::Path::new("/proc/thread-self/ns/mnt"), false)?;
    serve_in(listener, cfg, audit, host_ns, shutdown).await
}

/// Serves the helper service and reflection on `listener` until `shutdown` completes;
/// mounts, unmounts, mount listing and pct run on `host_ns`.
pub async fn serve_in(
    listener: std::os::unix::net::UnixListener,
    cfg: Arc<Config>,
    audit: Arc<Audit>,
    host_ns: HostNs,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let check = PeerCheck::new(
        Policy {
            agent_uid: cfg.agent_uid,
        },
        Arc::clone(&audit),
    );
    // Reflection advertises only what this server serves (the descriptor set also holds the
    // agent's services), and itself.
    let (reflection_v1, reflection_v1alpha) = felhom_proto::reflection(&[HELPER_SERVICE])?;
    let listener = UnixListener::from_std(listener).map_err(|source| ServeError::Socket {
        step: "register",
        path: cfg.socket.clone(),
        source,
    })?;
    let service = HelperService::new(cfg, audit, host_ns);
    tonic::transport::Server::builder()
        .layer(check)
        .add_service(HelperServer::new(service))
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}

/// The helper service.
pub struct HelperService {
    cfg: Arc<Config>,
    audit: Arc<Audit>,
    mounts: MountConfig,
    golden: GoldenConfig,
    smart: SmartConfig,
    sensors: SensorsConfig,
    /// Serializes mount and unmount so checks and syscalls do not interleave.
    mount_lock: tokio::sync::Mutex<()>,
    /// Where mounts and pct run.
    host_ns: HostNs,
    /// One golden create at a time (pct takes cluster locks anyway; this keeps errors clear).
    golden_lock: tokio::sync::Mutex<()>,
}

impl HelperService {
    /// A service for `cfg`, auditing to `audit`, mounting and running pct on `host_ns`.
    pub fn new(cfg: Arc<Config>, audit: Arc<Audit>, host_ns: HostNs) -> Self {
        let mounts = MountConfig {
            prefix: cfg.mount_prefix.clone(),
            by_uuid_dir: cfg.by_uuid_dir.clone(),
            blkid: cfg.blkid.clone(),
            blkid_timeout: cfg.read_timeout,
            sys_block_dir: crate::config::SYS_BLOCK_DIR.into(),
            mountinfo: cfg.mountinfo.clone(),
            protected_paths: vec!["/".into(), "/boot".into(), cfg.state_dir.clone()],
        };
        let golden = GoldenConfig {
            program: cfg.pct.clone(),
            timeout: cfg.pct_timeout,
            output_cap: OUTPUT_CAP,
        };
        let smart = SmartConfig {
            program: cfg.smartctl.clone(),
            timeout: cfg.read_timeout,
            output_cap: OUTPUT_CAP,
        };
        let sensors = SensorsConfig {
            program: cfg.sensors.clone(),
            timeout: cfg.read_timeout,
            output_cap: OUTPUT_CAP,
        };
        Self {
            cfg,
            audit,
            mounts,
            golden,
            smart,
            sensors,
            mount_lock: tokio::sync::Mutex::new(()),
            host_ns,
            golden_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Audits a rejected request and turns the validation error into INVALID_ARGUMENT.
    fn reject(&self, caller: &Caller, op: &str, started: Instant, inv: Invalid) -> Status {
        self.audit.record(
            caller,
            op,
            "",
            &Outcome::Invalid(inv.field),
            started.elapsed(),
        );
        let mut status = Status::invalid_argument(inv.to_string());
        status
            .metadata_mut()
            .insert("felhom-field", MetadataValue::from_static(inv.field));
        status
    }

    /// Audits the result of an operation that passed validation.
    fn finish<T>(
        &self,
        caller: &Caller,
        op: &str,
        args: &str,
        started: Instant,
        result: Result<T, Status>,
    ) -> Result<Response<T>, Status> {
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(status) => Outcome::Failed(status.message().to_owned()),
        };
        self.audit
            .record(caller, op, args, &outcome, started.elapsed());
        result.map(Response::new)
    }
}

fn caller_of<T>(req: &Request<T>) -> Result<Caller, Status> {
    // The peer check runs in front of every service and inserts the caller; its absence
    // means the service was mounted without the check, which must fail closed.
    req.extensions()
        .get::<Caller>()
        .copied()
        .ok_or_else(|| Status::permission_denied("caller was not authenticated"))
}

fn validate_golden(req: &pb::CreateGoldenRequest, cfg: &Config) -> Result<GoldenSpec, Invalid> {
    Ok(GoldenSpec {
        vmid: Vmid::parse(req.vmid, &cfg.golden_vmids)?,
        template: TemplateVolid::parse(&req.template_volid)?,
        hostname: Hostname::parse(&req.hostname)?,
        storage: StorageId::parse("storage", &req.storage)?,
        disk_gib: bounded("disk_gib", req.disk_gib, 1..=1024)?,
        memory_mib: bounded("memory_mib", req.memory_mib, 64..=262_144)?,
        cores: bounded("cores", req.cores, 1..=128)?,
        bridge: req.bridge.as_deref().map(Bridge::parse).transpose()?,
    })
}

fn exec_status(e: &ExecError) -> Status {
    match e {
        ExecError::Timeout { .. } => Status::deadline_exceeded(e.to_string()),
        ExecError::NotAbsolute(_) | ExecError::Spawn { .. } | ExecError::Wait { .. } => {
            Status::internal(e.to_string())
        }
    }
}

fn golden_status(e: &GoldenError) -> Status {
    match e {
        GoldenError::Exec(x) => exec_status(x),
        GoldenError::Failed { .. } => Status::aborted(e.to_string()),
        GoldenError::HostNs(_) => Status::internal(e.to_string()),
    }
}

fn mount_status(e: &MountError) -> Status {
    let msg = e.to_string();
    match e {
        MountError::UuidNotFound(_) | MountError::NotMounted(_) => Status::not_found(msg),
        MountError::DeviceAlreadyMounted { .. } | MountError::MountPointInUse(_) => {
            Status::already_exists(msg)
        }
        MountError::Protected { .. }
        | MountError::Busy(_)
        | MountError::AmbiguousUuid { .. }
        | MountError::WrongFsType { .. }
        | MountError::NotABlockDevice { .. }
        | MountError::NotADirectory(_)
        | MountError::UntrustedDirectory(_) => Status::failed_precondition(msg),
        MountError::MountFailed { .. } | MountError::UnmountFailed { .. } => {
            Status::failed_precondition(msg)
        }
        MountError::Blkid(x) => exec_status(x),
        MountError::BlkidFailed(_)
        | MountError::Io { .. }
        | MountError::Task(_)
        | MountError::HostNs(_) => Status::internal(msg),
    }
}

fn smart_status(e: &SmartError) -> Status {
    match e {
        SmartError::Exec(x) => exec_status(x),
        SmartError::DeviceOpen { .. } => Status::not_found(e.to_string()),
        SmartError::CommandLine(_)
        | SmartError::Signalled
        | SmartError::Parse(_)
        | SmartError::TooLong(_) => Status::internal(e.to_string()),
    }
}

fn sensors_status(e: &SensorsError) -> Status {
    match e {
        SensorsError::Exec(x) => exec_status(x),
        SensorsError::Failed(_) | SensorsError::TooLong(_) | SensorsError::Parse(_) => {
            Status::internal(e.to_string())
        }
    }
}

#[tonic::async_trait]
impl Helper for HelperService {
    async fn create_golden(
        &self,
        request: Request<pb::CreateGoldenRequest>,
    ) -> Result<Response<pb::CreateGoldenResponse>, Status> {
        const OP: &str = "create_golden";
        let started = Instant::now();
        let caller = caller_of(&request)?;
        let spec = validate_golden(request.get_ref(), &self.cfg)
            .map_err(|e| self.reject(&caller, OP, started, e))?;
        let args = spec.argv().join(" ");
        let _guard = self.golden_lock.lock().await;
        let (golden_cfg, job) = (self.golden.clone(), spec.clone());
        let result = self
            .host_ns
            .run(async move { golden::create(&golden_cfg, &job).await })
            .await
            .unwrap_or_else(|e| Err(GoldenError::HostNs(e)))
            .map_err(|e| {
                if let GoldenError::Failed { stderr_tail, .. } = &e {
                    tracing::warn!(stderr = %stderr_tail, "pct create failed");
                }
                golden_status(&e)
            });
        let vmid = spec.vmid.get();
        self.finish(
            &caller,
            OP,
            &args,
            started,
            result.map(|()| pb::CreateGoldenResponse { vmid }),
        )
    }

    async fn mount_by_uuid(
        &self,
        request: Request<pb::MountByUuidRequest>,
    ) -> Result<Response<pb::MountByUuidResponse>, Status> {
        const OP: &str = "mount_by_uuid";
        let started = Instant::now();
        let caller = caller_of(&request)?;
        let req = request.get_ref();
        let validated = (|| {
            Ok::<_, Invalid>((
                FsUuid::parse(&req.fs_uuid)?,
                MountPoint::parse(&req.mount_point, &self.cfg.mount_prefix)?,
                FsType::parse(&req.fs_type)?,
                MountOption::parse_list(&req.options)?,
            ))
        })();
        let (uuid, mp, fs_type, options) =
            validated.map_err(|e| self.reject(&caller, OP, started, e))?;
        let opt_names: Vec<&str> = options.iter().map(|o| o.as_str()).collect();
        let args = format!(
            "fs_uuid={} mount_point={} fs_type={} options={}",
            uuid.as_str(),
            mp.as_path().display(),
            fs_type.as_str(),
            opt_names.join(",")
        );
        let _guard = self.mount_lock.lock().await;
        let mount_cfg = self.mounts.clone();
        let result = self
            .host_ns
            .run(async move { mounts::mount(&mount_cfg, &uuid, &mp, fs_type, &options).await })
            .await
            .unwrap_or_else(|e| Err(MountError::HostNs(e)))
            .map(|m| pb::MountByUuidResponse {
                mount: Some(mounts::to_proto(&m)),
            })
            .map_err(|e| mount_status(&e));
        self.finish(&caller, OP, &args, started, result)
    }

    async fn unmount(
        &self,
        request: Request<pb::UnmountRequest>,
    ) -> Result<Response<pb::UnmountResponse>, Status> {
        const OP: &str = "unmount";
        let started = Instant::now();
        let caller = caller_of(&request)?;
        let req = request.get_ref();
        let mp = MountPoint::parse(&req.mount_point, &self.cfg.mount_prefix)
            .map_err(|e| self.reject(&caller, OP, started, e))?;
        let args = format!("mount_point={} lazy={}", mp.as_path().display(), req.lazy);
        let _guard = self.mount_lock.lock().await;
        let (mount_cfg, lazy) = (self.mounts.clone(), req.lazy);
        let result = self
            .host_ns
            .run(async move { mounts::unmount(&mount_cfg, &mp, lazy).await })
            .await
            .unwrap_or_else(|e| Err(MountError::HostNs(e)))
            .map(|()| pb::UnmountResponse {})
            .map_err(|e| mount_status(&e));
        self.finish(&caller, OP, &args, started, result)
    }

    async fn list_mounts(
        &self,
        request: Request<pb::ListMountsRequest>,
    ) -> Result<Response<pb::ListMountsResponse>, Status> {
        const OP: &str = "list_mounts";
        let started = Instant::now();
        let caller = caller_of(&request)?;
        let mount_cfg = self.mounts.clone();
        let result = self
            .host_ns
            .run(async move { mounts::list(&mount_cfg) })
            .await
            .unwrap_or_else(|e| Err(MountError::HostNs(e)))
            .map(|ms| pb::ListMountsResponse {
                mounts: ms.iter().map(mounts::to_proto).collect(),
            })
            .map_err(|e| mount_status(&e));
        self.finish(&caller, OP, "", started, result)
    }

    async fn read_smart(
        &self,
        request: Request<pb::ReadSmartRequest>,
    ) -> Result<Response<pb::SmartReport>, Status> {
        const OP: &str = "read_smart";
        let started = Instant::now();
        let caller = caller_of(&request)?;
        let device = DevicePath::parse(&request.get_ref().device)
            .map_err(|e| self.reject(&caller, OP, started, e))?;
        let args = format!("device={}", device.as_str());
        let result = smart::read(&self.smart, &device)
            .await
            .map_err(|e| smart_status(&e));
        self.finish(&caller, OP, &args, started, result)
    }

    async fn read_sensors(
        &self,
        request: Request<pb::ReadSensorsRequest>,
    ) -> Result<Response<pb::SensorsReport>, Status> {
        const OP: &str = "read_sensors";
        let started = Instant::now();
        let caller = caller_of(&request)?;
        let result = sensors::read(&self.sensors)
            .await
            .map_err(|e| sensors_status(&e));
        self.finish(&caller, OP, "", started, result)
    }
}
