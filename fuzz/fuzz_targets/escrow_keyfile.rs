//! The escrow's inputs from outside the box: a PBS key file (`KeyConfig` JSON — on a new box
//! the escrow comes back from the hub or a USB stick) and a typed recovery code.
//!
//! Input: the text (non-UTF-8 ends early: both are read as UTF-8).
//!
//! Checked beyond "no panic": a parsed key file writes back to JSON that parses to an equal
//! value (so what `recover` reads is what PBS would write), a recorded fingerprint reads back
//! from its text, an unprotected file gives a key only when its fingerprint matches, a PBKDF2
//! copy with few rounds opens or is refused without panicking (scrypt at PBS's cost is far too
//! slow per input, and its parameter checks run before any derivation), and a recovery code
//! that parses has 12 words that parse again to the same passphrase.
#![no_main]

use felhom_agent::capabilities::escrow::key_config::{KeyConfig, KeyFingerprint, Kdf};
use felhom_agent::capabilities::escrow::{PbsKey, RecoveryCode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match KeyConfig::parse(text) {
        Ok(cfg) => {
            let again = KeyConfig::parse(&cfg.to_pretty_json()).expect("written JSON parses");
            assert_eq!(again, cfg);
            if let Some(fp) = cfg.fingerprint {
                assert_eq!(fp.to_string().parse::<KeyFingerprint>(), Ok(fp));
            }
            match &cfg.kdf {
                None => {
                    if let Ok(key) = PbsKey::from_plain(&cfg) {
                        assert_eq!(cfg.data.as_slice(), key.bytes());
                        assert!(cfg.fingerprint.is_none_or(|f| f == key.fingerprint()));
                    }
                }
                Some(Kdf::Pbkdf2 { iter, .. }) if *iter <= 1000 => {
                    let _ = PbsKey::unwrap(&cfg, b"fuzzing passphrase");
                }
                Some(Kdf::Scrypt { n, r, .. }) if !n.is_power_of_two() || *r > 1 << 20 => {
                    assert!(PbsKey::unwrap(&cfg, b"fuzzing passphrase").is_err());
                }
                Some(_) => {}
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    if let Ok(code) = RecoveryCode::parse(text) {
        assert_eq!(code.words().count(), 12);
        let phrase = std::str::from_utf8(code.passphrase()).expect("the phrase is UTF-8");
        let back = RecoveryCode::parse(phrase).expect("a normal-form phrase parses");
        assert_eq!(back.passphrase(), code.passphrase());
    }
});
