//! Backups, PBS verify and their status: what the LocalApi and Agent services call.
//!
//! A backup job runs on the guest's queue: for each tier it backs up to, one vzdump through the
//! Proxmox VE API, waited on its UPID; the mode vzdump really used (`INFO: backup mode: …`) and
//! the archive it wrote are read from the task log and recorded with the mode that was asked
//! for. A tier configured as encrypted fails closed: no key file (or a file that is not a PBS
//! client key) → that tier's run fails before vzdump is called; and when the PBS API is
//! configured, a snapshot that landed unencrypted, or encrypted with another key than the
//! escrowed one, fails the run too.
//!
//! Starting is idempotent per guest: while a backup job of the guest is queued or running,
//! another start answers that job instead of queueing a second one.
//!
//! A verify job finds the guest's newest snapshot on a PBS tier, asks PBS to verify it
//! (`ignore-verified=false`, so it really runs), waits for the task on the node the PBS UPID
//! names and reads `verification.state` back.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use felhom_proto::agent::v1 as pb;
use tokio_util::sync::CancellationToken;

use super::due::{self, Due, PolicyState};
use super::settings::{BackupSettings, Policy, Tier, TierKind};
use crate::core::InvalidValue;
use crate::core::error_chain as chain;
use crate::infra::pbs::{BackupType, PbsClient, PbsError, PbsUpid, VerifyRequest, VerifyState};
use crate::infra::pve::types::StorageVolume;
use crate::infra::pve::{PveClient, PveError, Upid, Vmid, VzdumpRequest, WaitOptions};
use crate::infra::queue::{GuestQueue, QueueError};
use crate::infra::state::{BackupsError, JobId, JobPhase, JobsError, StateDb, Timestamp};

/// Job kind of backups in the queue and job history.
pub const KIND_BACKUP: &str = "backup";
/// Job kind of PBS verifies.
pub const KIND_VERIFY: &str = "verify";

/// Who asked for a backup; decides how consistent it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The guest's controller quiesced its apps and called POST /backup: app-consistent.
    Controller,
    /// The agent's scheduler, after the grace window: crash-consistent.
    Schedule,
    /// An operator (felhomctl backup now): crash-consistent.
    Operator,
}

impl Trigger {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Controller => "controller",
            Self::Schedule => "schedule",
            Self::Operator => "operator",
        }
    }

    pub const fn consistency(self) -> &'static str {
        match self {
            Self::Controller => "app",
            Self::Schedule | Self::Operator => "crash",
        }
    }
}

/// Why a backup, verify or status call failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("Proxmox VE is not configured")]
    NoPve,
    #[error("Guest {0} has no backup policy")]
    NoPolicy(u32),
    #[error("Guest {vmid} has no backup policy for tier '{tier}'")]
    NoPolicyForTier { vmid: u32, tier: String },
    #[error("No backup tier is named '{0}'")]
    UnknownTier(String),
    #[error("Tier '{0}' is not a PBS tier")]
    NotPbs(String),
    #[error("Guest {0} has no backup policy on a PBS tier; only PBS snapshots can be verified")]
    NoPbsTier(u32),
    #[error("The PBS API is not configured ([pbs] endpoint); cannot verify")]
    NoPbsApi,
    #[error("Guest {vmid} has no snapshot on tier '{tier}' to verify")]
    NoSnapshot { vmid: u32, tier: String },
    #[error(
        "Refusing to back up to tier '{tier}': it is configured as encrypted, but storage '{storage}' has no client encryption key (no encryption-key in its Proxmox configuration), so the backup would land unencrypted"
    )]
    NotEncrypted { tier: String, storage: String },
    #[error(
        "Refusing to back up to tier '{tier}': storage '{storage}' is configured with encryption key {configured}, not the key {pinned} the tier pins"
    )]
    KeyNotPinned {
        tier: String,
        storage: String,
        configured: String,
        pinned: String,
    },
    #[error(
        "Refusing to back up to tier '{tier}': storage '{storage}' is not in the Proxmox storage configuration"
    )]
    NoStorage { tier: String, storage: String },
    #[error("vzdump to tier '{tier}' failed: {message}")]
    Vzdump { tier: String, message: String },
    #[error(
        "Backup to encrypted tier '{tier}' landed unencrypted in PBS ({snapshot}); refusing to count it"
    )]
    LandedUnencrypted { tier: String, snapshot: String },
    #[error(
        "Backup to tier '{tier}' was encrypted with key {found}, not the escrowed key {expected}"
    )]
    WrongKey {
        tier: String,
        found: String,
        expected: String,
    },
    #[error("PBS did not record the result of verify task {0} on the snapshot")]
    VerifyNotRecorded(String),
    #[error("Agent shut down before the backup to tier '{0}' started")]
    ShutDown(String),
    #[error("Agent shut down during the {0}; the next start cleans up after it")]
    Interrupted(&'static str),
    #[error("Cannot tell which archive vzdump wrote to tier '{0}'")]
    NoArchive(String),
    #[error("Invalid vmid")]
    Invalid(#[from] InvalidValue),
    #[error("Proxmox VE call failed")]
    Pve(#[from] PveError),
    #[error("PBS call failed")]
    Pbs(#[from] PbsError),
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("Cannot read or write backup history")]
    History(#[from] BackupsError),
    #[error("Cannot read or write job history")]
    Jobs(#[from] JobsError),
}

/// `guest`'s backup volumes on `storage`: from `listings` when it holds the storage, else
/// one listing of that guest's backups there.
pub(crate) async fn guest_volumes(
    pve: &PveClient,
    storage: &str,
    guest: Vmid,
    listings: &TierListings,
) -> Result<Vec<StorageVolume>, PveError> {
    if let Some(by_guest) = listings.0.get(storage) {
        return Ok(by_guest
            .get(&u64::from(guest.get()))
            .cloned()
            .unwrap_or_default());
    }
    let vols = pve.backup_volumes(storage, Some(guest)).await?;
    Ok(vols
        .into_iter()
        .filter(|v| v.vmid.is_none_or(|x| x == u64::from(guest.get())))
        .collect())
}

/// Backup listings of tier storages (storage id → guest → its backup volumes there), taken
/// once per scheduler tick; grouped by guest so a guest's lookup does not scan every volume.
/// A volume that names no guest cannot be attributed and is left out (PVE's own vmid filter
/// leaves such volumes out too). Empty: every caller lists what it needs itself.
///
/// It also holds, read at the same moment, each guest's unfinished backup job (one query for
/// the tick instead of one per guest); `None` when not read.
#[derive(Debug, Clone, Default)]
pub struct TierListings(
    BTreeMap<String, HashMap<u64, Vec<StorageVolume>>>,
    Option<HashMap<u32, String>>,
);

/// The PBS datastore the host's `pbs` storages point at, with a client for its API.
#[derive(Debug, Clone)]
pub struct PbsTarget {
    pub client: PbsClient,
    pub datastore: String,
    pub namespace: Option<String>,
}

impl PbsTarget {
    /// The `ct/<vmid>` snapshots of one guest, or of every guest (`None`), in one call.
    pub async fn ct_snapshots(
        &self,
        vmid: Option<u32>,
    ) -> Result<Vec<crate::infra::pbs::PbsSnapshot>, PbsError> {
        let id = vmid.map(|v| v.to_string());
        self.client
            .snapshots(
                &self.datastore,
                self.namespace.as_deref(),
                Some(BackupType::Ct),
                id.as_deref(),
            )
            .await
    }

    /// The `ct/<vmid>` snapshots in the configured datastore and namespace.
    pub async fn guest_snapshots(
        &self,
        vmid: u32,
    ) -> Result<Vec<crate::infra::pbs::PbsSnapshot>, PbsError> {
        self.client
            .snapshots(
                &self.datastore,
                self.namespace.as_deref(),
                Some(BackupType::Ct),
                Some(&vmid.to_string()),
            )
            .await
    }
}

/// A job that was started or joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub job_id: String,
    /// Whether this call queued it.
    pub new_job: bool,
}

/// The backup side of the agent; cheap to clone.
#[derive(Debug, Clone)]
pub struct BackupService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pve: Option<PveClient>,
    pbs: Option<PbsTarget>,
    settings: BackupSettings,
    db: StateDb,
    queue: GuestQueue,
    wait: WaitOptions,
    /// Serializes "is a job of this kind already under way? else queue one".
    start_lock: tokio::sync::Mutex<()>,
    /// One restore-test at a time per host: two would pick the same free scratch vmid, and
    /// scratch guests cost the host real memory and disk.
    restore_lock: tokio::sync::Mutex<()>,
}

fn unix_secs(t: Timestamp) -> i64 {
    t.unix_millis().div_euclid(1000)
}

/// `running` for queued and running jobs (the local API's vocabulary has no `queued`).
pub(crate) fn phase_word(phase: JobPhase) -> &'static str {
    match phase {
        JobPhase::Queued | JobPhase::Running => "running",
        JobPhase::Done => "done",
        JobPhase::Failed => "failed",
    }
}

impl BackupService {
    pub fn new(
        pve: Option<PveClient>,
        pbs: Option<PbsTarget>,
        settings: BackupSettings,
        db: StateDb,
        queue: GuestQueue,
        wait: WaitOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                pve,
                pbs,
                wait: WaitOptions {
                    deadline: settings.task_deadline,
                    ..wait
                },
                settings,
                db,
                queue,
                start_lock: tokio::sync::Mutex::new(()),
                restore_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    pub fn settings(&self) -> &BackupSettings {
        &self.inner.settings
    }

    pub fn pbs(&self) -> Option<&PbsTarget> {
        self.inner.pbs.as_ref()
    }

    pub(crate) fn db(&self) -> &StateDb {
        &self.inner.db
    }

    pub(crate) fn queue(&self) -> &GuestQueue {
        &self.inner.queue
    }

    /// Held while checking for a job under way and queueing a new one.
    pub(crate) async fn start_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.start_lock.lock().await
    }

    /// The restore-test lock if no test holds it now.
    pub(crate) fn try_restore_guard(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        self.inner.restore_lock.try_lock().ok()
    }

    /// Held for the whole of a restore-test (see `Inner::restore_lock`).
    pub(crate) async fn restore_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.restore_lock.lock().await
    }

    pub(crate) fn wait(&self) -> &WaitOptions {
        &self.inner.wait
    }

    pub(crate) fn pve(&self) -> Result<&PveClient, BackupError> {
        self.inner.pve.as_ref().ok_or(BackupError::NoPve)
    }

    pub(crate) fn now_secs(&self) -> i64 {
        unix_secs(self.inner.db.clock().now())
    }

    /// The newest job of `kind` for `vmid` when it is queued or running.
    pub(crate) async fn active_job(
        &self,
        vmid: u32,
        kind: &'static str,
    ) -> Result<Option<String>, BackupError> {
        let latest = self
            .inner
            .db
            .run(move |db| db.backups().latest_job_id(vmid, kind))
            .await?;
        let Some(id) = latest else { return Ok(None) };
        let record = self.job_record(&id).await?;
        Ok(record
            .filter(|r| !r.phase.is_final())
            .map(|r| r.id.to_string()))
    }

    pub(crate) async fn job_record(
        &self,
        id: &str,
    ) -> Result<Option<crate::infra::state::JobRecord>, BackupError> {
        let id: JobId = match id.parse() {
            Ok(id) => id,
            Err(_) => return Ok(None),
        };
        Ok(self.inner.db.run(move |db| db.jobs().get(&id)).await?)
    }

    /// Newest backup (unix seconds) of `vmid` on each of its policies' tiers, read from
    /// `listings` where it holds the tier's storage, else from the storage itself; a storage
    /// that cannot be listed gives its error.
    async fn newest_backups(
        &self,
        vmid: u32,
        listings: &TierListings,
    ) -> Result<Vec<Result<Option<i64>, PveError>>, BackupError> {
        let pve = self.pve()?;
        let guest = Vmid::new(vmid)?;
        let mut out = Vec::new();
        for p in self.inner.settings.policies_of(vmid) {
            let tier = self.inner.settings.tier(p.tier);
            let vols = guest_volumes(pve, &tier.storage, guest, listings).await;
            out.push(vols.map(|vols| {
                vols.iter()
                    .map(|v| i64::try_from(v.ctime).unwrap_or(i64::MAX))
                    .max()
            }));
        }
        Ok(out)
    }

    /// One backup listing per tier storage that any policy uses, for a scheduler tick: every
    /// guest's due-ness in the tick is read from these instead of listing each storage once
    /// per guest. A storage that cannot be listed is left out (each guest then lists it
    /// itself and reports why it cannot be checked).
    pub async fn tier_listings(&self) -> TierListings {
        let mut out = BTreeMap::new();
        let Ok(pve) = self.pve() else {
            return TierListings::default();
        };
        let storages: BTreeSet<&str> = self
            .inner
            .settings
            .guests()
            .into_iter()
            .flat_map(|g| self.inner.settings.policies_of(g))
            .map(|p| self.inner.settings.tier(p.tier).storage.as_str())
            .collect();
        for storage in storages {
            match pve.backup_volumes(storage, None).await {
                Ok(vols) => {
                    let mut by_guest: HashMap<u64, Vec<StorageVolume>> = HashMap::new();
                    for v in vols {
                        if let Some(vmid) = v.vmid {
                            by_guest.entry(vmid).or_default().push(v);
                        }
                    }
                    out.insert(storage.to_owned(), by_guest);
                }
                Err(e) => tracing::debug!(storage, error = %chain(&e), "tier listing failed"),
            }
        }
        let active = match self
            .inner
            .db
            .run(|db| db.backups().unfinished_latest_jobs(KIND_BACKUP))
            .await
        {
            Ok(active) => Some(active),
            Err(e) => {
                // Each guest then asks for its own.
                tracing::debug!(error = %chain(&e), "cannot read the unfinished backup jobs");
                None
            }
        };
        TierListings(out, active)
    }

    /// Whether `vmid`'s backup is due, and why. A tier whose storage cannot be listed is left
    /// out of the verdict and named in the reason (an offline PBS must not stop the local
    /// tier's loop); when no tier can be listed, the error is the answer.
    pub async fn due(&self, vmid: u32) -> Result<Due, BackupError> {
        self.due_with(vmid, &TierListings::default()).await
    }

    /// [`Self::due`], reading tier storages from `listings` where it holds them.
    pub async fn due_with(&self, vmid: u32, listings: &TierListings) -> Result<Due, BackupError> {
        let policies: Vec<&Policy> = self.inner.settings.policies_of(vmid).collect();
        if policies.is_empty() {
            return Ok(due::evaluate(&[], self.now_secs(), None));
        }
        let running = match &listings.1 {
            Some(active) => active.get(&vmid).cloned(),
            None => self.active_job(vmid, KIND_BACKUP).await?,
        };
        let newest = self.newest_backups(vmid, listings).await?;
        let mut states: Vec<PolicyState<'_>> = Vec::new();
        let mut index: Vec<usize> = Vec::new();
        let mut unreachable: Vec<(usize, PveError)> = Vec::new();
        for (i, (p, n)) in policies.iter().zip(newest).enumerate() {
            match n {
                Ok(newest_backup) => {
                    index.push(i);
                    states.push(PolicyState {
                        tier: &self.inner.settings.tier(p.tier).name,
                        schedule: &p.schedule,
                        newest_backup,
                    });
                }
                Err(e) => unreachable.push((i, e)),
            }
        }
        if states.is_empty() {
            let (_, e) = unreachable.remove(0);
            return Err(e.into());
        }
        let mut d = due::evaluate(&states, self.now_secs(), running.as_deref());
        d.due_policies = d.due_policies.iter().map(|&i| index[i]).collect();
        for (i, e) in &unreachable {
            let tier = &self.inner.settings.tier(policies[*i].tier).name;
            d.reason
                .push_str(&format!("; tier '{tier}' cannot be checked ({})", chain(e)));
        }
        Ok(d)
    }

    /// Starts a backup of `vmid` (or answers the one under way). `tier`: only that tier; else
    /// the tiers whose policies are due, or every tier of the guest when none is.
    pub async fn start(
        &self,
        vmid: u32,
        trigger: Trigger,
        tier: Option<&str>,
    ) -> Result<Accepted, BackupError> {
        let policies: Vec<Policy> = self.inner.settings.policies_of(vmid).cloned().collect();
        if policies.is_empty() {
            return Err(BackupError::NoPolicy(vmid));
        }
        let chosen: Vec<Policy> = match tier {
            Some(name) => {
                let (index, _) = self
                    .inner
                    .settings
                    .tier_named(name)
                    .ok_or_else(|| BackupError::UnknownTier(name.to_owned()))?;
                let p = policies.iter().find(|p| p.tier == index).ok_or_else(|| {
                    BackupError::NoPolicyForTier {
                        vmid,
                        tier: name.to_owned(),
                    }
                })?;
                vec![p.clone()]
            }
            None => {
                let due = self.due(vmid).await?;
                if due.due_policies.is_empty() {
                    policies.clone()
                } else {
                    due.due_policies
                        .iter()
                        .map(|&i| policies[i].clone())
                        .collect()
                }
            }
        };
        let _guard = self.inner.start_lock.lock().await;
        if let Some(job_id) = self.active_job(vmid, KIND_BACKUP).await? {
            return Ok(Accepted {
                job_id,
                new_job: false,
            });
        }
        let this = self.clone();
        let handle = self
            .inner
            .queue
            .submit(vmid, KIND_BACKUP, move |ctx| async move {
                let job = ctx.id().clone();
                this.run_job(job, vmid, trigger, chosen, ctx.shutdown_token())
                    .await
                    .map(|()| None)
                    .map_err(|e| chain(&e).into())
            })
            .await?;
        tracing::info!(vmid, job = %handle.id(), trigger = trigger.as_str(), "backup queued");
        Ok(Accepted {
            job_id: handle.id().to_string(),
            new_job: true,
        })
    }

    /// The body of a backup job: one vzdump per policy, every outcome recorded; fails when any
    /// tier failed (naming each).
    async fn run_job(
        &self,
        job: JobId,
        vmid: u32,
        trigger: Trigger,
        policies: Vec<Policy>,
        shutdown: CancellationToken,
    ) -> Result<(), BackupError> {
        {
            let job = job.clone();
            self.inner
                .db
                .run(move |db| {
                    db.backups()
                        .record_job(&job, vmid, trigger.as_str(), trigger.consistency())
                })
                .await?;
        }
        let mut errors: Vec<BackupError> = Vec::new();
        for p in &policies {
            let tier = self.inner.settings.tier(p.tier).clone();
            {
                let (job, name, storage, mode) = (
                    job.clone(),
                    tier.name.clone(),
                    tier.storage.clone(),
                    p.mode.as_str(),
                );
                self.inner
                    .db
                    .run(move |db| db.backups().start_run(&job, &name, &storage, mode))
                    .await?;
            }
            if shutdown.is_cancelled() {
                errors.push(BackupError::ShutDown(tier.name.clone()));
                continue;
            }
            let result = self.run_one(&job, vmid, trigger, p, &tier, &shutdown).await;
            let (job2, name) = (job.clone(), tier.name.clone());
            match result {
                Ok((actual, volid)) => {
                    tracing::info!(vmid, tier = %tier.name, %volid, actual_mode = ?actual, "backup done");
                    self.inner
                        .db
                        .run(move |db| {
                            db.backups()
                                .finish_run(&job2, &name, actual.as_deref(), Ok(&volid))
                        })
                        .await?;
                }
                Err((actual, e)) => {
                    let text = chain(&e);
                    tracing::warn!(vmid, tier = %tier.name, error = %text, "backup failed");
                    self.inner
                        .db
                        .run(move |db| {
                            db.backups()
                                .finish_run(&job2, &name, actual.as_deref(), Err(&text))
                        })
                        .await?;
                    errors.push(e);
                }
            }
        }
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(BackupError::Vzdump {
                tier: "several".into(),
                message: errors
                    .iter()
                    .map(|e| chain(e))
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        }
    }

    /// One vzdump: `Ok((actual mode, volid))` or `Err((actual mode if known, error))`.
    async fn run_one(
        &self,
        job: &JobId,
        vmid: u32,
        trigger: Trigger,
        policy: &Policy,
        tier: &Tier,
        shutdown: &CancellationToken,
    ) -> Result<(Option<String>, String), (Option<String>, BackupError)> {
        let pve = self.pve().map_err(|e| (None, e))?;
        let expected_fp = if tier.encrypted {
            expected_key(pve, tier).await.map_err(|e| (None, e))?
        } else {
            None
        };
        let guest = Vmid::new(vmid).map_err(|e| (None, e.into()))?;
        let req = VzdumpRequest {
            vmid: guest,
            storage: tier.storage.clone(),
            mode: policy.mode,
            compress: match tier.kind {
                TierKind::Local => Some("zstd".into()),
                TierKind::Pbs => None,
            },
            prune_backups: policy.retention.prune_backups(),
            notes_template: Some(format!(
                "{{{{guestname}}}} ({} backup, {}-consistent)",
                trigger.as_str(),
                trigger.consistency()
            )),
            protected: false,
        };
        let upid = pve.vzdump(&req).await.map_err(|e| (None, e.into()))?;
        {
            let (job, name, text) = (job.clone(), tier.name.clone(), upid.as_str().to_owned());
            self.inner
                .db
                .run(move |db| db.backups().run_upid(&job, &name, &text))
                .await
                .map_err(|e| (None, e.into()))?;
        }
        // On agent shutdown stop waiting (the task goes on in Proxmox; its archive still counts
        // for due-ness, read from the storage), so the shutdown is not held up for hours.
        let waited = pve.wait_task(&upid, &self.inner.wait, shutdown).await;
        let log = pve.task_log_tail(&upid, 2000).await.unwrap_or_default();
        let actual = actual_mode(&log);
        if let Err(e) = waited {
            return Err((actual, vzdump_error(&tier.name, e, &log)));
        }
        let volid = match archive_volid(&tier.storage, &log) {
            Some(v) => v,
            None => self
                .newest_volid(pve, &tier.storage, guest, &upid)
                .await
                .map_err(|e| (actual.clone(), e))?
                .ok_or_else(|| (actual.clone(), BackupError::NoArchive(tier.name.clone())))?,
        };
        if tier.encrypted {
            self.check_encrypted(tier, vmid, &volid, expected_fp.as_deref())
                .await
                .map_err(|e| (actual.clone(), e))?;
        }
        Ok((actual, volid))
    }

    /// Fallback when the log names no archive: the newest backup of the guest made since the
    /// task started.
    async fn newest_volid(
        &self,
        pve: &PveClient,
        storage: &str,
        vmid: Vmid,
        upid: &Upid,
    ) -> Result<Option<String>, BackupError> {
        let started = upid.starttime();
        let vols = pve.backup_volumes(storage, Some(vmid)).await?;
        Ok(vols
            .into_iter()
            .filter(|v| v.ctime >= started)
            .max_by_key(|v| v.ctime)
            .map(|v| v.volid))
    }

    /// With the PBS API configured: the snapshot behind `volid` must be encrypted, with the
    /// escrowed key when its fingerprint is known. Without the PBS API nothing can be checked
    /// here (the key file was checked before vzdump).
    async fn check_encrypted(
        &self,
        tier: &Tier,
        vmid: u32,
        volid: &str,
        expected_fp: Option<&str>,
    ) -> Result<(), BackupError> {
        let Some(target) = &self.inner.pbs else {
            return Ok(());
        };
        let Some(time) = pbs_volid_time(volid) else {
            return Ok(());
        };
        let snaps = target.guest_snapshots(vmid).await?;
        let Some(snap) = snaps.iter().find(|s| s.backup_time == time) else {
            return Err(BackupError::NoArchive(tier.name.clone()));
        };
        if !snap.encrypted {
            return Err(BackupError::LandedUnencrypted {
                tier: tier.name.clone(),
                snapshot: snap.snapshot_path(),
            });
        }
        if let (Some(expected), Some(found)) = (expected_fp, snap.key_fingerprint.as_deref())
            && !expected.eq_ignore_ascii_case(found)
        {
            return Err(BackupError::WrongKey {
                tier: tier.name.clone(),
                found: found.to_owned(),
                expected: expected.to_owned(),
            });
        }
        Ok(())
    }

    /// The guest's newest backup job, as the status RPCs answer it.
    pub async fn status(&self, vmid: u32) -> Result<pb::BackupStatus, BackupError> {
        let latest = self
            .inner
            .db
            .run(move |db| db.backups().latest_job_id(vmid, KIND_BACKUP))
            .await?;
        let mut out = pb::BackupStatus {
            vmid,
            phase: "idle".into(),
            ..Default::default()
        };
        let Some(id) = latest else { return Ok(out) };
        let Some(record) = self.job_record(&id).await? else {
            return Ok(out);
        };
        out.phase = phase_word(record.phase).into();
        out.job_id = id.clone();
        out.error = record.error.unwrap_or_default();
        out.started_at = record.started_at.map_or(0, unix_secs);
        out.finished_at = record.finished_at.map_or(0, unix_secs);
        let detail = self.inner.db.run(move |db| db.backups().job(&id)).await?;
        if let Some(d) = detail {
            out.trigger = d.trigger;
            out.consistency = d.consistency;
            out.runs = d
                .runs
                .into_iter()
                .map(|r| pb::BackupRun {
                    tier: r.tier,
                    storage: r.storage,
                    phase: r.phase,
                    requested_mode: r.requested_mode,
                    actual_mode: r.actual_mode.unwrap_or_default(),
                    volid: r.volid.unwrap_or_default(),
                    upid: r.upid.unwrap_or_default(),
                    error: r.error.unwrap_or_default(),
                })
                .collect();
        }
        Ok(out)
    }

    /// Backups of `vmid` (or of every guest with a policy) on every tier, newest first. A tier
    /// that cannot be listed is named in `unreachable` and the others are still answered: an
    /// offsite outage must not hide the local backups from an operator.
    pub async fn list(&self, vmid: Option<u32>) -> Result<pb::ListBackupsResponse, BackupError> {
        let pve = self.pve()?;
        let only = vmid.map(Vmid::new).transpose()?;
        let guests: Vec<u32> = match vmid {
            Some(v) => vec![v],
            None => self.inner.settings.guests(),
        };
        // One listing per tier (and one of PBS), whatever the number of guests: PVE filters
        // by vmid itself when only one guest is asked for.
        let mut tiers = Vec::new();
        let mut unreachable: Vec<String> = Vec::new();
        for tier in &self.inner.settings.tiers {
            match pve.backup_volumes(&tier.storage, only).await {
                Ok(vols) => tiers.push((tier, vols)),
                Err(e) => {
                    tracing::warn!(tier = %tier.name, error = %chain(&e), "cannot list a backup tier");
                    unreachable.push(format!(
                        "tier '{}' (storage {}): {}",
                        tier.name,
                        tier.storage,
                        chain(&e)
                    ));
                }
            }
        }
        // Detail only: a PBS that cannot be asked leaves encrypted/verify from PVE's view.
        let pbs_snaps = match &self.inner.pbs {
            Some(t) => t.ct_snapshots(vmid).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let mut out = Vec::new();
        for g in guests {
            let backup_id = g.to_string();
            let history = self
                .inner
                .db
                .run(move |db| db.backups().archives_of(g))
                .await?;
            for (tier, all) in &tiers {
                // A volume that names no guest cannot be attributed (PVE's vmid filter
                // leaves those out too).
                let vols = all.iter().filter(|v| v.vmid == Some(u64::from(g)));
                for v in vols {
                    let known = history
                        .iter()
                        .find(|(r, _, _)| r.volid.as_deref() == Some(v.volid.as_str()));
                    let pbs = pbs_volid_time(&v.volid).and_then(|t| {
                        pbs_snaps
                            .iter()
                            .find(|s| s.backup_time == t && s.backup_id == backup_id)
                    });
                    let verify_state = match (pbs, &v.verification) {
                        (Some(s), _) => verify_word(s.verify_state).to_owned(),
                        (None, Some(ver)) => ver.state.clone(),
                        (None, None) => "none".into(),
                    };
                    out.push(pb::BackupEntry {
                        vmid: g,
                        tier: tier.name.clone(),
                        storage: tier.storage.clone(),
                        volid: v.volid.clone(),
                        ctime: i64::try_from(v.ctime).unwrap_or(i64::MAX),
                        size: v.size,
                        format: v.format.clone(),
                        protected: v.protected,
                        verify_state,
                        encrypted: pbs.is_some_and(|s| s.encrypted),
                        job_id: known.map(|(r, _, _)| r.job_id.clone()).unwrap_or_default(),
                        consistency: known.map(|(_, _, c)| c.clone()).unwrap_or_default(),
                        requested_mode: known
                            .map(|(r, _, _)| r.requested_mode.clone())
                            .unwrap_or_default(),
                        actual_mode: known
                            .and_then(|(r, _, _)| r.actual_mode.clone())
                            .unwrap_or_default(),
                    });
                }
            }
        }
        out.sort_by(|a, b| b.ctime.cmp(&a.ctime).then(a.vmid.cmp(&b.vmid)));
        Ok(pb::ListBackupsResponse {
            backups: out,
            unreachable,
        })
    }

    /// Starts a PBS verify of `vmid`'s newest snapshot on `tier` (default: its first PBS tier).
    pub async fn start_verify(
        &self,
        vmid: u32,
        tier: Option<&str>,
    ) -> Result<Accepted, BackupError> {
        let settings = &self.inner.settings;
        let tier = match tier {
            Some(name) => {
                let (_, t) = settings
                    .tier_named(name)
                    .ok_or_else(|| BackupError::UnknownTier(name.to_owned()))?;
                if t.kind != TierKind::Pbs {
                    return Err(BackupError::NotPbs(name.to_owned()));
                }
                t.clone()
            }
            None => settings
                .policies_of(vmid)
                .map(|p| settings.tier(p.tier))
                .find(|t| t.kind == TierKind::Pbs)
                .cloned()
                .ok_or(BackupError::NoPbsTier(vmid))?,
        };
        if self.inner.pbs.is_none() {
            return Err(BackupError::NoPbsApi);
        }
        let _guard = self.inner.start_lock.lock().await;
        if let Some(job_id) = self.active_job(vmid, KIND_VERIFY).await? {
            return Ok(Accepted {
                job_id,
                new_job: false,
            });
        }
        let this = self.clone();
        let handle = self
            .inner
            .queue
            .submit(vmid, KIND_VERIFY, move |ctx| async move {
                let job = ctx.id().clone();
                this.run_verify(job, vmid, tier, ctx.shutdown_token())
                    .await
                    .map(|()| None)
                    .map_err(|e| chain(&e).into())
            })
            .await?;
        Ok(Accepted {
            job_id: handle.id().to_string(),
            new_job: true,
        })
    }

    async fn run_verify(
        &self,
        job: JobId,
        vmid: u32,
        tier: Tier,
        shutdown: CancellationToken,
    ) -> Result<(), BackupError> {
        {
            let (job, name) = (job.clone(), tier.name.clone());
            self.inner
                .db
                .run(move |db| db.backups().start_verify(&job, vmid, &name))
                .await?;
        }
        // At agent shutdown the wait ends (PBS finishes the verify; its state shows in lists).
        let result = self.verify_newest(&job, vmid, &tier, &shutdown).await;
        let j = job.clone();
        match &result {
            Ok(state) => {
                let state = verify_word(*state);
                self.inner
                    .db
                    .run(move |db| db.backups().finish_verify(&j, Ok(state)))
                    .await?;
            }
            Err(e) => {
                let text = chain(e);
                self.inner
                    .db
                    .run(move |db| db.backups().finish_verify(&j, Err(&text)))
                    .await?;
            }
        }
        // A verify that ran and found damage is a finished job whose state says "failed".
        result.map(|_| ())
    }

    async fn verify_newest(
        &self,
        job: &JobId,
        vmid: u32,
        tier: &Tier,
        shutdown: &CancellationToken,
    ) -> Result<VerifyState, BackupError> {
        let target = self.inner.pbs.as_ref().ok_or(BackupError::NoPbsApi)?;
        let id = vmid.to_string();
        let snaps = target.guest_snapshots(vmid).await?;
        let newest = snaps
            .iter()
            .max_by_key(|s| s.backup_time)
            .ok_or_else(|| BackupError::NoSnapshot {
                vmid,
                tier: tier.name.clone(),
            })?
            .clone();
        let upid: PbsUpid = target
            .client
            .verify(
                &target.datastore,
                &VerifyRequest {
                    ns: target.namespace.clone(),
                    backup_type: Some(BackupType::Ct),
                    backup_id: Some(id.clone()),
                    backup_time: Some(newest.backup_time),
                    ignore_verified: Some(false),
                    outdated_after: None,
                },
            )
            .await?;
        {
            let (job, path, text) = (job.clone(), newest.snapshot_path(), upid.to_string());
            self.inner
                .db
                .run(move |db| db.backups().verify_target(&job, &path, Some(&text)))
                .await?;
        }
        // The task ends with an error when the verify found damage; the verdict we report is
        // the snapshot's verification state, read back either way.
        match target
            .client
            .wait_task(&upid, &self.inner.wait, shutdown)
            .await
        {
            Ok(_) => {}
            // Damage found: the verdict is in the snapshot's state, read below.
            Err(PbsError::TaskFailed(f)) => {
                tracing::info!(vmid, %upid, error = %f.exitstatus, "PBS verify task reports damage");
            }
            // Not finished or not known: an older verify's state must not pass for this one.
            Err(e) => return Err(e.into()),
        }
        let after = target.guest_snapshots(vmid).await?;
        let snap = after
            .iter()
            .find(|s| s.backup_time == newest.backup_time)
            .ok_or_else(|| BackupError::NoSnapshot {
                vmid,
                tier: tier.name.clone(),
            })?;
        match &snap.verify_upid {
            Some(u) if u.to_string() == upid.to_string() => Ok(snap.verify_state),
            _ => Err(BackupError::VerifyNotRecorded(upid.to_string())),
        }
    }

    /// The guest's newest verify job.
    pub async fn verify_status(&self, vmid: u32) -> Result<pb::VerifyStatus, BackupError> {
        let row = self
            .inner
            .db
            .run(move |db| db.backups().latest_verify(vmid))
            .await?;
        let mut out = pb::VerifyStatus {
            vmid,
            phase: "idle".into(),
            ..Default::default()
        };
        let latest = self
            .inner
            .db
            .run(move |db| db.backups().latest_job_id(vmid, KIND_VERIFY))
            .await?;
        let Some(id) = latest else { return Ok(out) };
        if let Some(record) = self.job_record(&id).await? {
            out.phase = phase_word(record.phase).into();
            out.error = record.error.unwrap_or_default();
            out.started_at = record.started_at.map_or(0, unix_secs);
            out.finished_at = record.finished_at.map_or(0, unix_secs);
        }
        out.job_id = id.clone();
        if let Some(r) = row.filter(|r| r.job_id == id) {
            out.tier = r.tier;
            out.snapshot = r.snapshot.unwrap_or_default();
            out.state = r.state.unwrap_or_default();
            out.upid = r.upid.unwrap_or_default();
        }
        Ok(out)
    }
}

pub(crate) fn verify_word(state: VerifyState) -> &'static str {
    match state {
        VerifyState::Ok => "ok",
        VerifyState::Failed => "failed",
        VerifyState::None => "none",
    }
}

/// `INFO: backup mode: stop` → `stop`.
/// The fingerprint an encrypted tier's backups must carry, checked before vzdump runs: the
/// storage must have a client key configured (storage.cfg `encryption-key`: its fingerprint, or
/// `1` when PVE stored a key without one), and it must be the pinned key when the tier pins
/// one. The agent never reads the key itself.
async fn expected_key(pve: &PveClient, tier: &Tier) -> Result<Option<String>, BackupError> {
    let configs = pve.storage_config().await?;
    let Some(config) = configs.into_iter().find(|c| c.storage == tier.storage) else {
        return Err(BackupError::NoStorage {
            tier: tier.name.clone(),
            storage: tier.storage.clone(),
        });
    };
    let configured = match config.encryption_key.as_deref().map(str::trim) {
        None | Some("" | "0") => {
            return Err(BackupError::NotEncrypted {
                tier: tier.name.clone(),
                storage: tier.storage.clone(),
            });
        }
        Some("1") => None,
        Some(fp) => Some(fp.to_ascii_lowercase()),
    };
    match (tier.key_fingerprint, configured) {
        (Some(pinned), Some(configured)) if pinned.to_string() != configured => {
            Err(BackupError::KeyNotPinned {
                tier: tier.name.clone(),
                storage: tier.storage.clone(),
                configured,
                pinned: pinned.to_string(),
            })
        }
        (Some(pinned), _) => Ok(Some(pinned.to_string())),
        (None, configured) => Ok(configured),
    }
}

fn actual_mode(log: &[String]) -> Option<String> {
    log.iter().find_map(|l| {
        l.trim()
            .strip_prefix("INFO: backup mode: ")
            .map(|m| m.trim().to_owned())
    })
}

/// The archive vzdump wrote, from its log: `creating vzdump archive '/…/dump/<file>'` (a file
/// on the storage's `dump/` directory) or `creating Proxmox Backup Server archive 'ct/…'`.
fn archive_volid(storage: &str, log: &[String]) -> Option<String> {
    log.iter().find_map(|l| {
        let quoted = |prefix: &str| {
            l.trim()
                .strip_prefix(prefix)
                .and_then(|r| r.strip_prefix('\''))
                .and_then(|r| r.strip_suffix('\''))
                .map(str::to_owned)
        };
        if let Some(path) = quoted("INFO: creating vzdump archive ") {
            let file = path.rsplit('/').next()?.to_owned();
            return Some(format!("{storage}:backup/{file}"));
        }
        quoted("INFO: creating Proxmox Backup Server archive ")
            .map(|snap| format!("{storage}:backup/{snap}"))
    })
}

/// The snapshot time of a PBS volid `store:backup/ct/101/2026-11-23T02:30:00Z`.
pub(crate) fn pbs_volid_time(volid: &str) -> Option<i64> {
    let (_, rest) = volid.split_once(":backup/")?;
    let mut parts = rest.split('/');
    let (_ty, _id, time) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    chrono::DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|t| t.timestamp())
}

/// vzdump's task failed: its `ERROR:` lines say why (the exit status is just `job errors`).
fn vzdump_error(tier: &str, e: PveError, log: &[String]) -> BackupError {
    let errors: Vec<&str> = log
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("ERROR:"))
        .collect();
    let message = match (&e, errors.is_empty()) {
        (PveError::TaskFailed(f), false) => format!("{} ({})", errors.join("; "), f.exitstatus),
        (PveError::TaskFailed(f), true) => f.exitstatus.clone(),
        (_, _) => chain(&e),
    };
    BackupError::Vzdump {
        tier: tier.to_owned(),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_actual_mode_is_read_from_the_task_log() {
        let l = log(&[
            "INFO: starting new backup job: vzdump 101 --mode snapshot",
            "INFO: backup mode: stop",
        ]);
        assert_eq!(actual_mode(&l).as_deref(), Some("stop"));
        assert_eq!(actual_mode(&log(&["INFO: nothing"])), None);
    }

    #[test]
    fn the_archive_is_read_from_the_task_log() {
        let l = log(&[
            "INFO: creating vzdump archive '/var/lib/vz/dump/vzdump-lxc-101-2026_11_23-02_30_00.tar.zst'",
        ]);
        assert_eq!(
            archive_volid("local", &l).as_deref(),
            Some("local:backup/vzdump-lxc-101-2026_11_23-02_30_00.tar.zst")
        );
        let l =
            log(&["INFO: creating Proxmox Backup Server archive 'ct/101/2026-11-23T02:30:00Z'"]);
        assert_eq!(
            archive_volid("felhom-pbs", &l).as_deref(),
            Some("felhom-pbs:backup/ct/101/2026-11-23T02:30:00Z")
        );
    }

    #[test]
    fn pbs_volids_carry_the_snapshot_time() {
        assert_eq!(
            pbs_volid_time("felhom-pbs:backup/ct/101/2026-11-23T02:30:00Z"),
            Some(1_795_401_000)
        );
        assert_eq!(
            pbs_volid_time("local:backup/vzdump-lxc-101-x.tar.zst"),
            None
        );
    }

    #[test]
    fn a_failed_vzdump_reports_its_error_lines() {
        let upid: Upid = "UPID:pve1:00001234:00A2F3B1:6745A1C2:vzdump:101:felhom-agent@pve!agent:"
            .parse()
            .unwrap();
        let e = PveError::TaskFailed(Box::new(crate::infra::pve::TaskFailure {
            upid,
            exitstatus: "job errors".into(),
            permission: None,
            log_tail: Vec::new(),
        }));
        let l = log(&[
            "INFO: starting",
            "ERROR: Backup of VM 101 failed - CT is locked (snapshot)",
        ]);
        assert_eq!(
            vzdump_error("local", e, &l).to_string(),
            "vzdump to tier 'local' failed: ERROR: Backup of VM 101 failed - CT is locked (snapshot) (job errors)"
        );
    }
}
