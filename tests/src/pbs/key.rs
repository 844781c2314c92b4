//! PBS client encryption keys as `proxmox-backup-client key create --kdf none` writes them, and
//! their fingerprints.
//!
//! The key file is `KeyConfig` JSON (proxmox-backup `pbs-key-config`): `kdf` (`null` here: the
//! key is stored unprotected, like PVE's auto-generated storage keys, which PVE creates with
//! `proxmox-backup-client key create --kdf none <file>` in pve-storage `PBSPlugin.pm`),
//! `created` and `modified` (RFC 3339), `data` (base64 of the 32 raw key bytes) and
//! `fingerprint`.
//!
//! The fingerprint is computed as PBS does (pbs-tools `crypt_config.rs`, verified):
//! `id_key = PBKDF2-HMAC-SHA256(key, "_id_key", 10 iterations, 32 bytes)`, then
//! `SHA-256(FINGERPRINT_INPUT ‖ id_key)` where `FINGERPRINT_INPUT` is
//! `SHA-256("Proxmox Backup Encryption Key Fingerprint")`; shown as 32 lower-case hex bytes
//! joined by `:` — the agent's escrow code computes it (checked there against upstream's
//! `fingerprint_checks` vector), so simulator and agent cannot drift apart.
//!
//! Limits: passphrase-protected keys (`kdf` scrypt/PBKDF2) are not produced.

use base64::Engine;

use super::model::rfc3339_utc;

/// A raw 32-byte PBS encryption key. Debug output never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PbsKey {
    bytes: [u8; 32],
    created: i64,
}

impl std::fmt::Debug for PbsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbsKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("Key file is not JSON: {0}")]
    Json(String),
    #[error(
        "Key file is protected by a passphrase (kdf is not null); the simulator only reads unprotected keys"
    )]
    Protected,
    #[error("Key file 'data' is not base64 of 32 bytes")]
    Data,
}

impl PbsKey {
    /// A fresh random key, created now.
    pub fn generate() -> PbsKey {
        PbsKey {
            bytes: rand::random(),
            created: super::model::now_epoch(),
        }
    }

    /// A key from its raw bytes (tests that need a fixed fingerprint).
    pub fn from_bytes(bytes: [u8; 32], created: i64) -> PbsKey {
        PbsKey { bytes, created }
    }

    /// Reads an unprotected key file (`kdf: null`).
    pub fn from_json(text: &str) -> Result<PbsKey, KeyError> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| KeyError::Json(e.to_string()))?;
        if !v.get("kdf").is_some_and(serde_json::Value::is_null) {
            return Err(KeyError::Protected);
        }
        let data = v
            .get("data")
            .and_then(serde_json::Value::as_str)
            .ok_or(KeyError::Data)?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|_| KeyError::Data)?;
        let bytes: [u8; 32] = raw.try_into().map_err(|_| KeyError::Data)?;
        Ok(PbsKey {
            bytes,
            created: super::model::now_epoch(),
        })
    }

    /// The key file as `proxmox-backup-client key create --kdf none` writes it.
    pub fn to_json(&self) -> String {
        let created = rfc3339_utc(self.created, "Z");
        let v = serde_json::json!({
            "kdf": null,
            "created": created,
            "modified": created,
            "data": base64::engine::general_purpose::STANDARD.encode(self.bytes),
            "fingerprint": self.fingerprint(),
        });
        serde_json::to_string_pretty(&v).expect("a JSON value always serializes")
    }

    /// PBS's key fingerprint, `aa:bb:…` (32 bytes).
    pub fn fingerprint(&self) -> String {
        felhom_agent::capabilities::escrow::PbsKey::from_bytes(self.bytes, self.created)
            .fingerprint()
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_and_carries_its_fingerprint() {
        let key = PbsKey::generate();
        let json = key.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(v["kdf"].is_null());
        assert_eq!(v["fingerprint"], key.fingerprint());
        assert_eq!(key.fingerprint().len(), 95);
        let back = PbsKey::from_json(&json).unwrap();
        assert_eq!(back.fingerprint(), key.fingerprint());
        assert!(!format!("{key:?}").contains(v["data"].as_str().unwrap()));
    }

    #[test]
    fn protected_key_is_refused() {
        let json = r#"{"kdf":{"Scrypt":{"n":65536,"r":8,"p":1,"salt":"AA=="}},"data":"AA=="}"#;
        assert_eq!(PbsKey::from_json(json), Err(KeyError::Protected));
    }
}
