//! The rustls configuration handed to reqwest: ring provider, TLS 1.2+, our own trust roots.
//!
//! System roots come from `rustls-native-certs` (the platform bundle: `SSL_CERT_FILE`,
//! `SSL_CERT_DIR`, then the usual `/etc/ssl` locations). It is chosen over `webpki-roots` for
//! size: reqwest's rustls support already links it, while `webpki-roots` would compile ~150
//! trust anchors (a few hundred KiB) into the static agent. On a `FROM scratch` image, ship a CA
//! bundle or use [`CaMode::Replace`] with the Password Safe CA. System roots are read only in
//! [`CaMode::Add`], and when a bundle is given only if a server's certificate does not chain to
//! it (reading the system store costs milliseconds, a large part of the agent's start budget).

use std::sync::{Arc, OnceLock};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject};

use crate::{
    config::{CaMode, TlsOptions},
    error::Error,
};

fn cfg_err(what: &str, reason: impl Into<String>) -> Error {
    Error::invalid_input(what, reason)
}

/// Parses every certificate of a PEM bundle; at least one is required.
pub(crate) fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let mut certs = Vec::new();
    for (i, c) in CertificateDer::pem_slice_iter(pem).enumerate() {
        certs.push(c.map_err(|e| cfg_err(what, format!("PEM section {} is unreadable: {e}", i + 1)))?);
    }
    if certs.is_empty() {
        return Err(cfg_err(what, "no CERTIFICATE section found"));
    }
    Ok(certs)
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!(error = %e, "system CA store: unreadable entry");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system CA certificates loaded");
    roots
}

fn bundle_roots(pem: &[u8]) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in parse_certs(pem, "CA bundle")?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            cfg_err(
                "CA bundle",
                format!("certificate {} is not a usable CA: {e}", i + 1),
            )
        })?;
    }
    Ok(roots)
}

fn webpki(roots: RootCertStore, provider: &Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, Error> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| cfg_err("TLS trust", e.to_string()))
}

/// The server certificate verifier for `opts` (verification on).
///
/// - `Replace`: the bundle only.
/// - `Add` without a bundle: the system roots, read now (so a system without any is reported by
///   [`crate::Client::new`]).
/// - `Add` with a bundle: the bundle first; the system roots are read only if a server is not
///   signed by the bundle (the usual case, an internal CA, never pays for reading the system
///   store: several milliseconds of a short-lived agent's start).
fn verifier(opts: &TlsOptions, provider: &Arc<CryptoProvider>) -> Result<Arc<dyn ServerCertVerifier>, Error> {
    match (opts.ca_mode, &opts.ca_bundle_pem) {
        (CaMode::Replace, None) => Err(cfg_err("CA bundle", "CA mode Replace needs a CA bundle")),
        (CaMode::Replace, Some(pem)) => Ok(webpki(bundle_roots(pem)?, provider)?),
        (CaMode::Add, None) => {
            let roots = system_roots();
            if roots.is_empty() {
                return Err(cfg_err(
                    "TLS trust",
                    "no trusted CA certificates: the system has none and no CA bundle was given",
                ));
            }
            Ok(webpki(roots, provider)?)
        }
        (CaMode::Add, Some(pem)) => {
            let bundle = bundle_roots(pem)?;
            Ok(Arc::new(BundleThenSystem {
                bundle: webpki(bundle.clone(), provider)?,
                bundle_roots: bundle,
                combined: OnceLock::new(),
                provider: provider.clone(),
            }))
        }
    }
}

/// Verifies against the bundle, then (lazily built) system roots plus bundle.
#[derive(Debug)]
struct BundleThenSystem {
    bundle: Arc<WebPkiServerVerifier>,
    bundle_roots: RootCertStore,
    combined: OnceLock<Result<Arc<WebPkiServerVerifier>, String>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for BundleThenSystem {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .bundle
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => {}
            other => return other,
        }
        let combined = self.combined.get_or_init(|| {
            let mut roots = system_roots();
            roots.roots.extend(self.bundle_roots.roots.iter().cloned());
            webpki(roots, &self.provider).map_err(|e| e.to_string())
        });
        match combined {
            Ok(v) => v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
            Err(e) => Err(rustls::Error::General(e.clone())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.bundle.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.bundle.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.bundle.supported_verify_schemes()
    }
}

/// Builds the client TLS configuration.
pub(crate) fn client_config(opts: &TlsOptions) -> Result<ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| cfg_err("TLS", e.to_string()))?;
    let builder = if opts.verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(verifier(opts, &provider)?)
    } else {
        tracing::warn!(
            "TLS certificate verification is DISABLED: the Password Safe server is not authenticated \
             and credentials can be intercepted; set a CA bundle instead"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    };
    let mut config = match &opts.client_identity {
        Some(id) => builder
            .with_client_auth_cert(id.chain().to_vec(), id.key())
            .map_err(|e| {
                cfg_err(
                    "client certificate",
                    format!("does not match its key or is unusable: {e}"),
                )
            })?,
        None => builder.with_no_client_auth(),
    };
    // HTTP/2 when the server offers it (IIS does): the calls of a session then share one
    // connection, however many are in flight. HTTP/1.1 otherwise (an HTTP/1.1-only proxy).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Accepts any server certificate but still checks handshake signatures (so the connection is
/// at least bound to the presented key).
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientIdentity;
    use rustls_pki_types::PrivateKeyDer;

    #[test]
    fn replace_without_bundle_is_an_error() {
        let opts = TlsOptions {
            ca_mode: CaMode::Replace,
            ..TlsOptions::default()
        };
        let e = client_config(&opts).unwrap_err().to_string();
        assert!(e.contains("needs a CA bundle"), "{e}");
    }

    #[test]
    fn garbage_bundle_is_an_error() {
        let opts = TlsOptions {
            ca_mode: CaMode::Replace,
            ca_bundle_pem: Some(b"not a pem".to_vec()),
            ..TlsOptions::default()
        };
        let e = client_config(&opts).unwrap_err().to_string();
        assert!(e.contains("no CERTIFICATE section"), "{e}");
    }

    #[test]
    fn verify_off_needs_no_roots() {
        let opts = TlsOptions {
            verify: false,
            ca_mode: CaMode::Replace,
            ..TlsOptions::default()
        };
        assert!(client_config(&opts).is_ok());
    }

    #[test]
    fn bad_client_key_is_an_error_without_echo() {
        let cert = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let e = ClientIdentity::from_pem(cert, b"SECRETSTUFF")
            .unwrap_err()
            .to_string();
        assert!(e.contains("client key"), "{e}");
        assert!(!e.contains("SECRETSTUFF"), "{e}");
        let encrypted =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nU0VDUkVU\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let e = ClientIdentity::from_pem(cert, encrypted).unwrap_err().to_string();
        assert!(e.contains("encrypted private keys are not supported"), "{e}");
        let e = ClientIdentity::from_der(Vec::new(), PrivateKeyDer::Pkcs8(b"k".to_vec().into()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no certificate"), "{e}");
    }
}
