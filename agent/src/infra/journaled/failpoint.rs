//! The crash-test failpoint (see the module docs of [`super`]).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

const FAILPOINT_ENV: &str = "FELHOM_AGENT_FAILPOINT";

/// Whether the failpoint fires after this many journal writes (test hook, see module docs).
fn failpoint_target() -> Option<u64> {
    static TARGET: OnceLock<Option<u64>> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let raw = std::env::var(FAILPOINT_ENV).ok()?;
        let n = raw.strip_prefix("journal:").and_then(|n| n.parse().ok());
        if n.is_none() {
            tracing::warn!(value = %raw, "ignoring malformed {FAILPOINT_ENV}");
        }
        n
    })
}

pub(super) fn journal_written() {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let Some(target) = failpoint_target() else {
        return;
    };
    if WRITES.fetch_add(1, Ordering::SeqCst) + 1 == target {
        tracing::warn!(
            write = target,
            "failpoint: killing the agent after a journal write"
        );
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}
