//! A PBS client encryption key `K`, its fingerprint, and its passphrase-wrapped copy — the same
//! computations as proxmox-backup (`pbs-tools/src/crypt_config.rs` for the fingerprint,
//! `pbs-key-config/src/lib.rs` `KeyConfig::with_key`/`decrypt` for the wrap):
//!
//! - fingerprint = SHA-256(SHA-256("Proxmox Backup Encryption Key Fingerprint") ‖
//!   PBKDF2-HMAC-SHA256(K, "_id_key", 10 rounds, 32 bytes));
//! - wrap: a 32-byte random salt, scrypt (n = 65536, r = 8, p = 1) of the passphrase to a
//!   32-byte AES-256 key, AES-256-GCM with a 16-byte random IV and empty AAD;
//!   `data = iv ‖ tag ‖ ciphertext`. Unwrapping checks the fingerprint again, as PBS does.
//!
//! So `proxmox-backup-client` opens the wrapped copy with the recovery code as its passphrase.

use aes_gcm::aead::{AeadInPlace as _, KeyInit as _};
use aes_gcm::aes::Aes256;
use aes_gcm::aes::cipher::consts::U16;
use rand::TryRngCore as _;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::key_config::{Kdf, KeyConfig, KeyFingerprint};

/// AES-256-GCM with PBS's 16-byte IV (the J0 counter then comes from GHASH of the IV).
type PbsGcm = aes_gcm::AesGcm<Aes256, U16>;

const SCRYPT_N: u64 = 65536;
const SCRYPT_R: u64 = 8;
const SCRYPT_P: u64 = 1;
/// PBS derives with OpenSSL's scrypt and `maxmem` = 1025 MiB; parameters needing more are
/// refused the same way (and cannot make recovery exhaust the machine).
const SCRYPT_MAX_MEM: u64 = 1025 * 1024 * 1024;
/// PBKDF2 rounds beyond this would make "open the escrow" hang for minutes.
const PBKDF2_MAX_ITER: usize = 10_000_000;
/// PBS's `decrypt` refuses shorter passphrases ("Passphrase is too short!").
const MIN_PASSPHRASE: usize = 5;

/// Why a key file does not give a key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key file is protected by a passphrase (kdf is set); expected an unprotected key")]
    Protected,
    #[error("the key file is not protected (kdf is null); expected a wrapped copy")]
    NotProtected,
    #[error("the key data is {0} bytes, not the 32 of a PBS key")]
    KeyLength(usize),
    #[error("the wrapped key data is {0} bytes, not iv(16) + tag(16) + key(32)")]
    WrappedLength(usize),
    #[error("the key file's kdf parameters are unusable: {0}")]
    KdfParams(String),
    #[error("the passphrase is too short (PBS needs at least {MIN_PASSPHRASE} bytes)")]
    ShortPassphrase,
    /// The GCM tag did not match: another passphrase, or a damaged file.
    #[error("wrong recovery code: the escrow does not open with it")]
    WrongPassphrase,
    #[error("the key opened but its fingerprint is {found}, not the {recorded} the file records")]
    Fingerprint {
        recorded: KeyFingerprint,
        found: KeyFingerprint,
    },
    #[error("cannot read random bytes from the operating system: {0}")]
    Random(String),
}

/// A raw 32-byte PBS encryption key, wiped from memory when dropped. Debug shows only the
/// fingerprint.
#[derive(Clone, PartialEq, Eq)]
pub struct PbsKey {
    bytes: Zeroizing<[u8; 32]>,
    /// When the key was made (kept by every wrapped copy, as `change-passphrase` does).
    created: i64,
}

impl std::fmt::Debug for PbsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PbsKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl PbsKey {
    pub fn from_bytes(bytes: [u8; 32], created: i64) -> Self {
        Self {
            bytes: Zeroizing::new(bytes),
            created,
        }
    }

    /// The key bytes (to compare or install; never to log).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub fn created(&self) -> i64 {
        self.created
    }

    /// The key of an unprotected key file (`kdf: null`), such as PVE's
    /// `/etc/pve/priv/storage/<id>.enc`. A recorded fingerprint must match.
    pub fn from_plain(cfg: &KeyConfig) -> Result<Self, KeyError> {
        if cfg.kdf.is_some() {
            return Err(KeyError::Protected);
        }
        let bytes: [u8; 32] = cfg
            .data
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::KeyLength(cfg.data.len()))?;
        let key = Self::from_bytes(bytes, cfg.created);
        key.check_recorded(cfg.fingerprint)?;
        Ok(key)
    }

    /// The unprotected key file for this key, as `proxmox-backup-client key create --kdf none`
    /// writes it.
    pub fn to_plain(&self, modified: i64) -> KeyConfig {
        KeyConfig {
            kdf: None,
            created: self.created,
            modified,
            data: self.bytes.to_vec(),
            fingerprint: Some(self.fingerprint()),
            hint: None,
        }
    }

    /// PBS's fingerprint of this key.
    pub fn fingerprint(&self) -> KeyFingerprint {
        let input = Sha256::digest(b"Proxmox Backup Encryption Key Fingerprint");
        let mut id_key = Zeroizing::new([0u8; 32]);
        pbkdf2::pbkdf2_hmac::<Sha256>(&self.bytes[..], b"_id_key", 10, &mut id_key[..]);
        let mut h = Sha256::new();
        h.update(input);
        h.update(&id_key[..]);
        KeyFingerprint::from_bytes(h.finalize().into())
    }

    /// A copy of this key under `passphrase` (scrypt, PBS's defaults), `modified` now.
    pub fn wrap(
        &self,
        passphrase: &[u8],
        hint: Option<String>,
        now: i64,
    ) -> Result<KeyConfig, KeyError> {
        if passphrase.len() < MIN_PASSPHRASE {
            return Err(KeyError::ShortPassphrase);
        }
        let mut salt = vec![0u8; 32];
        let mut iv = [0u8; 16];
        os_random(&mut salt)?;
        os_random(&mut iv)?;
        let kdf = Kdf::Scrypt {
            n: SCRYPT_N,
            r: SCRYPT_R,
            p: SCRYPT_P,
            salt,
        };
        let derived = derive(&kdf, passphrase)?;
        let cipher = PbsGcm::new_from_slice(&derived[..]).expect("a 32-byte AES-256 key");
        let mut buf = self.bytes.to_vec();
        let tag = cipher
            .encrypt_in_place_detached(&iv.into(), b"", &mut buf)
            .map_err(|_| KeyError::KdfParams("AES-GCM refused the input".into()))?;
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&iv);
        data.extend_from_slice(&tag);
        data.extend_from_slice(&buf);
        Ok(KeyConfig {
            kdf: Some(kdf),
            created: self.created,
            modified: now,
            data,
            fingerprint: Some(self.fingerprint()),
            hint,
        })
    }

    /// Opens a wrapped copy with `passphrase`; the key's fingerprint must match the recorded one.
    pub fn unwrap(cfg: &KeyConfig, passphrase: &[u8]) -> Result<Self, KeyError> {
        let Some(kdf) = &cfg.kdf else {
            return Err(KeyError::NotProtected);
        };
        if passphrase.len() < MIN_PASSPHRASE {
            return Err(KeyError::ShortPassphrase);
        }
        if cfg.data.len() != 64 {
            return Err(KeyError::WrappedLength(cfg.data.len()));
        }
        let derived = derive(kdf, passphrase)?;
        let (iv, rest) = cfg.data.split_at(16);
        let (tag, ciphertext) = rest.split_at(16);
        let cipher = PbsGcm::new_from_slice(&derived[..]).expect("a 32-byte AES-256 key");
        let mut buf = Zeroizing::new(ciphertext.to_vec());
        cipher
            .decrypt_in_place_detached(iv.into(), b"", &mut buf, tag.into())
            .map_err(|_| KeyError::WrongPassphrase)?;
        let bytes: [u8; 32] = buf
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::KeyLength(buf.len()))?;
        let key = Self::from_bytes(bytes, cfg.created);
        key.check_recorded(cfg.fingerprint)?;
        Ok(key)
    }

    fn check_recorded(&self, recorded: Option<KeyFingerprint>) -> Result<(), KeyError> {
        match recorded {
            Some(recorded) if recorded != self.fingerprint() => Err(KeyError::Fingerprint {
                recorded,
                found: self.fingerprint(),
            }),
            _ => Ok(()),
        }
    }
}

/// Fills `buf` from the operating system's RNG (getrandom), not a user-space generator.
pub fn os_random(buf: &mut [u8]) -> Result<(), KeyError> {
    rand::rngs::OsRng
        .try_fill_bytes(buf)
        .map_err(|e| KeyError::Random(e.to_string()))
}

fn derive(kdf: &Kdf, passphrase: &[u8]) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let mut out = Zeroizing::new([0u8; 32]);
    match kdf {
        Kdf::Scrypt { n, r, p, salt } => {
            if !n.is_power_of_two() || *n < 2 {
                return Err(KeyError::KdfParams(format!(
                    "scrypt n = {n} is not a power of two"
                )));
            }
            let mem = 128u64
                .saturating_mul(*r)
                .saturating_mul(n.saturating_add(*p));
            if mem > SCRYPT_MAX_MEM {
                return Err(KeyError::KdfParams(format!(
                    "scrypt n = {n}, r = {r}, p = {p} needs more than PBS's 1025 MiB"
                )));
            }
            // PBS writes p = 1; a large p costs CPU without memory, so it is bounded too (a
            // crafted escrow must not make `recover` run for days).
            if *p == 0 || *p > 16 || n.saturating_mul(*r).saturating_mul(*p) > 1 << 26 {
                return Err(KeyError::KdfParams(format!(
                    "scrypt n = {n}, r = {r}, p = {p} costs more than recovery allows (p <= 16, n*r*p <= 2^26)"
                )));
            }
            let log_n = u8::try_from(n.trailing_zeros()).unwrap_or(u8::MAX);
            let bad = |e: &dyn std::fmt::Display| KeyError::KdfParams(format!("scrypt: {e}"));
            let params = scrypt::Params::new(
                log_n,
                u32::try_from(*r).map_err(|e| bad(&e))?,
                u32::try_from(*p).map_err(|e| bad(&e))?,
                32,
            )
            .map_err(|e| bad(&e))?;
            scrypt::scrypt(passphrase, salt, &params, &mut out[..]).map_err(|e| bad(&e))?;
        }
        Kdf::Pbkdf2 { iter, salt } => {
            if *iter == 0 || *iter > PBKDF2_MAX_ITER {
                return Err(KeyError::KdfParams(format!(
                    "PBKDF2 iter = {iter} is outside 1..={PBKDF2_MAX_ITER}"
                )));
            }
            let rounds = u32::try_from(*iter).unwrap_or(u32::MAX);
            pbkdf2::pbkdf2_hmac::<Sha256>(passphrase, salt, rounds, &mut out[..]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counting_key() -> PbsKey {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::try_from(i).unwrap();
        }
        PbsKey::from_bytes(bytes, 1_700_000_000)
    }

    #[test]
    fn the_fingerprint_matches_upstreams_fingerprint_checks_vector() {
        // proxmox-backup pbs-tools/src/crypt_config.rs, test `fingerprint_checks`.
        assert_eq!(
            counting_key().fingerprint().to_string(),
            "0e:ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b"
        );
    }

    #[test]
    fn a_wrapped_key_opens_with_its_passphrase_byte_for_byte() {
        let key = counting_key();
        let wrapped = key
            .wrap(b"correct horse battery", None, 1_700_000_100)
            .unwrap();
        assert_eq!(wrapped.data.len(), 64);
        assert_eq!(wrapped.created, key.created());
        assert_eq!(wrapped.modified, 1_700_000_100);
        assert_eq!(wrapped.fingerprint, Some(key.fingerprint()));
        let back = PbsKey::unwrap(&wrapped, b"correct horse battery").unwrap();
        assert_eq!(back.bytes(), key.bytes());
    }

    #[test]
    fn another_passphrase_is_a_wrong_code_not_a_wrong_key() {
        let wrapped = counting_key().wrap(b"correct horse", None, 0).unwrap();
        let e = PbsKey::unwrap(&wrapped, b"correct house").unwrap_err();
        assert!(matches!(e, KeyError::WrongPassphrase), "{e}");
    }

    #[test]
    fn a_pbkdf2_wrapped_key_as_pbs_can_make_it_opens() {
        // PBS's other kdf; build one with the same layout by hand.
        let key = counting_key();
        let kdf = Kdf::Pbkdf2 {
            iter: 65535,
            salt: vec![7; 32],
        };
        let derived = derive(&kdf, b"passphrase").unwrap();
        let cipher = PbsGcm::new_from_slice(&derived[..]).unwrap();
        let iv = [9u8; 16];
        let mut buf = key.bytes().to_vec();
        let tag = cipher
            .encrypt_in_place_detached(&iv.into(), b"", &mut buf)
            .unwrap();
        let cfg = KeyConfig {
            kdf: Some(kdf),
            created: 0,
            modified: 0,
            data: [&iv[..], &tag[..], &buf[..]].concat(),
            fingerprint: Some(key.fingerprint()),
            hint: None,
        };
        assert_eq!(
            PbsKey::unwrap(&cfg, b"passphrase").unwrap().bytes(),
            key.bytes()
        );
    }

    #[test]
    fn a_recorded_fingerprint_that_does_not_match_is_refused() {
        let mut plain = counting_key().to_plain(0);
        plain.fingerprint = Some(KeyFingerprint::from_bytes([1; 32]));
        let e = PbsKey::from_plain(&plain).unwrap_err();
        assert!(matches!(e, KeyError::Fingerprint { .. }), "{e}");
    }

    #[test]
    fn scrypt_parameters_beyond_pbss_memory_limit_are_refused_before_deriving() {
        let mut wrapped = counting_key().wrap(b"passphrase", None, 0).unwrap();
        wrapped.kdf = Some(Kdf::Scrypt {
            n: 1 << 24,
            r: 8,
            p: 1,
            salt: vec![0; 32],
        });
        let e = PbsKey::unwrap(&wrapped, b"passphrase").unwrap_err();
        assert!(e.to_string().contains("1025 MiB"), "{e}");
    }

    #[test]
    fn scrypt_parameters_costing_days_of_cpu_are_refused() {
        let mut wrapped = counting_key().wrap(b"passphrase", None, 0).unwrap();
        wrapped.kdf = Some(Kdf::Scrypt {
            n: 1 << 19,
            r: 8,
            p: 525_000,
            salt: vec![0; 32],
        });
        let e = PbsKey::unwrap(&wrapped, b"passphrase").unwrap_err();
        assert!(
            e.to_string().contains("costs more than recovery allows"),
            "{e}"
        );
    }

    #[test]
    fn debug_shows_the_fingerprint_not_the_key() {
        let key = PbsKey::from_bytes([0xEE; 32], 0);
        let text = format!("{key:?}");
        assert!(text.contains(&key.fingerprint().to_string()));
        assert!(!text.contains("238"), "{text}");
    }
}

#[cfg(test)]
mod shape_tests {
    use super::*;
    use base64::Engine as _;

    /// The documented `KeyConfig` shape of a scrypt-wrapped key, and nothing else.
    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        kdf: StrictKdf,
        created: String,
        modified: String,
        data: String,
        fingerprint: String,
        hint: String,
    }

    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    enum StrictKdf {
        Scrypt(StrictScrypt),
    }

    #[derive(serde::Deserialize, serde::Serialize)]
    #[serde(deny_unknown_fields)]
    struct StrictScrypt {
        n: u64,
        r: u64,
        p: u64,
        salt: String,
    }

    #[test]
    fn the_wrapped_file_has_exactly_the_documented_keyconfig_shape() {
        let key = PbsKey::from_bytes([5; 32], 1_735_787_045);
        let json = key
            .wrap(b"twelve words here", Some("a hint".into()), 1_735_787_046)
            .unwrap()
            .to_pretty_json();
        let strict: Strict = serde_json::from_str(&json).unwrap();
        let StrictKdf::Scrypt(s) = &strict.kdf;
        assert_eq!((s.n, s.r, s.p), (65536, 8, 1));
        let b64 = base64::engine::general_purpose::STANDARD;
        assert_eq!(b64.decode(&s.salt).unwrap().len(), 32);
        assert_eq!(b64.decode(&strict.data).unwrap().len(), 64);
        assert_eq!(strict.created, "2025-01-02T03:04:05Z");
        assert_eq!(strict.modified, "2025-01-02T03:04:06Z");
        assert_eq!(strict.fingerprint, key.fingerprint().to_string());
        assert_eq!(strict.hint, "a hint");
        // Field order as serde writes PBS's struct.
        let order: Vec<usize> = [
            "\"kdf\"",
            "\"created\"",
            "\"modified\"",
            "\"data\"",
            "\"fingerprint\"",
            "\"hint\"",
        ]
        .iter()
        .map(|f| json.find(f).unwrap())
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{json}");
        // And back: the strict reading re-serialises to the same JSON.
        let again: serde_json::Value = serde_json::to_value(&strict).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<serde_json::Value>(&json).unwrap()
        );
    }
}
