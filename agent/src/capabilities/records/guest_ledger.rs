//! What each guest has written to the state database lately: the coalescing of its repeated
//! audit entries and its budget of rows per rolling hour.
//!
//! Every local-API change a guest asks for is audited, refusals and joins included, and a
//! controller that retries in a loop would grow the audit log (and the job history) without
//! bound. Two rules keep a guest's share bounded:
//!
//! - **Coalescing.** An entry identical (actor, action, target, detail) to the guest's previous
//!   one, within [`GuestAuditPolicy::coalesce_window`] of when that one was recorded, is not
//!   appended but counted. The guest's next different entry, or its next entry after the window,
//!   first appends one summary row for the run ("… (repeated N more times between A and B)").
//!   The first occurrence is always recorded; counts still pending when the agent crashes are
//!   lost (a graceful stop writes them: [`super::Records::flush_coalesced`]).
//! - **Budget.** A guest may cause at most [`GuestAuditPolicy::budget_per_hour`] rows per
//!   rolling hour: audit rows (summary rows included; coalesced repeats are free) and the job
//!   rows its calls queue. Over budget, its mutating calls are refused before anything is done;
//!   those refusals are counted, not audited, and one row says how many there were once the
//!   guest is back under budget (or at the flush). The budget is checked before a call and
//!   charged after it, so calls admitted together may overshoot it by the few rows each writes.
//!
//! The state is in memory only: a restart forgets the counts and starts every budget afresh.
//! Operators' entries never pass through here. This module decides; [`super::Records`] writes.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::core::Vmid;
use crate::infra::state::Timestamp;

/// Default [`GuestAuditPolicy::budget_per_hour`]: one row every 15 s on average, far beyond
/// what a well-behaved controller causes (a few snapshots and a backup a day) and small enough
/// that a looping one adds under 6,000 rows a day.
pub const DEFAULT_BUDGET_PER_HOUR: u32 = 240;

/// Default [`GuestAuditPolicy::coalesce_window`].
pub const DEFAULT_COALESCE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// The span a budget counts rows over.
const BUDGET_SPAN: Duration = Duration::from_secs(60 * 60);

/// Audit action of the row that counts a guest's over-budget refusals.
pub const OVER_BUDGET_ACTION: &str = "local_api.over_budget";

/// How much of the state database one guest may fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestAuditPolicy {
    /// How long after an entry is recorded identical ones are only counted.
    pub coalesce_window: Duration,
    /// Rows (audit and job) one guest may cause per rolling hour.
    pub budget_per_hour: u32,
}

impl Default for GuestAuditPolicy {
    fn default() -> Self {
        Self {
            coalesce_window: DEFAULT_COALESCE_WINDOW,
            budget_per_hour: DEFAULT_BUDGET_PER_HOUR,
        }
    }
}

/// Why a guest's call is refused before it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuestBudgetError {
    #[error("Guest {vmid} caused {budget} audit and job rows within the last hour")]
    OverBudget { vmid: Vmid, budget: u32 },
}

/// An audit row to append for a guest (its actor is the guest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRow {
    pub action: &'static str,
    pub target: String,
    pub detail: String,
}

/// Every guest's recent rows; one small entry per guest that has called.
#[derive(Debug, Default)]
pub struct GuestLedger {
    policy: GuestAuditPolicy,
    guests: HashMap<Vmid, GuestState>,
}

impl GuestLedger {
    pub fn new(policy: GuestAuditPolicy) -> Self {
        Self {
            policy,
            guests: HashMap::new(),
        }
    }

    /// A guest's audit entry at `now`: the rows to append, in order (none when it repeats the
    /// guest's previous entry within the window; a summary of that run first when it ends).
    pub fn entry(&mut self, vmid: Vmid, now: Timestamp, row: GuestRow) -> Vec<GuestRow> {
        let window = self.policy.coalesce_window;
        let guest = self.guests.entry(vmid).or_default();
        let mut rows = Vec::with_capacity(2);
        if let Some(run) = &mut guest.run {
            if run.row == row && now < run.since.saturating_add(window) {
                Span::extend(&mut run.repeats, now);
                return rows;
            }
            rows.extend(run.summary());
        }
        rows.push(row.clone());
        guest.run = Some(Run {
            row,
            since: now,
            repeats: None,
        });
        guest.charge(now, rows.len());
        rows
    }

    /// Whether `vmid` may start a mutating call at `now`. Over budget, the refusal is counted
    /// (the first of a run is logged); back under it, the row counting the refusals is returned
    /// for appending before the call goes ahead.
    pub fn admit(
        &mut self,
        vmid: Vmid,
        now: Timestamp,
    ) -> Result<Option<GuestRow>, GuestBudgetError> {
        let budget = self.policy.budget_per_hour;
        let guest = self.guests.entry(vmid).or_default();
        guest.forget_before(now);
        if guest.charged.len() >= usize::try_from(budget).unwrap_or(usize::MAX) {
            if guest.refused.is_none() {
                tracing::warn!(%vmid, budget, "guest is over its audit budget; its changes are refused for now");
            }
            Span::extend(&mut guest.refused, now);
            return Err(GuestBudgetError::OverBudget { vmid, budget });
        }
        let row = guest.refused.take().map(|s| refusals_row(vmid, budget, s));
        if row.is_some() {
            guest.charge(now, 1);
        }
        Ok(row)
    }

    /// Charges `vmid` for a job row one of its calls queued at `now`.
    pub fn job_queued(&mut self, vmid: Vmid, now: Timestamp) {
        self.guests.entry(vmid).or_default().charge(now, 1);
    }

    /// Every pending summary (repeats of a run, counted refusals), in guest order. The runs
    /// end: the next entry of each guest is recorded as a first occurrence.
    pub fn drain(&mut self) -> Vec<(Vmid, GuestRow)> {
        let budget = self.policy.budget_per_hour;
        let mut vmids: Vec<Vmid> = self.guests.keys().copied().collect();
        vmids.sort_unstable();
        let mut rows = Vec::new();
        for vmid in vmids {
            let Some(guest) = self.guests.get_mut(&vmid) else {
                continue;
            };
            if let Some(row) = guest.run.take().and_then(|r| r.summary()) {
                rows.push((vmid, row));
            }
            if let Some(span) = guest.refused.take() {
                rows.push((vmid, refusals_row(vmid, budget, span)));
            }
        }
        rows
    }
}

/// What is remembered of one guest.
#[derive(Debug, Default)]
struct GuestState {
    /// Its previous entry and the repeats not yet summarised.
    run: Option<Run>,
    /// When each row it caused within the last hour was written, oldest first.
    charged: VecDeque<Timestamp>,
    /// Calls refused over budget since it was last admitted.
    refused: Option<Span>,
}

impl GuestState {
    fn charge(&mut self, now: Timestamp, rows: usize) {
        self.charged.extend(std::iter::repeat_n(now, rows));
    }

    /// Drops charges that have left the rolling hour.
    fn forget_before(&mut self, now: Timestamp) {
        while let Some(&at) = self.charged.front() {
            if at.saturating_add(BUDGET_SPAN) > now {
                break;
            }
            self.charged.pop_front();
        }
    }
}

/// A recorded entry and its coalesced repeats.
#[derive(Debug)]
struct Run {
    row: GuestRow,
    /// When the first occurrence was recorded (the window counts from here).
    since: Timestamp,
    repeats: Option<Span>,
}

impl Run {
    /// The summary row, if anything was coalesced.
    fn summary(&self) -> Option<GuestRow> {
        let span = self.repeats?;
        let times = if span.count == 1 { "time" } else { "times" };
        Some(GuestRow {
            action: self.row.action,
            target: self.row.target.clone(),
            detail: format!(
                "{} (repeated {} more {times} between {} and {})",
                self.row.detail, span.count, span.first, span.last
            ),
        })
    }
}

/// How many times something happened, and when first and last.
#[derive(Debug, Clone, Copy)]
struct Span {
    count: u64,
    first: Timestamp,
    last: Timestamp,
}

impl Span {
    fn extend(span: &mut Option<Span>, now: Timestamp) {
        match span {
            Some(s) => {
                s.count += 1;
                s.last = now;
            }
            None => {
                *span = Some(Span {
                    count: 1,
                    first: now,
                    last: now,
                });
            }
        }
    }
}

fn refusals_row(vmid: Vmid, budget: u32, span: Span) -> GuestRow {
    let calls = if span.count == 1 { "call" } else { "calls" };
    GuestRow {
        action: OVER_BUDGET_ACTION,
        target: format!("guest:{vmid}"),
        detail: format!(
            "refused {} {calls} over the budget of {budget} rows per hour between {} and {}",
            span.count, span.first, span.last
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_424_512_000; // 2026-11-23T09:01:52.000Z

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix_millis(T0 + secs * 1000)
    }

    fn vmid(n: u32) -> Vmid {
        Vmid::new(n).expect("valid vmid")
    }

    fn refusal(detail: &str) -> GuestRow {
        GuestRow {
            action: "guest.backup",
            target: "guest:101".to_owned(),
            detail: detail.to_owned(),
        }
    }

    fn ledger(budget: u32) -> GuestLedger {
        GuestLedger::new(GuestAuditPolicy {
            budget_per_hour: budget,
            ..GuestAuditPolicy::default()
        })
    }

    #[test]
    fn a_repeat_within_the_window_writes_nothing_and_the_next_different_entry_summarises_it() {
        let mut l = ledger(240);
        let g = vmid(101);
        assert_eq!(
            l.entry(g, at(0), refusal("no policy")),
            [refusal("no policy")]
        );
        assert!(l.entry(g, at(1), refusal("no policy")).is_empty());
        assert!(l.entry(g, at(2), refusal("no policy")).is_empty());
        let rows = l.entry(g, at(3), refusal("other"));
        assert_eq!(
            rows,
            [
                refusal(
                    "no policy (repeated 2 more times between 2026-11-23T09:01:53.000Z and 2026-11-23T09:01:54.000Z)"
                ),
                refusal("other"),
            ]
        );
    }

    #[test]
    fn the_window_counts_from_the_recorded_entry_not_from_the_last_repeat() {
        let mut l = ledger(240);
        let g = vmid(101);
        l.entry(g, at(0), refusal("x"));
        assert!(l.entry(g, at(300), refusal("x")).is_empty());
        assert!(l.entry(g, at(599), refusal("x")).is_empty());
        let rows = l.entry(g, at(600), refusal("x"));
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert!(rows[0].detail.contains("repeated 2 more times"), "{rows:?}");
        assert_eq!(rows[1], refusal("x"));
    }

    #[test]
    fn guests_are_coalesced_apart() {
        let mut l = ledger(240);
        l.entry(vmid(101), at(0), refusal("x"));
        assert_eq!(l.entry(vmid(102), at(1), refusal("x")).len(), 1);
        assert!(l.entry(vmid(101), at(2), refusal("x")).is_empty());
    }

    #[test]
    fn a_guest_at_its_budget_is_refused_until_the_hour_has_rolled_on() {
        let mut l = ledger(3);
        let g = vmid(101);
        for (i, d) in ["a", "b", "c"].into_iter().enumerate() {
            assert_eq!(l.admit(g, at(i as i64)), Ok(None));
            l.entry(g, at(i as i64), refusal(d));
        }
        let over = Err(GuestBudgetError::OverBudget { vmid: g, budget: 3 });
        assert_eq!(l.admit(g, at(10)), over);
        assert_eq!(l.admit(g, at(3599)), over);
        // The first row has left the hour: admitted, with the row counting the refusals.
        let row = l.admit(g, at(3600)).expect("under budget again");
        assert_eq!(
            row,
            Some(GuestRow {
                action: OVER_BUDGET_ACTION,
                target: "guest:101".to_owned(),
                detail: "refused 2 calls over the budget of 3 rows per hour between 2026-11-23T09:02:02.000Z and 2026-11-23T10:01:51.000Z".to_owned(),
            })
        );
        // That row counts: the budget is full again.
        assert_eq!(l.admit(g, at(3600)), over);
    }

    #[test]
    fn coalesced_repeats_are_free_and_summaries_and_jobs_are_charged() {
        let mut l = ledger(3);
        let g = vmid(101);
        l.entry(g, at(0), refusal("x"));
        for s in 1..100 {
            assert!(l.entry(g, at(s), refusal("x")).is_empty());
            assert_eq!(l.admit(g, at(s)), Ok(None));
        }
        // Summary + new entry: 3 rows charged.
        assert_eq!(l.entry(g, at(100), refusal("y")).len(), 2);
        assert!(l.admit(g, at(100)).is_err());

        let other = vmid(102);
        l.job_queued(other, at(0));
        l.job_queued(other, at(0));
        l.entry(other, at(0), refusal("z"));
        assert!(l.admit(other, at(1)).is_err());
    }

    #[test]
    fn drain_returns_pending_summaries_and_refusals_and_ends_the_runs() {
        let mut l = ledger(1);
        let g = vmid(101);
        l.entry(g, at(0), refusal("x"));
        l.entry(g, at(1), refusal("x"));
        assert!(l.admit(g, at(2)).is_err());
        let rows = l.drain();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].0, g);
        assert!(
            rows[0]
                .1
                .detail
                .starts_with("x (repeated 1 more time between"),
            "{rows:?}"
        );
        assert_eq!(rows[1].1.action, OVER_BUDGET_ACTION);
        assert!(
            rows[1].1.detail.starts_with("refused 1 call over"),
            "{rows:?}"
        );
        assert!(l.drain().is_empty());
        // The run ended: the same entry is recorded again.
        assert_eq!(l.entry(g, at(3), refusal("x")), [refusal("x")]);
    }
}
