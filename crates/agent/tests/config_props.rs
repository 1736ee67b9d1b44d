//! Property tests of the agent's configuration (`config::load`): `PS_AGENT_CONFIG` JSON
//! (arbitrary, or a full valid configuration with edits) and sets of BeyondTrust secrets-agent
//! variables (`BT_API_URL`, `BT_API_KEY`, `SECRETS_LIST`, ...) with values valid, near-valid and
//! random, including a client certificate file of random bytes. Whatever the input, loading
//! never panics; a refusal is a `ConfigError` (exit code 2) that names the variable, and for
//! `PS_AGENT_CONFIG` the field, and never shows a credential.
//!
//! CI runs a fixed number of cases from a fixed seed; more with `PROPTEST_CASES`, others with
//! `PROPTEST_RNG_SEED` (`ps_testkit::proptest_config`).

use std::{collections::BTreeMap, io::Write};

use proptest::{prelude::*, sample::Index};
use ps_agent::{
    AgentError,
    config::{BT_VARS, ConfigError, Tuning, load},
    exit,
};
use ps_testkit::{bytes, json, proptest_config};
use serde_json::{Value, json};

/// Credentials in the pools, each of which must never appear in a message.
const KEY: &str = "Key-Canary-7f3a";
const RUNAS_PASSWORD: &str = "Runas-Pw-Canary-1c2d";
const CLIENT_SECRET: &str = "Client-Secret-Canary-9e8d";
const CERT_PASSWORD: &str = "Cert-Pw-Canary-5b6a";
const CANARIES: [&str; 4] = [KEY, RUNAS_PASSWORD, CLIENT_SECRET, CERT_PASSWORD];

/// Every variable the agent reads: a message names at least one of them.
const PS_VARS: [&str; 8] = [
    "PS_AGENT_CONFIG",
    "PS_API_KEY",
    "PS_RUNAS",
    "PS_RUNAS_PASSWORD",
    "PS_CLIENT_ID",
    "PS_CLIENT_SECRET",
    "PS_CA_FILE",
    "PS_AGENT_ROOT",
];

/// A configuration using every part of the format; loads as it is.
fn full_config() -> Value {
    json!({
        "version": 1,
        "passwordSafe": {
            "url": "https://ps.example.com/BeyondTrust/api/public/v3",
            "apiVersion": "3.1",
            "request": {"durationMinutes": 10, "reason": "rollout", "rotateOnCheckin": false}
        },
        "root": "/ps/secrets",
        "secrets": [
            {"name": "db", "path": "team-a/db/password", "format": "json", "fileMode": "0440"},
            {"name": "dsn", "path": "team-a/db/password", "format": "template",
             "template": "postgres://{{ secret.username }}:{{ secret.password }}@db/app", "optional": true},
            {"name": "cfg", "path": "team-a/app/config", "format": "dotenv", "uid": 1000, "gid": 2000}
        ],
        "folders": [{"name": "app", "path": "team-a/app"}, {"name": "app.yaml", "path": "team-a/app", "format": "yaml"}],
        "accounts": [{"name": "account", "account": "db-prod/svc_app", "format": "properties"}],
        "beyondtrust": {"secrets": ["team-a/db/password"], "folders": ["team-a"], "accounts": ["db-prod/svc_app"], "fileMode": "0400"},
        "env": [
            {"name": "DB_PASSWORD", "from": {"secret": "team-a/db/password"}},
            {"name": "DB_USER", "from": {"secretUsername": "team-a/db/password"}},
            {"name": "TOKEN", "from": {"account": "db-prod/svc_app"}, "optional": true}
        ],
        "refresh": {"intervalSeconds": 60, "jitterPercent": 5},
        "signal": {"process": {"process": "nginx", "signal": "SIGHUP"}},
        "readiness": {"httpPort": 8081}
    })
}

/// The strings that matter to the configuration, for generated JSON.
const WORDS: &[&str] = &[
    "",
    "https://ps.example.com/BeyondTrust/api/public/v3",
    "http://ps.example.com/",
    "/ps/secrets",
    "relative",
    "team-a/db/password",
    "a//b",
    "/",
    "..",
    ".hidden",
    "db",
    "db-prod/svc_app",
    "x/y/z",
    "json",
    "template",
    "raw",
    "0400",
    "0777",
    "SIGHUP",
    "{{ secret.password",
    "{% for x in y %}",
    "3.1",
    "4.0",
];

/// Values for the variables, valid and not.
fn value_of(name: &'static str) -> BoxedStrategy<String> {
    let pool: Vec<String> = match name {
        "BT_API_URL" => vec![
            "https://ps.example.com/BeyondTrust/api/public/v3",
            "http://ps/x",
            "https://",
            " ",
        ],
        "BT_API_KEY" | "PS_API_KEY" => vec![
            "Key-Canary-7f3a;runas=svc;",
            "Key-Canary-7f3a;runas=svc;pwd=[Runas-Pw-Canary-1c2d];",
            "Key-Canary-7f3a",
            "Key-Canary-7f3a;runas=;",
            "Key-Canary-7f3a;runas=svc;pwd=[",
            ";;;",
        ],
        "PS_RUNAS" => vec!["svc", "dom\\user", "dömäne\\user", "a\u{7}b"],
        "PS_RUNAS_PASSWORD" => vec!["Runas-Pw-Canary-1c2d"],
        "CLIENT_ID" | "PS_CLIENT_ID" => vec!["11111111-2222-4333-8444-555555555555", "c"],
        "CLIENT_SECRET" | "PS_CLIENT_SECRET" => vec!["Client-Secret-Canary-9e8d"],
        "BT_API_VERSION" => vec!["3.0", "3.1", "3.2", "4.0", "x"],
        "SECRETS_LIST" => vec![
            "team-a/db/password",
            "a/b, c/d",
            ",,",
            "a",
            "/a/b/",
            "a//b",
            "a/b,a/b",
        ],
        "FOLDER_LIST" => vec!["team-a", "team-a/app", ",", "/", "a//b"],
        "MANAGED_ACCOUNTS_LIST" => vec!["db-prod/svc_app", "s", "s/a/b", "/a", "s/"],
        "SECRETS_PATH" => vec!["/tmp/ps-config-props", "relative/dir", "/"],
        "BT_VERIFY_CA" => vec!["true", "false", "False", "maybe"],
        "BT_CLIENT_CERTIFICATE_PATH" | "PS_CA_FILE" => vec!["/nonexistent/ps-config-props.pem", "/"],
        "BT_CLIENT_CERTIFICATE_PASSWORD" => vec!["Cert-Pw-Canary-5b6a"],
        "POLLING_WAIT_BETWEEN_REQUESTS_MINUTES" => {
            vec!["5", "0", "-1", "1e309", "NaN", "inf", "0.001", "525601", "525600"]
        }
        "FETCH_ALL_MANAGED_ACCOUNTS" => vec!["true", "false", "yes"],
        "PS_AGENT_ROOT" => vec!["/ps/other", "relative"],
        _ => vec!["x"],
    }
    .into_iter()
    .map(str::to_owned)
    .collect();
    prop_oneof![
        4 => prop::sample::select(pool),
        1 => Just(String::new()),
        1 => "\\PC{0,16}",
    ]
    .boxed()
}

/// A client certificate file: random bytes, or text that looks like PEM.
fn certificate_file() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        // The start of a PKCS#12 file (a DER SEQUENCE) followed by noise.
        prop::collection::vec(any::<u8>(), 0..256).prop_map(|mut b| {
            b.splice(0..0, [0x30, 0x82, 0x01, 0x00, 0x02, 0x01, 0x03]);
            b
        }),
        prop::sample::select(vec![
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n-----BEGIN ENCRYPTED PRIVATE KEY-----\n",
            "-----BEGIN CERTIFICATE-----\nx\n-----BEGIN PRIVATE KEY-----\nx\n",
            "-----BEGIN nothing",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
}

/// Every variable the agent reads (BeyondTrust's and its own but `PS_AGENT_CONFIG`).
fn all_vars() -> Vec<&'static str> {
    BT_VARS
        .iter()
        .copied()
        .chain(["FETCH_ALL_MANAGED_ACCOUNTS"])
        .chain(PS_VARS.into_iter().filter(|v| *v != "PS_AGENT_CONFIG"))
        .collect()
}

/// A set of variables: each of `all_vars()` present or not, with a value from its pool.
fn env_set() -> impl Strategy<Value = BTreeMap<String, String>> {
    let entries: Vec<_> = all_vars()
        .into_iter()
        .map(|name| prop::option::weighted(0.4, value_of(name)).prop_map(move |v| (name, v)))
        .collect();
    entries.prop_map(|entries| {
        entries
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
            .collect()
    })
}

/// `PS_AGENT_CONFIG` values: arbitrary JSON, the full configuration with edits, or the full
/// configuration's text with byte edits.
fn agent_config() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => json::any_json(WORDS).prop_map(|v| v.to_string()),
        4 => prop::collection::vec(json::edit(WORDS), 1..4).prop_map(|edits| {
            let mut v = full_config();
            for e in &edits {
                json::apply(&mut v, e);
            }
            v.to_string()
        }),
        1 => prop::collection::vec(bytes::edit(), 1..3).prop_map(|edits| {
            let mut b = full_config().to_string().into_bytes();
            for e in &edits {
                bytes::apply(&mut b, e);
            }
            String::from_utf8_lossy(&b).into_owned()
        }),
    ]
}

/// The properties of one load: no panic (the caller), and a refusal that names a variable,
/// names the field of `PS_AGENT_CONFIG`, maps to exit code 2 and shows no credential.
fn check(env: &BTreeMap<String, String>) -> Result<(), TestCaseError> {
    let result = load(env, &Tuning::default());
    let Err(e) = result else {
        return Ok(());
    };
    let ConfigError(message) = &e;
    let all = all_vars();
    let named = all
        .iter()
        .chain(&["PS_AGENT_CONFIG"])
        .any(|v| message.contains(v));
    prop_assert!(named, "names no variable: {message}\nenv: {env:?}");
    for canary in CANARIES {
        prop_assert!(!message.contains(canary), "shows a credential: {message}");
    }
    if let Some(rest) = message.strip_prefix("PS_AGENT_CONFIG ") {
        // The field (`secrets[0].path`, `passwordSafe.url`, ...), the version, or what the whole
        // document lacks; a JSON error names the field unless the text is not JSON at all.
        let input = env.get("PS_AGENT_CONFIG").map(String::as_str).unwrap_or_default();
        let an_object = serde_json::from_str::<Value>(input).is_ok_and(|v| v.is_object());
        if rest.starts_with("is not valid JSON") {
            // About the whole document: not JSON, not an object, or a field named in quotes
            // (`unknown field`, `missing field`).
            prop_assert!(!an_object || rest.contains('`'), "names no field: {message}");
        } else if !rest.starts_with("version ") {
            let field = rest.split(": ").next().unwrap_or_default();
            prop_assert!(!field.is_empty() && field != rest, "names no field: {message}");
        }
    }
    prop_assert_eq!(AgentError::Config(e).exit_code(), exit::CONFIG);
    Ok(())
}

#[test]
fn the_full_configuration_loads() {
    let mut env = BTreeMap::new();
    env.insert("PS_AGENT_CONFIG".to_owned(), full_config().to_string());
    env.insert("PS_API_KEY".to_owned(), format!("{KEY};runas=svc;"));
    let settings = load(&env, &Tuning::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(settings.config.secrets.len(), 3);
    assert_eq!(settings.config.env.len(), 3);
}

proptest! {
    #![proptest_config(proptest_config(256))]

    #[test]
    fn agent_config_json(config in agent_config(), mut env in env_set()) {
        env.retain(|k, _| k.starts_with("PS_"));
        env.insert("PS_AGENT_CONFIG".to_owned(), config);
        check(&env)?;
    }

    #[test]
    fn agent_config_json_with_api_key(config in agent_config()) {
        let mut env = BTreeMap::new();
        env.insert("PS_AGENT_CONFIG".to_owned(), config);
        env.insert("PS_API_KEY".to_owned(), format!("{KEY};runas=svc;"));
        check(&env)?;
    }

    #[test]
    fn beyondtrust_variables(env in env_set()) {
        let mut env = env;
        env.retain(|k, _| !k.starts_with("PS_"));
        check(&env)?;
    }

    #[test]
    fn beyondtrust_client_certificate(
        cert in certificate_file(),
        password in prop::option::of(Just(CERT_PASSWORD)),
        list in any::<Index>(),
    ) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&cert).unwrap();
        let mut env: BTreeMap<String, String> = [
            ("BT_API_URL", "https://ps.example.com/BeyondTrust/api/public/v3"),
            ("BT_API_KEY", "Key-Canary-7f3a;runas=svc;"),
            ("SECRETS_LIST", *json::pick(&["team-a/db/password", "a/b,c/d"], &list)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        env.insert("BT_CLIENT_CERTIFICATE_PATH".into(), file.path().to_string_lossy().into_owned());
        if let Some(p) = password {
            env.insert("BT_CLIENT_CERTIFICATE_PASSWORD".into(), p.to_owned());
        }
        check(&env)?;
    }

    #[test]
    fn every_variable_at_once(env in env_set(), config in agent_config()) {
        let mut env = env;
        env.insert("PS_AGENT_CONFIG".to_owned(), config);
        check(&env)?;
    }
}
