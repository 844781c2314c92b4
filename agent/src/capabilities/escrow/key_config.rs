//! The PBS client key file: `KeyConfig` JSON exactly as `proxmox-backup-client key` reads and
//! writes it (proxmox-backup `pbs-key-config/src/lib.rs`).
//!
//! Fields in serde's order: `kdf` (`null`, `{"Scrypt":{n,r,p,salt}}` or
//! `{"PBKDF2":{iter,salt}}`), `created` and `modified` (RFC 3339; PBS's parser takes only the
//! 20-byte `…Z` or 25-byte `…+HH:MM` forms, so never fractional seconds), `data` (standard
//! base64 with padding: the raw 32-byte key when `kdf` is null, else `iv(16) ‖ tag(16) ‖
//! ciphertext(32)`), `fingerprint` (optional, `xx:…` over 32 bytes) and `hint` (optional).
//! Unknown fields are ignored, as PBS's own struct does.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A PBS key fingerprint: 32 bytes, shown as lower-case hex pairs joined by `:`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyFingerprint([u8; 32]);

impl KeyFingerprint {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Display for KeyFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for KeyFingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyFingerprint({self})")
    }
}

/// A fingerprint that is not 32 `:`-separated hex pairs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a PBS key fingerprint (32 hex pairs joined by ':')")]
pub struct BadFingerprint(pub String);

impl std::str::FromStr for KeyFingerprint {
    type Err = BadFingerprint;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadFingerprint(s.chars().take(120).collect());
        let mut out = [0u8; 32];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Self(out))
    }
}

impl Serialize for KeyFingerprint {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyFingerprint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How the key in `data` is protected.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kdf {
    /// scrypt with cost `n` (a power of two), block size `r`, parallelism `p`.
    Scrypt {
        n: u64,
        r: u64,
        p: u64,
        #[serde(with = "b64")]
        salt: Vec<u8>,
    },
    /// PBKDF2-HMAC-SHA256 with `iter` rounds.
    #[serde(rename = "PBKDF2")]
    Pbkdf2 {
        iter: usize,
        #[serde(with = "b64")]
        salt: Vec<u8>,
    },
}

impl std::fmt::Debug for Kdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Scrypt { n, r, p, .. } => write!(f, "Scrypt {{ n: {n}, r: {r}, p: {p} }}"),
            Self::Pbkdf2 { iter, .. } => write!(f, "PBKDF2 {{ iter: {iter} }}"),
        }
    }
}

/// A PBS key file. `data` is the key itself when `kdf` is `None`, so Debug never shows it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyConfig {
    pub kdf: Option<Kdf>,
    #[serde(with = "rfc3339")]
    pub created: i64,
    #[serde(with = "rfc3339")]
    pub modified: i64,
    #[serde(with = "b64")]
    pub data: Vec<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<KeyFingerprint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("kdf", &self.kdf)
            .field("created", &self.created)
            .field("modified", &self.modified)
            .field("fingerprint", &self.fingerprint)
            .field("hint", &self.hint)
            .finish_non_exhaustive()
    }
}

/// A key file that is not `KeyConfig` JSON; the text names the field, never the key.
#[derive(Debug, thiserror::Error)]
#[error("not a PBS key file: {0}")]
pub struct KeyConfigError(String);

impl KeyConfig {
    /// Parses key-file JSON. The error names what is wrong, never a value from the file.
    pub fn parse(text: &str) -> Result<Self, KeyConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            // serde_json's messages for a wrong type can quote the value; say only where and
            // which kind of problem.
            let what = match inner.classify() {
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                    "is not valid JSON".to_owned()
                }
                serde_json::error::Category::Io => "could not be read".to_owned(),
                serde_json::error::Category::Data if path == "." => {
                    missing_field(&inner.to_string()).map_or_else(
                        || "is not a JSON object with kdf, created, modified and data".to_owned(),
                        |f| format!("has no '{f}' field"),
                    )
                }
                serde_json::error::Category::Data => format!("has a bad '{path}'"),
            };
            KeyConfigError(what)
        })
    }

    /// The file text as PBS writes it: pretty JSON (PVE appends a newline when it stores it).
    pub fn to_pretty_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a KeyConfig always serializes")
    }
}

fn missing_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// RFC 3339 timestamps as PBS writes and reads them: whole seconds, `Z` or `±HH:MM`.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    /// `2025-01-02T03:04:05Z` for an epoch second.
    pub fn format(epoch: i64) -> String {
        chrono::DateTime::from_timestamp(epoch, 0)
            .unwrap_or_default()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string()
    }

    /// Parses the two forms PBS's `parse_rfc3339` accepts (20 or 25 bytes).
    pub fn parse(text: &str) -> Option<i64> {
        if text.len() != 20 && text.len() != 25 {
            return None;
        }
        chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp())
    }

    pub fn serialize<S: Serializer>(epoch: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*epoch))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom("not an RFC 3339 time with whole seconds (…Z or …+HH:MM)")
        })
    }
}

/// Standard base64 with padding.
mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| serde::de::Error::custom("not standard base64"))
    }
}

/// Base64 as the key file writes it (for tests that compare against raw JSON).
pub fn base64_of(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "0e:ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b";

    #[test]
    fn a_fingerprint_round_trips_through_its_text() {
        let fp: KeyFingerprint = FP.parse().unwrap();
        assert_eq!(fp.to_string(), FP);
        assert_eq!(
            FP.to_uppercase()
                .parse::<KeyFingerprint>()
                .unwrap()
                .to_string(),
            FP
        );
    }

    #[test]
    fn a_short_or_long_fingerprint_is_refused() {
        assert!(FP[..FP.len() - 3].parse::<KeyFingerprint>().is_err());
        assert!(format!("{FP}:00").parse::<KeyFingerprint>().is_err());
        assert!("zz".parse::<KeyFingerprint>().is_err());
    }

    #[test]
    fn times_are_written_without_fractional_seconds() {
        assert_eq!(rfc3339::format(1_735_787_045), "2025-01-02T03:04:05Z");
        assert_eq!(rfc3339::parse("2025-01-02T03:04:05Z"), Some(1_735_787_045));
        assert_eq!(
            rfc3339::parse("2025-01-02T04:04:05+01:00"),
            Some(1_735_787_045)
        );
        assert_eq!(rfc3339::parse("2025-01-02T03:04:05.5Z"), None);
    }

    #[test]
    fn a_missing_field_is_named() {
        let e = KeyConfig::parse(r#"{"kdf":null,"created":"2025-01-02T03:04:05Z"}"#).unwrap_err();
        assert_eq!(e.to_string(), "not a PBS key file: has no 'modified' field");
    }

    #[test]
    fn a_bad_value_is_named_by_its_field_not_shown() {
        let e = KeyConfig::parse(
            r#"{"kdf":null,"created":"2025-01-02T03:04:05Z","modified":"2025-01-02T03:04:05Z","data":"sEcReT!!"}"#,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "not a PBS key file: has a bad 'data'");
        assert!(!format!("{e:?}").contains("sEcReT"));
    }

    #[test]
    fn debug_never_shows_the_key_data() {
        let cfg = KeyConfig {
            kdf: None,
            created: 0,
            modified: 0,
            data: vec![0xAB; 32],
            fingerprint: None,
            hint: None,
        };
        let text = format!("{cfg:?}");
        assert!(!text.contains(&base64_of(&cfg.data)), "{text}");
        assert!(!text.contains("171"), "{text}");
    }
}
