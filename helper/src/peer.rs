//! Caller authentication by the kernel's peer credentials (SO_PEERCRED).
//!
//! tonic records each Unix-socket connection's peer credentials at accept time
//! ([`UdsConnectInfo`]); [`PeerCheck`] is an interceptor in front of *every* service on the
//! server (the helper service and reflection alike), so a request from any uid other than
//! the configured agent uid or root is answered PERMISSION_DENIED before any handler runs.
//! The caller is never identified by anything in the message.
//!
//! Refusals are audited with the uid and pid; to keep a local user from flooding the log,
//! at most [`DENIAL_LINES_PER_MINUTE`] refusal lines are written per minute, and the count
//! of suppressed ones is reported with the next line that is written.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

use crate::audit::{Audit, Outcome};

/// Most refusal audit lines written per minute.
pub const DENIAL_LINES_PER_MINUTE: u64 = 30;

/// Who is calling, per the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Peer uid.
    pub uid: u32,
    /// Peer pid (absent if the kernel did not report one).
    pub pid: Option<i32>,
}

/// Which uids may call.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// The agent's uid.
    pub agent_uid: u32,
}

/// The decision for one uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The agent.
    AllowAgent,
    /// Root (diagnostics).
    AllowRoot,
    /// Anyone else.
    Deny,
}

impl Policy {
    /// Decides for `uid`.
    pub fn decide(&self, uid: u32) -> Decision {
        if uid == 0 {
            Decision::AllowRoot
        } else if uid == self.agent_uid {
            Decision::AllowAgent
        } else {
            Decision::Deny
        }
    }
}

#[derive(Debug)]
struct Throttle {
    window_start: Instant,
    written: u64,
}

/// Interceptor enforcing [`Policy`] on every request; inserts the [`Caller`] into the
/// request extensions for the handlers.
#[derive(Clone)]
pub struct PeerCheck {
    policy: Policy,
    audit: Arc<Audit>,
    throttle: Arc<Mutex<Throttle>>,
    suppressed: Arc<AtomicU64>,
}

impl PeerCheck {
    /// A check for `policy`, auditing refusals to `audit`.
    pub fn new(policy: Policy, audit: Arc<Audit>) -> Self {
        Self {
            policy,
            audit,
            throttle: Arc::new(Mutex::new(Throttle {
                window_start: Instant::now(),
                written: 0,
            })),
            suppressed: Arc::new(AtomicU64::new(0)),
        }
    }

    fn audit_denial(&self, caller: &Caller, path: &str) {
        let mut t = self
            .throttle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if t.window_start.elapsed() >= Duration::from_secs(60) {
            t.window_start = Instant::now();
            t.written = 0;
        }
        if t.written >= DENIAL_LINES_PER_MINUTE {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        t.written += 1;
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        let args = if suppressed > 0 {
            format!("{path} ({suppressed} earlier refusals not logged)")
        } else {
            path.to_owned()
        };
        self.audit
            .record(caller, "connect", &args, &Outcome::Denied, Duration::ZERO);
    }
}

impl tonic::service::Interceptor for PeerCheck {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let cred = request
            .extensions()
            .get::<UdsConnectInfo>()
            .and_then(|info| info.peer_cred);
        let Some(cred) = cred else {
            // Not a Unix socket or no credentials: nobody to authorize.
            return Err(Status::permission_denied("caller has no peer credentials"));
        };
        let caller = Caller {
            uid: cred.uid(),
            pid: cred.pid(),
        };
        match self.policy.decide(caller.uid) {
            Decision::AllowAgent | Decision::AllowRoot => {
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            Decision::Deny => {
                // The gRPC method path is not in the tonic Request; the denial names the caller.
                self.audit_denial(&caller, "rpc");
                Err(Status::permission_denied(format!(
                    "uid {} may not call felhom-helper",
                    caller.uid
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_agent_and_root_are_allowed() {
        let p = Policy { agent_uid: 990 };
        assert_eq!(p.decide(0), Decision::AllowRoot);
        assert_eq!(p.decide(990), Decision::AllowAgent);
        assert_eq!(p.decide(65534), Decision::Deny);
        assert_eq!(p.decide(1000), Decision::Deny);
    }
}
