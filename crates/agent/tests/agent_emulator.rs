//! The `ps-agent` binary against `ps-emulator` over real TLS on 127.0.0.1.
//!
//! Every run's stdout and stderr are scanned for every seeded value and credential; file
//! contents are compared without printing them.

mod common;

use std::{
    collections::BTreeMap,
    fs,
    io::{Read, Write},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::*;
use ps_emulator::testing;
use serde_json::json;

fn env_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn every_output_kind_and_format() {
    let h = Harness::new();
    let config = h.agent_config(json!({
        "secrets": [
            {"name": "db-password", "path": "apps/db/password"},
            {"name": "db.json", "path": "apps/db/password", "format": "json", "fileMode": "0440"},
            {"name": "db.yaml", "path": "apps/db/password", "format": "yaml"},
            {"name": "config.env", "path": "apps/db/config", "format": "dotenv"},
            {"name": "config.properties", "path": "apps/db/config", "format": "properties"},
            {"name": "tls.crt", "path": "apps/db/tls.crt"},
            {"name": "token", "path": "apps/api-token"},
            {"name": "app.conf", "path": "apps/db/password", "format": "template",
             "template": "url=postgres://{{ secret.username }}:{{ secret.value }}@db\ntoken={{ secrets.token.value }}\naccount={{ secrets.account.account }}:{{ secrets.account.value }}\n"}
        ],
        "folders": [
            {"name": "db-dir", "path": "apps/db"},
            {"name": "rotate.json", "path": "apps/rotate", "format": "json"}
        ],
        "accounts": [
            {"name": "account", "account": "db-prod/svc_app"},
            {"name": "account.yaml", "account": "db-prod/svc_app", "format": "yaml"}
        ]
    }));
    let run = h.run(&h.env_api_key(&config), &["fetch"]);
    expect_code(&run, 0);
    let r = h.root();
    assert_file(&r.join("db-password"), DB_PASSWORD.as_bytes());
    assert_mode(&r.join("db-password"), 0o400);
    let expected_json = serde_json::to_vec_pretty(&json!({
        "title": "password", "username": DB_USER, "value": DB_PASSWORD
    }))
    .unwrap();
    assert_file(&r.join("db.json"), &[expected_json, b"\n".to_vec()].concat());
    assert_mode(&r.join("db.json"), 0o440);
    let yaml =
        format!("\"title\": \"password\"\n\"username\": \"{DB_USER}\"\n\"value\": \"{DB_PASSWORD}\"\n");
    assert_file(&r.join("db.yaml"), yaml.as_bytes());
    let dotenv =
        "title='config'\nvalue=\"PSCANARY-secret-text-line1\\nline2 'q' \\\"dq\\\" \\$HOME #x =y\"\n";
    assert_file(&r.join("config.env"), dotenv.as_bytes());
    let props = "title=config\nvalue=PSCANARY-secret-text-line1\\nline2 'q' \"dq\" $HOME \\#x \\=y\n";
    assert_file(&r.join("config.properties"), props.as_bytes());
    assert_file(&r.join("tls.crt"), FILE_CONTENT.as_bytes());
    assert_file(&r.join("token"), API_TOKEN.as_bytes());
    let conf = format!(
        "url=postgres://{DB_USER}:{DB_PASSWORD}@db\ntoken={API_TOKEN}\naccount=svc_app:{ACCOUNT_PW}\n"
    );
    assert_file(&r.join("app.conf"), conf.as_bytes());
    assert_eq!(entries(&r.join("db-dir")), ["config", "password", "tls.crt"]);
    assert_file(&r.join("db-dir/password"), DB_PASSWORD.as_bytes());
    assert_file(&r.join("db-dir/tls.crt"), FILE_CONTENT.as_bytes());
    assert_file(
        &r.join("rotate.json"),
        b"{\n  \"a\": \"PSCANARY-secret-text-gen-0\",\n  \"b\": \"PSCANARY-secret-text-gen-0\"\n}\n",
    );
    assert_file(&r.join("account"), ACCOUNT_PW.as_bytes());
    let acct_yaml =
        format!("\"account\": \"svc_app\"\n\"system\": \"db-prod\"\n\"value\": \"{ACCOUNT_PW}\"\n");
    assert_file(&r.join("account.yaml"), acct_yaml.as_bytes());
    // Layout: links through ..data, the agent's own files, nothing else.
    let names = entries(&r);
    assert!(
        names.contains(&"..data".to_owned()) && names.contains(&".ps-ready".to_owned()),
        "{names:?}"
    );
    assert_eq!(
        names
            .iter()
            .filter(|n| n.starts_with("..") && *n != "..data")
            .count(),
        1,
        "{names:?}"
    );
    assert_eq!(fs::read_link(r.join("token")).unwrap(), Path::new("..data/token"));
    let result = result_file(&r);
    assert_eq!(result["ok"], true);
    assert_eq!(result["outputs"].as_array().unwrap().len(), 12);
    assert_no_leak(&result.to_string(), &[]);
    // One fetch per distinct reference, concurrently over one session.
    assert_eq!(h.calls("POST auth/signappin"), 1);
    assert_eq!(h.calls("GET secrets-safe/secrets"), 6);
    assert_eq!(h.calls("POST requests"), 1);
    h.assert_closed();
}

#[test]
fn every_auth_mode() {
    let h = Harness::new();
    let config = h.agent_config(json!({"secrets": [{"name": "pw", "path": "apps/db/password"}]}));
    let ca = h.ca_file.to_string_lossy().into_owned();
    let root = h.root().to_string_lossy().into_owned();
    let url = h.base_url();
    let bt_key = format!("{KEY};runas={RUNAS_PWD_USER};pwd=[{RUNAS_PWD}];");
    let cases: Vec<(&str, BTreeMap<String, String>)> = vec![
        ("api key + runas", h.env_api_key(&config)),
        (
            "api key + runas + password",
            env_of(&[
                ("PS_AGENT_CONFIG", &config),
                ("PS_CA_FILE", &ca),
                ("PS_API_KEY", KEY),
                ("PS_RUNAS", RUNAS_PWD_USER),
                ("PS_RUNAS_PASSWORD", RUNAS_PWD),
            ]),
        ),
        (
            "BeyondTrust key form in PS_API_KEY",
            env_of(&[
                ("PS_AGENT_CONFIG", &config),
                ("PS_CA_FILE", &ca),
                ("PS_API_KEY", &bt_key),
            ]),
        ),
        (
            "OAuth",
            env_of(&[
                ("PS_AGENT_CONFIG", &config),
                ("PS_CA_FILE", &ca),
                ("PS_CLIENT_ID", CLIENT_ID),
                ("PS_CLIENT_SECRET", CLIENT_SECRET),
            ]),
        ),
        (
            "BeyondTrust BT_API_KEY",
            env_of(&[
                ("BT_API_URL", &url),
                ("BT_API_KEY", &bt_key),
                ("SECRETS_LIST", "apps/db/password"),
                ("SECRETS_PATH", &root),
                ("PS_CA_FILE", &ca),
            ]),
        ),
        (
            "BeyondTrust OAuth",
            env_of(&[
                ("BT_API_URL", &url),
                ("CLIENT_ID", CLIENT_ID),
                ("CLIENT_SECRET", CLIENT_SECRET),
                ("BT_API_VERSION", "3.2"),
                ("SECRETS_LIST", "apps/db/password"),
                ("SECRETS_PATH", &root),
                ("PS_CA_FILE", &ca),
            ]),
        ),
    ];
    for (what, env) in cases {
        let _ = fs::remove_dir_all(h.root());
        let run = h.run(&env, &[]);
        assert!(run.code == 0, "{what}: exit {}\n{}", run.code, {
            assert_no_leak(&run.log(), &[]);
            run.log()
        });
        let file = if env.contains_key("PS_AGENT_CONFIG") {
            h.root().join("pw")
        } else {
            h.root().join("apps/db/password")
        };
        assert_file(&file, DB_PASSWORD.as_bytes());
        h.assert_closed();
    }
    // Wrong password for a user that needs one, and a wrong key: authentication errors.
    for (what, env) in [
        (
            "bad runas password",
            env_of(&[
                ("PS_AGENT_CONFIG", &config),
                ("PS_CA_FILE", &ca),
                ("PS_API_KEY", KEY),
                ("PS_RUNAS", RUNAS_PWD_USER),
                ("PS_RUNAS_PASSWORD", "wrong"),
            ]),
        ),
        (
            "bad key",
            env_of(&[
                ("PS_AGENT_CONFIG", &config),
                ("PS_CA_FILE", &ca),
                ("PS_API_KEY", "nope;runas=svc-agent;"),
            ]),
        ),
        (
            "bad OAuth secret",
            env_of(&[
                ("PS_AGENT_CONFIG", &config),
                ("PS_CA_FILE", &ca),
                ("PS_CLIENT_ID", CLIENT_ID),
                ("PS_CLIENT_SECRET", "wrong-secret"),
            ]),
        ),
    ] {
        let _ = fs::remove_dir_all(h.root());
        let run = h.run(&env, &["fetch"]);
        expect_code(&run, 1);
        assert!(
            run.stderr.contains("authentication failed"),
            "{what}: {}",
            run.stderr
        );
        assert!(!h.root().join("..data").exists(), "{what}: nothing switched in");
        assert_eq!(result_file(&h.root())["ok"], false);
        h.assert_closed();
    }
}

#[test]
fn beyondtrust_drop_in_layout() {
    let h = Harness::new();
    let root = h.root();
    let env = env_of(&[
        ("BT_API_URL", &h.base_url()),
        ("BT_API_KEY", &format!("{KEY};runas={RUNAS};")),
        ("BT_API_VERSION", "3.1"),
        ("SECRETS_LIST", " apps/db/password , apps/api-token,, "),
        ("FOLDER_LIST", "apps/rotate"),
        ("MANAGED_ACCOUNTS_LIST", "db-prod/svc_app"),
        ("SECRETS_PATH", &root.to_string_lossy()),
        ("BT_VERIFY_CA", "true"),
        ("PS_CA_FILE", &h.ca_file.to_string_lossy()),
    ]);
    let run = h.run(&env, &[]);
    expect_code(&run, 0);
    assert_file(&root.join("apps/db/password"), DB_PASSWORD.as_bytes());
    assert_file(&root.join("apps/api-token"), API_TOKEN.as_bytes());
    assert_file(&root.join("apps/rotate/a"), b"PSCANARY-secret-text-gen-0");
    assert_file(&root.join("apps/rotate/b"), b"PSCANARY-secret-text-gen-0");
    assert_file(&root.join("db-prod/svc_app"), ACCOUNT_PW.as_bytes());
    assert_eq!(entries(&root.join("apps")), ["api-token", "db", "rotate"]);
    assert_eq!(entries(&root.join("apps/db")), ["password"]);
    let visible: Vec<String> = entries(&root)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(visible, ["apps", "db-prod"]);
    h.assert_closed();

    // Verification on by default: without the CA the agent refuses the emulator's certificate.
    let mut no_ca = env.clone();
    no_ca.remove("PS_CA_FILE");
    no_ca.remove("BT_VERIFY_CA");
    let run = h.run(&no_ca, &["fetch"]);
    expect_code(&run, 1);
    assert!(
        run.stderr.contains("network error") || run.stderr.contains("certificate"),
        "{}",
        run.stderr
    );
    // BT_VERIFY_CA=False disables it, loudly.
    no_ca.insert("BT_VERIFY_CA".into(), "False".into());
    let run = h.run(&no_ca, &[]);
    expect_code(&run, 0);
    assert!(run.stderr.contains("DISABLED"), "{}", run.stderr);
    h.assert_closed();
}

#[test]
fn fail_closed_with_one_line_per_failed_output() {
    let h = Harness::new();
    let config = h.agent_config(json!({
        "secrets": [
            {"name": "ok", "path": "apps/db/password"},
            {"name": "missing", "path": "apps/db/nope"},
            {"name": "forbidden", "path": "others/db/password"},
            {"name": "maybe", "path": "apps/db/absent", "optional": true}
        ],
        "accounts": [{"name": "acct", "account": "db-prod/nobody"}]
    }));
    let run = h.run(&h.env_api_key(&config), &["fetch"]);
    expect_code(&run, 1);
    let lines: Vec<&str> = run.stderr.lines().collect();
    let find = |needle: &str| lines.iter().any(|l| l.contains(needle));
    assert!(
        find("output \"missing\": secret \"apps/db/nope\": not found"),
        "{}",
        run.stderr
    );
    assert!(
        find("output \"forbidden\": secret \"others/db/password\": permission denied"),
        "{}",
        run.stderr
    );
    assert!(
        find("output \"acct\": managed account \"db-prod/nobody\": not found"),
        "{}",
        run.stderr
    );
    assert!(find("WARN  optional output \"maybe\""), "{}", run.stderr);
    assert!(find("fetch FAILED"), "{}", run.stderr);
    assert!(!h.root().join("..data").exists(), "nothing is switched in");
    assert!(!h.root().join("ok").exists());
    assert!(!h.root().join(".ps-ready").exists());
    let result = result_file(&h.root());
    assert_eq!(result["ok"], false);
    let failed: Vec<&str> = result["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["ok"] == false)
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["missing", "forbidden", "maybe", "acct"]);
    h.assert_closed();

    // Only the optional one missing: exit 0, the rest written.
    let config = h.agent_config(json!({
        "secrets": [
            {"name": "ok", "path": "apps/db/password"},
            {"name": "maybe", "path": "apps/db/absent", "optional": true}
        ]
    }));
    let run = h.run(&h.env_api_key(&config), &["fetch"]);
    expect_code(&run, 0);
    assert!(run.stderr.contains("optional output \"maybe\""), "{}", run.stderr);
    assert_file(&h.root().join("ok"), DB_PASSWORD.as_bytes());
    assert!(!h.root().join("maybe").exists());
    h.assert_closed();

    // A later failed fetch leaves the good generation untouched.
    let before = fs::read_link(h.root().join("..data")).unwrap();
    let config = h.agent_config(json!({"secrets": [{"name": "ok", "path": "apps/db/nope"}]}));
    let run = h.run(&h.env_api_key(&config), &["fetch"]);
    expect_code(&run, 1);
    assert_eq!(fs::read_link(h.root().join("..data")).unwrap(), before);
    assert_file(&h.root().join("ok"), DB_PASSWORD.as_bytes());
}

#[test]
fn invalid_configuration_exits_2_naming_the_variable() {
    let h = Harness::new();
    let good = h.agent_config(json!({"secrets": [{"name": "x", "path": "apps/db/password"}]}));
    let cases: Vec<(BTreeMap<String, String>, &str)> = vec![
        (BTreeMap::new(), "nothing to do"),
        (
            env_of(&[("PS_AGENT_CONFIG", "{")]),
            "PS_AGENT_CONFIG is not valid JSON",
        ),
        (env_of(&[("PS_AGENT_CONFIG", &good)]), "no credentials"),
        (
            env_of(&[
                ("PS_AGENT_CONFIG", &good.replace("apps/db/password", "nofolder")),
                ("PS_API_KEY", "k;runas=u;"),
            ]),
            "PS_AGENT_CONFIG secrets[0].path: secret path \"nofolder\" has no folder",
        ),
        (
            env_of(&[("BT_API_URL", "https://x/y"), ("SECRETS_LIST", "a/b")]),
            "no credentials: set BT_API_KEY",
        ),
        (
            env_of(&[
                ("BT_API_URL", "https://x/y"),
                ("SECRETS_LIST", "a/b"),
                ("CLIENT_ID", "c"),
            ]),
            "CLIENT_SECRET is not set",
        ),
        (
            env_of(&[
                ("BT_API_URL", "https://x/y"),
                ("SECRETS_LIST", "a/b"),
                ("BT_API_KEY", "k;runas=u;"),
                ("BT_VERIFY_CA", "nah"),
            ]),
            "BT_VERIFY_CA",
        ),
        (
            env_of(&[
                ("BT_API_URL", "https://x/y"),
                ("SECRETS_LIST", "a/b"),
                ("BT_API_KEY", "k"),
            ]),
            "BT_API_KEY: ",
        ),
    ];
    for (env, needle) in cases {
        let run = h.run(&env, &["fetch"]);
        expect_code(&run, 2);
        assert!(
            run.stderr.contains(needle),
            "expected {needle:?} in: {}",
            run.stderr
        );
    }
    // Usage errors too.
    let run = h.run(&BTreeMap::new(), &["no-such-command"]);
    assert_eq!(run.code, 2);
}

#[test]
fn hostile_names_never_escape_the_root() {
    let h = Harness::new();
    let outside = h.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let root = h.root();
    fs::create_dir_all(&root).unwrap();
    // Planted links where the agent will write: an output's name and a BeyondTrust folder.
    std::os::unix::fs::symlink(outside.join("victim"), root.join("good")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("apps")).unwrap();
    let folders = [
        "apps/hostile",
        "apps/hostile-backslash",
        "apps/hostile-nul",
        "apps/hostile-newline",
        "apps/..",
        "apps/hostile-data",
    ];
    for folder in folders {
        // A reference with a "." or ".." segment is refused by the reference contract (as the
        // webhook refuses the annotation) before anything is fetched; the hostile names the
        // API returns are refused when written.
        let (code, message) = if folder == "apps/.." {
            (2, "has a \".\" or \"..\" segment (number 2)")
        } else {
            (1, "cannot be a file or directory name")
        };
        // Named folder output (directory) and BeyondTrust FOLDER_LIST.
        let config = h.agent_config(json!({"folders": [{"name": "dir", "path": folder}]}));
        let run = h.run(&h.env_api_key(&config), &["fetch"]);
        expect_code(&run, code);
        assert!(run.stderr.contains(message), "{folder}: {}", run.stderr);
        let env = env_of(&[
            ("BT_API_URL", &h.base_url()),
            ("BT_API_KEY", &format!("{KEY};runas={RUNAS};")),
            ("FOLDER_LIST", folder),
            ("SECRETS_PATH", &root.to_string_lossy()),
            ("PS_CA_FILE", &h.ca_file.to_string_lossy()),
        ]);
        let run = h.run(&env, &[]);
        expect_code(&run, code);
        assert!(run.stderr.contains(message), "{folder}: {}", run.stderr);
        assert!(
            entries(&outside).is_empty(),
            "{folder}: something was written outside the root"
        );
        assert!(!h.dir.path().join("etc").exists());
        h.assert_closed();
    }
    // The planted links are replaced by the agent's own, never followed.
    let config = h.agent_config(json!({
        "secrets": [{"name": "good", "path": "apps/db/password"}],
        "beyondtrust": {"secrets": ["apps/api-token"]}
    }));
    let run = h.run(&h.env_api_key(&config), &["fetch"]);
    expect_code(&run, 0);
    assert_file(&root.join("good"), DB_PASSWORD.as_bytes());
    assert_file(&root.join("apps/api-token"), API_TOKEN.as_bytes());
    assert!(
        entries(&outside).is_empty(),
        "nothing was written outside the root"
    );
    h.assert_closed();
}

#[test]
fn exec_sets_the_environment_and_execs() {
    let h = Harness::new();
    let config = h.agent_config(json!({
        "env": [
            {"name": "DB_PASSWORD", "from": {"secret": "apps/db/password"}},
            {"name": "DB_USER", "from": {"secretUsername": "apps/db/password"}},
            {"name": "ACCOUNT_PW", "from": {"account": "db-prod/svc_app"}},
            {"name": "CONFIG", "from": {"secret": "apps/db/config"}}
        ]
    }));
    let run = h.run(&h.env_api_key(&config), &["fetch"]);
    expect_code(&run, 0);
    assert_mode(&h.root().join("..data/.ps-env"), 0o440);
    let root = h.root().to_string_lossy().into_owned();
    // The comparison happens inside the child; nothing is printed.
    let script = format!(
        "test \"$DB_PASSWORD\" = '{DB_PASSWORD}' && test \"$DB_USER\" = '{DB_USER}' && \
         test \"$ACCOUNT_PW\" = '{ACCOUNT_PW}' && test \"$CONFIG\" = \"$(printf 'PSCANARY-secret-text-line1\\nline2 %sq%s \"dq\" $HOME #x =y' \"'\" \"'\")\" && \
         test -z \"$PS_API_KEY\" && test \"$KEEP\" = kept"
    );
    let env = env_of(&[
        ("PS_AGENT_ROOT", &root),
        ("KEEP", "kept"),
        ("PATH", "/usr/bin:/bin"),
        ("HOME", "/nonexistent"),
    ]);
    let run = h.run(&env, &["exec", "--", "sh", "-c", &script]);
    expect_code(&run, 0);
    let run = h.run(&env, &["exec", "--", "sh", "-c", "test \"$DB_PASSWORD\" = wrong"]);
    expect_code(&run, 1);
    // --env-file, --root
    let env_file = h.root().join("..data/.ps-env");
    let run = h.run(
        &BTreeMap::new(),
        &[
            "exec",
            "--env-file",
            &env_file.to_string_lossy(),
            "--",
            "/bin/sh",
            "-c",
            "test -n \"$DB_PASSWORD\"",
        ],
    );
    expect_code(&run, 0);
    let run = h.run(
        &BTreeMap::new(),
        &[
            "exec",
            "--root",
            &root,
            "--",
            "/bin/sh",
            "-c",
            "test -n \"$DB_USER\"",
        ],
    );
    expect_code(&run, 0);
    // Missing env file, missing command.
    let run = h.run(
        &BTreeMap::new(),
        &["exec", "--root", "/nonexistent", "--", "/bin/true"],
    );
    expect_code(&run, 1);
    assert!(
        run.stderr
            .contains("cannot read the env file /nonexistent/..data/.ps-env"),
        "{}",
        run.stderr
    );
    let run = h.run(&env, &["exec", "--", "/no/such/program"]);
    expect_code(&run, 127);
    assert!(
        run.stderr.contains("cannot run /no/such/program"),
        "{}",
        run.stderr
    );
    h.assert_closed();
}

#[test]
fn copy_self_and_ready() {
    let h = Harness::new();
    let bin_dir = h.root().join(".ps-bin");
    let run = h.run(&BTreeMap::new(), &["copy-self", &bin_dir.to_string_lossy()]);
    expect_code(&run, 0);
    let copied = bin_dir.join("ps-agent");
    assert_mode(&copied, 0o555);
    assert_eq!(
        fs::read(&copied).unwrap(),
        fs::read(env!("CARGO_BIN_EXE_ps-agent")).unwrap()
    );
    assert_eq!(entries(&bin_dir), ["ps-agent"], "no temporary file left");
    // Copying again replaces it atomically.
    expect_code(
        &h.run(&BTreeMap::new(), &["copy-self", &bin_dir.to_string_lossy()]),
        0,
    );

    let root = h.root().to_string_lossy().into_owned();
    let ready = |env: &BTreeMap<String, String>| {
        std::process::Command::new(&copied)
            .env_clear()
            .envs(env)
            .args(["ready", "--root", &root])
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(ready(&BTreeMap::new()), Some(1));
    let config = h.agent_config(json!({
        "secrets": [{"name": "pw", "path": "apps/db/password"}],
        "env": [{"name": "DB_PASSWORD", "from": {"secret": "apps/db/password"}}]
    }));
    expect_code(&h.run(&h.env_api_key(&config), &["fetch"]), 0);
    assert_eq!(ready(&BTreeMap::new()), Some(0));
    // The copied binary finds <root>/..data/.ps-env by itself (it runs from <root>/.ps-bin).
    let status = std::process::Command::new(&copied)
        .env_clear()
        .args([
            "exec",
            "--",
            "/bin/sh",
            "-c",
            &format!("test \"$DB_PASSWORD\" = '{DB_PASSWORD}'"),
        ])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    // .ps-bin survives later generations.
    expect_code(&h.run(&h.env_api_key(&config), &["fetch"]), 0);
    assert!(copied.exists());
}

#[test]
fn concurrent_fetches_fit_in_three_round_trips() {
    let h = Harness::new();
    let config = h.agent_config(json!({
        "secrets": [
            {"name": "a", "path": "apps/db/password"},
            {"name": "b", "path": "apps/db/config"},
            {"name": "c", "path": "apps/db/tls.crt"},
            {"name": "d", "path": "apps/api-token"},
            {"name": "e", "path": "apps/rotate/a"}
        ]
    }));
    // A latency long enough that calls started together are still in flight together, however
    // loaded the machine is; what is asserted is how many were in flight at once (the emulator's
    // own count), never how long anything took (the release figures are in docs/agent.md).
    h.faults(json!({"latency_ms": 300}));
    let mut env = h.env_api_key(&config);
    env.insert("PS_LOG_FORMAT".into(), "json".into());
    let run = h.run(&env, &["fetch"]);
    expect_code(&run, 0);
    h.faults(json!({"reset": true}));
    let summary: serde_json::Value = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["msg"] == "fetch complete")
        .expect("a JSON summary line");
    assert_eq!(summary["references"], 5);
    assert_eq!(summary["files"], 5);
    let peak = h.state()["load"]["peak_in_flight"].as_u64().unwrap();
    assert!(
        peak >= 5,
        "at most {peak} calls were in flight at once: the five lookups ran one after another"
    );
    h.assert_closed();
}

#[test]
fn retry_budget_holds() {
    let h = Harness::new();
    let config = h.agent_config(json!({"secrets": [{"name": "a", "path": "apps/db/password"}]}));
    h.faults(json!({"fail": {"route": "GET secrets-safe/secrets", "status": 503, "count": 100000}}));
    let mut env = h.env_api_key(&config);
    env.insert("PS_RETRY_BUDGET_SECONDS".into(), "2".into());
    let start = Instant::now();
    let run = h.run(&env, &["fetch"]);
    let took = start.elapsed();
    expect_code(&run, 1);
    assert!(run.stderr.contains("server error"), "{}", run.stderr);
    assert!(took < Duration::from_secs(6), "took {took:?} with a 2 s budget");
    let attempts = h.calls("GET secrets-safe/secrets");
    assert!((2..200).contains(&attempts), "{attempts} attempts");
    h.faults(json!({"reset": true}));
    h.assert_closed();
}

/// Writes two files whose contents must always match, rotates them many times, and checks
/// from other threads that a reader never sees a torn file or a mix of generations.
#[test]
fn atomic_swap_under_concurrent_readers() {
    let h = Harness::new();
    let config = h.agent_config(json!({
        "secrets": [{"name": "a", "path": "apps/rotate/a"}, {"name": "b", "path": "apps/rotate/b"}]
    }));
    let env = h.env_api_key(&config);
    let value = |n: usize| format!("PSCANARY-secret-text-gen-{n:04}-{}", "x".repeat(4000 + n % 7));
    h.set_secret("apps/rotate", "a", &value(0));
    h.set_secret("apps/rotate", "b", &value(0));
    expect_code(&h.run(&env, &["fetch"]), 0);

    let root = h.root();
    let stop = Arc::new(AtomicBool::new(false));
    let consistent = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    // Pinned reader: opens ..data once, reads both files through that directory.
    {
        let (root, stop, consistent) = (root.clone(), stop.clone(), consistent.clone());
        readers.push(std::thread::spawn(move || {
            let mut generations = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Relaxed) {
                let Ok(dir) = fs::File::open(root.join("..data")) else {
                    continue;
                };
                let fd = std::os::fd::AsRawFd::as_raw_fd(&dir);
                let read = |name: &str| fs::read(format!("/proc/self/fd/{fd}/{name}"));
                match (read("a"), read("b")) {
                    (Ok(a), Ok(b)) => {
                        assert!(a == b, "mixed generations: a and b differ");
                        assert!(
                            a.starts_with(b"PSCANARY-secret-text-gen-") && a.len() >= 4000,
                            "torn file ({} bytes)",
                            a.len()
                        );
                        // The value's prefix and its generation number.
                        generations.insert(a[.."PSCANARY-secret-text-gen-0000".len()].to_vec());
                        consistent.fetch_add(1, Ordering::Relaxed);
                    }
                    // The generation was removed after a newer one was switched in: retry.
                    _ => continue,
                }
            }
            generations.len()
        }));
    }
    // Path reader: every read through <root>/a is a whole value.
    {
        let (root, stop) = (root.clone(), stop.clone());
        readers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut f) = fs::File::open(root.join("a")) {
                    let mut buf = Vec::new();
                    if f.read_to_end(&mut buf).is_ok() {
                        assert!(
                            buf.starts_with(b"PSCANARY-secret-text-gen-") && buf.len() >= 4000,
                            "torn file ({} bytes)",
                            buf.len()
                        );
                        n += 1;
                    }
                }
            }
            n
        }));
    }
    for n in 1..=25 {
        h.set_secret("apps/rotate", "a", &value(n));
        h.set_secret("apps/rotate", "b", &value(n));
        let run = h.run(&env, &["fetch"]);
        expect_code(&run, 0);
    }
    stop.store(true, Ordering::Relaxed);
    let seen_generations = readers.remove(0).join().expect("pinned reader");
    let path_reads = readers.remove(0).join().expect("path reader");
    assert!(
        consistent.load(Ordering::Relaxed) > 50,
        "too few consistent reads"
    );
    assert!(
        seen_generations > 3,
        "the reader saw only {seen_generations} generations"
    );
    assert!(path_reads > 50);
    assert_file(&root.join("a"), value(25).as_bytes());
    // No temporary files or old generations left behind.
    let leftovers: Vec<String> = entries(&root)
        .into_iter()
        .filter(|n| n.starts_with(".."))
        .collect();
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    h.assert_closed();
}

/// A readiness port another process holds fails `watch` at start, naming the setting, instead
/// of running with a probe that can never pass.
#[test]
fn watch_fails_at_start_when_the_readiness_port_is_taken() {
    let h = Harness::new();
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let config = h.agent_config(json!({
        "secrets": [{"name": "a", "path": "apps/rotate/a"}],
        "readiness": {"httpPort": port}
    }));
    let run = h.run(&h.env_api_key(&config), &["watch"]);
    assert_eq!(run.code, 1, "{}", run.log());
    assert!(
        run.stderr
            .contains(&format!("readiness.httpPort {port}: cannot listen")),
        "{}",
        run.log()
    );
    assert!(
        !h.root().join(".ps-ready").exists(),
        "no generation before the start failed"
    );
    drop(holder);
}

/// The refresh loop: readiness, rotation through `PUT /_emulator/secret`, outages with backoff
/// that keep the last good files, re-authentication after the sessions expire, the change
/// signal, and SIGTERM → sign-out, check-in, exit 0.
#[test]
fn watch_refreshes_survives_outages_and_stops_cleanly() {
    let h = Harness::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let config = h.agent_config(json!({
        "secrets": [{"name": "a", "path": "apps/rotate/a"}],
        "accounts": [{"name": "acct", "account": "db-prod/svc_app"}],
        "refresh": {"intervalSeconds": 1, "jitterPercent": 0},
        "signal": {"file": "changed"},
        "readiness": {"httpPort": port}
    }));
    h.set_secret("apps/rotate", "a", "PSCANARY-secret-text-watch-1");
    let log = h.dir.path().join("watch.log");
    let mut child = h.spawn_listening(&h.env_api_key(&config), &["watch"], &log, listener);
    let root = h.root();
    let read = |name: &str| fs::read(root.join(name)).unwrap_or_default();
    wait_for("first generation", Duration::from_secs(20), || {
        root.join(".ps-ready").exists()
    });
    testing::assert_value(&read("a"), b"PSCANARY-secret-text-watch-1", "first value");
    let http_ready = || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert!(http_ready().starts_with("HTTP/1.1 200"));
    assert!(
        !root.join("changed").exists(),
        "no signal for the first generation"
    );

    // Rotation is picked up, and signalled.
    h.set_secret("apps/rotate", "a", "PSCANARY-secret-text-watch-2");
    wait_for("rotated value", Duration::from_secs(20), || {
        read("a") == b"PSCANARY-secret-text-watch-2"
    });
    wait_for("marker file", Duration::from_secs(5), || {
        root.join("changed").exists()
    });
    let gen2 = fs::read_link(root.join("..data")).unwrap();
    // The managed account's request is checked in after each refresh's files are written, not
    // left open until sign-out (a rotate-on-check-in account would never rotate).
    wait_for("check-ins while running", Duration::from_secs(10), || {
        h.calls("PUT requests/{id}/checkin") >= 2 && h.state()["requests_open"] == 0
    });

    // Unchanged content: no new generation.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        fs::read_link(root.join("..data")).unwrap(),
        gen2,
        "unchanged content rewrote the generation"
    );

    // Outage: every lookup fails; the last good files stay, refreshes back off.
    h.faults(json!({"fail": {"route": "GET secrets-safe/secrets", "status": 503, "count": 1000000}}));
    h.set_secret("apps/rotate", "a", "PSCANARY-secret-text-watch-3");
    wait_for("a failed refresh", Duration::from_secs(30), || {
        fs::read(root.join(".ps-result.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .is_some_and(|v| v["ok"] == false)
    });
    testing::assert_value(
        &read("a"),
        b"PSCANARY-secret-text-watch-2",
        "last good value kept through the outage",
    );
    assert_eq!(fs::read_link(root.join("..data")).unwrap(), gen2);
    assert!(
        http_ready().starts_with("HTTP/1.1 200"),
        "still ready during an outage"
    );
    h.faults(json!({"reset": true}));
    wait_for("recovery", Duration::from_secs(30), || {
        read("a") == b"PSCANARY-secret-text-watch-3"
    });

    // Sessions expire on the server: the next refresh signs in again.
    let sign_ins = h.calls("POST auth/signappin");
    h.faults(json!({"expire_sessions": true}));
    h.set_secret("apps/rotate", "a", "PSCANARY-secret-text-watch-4");
    wait_for("value after re-authentication", Duration::from_secs(30), || {
        read("a") == b"PSCANARY-secret-text-watch-4"
    });
    assert!(
        h.calls("POST auth/signappin") > sign_ins,
        "no new sign-in after the sessions expired"
    );

    signal(&child, rustix::process::Signal::TERM);
    let code = wait_exit(&mut child, Duration::from_secs(20));
    let text = fs::read_to_string(&log).unwrap();
    keep_log(&text);
    assert_no_leak(
        &text,
        &[
            "PSCANARY-secret-text-watch-1",
            "PSCANARY-secret-text-watch-2",
            "PSCANARY-secret-text-watch-3",
            "PSCANARY-secret-text-watch-4",
        ],
    );
    assert_eq!(code, 0, "watch exit code:\n{text}");
    assert!(text.contains("stopped: signed out"), "{text}");
    assert!(
        text.contains("refresh FAILED: keeping the last good generation"),
        "{text}"
    );
    h.assert_closed();
}

#[test]
fn ownership_per_output() {
    let h = Harness::new();
    let config = h.agent_config(json!({
        "secrets": [{"name": "owned", "path": "apps/db/password", "uid": 4321, "gid": 8765, "fileMode": "0440"}],
        "folders": [{"name": "dir", "path": "apps/rotate", "uid": 4321, "gid": 8765}]
    }));
    let run = h.run(&h.env_api_key(&config), &["fetch"]);
    if rustix::process::geteuid().is_root() {
        expect_code(&run, 0);
        use std::os::unix::fs::MetadataExt;
        for p in ["owned", "dir", "dir/a"] {
            let m = fs::metadata(h.root().join(p)).unwrap();
            assert_eq!((m.uid(), m.gid()), (4321, 8765), "{p}");
        }
        assert_mode(&h.root().join("owned"), 0o440);
    } else {
        expect_code(&run, 1);
        assert!(run.stderr.contains("CAP_CHOWN"), "{}", run.stderr);
    }
    h.assert_closed();
}

/// The process signal: every process whose command name matches gets the signal after a
/// refresh changed the files. A copy of `sleep` with a unique name stands in for the app.
#[test]
fn watch_signals_the_app_process() {
    let h = Harness::new();
    let name = format!("psag{:011}", std::process::id());
    let app = h.dir.path().join(&name);
    fs::copy("/bin/sleep", &app).unwrap();
    let mut sleeper = std::process::Command::new(&app).arg("60").spawn().unwrap();
    let config = h.agent_config(json!({
        "secrets": [{"name": "a", "path": "apps/rotate/a"}],
        "refresh": {"intervalSeconds": 1, "jitterPercent": 0},
        "signal": {"process": {"process": name, "signal": "SIGUSR1"}}
    }));
    let log = h.dir.path().join("watch.log");
    let mut child = h.spawn(&h.env_api_key(&config), &["watch"], &log);
    wait_for("first generation", Duration::from_secs(20), || {
        h.root().join(".ps-ready").exists()
    });
    assert!(
        sleeper.try_wait().unwrap().is_none(),
        "no signal for the first generation"
    );
    h.set_secret("apps/rotate", "a", "PSCANARY-secret-text-signal-2");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = sleeper.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the app was not signalled"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(rustix::process::Signal::USR1.as_raw()));
    signal(&child, rustix::process::Signal::TERM);
    assert_eq!(wait_exit(&mut child, Duration::from_secs(20)), 0);
    let text = fs::read_to_string(&log).unwrap();
    keep_log(&text);
    assert_no_leak(&text, &["PSCANARY-secret-text-signal-2"]);
    assert!(text.contains("notified the app: sent"), "{text}");
    h.assert_closed();
}

/// A client CA (PEM) and a client certificate + key it signed (one PEM).
fn client_pki() -> (String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "agent test client CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "svc-agent");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn client_certificate_both_ways() {
    let (ca, cert, key) = client_pki();
    let h = Harness::with_options(ps_emulator::Options {
        client_ca_pem: Some(ca),
        ..Default::default()
    });
    let d = h.dir.path();
    fs::write(d.join("client.crt"), &cert).unwrap();
    fs::write(d.join("client.key"), &key).unwrap();
    fs::write(d.join("client.pem"), format!("{cert}{key}")).unwrap();
    let with_cert = h
        .agent_config(json!({"secrets": [{"name": "pw", "path": "apps/db/password"}]}))
        .replace(
            "\"apiVersion\":\"3.1\"",
            &format!(
                "\"apiVersion\":\"3.1\",\"clientCertFile\":{:?},\"clientKeyFile\":{:?}",
                d.join("client.crt").to_string_lossy(),
                d.join("client.key").to_string_lossy()
            ),
        );
    assert!(with_cert.contains("clientCertFile"), "config shape changed");
    let run = h.run(&h.env_api_key(&with_cert), &["fetch"]);
    expect_code(&run, 0);
    assert_file(&h.root().join("pw"), DB_PASSWORD.as_bytes());
    // Without it, SignAppIn is refused.
    let without = h.agent_config(json!({"secrets": [{"name": "pw", "path": "apps/db/password"}]}));
    let run = h.run(&h.env_api_key(&without), &["fetch"]);
    expect_code(&run, 1);
    assert!(run.stderr.contains("authentication failed"), "{}", run.stderr);
    // BeyondTrust way: one PEM with certificate and key.
    let env = env_of(&[
        ("BT_API_URL", &h.base_url()),
        ("BT_API_KEY", &format!("{KEY};runas={RUNAS};")),
        ("SECRETS_LIST", "apps/db/password"),
        ("SECRETS_PATH", &h.root().join("bt").to_string_lossy()),
        ("PS_CA_FILE", &h.ca_file.to_string_lossy()),
        (
            "BT_CLIENT_CERTIFICATE_PATH",
            &d.join("client.pem").to_string_lossy(),
        ),
    ]);
    let run = h.run(&env, &[]);
    expect_code(&run, 0);
    assert_file(&h.root().join("bt/apps/db/password"), DB_PASSWORD.as_bytes());
    h.assert_closed();
}

/// The drop-in agent configured with BeyondTrust's variables, its client certificate a PKCS#12
/// file (`BT_CLIENT_CERTIFICATE_PATH` + `BT_CLIENT_CERTIFICATE_PASSWORD`), against an emulator
/// that requires mutual TLS (`--client-ca`). The committed fixtures come from
/// `tests/fixtures/pkcs12/gen.sh`: `chain-ec.p12` holds an EC leaf and the intermediate CA that
/// signed it (OpenSSL 3 defaults), so the handshake only verifies if the intermediate is sent
/// too; `legacy-3des.p12` an RSA leaf of the root (3DES, SHA-1 MAC).
#[test]
fn beyondtrust_pkcs12_client_certificate() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pkcs12");
    let ca = fs::read_to_string(fixtures.join("ca.pem")).unwrap();
    let h = Harness::with_options(ps_emulator::Options {
        client_ca_pem: Some(ca),
        ..Default::default()
    });
    let password = "test-password";
    let bt = |p12: &str, out: &str, password: &str, tls: (&str, &str)| {
        env_of(&[
            ("BT_API_URL", &h.base_url()),
            ("BT_API_KEY", &format!("{KEY};runas={RUNAS};")),
            ("SECRETS_LIST", "apps/db/password"),
            ("SECRETS_PATH", &h.root().join(out).to_string_lossy()),
            tls,
            (
                "BT_CLIENT_CERTIFICATE_PATH",
                &fixtures.join(p12).to_string_lossy(),
            ),
            ("BT_CLIENT_CERTIFICATE_PASSWORD", password),
        ])
    };
    let ca_file = h.ca_file.to_string_lossy().into_owned();
    for (p12, out) in [("chain-ec.p12", "ec"), ("legacy-3des.p12", "rsa")] {
        let run = h.run(&bt(p12, out, password, ("PS_CA_FILE", &ca_file)), &[]);
        expect_code(&run, 0);
        assert_no_leak(&run.log(), &[password]);
        assert_file(
            &h.root().join(out).join("apps/db/password"),
            DB_PASSWORD.as_bytes(),
        );
    }
    // The same EC leaf without its intermediate (legacy-rc2-40.p12): the emulator cannot verify
    // it and refuses the handshake.
    let run = h.run(
        &bt(
            "legacy-rc2-40.p12",
            "no-chain",
            password,
            ("PS_CA_FILE", &ca_file),
        ),
        &[],
    );
    expect_code(&run, 1);
    assert!(run.stderr.contains("UnknownCA"), "{}", run.stderr);
    // BeyondTrust's variables alone (server verification off, as BT_VERIFY_CA=false does).
    let run = h.run(
        &bt("chain-ec.p12", "bt-only", password, ("BT_VERIFY_CA", "false")),
        &[],
    );
    expect_code(&run, 0);
    assert_file(&h.root().join("bt-only/apps/db/password"), DB_PASSWORD.as_bytes());
    // A wrong password: exit 2 before any call, the password never shown.
    let signins = h.calls("POST auth/signappin");
    let run = h.run(
        &bt("chain-ec.p12", "wrong", "Wrong-Pw-8181", ("PS_CA_FILE", &ca_file)),
        &[],
    );
    expect_code(&run, 2);
    assert_no_leak(&run.log(), &["Wrong-Pw-8181", password]);
    assert!(
        run.stderr
            .contains("BT_CLIENT_CERTIFICATE_PASSWORD does not open")
            && run.stderr.contains("the PKCS#12 MAC does not verify"),
        "{}",
        run.stderr
    );
    assert_eq!(h.calls("POST auth/signappin"), signins, "no sign-in attempted");
    h.assert_closed();
}
