//! The pure part of the self-managed certificates: what the Secret holds, what the webhook
//! configuration's `caBundle` must be, and which rotation step is due. No IO and no clock: the
//! caller passes `now` (Unix seconds) and the freshly generated material.
//!
//! **The Secret** (type `kubernetes.io/tls`, so anything that reads TLS Secrets understands its
//! first three keys):
//!
//! | key | content |
//! |---|---|
//! | `tls.crt`, `tls.key` | the serving certificate every replica serves, and its key |
//! | `ca.crt` | the trust bundle = the `caBundle` of the webhook configuration: the CA that signed `tls.crt` first, then the next CA of a rotation in progress, then retired CAs still in their overlap |
//! | `ca.key` | key of the CA that signed `tls.crt` (to reissue it when the names change) |
//! | `next.crt`, `next.key`, `next-ca.key` | a rotation in progress: the next serving certificate, its key, and its CA's key (the CA itself is the second entry of `ca.crt`) |
//!
//! Two annotations carry the rotation's clock: `ps-injector.io/next-trusted-since` (when the
//! bundle with the next CA was confirmed in the webhook configuration) and
//! `ps-injector.io/switched-at` (when the serving certificate last changed CA).
//!
//! **A rotation** ([`plan`]), led by one replica:
//! 1. [`Step::Renew`] at half the certificate's lifetime: a new CA and a serving certificate
//!    signed by it are stored as `next`; the bundle now holds both CAs.
//! 2. [`Step::Publish`]: once the webhook configuration holds that bundle (the leader patches it
//!    before every step), the time is recorded.
//! 3. [`Step::Switch`] after [`Timing::propagation`]: the API servers read webhook
//!    configurations through an informer, so the leader waits that long after the patch was
//!    confirmed before any replica serves a certificate of the new CA. Then `tls.crt` becomes
//!    the next certificate; the old CA is retired but stays in the bundle.
//! 4. [`Step::Retire`] after [`Timing::overlap`]: every replica has reloaded the new
//!    certificate through its watch long before; the old CA leaves the bundle.
//!
//! At every moment each certificate a replica may serve chains to a CA in the bundle the API
//! servers have had for at least the propagation time (see the `rotations_never_break_trust`
//! test).

use std::{collections::BTreeMap, fmt, net::IpAddr, time::Duration};

use base64::Engine as _;
use rustls_pki_types::{CertificateDer, pem::PemObject};

/// Keys of the Secret.
pub const TLS_CRT: &str = "tls.crt";
pub const TLS_KEY: &str = "tls.key";
pub const CA_CRT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const NEXT_CRT: &str = "next.crt";
pub const NEXT_KEY: &str = "next.key";
pub const NEXT_CA_KEY: &str = "next-ca.key";
/// Annotations of the Secret (RFC 3339 would need a date library here; Unix seconds are as
/// readable with `date -d @N`).
pub const ANN_NEXT_TRUSTED_SINCE: &str = "ps-injector.io/next-trusted-since";
pub const ANN_SWITCHED_AT: &str = "ps-injector.io/switched-at";

/// Common name of every CA the webhook generates (the serial number tells them apart).
pub const CA_COMMON_NAME: &str = "ps-injector self-managed CA";

/// Why the Secret's content cannot be used. Never quotes key material.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StateError {
    #[error("key {0} is missing")]
    Missing(&'static str),
    #[error("key {0} is not PEM certificates")]
    BadCertificate(&'static str),
    #[error("key {0} is not a PEM private key")]
    BadKey(&'static str),
    #[error("annotation {0} is not a Unix time in seconds")]
    BadAnnotation(&'static str),
    #[error("{0} and its key do not belong together")]
    Mismatch(&'static str),
}

/// A private key in PEM. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyPem(pub String);

impl fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyPem(..)")
    }
}

/// A certificate and its private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyed {
    pub cert: CertificateDer<'static>,
    pub key: KeyPem,
}

/// The validity of a certificate, Unix seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    pub fn of(cert: &[u8]) -> Option<Self> {
        let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
        Some(Self {
            not_before: c.validity().not_before.timestamp(),
            not_after: c.validity().not_after.timestamp(),
        })
    }

    /// Half-way through the lifetime: when a rotation starts.
    pub fn half_life(&self) -> i64 {
        self.not_before + (self.not_after - self.not_before) / 2
    }
}

/// A rotation in progress: the next CA is in the bundle, its certificate not served yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Next {
    pub ca: Keyed,
    pub serving: Keyed,
    /// When the bundle holding `ca` was confirmed in the webhook configuration.
    pub trusted_since: Option<i64>,
}

/// Everything the Secret holds, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertState {
    /// The CA that signed `serving`.
    pub ca: Keyed,
    /// What every replica serves.
    pub serving: Keyed,
    pub next: Option<Next>,
    /// CAs of earlier serving certificates, trusted until the overlap ends.
    pub retired: Vec<CertificateDer<'static>>,
    pub switched_at: Option<i64>,
}

/// The names the serving certificate must carry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Names {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl Names {
    /// The Service's names as clients use them (`svc`, `svc.ns`, `svc.ns.svc`), plus extras.
    pub fn for_service(service: &str, namespace: &str, extra_dns: &[String], ips: &[IpAddr]) -> Self {
        let mut dns = vec![
            service.to_owned(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
        ];
        for name in extra_dns {
            if !dns.contains(name) {
                dns.push(name.clone());
            }
        }
        Self {
            dns,
            ips: ips.to_vec(),
        }
    }

    fn all(&self) -> Vec<String> {
        self.dns
            .iter()
            .cloned()
            .chain(self.ips.iter().map(IpAddr::to_string))
            .collect()
    }

    /// Whether `cert` names exactly these DNS names and IP addresses (in any order).
    pub fn match_cert(&self, cert: &[u8]) -> bool {
        let Ok((_, c)) = x509_parser::parse_x509_certificate(cert) else {
            return false;
        };
        let Ok(Some(san)) = c.subject_alternative_name() else {
            return false;
        };
        let (mut dns, mut ips) = (Vec::new(), Vec::new());
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(n) => dns.push(n.to_string()),
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                    16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                    _ => return false,
                },
                _ => return false,
            }
        }
        let (mut want_dns, mut want_ips) = (self.dns.clone(), self.ips.clone());
        for v in [&mut dns, &mut want_dns] {
            v.sort();
            v.dedup();
        }
        for v in [&mut ips, &mut want_ips] {
            v.sort();
            v.dedup();
        }
        dns == want_dns && ips == want_ips
    }
}

/// How long certificates live and how long each rotation step waits, all from one validity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub validity: Duration,
}

impl Timing {
    /// The shortest validity accepted: below it the waits of a rotation no longer fit into half
    /// a lifetime with a margin.
    pub const MIN_VALIDITY: Duration = Duration::from_secs(120);

    pub fn new(validity: Duration) -> Result<Self, String> {
        if validity < Self::MIN_VALIDITY {
            return Err(format!(
                "a validity of {} is too short: at least {} (a rotation needs time to publish the new CA)",
                humantime::format_duration(validity),
                humantime::format_duration(Self::MIN_VALIDITY),
            ));
        }
        Ok(Self { validity })
    }

    /// How far back `notBefore` is set, for clocks slightly behind ours.
    pub fn backdate(&self) -> Duration {
        (self.validity / 24).min(Duration::from_secs(300))
    }

    /// Wait between confirming the bundle with a new CA and serving a certificate of that CA:
    /// the API servers' informers must have seen the patch.
    pub fn propagation(&self) -> Duration {
        (self.validity / 12).min(Duration::from_secs(60))
    }

    /// How long a retired CA stays in the bundle after the switch: every replica reloads the new
    /// certificate through its watch within seconds; this is the margin for a slow one.
    pub fn overlap(&self) -> Duration {
        (self.validity / 6).min(Duration::from_secs(3600))
    }

    /// How often the leader looks at the state (and renews its Lease).
    pub fn tick(&self) -> Duration {
        (self.validity / 60).clamp(Duration::from_secs(1), Duration::from_secs(2))
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// What the leader does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing is due before `until` (Unix seconds).
    Wait { until: i64 },
    /// Generate the next CA and its serving certificate; the bundle gains the new CA.
    Renew,
    /// The webhook configuration holds the bundle with the next CA: record since when.
    Publish,
    /// The next CA has been trusted long enough: serve its certificate, retire the old CA.
    Switch,
    /// The overlap is over: drop the retired CAs from the bundle.
    Retire,
    /// The serving certificate does not carry the configured names: reissue it under the same
    /// CA (the bundle does not change).
    Reissue,
    /// The serving certificate or its CA has expired (the webhook was down past the end of the
    /// lifetime): nothing is left to overlap with, start over with a new CA.
    Replace,
}

/// The next step for `state` at `now`.
pub fn plan(state: &CertState, names: &Names, now: i64, timing: &Timing) -> Step {
    let (Some(ca), Some(serving)) = (Validity::of(&state.ca.cert), Validity::of(&state.serving.cert)) else {
        return Step::Replace;
    };
    if now >= ca.not_after.min(serving.not_after) {
        return Step::Replace;
    }
    if let Some(next) = &state.next {
        return match next.trusted_since {
            None => Step::Publish,
            Some(t) if now >= t + secs(timing.propagation()) => Step::Switch,
            Some(t) => Step::Wait {
                until: t + secs(timing.propagation()),
            },
        };
    }
    let retire_at = (!state.retired.is_empty())
        .then(|| state.switched_at.unwrap_or(i64::MIN / 2) + secs(timing.overlap()));
    if let Some(at) = retire_at
        && now >= at
    {
        return Step::Retire;
    }
    if !names.match_cert(&state.serving.cert) {
        return Step::Reissue;
    }
    let renew_at = ca.half_life().min(serving.half_life());
    if now >= renew_at {
        return Step::Renew;
    }
    Step::Wait {
        until: retire_at.map_or(renew_at, |r| r.min(renew_at)),
    }
}

impl CertState {
    /// The trust bundle: the serving CA, the next CA, the retired CAs, without duplicates.
    pub fn bundle(&self) -> Vec<CertificateDer<'static>> {
        let mut out: Vec<CertificateDer<'static>> = vec![self.ca.cert.clone()];
        let next = self.next.iter().map(|n| &n.ca.cert);
        for cert in next.chain(&self.retired) {
            if !out.contains(cert) {
                out.push(cert.clone());
            }
        }
        out
    }

    /// The bundle as PEM, as `ca.crt` and `caBundle` hold it.
    pub fn bundle_pem(&self) -> String {
        self.bundle().iter().map(|c| der_to_pem(c)).collect()
    }

    /// A rotation starts: `ca` and `serving` become the next pair.
    pub fn renewed(mut self, ca: Keyed, serving: Keyed) -> Self {
        self.next = Some(Next {
            ca,
            serving,
            trusted_since: None,
        });
        self
    }

    /// The bundle with the next CA is in the webhook configuration since `now`.
    pub fn published(mut self, now: i64) -> Self {
        if let Some(next) = &mut self.next {
            next.trusted_since.get_or_insert(now);
        }
        self
    }

    /// The next pair is served from `now` on; the old CA stays trusted for the overlap.
    pub fn switched(mut self, now: i64) -> Self {
        if let Some(next) = self.next.take() {
            let old = std::mem::replace(&mut self.ca, next.ca);
            self.serving = next.serving;
            self.retired.retain(|c| *c != old.cert && *c != self.ca.cert);
            self.retired.insert(0, old.cert);
            self.switched_at = Some(now);
        }
        self
    }

    /// The overlap is over.
    pub fn retired_dropped(mut self) -> Self {
        self.retired.clear();
        self
    }

    /// A new serving certificate under the same CA.
    pub fn reissued(mut self, serving: Keyed) -> Self {
        self.serving = serving;
        self
    }

    /// The Secret's `data` and the annotations this state owns.
    pub fn to_secret(&self) -> (BTreeMap<String, Vec<u8>>, BTreeMap<String, String>) {
        let mut data = BTreeMap::new();
        data.insert(TLS_CRT.to_owned(), der_to_pem(&self.serving.cert).into_bytes());
        data.insert(TLS_KEY.to_owned(), self.serving.key.0.clone().into_bytes());
        data.insert(CA_CRT.to_owned(), self.bundle_pem().into_bytes());
        data.insert(CA_KEY.to_owned(), self.ca.key.0.clone().into_bytes());
        let mut annotations = BTreeMap::new();
        if let Some(next) = &self.next {
            data.insert(NEXT_CRT.to_owned(), der_to_pem(&next.serving.cert).into_bytes());
            data.insert(NEXT_KEY.to_owned(), next.serving.key.0.clone().into_bytes());
            data.insert(NEXT_CA_KEY.to_owned(), next.ca.key.0.clone().into_bytes());
            if let Some(t) = next.trusted_since {
                annotations.insert(ANN_NEXT_TRUSTED_SINCE.to_owned(), t.to_string());
            }
        }
        if let Some(t) = self.switched_at {
            annotations.insert(ANN_SWITCHED_AT.to_owned(), t.to_string());
        }
        (data, annotations)
    }

    /// Reads the Secret's `data` and annotations back.
    pub fn from_secret(
        data: &BTreeMap<String, Vec<u8>>,
        annotations: &BTreeMap<String, String>,
    ) -> Result<Self, StateError> {
        let bundle = certs(data, CA_CRT)?;
        let ca_cert = bundle
            .first()
            .cloned()
            .ok_or(StateError::BadCertificate(CA_CRT))?;
        let ca = keyed(ca_cert, data, CA_KEY, CA_CRT)?;
        let serving = keyed(first_cert(data, TLS_CRT)?, data, TLS_KEY, TLS_CRT)?;
        let stamp = |name: &'static str| -> Result<Option<i64>, StateError> {
            annotations
                .get(name)
                .map(|v| {
                    v.trim()
                        .parse::<i64>()
                        .map_err(|_| StateError::BadAnnotation(name))
                })
                .transpose()
        };
        let next = if data.contains_key(NEXT_CRT) {
            // The next CA is the bundle's second entry (see the module docs).
            let next_ca = bundle.get(1).cloned().ok_or(StateError::BadCertificate(CA_CRT))?;
            Some(Next {
                ca: keyed(next_ca, data, NEXT_CA_KEY, CA_CRT)?,
                serving: keyed(first_cert(data, NEXT_CRT)?, data, NEXT_KEY, NEXT_CRT)?,
                trusted_since: stamp(ANN_NEXT_TRUSTED_SINCE)?,
            })
        } else {
            None
        };
        let skip = if next.is_some() { 2 } else { 1 };
        Ok(Self {
            ca,
            serving,
            next,
            retired: bundle.into_iter().skip(skip).collect(),
            switched_at: stamp(ANN_SWITCHED_AT)?,
        })
    }
}

fn raw<'a>(data: &'a BTreeMap<String, Vec<u8>>, key: &'static str) -> Result<&'a [u8], StateError> {
    data.get(key).map(Vec::as_slice).ok_or(StateError::Missing(key))
}

fn certs(
    data: &BTreeMap<String, Vec<u8>>,
    key: &'static str,
) -> Result<Vec<CertificateDer<'static>>, StateError> {
    let certs = CertificateDer::pem_slice_iter(raw(data, key)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| StateError::BadCertificate(key))?;
    if certs.is_empty() || certs.iter().any(|c| Validity::of(c).is_none()) {
        return Err(StateError::BadCertificate(key));
    }
    Ok(certs)
}

fn first_cert(
    data: &BTreeMap<String, Vec<u8>>,
    key: &'static str,
) -> Result<CertificateDer<'static>, StateError> {
    Ok(certs(data, key)?.remove(0))
}

/// Pairs `cert` with the key under `key`, checking that they belong together.
fn keyed(
    cert: CertificateDer<'static>,
    data: &BTreeMap<String, Vec<u8>>,
    key: &'static str,
    cert_key: &'static str,
) -> Result<Keyed, StateError> {
    let pem = std::str::from_utf8(raw(data, key)?).map_err(|_| StateError::BadKey(key))?;
    let pair = rcgen::KeyPair::from_pem(pem).map_err(|_| StateError::BadKey(key))?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(&cert).map_err(|_| StateError::BadCertificate(cert_key))?;
    if parsed.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&pair).as_slice() {
        return Err(StateError::Mismatch(cert_key));
    }
    Ok(Keyed {
        cert,
        key: KeyPem(pem.to_owned()),
    })
}

/// PEM of one DER certificate, 64 columns, ending in a newline.
pub fn der_to_pem(der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// The certificates of a PEM bundle (a `caBundle`), skipping what does not parse.
pub fn parse_bundle(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

// ---- generation (rcgen: random keys, so not pure, but no IO) ---------------------------------

fn ca_params(not_before: i64, not_after: i64) -> Result<rcgen::CertificateParams, rcgen::Error> {
    use rcgen::{BasicConstraints, DnType, IsCa, KeyUsagePurpose};
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = time(not_before);
    params.not_after = time(not_after);
    Ok(params)
}

fn time<T: From<std::time::SystemTime>>(unix: i64) -> T {
    // Certificates generated here are never dated before 1970.
    (std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0))).into()
}

/// A new ECDSA P-256 CA valid from `now - backdate` for `timing.validity`.
pub fn generate_ca(now: i64, timing: &Timing) -> Result<Keyed, rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let cert = ca_params(now - secs(timing.backdate()), now + secs(timing.validity))?.self_signed(&key)?;
    Ok(Keyed {
        cert: cert.der().clone(),
        key: KeyPem(key.serialize_pem()),
    })
}

/// A serving certificate for `names` signed by `ca`, ending with the CA.
pub fn issue_serving(ca: &Keyed, names: &Names, now: i64, timing: &Timing) -> Result<Keyed, rcgen::Error> {
    use rcgen::{DnType, ExtendedKeyUsagePurpose, KeyUsagePurpose};
    let ca_validity = Validity::of(&ca.cert).ok_or(rcgen::Error::CouldNotParseCertificate)?;
    let ca_key = rcgen::KeyPair::from_pem(&ca.key.0)?;
    let issuer = rcgen::Issuer::new(ca_params(ca_validity.not_before, ca_validity.not_after)?, ca_key);
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.all())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.dns.first().map_or("ps-webhook", String::as_str),
    );
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = time(now - secs(timing.backdate()));
    params.not_after = time(ca_validity.not_after);
    let cert = params.signed_by(&key, &issuer)?;
    Ok(Keyed {
        cert: cert.der().clone(),
        key: KeyPem(key.serialize_pem()),
    })
}

/// A first state: a new CA and its serving certificate.
pub fn generate_state(names: &Names, now: i64, timing: &Timing) -> Result<CertState, rcgen::Error> {
    let ca = generate_ca(now, timing)?;
    let serving = issue_serving(&ca, names, now, timing)?;
    Ok(CertState {
        ca,
        serving,
        next: None,
        retired: Vec::new(),
        switched_at: None,
    })
}

/// The state after `step`, generating what it needs. `None` for [`Step::Wait`].
pub fn apply(
    state: CertState,
    step: Step,
    names: &Names,
    now: i64,
    timing: &Timing,
) -> Result<Option<CertState>, rcgen::Error> {
    Ok(Some(match step {
        Step::Wait { .. } => return Ok(None),
        Step::Renew => {
            let ca = generate_ca(now, timing)?;
            let serving = issue_serving(&ca, names, now, timing)?;
            state.renewed(ca, serving)
        }
        Step::Publish => state.published(now),
        Step::Switch => state.switched(now),
        Step::Retire => state.retired_dropped(),
        Step::Reissue => {
            let serving = issue_serving(&state.ca, names, now, timing)?;
            state.reissued(serving)
        }
        Step::Replace => generate_state(names, now, timing)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_900_000_000;

    fn names() -> Names {
        Names::for_service("psi", "ps-system", &[], &["127.0.0.1".parse().unwrap()])
    }

    fn two_minutes() -> Timing {
        Timing::new(Duration::from_secs(120)).unwrap()
    }

    #[test]
    fn timing_is_derived_from_the_validity() {
        let t = two_minutes();
        assert_eq!(
            (t.backdate(), t.propagation(), t.overlap(), t.tick()),
            (
                Duration::from_secs(5),
                Duration::from_secs(10),
                Duration::from_secs(20),
                Duration::from_secs(2)
            )
        );
        let year = Timing::new(Duration::from_secs(365 * 86_400)).unwrap();
        assert_eq!(
            (year.backdate(), year.propagation(), year.overlap()),
            (
                Duration::from_secs(300),
                Duration::from_secs(60),
                Duration::from_secs(3600)
            )
        );
        let err = Timing::new(Duration::from_secs(60)).unwrap_err();
        assert!(err.contains("at least 2m"), "{err}");
    }

    #[test]
    fn serving_certificate_names_the_service_and_chains_to_the_ca() {
        let t = two_minutes();
        let s = generate_state(&names(), T0, &t).unwrap();
        assert!(names().match_cert(&s.serving.cert));
        let other = Names::for_service("psi", "other", &[], &[]);
        assert!(!other.match_cert(&s.serving.cert));
        let v = Validity::of(&s.serving.cert).unwrap();
        assert_eq!((v.not_before, v.not_after), (T0 - 5, T0 + 120));
        assert_eq!(Validity::of(&s.ca.cert).unwrap(), v);
        // webpki verifies the chain the way the API server's Go client would.
        let roots = {
            let mut r = rustls::RootCertStore::empty();
            r.add(s.ca.cert.clone()).unwrap();
            std::sync::Arc::new(r)
        };
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, crate::tls::provider())
                .build()
                .unwrap();
        let at = rustls_pki_types::UnixTime::since_unix_epoch(Duration::from_secs((T0 + 10) as u64));
        for name in ["psi.ps-system.svc", "127.0.0.1"] {
            let server = rustls_pki_types::ServerName::try_from(name).unwrap();
            use rustls::client::danger::ServerCertVerifier;
            verifier
                .verify_server_cert(&s.serving.cert, &[], &server, &[], at)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn secret_round_trip_in_every_phase() {
        let t = two_minutes();
        let n = names();
        let s0 = generate_state(&n, T0, &t).unwrap();
        let s1 = apply(s0.clone(), Step::Renew, &n, T0 + 60, &t).unwrap().unwrap();
        let s2 = s1.clone().published(T0 + 61);
        let s3 = s2.clone().switched(T0 + 71);
        for s in [&s0, &s1, &s2, &s3] {
            let (data, ann) = s.to_secret();
            assert_eq!(&CertState::from_secret(&data, &ann).unwrap(), s);
            assert!(!format!("{s:?}").contains("PRIVATE"), "Debug shows no key");
        }
        assert_eq!(
            s1.bundle(),
            vec![s0.ca.cert.clone(), s1.next.as_ref().unwrap().ca.cert.clone()]
        );
        assert_eq!(
            s3.bundle(),
            vec![s1.next.as_ref().unwrap().ca.cert.clone(), s0.ca.cert.clone()]
        );
        let (data, ann) = s3.to_secret();
        assert_eq!(ann[ANN_SWITCHED_AT], (T0 + 71).to_string());
        assert_eq!(parse_bundle(&data[CA_CRT]), s3.bundle());
    }

    #[test]
    fn broken_secrets_are_named() {
        let t = two_minutes();
        let s = generate_state(&names(), T0, &t).unwrap();
        let other = generate_state(&names(), T0, &t).unwrap();
        let (data, ann) = s.to_secret();
        let mut d = data.clone();
        d.remove(TLS_KEY);
        assert_eq!(
            CertState::from_secret(&d, &ann),
            Err(StateError::Missing(TLS_KEY))
        );
        let mut d = data.clone();
        d.insert(TLS_KEY.into(), other.serving.key.0.clone().into_bytes());
        assert_eq!(
            CertState::from_secret(&d, &ann),
            Err(StateError::Mismatch(TLS_CRT))
        );
        let mut d = data.clone();
        d.insert(CA_CRT.into(), b"junk".to_vec());
        assert_eq!(
            CertState::from_secret(&d, &ann),
            Err(StateError::BadCertificate(CA_CRT))
        );
        let mut d = data.clone();
        d.insert(CA_KEY.into(), b"junk".to_vec());
        assert_eq!(CertState::from_secret(&d, &ann), Err(StateError::BadKey(CA_KEY)));
        let mut a = ann.clone();
        a.insert(ANN_SWITCHED_AT.into(), "yesterday".into());
        assert_eq!(
            CertState::from_secret(&data, &a),
            Err(StateError::BadAnnotation(ANN_SWITCHED_AT))
        );
    }

    #[test]
    fn plan_walks_through_a_rotation() {
        let t = two_minutes();
        let n = names();
        let s = generate_state(&n, T0, &t).unwrap();
        // Lifetime T0-5 .. T0+120: half-life at T0+57.
        assert_eq!(plan(&s, &n, T0, &t), Step::Wait { until: T0 + 57 });
        assert_eq!(plan(&s, &n, T0 + 57, &t), Step::Renew);
        let s = apply(s, Step::Renew, &n, T0 + 57, &t).unwrap().unwrap();
        assert_eq!(plan(&s, &n, T0 + 58, &t), Step::Publish);
        let s = s.published(T0 + 58);
        assert_eq!(plan(&s, &n, T0 + 60, &t), Step::Wait { until: T0 + 68 });
        assert_eq!(plan(&s, &n, T0 + 68, &t), Step::Switch);
        let s = s.switched(T0 + 68);
        // Retire 20 s after the switch; the new pair's half-life (T0+52 .. T0+177) is later.
        assert_eq!(plan(&s, &n, T0 + 70, &t), Step::Wait { until: T0 + 88 });
        assert_eq!(plan(&s, &n, T0 + 88, &t), Step::Retire);
        let s = s.retired_dropped();
        assert_eq!(s.bundle().len(), 1);
        assert_eq!(plan(&s, &n, T0 + 90, &t), Step::Wait { until: T0 + 114 });
        // Names changed: reissue under the same CA.
        let more = Names::for_service("psi", "ps-system", &["psi.example.com".into()], &n.ips);
        assert_eq!(plan(&s, &more, T0 + 90, &t), Step::Reissue);
        let r = apply(s.clone(), Step::Reissue, &more, T0 + 90, &t)
            .unwrap()
            .unwrap();
        assert_eq!((r.bundle(), more.match_cert(&r.serving.cert)), (s.bundle(), true));
        // Down past the end of the lifetime: start over.
        assert_eq!(plan(&s, &n, T0 + 177, &t), Step::Replace);
    }

    /// Simulates several rotations second by second with API servers that see the bundle only
    /// `propagation` after the leader confirmed it, and replicas that load a new serving
    /// certificate up to `lag` seconds late: every certificate any replica serves chains to a CA
    /// the API servers trust.
    #[test]
    fn rotations_never_break_trust() {
        let t = two_minutes();
        let n = names();
        let lag = 8; // replica reload lag, well within the overlap (20 s)
        let mut state = generate_state(&n, T0, &t).unwrap();
        // (time the bundle was confirmed, bundle)
        let mut published: Vec<(i64, Vec<CertificateDer<'static>>)> = vec![(T0, state.bundle())];
        let mut served: Vec<(i64, CertificateDer<'static>)> = vec![(T0, state.ca.cert.clone())];
        let mut switches = 0;
        for now in T0..T0 + 600 {
            // The leader confirms the bundle before every step, as the IO loop does.
            if published.last().unwrap().1 != state.bundle() {
                published.push((now, state.bundle()));
            }
            let step = plan(&state, &n, now, &t);
            assert_ne!(step, Step::Replace, "at {now}");
            if step == Step::Switch {
                switches += 1;
            }
            if let Some(next) = apply(state.clone(), step, &n, now, &t).unwrap() {
                state = next;
                if published.last().unwrap().1 != state.bundle() {
                    published.push((now, state.bundle()));
                }
            }
            if served.last().unwrap().1 != state.ca.cert {
                served.push((now, state.ca.cert.clone()));
            }
            // What API servers trust now: any bundle confirmed at least `propagation` ago, or
            // the latest one (pessimistically, each API server may be on either).
            let prop = secs(t.propagation());
            let visible: Vec<_> = published
                .iter()
                .filter(|(at, _)| *at <= now)
                .rev()
                .scan(false, |done, (at, b)| {
                    if *done {
                        return None;
                    }
                    *done = *at + prop <= now;
                    Some(b.clone())
                })
                .collect();
            // What replicas may serve now: the current CA's certificate, or for `lag` seconds
            // after a switch the previous one.
            let servable: Vec<_> = served
                .iter()
                .filter(|(at, _)| *at <= now)
                .rev()
                .scan(false, |done, (at, ca)| {
                    if *done {
                        return None;
                    }
                    *done = *at + lag <= now;
                    Some(ca.clone())
                })
                .collect();
            for ca in &servable {
                for bundle in &visible {
                    assert!(
                        bundle.contains(ca),
                        "at {now}: a served CA is missing from a bundle in use"
                    );
                }
            }
        }
        assert!(
            switches >= 4,
            "only {switches} rotations in 10 minutes of 2-minute certificates"
        );
    }
}
