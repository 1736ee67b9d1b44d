//! Client configuration: base URL, credentials, TLS, timeouts, retries, request options.

use std::{fmt, str::FromStr, time::Duration};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use secrecy::{ExposeSecret, SecretString, zeroize::Zeroize as _};

use crate::error::Error;

/// Everything [`crate::Client::new`] needs. Start from [`ClientConfig::new`] and change fields.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// `https://<host>/BeyondTrust/api/public/v3` (any https URL; a trailing `/` is ignored).
    pub base_url: String,
    /// How to sign in.
    pub auth: Auth,
    /// Sent as `version=` on Secrets Safe calls only; `None` sends nothing (server default 3.0).
    pub api_version: Option<ApiVersion>,
    /// Trust, verification and client certificate.
    pub tls: TlsOptions,
    /// TCP + TLS connect timeout. Default 10 s.
    pub connect_timeout: Duration,
    /// Timeout of one HTTP attempt, body included. Default 30 s.
    pub request_timeout: Duration,
    /// Backoff for retryable failures.
    pub retry: RetryPolicy,
    /// Managed-account request parameters.
    pub request: RequestOptions,
    /// Name resolution. Default [`Resolver::Builtin`] on Linux, [`Resolver::System`] elsewhere.
    pub resolver: Resolver,
    /// Maximum number of API calls in flight at once per session. Over HTTP/2 they share one
    /// connection; over HTTP/1.1 each call in flight needs a connection of its own. Default 16.
    pub max_concurrent_requests: usize,
    /// Largest file secret accepted by a download, in bytes. Default 5,000,000 (the API's limit
    /// for file content).
    pub max_file_bytes: u64,
}

impl ClientConfig {
    /// A configuration with every default.
    pub fn new(base_url: impl Into<String>, auth: Auth) -> ClientConfig {
        ClientConfig {
            base_url: base_url.into(),
            auth,
            api_version: None,
            tls: TlsOptions::default(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            request: RequestOptions::default(),
            resolver: Resolver::default(),
            max_concurrent_requests: 16,
            max_file_bytes: 5_000_000,
        }
    }
}

/// How the client authenticates.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: PS-Auth key=<key>; runas=<user>; pwd=[<password>];` on `SignAppIn`.
    ApiKey {
        /// The API key of the registration.
        key: SecretString,
        /// The BeyondInsight user (`domain\user` for directory users).
        runas: String,
        /// Needed only when the registration requires the user's password.
        password: Option<SecretString>,
    },
    /// OAuth client credentials: `POST Auth/connect/token`, then `SignAppIn` with the bearer token.
    OAuth {
        /// Client ID (a GUID).
        client_id: String,
        /// Client secret.
        client_secret: SecretString,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::ApiKey { runas, password, .. } => f
                .debug_struct("ApiKey")
                .field("key", &"[redacted]")
                .field("runas", runas)
                .field("password", &password.as_ref().map(|_| "[redacted]"))
                .finish(),
            Auth::OAuth { client_id, .. } => f
                .debug_struct("OAuth")
                .field("client_id", client_id)
                .field("client_secret", &"[redacted]")
                .finish(),
        }
    }
}

impl Auth {
    /// Parses BeyondTrust's API-key string, as the secrets-agent's `BT_API_KEY` and Terraform take
    /// it: `KEY;runas=user;pwd=[password];`.
    ///
    /// Lenient about form: an optional leading `PS-Auth` scheme, an optional `key=` on the first
    /// part, spaces around parts, names in any case, values in single or double quotes, a missing
    /// final `;`, and a password with or without its `[...]` (a bracketed password may itself
    /// contain `;`). Strict about content: `runas` is required, names other than `key`, `runas`
    /// and `pwd` are errors. Error messages never contain the key or the password.
    pub fn from_beyondtrust_key(value: &str) -> Result<Auth, Error> {
        const WHAT: &str = "API key string";
        let mut rest = value.trim();
        // `get`, not `[..7]`: the 7th byte may be inside a multi-byte character.
        if rest.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("PS-Auth")) {
            let after = &rest[7..];
            if after.starts_with(char::is_whitespace) {
                rest = after.trim_start();
            }
        }
        let parts = split_key_parts(rest);
        let mut key = None;
        let mut runas = None;
        let mut password = None;
        for (i, part) in parts.iter().enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (name, val) = match part.split_once('=') {
                Some((n, v)) => (n.trim().to_ascii_lowercase(), v.trim()),
                None if i == 0 => ("key".to_owned(), part),
                None => {
                    return Err(Error::invalid_input(
                        WHAT,
                        format!("part {} is not of the form name=value", i + 1),
                    ));
                }
            };
            // A bare key may itself contain '=' (base64 padding); only the known names count.
            let (name, val) = if i == 0 && !matches!(name.as_str(), "key" | "runas" | "pwd") {
                ("key".to_owned(), part)
            } else {
                (name, val)
            };
            let val = unquote(val);
            match name.as_str() {
                "key" => key = Some(val.to_owned()),
                "runas" => runas = Some(val.to_owned()),
                "pwd" => {
                    let p = val
                        .strip_prefix('[')
                        .and_then(|v| v.strip_suffix(']'))
                        .unwrap_or(val);
                    password = Some(p.to_owned());
                }
                other => {
                    return Err(Error::invalid_input(WHAT, format!("unknown parameter {other:?}")));
                }
            }
        }
        let key = key
            .filter(|k| !k.is_empty())
            .ok_or_else(|| Error::invalid_input(WHAT, "the key is empty"))?;
        let runas = runas
            .filter(|r| !r.is_empty())
            .ok_or_else(|| Error::invalid_input(WHAT, "runas=<user> is missing"))?;
        let auth = Auth::ApiKey {
            key: key.into(),
            runas,
            password: password.filter(|p| !p.is_empty()).map(Into::into),
        };
        auth.validate()?;
        Ok(auth)
    }

    /// Checks what can be checked locally (no empty or header-breaking values).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |s: &str| s.chars().any(|c| c.is_control());
        match self {
            Auth::ApiKey { key, runas, password } => {
                let key = key.expose_secret();
                if key.trim().is_empty() {
                    return Err(Error::invalid_input("API key", "it is empty"));
                }
                if bad(key) || key.contains(';') || key.contains(char::is_whitespace) {
                    return Err(Error::invalid_input(
                        "API key",
                        "it contains whitespace, ';' or control characters",
                    ));
                }
                if runas.trim().is_empty() {
                    return Err(Error::invalid_input("runas user", "it is empty"));
                }
                if bad(runas) || runas.contains(';') {
                    return Err(Error::invalid_input(
                        "runas user",
                        "it contains ';' or control characters",
                    ));
                }
                if let Some(p) = password
                    && bad(p.expose_secret())
                {
                    return Err(Error::invalid_input(
                        "runas password",
                        "it contains control characters",
                    ));
                }
            }
            Auth::OAuth {
                client_id,
                client_secret,
            } => {
                if client_id.trim().is_empty() {
                    return Err(Error::invalid_input("OAuth client ID", "it is empty"));
                }
                if client_secret.expose_secret().is_empty() {
                    return Err(Error::invalid_input("OAuth client secret", "it is empty"));
                }
            }
        }
        Ok(())
    }

    /// The `Authorization` header value for `SignAppIn` in API-key mode.
    pub(crate) fn ps_auth_header(&self) -> Option<SecretString> {
        match self {
            Auth::ApiKey { key, runas, password } => {
                let mut h = format!("PS-Auth key={}; runas={};", key.expose_secret(), runas);
                if let Some(p) = password {
                    h.push_str(" pwd=[");
                    h.push_str(p.expose_secret());
                    h.push_str("];");
                }
                Some(h.into())
            }
            Auth::OAuth { .. } => None,
        }
    }
}

/// Splits on `;`, except inside a `pwd=[...]` value.
fn split_key_parts(s: &str) -> Vec<String> {
    let mut parts: Vec<String> = Vec::new();
    let mut in_pwd = false;
    for raw in s.split(';') {
        if in_pwd {
            if let Some(last) = parts.last_mut() {
                last.push(';');
                last.push_str(raw);
            }
            if raw.trim_end().ends_with(']') {
                in_pwd = false;
            }
            continue;
        }
        let t = raw.trim_start();
        if let Some((name, val)) = t.split_once('=')
            && name.trim().eq_ignore_ascii_case("pwd")
        {
            let v = unquote(val.trim());
            if v.starts_with('[') && !v.ends_with(']') {
                in_pwd = true;
            }
        }
        parts.push(raw.to_owned());
    }
    parts
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Secrets Safe API minor version (`version=` query parameter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiVersion {
    /// 3.0: bare arrays.
    V3_0,
    /// 3.1: bare arrays (BeyondTrust's recommended value).
    V3_1,
    /// 3.2: `{"TotalCount": N, "Data": [...]}`.
    V3_2,
}

impl ApiVersion {
    /// `"3.0"`, `"3.1"` or `"3.2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V3_0 => "3.0",
            ApiVersion::V3_1 => "3.1",
            ApiVersion::V3_2 => "3.2",
        }
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ApiVersion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "3.0" => Ok(ApiVersion::V3_0),
            "3.1" => Ok(ApiVersion::V3_1),
            "3.2" => Ok(ApiVersion::V3_2),
            other => Err(Error::invalid_input(
                "API version",
                format!("{other:?} is not one of 3.0, 3.1, 3.2"),
            )),
        }
    }
}

/// TLS settings. TLS 1.2 and 1.3 only, ring crypto.
#[derive(Clone, Debug)]
pub struct TlsOptions {
    /// PEM bundle of CA certificates to trust.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Whether the bundle is added to the system roots or replaces them.
    pub ca_mode: CaMode,
    /// Verify the server certificate. Default true. False logs a warning at every client creation.
    pub verify: bool,
    /// Client certificate for registrations with "Client Certificate Required".
    pub client_identity: Option<ClientIdentity>,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            ca_bundle_pem: None,
            ca_mode: CaMode::Add,
            verify: true,
            client_identity: None,
        }
    }
}

/// How [`TlsOptions::ca_bundle_pem`] combines with the system roots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaMode {
    /// System roots (the platform bundle: `SSL_CERT_FILE`, `SSL_CERT_DIR`, or the usual
    /// `/etc/ssl` files) plus the bundle. With a bundle, the system store is read only when a
    /// server certificate does not chain to the bundle.
    #[default]
    Add,
    /// Only the bundle (required in this mode); system roots are not read.
    Replace,
}

/// A client certificate chain and its private key, parsed: DER as rustls takes them, whether
/// they came from PEM files ([`ClientIdentity::from_pem`]) or from a PKCS#12 file
/// ([`ClientIdentity::from_der`]). The key is zeroed when the identity is dropped.
pub struct ClientIdentity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl ClientIdentity {
    /// From DER: the leaf certificate first, then intermediates (at least one certificate).
    /// Whether the key matches the leaf is checked by [`crate::Client::new`].
    pub fn from_der(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<Self, Error> {
        if chain.is_empty() {
            return Err(Error::invalid_input("client certificate", "no certificate"));
        }
        Ok(ClientIdentity { chain, key })
    }

    /// From PEM: the certificate chain (leaf first) and the private key, PKCS#8
    /// (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1 (`BEGIN EC PRIVATE KEY`);
    /// encrypted keys are not supported. Both may be the same text. Errors never quote the key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, Error> {
        let chain = crate::tls::parse_certs(cert_pem, "client certificate")?;
        if key_pem.windows(9).any(|w| w == b"ENCRYPTED") {
            return Err(Error::invalid_input(
                "client key",
                "encrypted private keys are not supported; decrypt it first",
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
            Error::invalid_input(
                "client key",
                "no PKCS#8 (PRIVATE KEY), PKCS#1 (RSA PRIVATE KEY) or SEC1 (EC PRIVATE KEY) section found",
            )
        })?;
        ClientIdentity::from_der(chain, key)
    }

    /// The certificates, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub(crate) fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl Drop for ClientIdentity {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("chain", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

/// Exponential backoff with full jitter, within a total time budget.
///
/// Retried: network errors (connect, TLS, timeout, reset), HTTP 5xx, 408, 429 and 409 on
/// `POST Requests`. The n-th retry waits a random time in
/// `[0, min(max_interval, initial_interval × multiplier^(n-1))]`, added to `Retry-After` when a
/// 429 or 503 gives one. No retry starts once its wait would end after `max_elapsed` from the
/// first attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Cap of the first wait. Default 200 ms.
    pub initial_interval: Duration,
    /// Growth factor of the cap. Default 2.
    pub multiplier: f64,
    /// Largest cap. Default 5 s.
    pub max_interval: Duration,
    /// Total budget for one call, retries included. Default 60 s. Zero disables retries.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_interval: Duration::from_millis(200),
            multiplier: 2.0,
            max_interval: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
        }
    }
}

/// Parameters of managed-account requests (`POST Requests`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestOptions {
    /// `DurationMinutes`, 1–525600. Default 5.
    pub duration_minutes: u32,
    /// `Reason`, at most 1000 characters. Default `ps-injector`.
    pub reason: String,
    /// `RotateOnCheckin`; `None` leaves it to the server's policy.
    pub rotate_on_checkin: Option<bool>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            duration_minutes: 5,
            reason: "ps-injector".to_owned(),
            rotate_on_checkin: None,
        }
    }
}

/// Name resolution for the API host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolver {
    /// The platform's `getaddrinfo` (on a blocking thread). Needs working NSS on glibc.
    System,
    /// A resolver in Rust (hickory-resolver): `/etc/hosts`, then the `/etc/resolv.conf`
    /// nameservers with `search` and `ndots`. Works in static binaries on `FROM scratch`
    /// images; `/etc/resolv.conf` must list a nameserver.
    Builtin,
}

impl Default for Resolver {
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            Resolver::Builtin
        } else {
            Resolver::System
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(a: &Auth) -> (String, String, Option<String>) {
        match a {
            Auth::ApiKey { key, runas, password } => (
                key.expose_secret().to_owned(),
                runas.clone(),
                password.as_ref().map(|p| p.expose_secret().to_owned()),
            ),
            Auth::OAuth { .. } => panic!("not an API key"),
        }
    }

    fn header(a: &Auth) -> String {
        a.ps_auth_header().unwrap().expose_secret().to_owned()
    }

    #[test]
    fn ps_auth_header_composition() {
        let a = Auth::ApiKey {
            key: "K123".into(),
            runas: "svc".into(),
            password: None,
        };
        assert_eq!(header(&a), "PS-Auth key=K123; runas=svc;");
        let a = Auth::ApiKey {
            key: "K123".into(),
            runas: r"CORP\svc".into(),
            password: Some("p;w]d".into()),
        };
        assert_eq!(header(&a), r"PS-Auth key=K123; runas=CORP\svc; pwd=[p;w]d];");
        let o = Auth::OAuth {
            client_id: "id".into(),
            client_secret: "s".into(),
        };
        assert!(o.ps_auth_header().is_none());
    }

    #[test]
    fn beyondtrust_key_forms() {
        type Expected<'a> = (&'a str, &'a str, Option<&'a str>);
        let cases: &[(&str, Expected<'_>)] = &[
            ("KEY;runas=user;", ("KEY", "user", None)),
            ("KEY;runas=user", ("KEY", "user", None)),
            ("KEY; runas=user; pwd=[secret];", ("KEY", "user", Some("secret"))),
            (
                "  key=KEY ; RunAs = user ; PWD = [secret] ",
                ("KEY", "user", Some("secret")),
            ),
            (
                "PS-Auth key=KEY; runas=user; pwd=[se;cr=et];",
                ("KEY", "user", Some("se;cr=et")),
            ),
            (
                r#"key="KEY"; runas="CORP\user"; pwd="[x]";"#,
                ("KEY", r"CORP\user", Some("x")),
            ),
            ("key='KEY';runas='user';", ("KEY", "user", None)),
            ("KEY;runas=user;pwd=[];", ("KEY", "user", None)),
            ("KEY;runas=user;pwd=plain;", ("KEY", "user", Some("plain"))),
            ("abc==;runas=user;", ("abc==", "user", None)),
        ];
        for (input, (k, r, p)) in cases {
            let a = Auth::from_beyondtrust_key(input).unwrap_or_else(|e| panic!("case {input:?}: {e}"));
            let (gk, gr, gp) = parts(&a);
            assert_eq!(
                (gk.as_str(), gr.as_str(), gp.as_deref()),
                (*k, *r, *p),
                "case {input:?}"
            );
        }
    }

    #[test]
    fn beyondtrust_key_errors_never_show_values() {
        for (input, expect) in [
            ("SECRETKEY", "runas=<user> is missing"),
            ("SECRETKEY;runas=;", "runas=<user> is missing"),
            (";runas=u;", "the key is empty"),
            ("SECRETKEY;runas=u;foo=SECRETPWD", "unknown parameter \"foo\""),
            (
                "SECRETKEY;runas=u;SECRETPWD",
                "part 3 is not of the form name=value",
            ),
            ("", "the key is empty"),
        ] {
            let e = Auth::from_beyondtrust_key(input).unwrap_err().to_string();
            assert!(e.contains(expect), "{input:?} gave {e}");
            assert!(!e.contains("SECRET"), "value leaked in {e}");
        }
    }

    /// Found by the agent's configuration property test: a key whose 7th byte is inside a
    /// multi-byte character made the `PS-Auth` prefix check slice through it and panic.
    #[test]
    fn beyondtrust_keys_with_multibyte_characters_never_panic() {
        for input in [
            "!Aa® ¡",
            "PS-Aut\u{e9};runas=u;",
            "é",
            "ÀÀÀÀ;runas=ü;",
            "PS-Auth ключ;runas=u;",
        ] {
            let _ = Auth::from_beyondtrust_key(input);
        }
        let a = Auth::from_beyondtrust_key("PS-Auth ключ;runas=ü;").unwrap();
        assert!(matches!(a, Auth::ApiKey { ref runas, .. } if runas == "ü"));
    }

    #[test]
    fn auth_debug_is_redacted() {
        let a = Auth::ApiKey {
            key: "SECRETKEY".into(),
            runas: "u".into(),
            password: Some("SECRETPWD".into()),
        };
        let d = format!("{a:?}");
        assert!(!d.contains("SECRET"), "{d}");
        let o = Auth::OAuth {
            client_id: "id".into(),
            client_secret: "SECRETCS".into(),
        };
        assert!(!format!("{o:?}").contains("SECRET"));
        let id = ClientIdentity::from_der(
            vec![CertificateDer::from(b"CERT".to_vec())],
            PrivateKeyDer::Pkcs8(b"SECRETKEY".to_vec().into()),
        )
        .unwrap();
        let shown = format!("{id:?}");
        assert!(
            !shown.contains("SECRET") && !shown.contains("83, 69, 67"),
            "{shown}"
        );
    }

    #[test]
    fn auth_validation() {
        let k = |key: &str, runas: &str| Auth::ApiKey {
            key: key.into(),
            runas: runas.into(),
            password: None,
        };
        assert!(k("K", "u").validate().is_ok());
        assert!(k("", "u").validate().is_err());
        assert!(k("K K", "u").validate().is_err());
        assert!(k("K", " ").validate().is_err());
        assert!(k("K", "u;x").validate().is_err());
        assert!(k("K\n", "u").validate().is_err());
    }

    #[test]
    fn api_versions() {
        assert_eq!("3.2".parse::<ApiVersion>().unwrap(), ApiVersion::V3_2);
        assert_eq!(" 3.0 ".parse::<ApiVersion>().unwrap().as_str(), "3.0");
        assert!("3.3".parse::<ApiVersion>().is_err());
        assert!("3".parse::<ApiVersion>().is_err());
    }
}
