//! Calendar schedules (`capabilities::backup::Schedule`): text → schedule → slots.
//!
//! Input: line 1 the schedule text, line 2 optionally a Unix time (seconds; clamped to
//! 1970..2100, the bounded input time); without one a time is derived from the text's bytes.
//!
//! Checked beyond "no panic", as the module documents: the schedule displays as its trimmed
//! text; `next_slot(t)` is strictly after `t` and `latest_slot(t)` at or before it; the latest
//! slot at a slot is that slot; every parsed schedule has a next slot within a year (only
//! weekday, time and the keywords' day 1 / 1 January are expressible). And against an
//! independent reading of the documented grammar (`model`): the next slot falls on a listed
//! weekday, hour and minute (checked away from DST changes, where croner may move a slot).
#![no_main]

use chrono::{DateTime, Datelike, Local, TimeZone, Timelike};
use felhom_agent::capabilities::backup::Schedule;
use felhom_fuzz::split_str_line;
use libfuzzer_sys::fuzz_target;

/// 2100-01-01T00:00:00Z.
const MAX_TIME: i64 = 4_102_444_800;
const YEAR: i64 = 366 * 86_400;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (text, time) = split_str_line(input);
    let now = match time.trim().parse::<i64>() {
        Ok(t) => t.clamp(0, MAX_TIME),
        Err(_) => {
            let h = data
                .iter()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
                });
            (h % MAX_TIME as u64) as i64
        }
    };
    let schedule = match text.parse::<Schedule>() {
        Ok(s) => s,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert_eq!(schedule.to_string(), text.trim());

    let next = schedule
        .next_slot(now)
        .unwrap_or_else(|| panic!("{text:?} has no slot after {now}"));
    assert!(next > now, "{text:?}: next {next} <= {now}");
    assert!(next - now <= YEAR, "{text:?}: next {next} a year after {now}");
    if let Some(latest) = schedule.latest_slot(now) {
        assert!(latest <= now, "{text:?}: latest {latest} > {now}");
        assert!(next > latest);
    }
    assert_eq!(schedule.latest_slot(next), Some(next), "{text:?} at {next}");

    if let Some(model) = model(text) {
        let before = local(now);
        let at = local(next);
        if before.offset() == at.offset() && local(next - 3600).offset() == at.offset() {
            let wd = at.weekday().num_days_from_monday() as u8;
            assert!(model.weekdays[usize::from(wd)], "{text:?}: next slot {at} on day {wd}");
            assert!(model.hours[at.hour() as usize], "{text:?}: next slot {at}");
            assert!(model.minutes[at.minute() as usize], "{text:?}: next slot {at}");
            if model.day_one {
                assert_eq!(at.day(), 1, "{text:?}: next slot {at}");
            }
        }
    }
});

fn local(t: i64) -> DateTime<Local> {
    Local.timestamp_opt(t, 0).single().expect("a Unix time is one local time")
}

/// Which weekdays (Monday first), hours and minutes a schedule fires on.
struct Model {
    weekdays: [bool; 7],
    hours: [bool; 24],
    minutes: [bool; 60],
    day_one: bool,
}

/// The documented grammar, read independently of `schedule.rs`:
/// `[keyword | weekdays] [*-*-*] [HH:MM[:00]]`. Ranges run Monday to Sunday (`sun..mon` wraps,
/// as a cron day-of-week range from 0 does). `None` for what this model does not cover.
fn model(text: &str) -> Option<Model> {
    let mut m = Model {
        weekdays: [true; 7],
        hours: [false; 24],
        minutes: [false; 60],
        day_one: false,
    };
    m.hours[0] = true;
    m.minutes[0] = true;
    let mut words: Vec<&str> = text.split_whitespace().collect();
    let first = words.first()?.to_ascii_lowercase();
    match first.as_str() {
        "minutely" => {
            m.hours = [true; 24];
            m.minutes = [true; 60];
            words.remove(0);
        }
        "hourly" => {
            m.hours = [true; 24];
            words.remove(0);
        }
        "daily" => {
            words.remove(0);
        }
        "weekly" => {
            m.weekdays = [false; 7];
            m.weekdays[0] = true;
            words.remove(0);
        }
        "monthly" | "yearly" | "annually" => {
            m.day_one = true;
            words.remove(0);
        }
        w if !w.contains(':') && !w.contains('-') => {
            m.weekdays = weekdays(w)?;
            words.remove(0);
        }
        _ => {}
    }
    if words.first() == Some(&"*-*-*") {
        words.remove(0);
    }
    if let Some(t) = words.first() {
        let parts: Vec<&str> = t.split(':').collect();
        let (h, mi) = match parts.as_slice() {
            [h, mi] | [h, mi, "00" | "0"] => (*h, *mi),
            _ => return None,
        };
        m.hours = [false; 24];
        m.minutes = [false; 60];
        field(h, &mut m.hours)?;
        field(mi, &mut m.minutes)?;
        words.remove(0);
    }
    words.is_empty().then_some(m)
}

fn weekdays(spec: &str) -> Option<[bool; 7]> {
    const NAMES: [(&str, &str); 7] = [
        ("mon", "monday"),
        ("tue", "tuesday"),
        ("wed", "wednesday"),
        ("thu", "thursday"),
        ("fri", "friday"),
        ("sat", "saturday"),
        ("sun", "sunday"),
    ];
    let day = |n: &str| NAMES.iter().position(|(s, l)| n == *s || n == *l);
    let mut out = [false; 7];
    for item in spec.split(',') {
        match item.split_once("..") {
            Some((a, b)) => {
                let (a, b) = (day(a)?, day(b)?);
                let mut d = a;
                loop {
                    out[d] = true;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => out[day(item)?] = true,
        }
    }
    Some(out)
}

/// `*`, `*/n`, or a list of numbers, into the set of values it allows.
fn field(spec: &str, out: &mut [bool]) -> Option<()> {
    if spec == "*" {
        out.fill(true);
    } else if let Some(step) = spec.strip_prefix("*/") {
        let n: usize = step.parse().ok().filter(|n| *n >= 1)?;
        for (i, v) in out.iter_mut().enumerate() {
            *v = i % n == 0;
        }
    } else {
        for n in spec.split(',') {
            *out.get_mut(n.parse::<usize>().ok()?)? = true;
        }
    }
    Some(())
}
