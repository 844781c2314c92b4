//! The agent's own schedule: crash-consistent backups after the grace window, and
//! self-restore-tests.
//!
//! Every `[backup] tick_secs`, for each guest with a policy:
//! - backup: when the guest is due and has been for at least `grace_secs` (measured from the
//!   slot it became due at, or, for a guest never backed up, from when this process first saw
//!   it due), and no backup of the guest was attempted within the grace window, the agent backs
//!   it up itself (trigger `schedule`, crash-consistent). The controller had its chance to
//!   quiesce and call POST /backup; an attempt that failed is retried at most once per window.
//! - restore-test: when [`crate::capabilities::backup::restore_test::is_due`] says so; and, beside the tick (backing
//!   off while something stays left), any scratch guest an earlier test could not destroy is
//!   removed (see [`crate::capabilities::backup::restore_test::clean_up_leftovers`]).
//!
//! Errors are logged and the guest is tried again next tick; one guest's trouble never stops
//! the loop.

use std::collections::HashMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::capabilities::backup::service::{BackupService, TierListings, Trigger};
use crate::core::error_chain as chain;

/// Runs until `shutdown` is cancelled.
pub async fn run(svc: BackupService, shutdown: CancellationToken) {
    let guests = svc.settings().guests();
    if guests.is_empty() {
        tracing::info!("no backup policies: the backup scheduler is idle");
        return;
    }
    let tick = svc.settings().tick;
    tracing::info!(
        guests = guests.len(),
        tick_secs = tick.as_secs(),
        "backup scheduler running"
    );
    let mut state = TickState::default();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        tick_once(&svc, &guests, &mut state, &shutdown).await;
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// What the scheduler carries from one tick to the next: when each due guest was first seen
/// due, and the leftover cleanup running beside the ticks.
#[derive(Default)]
pub struct TickState {
    first_seen_due: HashMap<u32, i64>,
    cleanup: Cleanup,
}

/// One tick of [`run`] for `guests` (the guests with a policy, ascending): start (or back
/// off) the leftover cleanup, list each tier storage once, then check every guest's backup
/// and restore-test. Returns early once `shutdown` is cancelled. Public, and what the loop
/// itself calls, so the workspace benchmark (`tests/benches/felhom.rs`) can count and time
/// exactly the work of a tick without waiting for `tick_secs`.
pub async fn tick_once(
    svc: &BackupService,
    guests: &[u32],
    state: &mut TickState,
    shutdown: &CancellationToken,
) {
    state.cleanup.poll(svc, shutdown).await;
    // One listing per tier storage for the whole tick, not one per guest and tier.
    let listings = svc.tier_listings().await;
    for &vmid in guests {
        if shutdown.is_cancelled() {
            return;
        }
        if let Err(e) = backup_tick(svc, vmid, &listings, &mut state.first_seen_due).await {
            tracing::warn!(vmid, error = %e, "scheduler: backup check failed");
        }
        match crate::capabilities::backup::restore_test::is_due(
            svc,
            vmid,
            svc.now_secs(),
            &listings,
        )
        .await
        {
            Ok(true) => match crate::capabilities::backup::restore_test::start(svc, vmid).await {
                Ok(a) => {
                    tracing::info!(vmid, job = %a.job_id, "scheduler: restore-test started")
                }
                Err(e) => {
                    tracing::warn!(vmid, error = %chain(&e), "scheduler: cannot start restore-test")
                }
            },
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(vmid, error = %chain(&e), "scheduler: restore-test check failed")
            }
        }
    }
}

/// The leftover cleanup runs beside the tick (it may wait on a long Proxmox task) and, while
/// something is still left, backs off from every tick to at most every six hours.
#[derive(Default)]
struct Cleanup {
    running: Option<tokio::task::JoinHandle<bool>>,
    next_at: Option<tokio::time::Instant>,
    backoff: Duration,
}

impl Cleanup {
    const FIRST_BACKOFF: Duration = Duration::from_secs(60);
    const MAX_BACKOFF: Duration = Duration::from_secs(6 * 3600);

    async fn poll(&mut self, svc: &BackupService, shutdown: &CancellationToken) {
        if let Some(handle) = self.running.take() {
            if !handle.is_finished() {
                self.running = Some(handle);
                return;
            }
            // Finished: the await is immediate. A panicked run counts as "something left".
            if handle.await.unwrap_or(true) {
                self.backoff = (self.backoff * 2).clamp(Self::FIRST_BACKOFF, Self::MAX_BACKOFF);
                self.next_at = Some(tokio::time::Instant::now() + self.backoff);
            } else {
                self.backoff = Duration::ZERO;
                self.next_at = None;
            }
        }
        if self
            .next_at
            .is_some_and(|t| tokio::time::Instant::now() < t)
        {
            return;
        }
        let (svc, shutdown) = (svc.clone(), shutdown.clone());
        self.running = Some(tokio::spawn(async move {
            match crate::capabilities::backup::restore_test::clean_up_leftovers(&svc, &shutdown)
                .await
            {
                Ok((0, 0)) => false,
                Ok((resolved, left)) => {
                    tracing::info!(
                        resolved,
                        left,
                        "scheduler: unfinished restore-test operations (scratch guests) resolved"
                    );
                    left > 0
                }
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "scheduler: cannot clean up after earlier restore-tests");
                    true
                }
            }
        }));
    }
}

async fn backup_tick(
    svc: &BackupService,
    vmid: u32,
    listings: &TierListings,
    first_seen_due: &mut HashMap<u32, i64>,
) -> Result<(), String> {
    let now = svc.now_secs();
    let due = svc.due_with(vmid, listings).await.map_err(|e| chain(&e))?;
    if !due.due {
        first_seen_due.remove(&vmid);
        return Ok(());
    }
    let seen = *first_seen_due.entry(vmid).or_insert(now);
    let since = due.since.unwrap_or(seen);
    let grace = i64::try_from(svc.settings().grace.as_secs()).unwrap_or(i64::MAX);
    if now.saturating_sub(since) < grace {
        return Ok(());
    }
    let last = svc
        .db()
        .run(move |db| db.backups().last_backup_attempt(vmid))
        .await
        .map_err(|e| chain(&e))?;
    if last.is_some_and(|t| now.saturating_sub(t.unix_millis().div_euclid(1000)) < grace) {
        return Ok(());
    }
    let accepted = svc
        .start(vmid, Trigger::Schedule, None)
        .await
        .map_err(|e| chain(&e))?;
    tracing::info!(vmid, job = %accepted.job_id, reason = %due.reason,
        "scheduler: controller did not back up within the grace window; backing up (crash-consistent)");
    Ok(())
}
