//! `felhom-localapi-gateway`: the local API gateway as its own process (normally it runs inside
//! the agent). Serves until SIGTERM or SIGINT, then shuts down gracefully.
//!
//! It calls the agent's `LocalApi` service on the agent's LocalApi socket
//! (`/run/felhom/localapi.sock`), which is 0600 and owned by the agent user unless the agent is
//! configured with `agent.local_api_socket_group = "felhom-gateway"`: then the socket is 0660,
//! group `felhom-gateway`, and this process must run with that group (e.g. `User=felhom-gateway`,
//! `Group=felhom-gateway`). The operators' `agent.sock` does not serve LocalApi.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use felhom_localapi_gateway::{Gateway, GatewayConfig, cert, connect_unix};

/// The agent's LocalApi socket (felhom-agent's `paths::LOCAL_API_SOCKET`; repeated here because
/// this crate must not depend on the agent).
const LOCAL_API_SOCKET: &str = "/run/felhom/localapi.sock";
/// Agent state directory (felhom-agent's `paths::STATE_DIR`).
const STATE_DIR: &str = "/var/lib/felhom-agent";

#[derive(Parser)]
#[command(
    version,
    about = "HTTPS local API for in-guest controllers, translated to the agent's LocalApi gRPC service"
)]
struct Args {
    /// Address to listen on, ADDR:PORT (repeatable; e.g. the bridge IP and port 8443).
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// The agent's LocalApi Unix socket (needs the agent user or its configured gateway group).
    /// (`--agent-socket` is the old name, from when LocalApi was served on agent.sock.)
    #[arg(long, alias = "agent-socket", value_name = "PATH", default_value = LOCAL_API_SOCKET)]
    local_api_socket: PathBuf,
    /// Directory holding the persisted certificate and key.
    #[arg(long, value_name = "DIR", default_value = STATE_DIR)]
    state_dir: PathBuf,
    /// Print the certificate's pins as JSON (creating the certificate if there is none) and exit.
    #[arg(long)]
    print_pins: bool,
    /// Replace the certificate with a new one, print the new pins and exit (every guest needs
    /// them; a running gateway serves the new certificate after a restart).
    #[arg(long, conflicts_with = "print_pins")]
    rotate_certificate: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("felhom-localapi-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.print_pins || args.rotate_certificate {
        let identity = if args.rotate_certificate {
            cert::rotate(&args.state_dir)?
        } else {
            cert::load_or_create(&args.state_dir)?
        };
        println!("{}", serde_json::to_string_pretty(identity.pins())?);
        return Ok(());
    }
    anyhow::ensure!(
        !args.listen.is_empty(),
        "give at least one --listen ADDR:PORT"
    );
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let config = GatewayConfig::new(args.listen, args.state_dir);
    let gateway = Gateway::start(config, connect_unix(args.local_api_socket)).await?;
    let pins = gateway.pins();
    tracing::info!(
        leaf_sha256 = %pins.leaf_sha256_hex,
        spki_sha256 = %pins.spki_sha256_base64,
        "local API gateway started"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.context("cannot wait for SIGINT")?,
    }
    tracing::info!("shutting down");
    gateway.shutdown().await;
    Ok(())
}
