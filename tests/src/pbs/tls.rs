//! The PBS simulator's TLS identity: one self-signed certificate, like the `proxy.pem` a fresh
//! Proxmox Backup Server generates (PBS has no cluster CA). Clients pin its SHA-256 fingerprint,
//! which PBS shows (`proxmox-backup-manager cert info`) as lower-case colon-separated hex.
//!
//! Small on purpose: the PVE simulator carries its own CA-based helper; the two can be merged
//! once both have landed.

use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair, SanType};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// Errors building the TLS identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Cannot generate the certificate")]
    Generate(#[from] rcgen::Error),
    #[error("Cannot build the TLS server config")]
    Rustls(#[from] rustls::Error),
}

/// The certificate and server config of one simulated PBS.
pub struct TlsIdentity {
    pub cert_der: CertificateDer<'static>,
    pub cert_pem: String,
    /// `aa:bb:…` (PBS's display form).
    pub fingerprint: String,
    pub server_config: Arc<ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// A self-signed certificate for `node` (SANs: localhost, node, 127.0.0.1, ::1).
    pub fn generate(node: &str) -> Result<TlsIdentity, TlsError> {
        let mut params = CertificateParams::new(vec!["localhost".to_owned(), node.to_owned()])?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{node}.felhom.invalid"));
        dn.push(DnType::OrganizationName, "Proxmox Backup Server");
        params.distinguished_name = dn;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let cert_der = cert.der().clone();
        let fingerprint = fingerprint_of(&cert_der);
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![cert_der.clone()], key_der)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIdentity {
            cert_pem: cert.pem(),
            cert_der,
            fingerprint,
            server_config: Arc::new(config),
        })
    }
}

/// SHA-256 of a DER certificate as `aa:bb:…`.
pub fn fingerprint_of(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
