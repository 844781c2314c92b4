//! Calendar schedules for backups and restore-tests, in the Proxmox / systemd calendar-event
//! style an operator already writes in `vzdump` jobs: `daily 02:30`, `sun 04:00`,
//! `mon..fri 22:00`, `sat,sun 03:00`, `*-*-* 02:30`, `02:30`, `hourly`, `weekly`, `monthly`.
//!
//! The text is translated into a five-field cron pattern and evaluated by `croner` (ranges,
//! lists, steps, time zones and DST gaps are its business). Times are the host's local time
//! (like Proxmox's own job scheduler), taken from `TZ` / `/etc/localtime` through chrono.
//!
//! Supported subset (anything else is refused with the part that was not understood):
//! `[keyword | weekdays] [*-*-*] [HH:MM[:00]]` where keyword is `minutely`, `hourly`, `daily`,
//! `weekly` (Monday), `monthly` (day 1), `yearly`/`annually` (1 January); weekdays are names
//! (`mon`, `monday`, …) joined by `,` and `..` ranges; `HH` and `MM` are `*`, a number, a list
//! `2,14` or a step `*/4`. A keyword or weekday without a time means 00:00. Seconds other than
//! `00` and explicit dates (`2026-*-01`) are not supported: backups run at minute granularity.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Local, TimeZone as _};
use croner::Cron;

/// A schedule text that is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("schedule '{text}': {reason}")]
pub struct ScheduleError {
    pub text: String,
    pub reason: String,
}

/// A validated calendar schedule.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    cron: Cron,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.text).finish()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ScheduleError {
            text: text.to_owned(),
            reason,
        };
        let pattern = to_cron(text).map_err(err)?;
        let cron = Cron::from_str(&pattern)
            .map_err(|e| err(format!("not a valid calendar event ({e})")))?;
        Ok(Self {
            text: text.trim().to_owned(),
            cron,
        })
    }
}

impl Schedule {
    /// The newest slot at or before `now` (unix seconds), if any.
    pub fn latest_slot(&self, now: i64) -> Option<i64> {
        let t = local(now)?;
        self.cron
            .find_previous_occurrence(&t, true)
            .ok()
            .map(|d| d.timestamp())
    }

    /// The first slot strictly after `after` (unix seconds), if any.
    pub fn next_slot(&self, after: i64) -> Option<i64> {
        let t = local(after)?;
        self.cron
            .find_next_occurrence(&t, false)
            .ok()
            .map(|d| d.timestamp())
    }
}

fn local(unix: i64) -> Option<DateTime<Local>> {
    Local.timestamp_opt(unix, 0).single()
}

/// `2026-11-23 02:30 UTC` (or `… +01:00`) in the host's local time, for human reasons.
pub fn format_local(unix: i64) -> String {
    match local(unix) {
        Some(t) if t.offset().local_minus_utc() == 0 => t.format("%Y-%m-%d %H:%M UTC").to_string(),
        Some(t) => t.format("%Y-%m-%d %H:%M %:z").to_string(),
        None => format!("@{unix}"),
    }
}

const WEEKDAYS: [(&str, &str, u8); 7] = [
    ("mon", "monday", 1),
    ("tue", "tuesday", 2),
    ("wed", "wednesday", 3),
    ("thu", "thursday", 4),
    ("fri", "friday", 5),
    ("sat", "saturday", 6),
    ("sun", "sunday", 0),
];

fn weekday(name: &str) -> Option<u8> {
    let n = name.to_ascii_lowercase();
    WEEKDAYS
        .iter()
        .find(|(short, long, _)| n == *short || n == *long)
        .map(|(_, _, d)| *d)
}

/// `mon..fri,sun` → cron day-of-week list `1,2,3,4,5,0`. A range runs Monday-first as in
/// Proxmox: `sun..sun` is Sunday alone, `fri..mon` wraps over the weekend (Fri, Sat, Sun,
/// Mon). Written out day by day, so croner's own range rules (Sunday is 0) never apply.
fn weekdays(spec: &str) -> Option<String> {
    // Position in the Monday-first week of a cron day number (Sunday is 0 in cron).
    let position = |d: u8| (usize::from(d) + 6) % 7;
    let mut days = Vec::new();
    for item in spec.split(',') {
        let (a, b) = match item.split_once("..") {
            Some((a, b)) => (weekday(a)?, weekday(b)?),
            None => (weekday(item)?, weekday(item)?),
        };
        let (start, end) = (position(a), position(b));
        let span = (end + 7 - start) % 7;
        days.extend((0..=span).map(|k| WEEKDAYS[(start + k) % 7].2.to_string()));
    }
    Some(days.join(","))
}

/// One `HH` or `MM` component → cron field.
fn time_field(v: &str, max: u32, what: &str) -> Result<String, String> {
    if v == "*" {
        return Ok("*".into());
    }
    if let Some(step) = v.strip_prefix("*/") {
        return match step.parse::<u32>() {
            Ok(n) if n >= 1 && n <= max => Ok(format!("*/{n}")),
            _ => Err(format!("{what} step '{v}' is not */1..*/{max}")),
        };
    }
    let mut out = Vec::new();
    for n in v.split(',') {
        match n.parse::<u32>() {
            Ok(x) if x <= max && !n.is_empty() && n.len() <= 2 => out.push(x.to_string()),
            _ => return Err(format!("{what} '{n}' is not 0..{max}")),
        }
    }
    Ok(out.join(","))
}

/// `HH:MM[:SS]` → (minute field, hour field).
fn time(spec: &str) -> Result<(String, String), String> {
    let parts: Vec<&str> = spec.split(':').collect();
    let (h, m) = match parts.as_slice() {
        [h, m] => (*h, *m),
        [h, m, s] if *s == "00" || *s == "0" => (*h, *m),
        [_, _, s] => return Err(format!("seconds '{s}' are not supported (use 00)")),
        _ => return Err(format!("'{spec}' is not a time (HH:MM)")),
    };
    Ok((time_field(m, 59, "minute")?, time_field(h, 23, "hour")?))
}

/// Translates the supported calendar-event subset into `minute hour dom month dow`.
fn to_cron(text: &str) -> Result<String, String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.is_empty() {
        return Err("is empty".into());
    }
    let (mut dom, mut month, mut dow) = ("*".to_owned(), "*".to_owned(), "*".to_owned());
    let (mut minute, mut hour) = ("0".to_owned(), "0".to_owned());
    let mut rest = words.as_slice();
    // Leading keyword or weekday list.
    if let Some(first) = rest.first() {
        let lower = first.to_ascii_lowercase();
        let keyword = match lower.as_str() {
            "minutely" => Some(("*", "*", "*", "*", "*")),
            "hourly" => Some(("0", "*", "*", "*", "*")),
            "daily" => Some(("0", "0", "*", "*", "*")),
            "weekly" => Some(("0", "0", "*", "*", "1")),
            "monthly" => Some(("0", "0", "1", "*", "*")),
            "yearly" | "annually" => Some(("0", "0", "1", "1", "*")),
            _ => None,
        };
        if let Some((mi, h, d, mo, w)) = keyword {
            (minute, hour) = (mi.into(), h.into());
            (dom, month, dow) = (d.into(), mo.into(), w.into());
            rest = &rest[1..];
            if matches!(lower.as_str(), "minutely" | "hourly") && !rest.is_empty() {
                return Err(format!("'{first}' takes no time"));
            }
        } else if !first.contains(':') && !first.contains('-') {
            dow = weekdays(first).ok_or_else(|| format!("'{first}' is not a weekday list"))?;
            rest = &rest[1..];
        }
    }
    if let Some(date) = rest.first().filter(|w| w.contains('-')) {
        if *date != "*-*-*" {
            return Err(format!("date '{date}' is not supported (only *-*-*)"));
        }
        rest = &rest[1..];
    }
    if let Some(t) = rest.first() {
        (minute, hour) = time(t)?;
        rest = &rest[1..];
    }
    if let Some(extra) = rest.first() {
        return Err(format!("'{extra}' is not understood"));
    }
    Ok(format!("{minute} {hour} {dom} {month} {dow}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(text: &str) -> String {
        to_cron(text).unwrap()
    }

    #[test]
    fn proxmox_style_events_translate_to_cron() {
        assert_eq!(cron("daily 02:30"), "30 2 * * *");
        assert_eq!(cron("02:30"), "30 2 * * *");
        assert_eq!(cron("*-*-* 02:30"), "30 2 * * *");
        assert_eq!(cron("sun 04:00"), "0 4 * * 0");
        assert_eq!(cron("mon..fri 22:00"), "0 22 * * 1,2,3,4,5");
        assert_eq!(cron("sat,sun 03:15"), "15 3 * * 6,0");
        assert_eq!(cron("sat..sun 03:15"), "15 3 * * 6,0");
        assert_eq!(cron("fri..mon 05:00"), "0 5 * * 5,6,0,1");
        assert_eq!(cron("Monday"), "0 0 * * 1");
        assert_eq!(cron("hourly"), "0 * * * *");
        assert_eq!(cron("weekly"), "0 0 * * 1");
        assert_eq!(cron("monthly 01:00"), "0 1 1 * *");
        assert_eq!(cron("*/4:00"), "0 */4 * * *");
        assert_eq!(cron("2,14:30:00"), "30 2,14 * * *");
    }

    /// Found by the schedule fuzz target: a one-day range meant every day.
    #[test]
    fn a_range_from_a_day_to_itself_is_that_day_alone() {
        assert_eq!(cron("sun..sun 04:00"), "0 4 * * 0");
        assert_eq!(cron("wed..wed 04:00"), "0 4 * * 3");
    }

    #[test]
    fn unsupported_parts_are_named() {
        let e = |t: &str| t.parse::<Schedule>().unwrap_err().to_string();
        assert_eq!(e(""), "schedule '': is empty");
        assert_eq!(
            e("dialy 02:30"),
            "schedule 'dialy 02:30': 'dialy' is not a weekday list"
        );
        assert_eq!(
            e("daily 25:00"),
            "schedule 'daily 25:00': hour '25' is not 0..23"
        );
        assert_eq!(
            e("daily 02:30:15"),
            "schedule 'daily 02:30:15': seconds '15' are not supported (use 00)"
        );
        assert_eq!(
            e("2026-*-01 02:00"),
            "schedule '2026-*-01 02:00': date '2026-*-01' is not supported (only *-*-*)"
        );
        assert_eq!(
            e("daily 02:30 now"),
            "schedule 'daily 02:30 now': 'now' is not understood"
        );
        assert_eq!(
            e("hourly 02:30"),
            "schedule 'hourly 02:30': 'hourly' takes no time"
        );
    }

    #[test]
    fn slots_are_found_around_a_time() {
        // Tests run with TZ unset or UTC in CI; compute expectations in local time anyway.
        let s: Schedule = "daily 02:30".parse().unwrap();
        let base = Local
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .unwrap()
            .timestamp();
        let today = Local
            .with_ymd_and_hms(2026, 11, 23, 2, 30, 0)
            .unwrap()
            .timestamp();
        let tomorrow = Local
            .with_ymd_and_hms(2026, 11, 24, 2, 30, 0)
            .unwrap()
            .timestamp();
        assert_eq!(s.latest_slot(base), Some(today));
        assert_eq!(s.latest_slot(today), Some(today));
        assert_eq!(s.next_slot(base), Some(tomorrow));
        assert_eq!(s.next_slot(today), Some(tomorrow));
    }

    #[test]
    fn weekday_schedules_skip_other_days() {
        let s: Schedule = "sun 04:00".parse().unwrap();
        // 2026-11-23 is a Monday; the latest Sunday 04:00 is the day before.
        let base = Local
            .with_ymd_and_hms(2026, 11, 23, 12, 0, 0)
            .unwrap()
            .timestamp();
        let sunday = Local
            .with_ymd_and_hms(2026, 11, 22, 4, 0, 0)
            .unwrap()
            .timestamp();
        assert_eq!(s.latest_slot(base), Some(sunday));
        assert_eq!(s.next_slot(base), Some(sunday + 7 * 86_400));
    }
}
