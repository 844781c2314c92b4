//! Timestamps for the state database and the clock seam they come from.
//!
//! Timestamps are whole milliseconds since the Unix epoch (UTC), stored as SQLite integers so
//! they sort and compare in SQL. [`SystemClock`] reads the wall clock; [`FakeClock`] is set and
//! advanced by tests, so expiry can be tested without sleeping.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

/// A point in time: milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The timestamp `millis` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(millis: i64) -> Self {
        Self(millis)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// This timestamp moved `by` into the past, saturating at the start of time.
    pub fn saturating_sub(self, by: Duration) -> Self {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(by))
    }

    /// This timestamp moved `by` into the future, saturating at the end of time.
    pub fn saturating_add(self, by: Duration) -> Self {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(by))
    }
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-23T09:01:52.000Z`.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp_millis(self.0) {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            // Beyond chrono's ±262,000 years: no agent will see one; show the raw value.
            None => write!(f, "@{}ms", self.0),
        }
    }
}

impl ToSql for Timestamp {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0))
    }
}

impl FromSql for Timestamp {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        i64::column_result(value).map(Self)
    }
}

/// Source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        // A clock before 1970 is a broken host; clamp rather than panic in the daemon.
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp(millis)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct FakeClock {
    millis: Arc<AtomicI64>,
}

impl FakeClock {
    /// A clock standing at `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            millis: Arc::new(AtomicI64::new(start.0)),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.millis.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: Timestamp) {
        self.millis.store(to.0, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_rfc3339_utc() {
        assert_eq!(
            Timestamp::from_unix_millis(0).to_string(),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(1_795_424_512_345).to_string(),
            "2026-11-23T09:01:52.345Z"
        );
        // Leap day.
        assert_eq!(
            Timestamp::from_unix_millis(1_709_164_800_000).to_string(),
            "2024-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn fake_clock_moves_only_when_told_and_clones_share_time() {
        let clock = FakeClock::new(Timestamp::from_unix_millis(1_000));
        let other = clock.clone();
        assert_eq!(clock.now().unix_millis(), 1_000);
        other.advance(Duration::from_secs(2));
        assert_eq!(clock.now().unix_millis(), 3_000);
        clock.set(Timestamp::from_unix_millis(5));
        assert_eq!(other.now().unix_millis(), 5);
    }

    #[test]
    fn saturating_add_does_not_overflow() {
        let end = Timestamp::from_unix_millis(i64::MAX - 1).saturating_add(Duration::from_secs(1));
        assert_eq!(end.unix_millis(), i64::MAX);
    }
}
