//! Unix seconds as UTC calendar times for the simulators (chrono's calendar arithmetic).

use chrono::{DateTime, Utc};

/// `t` (Unix seconds) as a UTC date and time; saturates at chrono's range (about ±262,000
/// years), far beyond any time a simulator sees.
pub fn datetime(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or(if t < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}
