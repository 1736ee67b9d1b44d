//! The serving certificate: loading, validation and hot reload.
//!
//! The certificate chain and key are parsed once into a rustls [`CertifiedKey`] held by a
//! [`CertResolver`]; every handshake takes the current one from an [`ArcSwap`] (no file read
//! per connection). A reload swaps in a new key only when both files parse and the key matches
//! the certificate; otherwise the old one stays, and the failure is logged and counted.
//! Established connections are never touched by a reload: they keep the session they
//! negotiated, and only new handshakes see the new certificate.
//!
//! TLS 1.3 and 1.2 only, ring as the crypto provider, ALPN `http/1.1` (what kube-apiserver
//! speaks to webhooks).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use arc_swap::ArcSwap;
use rustls::{
    ServerConfig,
    crypto::CryptoProvider,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::task::JoinHandle;

use crate::{
    metrics::Metrics,
    reload::{ChangeDetector, spawn_watch},
};

/// Why a certificate or key could not be used. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a PEM certificate chain: {source}", path.display())]
    CertPem {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: no certificate found (expected PEM \"BEGIN CERTIFICATE\" blocks)", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no usable private key found (expected a PEM PKCS#8, PKCS#1 or SEC1 key)", path.display())]
    Key { path: PathBuf },
    #[error("certificate {} and key {} cannot be used together: {source}", cert.display(), key.display())]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("cannot build the TLS configuration: {0}")]
    Config(#[source] rustls::Error),
}

/// The crypto provider of every TLS configuration built here (ring, the one provider of the
/// whole build).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Parses a PEM certificate chain (leaf first) and private key into a [`CertifiedKey`],
/// checking that the key belongs to the leaf certificate.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert_path).map_err(|source| TlsError::Read {
        path: cert_path.to_owned(),
        source,
    })?;
    let key_pem = std::fs::read(key_path).map_err(|source| TlsError::Read {
        path: key_path.to_owned(),
        source,
    })?;
    certified_key_from_pem(&cert_pem, &key_pem, cert_path, key_path)
}

/// [`load_certified_key`] on in-memory PEM; the paths only name the inputs in errors.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::CertPem {
            path: cert_path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    // The parse error of a key file is deliberately dropped: it could quote key bytes.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| TlsError::Key {
        path: key_path.to_owned(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|source| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })
}

/// The `notAfter` of a DER X.509 certificate, as Unix seconds; `None` when it does not parse.
pub fn not_after(cert: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// Hands the current certificate to every handshake; [`CertResolver::set`] swaps it.
pub struct CertResolver {
    current: ArcSwap<CertifiedKey>,
}

impl fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl CertResolver {
    pub fn new(key: CertifiedKey) -> Self {
        Self {
            current: ArcSwap::from_pointee(key),
        }
    }

    pub fn set(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }

    /// `notAfter` of the leaf certificate in use, as Unix seconds.
    pub fn not_after(&self) -> Option<i64> {
        not_after(self.current.load().cert.first()?)
    }

    /// The leaf certificate in use (DER).
    pub fn leaf(&self) -> CertificateDer<'static> {
        self.current.load().cert[0].clone()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server-side TLS configuration: TLS 1.3 and 1.2, ALPN `http/1.1`, certificates from
/// `resolver`.
pub fn server_config(resolver: Arc<CertResolver>) -> Result<ServerConfig, TlsError> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Reloads `cert`/`key` into `resolver`, keeping the old pair when the new one is unusable.
pub fn reload(cert: &Path, key: &Path, resolver: &CertResolver, metrics: &Metrics) -> Result<(), TlsError> {
    match load_certified_key(cert, key) {
        Ok(new) => {
            resolver.set(new);
            metrics.certificate_reload(true);
            metrics.set_certificate_expiry(resolver.not_after());
            tracing::info!(cert = %cert.display(), "serving certificate reloaded");
            Ok(())
        }
        Err(error) => {
            metrics.certificate_reload(false);
            tracing::error!(%error, "serving certificate reload rejected; keeping the previous certificate");
            Err(error)
        }
    }
}

/// Watches the certificate and key files and reloads them on every settled change.
pub fn watch(
    cert: PathBuf,
    key: PathBuf,
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
    interval: Duration,
) -> JoinHandle<()> {
    let detector = ChangeDetector::new(vec![cert.clone(), key.clone()]);
    spawn_watch(detector, interval, move || {
        let _ = reload(&cert, &key, &resolver, &metrics);
    })
}

/// A CA and a certificate it signed, generated in memory with rcgen (ECDSA P-256), for the
/// demo and the tests. PEM throughout.
#[derive(Clone)]
pub struct GeneratedCert {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for GeneratedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedCert").finish_non_exhaustive()
    }
}

/// Generates a fresh CA named `ca_name` and a serving certificate for `names` (DNS names or IP
/// addresses), valid for a day.
pub fn generate(ca_name: &str, names: &[&str]) -> Result<GeneratedCert, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.distinguished_name.push(DnType::CommonName, ca_name);
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = std::time::SystemTime::now();
    ca_params.not_before = (now - Duration::from_secs(3600)).into();
    ca_params.not_after = (now + Duration::from_secs(86_400)).into();
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let ca_pem = ca_cert.pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let leaf_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().copied().unwrap_or("localhost"));
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + Duration::from_secs(86_400)).into();
    let cert = params.signed_by(&leaf_key, &issuer)?;
    Ok(GeneratedCert {
        ca_pem,
        cert_pem: cert.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_checks_pairs() {
        let a = generate("test ca", &["localhost", "127.0.0.1"]).unwrap();
        let b = generate("test ca", &["localhost"]).unwrap();
        let (c, k) = (Path::new("tls.crt"), Path::new("tls.key"));
        certified_key_from_pem(a.cert_pem.as_bytes(), a.key_pem.as_bytes(), c, k).unwrap();
        let err = certified_key_from_pem(a.cert_pem.as_bytes(), b.key_pem.as_bytes(), c, k).unwrap_err();
        assert!(matches!(err, TlsError::Mismatch { .. }), "{err}");
        let err = certified_key_from_pem(b"", a.key_pem.as_bytes(), c, k).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        let err = certified_key_from_pem(a.cert_pem.as_bytes(), b"junk", c, k).unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err}");
        // The key itself is never part of an error message.
        let err = certified_key_from_pem(a.key_pem.as_bytes(), a.key_pem.as_bytes(), c, k).unwrap_err();
        assert!(!err.to_string().contains("PRIVATE"), "{err}");
    }

    #[test]
    fn reads_not_after() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 15);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(not_after(&der), Some(1_941_840_000), "2031-07-15T00:00:00Z");
        params.not_after = rcgen::date_time_ymd(2051, 1, 2);
        let der = params.self_signed(&key).unwrap().der().to_vec();
        assert_eq!(not_after(&der), Some(2_556_230_400), "GeneralizedTime after 2049");
        assert_eq!(not_after(b"\x30\x03\x02\x01\x00"), None);
        assert_eq!(not_after(&der[..der.len() / 2]), None);
    }

    #[test]
    fn missing_files_name_the_path() {
        let err = load_certified_key(
            Path::new("/nonexistent/tls.crt"),
            Path::new("/nonexistent/tls.key"),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/tls.crt"), "{err}");
    }
}
