//! Temperature reads: `sensors -j` (lm-sensors ≥ 3.5) parsed into typed readings.
//!
//! `sensors -j` prints one object per chip (`"coretemp-isa-0000"`), holding an `"Adapter"`
//! string and one object per feature (`"Package id 0"`), whose keys are sysfs-style
//! subfeature names (`temp1_input`, `temp1_max`, `temp1_crit`, `fan1_input`, …). Only
//! temperature features (a `tempN_input` key) are reported; `tempN_max` becomes the high
//! mark, `tempN_crit` the critical one. Other features are skipped, not guessed at.

use std::collections::BTreeMap;
use std::time::Duration;

use felhom_proto::helper::v1::{SensorsReport, TemperatureReading};

use crate::exec::{self, ExecError, Invocation};
use crate::privilege::ProgramCaps;

/// Sensor read failure.
#[derive(Debug, thiserror::Error)]
pub enum SensorsError {
    /// sensors could not be run.
    #[error("Cannot run sensors")]
    Exec(#[from] ExecError),
    /// sensors exited unsuccessfully.
    #[error("sensors failed with {0}")]
    Failed(std::process::ExitStatus),
    /// The output was longer than the cap.
    #[error("sensors output exceeded {0} bytes")]
    TooLong(usize),
    /// The output was not the JSON shape `sensors -j` prints.
    #[error("sensors output is not valid sensors JSON")]
    Parse(#[source] serde_json::Error),
}

/// Where sensors lives and how long it may take.
#[derive(Debug, Clone)]
pub struct SensorsConfig {
    /// Absolute path of sensors (or its stand-in).
    pub program: std::path::PathBuf,
    /// Timeout per call.
    pub timeout: Duration,
    /// Output cap in bytes.
    pub output_cap: usize,
}

/// Runs `sensors -j` and parses the temperatures.
pub async fn read(cfg: &SensorsConfig) -> Result<SensorsReport, SensorsError> {
    let inv = Invocation {
        program: cfg.program.clone(),
        args: vec!["-j".into()],
        timeout: cfg.timeout,
        output_cap: cfg.output_cap,
        caps: ProgramCaps::Sensors,
    };
    let out = exec::run(&inv).await?;
    if !out.status.success() {
        return Err(SensorsError::Failed(out.status));
    }
    if out.truncated {
        return Err(SensorsError::TooLong(cfg.output_cap));
    }
    parse(&out.stdout)
}

/// Parses `sensors -j` output.
pub fn parse(json: &[u8]) -> Result<SensorsReport, SensorsError> {
    type Features = BTreeMap<String, serde_json::Value>;
    let chips: BTreeMap<String, Features> =
        serde_json::from_slice(json).map_err(SensorsError::Parse)?;
    let mut temperatures = Vec::new();
    for (chip, features) in chips {
        for (label, value) in features {
            let Some(sub) = value.as_object() else {
                continue; // "Adapter": "ISA adapter"
            };
            let find = |suffix: &str| {
                sub.iter().find_map(|(k, v)| {
                    let rest = k.strip_prefix("temp")?;
                    let (n, s) = rest.split_once('_')?;
                    (s == suffix && n.bytes().all(|b| b.is_ascii_digit()))
                        .then(|| v.as_f64())
                        .flatten()
                })
            };
            let Some(current) = find("input") else {
                continue;
            };
            temperatures.push(TemperatureReading {
                chip: chip.clone(),
                label,
                current_celsius: current,
                high_celsius: find("max"),
                critical_celsius: find("crit"),
            });
        }
    }
    Ok(SensorsReport { temperatures })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperatures_are_read_and_fans_skipped() {
        let json = br#"{
          "coretemp-isa-0000": {
            "Adapter": "ISA adapter",
            "Package id 0": {"temp1_input": 45.0, "temp1_max": 80.0, "temp1_crit": 100.0, "temp1_crit_alarm": 0.0},
            "Core 0": {"temp2_input": 43.0, "temp2_max": 80.0, "temp2_crit": 100.0, "temp2_crit_alarm": 0.0}
          },
          "nct6775-isa-0290": {"Adapter": "ISA adapter", "fan2": {"fan2_input": 1084.0, "fan2_min": 0.0}}
        }"#;
        let report = parse(json).expect("valid sensors JSON");
        assert_eq!(report.temperatures.len(), 2);
        let pkg = report
            .temperatures
            .iter()
            .find(|t| t.label == "Package id 0")
            .expect("package sensor present");
        assert_eq!(pkg.chip, "coretemp-isa-0000");
        assert_eq!(pkg.current_celsius, 45.0);
        assert_eq!(pkg.high_celsius, Some(80.0));
        assert_eq!(pkg.critical_celsius, Some(100.0));
    }

    #[test]
    fn non_json_is_a_parse_error() {
        assert!(matches!(
            parse(b"coretemp-isa-0000\nAdapter: ISA adapter\n"),
            Err(SensorsError::Parse(_))
        ));
    }
}
