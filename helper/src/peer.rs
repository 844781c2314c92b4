//! Caller authentication by the kernel's peer credentials (SO_PEERCRED).
//!
//! tonic records each Unix-socket connection's peer credentials at accept time
//! ([`UdsConnectInfo`]); [`PeerCheck`] is a tower layer in front of *every* service on the
//! server (the helper service and reflection alike), so a request from any uid other than
//! the configured agent uid or root is answered PERMISSION_DENIED before any handler runs,
//! and the refusal's audit line names the uid, pid and the gRPC method asked for.
//! The caller is never identified by anything in the message.
//!
//! Refusals are audited with the uid and pid; to keep a local user from flooding the log,
//! at most [`DENIAL_LINES_PER_MINUTE`] refusal lines are written per minute, and the count
//! of suppressed ones is reported with the next line that is written.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::Status;
use tonic::transport::server::UdsConnectInfo;

use crate::audit::{Audit, Outcome};
use crate::caller::Caller;

/// Most refusal audit lines written per minute.
pub const DENIAL_LINES_PER_MINUTE: u64 = 30;

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

#[derive(Debug)]
struct State {
    policy: Policy,
    audit: Arc<Audit>,
    throttle: Mutex<Throttle>,
    suppressed: AtomicU64,
}

/// Tower layer enforcing [`Policy`] on every request of the server (all services); inserts
/// the [`Caller`] into the request extensions for the handlers.
#[derive(Debug, Clone)]
pub struct PeerCheck {
    state: Arc<State>,
}

impl PeerCheck {
    /// A check for `policy`, auditing refusals to `audit`.
    pub fn new(policy: Policy, audit: Arc<Audit>) -> Self {
        Self {
            state: Arc::new(State {
                policy,
                audit,
                throttle: Mutex::new(Throttle {
                    window_start: Instant::now(),
                    written: 0,
                }),
                suppressed: AtomicU64::new(0),
            }),
        }
    }
}

impl State {
    /// Decides for the request's peer; `Err` carries the refusal to send back.
    fn authorize(&self, extensions: &http::Extensions, path: &str) -> Result<Caller, Status> {
        let cred = extensions
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
            Decision::AllowAgent | Decision::AllowRoot => Ok(caller),
            Decision::Deny => {
                self.audit_denial(&caller, path);
                Err(Status::permission_denied(format!(
                    "uid {} may not call felhom-helper",
                    caller.uid
                )))
            }
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
        // The path is chosen by the (refused) caller: cap it before it reaches the log.
        let path: String = path.chars().take(MAX_LOGGED_PATH).collect();
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        let args = if suppressed > 0 {
            format!("method={path} ({suppressed} earlier refusals not logged)")
        } else {
            format!("method={path}")
        };
        self.audit
            .record(caller, "connect", &args, &Outcome::Denied, Duration::ZERO);
    }
}

/// Longest request path written to a refusal audit line.
const MAX_LOGGED_PATH: usize = 100;

impl<S> tower::Layer<S> for PeerCheck {
    type Service = PeerChecked<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PeerChecked {
            inner,
            state: Arc::clone(&self.state),
        }
    }
}

/// The service produced by [`PeerCheck`].
#[derive(Debug, Clone)]
pub struct PeerChecked<S> {
    inner: S,
    state: Arc<State>,
}

impl<S, B> tower::Service<http::Request<B>> for PeerChecked<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        match self
            .state
            .authorize(request.extensions(), request.uri().path())
        {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
                Box::pin(self.inner.call(request))
            }
            Err(status) => {
                let response = status.into_http::<tonic::body::Body>();
                Box::pin(async move { Ok(response) })
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

    #[test]
    fn refusal_lines_are_capped_per_minute() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.log");
        let audit = Arc::new(Audit::open(Some(&path)).expect("open audit file"));
        let check = PeerCheck::new(Policy { agent_uid: 990 }, audit);
        let caller = Caller {
            uid: 1000,
            pid: Some(4321),
        };
        for _ in 0..(DENIAL_LINES_PER_MINUTE + 20) {
            check
                .state
                .audit_denial(&caller, "/felhom.helper.v1.Helper/ListMounts");
        }
        let text = std::fs::read_to_string(&path).expect("audit file");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, DENIAL_LINES_PER_MINUTE);
        assert!(lines.iter().all(|l| l.contains("uid=1000 pid=4321")));
        assert_eq!(check.state.suppressed.load(Ordering::Relaxed), 20);
    }
}
