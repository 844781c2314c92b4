//! The simulators' TLS identity (PVE and PBS): a throwaway CA and a leaf certificate it
//! signed, like a PVE node's `pve-root-ca.pem` + `pve-ssl.pem`. Clients can trust either the CA
//! (PEM) or pin the leaf by its SHA-256 fingerprint, which `/nodes` reports as
//! `ssl_fingerprint` in PVE's format: colon-separated uppercase hex.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};

/// Errors building the TLS identity.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("Cannot generate certificate")]
    Generate(#[from] rcgen::Error),
    #[error("Cannot build TLS server config")]
    Rustls(#[from] rustls::Error),
}

/// CA + leaf for one simulated node.
pub struct TlsIdentity {
    pub ca_pem: String,
    pub leaf_der: CertificateDer<'static>,
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
    /// Generates a CA and a leaf for `node` (SANs: 127.0.0.1, ::1, localhost, node).
    pub fn generate(node: &str) -> Result<TlsIdentity, TlsError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Proxmox Virtual Environment");
        dn.push(DnType::OrganizationalUnitName, "felhom-pvesim");
        dn.push(DnType::OrganizationName, "PVE Cluster Manager CA");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let mut leaf_params =
            CertificateParams::new(vec!["localhost".to_owned(), node.to_owned()])?;
        leaf_params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        leaf_params
            .subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{node}.felhom.invalid"));
        dn.push(DnType::OrganizationName, "PVE Cluster Node");
        leaf_params.distinguished_name = dn;
        let leaf_key = KeyPair::generate()?;
        let leaf = leaf_params.signed_by(&leaf_key, &ca)?;
        let leaf_der = leaf.der().clone();
        let fingerprint = fingerprint_of(&leaf_der);

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![leaf_der.clone(), ca.der().clone()], key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsIdentity {
            ca_pem: ca.pem(),
            leaf_der,
            fingerprint,
            server_config: Arc::new(config),
        })
    }
}

/// SHA-256 of a DER certificate as `AA:BB:…` (PVE's `ssl_fingerprint` format).
pub fn fingerprint_of(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `der` as a PEM block with the given label (base64 in 64-character lines).
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
