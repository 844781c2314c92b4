//! What the simulator binaries (`felhom-pvesim`, `felhom-pbssim`) share around their servers:
//! the loopback-only rule, the ready line, waiting for SIGTERM/Ctrl-C, and private state files.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// A simulator binary's `main`: runs `run` and prints its error chain as `<name>: …`.
pub fn main(name: &str, run: impl FnOnce() -> anyhow::Result<()>) -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs a simulator's server future on a new runtime.
pub fn block_on(
    serve: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("Cannot start the async runtime")?;
    runtime.block_on(serve)
}

/// Refuses a listen address outside loopback: the simulators are test tools.
pub fn require_loopback(listen: SocketAddr) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        bail!(
            "--listen {listen} is not a loopback address; the simulator only serves 127.0.0.0/8 or ::1"
        );
    }
    Ok(())
}

/// Prints `<name> ready: url=… node=… fingerprint=…` (what tests wait for), then waits for
/// Ctrl-C or SIGTERM.
pub async fn announce_and_wait(
    name: &str,
    url: &str,
    node: &str,
    fingerprint: &str,
) -> anyhow::Result<()> {
    println!("{name} ready: url={url} node={node} fingerprint={fingerprint}");
    std::io::stdout()
        .flush()
        .context("Cannot write to stdout")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("Cannot install the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

/// Writes `data` to `path` with mode 0600 via a temp file and rename, so readers never see a
/// half-written file.
pub fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
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
