//! `felhom-pvesim`: run the simulated Proxmox VE node as its own process.
//!
//! Listens on loopback only, prints one ready line to stdout once serving, optionally writes
//! a state JSON (`{url, fingerprint, ca_pem_path, node, tokens:{authid: token}}`, mode 0600)
//! for other processes to pick up, and stops cleanly on SIGINT/SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use felhom_simhost::pve::{Fixture, PveSim, PveSimOptions};
use felhom_simhost::sim_bin::{self, announce_and_wait, require_loopback, write_private};

/// Simulated Proxmox VE node for tests (loopback only).
#[derive(Debug, Parser)]
#[command(name = "felhom-pvesim", version)]
struct Args {
    /// Address to listen on (loopback only).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Fixture JSON (default: the embedded default host).
    #[arg(long)]
    fixture: Option<PathBuf>,
    /// Write the state JSON here once listening (mode 0600).
    #[arg(long)]
    state_json: Option<PathBuf>,
    /// Write the CA PEM here (default with --state-json: `<state-json>.ca.pem`).
    #[arg(long)]
    ca_pem: Option<PathBuf>,
    /// How long tasks stay running, in milliseconds.
    #[arg(long, default_value_t = 300)]
    task_duration_ms: u64,
    /// Delay before answering a 401, in milliseconds (real pveproxy: 3000).
    #[arg(long, default_value_t = 0)]
    unauthorized_delay_ms: u64,
}

fn main() -> ExitCode {
    sim_bin::main("felhom-pvesim", run)
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    require_loopback(args.listen)?;
    let fixture = match &args.fixture {
        Some(path) => Fixture::from_file(path)?,
        None => Fixture::default_host(),
    };
    sim_bin::block_on(serve(args, fixture))
}

async fn serve(args: Args, fixture: Fixture) -> anyhow::Result<()> {
    let tokens: Vec<String> = fixture.tokens.iter().map(|t| t.authid.clone()).collect();
    let sim = PveSim::start(PveSimOptions {
        listen: args.listen,
        fixture,
        task_duration: Duration::from_millis(args.task_duration_ms),
        unauthorized_delay: Duration::from_millis(args.unauthorized_delay_ms),
        pbs_link: None,
        priv_dir: None,
    })
    .await?;
    if let Some(state_path) = &args.state_json {
        let ca_path = args.ca_pem.clone().unwrap_or_else(|| {
            let mut p = state_path.clone().into_os_string();
            p.push(".ca.pem");
            PathBuf::from(p)
        });
        write_private(&ca_path, sim.ca_pem().as_bytes())?;
        let token_map: BTreeMap<&str, String> = tokens
            .iter()
            .filter_map(|a| sim.token(a).map(|t| (a.as_str(), t)))
            .collect();
        let state = serde_json::json!({
            "url": sim.url(),
            "fingerprint": sim.fingerprint(),
            "ca_pem_path": ca_path,
            "node": sim.node(),
            "tokens": token_map,
        });
        write_private(state_path, serde_json::to_string_pretty(&state)?.as_bytes())?;
    } else if let Some(ca_path) = &args.ca_pem {
        write_private(ca_path, sim.ca_pem().as_bytes())?;
    }
    announce_and_wait("felhom-pvesim", sim.url(), &sim.node(), sim.fingerprint()).await?;
    sim.shutdown().await;
    Ok(())
}
