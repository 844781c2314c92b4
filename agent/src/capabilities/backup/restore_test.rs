//! Self-restore-tests: a backup nobody has restored is a hope, not a backup.
//!
//! A test runs as a job on the *source* guest's queue (so no prune of that guest's backups runs
//! underneath it) and as one journaled operation of kind [`KIND`] on a scratch guest:
//! 1. pick the newest backup from the fastest surviving tier (local tiers before PBS; a tier
//!    whose storage cannot be listed is skipped and named in the detail);
//! 2. pick a scratch vmid: the first free vmid of `[backup] scratch_vmid_first..=last`;
//! 3. `restore` it there (journaled as created *before* the POST, `unique=1`, with `onboot=0`,
//!    `protection=0` and tag `felhom-scratch` given in the POST, which win over the archive's),
//!    `configure`
//!    it (every network interface `link_down=1` so the copy never answers on the customer's
//!    network), `start` it, and `health`-check it: it must stay running for the settle time,
//!    and when the policy names a probe interface, that interface must show up inside the
//!    guest;
//! 4. always destroy the scratch guest again through the journal's compensation, pass or fail.
//!    A removal that fails (e.g. a lock) is retried by the scheduler through the journal,
//!    backing off while it keeps failing.
//!
//! A test an agent restart interrupted is closed as `fail` ("interrupted by an agent restart")
//! without a duration, and does not count as its schedule slot's test.
//!
//! Agent shutdown ends a test at once (task waits and the settle time are cancelled); the
//! scratch guest is then left to start-up recovery rather than destroyed racing the restore
//! task Proxmox may still be running.
//!
//! Restore-tests run one at a time per host (different guests' tests queue behind each other):
//! that keeps two tests from picking the same free scratch vmid, and bounds what scratch guests
//! cost the host.
//!
//! The scratch tag is written by the agent and never trusted: only a guest this agent's
//! journal records as created by a restore-test is ever destroyed. A guest someone else tagged
//! `felhom-scratch` is left alone (its vmid is simply not free). A crash mid-test leaves an
//! unfinished operation that start-up recovery compensates, destroying the scratch guest.

use std::time::{Duration, Instant};

use felhom_proto::agent::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::capabilities::backup::service::{
    Accepted, BackupError, BackupService, TierListings, guest_volumes, phase_word,
};
use crate::capabilities::backup::{Tier, TierKind};
use crate::core::error_chain as chain;
use crate::infra::journaled::{
    self, GuestMarker, JournalWriter, JournaledError, compensate, new_guest_restore,
    restore_new_guest, step,
};
use crate::infra::pve::{ConfigUpdate, PveClient, Vmid};
use crate::infra::state::{JobId, OperationId, Timestamp};

/// Journal operation kind of a restore-test (its vmid is the scratch guest's).
pub const KIND: &str = "restore-test";
/// Job kind in the queue and job history (on the source guest).
pub const JOB_KIND: &str = "restore-test";
/// The tag the agent gives its scratch guests (informational; never trusted).
pub const SCRATCH_TAG: &str = "felhom-scratch";

/// Why a restore-test could not be started or looked up (a test that ran and failed is a
/// result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum RestoreTestError {
    #[error("Guest {0} has no backup policy")]
    NoPolicy(u32),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("Cannot read the journal for scratch guests left behind: {0}")]
    Cleanup(String),
}

/// What the test restores.
#[derive(Debug, Clone)]
struct Source {
    tier: Tier,
    volid: String,
}

/// Starts a restore-test of `vmid` (or answers the one under way).
pub async fn start(svc: &BackupService, vmid: u32) -> Result<Accepted, RestoreTestError> {
    if svc.settings().policies_of(vmid).next().is_none() {
        return Err(RestoreTestError::NoPolicy(vmid));
    }
    let _guard = svc.start_guard().await;
    if let Some(job_id) = svc.active_job(vmid, JOB_KIND).await? {
        return Ok(Accepted {
            job_id,
            new_job: false,
        });
    }
    let this = svc.clone();
    let handle = svc
        .queue()
        .submit(vmid, JOB_KIND, move |ctx| async move {
            let job = ctx.id().clone();
            run(&this, job, vmid, ctx.shutdown_token())
                .await
                .map_err(|e| chain(&e).into())
        })
        .await
        .map_err(BackupError::from)?;
    Ok(Accepted {
        job_id: handle.id().to_string(),
        new_job: true,
    })
}

/// How a test ended.
#[derive(Debug)]
enum Verdict {
    Pass(String),
    Fail(String),
    /// The agent is shutting down: the scratch guest (if any) is left to start-up recovery,
    /// which destroys it through the journal; the record is closed at that start too.
    Interrupted,
}

/// The job body. `Ok` carries the verdict as the job's result; `Err` when the history itself
/// cannot be written or the agent shut down mid-test.
async fn run(
    svc: &BackupService,
    job: JobId,
    vmid: u32,
    shutdown: CancellationToken,
) -> Result<Option<serde_json::Value>, BackupError> {
    {
        let job = job.clone();
        svc.db()
            .run(move |db| db.backups().start_restore_test(&job, vmid))
            .await?;
    }
    let started = Instant::now();
    let (pass, detail) = match test(svc, &job, vmid, &shutdown).await {
        Verdict::Pass(detail) => (true, detail),
        Verdict::Fail(detail) => (false, detail),
        Verdict::Interrupted => {
            tracing::warn!(
                vmid,
                "restore-test interrupted by agent shutdown; the next start removes its scratch guest"
            );
            return Err(BackupError::Interrupted("restore-test"));
        }
    };
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    tracing::info!(vmid, pass, %detail, ms, "restore-test finished");
    {
        let (job, detail) = (job.clone(), detail.clone());
        svc.db()
            .run(move |db| db.backups().finish_restore_test(&job, pass, &detail, ms))
            .await?;
    }
    Ok(Some(serde_json::json!({
        "result": if pass { "pass" } else { "fail" },
        "detail": detail,
    })))
}

/// Runs the test.
async fn test(
    svc: &BackupService,
    job: &JobId,
    vmid: u32,
    shutdown: &CancellationToken,
) -> Verdict {
    // From picking the scratch vmid to destroying the scratch guest: one test at a time.
    let _one_at_a_time = tokio::select! {
        guard = svc.restore_guard() => guard,
        () = shutdown.cancelled() => return Verdict::Interrupted,
    };
    match test_locked(svc, job, vmid, shutdown).await {
        Ok(v) => v,
        Err(detail) => Verdict::Fail(detail),
    }
}

/// The test under the restore lock; `Err(detail)` when it failed before any scratch guest.
async fn test_locked(
    svc: &BackupService,
    job: &JobId,
    vmid: u32,
    shutdown: &CancellationToken,
) -> Result<Verdict, String> {
    let pve = svc.pve().map_err(|e| chain(&e))?.clone();
    let (source, skipped) = pick_source(svc, &pve, vmid).await?;
    let scratch = pick_scratch(svc, &pve).await?;
    {
        let (job, volid, tier) = (job.clone(), source.volid.clone(), source.tier.name.clone());
        svc.db()
            .run(move |db| {
                db.backups()
                    .restore_test_source(&job, &volid, &tier, Some(scratch.get()))
            })
            .await
            .map_err(|e| chain(&e))?;
    }
    if shutdown.is_cancelled() {
        return Ok(Verdict::Interrupted);
    }
    let journal = JournalWriter::new(svc.db().clone());
    let op = journal
        .begin(KIND, scratch.get())
        .await
        .map_err(|e| chain(&e))?;
    let probe = svc.settings().probe_of(vmid).map(str::to_owned);
    let run = Run {
        svc,
        pve: &pve,
        journal: &journal,
        op,
        scratch,
        shutdown,
    };
    let outcome = run.steps(&source, probe.as_deref()).await;
    if outcome.is_err() && shutdown.is_cancelled() {
        // Destroying now would race the restore task Proxmox is still running and hold the
        // shutdown up; the unfinished operation is compensated at the next start instead.
        return Ok(Verdict::Interrupted);
    }
    let what = format!(
        "{} from tier '{}' into scratch guest {scratch}",
        source.volid, source.tier.name
    );
    let reason = match &outcome {
        Ok(_) => "restore-test finished: removing the scratch guest".to_owned(),
        Err(e) => format!("restore-test failed: {}", chain(e)),
    };
    let cleanup = compensate(&pve, &journal, svc.wait(), op, Some(reason), shutdown).await;
    let mut detail = match &outcome {
        Ok(health) => format!("restored {what}; {health}"),
        Err(e) => format!("restoring {what} failed: {}", chain(e)),
    };
    if !skipped.is_empty() {
        detail.push_str(&format!("; skipped {}", skipped.join(", ")));
    }
    match cleanup {
        Ok(()) => detail.push_str("; no scratch guest left"),
        // The verdict stands; start-up recovery finishes the removal.
        Err(_) if shutdown.is_cancelled() => detail.push_str(&format!(
            "; removing scratch guest {scratch} was interrupted by agent shutdown and is finished at the next start"
        )),
        Err(e) => {
            detail.push_str(&format!(
                "; scratch guest {scratch} could NOT be destroyed yet (the scheduler retries): {}",
                chain(&e)
            ));
            return Ok(Verdict::Fail(detail));
        }
    }
    Ok(match outcome {
        Ok(_) => Verdict::Pass(detail),
        Err(_) => Verdict::Fail(detail),
    })
}

/// Finishes removing scratch guests earlier tests could not destroy (for example while a
/// Proxmox task still held them), through their journaled operations exactly as start-up
/// recovery would. Skipped while a test runs: its own operation stays unfinished until it
/// has cleaned up after itself. Returns how many operations were resolved and how many are
/// still left.
pub async fn clean_up_leftovers(
    svc: &BackupService,
    shutdown: &CancellationToken,
) -> Result<(usize, usize), RestoreTestError> {
    let Some(_no_test_running) = svc.try_restore_guard() else {
        return Ok((0, 0));
    };
    let pve = svc.pve()?;
    // A restore-test is never "done" by recovery: its end is always removal.
    journaled::recover_kind(
        pve,
        svc.db(),
        svc.wait(),
        KIND,
        shutdown,
        &journaled::Plans(&[]),
    )
    .await
    .map_err(|e| RestoreTestError::Cleanup(chain(&e)))
}

/// Local tiers restore faster than PBS; within a kind, configuration order.
fn speed_rank(t: &Tier) -> u8 {
    match t.kind {
        TierKind::Local => 0,
        TierKind::Pbs => 1,
    }
}

async fn pick_source(
    svc: &BackupService,
    pve: &PveClient,
    vmid: u32,
) -> Result<(Source, Vec<String>), String> {
    let settings = svc.settings();
    let mut tiers: Vec<&Tier> = settings
        .policies_of(vmid)
        .map(|p| settings.tier(p.tier))
        .collect();
    tiers.sort_by_key(|t| speed_rank(t));
    let guest = Vmid::new(vmid).map_err(|e| e.to_string())?;
    let mut skipped = Vec::new();
    for tier in tiers {
        match pve.backup_volumes(&tier.storage, Some(guest)).await {
            Ok(vols) => {
                if let Some(v) = vols.into_iter().max_by_key(|v| v.ctime) {
                    return Ok((
                        Source {
                            tier: tier.clone(),
                            volid: v.volid,
                        },
                        skipped,
                    ));
                }
            }
            Err(e) => skipped.push(format!("tier '{}' (unreachable: {})", tier.name, chain(&e))),
        }
    }
    let mut msg = format!("no backup of guest {vmid} on any tier to restore");
    if !skipped.is_empty() {
        msg.push_str(&format!("; skipped {}", skipped.join(", ")));
    }
    Err(msg)
}

/// The first vmid of the scratch range no guest uses (any guest: a foreign one tagged
/// scratch is skipped like any other) and no unfinished operation of this agent still holds
/// (its leftover may be gone from Proxmox's view while its removal is still being decided).
async fn pick_scratch(svc: &BackupService, pve: &PveClient) -> Result<Vmid, String> {
    let mut used: Vec<u32> = pve
        .cluster_guests()
        .await
        .map_err(|e| format!("cannot list guests: {}", chain(&e)))?
        .into_iter()
        .map(|g| g.vmid)
        .collect();
    let held = svc
        .db()
        .run(|db| db.journal().unfinished())
        .await
        .map_err(|e| format!("cannot read the journal: {}", chain(&e)))?;
    used.extend(held.iter().filter_map(|op| op.vmid));
    let range = svc.settings().scratch_vmids.clone();
    let (first, last) = (*range.start(), *range.end());
    range
        .into_iter()
        .find(|v| !used.contains(v))
        .ok_or_else(|| format!("no free scratch vmid in {first}..{last}"))
        .and_then(|v| Vmid::new(v).map_err(|e| e.to_string()))
}

/// `name=eth0,bridge=vmbr0,…` with `link_down=1` set (replacing any `link_down=`).
pub fn with_link_down(net: &str) -> String {
    let mut parts: Vec<&str> = net
        .split(',')
        .filter(|p| !p.is_empty() && !p.starts_with("link_down="))
        .collect();
    parts.push("link_down=1");
    parts.join(",")
}

/// One test's journaled operation on its scratch guest.
struct Run<'a> {
    svc: &'a BackupService,
    pve: &'a PveClient,
    journal: &'a JournalWriter,
    op: OperationId,
    scratch: Vmid,
    shutdown: &'a CancellationToken,
}

impl Run<'_> {
    async fn steps(&self, source: &Source, probe: Option<&str>) -> Result<String, StepError> {
        let Run {
            svc,
            pve,
            journal,
            op,
            scratch,
            shutdown,
        } = *self;
        let wait = svc.wait();
        // Task waits end at agent shutdown; the journal then leaves the rest to recovery.
        let cancel = shutdown.clone();
        let storage = svc.settings().scratch_storage.clone();
        // Marked scratch, kept from starting at boot and deletable from the moment it exists
        // (given options win over the archive's, `protection` included), so a host reboot
        // before `configure` cannot start a copy of the customer's guest.
        let mut restore = new_guest_restore(scratch, &source.volid, &storage);
        restore.onboot = Some(false);
        restore.tags = Some(SCRATCH_TAG.into());
        restore.protection = Some(false);
        step::<StepError, _, _>(journal, pve, wait, &cancel, op, "restore", |s| async move {
            Ok(restore_new_guest(pve, journal, s, &restore).await?)
        })
        .await?;
        step::<StepError, _, _>(
            journal,
            pve,
            wait,
            &cancel,
            op,
            "configure",
            |_| async move {
                let config = pve
                    .lxc_config(scratch)
                    .await
                    .map_err(pve_err("configure"))?;
                let mut update = ConfigUpdate::default();
                // The restore's marker stays: compensation recognises the guest by it.
                let tags: Vec<&str> = std::iter::once(SCRATCH_TAG)
                    .chain(
                        config
                            .tags
                            .iter()
                            .map(String::as_str)
                            .filter(|t| GuestMarker::is_marker(t)),
                    )
                    .collect();
                update.set.insert("tags".into(), tags.join(";"));
                update.set.insert("onboot".into(), "0".into());
                for (index, value) in &config.nets {
                    update
                        .set
                        .insert(format!("net{index}"), with_link_down(value));
                }
                pve.set_config(scratch, &update)
                    .await
                    .map_err(pve_err("configure"))?;
                Ok(None)
            },
        )
        .await?;
        step::<StepError, _, _>(journal, pve, wait, &cancel, op, "start", |_| async move {
            Ok(Some(pve.start(scratch).await.map_err(pve_err("start"))?))
        })
        .await?;
        let settle = svc.settings().settle;
        let mut health = String::new();
        let h = &mut health;
        step::<StepError, _, _>(journal, pve, wait, &cancel, op, "health", |_| async move {
            *h = health_check(pve, scratch, settle, probe, shutdown).await?;
            Ok(None)
        })
        .await?;
        Ok(health)
    }
}

/// Why a step of a test failed.
#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Journaled(#[from] JournaledError),
    #[error(transparent)]
    Unhealthy(#[from] Unhealthy),
}

fn pve_err(step: &'static str) -> impl FnOnce(crate::infra::pve::PveError) -> StepError {
    move |e| JournaledError::pve(step)(e).into()
}

/// Why a started scratch guest is not healthy.
#[derive(Debug, thiserror::Error)]
enum Unhealthy {
    #[error("scratch guest stopped {after_secs}s after start (status '{status}')")]
    Stopped { after_secs: u64, status: String },
    #[error("probe: interface '{0}' did not show up inside the guest")]
    NoInterface(String),
    #[error("health check interrupted by agent shutdown")]
    ShutDown,
}

async fn health_check(
    pve: &PveClient,
    scratch: Vmid,
    settle: Duration,
    probe: Option<&str>,
    shutdown: &CancellationToken,
) -> Result<String, StepError> {
    let begun = Instant::now();
    let fail = StepError::Unhealthy;
    loop {
        let status = pve.lxc_status(scratch).await.map_err(pve_err("health"))?;
        if status.status != "running" {
            return Err(fail(Unhealthy::Stopped {
                after_secs: begun.elapsed().as_secs(),
                status: status.status,
            }));
        }
        if begun.elapsed() >= settle {
            break;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1).min(settle)) => {}
            () = shutdown.cancelled() => return Err(fail(Unhealthy::ShutDown)),
        }
    }
    let mut detail = format!("running for {}s", settle.as_secs());
    if let Some(iface) = probe {
        let found = pve
            .lxc_interfaces(scratch)
            .await
            .map_err(pve_err("health"))?
            .iter()
            .any(|i| i.name == iface);
        if !found {
            return Err(fail(Unhealthy::NoInterface(iface.to_owned())));
        }
        detail.push_str(&format!("; interface {iface} present"));
    }
    Ok(detail)
}

/// The guest's newest restore-test, as the status RPCs answer it.
pub async fn status(
    svc: &BackupService,
    vmid: u32,
) -> Result<pb::RestoreTestStatus, RestoreTestError> {
    let db = svc.db();
    // The job first, then its rows: a job seen finished has written its result, so "done"
    // never comes with a result still missing (read the other way round, it could).
    let active = svc.active_job(vmid, JOB_KIND).await?;
    let latest = db
        .run(move |db| db.backups().latest_restore_test(vmid))
        .await
        .map_err(BackupError::from)?;
    let finished = db
        .run(move |db| db.backups().latest_finished_restore_test(vmid))
        .await
        .map_err(BackupError::from)?;
    let mut out = pb::RestoreTestStatus {
        vmid,
        phase: "idle".into(),
        result: "none".into(),
        ..Default::default()
    };
    if let Some(job) = &active {
        out.phase = phase_word(crate::infra::state::JobPhase::Running).into();
        out.job_id = job.clone();
    } else if latest.is_some() {
        out.phase = "done".into();
    }
    if let Some(t) = finished {
        out.last_run_at = secs(t.started_at);
        out.result = t.result.unwrap_or_else(|| "none".into());
        out.detail = t.detail.unwrap_or_default();
        if active.is_none() {
            out.job_id = t.job_id;
        }
        out.volid = t.volid.unwrap_or_default();
        out.tier = t.tier.unwrap_or_default();
        out.scratch_vmid = t.scratch_vmid.unwrap_or_default();
        out.duration_ms = t.duration_ms.unwrap_or_default();
    }
    Ok(out)
}

fn secs(t: Timestamp) -> i64 {
    t.unix_millis().div_euclid(1000)
}

/// Whether `vmid`'s restore-test is due at `now` by its schedule: the latest slot is newer
/// than the last test, and there is a backup newer than the last test to try.
pub async fn is_due(
    svc: &BackupService,
    vmid: u32,
    now: i64,
    listings: &TierListings,
) -> Result<bool, RestoreTestError> {
    let Some((schedule, _)) = svc.settings().restore_test_of(vmid) else {
        return Ok(false);
    };
    let Some(slot) = schedule.latest_slot(now) else {
        return Ok(false);
    };
    // A test an agent restart interrupted reached no verdict: it does not count as this
    // slot's test (one that is running shows as an active job and is not started twice).
    let last = svc
        .db()
        .run(move |db| db.backups().latest_completed_restore_test(vmid))
        .await
        .map_err(BackupError::from)?
        .map(|t| secs(t.started_at));
    if last.is_some_and(|l| l >= slot) {
        return Ok(false);
    }
    let pve = svc.pve()?;
    let guest = Vmid::new(vmid).map_err(BackupError::from)?;
    let mut newest: Option<i64> = None;
    for p in svc.settings().policies_of(vmid) {
        let tier = svc.settings().tier(p.tier);
        // An unreachable tier does not make the test due; the others may.
        if let Ok(vols) = guest_volumes(pve, &tier.storage, guest, listings).await {
            let n = vols
                .iter()
                .map(|v| i64::try_from(v.ctime).unwrap_or(0))
                .max();
            newest = newest.max(n);
        }
    }
    Ok(newest.is_some_and(|n| last.is_none_or(|l| n > l)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_down_is_added_once() {
        assert_eq!(
            with_link_down("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth"),
            "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:00:01,ip=dhcp,type=veth,link_down=1"
        );
        assert_eq!(
            with_link_down("name=eth0,bridge=vmbr0,link_down=0"),
            "name=eth0,bridge=vmbr0,link_down=1"
        );
    }
}
