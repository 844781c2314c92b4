//! The simulated host's in-memory state and its task engine.
//!
//! [`SimState`] is shared between the HTTP handlers and tests: tests can inspect and mutate
//! everything through [`SimState::with`] (e.g. put a lock on a guest, add a backup, read a
//! task log). Tasks follow PVE's lifecycle: registered `running` with a UPID at once, the
//! work is applied after the configured duration, then `stopped` with `exitstatus` `OK` or an
//! error text; the log ends with `TASK OK` / `TASK ERROR: <text>` like real task logs.
//! Each running task has a worker process, as PVE forks one per task: its pid and start time
//! are the UPID's `pid` and `pstart`, and it exits the moment the task stops (after the final
//! log line and status are in place), so a client on the same machine can watch it.
//! A guest lock taken for a task (`backup`, `snapshot`, `create`, …) is stored as the `lock`
//! config key (as PVE does in the guest config) and released when the task ends.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{Datelike, Timelike};

use super::acl::{AccessConfig, TokenEntry};
use super::faults::Faults;
use super::fixture::{
    BackupFixture, Fixture, GuestStatus, NodeFixture, SnapshotFixture, StorageFixture,
    VersionFixture,
};

/// An LXC guest.
#[derive(Debug, Clone)]
pub struct Guest {
    pub vmid: u32,
    pub status: GuestStatus,
    /// Raw config keys (values as in the `.conf` file); `lock` lives here too.
    pub config: BTreeMap<String, String>,
    pub snapshots: Vec<SnapshotFixture>,
    /// Unix time the guest was started (for `uptime`), when running.
    pub started_at: Option<i64>,
}

impl Guest {
    /// The guest's current lock, if any.
    pub fn lock(&self) -> Option<&str> {
        self.config.get("lock").map(String::as_str)
    }

    /// The hostname (PVE's `name`).
    pub fn name(&self) -> String {
        self.config
            .get("hostname")
            .cloned()
            .unwrap_or_else(|| format!("CT{}", self.vmid))
    }

    /// Uptime in seconds (0 when stopped).
    pub fn uptime(&self) -> u64 {
        match (self.status, self.started_at) {
            (GuestStatus::Running, Some(t)) => u64::try_from(now() - t).unwrap_or(0),
            (GuestStatus::Running, None) | (GuestStatus::Stopped, _) => 0,
        }
    }
}

/// A backup volume with the config it archived.
#[derive(Debug, Clone)]
pub struct Backup {
    pub volid: String,
    pub vmid: u32,
    pub ctime: i64,
    pub size: u64,
    pub notes: Option<String>,
    pub protected: bool,
    pub config: BTreeMap<String, String>,
}

impl Backup {
    /// The storage id part of the volid.
    pub fn storage(&self) -> &str {
        self.volid.split_once(':').map_or("", |(s, _)| s)
    }

    /// PVE's `format` for the volume.
    pub fn format(&self) -> &'static str {
        if self.volid.contains(":backup/ct/") {
            "pbs-ct"
        } else if self.volid.ends_with(".tar.zst") {
            "tar.zst"
        } else if self.volid.ends_with(".tar.gz") {
            "tar.gz"
        } else {
            "tar"
        }
    }
}

/// Task run state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskState {
    Running,
    Stopped { exitstatus: String, endtime: i64 },
}

/// A task (worker) as PVE lists it.
#[derive(Debug, Clone)]
pub struct Task {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: i64,
    pub kind: String,
    pub id: String,
    pub user: String,
    pub state: TaskState,
    pub log: Vec<String>,
}

/// How often a task's status was read and when it stopped (to the instant; `endtime` has whole
/// seconds only).
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskTiming {
    /// `GET …/tasks/{upid}/status` answers given for it.
    pub status_reads: u32,
    pub ended_at: Option<std::time::Instant>,
}

/// Everything the simulated node knows.
#[derive(Debug)]
pub struct World {
    pub node: NodeFixture,
    pub version: VersionFixture,
    pub access: AccessConfig,
    pub storages: Vec<StorageFixture>,
    pub guests: BTreeMap<u32, Guest>,
    pub backups: Vec<Backup>,
    pub tasks: Vec<Task>,
    /// Per task (by UPID), what the task-wait benchmark measures.
    pub task_timing: BTreeMap<String, TaskTiming>,
    /// Authenticated requests answered, by `METHOD /path` (path below `/api2/json`, no query):
    /// what tests count to see how many calls the agent makes.
    pub request_counts: BTreeMap<String, u32>,
    /// `pbs` storages backed by a PBS simulator (see [`super::pbs_link`]).
    pub pbs_links: Vec<PbsLink>,
    /// Encryption keys of `pbs` storages, by storage id: what storage.cfg's `encryption-key`
    /// records (the fingerprint), and, without [`World::priv_dir`], the key itself.
    pub storage_keys: BTreeMap<String, crate::pbs::PbsKey>,
    /// `/etc/pve/priv` on disk: then the key used is the file `storage/<id>.enc`.
    pub priv_dir: Option<std::path::PathBuf>,
    /// Worker processes of running tasks, by UPID (killed when the task stops or the
    /// simulator goes away).
    workers: BTreeMap<String, tokio::process::Child>,
    next_pid: u32,
    pstart: u32,
    next_mac: u32,
}

impl World {
    /// Builds the world from a fixture, generating missing token secrets.
    pub fn from_fixture(f: Fixture) -> World {
        let mut access = AccessConfig::default();
        for u in &f.users {
            access.users.insert(u.userid.clone(), u.enable);
        }
        for t in &f.tokens {
            let secret = t
                .secret
                .clone()
                .unwrap_or_else(|| random_uuid(&mut rand::rng()));
            access.tokens.insert(
                t.authid.clone(),
                TokenEntry {
                    privsep: t.privsep,
                    secret,
                },
            );
        }
        for r in &f.roles {
            access
                .roles
                .insert(r.roleid.clone(), r.privs.iter().cloned().collect());
        }
        access.acls = f.acls.clone();
        let started = now();
        let guests = f
            .guests
            .iter()
            .map(|g| {
                let started_at = match g.status {
                    GuestStatus::Running => Some(started - i64::try_from(g.uptime).unwrap_or(0)),
                    GuestStatus::Stopped => None,
                };
                (
                    g.vmid,
                    Guest {
                        vmid: g.vmid,
                        status: g.status,
                        config: g.config.clone(),
                        snapshots: g.snapshots.clone(),
                        started_at,
                    },
                )
            })
            .collect();
        let backups = f.backups.iter().map(backup_from_fixture).collect();
        // Fixture keys are checked by `Fixture::check`; one that does not parse is left out
        // (`PveSim::start` refuses such a fixture before getting here).
        let storage_keys = f
            .storages
            .iter()
            .filter_map(|s| {
                let key = crate::pbs::PbsKey::from_json(s.encryption_key.as_deref()?).ok()?;
                Some((s.storage.clone(), key))
            })
            .collect();
        let mut rng = rand::rng();
        World {
            node: f.node,
            version: f.version,
            access,
            storages: f.storages,
            guests,
            backups,
            tasks: Vec::new(),
            task_timing: BTreeMap::new(),
            request_counts: BTreeMap::new(),
            pbs_links: Vec::new(),
            storage_keys,
            priv_dir: None,
            workers: BTreeMap::new(),
            next_pid: rand::Rng::random_range(&mut rng, 100_000..900_000),
            pstart: rand::Rng::random_range(&mut rng, 1_000_000..90_000_000),
            next_mac: rand::Rng::random_range(&mut rng, 0..0x00FF_0000),
        }
    }

    /// Keeps storage keys as files under `dir` (`storage/<id>.enc`, 0600 in a 0700 directory),
    /// writing the fixture's keys there.
    pub fn use_priv_dir(&mut self, dir: std::path::PathBuf) -> Result<(), String> {
        self.priv_dir = Some(dir);
        for (sid, key) in self.storage_keys.clone() {
            self.write_key_file(&sid, Some(&key))?;
        }
        Ok(())
    }

    fn key_path(&self, sid: &str) -> Option<std::path::PathBuf> {
        self.priv_dir
            .as_ref()
            .map(|d| d.join("storage").join(format!("{sid}.enc")))
    }

    pub(crate) fn write_key_file(
        &self,
        sid: &str,
        key: Option<&crate::pbs::PbsKey>,
    ) -> Result<(), String> {
        let name = format!("{sid}.enc");
        match key {
            Some(k) => self.write_priv_file(&name, &format!("{}\n", k.to_json())),
            None => {
                let Some(path) = self.key_path(sid) else {
                    return Ok(());
                };
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        Err(format!("{}: {e}", path.display()))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Renames `priv/storage/<from>` to `<to>` when it exists (PVE's `rename`, which replaces
    /// `<to>`).
    pub(crate) fn rename_priv_file(&self, from: &str, to: &str) -> Result<(), String> {
        let Some(dir) = &self.priv_dir else {
            return Ok(());
        };
        let dir = dir.join("storage");
        match std::fs::rename(dir.join(from), dir.join(to)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(format!("{from}: {e}")),
            _ => Ok(()),
        }
    }

    /// Writes `priv/storage/<name>` (0600, in 0700 directories) when the simulator keeps a
    /// private directory.
    pub(crate) fn write_priv_file(&self, name: &str, text: &str) -> Result<(), String> {
        use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
        let Some(priv_dir) = &self.priv_dir else {
            return Ok(());
        };
        let dir = priv_dir.join("storage");
        let path = dir.join(name);
        let err = |e: std::io::Error| format!("{}: {e}", path.display());
        std::fs::create_dir_all(&dir).map_err(err)?;
        for d in [priv_dir, &dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
        let _ = std::fs::remove_file(&path);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(err)
    }

    /// The key a backup or restore of `sid` uses, as PBSPlugin's `pbs_open_encryption_key`:
    /// the key file if there is one; none if there is none and storage.cfg names no key; an
    /// error (PVE's text) when storage.cfg names a key whose file is gone.
    pub fn key_in_use(&self, sid: &str) -> Result<Option<crate::pbs::PbsKey>, String> {
        let Some(path) = self.key_path(sid) else {
            return Ok(self.storage_keys.get(sid).cloned());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => crate::pbs::PbsKey::from_json(&text)
                .map(Some)
                .map_err(|e| format!("failed to open encryption key: {}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match self.storage_keys.get(sid) {
                    Some(k) => Err(format!(
                        "encryption configured ('{}') but no encryption key file found!",
                        k.fingerprint()
                    )),
                    None => Ok(None),
                }
            }
            Err(e) => Err(format!(
                "failed to open encryption key: {}: {e}",
                path.display()
            )),
        }
    }

    /// A storage by id.
    pub fn storage(&self, sid: &str) -> Option<&StorageFixture> {
        self.storages.iter().find(|s| s.storage == sid)
    }

    /// A task by UPID.
    pub fn task(&self, upid: &str) -> Option<&Task> {
        self.tasks.iter().find(|t| t.upid == upid)
    }

    /// A fresh Proxmox-style MAC (`BC:24:11:xx:xx:xx`).
    pub fn new_hwaddr(&mut self) -> String {
        self.next_mac = self.next_mac.wrapping_add(0x01_0203) & 0x00FF_FFFF;
        let b = self.next_mac.to_be_bytes();
        format!("BC:24:11:{:02X}:{:02X}:{:02X}", b[1], b[2], b[3])
    }

    /// A worker process for a new task, with its pid and start time. Where no process can be
    /// started, a made-up pid (as the simulator had before): the client then just polls.
    fn spawn_worker(&mut self) -> (Option<tokio::process::Child>, u32, u64) {
        if let Ok(child) = tokio::process::Command::new("sleep")
            .arg("infinity")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            && let Some(pid) = child.id()
            && let Some(pstart) = proc_start_time(pid)
        {
            return (Some(child), pid, pstart);
        }
        self.next_pid += 1;
        (None, self.next_pid, u64::from(self.pstart))
    }

    /// Ends a task's worker process (the task has stopped).
    fn end_worker(&mut self, upid: &str) {
        if let Some(mut child) = self.workers.remove(upid) {
            // Killed now; tokio reaps it in the background once dropped.
            let _ = child.start_kill();
        }
    }
}

/// Field 22 of `/proc/<pid>/stat`: start time in clock ticks since boot (PVE's `pstart`).
fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_ascii_whitespace().nth(19)?.parse().ok()
}

fn backup_from_fixture(b: &BackupFixture) -> Backup {
    Backup {
        volid: b.volid.clone(),
        vmid: b.vmid,
        ctime: b.ctime,
        size: b.size,
        notes: b.notes.clone(),
        protected: b.protected,
        config: b.config.clone(),
    }
}

/// What a task does when its time is up. Returns `Ok(warnings)` or the error text.
pub type TaskWork = Box<dyn FnOnce(&mut World, &mut Vec<String>) -> Result<u32, String> + Send>;

/// A task about to be started.
pub struct TaskPlan {
    pub kind: &'static str,
    pub id: String,
    pub user: String,
    /// Guest lock held while the task runs.
    pub lock: Option<(u32, &'static str)>,
    /// Log lines written at once.
    pub first_lines: Vec<String>,
    pub work: TaskWork,
}

/// Shared, lockable simulator state plus the task engine.
#[derive(Clone)]
pub struct SimState {
    world: Arc<Mutex<World>>,
    faults: Faults,
    task_duration: Duration,
    fingerprint: Arc<str>,
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState")
            .field("task_duration", &self.task_duration)
            .finish_non_exhaustive()
    }
}

impl SimState {
    pub(crate) fn new(
        world: World,
        faults: Faults,
        task_duration: Duration,
        fingerprint: String,
    ) -> SimState {
        SimState {
            world: Arc::new(Mutex::new(world)),
            faults,
            task_duration,
            fingerprint: fingerprint.into(),
        }
    }

    /// The node certificate's SHA-256 fingerprint (`AA:BB:…`).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// What `pct create <vmid> … --features …` run as root on the node does: creates a stopped
    /// guest with `config` directly, bypassing the API (no privilege checks — the root CLI).
    /// Fails when the vmid is taken, with PVE's text.
    pub fn create_as_root(
        &self,
        vmid: u32,
        config: BTreeMap<String, String>,
    ) -> Result<(), String> {
        let mut w = self.lock();
        if w.guests.contains_key(&vmid) {
            return Err(format!(
                "CT {vmid} already exists on node '{}'",
                w.node.name
            ));
        }
        w.guests.insert(
            vmid,
            Guest {
                vmid,
                status: GuestStatus::Stopped,
                config,
                snapshots: Vec::new(),
                started_at: None,
            },
        );
        Ok(())
    }

    /// Runs `f` with the world locked (tests: inspect or mutate anything).
    pub fn with<R>(&self, f: impl FnOnce(&mut World) -> R) -> R {
        f(&mut self.lock())
    }

    /// A copy of a guest.
    pub fn guest(&self, vmid: u32) -> Option<Guest> {
        self.lock().guests.get(&vmid).cloned()
    }

    /// Sets or clears a guest's lock (as `pct set --lock` would).
    pub fn set_lock(&self, vmid: u32, lock: Option<&str>) {
        if let Some(g) = self.lock().guests.get_mut(&vmid) {
            match lock {
                Some(l) => g.config.insert("lock".to_owned(), l.to_owned()),
                None => g.config.remove("lock"),
            };
        }
    }

    /// Copies of all tasks, oldest first.
    pub fn tasks(&self) -> Vec<Task> {
        self.lock().tasks.clone()
    }

    /// How many authenticated `method` requests `path` (below `/api2/json`) has answered.
    pub fn request_count(&self, method: &str, path: &str) -> u32 {
        let key = format!("{method} {path}");
        self.lock().request_counts.get(&key).copied().unwrap_or(0)
    }

    /// A copy of one task.
    pub fn task(&self, upid: &str) -> Option<Task> {
        self.lock().task(upid).cloned()
    }

    /// The fingerprint storage.cfg records for a `pbs` storage's key (`encryption-key`).
    pub fn storage_key_fingerprint(&self, storage: &str) -> Option<String> {
        self.lock()
            .storage_keys
            .get(storage)
            .map(crate::pbs::PbsKey::fingerprint)
    }

    /// Sets or removes a `pbs` storage's encryption key, as `pvesm set <storage>
    /// --encryption-key <key JSON>` / `--delete encryption-key` do: the key goes to
    /// `/etc/pve/priv/storage/<storage>.enc` and the config shows its fingerprint.
    pub fn set_pbs_encryption_key(
        &self,
        storage: &str,
        key: Option<crate::pbs::PbsKey>,
    ) -> Result<(), String> {
        let mut w = self.lock();
        match w.storage(storage) {
            Some(s) if s.kind == "pbs" => {}
            Some(s) => {
                return Err(format!(
                    "storage '{storage}' is of type {}, not pbs",
                    s.kind
                ));
            }
            None => return Err(format!("storage '{storage}' does not exist")),
        }
        w.write_key_file(storage, key.as_ref())?;
        match key {
            Some(k) => w.storage_keys.insert(storage.to_owned(), k),
            None => w.storage_keys.remove(storage),
        };
        Ok(())
    }

    /// Creates a guest directly in the node's config (a guest some other tool or person made,
    /// e.g. one tagged `felhom-scratch` that the agent must leave alone). Fails when the vmid
    /// is taken, with PVE's text.
    pub fn add_guest(
        &self,
        vmid: u32,
        status: GuestStatus,
        config: BTreeMap<String, String>,
    ) -> Result<(), String> {
        self.create_as_root(vmid, config)?;
        if status == GuestStatus::Running {
            let mut w = self.lock();
            if let Some(g) = w.guests.get_mut(&vmid) {
                g.status = GuestStatus::Running;
                g.started_at = Some(now());
            }
        }
        Ok(())
    }

    /// Full token string `authid=secret` for a fixture token.
    pub fn token(&self, authid: &str) -> Option<String> {
        self.lock()
            .access
            .tokens
            .get(authid)
            .map(|t| format!("{authid}={}", t.secret))
    }

    /// Node name.
    pub fn node(&self) -> String {
        self.lock().node.name.clone()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        // A panic while holding the lock only happens in a failing test; keep serving.
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a task (taking its guest lock) and schedules its completion. Must be called
    /// with the world locked by the caller (`world`), from inside a tokio runtime.
    pub(crate) fn start_task(&self, world: &mut World, plan: TaskPlan) -> String {
        let (worker, pid, pstart) = world.spawn_worker();
        let starttime = now();
        let upid = format!(
            "UPID:{}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
            world.node.name,
            pid,
            pstart,
            u32::try_from(starttime).unwrap_or(u32::MAX),
            plan.kind,
            plan.id,
            plan.user
        );
        if let Some((vmid, lock)) = plan.lock
            && let Some(g) = world.guests.get_mut(&vmid)
        {
            g.config.insert("lock".to_owned(), lock.to_owned());
        }
        world.tasks.push(Task {
            upid: upid.clone(),
            node: world.node.name.clone(),
            pid,
            pstart,
            starttime,
            kind: plan.kind.to_owned(),
            id: plan.id.clone(),
            user: plan.user.clone(),
            state: TaskState::Running,
            log: plan.first_lines,
        });
        if let Some(child) = worker {
            world.workers.insert(upid.clone(), child);
        }
        if self.faults.take_hang(plan.kind) {
            return upid;
        }
        let forced = self.faults.take_task_failure(plan.kind);
        let state = self.clone();
        let task_upid = upid.clone();
        let lock = plan.lock;
        let (kind, id) = (plan.kind, plan.id);
        let mut work = Some(plan.work);
        tokio::spawn(async move {
            tokio::time::sleep(state.task_duration).await;
            let mut w = state.lock();
            let mut lines = Vec::new();
            let result = match forced {
                Some(failure) => {
                    let status = failure.unwrap_or_else(|| default_failure(kind, &id));
                    lines.extend(failure_lines(kind, &id, &status));
                    Err(status)
                }
                None => match work.take() {
                    Some(f) => f(&mut w, &mut lines),
                    None => Ok(0),
                },
            };
            if let Some((vmid, l)) = lock
                && let Some(g) = w.guests.get_mut(&vmid)
                && g.lock() == Some(l)
            {
                g.config.remove("lock");
            }
            let endtime = now();
            if let Some(t) = w.tasks.iter_mut().find(|t| t.upid == task_upid) {
                t.log.extend(lines);
                let exitstatus = match result {
                    Ok(0) => {
                        t.log.push("TASK OK".to_owned());
                        "OK".to_owned()
                    }
                    Ok(n) => {
                        t.log.push(format!("TASK WARNINGS: {n}"));
                        format!("WARNINGS: {n}")
                    }
                    Err(e) => {
                        t.log.push(format!("TASK ERROR: {e}"));
                        e
                    }
                };
                t.state = TaskState::Stopped {
                    exitstatus,
                    endtime,
                };
                w.task_timing.entry(task_upid.clone()).or_default().ended_at =
                    Some(std::time::Instant::now());
            }
            w.end_worker(&task_upid);
        });
        upid
    }
}

/// Realistic default exit status when a fault makes a task fail.
fn default_failure(kind: &str, id: &str) -> String {
    match kind {
        "vzdump" => "job errors".to_owned(),
        "vzstart" => format!("startup for container '{id}' failed"),
        "vzsnapshot" => "command 'lvcreate --snapshot' failed: exit code 5".to_owned(),
        _ => format!("command '{kind} {id}' failed: exit code 1"),
    }
}

fn failure_lines(kind: &str, id: &str, status: &str) -> Vec<String> {
    match kind {
        "vzdump" => vec![
            format!("INFO: Starting Backup of VM {id} (lxc)"),
            format!("INFO: Backup started at {}", pve_time(now())),
            format!(
                "ERROR: Backup of VM {id} failed - command 'set -o pipefail && lxc-usernsexec -m u:0:100000:65536 -m g:0:100000:65536 -- tar cpf - --totals --one-file-system -p --sparse --numeric-owner --acls --xattrs ./etc/vzdump/pct.conf ./' failed: exit code 2"
            ),
            "INFO: Failed at ".to_owned() + &pve_time(now()),
            "INFO: Backup job finished with errors".to_owned(),
        ],
        // What lxc-start prints when a container fails to come up (field reports of failed
        // `vzstart` tasks), before the worker's `startup for container '<vmid>' failed`.
        "vzstart" => vec![
            "run_buffer: 571 Script exited with status 1".to_owned(),
            format!("lxc_init: 845 Failed to run lxc.hook.pre-start for container \"{id}\""),
            format!("__lxc_start: 2034 Failed to initialize container \"{id}\""),
        ],
        _ => vec![status.to_owned()],
    }
}

/// Unix time now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) as vzdump logs it.
pub fn pve_time(t: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(t);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// Calendar parts (UTC) of a unix time: year, month, day, hour, minute, second.
pub fn civil(t: i64) -> (i64, i64, i64, i64, i64, i64) {
    let dt = crate::utc::datetime(t);
    (
        i64::from(dt.year()),
        i64::from(dt.month()),
        i64::from(dt.day()),
        i64::from(dt.hour()),
        i64::from(dt.minute()),
        i64::from(dt.second()),
    )
}

/// A random v4 UUID string (token secrets).
pub fn random_uuid(rng: &mut impl rand::Rng) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Links a PVE storage id to a PBS simulator's datastore.
#[derive(Debug, Clone)]
pub struct PbsLink {
    /// The PVE storage id (type `pbs`), e.g. `felhom-pbs`.
    pub storage: String,
    /// The PBS simulator's state.
    pub pbs: crate::pbs::PbsState,
    /// The datastore on the PBS side.
    pub datastore: String,
    /// PBS port (what the storage's `port` becomes).
    pub port: u16,
    /// PBS certificate fingerprint (what the storage's `fingerprint` becomes).
    pub fingerprint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_time_matches_known_date() {
        // 2026-06-09 21:32:58 UTC
        assert_eq!(pve_time(1_781_040_778), "2026-06-09 21:32:58");
    }
}
