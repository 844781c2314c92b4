//! TLS trust for the Proxmox VE and PBS API clients.
//!
//! Proxmox hosts serve self-signed certificates, so verification is never disabled wholesale.
//! Three modes, chosen in config:
//! - [`TlsTrust::CaFile`]: full WebPKI verification against the CAs in a PEM file (name checked).
//! - [`TlsTrust::Pinned`]: the server's leaf certificate must hash (SHA-256 over its DER) to the
//!   pin, the form `/nodes` reports as `ssl_fingerprint`. Chain and name are not checked: the pin
//!   is the identity. The handshake signature is still verified, so a stolen certificate without
//!   its key is useless. A mismatch fails the handshake before any request (or token) is sent.
//! - [`TlsTrust::InsecureSkipVerify`]: accepts any certificate; only for loopback endpoints
//!   (local tests), refused for anything else by [`check_endpoint`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// SHA-256 fingerprint of a certificate's DER bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertFingerprint([u8; 32]);

/// Problems with TLS trust settings or material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(
        "fingerprint must be 64 hex digits (colons and either case allowed), got {0} hex digits"
    )]
    FingerprintLength(usize),
    #[error("fingerprint contains '{0}', which is neither a hex digit nor ':'")]
    FingerprintChar(char),
    #[error("cannot read CA file {path}")]
    CaFileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA file {path} holds no usable PEM certificate")]
    CaFileEmpty { path: PathBuf },
    #[error("CA file {path} has an invalid certificate")]
    CaFileInvalid {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "insecure_skip_verify is allowed only for loopback endpoints (127.0.0.0/8, ::1, localhost), not '{0}'"
    )]
    InsecureNotLoopback(String),
    #[error("cannot build the TLS verifier")]
    Verifier(#[source] rustls::client::VerifierBuilderError),
    #[error("TLS protocol setup failed")]
    Protocol(#[source] rustls::Error),
}

impl CertFingerprint {
    /// Hashes a DER certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(Sha256::digest(der).into())
    }

    /// Parses 64 hex digits; `:` separators and upper or lower case are tolerated.
    pub fn parse(text: &str) -> Result<Self, TlsError> {
        let mut digits = Vec::with_capacity(64);
        for c in text.trim().chars() {
            match c {
                ':' => {}
                c if c.is_ascii_hexdigit() => digits.push(c.to_ascii_lowercase() as u8),
                other => return Err(TlsError::FingerprintChar(other)),
            }
        }
        if digits.len() != 64 {
            return Err(TlsError::FingerprintLength(digits.len()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(&digits, &mut out).map_err(|_| TlsError::FingerprintLength(0))?;
        Ok(Self(out))
    }

    /// Lower-case hex without separators (the local API's pin form).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Colon-separated upper-case hex (Proxmox's `ssl_fingerprint` form).
    pub fn to_colon_hex(&self) -> String {
        self.0
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl fmt::Debug for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CertFingerprint({})", self.to_colon_hex())
    }
}

impl fmt::Display for CertFingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_colon_hex())
    }
}

/// How the server's certificate is trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsTrust {
    /// Verify against the CA certificates in this PEM file.
    CaFile(PathBuf),
    /// Accept exactly the leaf certificate with this SHA-256 fingerprint.
    Pinned(CertFingerprint),
    /// Accept any certificate. Loopback endpoints only.
    InsecureSkipVerify,
}

/// Refuses `InsecureSkipVerify` for an endpoint host that is not loopback.
pub fn check_endpoint(trust: &TlsTrust, host: &url_host::Host<'_>) -> Result<(), TlsError> {
    match trust {
        TlsTrust::CaFile(_) | TlsTrust::Pinned(_) => Ok(()),
        TlsTrust::InsecureSkipVerify if host.is_loopback() => Ok(()),
        TlsTrust::InsecureSkipVerify => Err(TlsError::InsecureNotLoopback(host.to_string())),
    }
}

/// Minimal host classification without pulling in a URL crate's host type at this seam.
pub mod url_host {
    use std::fmt;
    use std::net::IpAddr;

    /// The host part of an endpoint URL.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Host<'a> {
        /// A literal IP address.
        Ip(IpAddr),
        /// A DNS name.
        Name(&'a str),
    }

    impl Host<'_> {
        /// 127.0.0.0/8, ::1 or the name `localhost`.
        pub fn is_loopback(&self) -> bool {
            match self {
                Host::Ip(ip) => ip.is_loopback(),
                Host::Name(name) => name.eq_ignore_ascii_case("localhost"),
            }
        }
    }

    impl fmt::Display for Host<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Host::Ip(ip) => write!(f, "{ip}"),
                Host::Name(name) => f.write_str(name),
            }
        }
    }
}

/// The crypto provider used by every felhom TLS endpoint (ring: no build-time C toolchain
/// beyond `cc`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the rustls client configuration for a trust mode.
pub fn client_config(trust: &TlsTrust) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?;
    let algs = provider.signature_verification_algorithms;
    let config = match trust {
        TlsTrust::CaFile(path) => {
            let roots = load_ca_file(path)?;
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(TlsError::Verifier)?;
            builder.with_webpki_verifier(verifier).with_no_client_auth()
        }
        TlsTrust::Pinned(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LeafVerifier {
                pin: Some(*pin),
                algs,
            }))
            .with_no_client_auth(),
        TlsTrust::InsecureSkipVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(LeafVerifier { pin: None, algs }))
            .with_no_client_auth(),
    };
    Ok(config)
}

fn load_ca_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::CaFileRead {
        path: path.to_owned(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|_| TlsError::CaFileEmpty {
            path: path.to_owned(),
        })?;
        roots.add(cert).map_err(|source| TlsError::CaFileInvalid {
            path: path.to_owned(),
            source,
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::CaFileEmpty {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}

/// Checks the handshake signature always, and the leaf certificate's SHA-256 when pinned
/// (`pin: None` is `insecure_skip_verify`, loopback only).
#[derive(Debug)]
struct LeafVerifier {
    pin: Option<CertFingerprint>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for LeafVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let seen = CertFingerprint::of_der(end_entity.as_ref());
        if seen == pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server certificate fingerprint {seen} does not match the pinned {pin}"
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::url_host::Host;
    use super::*;

    const COLON: &str = "CC:7B:03:DC:0F:FA:AC:94:C8:79:35:50:03:3F:FC:CF:CB:2B:49:AE:A7:8A:7D:7C:C7:49:80:9E:3D:EB:92:BC";

    #[test]
    fn fingerprint_accepts_colons_and_either_case() {
        let a = CertFingerprint::parse(COLON).unwrap();
        let b = CertFingerprint::parse(&COLON.replace(':', "").to_lowercase()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_colon_hex(), COLON);
        assert_eq!(a.to_hex(), COLON.replace(':', "").to_lowercase());
    }

    #[test]
    fn fingerprint_errors_say_what_is_wrong() {
        assert_eq!(
            CertFingerprint::parse("AB:CD").unwrap_err().to_string(),
            "fingerprint must be 64 hex digits (colons and either case allowed), got 4 hex digits"
        );
        assert_eq!(
            CertFingerprint::parse(&COLON.replace("CC", "ZZ"))
                .unwrap_err()
                .to_string(),
            "fingerprint contains 'Z', which is neither a hex digit nor ':'"
        );
    }

    #[test]
    fn insecure_is_refused_for_a_lan_address() {
        let lan = Host::Ip("192.0.2.10".parse().unwrap());
        let err = check_endpoint(&TlsTrust::InsecureSkipVerify, &lan).unwrap_err();
        assert!(err.to_string().contains("not '192.0.2.10'"), "{err}");
        assert!(check_endpoint(&TlsTrust::InsecureSkipVerify, &Host::Name("pve.example")).is_err());
    }

    #[test]
    fn insecure_is_allowed_for_loopback() {
        for host in [
            Host::Ip("127.0.0.1".parse().unwrap()),
            Host::Ip("127.3.2.1".parse().unwrap()),
            Host::Ip("::1".parse().unwrap()),
            Host::Name("localhost"),
        ] {
            check_endpoint(&TlsTrust::InsecureSkipVerify, &host).unwrap();
        }
    }

    #[test]
    fn a_missing_ca_file_is_named_in_the_error() {
        let err = client_config(&TlsTrust::CaFile("/nonexistent/ca.pem".into())).unwrap_err();
        assert_eq!(err.to_string(), "cannot read CA file /nonexistent/ca.pem");
    }
}
