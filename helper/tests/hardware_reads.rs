//! SMART and sensor reads: recorded `smartctl --json` outputs (tests/fixtures/smartctl) parse
//! into the typed report, and the same path works end to end through the helper binary with
//! a stand-in program; a hung program is killed at its timeout.

mod common;

use std::path::PathBuf;

use felhom_helper::smart;
use felhom_proto::helper::v1::{
    DriveProtocol, ReadSensorsRequest, ReadSmartRequest, SmartHealth, SmartReport,
};
use tonic::Code;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn parse_fixture(name: &str, device: &str) -> SmartReport {
    let path = fixture(&format!("smartctl/{name}"));
    let json = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let value: serde_json::Value = serde_json::from_slice(&json).expect("fixture is JSON");
    let status = value
        .pointer("/smartctl/exit_status")
        .and_then(serde_json::Value::as_u64)
        .and_then(|s| u32::try_from(s).ok())
        .expect("fixture records its exit status");
    smart::parse(&json, device, status).expect("fixture parses")
}

#[test]
fn sata_hdd_report_is_healthy_with_counters() {
    let r = parse_fixture("sata-hdd.json", "/dev/sda");
    assert_eq!(r.protocol(), DriveProtocol::Ata);
    assert_eq!(r.health(), SmartHealth::Passed);
    assert_eq!(r.model, "WDC WD40EFRX-68N32N0");
    assert_eq!(r.capacity_bytes, 4_000_787_030_016);
    assert_eq!(r.rotation_rate_rpm, Some(5400));
    assert_eq!(r.temperature_celsius, Some(34));
    assert_eq!(r.power_on_hours, Some(38921));
    assert_eq!(r.reallocated_sectors, Some(0));
    assert_eq!(r.pending_sectors, Some(0));
    assert_eq!(r.offline_uncorrectable, Some(0));
    assert_eq!(r.percentage_used, None, "an HDD has no wear indicator");
    assert!(r.failing_attributes.is_empty());
}

#[test]
fn sata_ssd_wear_comes_from_the_wear_leveling_attribute() {
    let r = parse_fixture("sata-ssd.json", "/dev/sdb");
    assert_eq!(r.health(), SmartHealth::Passed);
    assert_eq!(r.rotation_rate_rpm, Some(0));
    assert_eq!(
        r.percentage_used,
        Some(7),
        "Wear_Leveling_Count normalized 93 → 7% used"
    );
    assert_eq!(r.temperature_celsius, Some(31));
}

#[test]
fn nvme_report_carries_the_health_log() {
    let r = parse_fixture("nvme.json", "/dev/nvme0n1");
    assert_eq!(r.protocol(), DriveProtocol::Nvme);
    assert_eq!(r.device_type, "nvme");
    assert_eq!(r.health(), SmartHealth::Passed);
    assert_eq!(r.percentage_used, Some(4));
    assert_eq!(r.available_spare_percent, Some(100));
    assert_eq!(r.media_errors, Some(0));
    assert_eq!(r.critical_warning, Some(0));
    assert_eq!(r.temperature_celsius, Some(43));
    assert_eq!(r.power_on_hours, Some(14321));
    assert_eq!(
        r.reallocated_sectors, None,
        "NVMe has no ATA attribute table"
    );
}

#[test]
fn usb_bridged_drives_report_through_their_bridge() {
    let sat = parse_fixture("usb-sat.json", "/dev/sdc");
    assert_eq!(sat.protocol(), DriveProtocol::Ata);
    assert_eq!(sat.device_type, "sat");
    assert_eq!(sat.health(), SmartHealth::Passed);
    assert_eq!(sat.temperature_celsius, Some(38));
    assert_eq!(sat.power_on_hours, Some(4893));

    let jm = parse_fixture("usb-nvme-jmicron.json", "/dev/sde");
    assert_eq!(jm.protocol(), DriveProtocol::Nvme);
    assert_eq!(jm.device_type, "sntjmicron");
    assert_eq!(jm.percentage_used, Some(1));
}

#[test]
fn failing_drive_is_reported_failed_with_its_failing_attribute() {
    let r = parse_fixture("failing-hdd.json", "/dev/sdd");
    assert_eq!(r.health(), SmartHealth::Failed);
    assert_eq!(r.failing_attributes, ["Reallocated_Sector_Ct"]);
    assert_eq!(r.reallocated_sectors, Some(4088));
    assert_eq!(r.pending_sectors, Some(392));
    assert_eq!(r.offline_uncorrectable, Some(392));
    assert_eq!(r.smartctl_exit_status, 88);
}

#[tokio::test]
async fn failing_drive_reads_end_to_end_through_the_helper() {
    let dir = common::temp_dir();
    let smartctl = common::script(
        dir.path(),
        "smartctl",
        &format!(
            "[ \"$*\" = \"--json=c --all /dev/sdd\" ] || exit 1\ncat {}\nexit 88",
            fixture("smartctl/failing-hdd.json").display()
        ),
    );
    let helper = common::start_in(
        dir,
        common::Options {
            smartctl: Some(smartctl),
            ..Default::default()
        },
    );
    let mut client = helper.client().await;
    let r = client
        .read_smart(ReadSmartRequest {
            device: "/dev/sdd".into(),
        })
        .await
        .expect("SMART read of a failing drive still succeeds")
        .into_inner();
    assert_eq!(r.health(), SmartHealth::Failed);
    assert_eq!(r.device, "/dev/sdd");
    assert_eq!(r.smartctl_exit_status, 88);
}

#[tokio::test]
async fn device_smartctl_cannot_open_is_not_found() {
    let dir = common::temp_dir();
    let smartctl = common::script(
        dir.path(),
        "smartctl",
        "echo '{\"json_format_version\":[1,0],\"smartctl\":{\"exit_status\":2}}'\nexit 2",
    );
    let helper = common::start_in(
        dir,
        common::Options {
            smartctl: Some(smartctl),
            ..Default::default()
        },
    );
    let status = helper
        .client()
        .await
        .read_smart(ReadSmartRequest {
            device: "/dev/sdz".into(),
        })
        .await
        .expect_err("open failure");
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(
        status.message(),
        "smartctl cannot open /dev/sdz (exit status 2)"
    );
}

#[tokio::test]
async fn sensors_read_end_to_end_through_the_helper() {
    let dir = common::temp_dir();
    let sensors = common::script(
        dir.path(),
        "sensors",
        &format!(
            "[ \"$*\" = \"-j\" ] || exit 1\ncat {}",
            fixture("sensors/proxmox-host.json").display()
        ),
    );
    let helper = common::start_in(
        dir,
        common::Options {
            sensors: Some(sensors),
            ..Default::default()
        },
    );
    let report = helper
        .client()
        .await
        .read_sensors(ReadSensorsRequest {})
        .await
        .expect("sensors read")
        .into_inner();
    let composite = report
        .temperatures
        .iter()
        .find(|t| t.chip == "nvme-pci-0100" && t.label == "Composite")
        .expect("NVMe composite temperature");
    assert_eq!(composite.current_celsius, 42.85);
    assert_eq!(composite.critical_celsius, Some(84.85));
    assert!(
        report
            .temperatures
            .iter()
            .all(|t| !t.label.starts_with("fan"))
    );
    // 1 acpitz + 5 coretemp + 3 nvme + 2 nct6798 temperature features.
    assert_eq!(report.temperatures.len(), 11, "{:?}", report.temperatures);
}

#[tokio::test]
async fn hung_program_is_killed_at_its_timeout() {
    let dir = common::temp_dir();
    let pids = dir.path().join("pids");
    // The stand-in starts a grandchild and waits: both must die with the process group.
    let smartctl = common::script(
        dir.path(),
        "smartctl",
        &format!("sleep 600 &\necho \"$$ $!\" > {}\nwait", pids.display()),
    );
    let helper = common::start_in(
        dir,
        common::Options {
            smartctl: Some(smartctl),
            read_timeout_secs: 2,
            ..Default::default()
        },
    );
    let status = helper
        .client()
        .await
        .read_smart(ReadSmartRequest {
            device: "/dev/sda".into(),
        })
        .await
        .expect_err("hung smartctl");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status
            .message()
            .ends_with("timed out after 2s and was killed"),
        "{}",
        status.message()
    );
    let text = std::fs::read_to_string(&pids).expect("stand-in recorded its pids");
    for pid in text.split_whitespace() {
        // SIGKILL is delivered asynchronously: poll (generously) until the process is gone
        // or a zombie waiting for its reaper; either way it no longer runs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next())
                .map(str::to_owned);
            if matches!(state.as_deref(), None | Some("Z") | Some("X")) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "process {pid} still alive 30s after the timeout: {stat}"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let audit = helper.audit_text();
    assert!(
        audit.lines().any(|l| l.contains("op=read_smart")
            && l.contains("outcome=failed")
            && l.contains("timed out")),
        "{audit}"
    );
}

/// The capability masks (`CapPrm`, `CapBnd`) a stand-in recorded from `/proc/$$/status`.
fn recorded_caps(path: &std::path::Path) -> (u64, u64) {
    let text = std::fs::read_to_string(path).expect("the stand-in recorded its capabilities");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), 16).expect("hex mask"))
            .unwrap_or_else(|| panic!("{name} missing in {text}"))
    };
    (field("CapPrm:"), field("CapBnd:"))
}

fn running_as_root(test: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        println!("SKIPPED {test}: the helper drops capabilities only when it runs as root");
    }
    root
}

#[tokio::test]
async fn smartctl_runs_with_only_raw_io_and_sys_admin() {
    if !running_as_root("smartctl_runs_with_only_raw_io_and_sys_admin") {
        return;
    }
    let dir = common::temp_dir();
    let record = dir.path().join("smartctl-caps");
    let smartctl = common::script(
        dir.path(),
        "smartctl",
        &format!(
            "grep '^Cap' /proc/$$/status > {}\ncat {}",
            record.display(),
            fixture("smartctl/sata-hdd.json").display()
        ),
    );
    let helper = common::start_in(
        dir,
        common::Options {
            smartctl: Some(smartctl),
            ..Default::default()
        },
    );
    helper
        .client()
        .await
        .read_smart(ReadSmartRequest {
            device: "/dev/sda".into(),
        })
        .await
        .expect("SMART read");
    const CAP_SYS_RAWIO: u64 = 1 << 17;
    const CAP_SYS_ADMIN: u64 = 1 << 21;
    assert_eq!(
        recorded_caps(&record),
        (CAP_SYS_RAWIO | CAP_SYS_ADMIN, CAP_SYS_RAWIO | CAP_SYS_ADMIN)
    );
}

#[tokio::test]
async fn sensors_runs_with_no_capabilities() {
    if !running_as_root("sensors_runs_with_no_capabilities") {
        return;
    }
    let dir = common::temp_dir();
    let record = dir.path().join("sensors-caps");
    let sensors = common::script(
        dir.path(),
        "sensors",
        &format!(
            "grep '^Cap' /proc/$$/status > {}\ncat {}",
            record.display(),
            fixture("sensors/proxmox-host.json").display()
        ),
    );
    let helper = common::start_in(
        dir,
        common::Options {
            sensors: Some(sensors),
            ..Default::default()
        },
    );
    helper
        .client()
        .await
        .read_sensors(ReadSensorsRequest {})
        .await
        .expect("sensors read");
    assert_eq!(recorded_caps(&record), (0, 0));
}
