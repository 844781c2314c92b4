//! SMART reads: `smartctl --json=c --all <device>` parsed into a typed [`SmartReport`].
//!
//! smartctl's exit status is a bit field (smartctl(8), RETURN VALUES): bit 0 = command line
//! did not parse, bit 1 = device open failed or it did not answer IDENTIFY, bit 2 = some
//! SMART command failed or a checksum was wrong; bits 3..7 describe the *drive* (3 = SMART
//! status "failing", 4 = prefail attribute at or below threshold, 5 = usage attribute was at
//! or below threshold in the past, 6 = error log has errors, 7 = self-test log has errors).
//! Bits 0 and 1 mean there is no report; everything else is parsed and the raw bit field is
//! passed on so the agent can judge the drive-describing bits.
//!
//! JSON fields read (smartctl 7.x, `json_format_version` 1): `device.{type,protocol}`,
//! `model_name`, `serial_number`, `firmware_version`, `user_capacity.bytes`,
//! `rotation_rate`, `smart_status.passed`, `temperature.current`, `power_on_time.hours`,
//! `ata_smart_attributes.table[].{id,name,value,thresh,when_failed,raw.value}` (`when_failed`
//! is `""`, `"now"` or `"past"`), `nvme_smart_health_information_log.{percentage_used,
//! available_spare,media_errors,critical_warning}`. Unknown fields are ignored; missing ones
//! become absent values, never invented zeros.

use std::time::Duration;

use felhom_proto::helper::v1::{DriveProtocol, SmartHealth, SmartReport};
use serde::Deserialize;

use crate::exec::{self, ExecError, Invocation};
use crate::privilege::ProgramCaps;
use crate::validate::DevicePath;

/// SMART read failure.
#[derive(Debug, thiserror::Error)]
pub enum SmartError {
    /// smartctl could not be run.
    #[error("Cannot run smartctl")]
    Exec(#[from] ExecError),
    /// smartctl could not open the device (exit bit 1).
    #[error("smartctl cannot open {device} (exit status {status})")]
    DeviceOpen {
        /// The device.
        device: String,
        /// The exit status bit field.
        status: u32,
    },
    /// smartctl refused its command line (exit bit 0) — a helper bug, not a caller error.
    #[error("smartctl refused its command line (exit status {0})")]
    CommandLine(u32),
    /// smartctl was killed by a signal or printed nothing usable.
    #[error("smartctl ended without an exit status")]
    Signalled,
    /// The output was not the JSON smartctl documents.
    #[error("smartctl output is not valid smartctl JSON")]
    Parse(#[source] serde_json::Error),
    /// The output was longer than the cap.
    #[error("smartctl output exceeded {0} bytes")]
    TooLong(usize),
}

/// Where smartctl lives and how long it may take.
#[derive(Debug, Clone)]
pub struct SmartConfig {
    /// Absolute path of smartctl (or its stand-in).
    pub program: std::path::PathBuf,
    /// Timeout per call.
    pub timeout: Duration,
    /// Output cap in bytes.
    pub output_cap: usize,
}

/// Runs smartctl for `device` and parses its report.
pub async fn read(cfg: &SmartConfig, device: &DevicePath) -> Result<SmartReport, SmartError> {
    let inv = Invocation {
        program: cfg.program.clone(),
        // Fixed argv: JSON (compact), all SMART information, then the validated device.
        args: vec!["--json=c".into(), "--all".into(), device.as_str().into()],
        timeout: cfg.timeout,
        output_cap: cfg.output_cap,
        caps: ProgramCaps::Smartctl,
    };
    let out = exec::run(&inv).await?;
    let status = out
        .status
        .code()
        .and_then(|c| u32::try_from(c).ok())
        .ok_or(SmartError::Signalled)?;
    if status & 0b01 != 0 {
        return Err(SmartError::CommandLine(status));
    }
    if status & 0b10 != 0 {
        return Err(SmartError::DeviceOpen {
            device: device.as_str().to_owned(),
            status,
        });
    }
    if out.truncated {
        return Err(SmartError::TooLong(cfg.output_cap));
    }
    parse(&out.stdout, device.as_str(), status)
}

/// Parses `smartctl --json` output for `device` that exited with `status`.
pub fn parse(json: &[u8], device: &str, status: u32) -> Result<SmartReport, SmartError> {
    let raw: Raw = serde_json::from_slice(json).map_err(SmartError::Parse)?;
    let protocol = match raw.device.protocol.as_deref() {
        Some("ATA") => DriveProtocol::Ata,
        Some("NVMe") => DriveProtocol::Nvme,
        Some("SCSI") => DriveProtocol::Scsi,
        Some(_) | None => DriveProtocol::Unspecified,
    };
    let attrs = raw
        .ata_smart_attributes
        .map(|a| a.table)
        .unwrap_or_default();
    let attr_raw = |id: u32| attrs.iter().find(|a| a.id == id).and_then(|a| a.raw.value);
    let failing_attributes: Vec<String> = attrs
        .iter()
        .filter(|a| a.when_failed.as_deref() == Some("now"))
        .map(|a| {
            a.name
                .clone()
                .unwrap_or_else(|| format!("attribute {}", a.id))
        })
        .collect();
    let health = match raw.smart_status.and_then(|s| s.passed) {
        Some(true) if failing_attributes.is_empty() => SmartHealth::Passed,
        Some(true) | Some(false) => SmartHealth::Failed,
        None if !failing_attributes.is_empty() => SmartHealth::Failed,
        None => SmartHealth::Unknown,
    };
    let nvme = raw.nvme_smart_health_information_log;
    // Wear: NVMe reports it directly; ATA SSDs carry a normalized "life left" value (100 =
    // new) in vendor attributes 231 (SSD_Life_Left), 233 (Media_Wearout_Indicator) or 177
    // (Wear_Leveling_Count, Samsung); used = 100 - normalized.
    let ata_wear = [231u32, 233, 177].iter().find_map(|id| {
        attrs
            .iter()
            .find(|a| a.id == *id)
            .and_then(|a| a.value)
            .filter(|v| *v <= 100)
            .map(|v| 100 - v)
    });
    Ok(SmartReport {
        device: device.to_owned(),
        protocol: protocol.into(),
        device_type: raw.device.r#type.unwrap_or_default(),
        model: raw.model_name.unwrap_or_default(),
        serial: raw.serial_number.unwrap_or_default(),
        firmware: raw.firmware_version.unwrap_or_default(),
        capacity_bytes: raw.user_capacity.and_then(|c| c.bytes).unwrap_or_default(),
        rotation_rate_rpm: raw.rotation_rate,
        health: health.into(),
        temperature_celsius: raw
            .temperature
            .and_then(|t| t.current)
            .or(nvme.as_ref().and_then(|n| n.temperature)),
        power_on_hours: raw
            .power_on_time
            .and_then(|p| p.hours)
            .or(nvme.as_ref().and_then(|n| n.power_on_hours)),
        percentage_used: nvme.as_ref().and_then(|n| n.percentage_used).or(ata_wear),
        available_spare_percent: nvme.as_ref().and_then(|n| n.available_spare),
        reallocated_sectors: attr_raw(5),
        pending_sectors: attr_raw(197),
        offline_uncorrectable: attr_raw(198),
        media_errors: nvme.as_ref().and_then(|n| n.media_errors),
        critical_warning: nvme.as_ref().and_then(|n| n.critical_warning),
        failing_attributes,
        smartctl_exit_status: status,
    })
}

#[derive(Deserialize)]
struct Raw {
    #[serde(default)]
    device: RawDevice,
    model_name: Option<String>,
    serial_number: Option<String>,
    firmware_version: Option<String>,
    user_capacity: Option<RawCapacity>,
    rotation_rate: Option<u32>,
    smart_status: Option<RawStatus>,
    temperature: Option<RawTemperature>,
    power_on_time: Option<RawPowerOn>,
    ata_smart_attributes: Option<RawAttributes>,
    nvme_smart_health_information_log: Option<RawNvmeLog>,
}

#[derive(Deserialize, Default)]
struct RawDevice {
    r#type: Option<String>,
    protocol: Option<String>,
}

#[derive(Deserialize)]
struct RawCapacity {
    bytes: Option<u64>,
}

#[derive(Deserialize)]
struct RawStatus {
    passed: Option<bool>,
}

#[derive(Deserialize)]
struct RawTemperature {
    current: Option<i32>,
}

#[derive(Deserialize)]
struct RawPowerOn {
    hours: Option<u64>,
}

#[derive(Deserialize)]
struct RawAttributes {
    #[serde(default)]
    table: Vec<RawAttribute>,
}

#[derive(Deserialize)]
struct RawAttribute {
    id: u32,
    name: Option<String>,
    value: Option<u32>,
    when_failed: Option<String>,
    #[serde(default)]
    raw: RawAttrValue,
}

#[derive(Deserialize, Default)]
struct RawAttrValue {
    value: Option<u64>,
}

#[derive(Deserialize)]
struct RawNvmeLog {
    critical_warning: Option<u32>,
    temperature: Option<i32>,
    available_spare: Option<u32>,
    percentage_used: Option<u32>,
    power_on_hours: Option<u64>,
    media_errors: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_parse_error() {
        let err =
            parse(b"Smartctl open device: /dev/sdz failed", "/dev/sdz", 0).expect_err("not JSON");
        assert!(matches!(err, SmartError::Parse(_)));
    }

    #[test]
    fn missing_sections_stay_absent() {
        let report = parse(
            br#"{"device":{"type":"sat","protocol":"ATA"}}"#,
            "/dev/sdb",
            4,
        )
        .expect("minimal JSON parses");
        assert_eq!(report.health(), SmartHealth::Unknown);
        assert_eq!(report.temperature_celsius, None);
        assert_eq!(report.reallocated_sectors, None);
        assert_eq!(report.smartctl_exit_status, 4);
    }
}
