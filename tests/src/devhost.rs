//! `felhom-devhost`: the whole product on loopback against the simulated host.
//!
//! Starts the simulated Proxmox VE in-process, writes a matching agent config into the state
//! directory, and runs the agent daemon as a separate process — the very code of the
//! `felhom-agent` binary, re-executed through this binary's hidden `__agent` entry so one
//! `cargo run` builds everything. When started as root, the agent runs as an unprivileged uid
//! (`nobody`, 65534), so the agent's "never root" rule and socket permissions are exercised for
//! real. `DIR/devhost.json` tells other tools where everything is.
//!
//! Limits: loopback only; the state directory is deleted on exit only if devhost created it.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::pve::{PveSim, PveSimHandle, PveSimOptions};

/// Argument that makes the devhost binary act as `felhom-agent`.
pub const AGENT_ENTRY: &str = "__agent";

/// The token the agent uses against the simulator.
pub const AGENT_AUTHID: &str = "felhom-agent@pve!agent";

/// uid/gid the agent runs as when devhost is root.
pub const UNPRIVILEGED_ID: u32 = 65534;

/// What `devhost.json` says.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DevhostInfo {
    pub agent_socket: PathBuf,
    pub helper_socket: PathBuf,
    pub pve_url: String,
    pub pve_fingerprint: String,
    /// The simulator's agent token (a simulator secret, in a 0600 file).
    pub pve_token: String,
    pub agent_uid: u32,
    pub agent_pid: u32,
    /// The felhom-helper child (see [`crate::devhost_helper`]).
    pub helper_pid: u32,
    pub state_dir: PathBuf,
}

/// A running devhost.
pub struct Devhost {
    pub info: DevhostInfo,
    pve: Option<PveSimHandle>,
    agent: Child,
    helper: Child,
}

fn write_private(path: &Path, contents: &str, owner: Option<u32>) -> anyhow::Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    if let Some(uid) = owner {
        nix::unistd::chown(path, Some(uid.into()), Some(uid.into()))
            .with_context(|| format!("cannot chown {}", path.display()))?;
    }
    Ok(())
}

impl Devhost {
    /// Starts everything with `dir` as the state directory (created if missing).
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        let root = nix::unistd::geteuid().is_root();
        let agent_uid = if root {
            UNPRIVILEGED_ID
        } else {
            nix::unistd::geteuid().as_raw()
        };
        let owner = root.then_some(UNPRIVILEGED_ID);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        // The agent (another uid when root) must traverse the directory; nothing secret is
        // readable in it (files are 0600, the agent's own state dir 0700).
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;

        let pve = PveSim::start(PveSimOptions::default())
            .await
            .context("cannot start the simulated Proxmox VE")?;
        let token = pve
            .token(AGENT_AUTHID)
            .context("the fixture has no agent token")?;

        let agent_state = dir.join("agent-state");
        std::fs::create_dir_all(&agent_state)?;
        std::fs::set_permissions(&agent_state, std::fs::Permissions::from_mode(0o700))?;
        if let Some(uid) = owner {
            nix::unistd::chown(&agent_state, Some(uid.into()), Some(uid.into()))?;
        }
        let token_file = dir.join("pve-token");
        write_private(&token_file, &token, owner)?;
        // Like /run/felhom from systemd's RuntimeDirectory: owned by the agent, which binds its
        // socket there; the (root) helper binds beside it.
        let run_dir = dir.join("run");
        std::fs::create_dir_all(&run_dir)?;
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755))?;
        if let Some(uid) = owner {
            nix::unistd::chown(&run_dir, Some(uid.into()), Some(uid.into()))?;
        }
        let agent_socket = run_dir.join("agent.sock");
        let helper_socket = run_dir.join("helper.sock");
        let config = dir.join("agent.toml");
        write_private(
            &config,
            &format!(
                "# Written by felhom-devhost for the simulated host.\n\
                 [proxmox]\nendpoint = \"{url}\"\nnode = \"{node}\"\ntoken_file = \"{token}\"\n\
                 tls_fingerprint = \"{fp}\"\n\n\
                 [agent]\nstate_dir = \"{state}\"\nsocket = \"{sock}\"\nhelper_socket = \"{helper}\"\n\
                 socket_group = \"\"\n\n\
                 [local_api.storage_classes]\n\"local-lvm\" = \"fast\"\n\"local\" = \"slow\"\n",
                url = pve.url(),
                node = pve.node(),
                token = token_file.display(),
                fp = pve.fingerprint(),
                state = agent_state.display(),
                sock = agent_socket.display(),
                helper = helper_socket.display(),
            ),
            owner,
        )?;

        let agent_gid = if root {
            UNPRIVILEGED_ID
        } else {
            nix::unistd::getegid().as_raw()
        };
        let (mut helper, _) =
            crate::devhost_helper::start(&dir, &pve, &helper_socket, agent_uid, agent_gid).await?;

        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg(AGENT_ENTRY)
            .arg("--config")
            .arg(&config)
            .arg("run")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env(
                "FELHOM_LOG",
                std::env::var("FELHOM_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null());
        if root {
            std::os::unix::process::CommandExt::uid(&mut cmd, UNPRIVILEGED_ID);
            std::os::unix::process::CommandExt::gid(&mut cmd, UNPRIVILEGED_ID);
            // std also clears root's supplementary groups when a uid is set from root.
        }
        let mut agent = match cmd.spawn().context("cannot start the agent") {
            Ok(agent) => agent,
            Err(e) => {
                let _ = crate::devhost_helper::stop(&mut helper).await;
                return Err(e);
            }
        };
        if let Err(e) = wait_for_socket(&agent_socket, &mut agent).await {
            let _ = crate::devhost_helper::stop(&mut helper).await;
            return Err(e);
        }

        let info = DevhostInfo {
            agent_socket,
            helper_socket,
            pve_url: pve.url().to_owned(),
            pve_fingerprint: pve.fingerprint().to_owned(),
            pve_token: token,
            agent_uid,
            agent_pid: agent.id(),
            helper_pid: helper.id(),
            state_dir: dir.clone(),
        };
        write_private(
            &dir.join("devhost.json"),
            &serde_json::to_string_pretty(&info)?,
            None,
        )?;
        Ok(Self {
            info,
            pve: Some(pve),
            agent,
            helper,
        })
    }

    /// The simulated Proxmox VE.
    pub fn pve(&self) -> &PveSimHandle {
        self.pve.as_ref().expect("present until stop")
    }

    /// Stops the agent (SIGTERM, then SIGKILL after a grace period) and the simulator.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(self.agent.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.agent.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                self.agent.kill()?;
                break self.agent.wait()?;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let helper_status = crate::devhost_helper::stop(&mut self.helper).await?;
        if let Some(pve) = self.pve.take() {
            pve.shutdown().await;
        }
        if !status.success() {
            bail!("the agent exited with {status}");
        }
        if !helper_status.success() {
            bail!("the helper exited with {helper_status}");
        }
        Ok(())
    }
}

async fn wait_for_socket(socket: &Path, agent: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Ok(());
        }
        if let Some(status) = agent.try_wait()? {
            bail!("the agent exited during start-up with {status}");
        }
        if Instant::now() > deadline {
            let _ = agent.kill();
            bail!("the agent did not open {} within 60 s", socket.display());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
