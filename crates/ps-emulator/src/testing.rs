//! Helpers for the tests of every crate that talks to the emulator (feature `testing`): the
//! one place that installs the process-wide rustls crypto provider (for tests that need one),
//! HTTP clients that trust only the
//! emulator's CA, the operator endpoints (state, faults, secret changes) and assertions that
//! never print a secret value.
//!
//! ```no_run
//! # async fn t() {
//! use ps_emulator::testing::{self, Operator};
//! let emu = testing::start(SEED, ps_emulator::Options::default()).await;
//! let op = Operator::new(&emu);
//! op.faults(serde_json::json!({"latency_ms": 50})).await;
//! op.assert_closed().await;
//! # }
//! # const SEED: &str = "";
//! ```

use std::sync::{Arc, Once};

use reqwest::{Client, ClientBuilder, Method};
use rustls_pki_types::{CertificateDer, pem::PemObject as _};
use serde_json::Value;

use crate::{Emulator, Options, Seed};

/// Installs ring as the process-wide rustls provider (reqwest's `rustls-no-provider` clients
/// and the emulator need one), once per test process.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only when another provider is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Starts an emulator with `seed` (YAML) on `opts.listen` (127.0.0.1, port 0 by default: the
/// listener is bound once and kept, so there is no free-port race). Installs no crypto
/// provider: the emulator and these helpers name ring explicitly, so tests of a library that
/// must work without a process-wide provider (passwordsafe) still prove it.
pub async fn start(seed: &str, opts: Options) -> Emulator {
    let seed = Seed::from_yaml_str(seed).expect("test seed is valid");
    crate::start(seed, opts).await.expect("emulator starts")
}

/// A reqwest client builder that trusts only the emulator's CA (ring named explicitly, no
/// process-wide provider needed).
pub fn client_builder(emu: &Emulator) -> ClientBuilder {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(emu.ca_pem().as_bytes()) {
        roots
            .add(cert.expect("the emulator's CA is PEM"))
            .expect("the emulator's CA is usable");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Client::builder().tls_backend_preconfigured(tls)
}

/// The operator endpoints (`/_emulator/...`) of one emulator.
#[derive(Clone, Debug)]
pub struct Operator {
    origin: String,
    http: Client,
}

impl Operator {
    pub fn new(emu: &Emulator) -> Operator {
        Operator {
            origin: emu.origin().to_owned(),
            http: client_builder(emu).build().expect("operator client"),
        }
    }

    /// Calls `/_emulator/<path>`, asserts a 2xx answer and returns its JSON (null if none).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/_emulator/{path}", self.origin);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {url}: HTTP {status}: {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// `GET /_emulator/state`: sessions, requests, calls per route, ...
    pub async fn state(&self) -> Value {
        self.call(Method::GET, "state", None).await
    }

    /// The number of calls of a route key (`"GET secrets-safe/secrets"`) seen so far.
    pub async fn calls(&self, route: &str) -> u64 {
        self.state().await["calls"][route].as_u64().unwrap_or(0)
    }

    /// `POST /_emulator/faults` (see docs/emulator.md); asserts it was accepted.
    pub async fn faults(&self, body: Value) {
        self.call(Method::POST, "faults", Some(body)).await;
    }

    /// `PUT /_emulator/secret`: changes a secret's value (`{"path", "title", "value"}`).
    pub async fn put_secret(&self, body: Value) {
        self.call(Method::PUT, "secret", Some(body)).await;
    }

    /// Asserts that no session and no managed-account request is left open.
    pub async fn assert_closed(&self) {
        let s = self.state().await;
        assert_eq!(s["sessions_open"], 0, "sessions left open: {s}");
        assert_eq!(s["requests_open"], 0, "requests left open: {s}");
    }
}

/// Compares a secret value with the expected one without ever printing either.
#[track_caller]
pub fn assert_value(actual: &[u8], expected: &[u8], what: &str) {
    assert!(
        actual == expected,
        "{what}: value differs from the expected one ({} vs {} bytes; values not shown)",
        actual.len(),
        expected.len()
    );
}

/// Asserts that `text` (a log, an error message, debug output) holds none of `secrets` and no
/// secret canary ([`assert_no_canary`]); a failure names the secret by its position in the list,
/// never by its value.
#[track_caller]
pub fn assert_no_secrets(text: &str, secrets: &[&str]) {
    assert_no_canary(text, "the text");
    for (i, s) in secrets.iter().enumerate() {
        assert!(
            !text.contains(s),
            "secret #{i} of the list appears in the text (not shown)"
        );
    }
}

/// Asserts that `text` holds no secret canary (`PSCANARY-<kind>-…`, in any letter case): no
/// seeded value of a test seed that follows crates/testkit/canaries.txt, and no session cookie,
/// OAuth token or rotated password this emulator minted. A failure names the canary's kind,
/// never its value.
#[track_caller]
pub fn assert_no_canary(text: &str, what: &str) {
    let lower = text.to_ascii_lowercase();
    let marker = crate::CANARY_MARKER.to_ascii_lowercase();
    if let Some(at) = lower.find(&marker) {
        let rest = lower[at + marker.len()..].trim_start_matches('-');
        let kind = canary_kinds()
            .filter(|k| rest.starts_with(&format!("{k}-")))
            .max_by_key(|k| k.len())
            .unwrap_or("of unknown kind");
        panic!("{what}: a secret canary {kind} appears at byte {at} (value not shown)");
    }
}

/// The canary kinds of crates/testkit/canaries.txt.
pub fn canary_kinds() -> impl Iterator<Item = &'static str> {
    include_str!("../../testkit/canaries.txt")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
}
