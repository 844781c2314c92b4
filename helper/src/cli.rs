//! The felhom-helper program: clean the process, check identity, bind, drop privileges,
//! serve. [`main_from`] is the whole `main` of the binary, also called by the simulated
//! host's devhost to run the helper from its own executable.

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::Arc;

use crate::{audit::Audit, config::Cli, hostns::HostNs, notify, privilege, server};
use anyhow::Context as _;
use clap::Parser as _;

/// Runs the helper with `args` (program name first, like `std::env::args_os`). Must be the
/// first thing the process does: it closes inherited descriptors and resets the environment
/// while the process is still single-threaded.
pub fn main_from<I>(args: I) -> ExitCode
where
    I: IntoIterator<Item = OsString>,
{
    let args: Vec<OsString> = args.into_iter().collect();
    // First, while single-threaded: close inherited fds and reset the environment.
    let start_env = privilege::sanitize_process();
    let filter = start_env
        .rust_log
        .clone()
        .unwrap_or_else(|| "info".to_owned());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(args, start_env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole error chain, once.
            eprintln!("felhom-helper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<OsString>, start_env: privilege::StartEnv) -> anyhow::Result<()> {
    let cfg = Cli::parse_from(args).into_config()?;
    privilege::require_root(cfg.unprivileged_dev)?;
    if cfg.unprivileged_dev {
        tracing::warn!(
            "RUNNING WITH --unprivileged-dev: simulated host only; socket not chowned, capabilities untouched"
        );
    }
    let audit =
        Arc::new(Audit::open(cfg.audit_file.as_deref()).context("Cannot open the audit file")?);
    // Bind and drop capabilities while still single-threaded: capability sets (bounding
    // included) are per thread and inherited by threads created later, so the runtime's
    // worker threads start with the reduced sets.
    let listener = server::bind(&cfg)?;
    // The host-namespace thread is created before the drop: setns(CLONE_NEWNS) needs
    // CAP_SYS_ADMIN and CAP_SYS_CHROOT, and the thread drops its own sets right after joining.
    // The simulated host (--unprivileged-dev) mounts nothing for real and may not open
    // another process's namespace: it stays in its own.
    let ns_path = if cfg.unprivileged_dev {
        std::path::Path::new("/proc/thread-self/ns/mnt")
    } else {
        cfg.host_mount_ns.as_path()
    };
    let host_ns = HostNs::start(ns_path, !cfg.unprivileged_dev)
        .context("Cannot reach the host mount namespace")?;
    tracing::info!(ns = %ns_path.display(), joined = ?host_ns.joined(), "host mount namespace");
    if !cfg.unprivileged_dev {
        privilege::drop_capabilities()?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("Cannot start the async runtime")?;
    runtime.block_on(async move {
        tracing::info!(socket = %cfg.socket.display(), agent_uid = cfg.agent_uid, "felhom-helper ready");
        if let Some(sock) = &start_env.notify_socket {
            notify::ready(sock).context("Cannot notify systemd")?;
            if let Some(interval) = start_env.watchdog {
                tracing::info!(interval = ?interval, "petting the systemd watchdog");
                tokio::spawn(notify::pet_watchdog(sock.clone(), interval));
            }
        }
        let shutdown = async {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM; stop with SIGKILL");
                    std::future::pending::<()>().await;
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down");
        };
        let socket = cfg.socket.clone();
        server::serve_in(listener, Arc::new(cfg), audit, host_ns, shutdown).await?;
        let _ = std::fs::remove_file(socket);
        Ok::<(), anyhow::Error>(())
    })
}
