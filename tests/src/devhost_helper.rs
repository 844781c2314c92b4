//! The devhost's felhom-helper: the real helper code (`felhom_helper::cli::main_from`) run as
//! a child process through the devhost binary's hidden `__helper` entry, with the hardware
//! stand-ins ([`crate::standins`]) as its `smartctl` and `sensors`, served by the same binary
//! through the hidden `__sim-smartctl` / `__sim-sensors` entries. One `cargo run --bin
//! felhom-devhost` therefore builds everything the helper needs.
//!
//! The helper takes program paths and runs them with a fixed argv, so `DIR/bin/smartctl` and
//! `DIR/bin/sensors` are two-line `#!/bin/sh` wrappers that exec this binary with the entry.
//! It serves `DIR/helper-run/helper.sock` (group: the agent's, mode 0660) and admits exactly the
//! agent's uid (and root, by design, for diagnostics). Its host mount namespace is the
//! devhost's own, and mounts land under `DIR/mnt`.
//!
//! As root the helper runs as root, like on a real host. Not as root it needs the loud
//! `--unprivileged-dev` switch (no capability handling, socket not chowned).
//!
//! `DIR/bin/pct` is the `pct create` stand-in ([`crate::sim_pct`], hidden entry `__sim-pct`)
//! against the devhost's simulator; its wrapper adds `--sim-state DIR/pvesim.json` (the
//! simulator's URL, node, CA path and `root@pam!sim` token; mode 0600, owned by root like the
//! helper that reads it).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Argument that makes the devhost binary act as `felhom-helper`.
pub const HELPER_ENTRY: &str = "__helper";
/// Argument that makes the devhost binary act as the `smartctl` stand-in.
pub const SMARTCTL_ENTRY: &str = "__sim-smartctl";
/// Argument that makes the devhost binary act as the `sensors` stand-in.
pub const SENSORS_ENTRY: &str = "__sim-sensors";
/// Argument that makes the devhost binary act as the `pct` stand-in.
pub const PCT_ENTRY: &str = "__sim-pct";

/// Runs a hidden entry if `rest` (argv without the program) starts with one; `None` otherwise.
/// Call first in `main`, before any thread exists (the helper requires it).
pub fn dispatch(program: &OsString, rest: &[OsString]) -> Option<ExitCode> {
    let (entry, args) = rest.split_first()?;
    let strings = || -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    };
    if entry == HELPER_ENTRY {
        Some(felhom_helper::cli::main_from(
            std::iter::once(program.clone()).chain(args.iter().cloned()),
        ))
    } else if entry == SMARTCTL_ENTRY {
        Some(crate::standins::smartctl_main(&strings()))
    } else if entry == SENSORS_ENTRY {
        Some(crate::standins::sensors_main(&strings()))
    } else if entry == PCT_ENTRY {
        Some(crate::sim_pct::pct_main(&strings()))
    } else {
        None
    }
}

/// Where the devhost's helper lives.
#[derive(Debug, Clone)]
pub struct HelperPaths {
    /// The socket it serves.
    pub socket: PathBuf,
    /// Its audit log.
    pub audit: PathBuf,
}

/// Writes an executable wrapper `dir/name` that execs this binary with `entry`.
fn wrapper(dir: &Path, name: &str, exe: &Path, entry: &str) -> anyhow::Result<PathBuf> {
    wrapper_with(dir, name, exe, entry, "")
}

/// Like [`wrapper`], with fixed `extra` arguments (already shell-quoted) after the entry.
fn wrapper_with(
    dir: &Path,
    name: &str,
    exe: &Path,
    entry: &str,
    extra: &str,
) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    let exe = exe
        .to_str()
        .context("the devhost binary's path is not UTF-8")?;
    if exe.contains('\'') {
        bail!("the devhost binary's path contains a quote: {exe}");
    }
    std::fs::write(
        &path,
        format!("#!/bin/sh\nexec '{exe}' {entry} {extra} \"$@\"\n"),
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// Starts the helper for the devhost in `dir` through `exe`'s hidden entries (the
/// `felhom-devhost` binary), serving `socket` for `agent_uid`/`agent_gid`, and waits until the
/// socket accepts connections.
pub async fn start(
    exe: &Path,
    dir: &Path,
    pve: &crate::pve::PveSimHandle,
    socket: &Path,
    agent_uid: u32,
    agent_gid: u32,
) -> anyhow::Result<(Child, HelperPaths)> {
    let root = nix::unistd::geteuid().is_root();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755))?;
    let smartctl = wrapper(&bin, "smartctl", exe, SMARTCTL_ENTRY)?;
    let sensors = wrapper(&bin, "sensors", exe, SENSORS_ENTRY)?;
    let state = write_sim_state(dir, pve)?;
    let state = state.to_str().context("the state directory is not UTF-8")?;
    if state.contains('\'') {
        bail!("the state directory contains a quote: {state}");
    }
    let pct = wrapper_with(
        &bin,
        "pct",
        exe,
        PCT_ENTRY,
        &format!("--sim-state '{state}'"),
    )?;
    let helper_state = dir.join("helper-state");
    std::fs::create_dir_all(&helper_state)?;
    std::fs::set_permissions(&helper_state, std::fs::Permissions::from_mode(0o700))?;
    let audit = dir.join("helper-audit.log");
    let mut cmd = Command::new(exe);
    cmd.arg(HELPER_ENTRY)
        .arg("--socket")
        .arg(socket)
        .arg("--socket-group")
        .arg(agent_gid.to_string())
        .arg("--agent-user")
        .arg(agent_uid.to_string())
        .arg("--audit-file")
        .arg(&audit)
        .arg("--state-dir")
        .arg(&helper_state)
        .arg("--mount-prefix")
        .arg(dir.join("mnt"))
        .arg("--host-mount-ns")
        .arg(format!("/proc/{}/ns/mnt", std::process::id()))
        .arg("--pct")
        .arg(&pct)
        .arg("--smartctl")
        .arg(&smartctl)
        .arg("--sensors")
        .arg(&sensors)
        .env_clear()
        .env(
            "RUST_LOG",
            std::env::var("FELHOM_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null());
    if !root {
        eprintln!(
            "felhom-devhost: NOT ROOT: starting felhom-helper with --unprivileged-dev (no capability handling, socket not chowned)"
        );
        cmd.arg("--unprivileged-dev");
    }
    let mut child = cmd.spawn().context("cannot start the helper")?;
    wait_for_helper(socket, &mut child).await?;
    Ok((
        child,
        HelperPaths {
            socket: socket.to_path_buf(),
            audit,
        },
    ))
}

/// Writes the simulator state the `pct` and `pveum` stand-ins read (`DIR/pvesim.json`, 0600; see
/// [`crate::sim_pct`]) and returns its path.
pub fn write_sim_state(dir: &Path, pve: &crate::pve::PveSimHandle) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let private = |path: &Path, data: &[u8]| -> anyhow::Result<()> {
        let _ = std::fs::remove_file(path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        f.write_all(data)?;
        Ok(())
    };
    let ca = dir.join("pvesim.ca.pem");
    private(&ca, pve.ca_pem().as_bytes())?;
    let root_token = pve
        .token("root@pam!sim")
        .context("the fixture has no root@pam!sim token")?;
    let json = serde_json::json!({
        "url": pve.url(),
        "fingerprint": pve.fingerprint(),
        "ca_pem_path": ca,
        "node": pve.node(),
        "tokens": { "root@pam!sim": root_token },
    });
    let state = dir.join("pvesim.json");
    private(&state, json.to_string().as_bytes())?;
    Ok(state)
}

async fn wait_for_helper(socket: &Path, helper: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = helper.try_wait()? {
            bail!("the helper exited during start-up with {status}");
        }
        if Instant::now() > deadline {
            let _ = helper.kill();
            let _ = helper.wait();
            bail!("the helper did not open {} within 60 s", socket.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the helper: SIGTERM, then SIGKILL after a grace period; returns its exit status.
pub async fn stop(helper: &mut Child) -> anyhow::Result<std::process::ExitStatus> {
    let pid = nix::unistd::Pid::from_raw(
        i32::try_from(helper.id()).context("the helper's pid does not fit a pid_t")?,
    );
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = helper.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            helper.kill()?;
            return Ok(helper.wait()?);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
