//! Whether a guest's backup is due, and why, in words a person reads in a controller's UI.
//!
//! Per policy (guest × tier): the schedule's newest slot at or before now is the moment a
//! backup was due; the policy is due when the newest backup on its tier is older than that
//! slot, or when the tier has none at all. A guest is due when any policy is. The newest backup
//! is read from the tier's storage (what exists), not from the agent's history, so archives
//! made by other means count and pruned ones don't.
//!
//! Pure logic: callers pass the newest backup time per policy and `now`.

use super::schedule::{Schedule, format_local};

/// One policy's input: its schedule, tier name and newest backup (unix seconds).
#[derive(Debug, Clone)]
pub struct PolicyState<'a> {
    pub tier: &'a str,
    pub schedule: &'a Schedule,
    pub newest_backup: Option<i64>,
}

/// The verdict for one guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub due: bool,
    pub reason: String,
    /// Indexes (into the input) of the policies that are due.
    pub due_policies: Vec<usize>,
    /// The earliest moment any due policy became due; `None` when never backed up.
    pub since: Option<i64>,
    /// Whether some due tier has never been backed up.
    pub never: bool,
}

/// Evaluates a guest's policies at `now` (unix seconds). `running_job`: a backup job of the
/// guest queued or running, which makes it not due (the backup is under way).
pub fn evaluate(policies: &[PolicyState<'_>], now: i64, running_job: Option<&str>) -> Due {
    if policies.is_empty() {
        return Due {
            due: false,
            reason: "no backup policy for this guest".into(),
            due_policies: Vec::new(),
            since: None,
            never: false,
        };
    }
    if let Some(job) = running_job {
        return Due {
            due: false,
            reason: format!("backup job {job} is under way"),
            due_policies: Vec::new(),
            since: None,
            never: false,
        };
    }
    let mut due_policies = Vec::new();
    let mut never_tiers = Vec::new();
    let mut since: Option<(i64, usize)> = None;
    let mut next: Option<(i64, usize)> = None;
    for (i, p) in policies.iter().enumerate() {
        let slot = p.schedule.latest_slot(now);
        match (p.newest_backup, slot) {
            (None, _) => {
                due_policies.push(i);
                never_tiers.push(p.tier);
            }
            (Some(newest), Some(slot)) if newest < slot => {
                due_policies.push(i);
                if since.is_none_or(|(s, _)| slot < s) {
                    since = Some((slot, i));
                }
            }
            (Some(newest), _) => {
                if let Some(n) = p.schedule.next_slot(now.max(newest))
                    && next.is_none_or(|(t, _)| n < t)
                {
                    next = Some((n, i));
                }
            }
        }
    }
    let never = !never_tiers.is_empty();
    let reason = if never && never_tiers.len() == policies.len() {
        "never backed up".to_owned()
    } else if never {
        format!("never backed up to tier '{}'", never_tiers.join("', '"))
    } else if let Some((slot, i)) = since {
        let p = &policies[i];
        format!(
            "'{}' backup to tier '{}' due since {}",
            p.schedule,
            p.tier,
            format_local(slot)
        )
    } else if let Some((n, i)) = next {
        let p = &policies[i];
        format!(
            "next due {} ('{}' to tier '{}')",
            format_local(n),
            p.schedule,
            p.tier
        )
    } else {
        "no upcoming slot in the schedules".to_owned()
    };
    Due {
        due: !due_policies.is_empty(),
        reason,
        due_policies,
        since: since.map(|(s, _)| s),
        never,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Local, TimeZone as _};

    fn at(d: u32, h: u32, m: u32) -> i64 {
        Local
            .with_ymd_and_hms(2026, 11, d, h, m, 0)
            .unwrap()
            .timestamp()
    }

    fn daily() -> Schedule {
        "daily 02:30".parse().unwrap()
    }

    #[test]
    fn a_guest_never_backed_up_is_due() {
        let s = daily();
        let d = evaluate(
            &[PolicyState {
                tier: "local",
                schedule: &s,
                newest_backup: None,
            }],
            at(23, 12, 0),
            None,
        );
        assert!(d.due);
        assert_eq!(d.reason, "never backed up");
        assert!(d.never);
    }

    #[test]
    fn a_backup_older_than_the_latest_slot_is_due_since_that_slot() {
        let s = daily();
        let d = evaluate(
            &[PolicyState {
                tier: "local",
                schedule: &s,
                newest_backup: Some(at(22, 2, 31)),
            }],
            at(23, 12, 0),
            None,
        );
        assert!(d.due);
        assert_eq!(d.since, Some(at(23, 2, 30)));
        assert!(
            d.reason
                .starts_with("'daily 02:30' backup to tier 'local' due since 2026-11-23 02:30"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn a_fresh_backup_is_not_due_and_names_the_next_slot() {
        let s = daily();
        let d = evaluate(
            &[PolicyState {
                tier: "local",
                schedule: &s,
                newest_backup: Some(at(23, 2, 31)),
            }],
            at(23, 12, 0),
            None,
        );
        assert!(!d.due);
        assert!(
            d.reason.starts_with("next due 2026-11-24 02:30"),
            "{}",
            d.reason
        );
        assert!(
            d.reason.ends_with("('daily 02:30' to tier 'local')"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn one_tier_never_backed_up_is_named() {
        let s = daily();
        let w: Schedule = "sun 03:00".parse().unwrap();
        let d = evaluate(
            &[
                PolicyState {
                    tier: "local",
                    schedule: &s,
                    newest_backup: Some(at(23, 2, 31)),
                },
                PolicyState {
                    tier: "offsite",
                    schedule: &w,
                    newest_backup: None,
                },
            ],
            at(23, 12, 0),
            None,
        );
        assert!(d.due);
        assert_eq!(d.due_policies, vec![1]);
        assert_eq!(d.reason, "never backed up to tier 'offsite'");
    }

    #[test]
    fn a_running_backup_makes_the_guest_not_due() {
        let s = daily();
        let d = evaluate(
            &[PolicyState {
                tier: "local",
                schedule: &s,
                newest_backup: None,
            }],
            at(23, 12, 0),
            Some("j-1"),
        );
        assert!(!d.due);
        assert_eq!(d.reason, "backup job j-1 is under way");
    }

    #[test]
    fn a_guest_without_policy_is_never_due() {
        let d = evaluate(&[], at(23, 12, 0), None);
        assert!(!d.due);
        assert_eq!(d.reason, "no backup policy for this guest");
    }
}
