//! Proxmox error texts: a failed PVE or PBS answer → the client's typed error (`From<HttpError>`
//! for `PveError` and `PbsError`: reason phrase or body, `Permission check failed (…)`,
//! `permission check failed - missing … on …`, the missing-guest 500, the PBS message cap), and
//! task exit statuses (`classify_exitstatus`).
//!
//! Input: line 1 the HTTP status code, line 2 the reason phrase, the rest the body. The whole
//! input, read lossily, is also given to both permission parsers and to `classify_exitstatus`.
//!
//! Checked beyond "no panic": a parsed permission denial displays as a text that parses back to
//! the same value (PVE: unless its privilege list is empty, see `pve_round_trip`); the PBS
//! message keeps its 1024-character cap; a 401 is `Unauthorized`; `OK` and `WARNINGS: n` are
//! the only successes.
#![no_main]

use felhom_agent::infra::pbs::{PbsError, PbsPermissionDenied};
use felhom_agent::infra::proxmox::http::{ErrorAnswer, HttpError};
use felhom_agent::infra::pve::{PermissionDenied, PveError, TaskOutcome, classify_exitstatus};
use felhom_fuzz::split_line;
use http::StatusCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    pve_round_trip(&text);
    pbs_round_trip(&text);
    exitstatus(&text);

    let (status, rest) = split_line(data);
    let (reason, body) = split_line(rest);
    let Some(status) = std::str::from_utf8(status)
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
    else {
        return;
    };
    let reason = String::from_utf8_lossy(reason).into_owned();
    let answer = || HttpError::Status {
        method: "POST",
        path: "/nodes/pve1/lxc/101/snapshot".to_owned(),
        answer: ErrorAnswer {
            status,
            reason: reason.clone(),
            body: body.to_vec(),
        },
    };

    let pve = PveError::from(answer());
    let _ = (pve.to_string(), format!("{pve:?}"), pve.is_transient());
    match &pve {
        PveError::Unauthorized { .. } => assert_eq!(status.as_u16(), 401),
        PveError::Permission { denied, .. } => {
            assert_eq!(status.as_u16(), 403);
            assert!(denied.path.starts_with('/'));
        }
        PveError::GuestNotFound { .. } => assert!(status.is_server_error()),
        _ => assert_ne!(status.as_u16(), 401),
    }

    let pbs = PbsError::from(answer());
    let _ = (pbs.to_string(), format!("{pbs:?}"), pbs.is_transient());
    match &pbs {
        PbsError::Unauthorized { reason } => {
            assert_eq!(status.as_u16(), 401);
            assert!(reason.chars().count() <= 1025, "message cap");
        }
        PbsError::Permission {
            reason, denied, ..
        } => {
            assert_eq!(status.as_u16(), 403);
            assert!(reason.chars().count() <= 1025, "message cap");
            if let Some(d) = denied {
                assert!(d.path.starts_with('/'));
            }
        }
        PbsError::Server { reason, .. } | PbsError::Rejected { reason, .. } => {
            assert!(reason.chars().count() <= 1025, "message cap");
        }
        _ => {}
    }
});

/// `Permission check failed (<path>, <privs>)` → value → text → the same value. The one
/// exception: privileges that trim to a single empty string (`(/p,  )`) print as `(/p, )`,
/// which is (rightly) not a permission text.
fn pve_round_trip(text: &str) {
    let Some(p) = PermissionDenied::parse(text) else {
        return;
    };
    assert!(p.path.starts_with('/'));
    assert!(!p.path.contains(')'));
    assert!(!p.privileges.is_empty());
    let shown = p.to_string();
    if p.privileges.join("|").is_empty() {
        return;
    }
    assert_eq!(PermissionDenied::parse(&shown), Some(p), "{shown:?}");
}

/// `permission check failed - missing <privs> on <path>` → value → text → the same value.
fn pbs_round_trip(text: &str) {
    let Some(p) = PbsPermissionDenied::parse(text) else {
        return;
    };
    assert!(p.path.starts_with('/'));
    assert!(!p.path.chars().any(char::is_whitespace));
    let shown = p.to_string();
    assert_eq!(PbsPermissionDenied::parse(&shown), Some(p), "{shown:?}");
}

fn exitstatus(text: &str) {
    for candidate in [text, text.lines().next().unwrap_or("")] {
        match classify_exitstatus(candidate) {
            Some(TaskOutcome::Ok) => assert_eq!(candidate, "OK"),
            Some(TaskOutcome::Warnings(n)) => {
                let count = candidate.strip_prefix("WARNINGS: ").expect("WARNINGS: n");
                assert_eq!(count.trim().parse::<u32>().ok(), Some(n));
            }
            None => assert_ne!(candidate, "OK"),
        }
    }
}
