//! `felhom-pbssim`: run the simulated Proxmox Backup Server as its own process.
//!
//! Listens on loopback only, prints one ready line to stdout once serving, optionally writes a
//! state JSON (`{url, fingerprint, node, datastore, tokens: {authid: "authid:secret"}}`, mode
//! 0600, written via a temp file and rename) for other processes, and stops cleanly on SIGTERM
//! or SIGINT.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use felhom_simhost::pbs::{PbsFixture, PbsSim, PbsSimOptions};
use felhom_simhost::sim_bin::{self, announce_and_wait, require_loopback, write_private};

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
    sim_bin::main("felhom-pbssim", run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    require_loopback(args.listen)?;
    let fixture = match &args.fixture {
        Some(path) => PbsFixture::from_file(path)?,
        None => PbsFixture::default_host(),
    };
    sim_bin::block_on(serve(args, fixture))
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
    announce_and_wait("felhom-pbssim", sim.url(), &sim.node(), sim.fingerprint()).await?;
    sim.shutdown().await;
    Ok(())
}
