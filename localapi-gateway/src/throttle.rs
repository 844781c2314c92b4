//! Log throttling for warnings a caller can provoke (connection floods, requests while the
//! agent is down): at most one line per interval, however many events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Allows one event per `every`.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    origin: Instant,
    every: Duration,
    /// Milliseconds since `origin` of the last allowed event, plus one (0: never).
    last: AtomicU64,
}

impl LogThrottle {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            origin: Instant::now(),
            every,
            last: AtomicU64::new(0),
        }
    }

    /// Whether this event may be logged.
    pub(crate) fn allow(&self) -> bool {
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= self.every.as_millis() as u64)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_event_in_an_interval_is_allowed() {
        let t = LogThrottle::new(Duration::from_secs(3600));
        assert!(t.allow());
        assert!(!t.allow());
        assert!(!t.allow());
    }

    #[test]
    fn zero_interval_allows_everything() {
        let t = LogThrottle::new(Duration::ZERO);
        assert!(t.allow());
        assert!(t.allow());
    }
}
