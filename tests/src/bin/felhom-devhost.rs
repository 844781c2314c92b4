//! `felhom-devhost`: run the product against the simulated Proxmox host on loopback.
//!
//! `cargo run -p felhom-simhost --bin felhom-devhost [-- --state-dir DIR]`; Ctrl-C stops it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use felhom_simhost::devhost::{AGENT_ENTRY, Devhost, DevhostOptions};

/// Starts the simulated Proxmox VE and the felhom agent on loopback.
#[derive(Debug, Parser)]
#[command(name = "felhom-devhost", version)]
struct Args {
    /// State directory (default: a new temporary directory, removed on exit).
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Port of the guests' local API on 127.0.0.1 (0: any free port).
    #[arg(long, default_value_t = 0)]
    local_api_port: u16,
}

fn main() -> ExitCode {
    let mut argv = std::env::args_os();
    let program = argv.next().unwrap_or_default();
    let rest: Vec<_> = argv.collect();
    // Hidden entries for the helper and its stand-ins, first, while single-threaded.
    if let Some(code) = felhom_simhost::devhost_helper::dispatch(&program, &rest) {
        return code;
    }
    if rest.first().is_some_and(|a| a == AGENT_ENTRY) {
        // Child process: be the agent.
        return felhom_agent::app::cli::main_from(
            std::iter::once(program.clone()).chain(rest.into_iter().skip(1)),
        );
    }
    let args = Args::parse_from(std::iter::once(program).chain(rest));
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("felhom-devhost: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("felhom-devhost: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let (dir, _temp) = match args.state_dir {
        Some(d) => (d, None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("felhom-devhost-")
                .tempdir()?;
            (t.path().to_owned(), Some(t))
        }
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let host = Devhost::start_with(
        &dir,
        &DevhostOptions {
            local_api_port: args.local_api_port,
            backup_schedules: true,
            ..Default::default()
        },
    )
    .await?;
    let i = &host.info;
    let config = i.state_dir.join("agent.toml");
    let selftest = felhom_agent::ctl::selftest(&i.agent_socket).await;
    println!(
        "felhom devhost is up (state directory {})",
        i.state_dir.display()
    );
    println!(
        "  simulated Proxmox VE  {} (fingerprint {})",
        i.pve_url, i.pve_fingerprint
    );
    println!(
        "  simulated PBS         {} datastore {} (fingerprint {}), behind storage {}",
        i.pbs_url,
        i.pbs_datastore,
        i.pbs_fingerprint,
        felhom_simhost::devhost::PBS_STORAGE
    );
    println!(
        "  agent                 pid {} as uid {}, socket {}",
        i.agent_pid,
        i.agent_uid,
        i.agent_socket.display()
    );
    println!(
        "  helper                pid {}, socket {} (admits uid {} and root)",
        i.helper_pid,
        i.helper_socket.display(),
        i.agent_uid
    );
    println!(
        "  local API (guests)    https://{} (leaf sha256 {})",
        i.local_api_endpoint, i.local_api_pin_sha256
    );
    for g in &i.guests {
        println!(
            "  demo guest            {} ({}), token in devhost.json",
            g.vmid, g.name
        );
    }
    println!(
        "  everything above      {}",
        i.state_dir.join("devhost.json").display()
    );
    match selftest {
        Ok(out) => println!("\nselftest through the agent socket:\n{}", out.table()),
        Err(e) => println!("\nselftest through the agent socket failed: {e}"),
    }
    println!("\nTry:");
    println!(
        "  cargo run -q -p felhom-agent --bin felhomctl -- --socket {} list",
        i.agent_socket.display()
    );
    println!(
        "  cargo run -q -p felhom-agent --bin felhomctl -- --socket {} call felhom.agent.v1.Agent/ListGuests",
        i.agent_socket.display()
    );
    println!(
        "  cargo run -q -p felhom-agent --bin felhomctl -- --socket {} backup now --vmid 102 --wait",
        i.agent_socket.display()
    );
    println!(
        "  cargo run -q -p felhom-agent --bin felhomctl -- --socket {} restore-test run --vmid 102 --wait",
        i.agent_socket.display()
    );
    println!(
        "  grpcurl -plaintext -authority localhost -unix {} list",
        i.agent_socket.display()
    );
    println!(
        "  FELHOM_AGENT_CONFIG={} cargo run -q -p felhom-agent -- selftest",
        config.display()
    );
    if !i.guests.is_empty() {
        // Tokens are not printed: the line reads guest 101's token from devhost.json (0600).
        // The leaf is self-signed: --insecure drops curl's CA and name check, the pin stays
        // enforced (curl aborts before sending anything on a mismatch).
        println!(
            "  curl --pinnedpubkey 'sha256//{}' --insecure -H \"Authorization: Bearer $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"guests\"][0][\"token\"])' {})\" https://{}/storage",
            i.local_api_pin_spki_sha256,
            i.state_dir.join("devhost.json").display(),
            i.local_api_endpoint
        );
    }
    println!("\nCtrl-C stops everything.");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    println!("stopping");
    host.stop().await
}
