//! `felhom-devhost`: the whole product on loopback against the simulated host.
//!
//! Starts the simulated Proxmox VE in-process, writes a matching agent config into the state
//! directory, and runs the agent daemon as a separate process — the very code of the
//! `felhom-agent` binary, re-executed through this binary's hidden `__agent` entry so one
//! `cargo run` builds everything. When started as root, the agent runs as an unprivileged uid
//! (`nobody`, 65534), so the agent's "never root" rule and socket permissions are exercised for
//! real. `DIR/devhost.json` tells other tools where everything is.
//!
//! The agent embeds the local API gateway on 127.0.0.1 (port chosen unless given), and devhost
//! mints bearer tokens for two demo guests of the simulator's default fixture ([`DEMO_GUESTS`]),
//! through the agent's own operator RPCs (the code paths of `felhomctl token mint` and
//! `felhomctl pins`), so `curl` against the guests' API works at once.
//!
//! A simulated Proxmox Backup Server runs too, linked to the simulator's `felhom-pbs` storage
//! (see [`crate::pve::pbs_link`]): vzdumps to that storage land in its datastore `felhom`, the
//! storage has a client encryption key (PVE's live key file stands at
//! `DIR/pve/priv/storage/felhom-pbs.enc`, 0600, for `felhom-agent escrow`; the agent itself
//! knows only its fingerprint, from the storage configuration), and
//! the agent gets a PBS token (`DIR/pbs-token`, 0600, `felhom-agent@pbs!agent` with
//! `DatastoreReader`: list snapshots and verify). The agent config's `[pbs]` and `[backup]`
//! sections back up guests 101 and 102 to a `local` tier (daily 02:30, restore-test Sundays
//! 04:00) and an encrypted `offsite` PBS tier (Sundays 03:00); scratch guests 9900–9999 on
//! `local-lvm`.
//!
//! Limits: loopback only; the state directory is deleted on exit only if devhost created it.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::pbs::PbsSimHandle;
use crate::pbs::fixture::{LINKED_AGENT_TOKEN, LINKED_DATASTORE};
use crate::pve::PveSimHandle;
use crate::pve::pbs_link::{LinkedOptions, LinkedSims};

/// Argument that makes the devhost binary act as `felhom-agent`.
pub const AGENT_ENTRY: &str = "__agent";

/// The token the agent uses against the simulator.
pub const AGENT_AUTHID: &str = "felhom-agent@pve!agent";

/// The PVE storage backed by the simulated PBS (an encrypted `pbs` tier).
pub const PBS_STORAGE: &str = "felhom-pbs";

/// uid/gid the agent runs as when devhost is root.
pub const UNPRIVILEGED_ID: u32 = 65534;

/// Guests of the default fixture that get a local API token (vmid, as the fixture names them).
pub const DEMO_GUESTS: [u32; 2] = [101, 102];

/// A demo guest and its local API bearer token (a devhost secret, in the 0600 devhost.json).
#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DemoGuest {
    pub vmid: u32,
    pub name: String,
    pub token: String,
}

impl std::fmt::Debug for DemoGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoGuest")
            .field("vmid", &self.vmid)
            .field("name", &self.name)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// What `devhost.json` says.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct DevhostInfo {
    /// The operators' `Agent` service.
    pub agent_socket: PathBuf,
    /// The guests' `LocalApi` (the agent user only; the embedded gateway calls it).
    pub local_api_socket: PathBuf,
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
    /// The guests' local API, "127.0.0.1:PORT".
    pub local_api_endpoint: String,
    /// SHA-256 of the gateway's leaf certificate, hex (bootstrap `local_api_pin_sha256`).
    pub local_api_pin_sha256: String,
    /// SHA-256 of its SubjectPublicKeyInfo, base64 (curl `--pinnedpubkey sha256//…`).
    pub local_api_pin_spki_sha256: String,
    pub guests: Vec<DemoGuest>,
    /// The simulated Proxmox Backup Server, `https://127.0.0.1:PORT`.
    pub pbs_url: String,
    /// SHA-256 of its certificate, `aa:bb:…` (PBS's display form).
    pub pbs_fingerprint: String,
    /// The datastore behind the `felhom-pbs` storage.
    pub pbs_datastore: String,
    /// Stands in for `/etc/pve/priv` (root, 0700): `storage/felhom-pbs.enc` is the storage's key.
    pub pve_priv_dir: PathBuf,
    /// Where `felhom-agent escrow` keeps escrows on this simulated host.
    pub escrow_dir: PathBuf,
}

/// How to start a devhost; [`Default`] is what `felhom-devhost` does without flags, except
/// that `felhom-devhost` sets [`DevhostOptions::backup_schedules`].
#[derive(Debug, Clone, Default)]
pub struct DevhostOptions {
    /// Let the agent act on the backup schedules by itself: a self-restore-test Sundays 04:00
    /// and crash-consistent backups one hour after a missed slot. Off (tests): the same tiers
    /// and policies, but no `restore_test` and the longest `grace_secs` (7 days), so the agent
    /// never starts a backup or restore-test on its own — the fixture's June PBS backup of 101
    /// would otherwise make both due at the scheduler's first tick.
    pub backup_schedules: bool,
    /// Port of the guests' local API on 127.0.0.1 (0: a free port).
    pub local_api_port: u16,
    /// Program run with [`AGENT_ENTRY`] as the agent; `None`: this executable (the
    /// `felhom-devhost` binary). Tests pass `env!("CARGO_BIN_EXE_felhom-devhost")`.
    pub agent_program: Option<PathBuf>,
    /// Extra environment of the agent process (tests set the agent's test hooks here).
    pub agent_env: Vec<(String, String)>,
    /// Test hook: another process takes the picked local-API port just before the agent
    /// starts (the start-up race a new user once met), so the retry is exercised.
    pub squat_local_api_port: bool,
}

/// A running devhost.
pub struct Devhost {
    pub info: DevhostInfo,
    pve: Option<PveSimHandle>,
    pbs: Option<PbsSimHandle>,
    agent: Child,
    /// The agent's config file, for restarts.
    config: PathBuf,
    /// The binary whose `__agent` entry runs the agent.
    agent_exe: PathBuf,
    helper: Child,
}

/// A port free on 127.0.0.1 right now (the kernel's pick for port 0).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Writes `contents` to a new 0600 file at `path` (replacing one left there), owned by
/// `owner` when given.
pub fn write_private(path: &Path, contents: &str, owner: Option<u32>) -> anyhow::Result<()> {
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

/// A devhost in a temporary directory of its own (removed once it has stopped), as the
/// end-to-end tests start it.
pub struct TempDevhost {
    devhost: Option<Devhost>,
    _dir: tempfile::TempDir,
}

impl TempDevhost {
    /// Starts a devhost with `options` in a fresh temporary directory.
    pub async fn start(options: &DevhostOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let devhost = Devhost::start_with(&dir.path().join("dh"), options).await?;
        Ok(Self {
            devhost: Some(devhost),
            _dir: dir,
        })
    }

    /// The running devhost.
    pub fn dh(&self) -> &Devhost {
        self.devhost.as_ref().expect("running until stop")
    }

    /// The running devhost, to restart its agent.
    pub fn dh_mut(&mut self) -> &mut Devhost {
        self.devhost.as_mut().expect("running until stop")
    }

    /// Stops everything, then removes the directory.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        match self.devhost.take() {
            Some(d) => d.stop().await,
            None => Ok(()),
        }
    }
}

impl Devhost {
    /// Starts everything with `dir` as the state directory (created if missing); the local API
    /// listens on a free loopback port.
    pub async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(dir, &DevhostOptions::default()).await
    }

    /// [`Devhost::start`] with `options`.
    pub async fn start_with(dir: &Path, options: &DevhostOptions) -> anyhow::Result<Self> {
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

        // PVE's private directory stands at DIR/pve/priv (root, 0700): the storage key is the
        // file storage/felhom-pbs.enc, which the simulator reads at every backup and restore.
        let pve_priv_dir = dir.join("pve").join("priv");
        std::fs::create_dir_all(&pve_priv_dir)?;
        for d in [dir.join("pve"), pve_priv_dir.clone()] {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
        }
        let LinkedSims { pve, pbs, key } = LinkedSims::start(LinkedOptions {
            pve: crate::pve::PveSimOptions {
                priv_dir: Some(pve_priv_dir.clone()),
                ..crate::pve::PveSimOptions::default()
            },
            storage: PBS_STORAGE.to_owned(),
            encrypted: true,
            ..LinkedOptions::default()
        })
        .await
        .context("cannot start the simulated Proxmox VE and Backup Server")?;
        key.context("the linked storage got no encryption key")?;
        let token = pve
            .token(AGENT_AUTHID)
            .context("the fixture has no agent token")?;
        let pbs_token = pbs
            .token(LINKED_AGENT_TOKEN)
            .context("the PBS fixture has no agent token")?;

        let agent_state = dir.join("agent-state");
        std::fs::create_dir_all(&agent_state)?;
        std::fs::set_permissions(&agent_state, std::fs::Permissions::from_mode(0o700))?;
        if let Some(uid) = owner {
            nix::unistd::chown(&agent_state, Some(uid.into()), Some(uid.into()))?;
        }
        let token_file = dir.join("pve-token");
        write_private(&token_file, &token, owner)?;
        let pbs_token_file = dir.join("pbs-token");
        write_private(&pbs_token_file, &pbs_token, owner)?;
        // Like /run/felhom from systemd's RuntimeDirectory: owned by the agent, which binds its
        // socket there; the (root) helper binds beside it.
        let run_dir = dir.join("run");
        std::fs::create_dir_all(&run_dir)?;
        std::fs::set_permissions(&run_dir, std::fs::Permissions::from_mode(0o755))?;
        if let Some(uid) = owner {
            nix::unistd::chown(&run_dir, Some(uid.into()), Some(uid.into()))?;
        }
        let agent_socket = run_dir.join("agent.sock");
        // The helper's directory is its own (it creates it 0750 with the agent's group), like
        // /run/felhom-helper: the agent may connect but not replace the socket.
        let helper_socket = dir.join("helper-run").join("helper.sock");
        let config = dir.join("agent.toml");
        let render = |port: u16| -> String {
            format!(
                "# Written by felhom-devhost for the simulated host.\n\
                 [proxmox]\nendpoint = \"{url}\"\nnode = \"{node}\"\ntoken_file = \"{token}\"\n\
                 tls_fingerprint = \"{fp}\"\n\n\
                 [agent]\nstate_dir = \"{state}\"\nsocket = \"{sock}\"\nhelper_socket = \"{helper}\"\n\
                 socket_group = \"\"\n\n\
                 [local_api]\nlisten = [\"127.0.0.1:{port}\"]\n\n\
                 [local_api.storage_classes]\n\"local-lvm\" = \"fast\"\n\"local\" = \"slow\"\n\n\
                 [pbs]\nendpoint = \"{pbs_url}\"\ndatastore = \"{datastore}\"\n\
                 token_file = \"{pbs_token}\"\ntls_fingerprint = \"{pbs_fp}\"\n\n\
                 [backup]\n{grace}scratch_vmid_first = 9900\nscratch_vmid_last = 9999\n\
                 scratch_storage = \"local-lvm\"\n\n\
                 [[backup.tiers]]\nname = \"local\"\nstorage = \"local\"\nkind = \"local\"\n\n\
                 [[backup.tiers]]\nname = \"offsite\"\nstorage = \"{pbs_storage}\"\nkind = \"pbs\"\n\
                 encrypted = true\n\n\
                 [[backup.policies]]\nvmids = [{guests}]\ntier = \"local\"\nschedule = \"daily 02:30\"\n\
                 keep_last = 3\nkeep_daily = 7\n{restore_test}probe_interface = \"eth0\"\n\n\
                 [[backup.policies]]\nvmids = [{guests}]\ntier = \"offsite\"\nschedule = \"sun 03:00\"\n\
                 keep_weekly = 4\nkeep_monthly = 6\n",
                url = pve.url(),
                node = pve.node(),
                token = token_file.display(),
                fp = pve.fingerprint(),
                state = agent_state.display(),
                sock = agent_socket.display(),
                helper = helper_socket.display(),
                port = port,
                pbs_url = pbs.url(),
                datastore = LINKED_DATASTORE,
                pbs_token = pbs_token_file.display(),
                pbs_fp = pbs.fingerprint(),
                pbs_storage = PBS_STORAGE,
                grace = if options.backup_schedules {
                    ""
                } else {
                    "# Quiet agent (tests): never back up on its own.\ngrace_secs = 604800\n"
                },
                restore_test = if options.backup_schedules {
                    "restore_test = \"sun 04:00\"\n"
                } else {
                    ""
                },
                guests = DEMO_GUESTS
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        };
        // A fixed port in the config, so the gateway keeps its address across agent restarts
        // (port 0 would give every restart a new one, and devhost.json would go stale). Picked
        // after the simulators have bound theirs, so none of them can take it.
        let mut local_api_port = match options.local_api_port {
            0 => free_port()?,
            p => p,
        };
        write_private(&config, &render(local_api_port), owner)?;

        let agent_gid = if root {
            UNPRIVILEGED_ID
        } else {
            nix::unistd::getegid().as_raw()
        };
        // The devhost binary's hidden entries run the agent, the helper and the stand-ins.
        let agent_exe = match &options.agent_program {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        let (mut helper, _) = crate::devhost_helper::start(
            &agent_exe,
            &dir,
            &pve,
            &helper_socket,
            agent_uid,
            agent_gid,
        )
        .await?;
        let env: Vec<(&str, &str)> = options
            .agent_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // Between picking a free port and the agent binding it, any other process may take
        // it: then the agent cannot start, and the devhost picks another port and tries again.
        let mut squatter = None;
        let mut attempt = 0;
        let (agent, local_api) = loop {
            attempt += 1;
            if options.squat_local_api_port && attempt == 1 {
                squatter = Some(std::net::TcpListener::bind(("127.0.0.1", local_api_port))?);
            }
            let mut agent = match spawn_agent(&agent_exe, &config, &env) {
                Ok(agent) => agent,
                Err(e) => {
                    let _ = crate::devhost_helper::stop(&mut helper).await;
                    return Err(e);
                }
            };
            let ready = match wait_for_socket(&agent_socket, &mut agent).await {
                Ok(()) => local_api_setup(&agent_socket, &pve).await,
                Err(e) => Err(e),
            };
            match ready {
                Ok(l) => break (agent, l),
                Err(e) => {
                    let _ = agent.kill();
                    let _ = agent.wait();
                    let taken = options.local_api_port == 0
                        && std::net::TcpListener::bind(("127.0.0.1", local_api_port)).is_err();
                    if taken && attempt < 4 {
                        eprintln!(
                            "felhom-devhost: port {local_api_port} was taken before the agent bound it; trying another"
                        );
                        local_api_port = free_port()?;
                        write_private(&config, &render(local_api_port), owner)?;
                        continue;
                    }
                    let _ = crate::devhost_helper::stop(&mut helper).await;
                    return Err(e);
                }
            }
        };
        drop(squatter);

        let info = DevhostInfo {
            local_api_socket: run_dir.join("localapi.sock"),
            agent_socket,
            helper_socket,
            pve_url: pve.url().to_owned(),
            pve_fingerprint: pve.fingerprint().to_owned(),
            pve_token: token,
            agent_uid,
            agent_pid: agent.id(),
            helper_pid: helper.id(),
            state_dir: dir.clone(),
            local_api_endpoint: local_api.endpoint,
            local_api_pin_sha256: local_api.pin_sha256,
            local_api_pin_spki_sha256: local_api.pin_spki_sha256,
            guests: local_api.guests,
            pbs_url: pbs.url().to_owned(),
            pbs_fingerprint: pbs.fingerprint().to_owned(),
            pbs_datastore: LINKED_DATASTORE.to_owned(),
            pve_priv_dir,
            escrow_dir: dir.join("escrow"),
        };
        write_private(
            &dir.join("devhost.json"),
            &serde_json::to_string_pretty(&info)?,
            None,
        )?;
        Ok(Self {
            info,
            pve: Some(pve),
            pbs: Some(pbs),
            agent,
            config,
            agent_exe: agent_exe.to_owned(),
            helper,
        })
    }

    /// Kills the agent (SIGKILL) and reaps it; already dead is fine.
    pub fn kill_agent(&mut self) -> anyhow::Result<()> {
        if self.agent.try_wait()?.is_none() {
            self.agent.kill()?;
        }
        self.agent.wait()?;
        Ok(())
    }

    /// Asks the agent to stop (SIGTERM, what systemd sends) without waiting for it.
    pub fn terminate_agent(&self) -> anyhow::Result<()> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.agent.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        Ok(())
    }

    /// Waits (up to `timeout`) for the agent to exit by itself; `None` if it is still running.
    pub async fn wait_agent_exit(
        &mut self,
        timeout: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.agent.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() > deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the agent if it still runs, then starts it again with `env`, and waits for its
    /// socket. The simulator (and its state) stays as it is.
    pub async fn restart_agent(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        self.restart_agent_unwaited(env)?;
        wait_for_socket(&self.info.agent_socket, &mut self.agent).await
    }

    /// Like [`Self::restart_agent`], but returns as soon as the process runs, without waiting
    /// for its socket (to observe what the agent does before it serves).
    pub fn restart_agent_unwaited(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        self.kill_agent()?;
        self.agent = spawn_agent(&self.agent_exe, &self.config, env)?;
        self.info.agent_pid = self.agent.id();
        Ok(())
    }

    /// The simulated Proxmox VE.
    pub fn pve(&self) -> &PveSimHandle {
        self.pve.as_ref().expect("present until stop")
    }

    /// The simulated Proxmox Backup Server.
    pub fn pbs(&self) -> &PbsSimHandle {
        self.pbs.as_ref().expect("present until stop")
    }

    /// Stops the agent (SIGTERM, then SIGKILL after a grace period) and the simulators.
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
        if let Some(pbs) = self.pbs.take() {
            pbs.shutdown().await;
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

/// What devhost learns from and sets up through the agent for the local API.
struct LocalApiSetup {
    endpoint: String,
    pin_sha256: String,
    pin_spki_sha256: String,
    guests: Vec<DemoGuest>,
}

async fn local_api_setup(socket: &Path, pve: &PveSimHandle) -> anyhow::Result<LocalApiSetup> {
    use felhom_agent::ctl::token::{self, TokenAction};
    use felhom_agent::ctl::{CtlError, shortcut};
    let pins_shortcut = shortcut::find("pins").context("felhomctl has no pins shortcut")?;
    let pins = shortcut::run(socket, pins_shortcut)
        .await
        .context("cannot read the local API pins from the agent")?;
    let field = |name: &str| {
        pins.json
            .get(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .with_context(|| format!("GetLocalApiPins has no {name}"))
    };
    let endpoint = pins
        .json
        .get("listen")
        .and_then(|l| l.get(0))
        .and_then(serde_json::Value::as_str)
        .context("the agent reports no local API listen address")?
        .to_owned();
    let mut guests = Vec::with_capacity(DEMO_GUESTS.len());
    for vmid in DEMO_GUESTS {
        let name = pve
            .state()
            .guest(vmid)
            .with_context(|| format!("the simulator has no guest {vmid}"))?
            .name();
        // A reused state directory already has tokens: replace them (only the hash is kept,
        // so an old token cannot be shown again).
        let minted = match token::run(socket, TokenAction::Mint, vmid).await {
            Err(CtlError::Status { status }) if status.code() == tonic::Code::AlreadyExists => {
                token::run(socket, TokenAction::Rotate, vmid).await
            }
            other => other,
        }
        .with_context(|| format!("cannot mint a local API token for guest {vmid}"))?;
        guests.push(DemoGuest {
            vmid,
            name,
            token: minted.line,
        });
    }
    Ok(LocalApiSetup {
        endpoint,
        pin_sha256: field("leafSha256Hex")?,
        pin_spki_sha256: field("spkiSha256Base64")?,
        guests,
    })
}

impl Drop for Devhost {
    /// A devhost dropped without [`Devhost::stop`] (a failed test) leaves no agent or helper
    /// behind.
    fn drop(&mut self) {
        for child in [&mut self.agent, &mut self.helper] {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Starts the agent daemon from `config` (as [`UNPRIVILEGED_ID`] when root), with a clean
/// environment plus `env`.
fn spawn_agent(exe: &Path, config: &Path, env: &[(&str, &str)]) -> anyhow::Result<Child> {
    let mut cmd = Command::new(exe);
    cmd.arg(AGENT_ENTRY)
        .arg("--config")
        .arg(config)
        .arg("run")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env(
            "FELHOM_LOG",
            std::env::var("FELHOM_LOG").unwrap_or_else(|_| "info".into()),
        )
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    if nix::unistd::geteuid().is_root() {
        std::os::unix::process::CommandExt::uid(&mut cmd, UNPRIVILEGED_ID);
        std::os::unix::process::CommandExt::gid(&mut cmd, UNPRIVILEGED_ID);
        // std also clears root's supplementary groups when a uid is set from root.
    }
    cmd.spawn().context("cannot start the agent")
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
