//! `felhom-pbssim`: run the simulated Proxmox Backup Server as its own process.
//!
//! Listens on loopback only, prints one ready line to stdout once serving, optionally writes a
//! state JSON (`{url, fingerprint, node, datastore, tokens: {authid: "authid:secret"}}`, mode
//! 0600, written via a temp file and rename) for other processes, and stops cleanly on SIGTERM
//! or SIGINT.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use felhom_simhost::pbs::{PbsFixture, PbsSim, PbsSimOptions};

/// Simulated Proxmox Backup Server for tests (loopback only).
#[derive(Debug, Parser)]
#[command(name = "felhom-pbssim", version)]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Fixture JSON (default: the embedded default server).
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Write the state JSON here once listening (mode 0600).
    #[arg(long)]
    state_json: Option<PathBuf>,
    /// How long tasks stay running, in milliseconds.
    #[arg(long, default_value_t = 300)]
    task_duration_ms: u64,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("felhom-pbssim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() {
        bail!(
            "--listen {} is not a loopback address; the simulator only serves 127.0.0.0/8 or ::1",
            args.listen
        );
    }
    let fixture = match &args.fixture {
        Some(path) => PbsFixture::from_file(path)?,
        None => PbsFixture::default_host(),
    };
    let runtime = tokio::runtime::Runtime::new().context("Cannot start the async runtime")?;
    runtime.block_on(serve(args, fixture))
}

async fn serve(args: Args, fixture: PbsFixture) -> anyhow::Result<()> {
    let sim = PbsSim::start(PbsSimOptions {
        listen: args.listen,
        fixture,
        task_duration: Duration::from_millis(args.task_duration_ms),
        ..PbsSimOptions::default()
    })
    .await?;
    if let Some(state_path) = &args.state_json {
        let tokens: BTreeMap<String, String> = sim
            .state()
            .token_ids()
            .into_iter()
            .filter_map(|a| sim.token(&a).map(|t| (a, t)))
            .collect();
        let state = serde_json::json!({
            "url": sim.url(),
            "fingerprint": sim.fingerprint(),
            "node": sim.node(),
            "datastore": sim.datastore(),
            "tokens": tokens,
        });
        write_private(state_path, serde_json::to_string_pretty(&state)?.as_bytes())?;
    }
    println!(
        "felhom-pbssim ready: url={} node={} fingerprint={}",
        sim.url(),
        sim.node(),
        sim.fingerprint()
    );
    std::io::stdout()
        .flush()
        .context("Cannot write to stdout")?;

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("Cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    sim.shutdown().await;
    Ok(())
}

/// Writes `data` to `path` with mode 0600 via a temp file and rename, so readers never see a
/// half-written file.
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("Cannot create {}", tmp.display()))?;
    f.write_all(data)
        .with_context(|| format!("Cannot write {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("Cannot flush {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("Cannot move into {}", path.display()))?;
    Ok(())
}
