//! The simulated PBS's state and behaviour: datastores, access control, tasks, and the verify
//! worker. Shared between the HTTP handlers and tests (`PbsSimHandle::state`).
//!
//! Verify, as in proxmox-backup `src/api2/admin/datastore.rs` (`verify`) and
//! `src/backup/verify.rs`: the POST checks privileges and parameters and starts a worker
//! (`verify_snapshot` with worker id `<store>:<ns path>/<type>/<id>/<time %08X>`, `verify_group`
//! with `<store>:<ns path>/<type>/<id>`, or `verify` with `<store>` / `<store>:<ns path>`); the
//! worker skips snapshots already verified when `ignore-verified` (default true) unless the last
//! verify is older than `outdated-after` days, logs `verify <store>:<dir>` and `  check <file>`
//! per manifest file, writes `{state, upid}` into each verified snapshot's `verification`, and,
//! when anything failed, logs `Failed to verify the following snapshots/groups:` plus one
//! tab-indented line per failed snapshot and ends with the error
//! `verification failed - please check the log for details` (log: `TASK ERROR: <that>`);
//! otherwise `TASK OK`. Log lines are `<RFC 3339 time>: <message>`.
//!
//! Simplifications: damage exists only where a test injects it ([`PbsState::fail_verify`]);
//! sizes and speeds in the log are computed from the listed sizes; the progress lines follow
//! `StoreProgress`'s shape from memory; tasks last a fixed time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::acl::{Access, AclEntry, Role, check_backup_owner, user_of};
use super::fixture::PbsFixture;
use super::model::{
    BackupType, SimSnapshot, SimVerification, VerifyState, now_epoch, ns_display_as_path,
    rfc3339_utc,
};

/// The text PBS's verify ends with when any snapshot failed.
pub const VERIFY_FAILED: &str = "verification failed - please check the log for details";

/// One task the simulator ran or runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimTask {
    pub upid: String,
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub task_id: u64,
    pub starttime: i64,
    pub worker_type: String,
    /// Unescaped.
    pub worker_id: Option<String>,
    pub authid: String,
    /// `None` while running; then `OK` or the error message.
    pub exitstatus: Option<String>,
    /// Lines as written: `<time>: <message>`.
    pub log: Vec<String>,
    /// `GET …/tasks/{upid}/status` answers given for it (for the task-wait benchmark).
    pub status_reads: u32,
    /// When it stopped.
    pub ended_at: Option<std::time::Instant>,
}

/// Damage a verify will find: `file` of the snapshot fails its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFault {
    pub store: String,
    pub ns: Option<String>,
    pub backup_type: BackupType,
    pub backup_id: String,
    pub backup_time: i64,
    pub file: String,
}

/// What one verify task covers.
#[derive(Debug, Clone)]
pub(crate) enum VerifyTarget {
    Snapshot(BackupType, String, i64),
    Group(BackupType, String),
    All,
}

/// A verify to run when its task finishes.
#[derive(Debug, Clone)]
pub(crate) struct VerifyJob {
    pub store: String,
    pub ns: Option<String>,
    pub target: VerifyTarget,
    pub ignore_verified: bool,
    pub outdated_after: Option<i64>,
    /// Only groups owned by this authid (partial privileges).
    pub owner: Option<String>,
}

/// Everything the simulated server knows.
#[derive(Debug)]
pub struct World {
    pub node: String,
    pub datastores: BTreeMap<String, Vec<SimSnapshot>>,
    pub access: Access,
    pub tasks: BTreeMap<String, SimTask>,
    pub faults: Vec<VerifyFault>,
    pid: u32,
    pstart: u64,
    next_task_id: u64,
}

/// Shared handle on the simulator's state.
#[derive(Debug, Clone)]
pub struct PbsState {
    world: Arc<Mutex<World>>,
    task_duration: Duration,
}

fn random_secret() -> String {
    let b: [u8; 16] = rand::random();
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

impl PbsState {
    pub(crate) fn new(fixture: PbsFixture, task_duration: Duration) -> Self {
        let mut access = Access::default();
        access.users.extend(fixture.users);
        for t in fixture.tokens {
            access
                .tokens
                .insert(t.authid, t.secret.unwrap_or_else(random_secret));
        }
        access.acl = fixture.acl;
        let world = World {
            node: fixture.node,
            datastores: fixture
                .datastores
                .into_iter()
                .map(|d| (d.name, d.snapshots))
                .collect(),
            access,
            tasks: BTreeMap::new(),
            faults: Vec::new(),
            pid: std::process::id(),
            pstart: 0x00A1_B2C3,
            next_task_id: 0,
        };
        PbsState {
            world: Arc::new(Mutex::new(world)),
            task_duration,
        }
    }

    /// Locks the world (poisoning is ignored: a panicked test must not hide the state).
    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The node name (what UPIDs carry).
    pub fn node(&self) -> String {
        self.lock().node.clone()
    }

    /// The full `authid:secret` of a token.
    pub fn token(&self, authid: &str) -> Option<String> {
        self.lock()
            .access
            .tokens
            .get(authid)
            .map(|s| format!("{authid}:{s}"))
    }

    /// All token authids.
    pub fn token_ids(&self) -> Vec<String> {
        self.lock().access.tokens.keys().cloned().collect()
    }

    /// Adds a user (`name@realm`).
    pub fn add_user(&self, userid: &str) {
        self.lock().access.users.insert(userid.to_owned());
    }

    /// Adds a token for an existing user and returns its full `authid:secret`.
    pub fn add_token(&self, authid: &str) -> String {
        let secret = random_secret();
        self.lock()
            .access
            .tokens
            .insert(authid.to_owned(), secret.clone());
        format!("{authid}:{secret}")
    }

    /// Grants `role` on `path` to a user or token (propagating, like the GUI default).
    pub fn grant(&self, path: &str, ugid: &str, role: Role) {
        self.lock().access.acl.push(AclEntry {
            path: path.to_owned(),
            ugid: ugid.to_owned(),
            role,
            propagate: true,
        });
    }

    /// The snapshots of a datastore (all namespaces).
    pub fn snapshots(&self, store: &str) -> Vec<SimSnapshot> {
        self.lock()
            .datastores
            .get(store)
            .cloned()
            .unwrap_or_default()
    }

    /// One snapshot of the root namespace.
    pub fn snapshot(
        &self,
        store: &str,
        backup_type: BackupType,
        backup_id: &str,
        backup_time: i64,
    ) -> Option<SimSnapshot> {
        self.snapshots(store).into_iter().find(|s| {
            s.in_ns(None)
                && s.backup_type == backup_type
                && s.backup_id == backup_id
                && s.backup_time == backup_time
        })
    }

    /// Adds a snapshot (creating the datastore if needed).
    pub fn add_snapshot(&self, store: &str, snapshot: SimSnapshot) {
        self.lock()
            .datastores
            .entry(store.to_owned())
            .or_default()
            .push(snapshot);
    }

    /// Removes a root-namespace snapshot (what `proxmox-backup-client forget`, a prune or a
    /// `DELETE .../snapshots` does); true when it existed.
    pub fn forget_snapshot(
        &self,
        store: &str,
        backup_type: BackupType,
        backup_id: &str,
        backup_time: i64,
    ) -> bool {
        let mut w = self.lock();
        let Some(list) = w.datastores.get_mut(store) else {
            return false;
        };
        let before = list.len();
        list.retain(|s| {
            !(s.in_ns(None)
                && s.backup_type == backup_type
                && s.backup_id == backup_id
                && s.backup_time == backup_time)
        });
        list.len() != before
    }

    /// Makes the next verifies of a root-namespace snapshot find `file` damaged.
    pub fn fail_verify(
        &self,
        store: &str,
        backup_type: BackupType,
        backup_id: &str,
        backup_time: i64,
        file: &str,
    ) -> Result<(), String> {
        let snap = self
            .snapshot(store, backup_type, backup_id, backup_time)
            .ok_or_else(|| {
                format!(
                    "no snapshot {}/{backup_id}/{backup_time} in {store}",
                    backup_type.as_str()
                )
            })?;
        if !snap
            .files
            .iter()
            .any(|f| f.filename == file && f.crypt_mode.is_some())
        {
            return Err(format!(
                "snapshot {} has no manifest file {file}",
                snap.dir()
            ));
        }
        self.lock().faults.push(VerifyFault {
            store: store.to_owned(),
            ns: None,
            backup_type,
            backup_id: backup_id.to_owned(),
            backup_time,
            file: file.to_owned(),
        });
        Ok(())
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// A task by UPID text.
    pub fn task(&self, upid: &str) -> Option<SimTask> {
        self.lock().tasks.get(upid).cloned()
    }

    /// Registers a running verify task and schedules its work; returns the UPID.
    pub(crate) fn start_verify(
        &self,
        worker_type: &str,
        worker_id: String,
        authid: &str,
        job: VerifyJob,
    ) -> String {
        let upid = {
            let mut w = self.lock();
            let task_id = w.next_task_id;
            w.next_task_id += 1;
            let starttime = now_epoch();
            let upid = format!(
                "UPID:{}:{:08X}:{:08X}:{:08X}:{:08X}:{}:{}:{}:",
                w.node,
                w.pid,
                w.pstart,
                task_id,
                starttime,
                worker_type,
                escape_worker_id(&worker_id),
                authid
            );
            let task = SimTask {
                upid: upid.clone(),
                node: w.node.clone(),
                pid: w.pid,
                pstart: w.pstart,
                task_id,
                starttime,
                worker_type: worker_type.to_owned(),
                worker_id: Some(worker_id),
                authid: authid.to_owned(),
                exitstatus: None,
                log: Vec::new(),
                status_reads: 0,
                ended_at: None,
            };
            w.tasks.insert(upid.clone(), task);
            upid
        };
        let state = self.clone();
        let task_upid = upid.clone();
        tokio::spawn(async move {
            tokio::time::sleep(state.task_duration).await;
            state.lock().run_verify(&task_upid, &job);
        });
        upid
    }
}

impl World {
    fn log(&mut self, upid: &str, msg: impl Into<String>) {
        let line = format!("{}: {}", rfc3339_utc(now_epoch(), "+00:00"), msg.into());
        if let Some(t) = self.tasks.get_mut(upid) {
            t.log.push(line);
        }
    }

    /// Runs a verify job to completion (called when its task's time is up).
    fn run_verify(&mut self, upid: &str, job: &VerifyJob) {
        let store = job.store.clone();
        let in_scope = |s: &SimSnapshot| s.in_ns(job.ns.as_deref());
        let snaps: Vec<SimSnapshot> = self.datastores.get(&store).cloned().unwrap_or_default();
        let mut failed = Vec::new();
        match &job.target {
            VerifyTarget::Snapshot(t, id, time) => {
                match snaps.iter().position(|s| {
                    in_scope(s)
                        && s.backup_type == *t
                        && &s.backup_id == id
                        && s.backup_time == *time
                }) {
                    Some(i) => {
                        if !self.verify_dir(upid, job, &snaps[i]) {
                            failed.push(snaps[i].ns_and_dir());
                        }
                    }
                    None => {
                        let dir = format!("{}/{id}/{}", t.as_str(), rfc3339_utc(*time, "Z"));
                        self.log(
                            upid,
                            format!(
                                "SKIPPED: verify {store}:{dir} - snapshot does not exist (anymore)."
                            ),
                        );
                    }
                }
            }
            VerifyTarget::Group(t, id) => {
                failed = self.verify_group(upid, job, &snaps, (*t, id.clone()), None);
            }
            VerifyTarget::All => {
                self.log(upid, format!("verify datastore {store}"));
                if let Some(owner) = &job.owner {
                    self.log(upid, format!("limiting to backups owned by {owner}"));
                }
                let mut groups: Vec<(BackupType, String)> = snaps
                    .iter()
                    .filter(|s| in_scope(s))
                    .filter(|s| {
                        job.owner
                            .as_deref()
                            .is_none_or(|o| check_backup_owner(&s.owner, o).is_ok())
                    })
                    .map(|s| (s.backup_type, s.backup_id.clone()))
                    .collect();
                groups.sort_by(|a, b| {
                    a.0.cmp(&b.0)
                        .then_with(|| match (a.1.parse::<u64>(), b.1.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            _ => a.1.cmp(&b.1),
                        })
                });
                groups.dedup();
                let total = groups.len();
                self.log(upid, format!("found {total} groups"));
                for (pos, group) in groups.into_iter().enumerate() {
                    let mut errs = self.verify_group(upid, job, &snaps, group, Some((pos, total)));
                    failed.append(&mut errs);
                }
            }
        }
        let result = if failed.is_empty() {
            Ok(())
        } else {
            self.log(upid, "Failed to verify the following snapshots/groups:");
            for dir in &failed {
                self.log(upid, format!("\t{dir}"));
            }
            Err(VERIFY_FAILED.to_owned())
        };
        match result {
            Ok(()) => {
                self.log(upid, "TASK OK");
                if let Some(t) = self.tasks.get_mut(upid) {
                    t.exitstatus = Some("OK".into());
                    t.ended_at = Some(std::time::Instant::now());
                }
            }
            Err(msg) => {
                self.log(upid, format!("TASK ERROR: {msg}"));
                if let Some(t) = self.tasks.get_mut(upid) {
                    t.exitstatus = Some(msg);
                    t.ended_at = Some(std::time::Instant::now());
                }
            }
        }
    }

    /// `verify_backup_group`: newest first; returns the failed snapshots.
    fn verify_group(
        &mut self,
        upid: &str,
        job: &VerifyJob,
        snaps: &[SimSnapshot],
        (t, id): (BackupType, String),
        of_groups: Option<(usize, usize)>,
    ) -> Vec<String> {
        let mut list: Vec<&SimSnapshot> = snaps
            .iter()
            .filter(|s| s.in_ns(job.ns.as_deref()) && s.backup_type == t && s.backup_id == id)
            .collect();
        list.sort_by_key(|s| std::cmp::Reverse(s.backup_time));
        let n = list.len();
        self.log(
            upid,
            format!(
                "verify group {}:{}/{id} ({n} snapshots)",
                job.store,
                t.as_str()
            ),
        );
        let mut failed = Vec::new();
        for (pos, snap) in list.into_iter().enumerate() {
            if !self.verify_dir(upid, job, snap) {
                failed.push(snap.ns_and_dir());
            }
            let done = pos + 1;
            let line = match of_groups {
                None => format!(
                    "percentage done: {:.2}% ({done}/{n} snapshots)",
                    done as f64 * 100.0 / n as f64
                ),
                Some((g, total)) => format!(
                    "percentage done: {:.2}% ({g}/{total} groups, {done}/{n} snapshots in group #{})",
                    (g as f64 + done as f64 / n as f64) * 100.0 / total as f64,
                    g + 1
                ),
            };
            self.log(upid, line);
        }
        failed
    }

    /// `verify_backup_dir`: true when fine (or skipped).
    fn verify_dir(&mut self, upid: &str, job: &VerifyJob, snap: &SimSnapshot) -> bool {
        let store = job.store.clone();
        let dir = snap.dir();
        if job.ignore_verified
            && let Some(last) = &snap.verification
        {
            let reverify = job.outdated_after.is_some_and(|days| {
                let started = upid_starttime(&last.upid).unwrap_or(0);
                (now_epoch() - started) / 86_400 > days
            });
            if !reverify {
                self.log(
                    upid,
                    format!("SKIPPED: verify {store}:{dir} (recently verified)"),
                );
                return true;
            }
        }
        self.log(upid, format!("verify {store}:{dir}"));
        let mut errors = 0;
        for file in snap.files.iter().filter(|f| f.crypt_mode.is_some()) {
            if file.filename == "index.json.blob" {
                continue;
            }
            self.log(upid, format!("  check {}", file.filename));
            let damaged = self.faults.iter().any(|f| {
                f.store == store
                    && snap.in_ns(f.ns.as_deref())
                    && f.backup_type == snap.backup_type
                    && f.backup_id == snap.backup_id
                    && f.backup_time == snap.backup_time
                    && f.file == file.filename
            });
            let is_index = file.filename.ends_with(".didx") || file.filename.ends_with(".fidx");
            if is_index {
                let mib = file.size.unwrap_or(0) as f64 / (1024.0 * 1024.0);
                self.log(
                    upid,
                    format!(
                        "  verified {:.2}/{:.2} MiB in 0.10 seconds, speed {:.2}/{:.2} MiB/s ({} errors)",
                        mib * 0.6,
                        mib,
                        mib * 6.0,
                        mib * 10.0,
                        u32::from(damaged)
                    ),
                );
            }
            if damaged {
                let why = if is_index {
                    "chunks could not be verified"
                } else {
                    "wrong index checksum"
                };
                self.log(
                    upid,
                    format!("verify {store}:{dir}/{} failed: {why}", file.filename),
                );
                errors += 1;
            }
        }
        let state = if errors == 0 {
            VerifyState::Ok
        } else {
            VerifyState::Failed
        };
        if let Some(s) = self.datastores.get_mut(&store).and_then(|list| {
            list.iter_mut().find(|s| {
                s.ns == snap.ns
                    && s.backup_type == snap.backup_type
                    && s.backup_id == snap.backup_id
                    && s.backup_time == snap.backup_time
            })
        }) {
            s.verification = Some(SimVerification {
                state,
                upid: upid.to_owned(),
            });
        }
        errors == 0
    }

    /// May `authid` read this task (`check_task_access`)? Owner, the owning token's user, or
    /// Sys.Audit on `/system/tasks`.
    pub fn may_read_task(&self, authid: &str, task_authid: &str) -> bool {
        authid == task_authid
            || (task_authid.contains('!') && user_of(task_authid) == authid)
            || self.access.lookup_privs(authid, "/system/tasks") & super::acl::PRIV_SYS_AUDIT != 0
    }

    /// Whether a datastore of that name exists.
    pub fn datastore_exists(&self, store: &str) -> bool {
        self.datastores.contains_key(store)
    }
}

/// The starttime field of a UPID text.
pub fn upid_starttime(upid: &str) -> Option<i64> {
    let fields: Vec<&str> = upid.strip_prefix("UPID:")?.split(':').collect();
    i64::from_str_radix(fields.get(4)?, 16).ok()
}

/// systemd unit-name escaping as PBS applies it to worker ids.
pub fn escape_worker_id(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for (i, &c) in text.as_bytes().iter().enumerate() {
        if c == b'/' {
            out.push('-');
        } else if (i == 0 && c == b'.') || !(c == b'_' || c == b'.' || c.is_ascii_alphanumeric()) {
            out.push_str(&format!("\\x{c:02x}"));
        } else {
            out.push(c as char);
        }
    }
    out
}

/// The worker id part of a verify: `<store>:<ns path>/<type>/<id>[/<time %08X>]`, or the store
/// (`<store>:<ns path>` in a namespace) for a whole-datastore verify.
pub(crate) fn verify_worker(
    store: &str,
    ns: Option<&str>,
    target: &VerifyTarget,
) -> (&'static str, String) {
    let ns_path = ns.map(ns_display_as_path).unwrap_or_default();
    match target {
        VerifyTarget::Snapshot(t, id, time) => (
            "verify_snapshot",
            format!("{store}:{ns_path}/{}/{id}/{time:08X}", t.as_str()),
        ),
        VerifyTarget::Group(t, id) => (
            "verify_group",
            format!("{store}:{ns_path}/{}/{id}", t.as_str()),
        ),
        VerifyTarget::All if ns_path.is_empty() => ("verify", store.to_owned()),
        VerifyTarget::All => ("verify", format!("{store}:{ns_path}")),
    }
}
