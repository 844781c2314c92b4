//! `smartctl --json=c --all` output → `SmartReport` (`felhom_helper::smart::parse`).
//!
//! Input: the JSON as smartctl prints it. The exit status is derived from the input length
//! with bits 0 and 1 cleared (those never reach `parse`: `smart::read` answers them first).
//!
//! Checked beyond "no panic": the device and exit status pass through unchanged; a drive
//! reported as passed has no attribute failing now; wear read from ATA attributes is a
//! percentage (NVMe's own `percentage_used` may legitimately pass 100).
#![no_main]

use felhom_helper::smart;
use felhom_proto::helper::v1::SmartHealth;
use libfuzzer_sys::fuzz_target;

const DEVICE: &str = "/dev/sda";

fuzz_target!(|data: &[u8]| {
    let status = (data.len() as u32) & 0xfc;
    match smart::parse(data, DEVICE, status) {
        Ok(report) => {
            assert_eq!(report.device, DEVICE);
            assert_eq!(report.smartctl_exit_status, status);
            if report.health() == SmartHealth::Passed {
                assert!(report.failing_attributes.is_empty());
            }
            // The typed parse skips unknown fields without checking their UTF-8 (serde_json
            // validates only what it keeps), so a document it accepts may not be a `Value`;
            // the wear check needs the whole document and applies only to those that are.
            let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
                return;
            };
            let nvme_wear = json
                .get("nvme_smart_health_information_log")
                .and_then(|n| n.get("percentage_used"))
                .is_some_and(|v| !v.is_null());
            if let (Some(used), false) = (report.percentage_used, nvme_wear) {
                assert!(used <= 100, "ATA wear {used}");
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
