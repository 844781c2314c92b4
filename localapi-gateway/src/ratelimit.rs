//! Rate limiting by token buckets: one per source address (checked first) and one per bearer
//! token, keyed by the token's SHA-256 (never the token itself), so one guest's burst cannot
//! starve the agent for the others, and made-up tokens cannot each buy a fresh bucket.
//!
//! Limits: the table holds at most [`MAX_TRACKED`] buckets. When it is full, buckets that have
//! refilled completely (equivalent to no bucket at all) are dropped; if it is still full, a
//! token not yet in the table is refused for a second. Someone flooding the table with made-up
//! tokens can thus delay a guest's *first* request after a quiet spell, never an active guest's.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Most buckets kept at once.
pub const MAX_TRACKED: usize = 4096;

/// Token buckets keyed by `K`: a token fingerprint (the default) or a source address.
#[derive(Debug)]
pub struct RateLimiter<K = [u8; 32]> {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// `per_second` sustained, `burst` at once.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `key`'s bucket, or says how long to wait before retrying.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        // The map holds only numbers; a panic elsewhere cannot leave it inconsistent.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(key) {
            buckets.retain(|_, b| self.refilled(b, now) < self.burst);
            if buckets.len() >= MAX_TRACKED {
                return Err(Duration::from_secs(1));
            }
        }
        let bucket = buckets.entry(*key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.per_second).min(self.burst)
    }
}

/// `Retry-After` seconds for a wait: rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_allowed_then_refused() {
        let rl = RateLimiter::new(10, 3);
        let t = Instant::now();
        for _ in 0..3 {
            assert!(rl.check(&[1; 32], t).is_ok());
        }
        let wait = rl.check(&[1; 32], t).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let rl = RateLimiter::new(10, 1);
        let t = Instant::now();
        assert!(rl.check(&[1; 32], t).is_ok());
        assert!(rl.check(&[1; 32], t).is_err());
        assert!(rl.check(&[1; 32], t + Duration::from_millis(100)).is_ok());
    }

    #[test]
    fn tokens_have_separate_buckets() {
        let rl = RateLimiter::new(1, 1);
        let t = Instant::now();
        assert!(rl.check(&[1; 32], t).is_ok());
        assert!(rl.check(&[1; 32], t).is_err());
        assert!(rl.check(&[2; 32], t).is_ok());
    }

    #[test]
    fn source_addresses_have_separate_buckets() {
        let rl = RateLimiter::<std::net::IpAddr>::new(1, 1);
        let t = Instant::now();
        let a = "10.0.0.5".parse().unwrap();
        assert!(rl.check(&a, t).is_ok());
        assert!(rl.check(&a, t).is_err());
        assert!(rl.check(&"10.0.0.6".parse().unwrap(), t).is_ok());
    }

    #[test]
    fn full_table_drops_refilled_buckets() {
        let rl = RateLimiter::new(1, 1);
        let t = Instant::now();
        for i in 0..MAX_TRACKED {
            let mut k = [0u8; 32];
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            assert!(rl.check(&k, t).is_ok());
        }
        // All buckets are empty right now: a new key must wait.
        assert!(rl.check(&[0xff; 32], t).is_err());
        // Two seconds later they have all refilled and are dropped.
        assert!(rl.check(&[0xff; 32], t + Duration::from_secs(2)).is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
    }
}
