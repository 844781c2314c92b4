//! `sensors -j` output → temperature readings (`felhom_helper::sensors::parse`).
//!
//! Input: the JSON as lm-sensors prints it. Checked beyond "no panic": every reading names a
//! chip and feature of the input whose object has a `tempN_input` number.
#![no_main]

use felhom_helper::sensors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match sensors::parse(data) {
        Ok(report) => {
            let json: serde_json::Value = serde_json::from_slice(data).expect("parsed once");
            for t in &report.temperatures {
                let feature = json
                    .get(&t.chip)
                    .and_then(|c| c.get(&t.label))
                    .and_then(|f| f.as_object())
                    .expect("a reading comes from a feature object of the input");
                assert!(
                    feature.iter().any(|(k, v)| k.starts_with("temp")
                        && k.ends_with("_input")
                        && v.as_f64() == Some(t.current_celsius)),
                    "{t:?}"
                );
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
