//! Per-run TLS: the controller makes a fresh self-signed certificate for every run, hands the
//! certificate and key to its agents, and accepts only that exact certificate when it dials them.
//!
//! Pinning one certificate is simpler and stronger than a CA: there is no chain to validate, no
//! name to match, and a certificate from another run (or anyone else) is refused.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The name in every agent certificate (and the SNI the controller sends).
pub const AGENT_SERVER_NAME: &str = "liveload-agent";

/// What an agent needs to serve TLS: its certificate and private key, PEM-encoded.
#[derive(Clone)]
pub struct AgentTls {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM. A secret: never logged.
    pub key_pem: String,
}

/// The certificate the controller accepts from its agents.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin {
    der: Vec<u8>,
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pin(sha256:{})", self.fingerprint())
    }
}

impl Pin {
    /// SHA-256 of the certificate, hex: what a user compares by eye.
    pub fn fingerprint(&self) -> String {
        Sha256::digest(&self.der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// Make a fresh certificate for one run: the agents' material and the controller's pin.
pub fn generate_run_certificate() -> Result<(AgentTls, Pin)> {
    let certified = rcgen::generate_simple_self_signed(vec![AGENT_SERVER_NAME.to_string()])
        .map_err(|e| Error::RunFailed {
            message: format!("could not generate the run's TLS certificate: {e}"),
        })?;
    let agent = AgentTls {
        cert_pem: certified.cert.pem(),
        key_pem: certified.signing_key.serialize_pem(),
    };
    let pin = Pin {
        der: certified.cert.der().to_vec(),
    };
    Ok((agent, pin))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration that trusts exactly the pinned certificate.
pub fn client_config(pin: &Pin) -> Arc<rustls::ClientConfig> {
    let provider = provider();
    let verifier = PinnedVerifier {
        pin: pin.clone(),
        provider: provider.clone(),
    };
    config_with(provider, Arc::new(verifier))
}

/// A client configuration on `provider` whose server certificates `verifier` judges.
fn config_with(
    provider: Arc<CryptoProvider>,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Arc<rustls::ClientConfig> {
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Arc::new(config)
}

/// A rustls client configuration for an agent behind a TLS-terminating proxy (Fly's edge): the
/// proxy's certificate is verified like any HTTPS site's, with the system's roots plus
/// `proxy.extra_roots_pem`.
pub fn proxy_client_config(proxy: &crate::backend::ProxyTls) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let bad = |message: String| Error::InvalidOption {
        option: "proxy TLS roots".into(),
        message,
    };
    let mut roots = Vec::new();
    for pem in &proxy.extra_roots_pem {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.push(cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?);
        }
    }
    let provider = provider();
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(roots, provider.clone())
            .map_err(|e| bad(format!("cannot load the system's root certificates: {e}")))?;
    Ok(config_with(provider, Arc::new(verifier)))
}

/// The SNI / server name the controller uses when dialing an agent.
pub fn agent_server_name() -> ServerName<'static> {
    ServerName::try_from(AGENT_SERVER_NAME).expect("a valid DNS name")
}

#[derive(Debug)]
struct PinnedVerifier {
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Constant time is not needed here: the certificate is public; only equality matters.
        if end_entity.as_ref() == self.pin.der.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the agent presented a certificate that is not this run's".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_gets_its_own_certificate() {
        let (a, pin_a) = generate_run_certificate().unwrap();
        let (_, pin_b) = generate_run_certificate().unwrap();
        assert_ne!(pin_a, pin_b);
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.key_pem.contains("PRIVATE KEY"));
        assert_eq!(pin_a.fingerprint().len(), 64);
    }
}
