//! Unix seconds from the agent → the RFC 3339 UTC text the local API shows.
//!
//! LocalApi messages carry times as Unix seconds (`int64`, 0 = "not yet"); LOCAL-API.md shows
//! them as RFC 3339 in UTC with whole seconds and a `Z`, e.g. `2026-11-23T04:00:12Z`. The range
//! accepted is 1970-01-01T00:00:01Z ..= 9999-12-31T23:59:59Z: RFC 3339 has four-digit years, and
//! a negative time from the agent is a broken agent, not a test that ran before 1970. The calendar
//! arithmetic is chrono's.

/// The last second RFC 3339 can write: 9999-12-31T23:59:59Z.
pub const MAX_UNIX_SECONDS: i64 = 253_402_300_799;

/// A time the agent sent that the local API cannot show.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error("Unix time {0} is outside 1970-01-01T00:00:01Z..=9999-12-31T23:59:59Z")]
    OutOfRange(i64),
}

/// `secs` as RFC 3339 UTC text, or `None` for 0 ("not yet").
pub fn rfc3339_utc(secs: i64) -> Result<Option<String>, TimestampError> {
    if secs == 0 {
        return Ok(None);
    }
    if !(1..=MAX_UNIX_SECONDS).contains(&secs) {
        return Err(TimestampError::OutOfRange(secs));
    }
    let t = chrono::DateTime::from_timestamp(secs, 0).ok_or(TimestampError::OutOfRange(secs))?;
    Ok(Some(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_not_yet() {
        assert_eq!(rfc3339_utc(0), Ok(None));
    }

    #[test]
    fn known_instants_format_as_utc_with_whole_seconds() {
        // Values cross-checked with `date -u -d @<secs> +%Y-%m-%dT%H:%M:%SZ`.
        for (secs, text) in [
            (1, "1970-01-01T00:00:01Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_795_406_412, "2026-11-23T04:00:12Z"),
            (4_107_542_399, "2100-02-28T23:59:59Z"),
            (4_107_542_400, "2100-03-01T00:00:00Z"),
            (MAX_UNIX_SECONDS, "9999-12-31T23:59:59Z"),
        ] {
            assert_eq!(rfc3339_utc(secs), Ok(Some(text.to_owned())), "{secs}");
        }
    }

    #[test]
    fn negative_and_five_digit_years_are_refused() {
        for secs in [-1, i64::MIN, MAX_UNIX_SECONDS + 1, i64::MAX] {
            assert_eq!(rfc3339_utc(secs), Err(TimestampError::OutOfRange(secs)));
        }
    }
}
