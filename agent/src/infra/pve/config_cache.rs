//! Guest configs read a moment ago, for the hot read path (`GET /storage` of every controller
//! poll).
//!
//! A cached config is answered for at most `max_age` after it was read. Every mutation made
//! through the client and the end of every task it waited for empty the whole cache (they are
//! rare next to reads, and "everything" cannot miss a guest), so the agent's own changes show
//! at once; changes made elsewhere (the web UI, `pct set`) show within `max_age`. A read that
//! was under way while the cache was emptied is not kept: it may predate the change.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::types::LxcConfig;

/// How long a read config is answered from memory, unless the agent changes something first.
pub const CONFIG_MAX_AGE: Duration = Duration::from_secs(2);

/// The cache, shared by every clone of a client.
#[derive(Debug)]
pub(crate) struct ConfigCache {
    max_age: Duration,
    inner: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    /// Bumped by every [`ConfigCache::clear`].
    generation: u64,
    by_vmid: HashMap<u32, (Instant, LxcConfig)>,
}

impl ConfigCache {
    pub(crate) fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            inner: Mutex::new(Entries::default()),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Entries are replaced whole; a panic elsewhere cannot leave one half-written.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The config of `vmid` if read within `max_age`; else the generation to hand to
    /// [`ConfigCache::put`] with the fresh read.
    pub(crate) fn get(&self, vmid: u32) -> Result<LxcConfig, u64> {
        let e = self.entries();
        match e.by_vmid.get(&vmid) {
            Some((at, config)) if at.elapsed() <= self.max_age => Ok(config.clone()),
            _ => Err(e.generation),
        }
    }

    /// Keeps a config read that began at `generation`, unless the cache was emptied since.
    pub(crate) fn put(&self, vmid: u32, generation: u64, config: &LxcConfig) {
        let mut e = self.entries();
        if e.generation == generation {
            e.by_vmid.insert(vmid, (Instant::now(), config.clone()));
        }
    }

    /// Forgets everything (the agent changed something).
    pub(crate) fn clear(&self) {
        let mut e = self.entries();
        e.generation += 1;
        e.by_vmid.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(hostname: &str) -> LxcConfig {
        serde_json::from_value(serde_json::json!({ "hostname": hostname })).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_config_is_answered_until_it_is_too_old() {
        let cache = ConfigCache::new(Duration::from_secs(2));
        let generation = cache.get(101).unwrap_err();
        cache.put(101, generation, &config("a"));
        assert_eq!(cache.get(101).unwrap(), config("a"));
        tokio::time::advance(Duration::from_millis(2001)).await;
        assert!(cache.get(101).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_empties_the_cache() {
        let cache = ConfigCache::new(Duration::from_secs(2));
        cache.put(101, cache.get(101).unwrap_err(), &config("a"));
        cache.clear();
        assert!(cache.get(101).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_overlapped_a_change_is_not_kept() {
        let cache = ConfigCache::new(Duration::from_secs(2));
        let before = cache.get(101).unwrap_err();
        cache.clear();
        cache.put(101, before, &config("stale"));
        assert!(cache.get(101).is_err());
    }
}
