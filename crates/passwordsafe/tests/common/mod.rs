//! Shared set-up: a seed, the emulator on 127.0.0.1 over real TLS, client configurations that
//! trust only the emulator's CA, and operator helpers.
//!
//! The seed's values are fake; assertions on them still go through [`assert_value`], which never
//! prints a value.

#![allow(dead_code)]

use std::time::Duration;

use passwordsafe::{Auth, CaMode, ClientConfig, RetryPolicy, SecretValue};
use ps_emulator::{
    Emulator, Options,
    testing::{self, Operator},
};
use serde_json::Value;

pub const KEY: &str = "PSCANARY-apikey-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const OTHER_KEY: &str = "PSCANARY-apikey-other-0123456789";
pub const CLIENT_ID: &str = "6f1c4a57-5b8e-4a86-9d6a-0a7b4c1e2f33";
pub const CLIENT_SECRET: &str = "PSCANARY-client-secret-Zq8+v/3kLx9mN2pR7tW4yB6cF1hJ5sD0aG3e";
pub const USER_PWD: &str = "PSCANARY-runas-pw-user]odd[chars=x";

pub const SEED: &str = r#"
users:
  - name: svc-a
    groups: [team-a]
  - name: svc-pwd
    password: "PSCANARY-runas-pw-user]odd[chars=x"
    groups: [team-a]
  - name: svc-b
    groups: [team-b]
api_keys:
  - key: "PSCANARY-apikey-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    users: [svc-a, svc-pwd, svc-b]
  - key: "PSCANARY-apikey-other-0123456789"
    users: [svc-b]
oauth_clients:
  - client_id: "6f1c4a57-5b8e-4a86-9d6a-0a7b4c1e2f33"
    client_secret: "PSCANARY-client-secret-Zq8+v/3kLx9mN2pR7tW4yB6cF1hJ5sD0aG3e"
    user: app-a
    groups: [team-a]
safes:
  - name: team-a
    readers: [team-a]
    secrets:
      - {title: top, type: text, text: "PSCANARY-secret-text-top-level"}
    folders:
      - name: db
        secrets:
          - {title: password, type: credential, username: admin, password: "PSCANARY-secret-pw-cr3d-Value!\"q", description: "db admin"}
          - {title: config, type: text, text: "PSCANARY-secret-text-a=1\nb=2\n"}
          - {title: tls.crt, type: file, file_name: tls.crt, content: "-----BEGIN CERTIFICATE-----\nPSCANARY-secret-file-FAKE\n-----END CERTIFICATE-----\n"}
        folders:
          - name: replica
            secrets:
              - {title: password, type: credential, username: ro, password: "PSCANARY-secret-pw-replica"}
      - name: many
        secrets:
          - {title: s00, type: text, text: "PSCANARY-secret-text-v00"}
          - {title: s01, type: text, text: "PSCANARY-secret-text-v01"}
          - {title: s02, type: text, text: "PSCANARY-secret-text-v02"}
          - {title: s03, type: text, text: "PSCANARY-secret-text-v03"}
          - {title: s04, type: text, text: "PSCANARY-secret-text-v04"}
          - {title: s05, type: text, text: "PSCANARY-secret-text-v05"}
          - {title: s06, type: text, text: "PSCANARY-secret-text-v06"}
          - {title: s07, type: text, text: "PSCANARY-secret-text-v07"}
          - {title: s08, type: text, text: "PSCANARY-secret-text-v08"}
          - {title: s09, type: text, text: "PSCANARY-secret-text-v09"}
          - {title: s10, type: text, text: "PSCANARY-secret-text-v10"}
          - {title: s11, type: text, text: "PSCANARY-secret-text-v11"}
          - {title: s12, type: text, text: "PSCANARY-secret-text-v12"}
          - {title: s13, type: text, text: "PSCANARY-secret-text-v13"}
          - {title: s14, type: text, text: "PSCANARY-secret-text-v14"}
          - {title: s15, type: text, text: "PSCANARY-secret-text-v15"}
          - {title: s16, type: text, text: "PSCANARY-secret-text-v16"}
          - {title: s17, type: text, text: "PSCANARY-secret-text-v17"}
          - {title: s18, type: text, text: "PSCANARY-secret-text-v18"}
          - {title: s19, type: text, text: "PSCANARY-secret-text-v19"}
      - name: a/b
        secrets:
          - {title: slashed, type: text, text: "PSCANARY-secret-text-inside a/b"}
      - name: empty
  - name: team-b
    readers: [team-b]
    folders:
      - name: db
        secrets:
          - {title: password, type: credential, username: admin, password: "PSCANARY-secret-pw-b-value"}
managed_accounts:
  - system: db-prod
    account: svc_app
    password: "PSCANARY-account-pw-managed-1"
    requestors: [team-a]
  - system: db-prod
    account: svc_rotating
    password: "PSCANARY-account-pw-rotating-1"
    requestors: [team-a]
    rotate_on_checkin: true
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

pub fn api_key(runas: &str) -> Auth {
    let password = (runas == "svc-pwd").then(|| USER_PWD.into());
    Auth::ApiKey {
        key: KEY.into(),
        runas: runas.into(),
        password,
    }
}

pub fn oauth() -> Auth {
    Auth::OAuth {
        client_id: CLIENT_ID.into(),
        client_secret: CLIENT_SECRET.into(),
    }
}

/// Fast retries (the tests never wait long) and trust in the emulator's CA only.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_interval: Duration::from_millis(5),
        multiplier: 2.0,
        max_interval: Duration::from_millis(40),
        max_elapsed: Duration::from_secs(5),
    }
}

pub fn config(emu: &Emulator, auth: Auth) -> ClientConfig {
    let mut cfg = ClientConfig::new(emu.base_url(), auth);
    cfg.tls.ca_bundle_pem = Some(emu.ca_pem().as_bytes().to_vec());
    cfg.tls.ca_mode = CaMode::Replace;
    cfg.retry = fast_retry();
    cfg.connect_timeout = Duration::from_secs(5);
    cfg.request_timeout = Duration::from_secs(10);
    cfg
}

pub fn client(emu: &Emulator, auth: Auth) -> passwordsafe::Client {
    passwordsafe::Client::new(config(emu, auth)).expect("client config is valid")
}

/// A client whose retry budget is `budget`.
pub fn client_with_budget(emu: &Emulator, auth: Auth, budget: Duration) -> passwordsafe::Client {
    let mut cfg = config(emu, auth);
    cfg.retry.max_elapsed = budget;
    passwordsafe::Client::new(cfg).expect("client config is valid")
}

/// The emulator behind a rate limit: `rate` calls a second, `burst` at once, then 429 with
/// `Retry-After: retry_after_seconds`.
pub async fn start_rate_limited(rate: u32, burst: u32, retry_after_seconds: u32) -> Emulator {
    start_with(Options {
        limits: ps_emulator::LimitConfig {
            rate_per_second: rate,
            burst,
            retry_after_seconds,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

pub async fn state(emu: &Emulator) -> Value {
    Operator::new(emu).state().await
}

/// The number of calls of a route key seen by the emulator.
pub async fn calls(emu: &Emulator, route: &str) -> u64 {
    Operator::new(emu).calls(route).await
}

pub async fn faults(emu: &Emulator, body: Value) {
    Operator::new(emu).faults(body).await
}

pub async fn put_secret(emu: &Emulator, body: Value) {
    Operator::new(emu).put_secret(body).await
}

/// Asserts that no session and no request is left open.
pub async fn assert_closed(emu: &Emulator) {
    Operator::new(emu).assert_closed().await
}

/// Compares a secret value with the expected one without ever printing either.
#[track_caller]
pub fn assert_value(actual: &SecretValue, expected: &str, what: &str) {
    testing::assert_value(actual.expose_bytes(), expected.as_bytes(), what);
}

/// Asserts that a text (error message, debug output) contains none of the seeded values or
/// credentials.
#[track_caller]
pub fn assert_no_values(text: &str) {
    testing::assert_no_secrets(
        text,
        &[
            "PSCANARY-secret-pw-cr3d-Value",
            "PSCANARY-secret-text-top-level",
            "PSCANARY-secret-pw-replica",
            "PSCANARY-secret-pw-b-value",
            "PSCANARY-account-pw-managed-1",
            "PSCANARY-account-pw-rotating-1",
            "PSCANARY-account-pw-b-account",
            KEY,
            OTHER_KEY,
            CLIENT_SECRET,
            USER_PWD,
            "PSCANARY-secret-file-FAKE",
        ],
    );
}
