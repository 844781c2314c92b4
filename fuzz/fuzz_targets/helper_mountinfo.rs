//! `/proc/self/mountinfo` text → mount entries (`felhom_helper::mounts::parse_mountinfo`),
//! and each entry → its protobuf form.
//!
//! Input: any bytes, read lossily as the helper reads the file (`read_to_string` refuses
//! non-UTF-8; the lossy read fuzzes the same parser with more lines). Checked beyond "no
//! panic": at most one entry per line; mount options never contain a comma.
#![no_main]

use felhom_helper::mounts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let entries = mounts::parse_mountinfo(&text);
    assert!(entries.len() <= text.lines().count());
    for e in &entries {
        assert!(e.options.iter().all(|o| !o.contains(',')));
        assert!(!e.fs_type.contains(' '));
        let _ = mounts::to_proto(e);
    }
});
