//! `felhom-agent run`: the long-running agent.
//!
//! Start-up order matters and is fixed here: check identity (never root) → load config (done by
//! the caller) → connect the Proxmox client → recover interrupted operations → bind the two
//! gRPC sockets (`agent.sock` 0660 operator group: the `Agent` service; `localapi.sock` 0600:
//! the guests' `LocalApi`) → start the local API gateway (if `[local_api] listen` names
//! addresses; it calls the LocalApi service in process) → tell systemd READY=1 → serve. SIGTERM/SIGINT
//! stop accepting new calls and let in-flight calls finish, the gateway first (its requests are
//! gRPC calls in flight); the watchdog is petted at half its interval while the runtime is
//! healthy. A gateway that cannot start (address in use, unreadable certificate) stops the
//! daemon: an operator who configured it wants to know, and systemd shows why. Finished history
//! is pruned ([`crate::infra::state::retention`], default policy) once after start and then
//! every [`PRUNE_EVERY`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use felhom_localapi_gateway::{Gateway, GatewayConfig, in_process};
use tokio_util::sync::CancellationToken;

use std::sync::Arc;

use crate::app::config::Config;
use crate::app::context::{AgentContext, BackupSetup, ContextError, GuestSetup};
use crate::app::listen_policy::{self, ListenError};
use crate::capabilities::backup::service::PbsTarget;
use crate::capabilities::records::guest_ledger::GuestAuditPolicy;
use crate::frontends::grpc;
use crate::infra::pbs::{PbsClient, PbsError};
use crate::infra::pve::{PveClient, PveError, WaitOptions};
use crate::infra::state::{Retention, StateDb};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(
        "felhom-agent must not run as root (uid 0); run it as the '{}' user (the systemd unit does)",
        crate::app::paths::AGENT_USER
    )]
    RunningAsRoot,
    #[error("cannot create the socket directory {path}")]
    SocketDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("socket group '{0}' does not exist")]
    UnknownGroup(String),
    #[error("cannot set owner or mode of {path}")]
    SocketPerms {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the Proxmox VE client")]
    Pve(#[source] PveError),
    #[error("invalid Proxmox Backup Server settings")]
    Pbs(#[source] PbsError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Serve(#[from] grpc::ServeError),
    #[error("cannot create the local API certificate directory {path}")]
    CertificateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the local API gateway")]
    Gateway(#[source] felhom_localapi_gateway::StartError),
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// Refuses to run as root: the agent holds a network-facing token and parses remote input.
pub fn check_identity() -> Result<(), DaemonError> {
    if nix::unistd::geteuid().is_root() {
        return Err(DaemonError::RunningAsRoot);
    }
    Ok(())
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    check_identity()?;
    // Before anything starts: a refused listen address stops the agent with nothing changed.
    let local_api = &config.local_api;
    if !local_api.listen.is_empty() {
        let policy = &local_api.listen_policy;
        if policy.allow_any_address {
            tracing::warn!(
                listen = ?local_api.listen,
                "[local_api] allow_any_address is set: the guests' API may listen beyond loopback and the bridges"
            );
        }
        listen_policy::check(
            &local_api.listen,
            policy,
            &listen_policy::host_interfaces()?,
        )?;
    }
    let (pve, wait) = match &config.proxmox {
        Some(px) => (
            Some((
                PveClient::new(px.client.clone()).map_err(DaemonError::Pve)?,
                px.client.trust.clone(),
            )),
            WaitOptions {
                deadline: px.task_deadline,
                ..WaitOptions::default()
            },
        ),
        None => {
            tracing::warn!("Proxmox VE is not configured; operator calls that need it will fail");
            (None, WaitOptions::default())
        }
    };
    let db = StateDb::open(&config.agent.state_dir).map_err(ContextError::State)?;
    let ctx = Arc::new(
        AgentContext::start_on(
            db,
            pve,
            wait,
            GuestSetup {
                storage_classes: config.local_api.storage_classes.clone(),
                snapshot_limits: config.snapshots,
            },
            BackupSetup {
                settings: config.backup.clone(),
                pbs: match &config.pbs {
                    Some(p) => Some(PbsTarget {
                        client: PbsClient::new(p.client.clone()).map_err(DaemonError::Pbs)?,
                        datastore: p.datastore.clone(),
                        namespace: p.namespace.clone(),
                    }),
                    None => None,
                },
            },
            GuestAuditPolicy {
                budget_per_hour: config.local_api.audit_budget_per_hour,
                ..GuestAuditPolicy::default()
            },
        )
        .await?,
    );
    // Before the socket exists, so no ProvisionGuest can touch a guest whose interrupted
    // operation is still being finished or rolled back.
    // Restore-tests are journaled operations too: this destroys a scratch guest a crash left.
    // It may wait on a long Proxmox task (a large restore): systemd's start timeout is
    // extended meanwhile, and SIGTERM ends the waits (what is left resumes at the next start).
    let extender = spawn_start_extender();
    crate::capabilities::guests::provision::recover(
        ctx.pve.as_ref(),
        &ctx.db,
        &ctx.wait,
        &shutdown,
    )
    .await;
    extender.abort();
    if shutdown.is_cancelled() {
        tracing::info!("stopped during start-up recovery");
        return Ok(());
    }
    match ctx
        .db
        .run(|db| {
            db.backups()
                .close_unfinished("interrupted by an agent restart")
        })
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            rows = n,
            "closed backup/restore-test/verify records a previous run left open"
        ),
        Err(e) => tracing::error!(error = %e, "cannot close unfinished backup records"),
    }
    let queue = ctx.queue.clone();
    let socket = &config.agent.socket;
    let local_socket = &config.agent.local_api_socket;
    for dir in [socket.parent(), local_socket.parent()]
        .into_iter()
        .flatten()
    {
        std::fs::create_dir_all(dir).map_err(|source| DaemonError::SocketDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let remove_sockets = || {
        // Best effort: a later start removes a stale socket anyway.
        let _ = std::fs::remove_file(socket);
        let _ = std::fs::remove_file(local_socket);
    };
    let bound = (|| {
        let listener = grpc::bind_unix(socket)?;
        set_socket_access(socket, config.agent.socket_group.as_deref(), 0o660)?;
        let local_listener = grpc::bind_unix(local_socket)?;
        // Only the agent itself (its embedded gateway) — or a standalone gateway's group —
        // may call the guests' service: an operator must not be able to act as a guest.
        match config.agent.local_api_socket_group.as_deref() {
            Some(group) => set_socket_access(local_socket, Some(group), 0o660)?,
            None => set_socket_access(local_socket, None, 0o600)?,
        }
        Ok::<_, DaemonError>((listener, local_listener))
    })();
    let (listener, local_listener) = match bound {
        Ok(l) => l,
        Err(e) => {
            remove_sockets();
            return Err(e);
        }
    };
    tracing::info!(socket = %socket.display(), local_api_socket = %local_socket.display(), "serving gRPC");
    if let Err(e) = start_gateway(&config, &ctx).await {
        remove_sockets();
        return Err(e);
    }

    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("serving"),
    ]);
    let watchdog = spawn_watchdog(shutdown.clone());
    let scheduler = tokio::spawn(crate::frontends::scheduler::run(
        ctx.capabilities.backup.service().clone(),
        shutdown.clone(),
    ));
    let pruner = spawn_pruner(ctx.db.clone(), shutdown.clone());

    let gateway = ctx.local_api_gateway.clone();
    // Both servers stop on SIGTERM, or as soon as either fails (a server that died must not
    // leave the daemon half-serving with READY=1 and the watchdog still petted). The gateway
    // stops first: its in-flight requests are calls on the LocalApi server.
    let stop = shutdown.child_token();
    let agent_server = grpc::serve_agent(
        listener,
        ctx.capabilities.clone(),
        ctx.local_api_gateway.clone(),
        {
            let stop = stop.clone();
            async move {
                stop.cancelled().await;
                notify(&[sd_notify::NotifyState::Stopping]);
                tracing::info!("shutting down: finishing in-flight calls");
            }
        },
    );
    let local_server = grpc::serve_local_api(local_listener, ctx.capabilities.clone(), {
        let stop = stop.clone();
        async move {
            stop.cancelled().await;
            gateway.shutdown().await;
        }
    });
    let (agent_result, local_result) = tokio::join!(
        stop_on_error(agent_server, &stop),
        stop_on_error(local_server, &stop)
    );
    let report = queue.shutdown().await;
    if !report.never_started.is_empty() {
        tracing::warn!(
            jobs = report.never_started.len(),
            "queued jobs were not started before shutdown"
        );
    }
    watchdog.abort();
    scheduler.abort();
    pruner.abort();
    remove_sockets();
    agent_result.and(local_result).map_err(DaemonError::from)
}

/// How often finished history is pruned.
pub const PRUNE_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Prunes finished history now and every [`PRUNE_EVERY`] until `shutdown`. A failed prune is
/// logged and tried again next time: the history only grows meanwhile.
fn spawn_pruner(db: StateDb, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match db.run(|db| db.retention().run(Retention::default())).await {
                Ok(pruned) if pruned.is_empty() => {}
                Ok(pruned) => tracing::info!(
                    jobs = pruned.jobs,
                    operations = pruned.operations,
                    idempotency_keys = pruned.idempotency_keys,
                    audit_rows = pruned.audit_rows,
                    "pruned finished history"
                ),
                Err(e) => tracing::warn!(
                    error = %crate::core::error_chain(&e),
                    "cannot prune finished history"
                ),
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(PRUNE_EVERY) => {}
            }
        }
    })
}

/// Runs `server`; when it fails, cancels `stop` so the other server stops too.
async fn stop_on_error(
    server: impl std::future::Future<Output = Result<(), grpc::ServeError>>,
    stop: &CancellationToken,
) -> Result<(), grpc::ServeError> {
    let result = server.await;
    if result.is_err() {
        stop.cancel();
    }
    result
}

/// Starts the embedded gateway when listen addresses are configured, with a LocalApi client on
/// the agent's own socket, and puts it into the context's slot.
async fn start_gateway(config: &Config, ctx: &AgentContext) -> Result<(), DaemonError> {
    let settings = &config.local_api;
    if settings.listen.is_empty() {
        tracing::info!("local API gateway is off ([local_api] listen is empty)");
        return Ok(());
    }
    let dir = &settings.certificate_dir;
    let dir_error = |source| DaemonError::CertificateDir {
        path: dir.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(dir_error)?;
    // The private key lives here: only the agent may read or list it.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(dir_error)?;
    let mut gateway_config = GatewayConfig::new(settings.listen.clone(), dir.clone());
    gateway_config.limits = settings.limits.clone();
    // Embedded: the gateway calls the LocalApi service in this process (the same service, and
    // so the same authentication and answers, as on localapi.sock, without the socket hop).
    let client = in_process(grpc::local_api_service(ctx.capabilities.clone()));
    let gateway = Gateway::start(gateway_config, client)
        .await
        .map_err(DaemonError::Gateway)?;
    let pins = gateway.pins();
    tracing::info!(
        addrs = ?gateway.local_addrs(),
        leaf_sha256 = %pins.leaf_sha256_hex,
        "local API gateway started"
    );
    ctx.local_api_gateway.set(gateway);
    Ok(())
}

/// Socket access is the authorization of each surface: the owner (agent) and, with `mode` 0660,
/// the given group may connect, nobody else.
///
/// Under the packaged unit a socket is born with its group: /run/felhom is setgid felhom-ops
/// (tmpfiles.d/felhom.conf), and the unit's system-call filter denies chown(2) (`~@privileged`
/// includes `@chown`), so the agent only checks the group there. The chown remains for other
/// directories (devhost, manual runs, a standalone gateway's socket directory), where the
/// unit's filter does not apply or the group must differ from the directory's.
fn set_socket_access(socket: &Path, group: Option<&str>, mode: u32) -> Result<(), DaemonError> {
    if let Some(name) = group {
        let gid = nix::unistd::Group::from_name(name)
            .map_err(|e| DaemonError::SocketPerms {
                path: socket.to_owned(),
                source: e.into(),
            })?
            .ok_or_else(|| DaemonError::UnknownGroup(name.to_owned()))?
            .gid;
        let perms_error = |source| DaemonError::SocketPerms {
            path: socket.to_owned(),
            source,
        };
        let current = std::fs::metadata(socket).map_err(perms_error)?;
        let born_with_group = std::os::unix::fs::MetadataExt::gid(&current) == gid.as_raw();
        if !born_with_group {
            nix::unistd::chown(socket, None, Some(gid)).map_err(|e| DaemonError::SocketPerms {
                path: socket.to_owned(),
                source: e.into(),
            })?;
        }
    }
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        DaemonError::SocketPerms {
            path: socket.to_owned(),
            source,
        }
    })
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// While start-up recovery runs: tells systemd what the agent is doing and keeps extending its
/// start timeout (`EXTEND_TIMEOUT_USEC`, relative to each message), so a recovery that waits on
/// a long task is not killed and restarted in a loop. Outside systemd the messages go nowhere.
fn spawn_start_extender() -> tokio::task::JoinHandle<()> {
    const EVERY: Duration = Duration::from_secs(20);
    const EXTEND_USEC: u32 = 60_000_000;
    tokio::spawn(async move {
        loop {
            notify(&[
                sd_notify::NotifyState::Status("recovering interrupted operations"),
                sd_notify::NotifyState::ExtendTimeoutUsec(EXTEND_USEC),
            ]);
            tokio::time::sleep(EVERY).await;
        }
    })
}

/// Pets the systemd watchdog at half its interval. The ping comes from the async runtime, so a
/// wedged runtime stops petting and systemd restarts the agent.
fn spawn_watchdog(shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
    let interval = sd_notify::watchdog_enabled().map(|d| d / 2);
    tokio::spawn(async move {
        let Some(every) = interval else { return };
        let every = every.max(Duration::from_millis(100));
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => notify(&[sd_notify::NotifyState::Watchdog]),
            }
        }
    })
}
