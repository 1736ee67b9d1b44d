//! Shared set-up of the integration tests: a seed, an emulator on 127.0.0.1 over real TLS and
//! reqwest clients that trust only its generated CA.
//!
//! Values in the seed are fake; even so, assertions on secret values go through
//! [`assert_value`], which never prints them.

#![allow(dead_code)]

pub use ps_emulator::testing::install_crypto_provider;
use ps_emulator::{
    Emulator, Options,
    testing::{self, Operator},
};
use reqwest::{Client, Response, StatusCode};
use serde_json::Value;

pub const KEY_A: &str =
    "PSCANARY-apikey-team-a-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const KEY_B: &str = "PSCANARY-apikey-team-b-0123456789abcdef";
pub const CLIENT_ID: &str = "6f1c4a57-5b8e-4a86-9d6a-0a7b4c1e2f33";
pub const CLIENT_SECRET: &str = "PSCANARY-client-secret-Zq8+v/3kLx9mN2pR7tW4yB6cF1hJ5sD0aG3e";
pub const CLIENT_ID_SHORT_TTL: &str = "0d3c2b1a-0000-4000-8000-000000000001";
pub const DEPLOYER_PWD: &str = "PSCANARY-runas-pw-Dpl0y-7f#Qx9!";

pub const SEED: &str = r#"
users:
  - name: svc-team-a
    groups: [team-a]
  - name: svc-deployer
    password: "PSCANARY-runas-pw-Dpl0y-7f#Qx9!"
    groups: [team-a, platform]
  - name: svc-team-b
    groups: [team-b]
  - name: svc-nobody
    groups: [nobody]
api_keys:
  - key: "PSCANARY-apikey-team-a-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    users: [svc-team-a, svc-deployer, svc-nobody]
  - key: "PSCANARY-apikey-team-b-0123456789abcdef"
    users: [svc-team-b]
oauth_clients:
  - client_id: "6f1c4a57-5b8e-4a86-9d6a-0a7b4c1e2f33"
    client_secret: "PSCANARY-client-secret-Zq8+v/3kLx9mN2pR7tW4yB6cF1hJ5sD0aG3e"
    user: app-team-a
    groups: [team-a]
    token_ttl_seconds: 3600
  - client_id: "0d3c2b1a-0000-4000-8000-000000000001"
    client_secret: "PSCANARY-client-secret-short-lived-0000000000000000000"
    user: app-short
    groups: [team-a]
    token_ttl_seconds: 1
safes:
  - name: team-a
    description: Team A secrets
    readers: [team-a]
    secrets:
      - {title: deploy token, type: text, text: "PSCANARY-secret-text-tok-0001"}
    folders:
      - name: db
        secrets:
          - {title: password, type: credential, username: admin, password: "PSCANARY-secret-pw-s3cret", description: "db admin"}
          - {title: config, type: text, text: "PSCANARY-secret-text-a=1"}
          - {title: tls.crt, type: file, file_name: tls.crt, content: "-----BEGIN CERTIFICATE-----\nPSCANARY-secret-file-MIIB\n-----END CERTIFICATE-----\n"}
        folders:
          - name: replica
            secrets:
              - {title: password, type: credential, username: ro, password: "PSCANARY-secret-pw-r3plica"}
      - name: a/b
        secrets:
          - {title: slashed, type: text, text: "PSCANARY-secret-text-inside a/b"}
  - name: team-b
    readers: [team-b]
    folders:
      - name: db
        secrets:
          - {title: password, type: credential, username: admin, password: "PSCANARY-secret-pw-b-secret"}
  - name: platform
    readers: [platform]
    secrets: []
managed_accounts:
  - system: db-prod
    account: svc_app
    password: "PSCANARY-account-pw-initial-1"
    requestors: [team-a]
    rotate_on_checkin: true
  - system: db-prod
    account: svc_static
    password: "PSCANARY-account-pw-static-1"
    requestors: [team-a]
  - system: db-b
    account: svc_b
    password: "PSCANARY-account-pw-b-account"
    requestors: [team-b]
"#;

pub async fn start() -> Emulator {
    start_with(Options::default()).await
}

pub async fn start_with(opts: Options) -> Emulator {
    testing::start(SEED, opts).await
}

/// A client with a cookie jar that trusts only the emulator's CA.
pub fn client(emu: &Emulator) -> Client {
    builder(emu).cookie_store(true).build().expect("client")
}

/// A client without a cookie jar (to send cookies by hand or none at all).
pub fn bare_client(emu: &Emulator) -> Client {
    builder(emu).build().expect("client")
}

/// reqwest's own TLS set-up (not [`testing::client_builder`]), so that tests can add a
/// `reqwest::Identity`; it needs the process-wide provider. HTTP/1.1 only: these tests count
/// connections per call and send `Connection` headers (HTTP/2 is `tests/http2.rs`).
pub fn builder(emu: &Emulator) -> reqwest::ClientBuilder {
    any_version_builder(emu).http1_only()
}

/// [`builder`] offering `h2` and `http/1.1` in ALPN, as most clients do.
pub fn any_version_builder(emu: &Emulator) -> reqwest::ClientBuilder {
    install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(emu.ca_pem().as_bytes()).expect("CA PEM");
    Client::builder().tls_certs_only([ca])
}

pub fn url(emu: &Emulator, path: &str) -> String {
    format!("{}/{}", emu.base_url(), path.trim_start_matches('/'))
}

/// `POST Auth/connect/token` with a client-credentials grant.
pub async fn token_response(c: &Client, emu: &Emulator, client_id: &str, client_secret: &str) -> Response {
    c.post(url(emu, "Auth/connect/token"))
        .form(&[
            ("client_id", client_id),
            ("client_secret", client_secret),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
}

pub async fn sign_in_header(c: &Client, emu: &Emulator, header: &str) -> Response {
    c.post(url(emu, "Auth/SignAppin"))
        .header("Authorization", header)
        .header("Content-Type", "application/json")
        .send()
        .await
        .expect("SignAppIn answers")
}

/// Signs in as `runas` with key A and asserts success.
pub async fn sign_in(c: &Client, emu: &Emulator, runas: &str) {
    let pwd = if runas == "svc-deployer" {
        format!(" pwd=[{DEPLOYER_PWD}];")
    } else {
        String::new()
    };
    let r = sign_in_header(c, emu, &format!("PS-Auth key={KEY_A}; runas={runas};{pwd}")).await;
    assert_eq!(r.status(), StatusCode::OK, "sign-in as {runas}");
}

pub async fn sign_in_b(c: &Client, emu: &Emulator) {
    let r = sign_in_header(c, emu, &format!("PS-Auth key={KEY_B}; runas=svc-team-b;")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

pub async fn get(c: &Client, emu: &Emulator, path: &str) -> Response {
    c.get(url(emu, path)).send().await.expect("GET answers")
}

pub async fn get_json(c: &Client, emu: &Emulator, path: &str) -> (StatusCode, Value) {
    let r = get(c, emu, path).await;
    let status = r.status();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub async fn state(emu: &Emulator) -> Value {
    Operator::new(emu).state().await
}

pub async fn faults(emu: &Emulator, body: Value) -> (StatusCode, Value) {
    let c = bare_client(emu);
    let r = c
        .post(format!("{}/_emulator/faults", emu.origin()))
        .json(&body)
        .send()
        .await
        .expect("faults");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Compares a secret value without ever printing it.
#[track_caller]
pub fn assert_value(actual: Option<&str>, expected: &str, what: &str) {
    let actual = actual.unwrap_or_else(|| panic!("{what}: no value"));
    testing::assert_value(actual.as_bytes(), expected.as_bytes(), what);
}

/// The error body as a string (the server answers JSON strings).
pub async fn error_text(r: Response) -> String {
    let t = r.text().await.unwrap_or_default();
    serde_json::from_str::<String>(&t).unwrap_or(t)
}
