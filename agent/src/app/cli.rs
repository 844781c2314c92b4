//! The `felhom-agent` command line: the daemon and its maintenance commands. The binary's
//! `main` is [`main`]; it lives in the library so the simulated host can run the very same code
//! as a separate process.

use crate::core::error_chain;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::app::config::{Config, ProcessEnv};
use crate::capabilities::selftest;
use crate::infra::pve::{PveClient, Vmid, WaitOptions};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

/// felhom host agent.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (default: $FELHOM_AGENT_CONFIG or /etc/felhom/agent.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent daemon (as the felhom-agent user; never as root).
    Run,
    /// Check the Proxmox VE connection, token and privileges (read-only unless --task).
    Selftest {
        /// Also run snapshot -> rollback -> delete snapshot on the guest given by --vmid. The
        /// rollback briefly stops a running guest and starts it again.
        #[arg(long, requires = "vmid")]
        task: bool,
        /// Guest for --task.
        #[arg(long, requires = "task")]
        vmid: Option<u32>,
    },
    /// Set this Proxmox VE host up for the agent: role, user, token, ACLs, agent.toml,
    /// allowed_signers, escrow (run once as root; running it again changes nothing).
    Enroll(Box<crate::app::enroll_cmd::EnrollArgs>),
    /// The PBS key escrow under a customer recovery code (run as root on the host).
    Escrow {
        #[command(subcommand)]
        command: crate::app::escrow_cmd::EscrowCommand,
    },
}

/// Exit codes: 0 success, 1 a check or operation failed, 2 configuration or usage error.
#[derive(Debug, Clone, Copy)]
enum Exit {
    Ok = 0,
    Failed = 1,
    Config = 2,
}

/// Entry point of `felhom-agent`.
pub fn main() -> ExitCode {
    main_from(std::env::args_os())
}

/// Entry point with explicit arguments (the first is the program name).
pub fn main_from(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = Cli::parse_from(args);
    init_logging();
    let code = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => {
            let text = format!("cannot start the async runtime: {e}");
            eprintln!("felhom-agent: {text}");
            status_on_exit(&text);
            Exit::Failed
        }
    };
    ExitCode::from(code as u8)
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FELHOM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: under systemd stderr is the journal, where escape codes
    // would land in every line (as the helper already does).
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run(cli: Cli) -> Exit {
    match cli.command {
        Command::Run => match load(cli.config.as_deref(), true) {
            Ok(config) => run_daemon(config).await,
            Err(exit) => exit,
        },
        Command::Selftest { task, vmid } => match load(cli.config.as_deref(), false) {
            Ok(config) => selftest_cmd(&config, task, vmid).await,
            Err(exit) => exit,
        },
        Command::Enroll(args) => match crate::app::enroll_cmd::run(&args).await {
            0 => Exit::Ok,
            _ => Exit::Failed,
        },
        Command::Escrow { command } => {
            // Root-run: only the [backup] tiers, never the agent's secrets.
            match Config::load_backup_view(cli.config.as_deref(), &ProcessEnv) {
                Ok(view) => match crate::app::escrow_cmd::run(&view, command) {
                    0 => Exit::Ok,
                    2 => Exit::Config,
                    _ => Exit::Failed,
                },
                Err(e) => {
                    eprintln!("felhom-agent: configuration error: {}", error_chain(&e));
                    Exit::Config
                }
            }
        }
    }
}

/// The whole configuration; for the daemon an error also goes to systemd's status line.
fn load(path: Option<&std::path::Path>, daemon: bool) -> Result<Config, Exit> {
    Config::load(path, &ProcessEnv).map_err(|e| {
        let text = format!("configuration error: {}", error_chain(&e));
        eprintln!("felhom-agent: {text}");
        if daemon {
            status_on_exit(&text);
        }
        Exit::Config
    })
}

async fn selftest_cmd(config: &Config, task: bool, vmid: Option<u32>) -> Exit {
    let px = match config.require_proxmox() {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "felhom-agent: Proxmox VE is not configured ({e}); set [proxmox] endpoint, node, token_file and a TLS trust in the config file"
            );
            return Exit::Config;
        }
    };
    let pve = match PveClient::new(px.client.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("felhom-agent: {}", error_chain(&e));
            return Exit::Config;
        }
    };
    let report = selftest::read_only(&pve, &px.client.trust).await;
    println!("{report}");
    if !report.ok() {
        return Exit::Failed;
    }
    if !task {
        return Exit::Ok;
    }
    let Some(vmid) = vmid else {
        return Exit::Config;
    };
    let vmid = match Vmid::new(vmid) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("felhom-agent: --vmid: {e}");
            return Exit::Config;
        }
    };
    println!("task round trip on guest {vmid} (snapshot -> rollback -> delete snapshot):");
    let wait = WaitOptions {
        deadline: px.task_deadline,
        ..WaitOptions::default()
    };
    let cancel = CancellationToken::new();
    let ctrl_c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            ctrl_c.cancel();
        }
    });
    let result = selftest::task_round_trip(&pve, vmid, &wait, &cancel, |s| {
        println!(
            "{} {:<40} {}",
            if s.ok { "ok  " } else { "FAIL" },
            s.name,
            s.detail
        );
    })
    .await;
    match result {
        Ok(_) => {
            println!("task round trip passed");
            Exit::Ok
        }
        Err(_) => {
            println!("task round trip FAILED");
            Exit::Failed
        }
    }
}

async fn run_daemon(config: Config) -> Exit {
    use tokio::signal::unix::{SignalKind, signal};
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            let text = format!("cannot install signal handlers: {e}");
            eprintln!("felhom-agent: {text}");
            status_on_exit(&text);
            return Exit::Failed;
        }
    };
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        trigger.cancel();
    });
    // Boxed: the daemon's future holds both servers and is large.
    match Box::pin(crate::app::daemon::run(config, shutdown)).await {
        Ok(()) => Exit::Ok,
        Err(e) => {
            let text = error_chain(&e);
            eprintln!("felhom-agent: {text}");
            status_on_exit(&text);
            match e {
                crate::app::daemon::DaemonError::RunningAsRoot => Exit::Config,
                _ => Exit::Failed,
            }
        }
    }
}

/// Tells systemd why the daemon is exiting (`STATUS=`), so `systemctl status` shows the error
/// instead of the last progress message (e.g. "recovering interrupted operations"). Outside
/// systemd (no `NOTIFY_SOCKET`) this does nothing.
fn status_on_exit(text: &str) {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Status(text)]) {
        eprintln!("felhom-agent: cannot notify systemd: {e}");
    }
}
