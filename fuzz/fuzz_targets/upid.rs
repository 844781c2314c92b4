//! UPID parsing, PVE (`infra::pve::Upid`) and PBS (`infra::pbs::PbsUpid`), and PBS's
//! worker-id escaping.
//!
//! Input: the UPID text (any bytes; non-UTF-8 cannot arrive in a JSON answer and ends early).
//!
//! Checked beyond "no panic", as the code promises: a parsed UPID displays (and serializes)
//! back to the same text byte for byte and deserializes to an equal value; its fields are
//! the text's fields (hex numbers read back, text fields are the colon-separated parts); no
//! text is both a PVE and a PBS UPID (8 vs 9 fields); `unescape_worker_id(escape_worker_id(s))`
//! gives `s` back for every string.
#![no_main]

use felhom_agent::infra::pbs::{PbsUpid, escape_worker_id, unescape_worker_id};
use felhom_agent::infra::pve::Upid;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pve = text.parse::<Upid>();
    let pbs = text.parse::<PbsUpid>();
    assert!(!(pve.is_ok() && pbs.is_ok()), "both PVE and PBS: {text:?}");

    match pve {
        Ok(upid) => {
            assert_eq!(upid.to_string(), text);
            assert_eq!(upid.as_str(), text);
            let fields: Vec<&str> = text["UPID:".len()..].split(':').collect();
            assert_eq!(fields.len(), 8);
            assert_eq!(upid.node(), fields[0]);
            assert_eq!(u64::from(upid.pid()), hex(fields[1]));
            assert_eq!(upid.pstart(), hex(fields[2]));
            assert_eq!(upid.starttime(), hex(fields[3]));
            assert_eq!(upid.task_type(), fields[4]);
            assert_eq!(upid.id(), fields[5]);
            assert_eq!(upid.authid(), fields[6]);
            assert!(!upid.node().is_empty() && !upid.authid().is_empty());
            let json = serde_json::to_string(&upid).expect("serializes");
            let back: Upid = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, upid);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    match pbs {
        Ok(upid) => {
            assert_eq!(upid.to_string(), text);
            assert_eq!(upid.as_str(), text);
            let fields: Vec<&str> = text["UPID:".len()..].split(':').collect();
            assert_eq!(fields.len(), 9);
            assert_eq!(upid.node(), fields[0]);
            assert_eq!(u64::from(upid.pid()), hex(fields[1]));
            assert_eq!(upid.pstart(), hex(fields[2]));
            assert_eq!(upid.task_id(), hex(fields[3]));
            assert_eq!(upid.starttime(), hex(fields[4]));
            assert_eq!(upid.worker_type(), fields[5]);
            assert_eq!(upid.authid(), fields[7]);
            match upid.worker_id() {
                None => assert_eq!(fields[6], ""),
                Some(id) => {
                    assert_eq!(unescape_worker_id(fields[6]).as_deref(), Some(id));
                    assert_eq!(unescape_worker_id(&escape_worker_id(id)).as_deref(), Some(id));
                }
            }
            assert!(!text.chars().any(char::is_whitespace));
            let json = serde_json::to_string(&upid).expect("serializes");
            let back: PbsUpid = serde_json::from_str(&json).expect("deserializes");
            assert_eq!(back, upid);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }

    // Escaping round-trips for any worker id, not only those in UPIDs.
    let escaped = escape_worker_id(text);
    assert!(
        escaped
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.\\-".contains(&b)),
        "{escaped:?}"
    );
    assert_eq!(unescape_worker_id(&escaped).as_deref(), Some(text));
    let _ = unescape_worker_id(text);
});

fn hex(field: &str) -> u64 {
    u64::from_str_radix(field, 16).expect("a parsed hex field reads back")
}
