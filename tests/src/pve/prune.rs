//! Backup retention (`prune-backups`), shared by vzdump's prune of local and PBS storages.
//!
//! The selection is PBS's and PVE's (proxmox-backup `pbs-datastore/src/prune.rs`
//! `compute_prune_info`/`mark_selections`, mirrored by pve-storage
//! `PVE::Storage::prune_mark_backup_group`): backups sorted newest first; protected ones are
//! kept and never count; then for `keep-last`, `-hourly`, `-daily`, `-weekly`, `-monthly`,
//! `-yearly` in that order, walk the unmarked backups and keep the newest of each not yet
//! covered period (`%Y/%m/%d/%H`, `%Y/%m/%d`, ISO `%G/%V`, `%Y/%m`, `%Y`; `keep-last`: each
//! backup is its own period) until that option's count of periods is reached, marking the
//! other backups of an already kept period for removal; what is left unmarked is removed.
//! `keep-all=1`, or no option above zero, keeps everything.
//!
//! Limits: periods are computed in UTC (PVE and PBS use the host's local time zone).

use chrono::Datelike;

use super::reply::ApiError;
use super::state::civil;

/// Parsed `prune-backups` retention.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keep {
    pub all: bool,
    pub last: u64,
    pub hourly: u64,
    pub daily: u64,
    pub weekly: u64,
    pub monthly: u64,
    pub yearly: u64,
}

impl Keep {
    /// Parses the property string (`keep-last=3,keep-daily=7`), with PVE's error texts.
    pub fn parse(text: &str) -> Result<Keep, ApiError> {
        let mut keep = Keep::default();
        for part in text.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let bad =
                |what: String| ApiError::param("prune-backups", format!("invalid format - {what}"));
            let n = || {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("value '{v}' for {k} is not a valid integer")))
            };
            match k {
                "keep-all" => keep.all = matches!(v, "1" | "true" | "yes" | "on"),
                "keep-last" => keep.last = n()?,
                "keep-hourly" => keep.hourly = n()?,
                "keep-daily" => keep.daily = n()?,
                "keep-weekly" => keep.weekly = n()?,
                "keep-monthly" => keep.monthly = n()?,
                "keep-yearly" => keep.yearly = n()?,
                other => return Err(bad(format!("property '{other}' not allowed"))),
            }
        }
        Ok(keep)
    }

    /// PVE's log form: the set options sorted by name, `k=v` joined by `, `.
    pub fn describe(&self) -> String {
        let mut parts: Vec<(&str, u64)> = vec![
            ("keep-daily", self.daily),
            ("keep-hourly", self.hourly),
            ("keep-last", self.last),
            ("keep-monthly", self.monthly),
            ("keep-weekly", self.weekly),
            ("keep-yearly", self.yearly),
        ];
        parts.retain(|(_, n)| *n > 0);
        let mut out: Vec<String> = parts.iter().map(|(k, n)| format!("{k}={n}")).collect();
        if self.all {
            out.insert(0, "keep-all=1".to_owned());
        }
        out.join(", ")
    }

    fn keeps_everything(&self) -> bool {
        self.all
            || [
                self.last,
                self.hourly,
                self.daily,
                self.weekly,
                self.monthly,
                self.yearly,
            ]
            .iter()
            .all(|n| *n == 0)
    }
}

/// One backup of a group, as the selection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub time: i64,
    pub protected: bool,
}

/// The selection period of a backup time (`%Y/%m/%d`, …).
type PeriodOf = fn(i64) -> String;

/// The ids of `group`'s backups that `keep` removes.
pub fn removals(group: &[Candidate], keep: &Keep) -> Vec<String> {
    if keep.keeps_everything() {
        return Vec::new();
    }
    let mut list: Vec<&Candidate> = group.iter().collect();
    list.sort_by_key(|c| std::cmp::Reverse(c.time));
    // None: unmarked; Some(true): keep (or protected); Some(false): remove.
    let mut marks: Vec<Option<bool>> = list.iter().map(|c| c.protected.then_some(true)).collect();
    let periods: [(u64, PeriodOf); 6] = [
        (keep.last, |_| String::new()),
        (keep.hourly, |t| {
            let (y, m, d, h, _, _) = civil(t);
            format!("{y}/{m}/{d}/{h}")
        }),
        (keep.daily, |t| {
            let (y, m, d, _, _, _) = civil(t);
            format!("{y}/{m}/{d}")
        }),
        (keep.weekly, |t| {
            let (y, w) = iso_week(t);
            format!("{y}/{w}")
        }),
        (keep.monthly, |t| {
            let (y, m, _, _, _, _) = civil(t);
            format!("{y}/{m}")
        }),
        (keep.yearly, |t| civil(t).0.to_string()),
    ];
    for (i, (count, period_of)) in periods.iter().enumerate() {
        if *count == 0 {
            continue;
        }
        // keep-last: every backup is its own period.
        let period = |idx: usize| {
            if i == 0 {
                list[idx].id.clone()
            } else {
                period_of(list[idx].time)
            }
        };
        let already: std::collections::BTreeSet<String> = (0..list.len())
            .filter(|&j| marks[j] == Some(true) && !list[j].protected)
            .map(period)
            .collect();
        let mut included = std::collections::BTreeSet::new();
        for (j, mark) in marks.iter_mut().enumerate() {
            if mark.is_some() {
                continue;
            }
            let p = period(j);
            if already.contains(&p) {
                continue;
            }
            if included.contains(&p) {
                *mark = Some(false);
            } else {
                if included.len() as u64 >= *count {
                    break;
                }
                included.insert(p);
                *mark = Some(true);
            }
        }
    }
    list.iter()
        .zip(marks)
        .filter(|(_, m)| *m != Some(true))
        .map(|(c, _)| c.id.clone())
        .collect()
}

/// ISO 8601 (year, week) of a unix time (UTC): the week's Thursday decides the year.
fn iso_week(t: i64) -> (i64, i64) {
    let week = crate::utc::datetime(t).iso_week();
    (i64::from(week.year()), i64::from(week.week()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32, h: u32) -> i64 {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|date| date.and_hms_opt(h, 0, 0))
            .expect("valid date")
            .and_utc()
            .timestamp()
    }

    fn cands(times: &[i64]) -> Vec<Candidate> {
        times
            .iter()
            .map(|t| Candidate {
                id: t.to_string(),
                time: *t,
                protected: false,
            })
            .collect()
    }

    #[test]
    fn iso_weeks_follow_the_thursday_rule() {
        assert_eq!(iso_week(day(2021, 1, 3, 12)), (2020, 53));
        assert_eq!(iso_week(day(2021, 1, 4, 0)), (2021, 1));
        assert_eq!(iso_week(day(2026, 11, 23, 0)), (2026, 48));
    }

    #[test]
    fn keep_last_removes_the_oldest() {
        let c = cands(&[day(2026, 1, 1, 1), day(2026, 1, 2, 1), day(2026, 1, 3, 1)]);
        let keep = Keep::parse("keep-last=2").unwrap();
        assert_eq!(removals(&c, &keep), vec![day(2026, 1, 1, 1).to_string()]);
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_day_beyond_keep_last() {
        // Three backups on day 1, two on day 2; keep-last=1 keeps the newest (day 2, 22h),
        // keep-daily=2 then covers day 1 with its newest (20h): day 2's other one goes.
        let c = cands(&[
            day(2026, 1, 1, 2),
            day(2026, 1, 1, 10),
            day(2026, 1, 1, 20),
            day(2026, 1, 2, 3),
            day(2026, 1, 2, 22),
        ]);
        let keep = Keep::parse("keep-last=1,keep-daily=2").unwrap();
        let mut gone = removals(&c, &keep);
        gone.sort();
        let mut want = vec![
            day(2026, 1, 1, 2).to_string(),
            day(2026, 1, 1, 10).to_string(),
            day(2026, 1, 2, 3).to_string(),
        ];
        want.sort();
        assert_eq!(gone, want);
    }

    #[test]
    fn protected_backups_stay_and_do_not_count() {
        let mut c = cands(&[day(2026, 1, 1, 1), day(2026, 1, 2, 1), day(2026, 1, 3, 1)]);
        c[2].protected = true;
        let keep = Keep::parse("keep-last=1").unwrap();
        assert_eq!(removals(&c, &keep), vec![day(2026, 1, 1, 1).to_string()]);
    }

    #[test]
    fn no_options_keep_everything() {
        let c = cands(&[1, 2, 3]);
        assert!(removals(&c, &Keep::parse("").unwrap()).is_empty());
        assert!(removals(&c, &Keep::parse("keep-all=1").unwrap()).is_empty());
    }

    #[test]
    fn unknown_option_is_named() {
        let e = Keep::parse("keep-forever=1").unwrap_err();
        assert_eq!(
            e.errors.unwrap()["prune-backups"],
            "invalid format - property 'keep-forever' not allowed"
        );
    }
}
