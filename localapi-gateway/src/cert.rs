//! The gateway's self-signed TLS identity and the two pins clients check it by.
//!
//! Clients verify no chain and no name: they compare the SHA-256 of the leaf certificate's DER
//! with the pin from their bootstrap file, or (curl `--pinnedpubkey`) the SHA-256 of its
//! SubjectPublicKeyInfo. So the leaf must stay the same across restarts: it is generated once
//! (ECDSA P-256, rcgen) and persisted in the state directory — key `localapi-key.pem` mode 0600,
//! certificate `localapi-cert.pem` mode 0644 — and replaced only by [`rotate`], an explicit
//! operator action that invalidates every guest's pin.
//!
//! Limits: a key file readable by group or others is refused (not silently fixed: someone may
//! have copied it already); ownership is left to the state directory's own permissions. Files
//! are written to a temporary name and renamed, key first; a crash between the two renames
//! leaves a key that does not match the certificate, which [`load`] reports instead of serving.
//! The certificate uses rcgen's default validity (1975–4096): pinning clients ignore dates.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

/// File name of the persisted certificate (PEM) inside the state directory.
pub const CERT_FILE: &str = "localapi-cert.pem";
/// File name of the persisted private key (PKCS#8 PEM) inside the state directory.
pub const KEY_FILE: &str = "localapi-key.pem";

/// The two public fingerprints of the gateway's leaf certificate (never secret).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Pins {
    /// SHA-256 of the leaf certificate's DER bytes, 64 lowercase hex digits (bootstrap
    /// `local_api_pin_sha256`).
    pub leaf_sha256_hex: String,
    /// SHA-256 of the leaf's SubjectPublicKeyInfo DER, standard base64 (bootstrap
    /// `local_api_pin_spki_sha256`; curl `--pinnedpubkey sha256//<this>`).
    pub spki_sha256_base64: String,
}

/// The loaded certificate and key, with their pins.
pub struct ServerIdentity {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    pins: Pins,
}

/// Problems loading, creating or parsing the gateway's certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot create state directory {path}")]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "key file {path} has mode {mode:04o}; it must not be accessible by group or others (chmod 600 it, or rotate the certificate if it may have leaked)"
    )]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("{path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "only one of {present} and {missing} exists; refusing to generate a new identity over half of an old one (restore the missing file or rotate)"
    )]
    HalfIdentity { present: PathBuf, missing: PathBuf },
    #[error("{path} holds no usable PEM {what}")]
    Pem { path: PathBuf, what: &'static str },
    #[error("certificate {path} cannot be parsed")]
    Parse {
        path: PathBuf,
        #[source]
        source: webpki::Error,
    },
    #[error("key {key} does not belong to certificate {cert} (rotate to generate a fresh pair)")]
    Mismatch { key: PathBuf, cert: PathBuf },
    #[error("cannot generate the certificate")]
    Generate(#[source] rcgen::Error),
}

impl Pins {
    /// Computes both pins from a DER certificate.
    pub fn of_cert_der(der: &CertificateDer<'_>) -> Result<Self, webpki::Error> {
        let parsed = webpki::EndEntityCert::try_from(der)?;
        let spki = parsed.subject_public_key_info();
        Ok(Self {
            leaf_sha256_hex: hex::encode(Sha256::digest(der.as_ref())),
            spki_sha256_base64: base64::engine::general_purpose::STANDARD
                .encode(Sha256::digest(spki.as_ref())),
        })
    }
}

impl ServerIdentity {
    /// The pins of this identity.
    pub fn pins(&self) -> &Pins {
        &self.pins
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The rustls form, for the TLS server.
    pub(crate) fn certified_key(&self) -> Result<Arc<CertifiedKey>, rustls::Error> {
        let provider = rustls::crypto::ring::default_provider();
        CertifiedKey::from_der(vec![self.cert.clone()], self.key.clone_key(), &provider)
            .map(Arc::new)
    }
}

impl std::fmt::Debug for ServerIdentity {
    // The private key never appears in Debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerIdentity")
            .field("pins", &self.pins)
            .finish_non_exhaustive()
    }
}

/// Loads the persisted identity from `state_dir`, generating and persisting one if neither
/// file exists yet.
pub fn load_or_create(state_dir: &Path) -> Result<ServerIdentity, CertError> {
    let (cert_path, key_path) = paths(state_dir);
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => load(state_dir),
        (false, false) => create(state_dir),
        (true, false) => Err(CertError::HalfIdentity {
            present: cert_path,
            missing: key_path,
        }),
        (false, true) => Err(CertError::HalfIdentity {
            present: key_path,
            missing: cert_path,
        }),
    }
}

/// Loads the persisted identity; both files must exist and the key must be private.
pub fn load(state_dir: &Path) -> Result<ServerIdentity, CertError> {
    let (cert_path, key_path) = paths(state_dir);
    let key_pem = read_private(&key_path)?;
    let cert_pem = read_file(&cert_path)?;
    let cert = CertificateDer::from_pem_slice(&cert_pem).map_err(|_| CertError::Pem {
        path: cert_path.clone(),
        what: "certificate",
    })?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| CertError::Pem {
        path: key_path.clone(),
        what: "private key",
    })?;
    let pins = Pins::of_cert_der(&cert).map_err(|source| CertError::Parse {
        path: cert_path.clone(),
        source,
    })?;
    let identity = ServerIdentity { cert, key, pins };
    if identity.certified_key().is_err() {
        return Err(CertError::Mismatch {
            key: key_path,
            cert: cert_path,
        });
    }
    Ok(identity)
}

/// Replaces the persisted identity with a freshly generated one (operator action: every guest
/// needs the new pins). A running gateway picks it up through
/// [`crate::RunningGateway::rotate_certificate`].
pub fn rotate(state_dir: &Path) -> Result<ServerIdentity, CertError> {
    create(state_dir)
}

fn create(state_dir: &Path) -> Result<ServerIdentity, CertError> {
    fs::create_dir_all(state_dir).map_err(|source| CertError::StateDir {
        path: state_dir.to_owned(),
        source,
    })?;
    let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CertError::Generate)?;
    // No client checks the name; the SAN only makes the certificate self-describing.
    let mut params = CertificateParams::new(vec!["localapi.felhom.invalid".to_owned()])
        .map_err(CertError::Generate)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "felhom local API");
    params.distinguished_name = dn;
    let cert = params.self_signed(&key_pair).map_err(CertError::Generate)?;

    let (cert_path, key_path) = paths(state_dir);
    write_atomically(&key_path, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_atomically(&cert_path, cert.pem().as_bytes(), 0o644)?;
    load(state_dir)
}

fn paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    (state_dir.join(CERT_FILE), state_dir.join(KEY_FILE))
}

fn read_file(path: &Path) -> Result<Vec<u8>, CertError> {
    fs::read(path).map_err(|source| CertError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Reads the key, refusing it if group or others have any access. The mode is checked on the
/// opened file, so it is the mode of what was read.
fn read_private(path: &Path) -> Result<Vec<u8>, CertError> {
    let read_err = |source| CertError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
    if !meta.is_file() {
        return Err(CertError::NotAFile {
            path: path.to_owned(),
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CertError::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let mut out = Vec::new();
    file.read_to_end(&mut out).map_err(read_err)?;
    Ok(out)
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let tmp = path.with_extension("pem.tmp");
    let write_err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    // A leftover from an interrupted write may have any mode; never reuse it.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(write_err(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(write_err)?;
    // The umask may have removed bits (0644 → 0600 under UMask=0077); set the intended mode.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(write_err)?;
    file.write_all(contents).map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    fs::rename(&tmp, path).map_err(write_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_have_the_documented_forms() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create(dir.path()).unwrap();
        let pins = id.pins();
        assert_eq!(pins.leaf_sha256_hex.len(), 64);
        assert!(
            pins.leaf_sha256_hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        let spki = base64::engine::general_purpose::STANDARD
            .decode(&pins.spki_sha256_base64)
            .unwrap();
        assert_eq!(spki.len(), 32);
    }

    #[test]
    fn spki_pin_is_over_the_key_pairs_subject_public_key_info() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create(dir.path()).unwrap();
        let key_pem = fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
        let spki =
            rcgen::PublicKeyData::subject_public_key_info(&KeyPair::from_pem(&key_pem).unwrap());
        assert_eq!(
            id.pins().spki_sha256_base64,
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&spki))
        );
    }

    #[test]
    fn files_get_0600_key_and_0644_cert() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let mode = |f: &str| {
            fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(KEY_FILE), 0o600);
        assert_eq!(mode(CERT_FILE), 0o644);
    }

    #[test]
    fn half_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        fs::remove_file(dir.path().join(KEY_FILE)).unwrap();
        let err = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.starts_with("only one of"), "{err}");
    }

    #[test]
    fn key_of_another_certificate_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        load_or_create(a.path()).unwrap();
        load_or_create(b.path()).unwrap();
        fs::copy(b.path().join(KEY_FILE), a.path().join(KEY_FILE)).unwrap();
        fs::set_permissions(a.path().join(KEY_FILE), fs::Permissions::from_mode(0o600)).unwrap();
        let err = load(a.path()).unwrap_err().to_string();
        assert!(err.contains("does not belong to certificate"), "{err}");
    }

    #[test]
    fn debug_output_has_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let id = load_or_create(dir.path()).unwrap();
        let shown = format!("{id:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        assert!(shown.contains(&id.pins().leaf_sha256_hex));
    }
}
