//! Pods that really run (issue 10): the webhook deployed by the chart in Service mode, the agent
//! image built from `Dockerfile.agent`, the kubelet of `tests/e2e/node`. Each scenario runs in
//! a fresh namespace enforcing `restricted` Pod Security and asserts on what a running container
//! observed: the probe app reports files, variables and its own ids by digest in its termination
//! message, read back through the API. Values are never printed, only lengths.
//!
//! Run them with `tests/e2e/run` (they are `#[ignore]`d, and fail without its environment). The
//! webhook-availability scenario, which disrupts the webhook, is in `availability.rs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e_tests::{
    Harness, ann,
    node::{self, NodeEnv, assert_file, assert_var, ever_ran, phase, running_pod, terminated},
    pods::{self, opted_in},
};
use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::{Value, json};

const DB_PATH: &str = "team-a/db/password";
const SECRET_DB: &str = "ps-injector.io/secret-db";

fn setup_env() -> NodeEnv {
    NodeEnv::from_env()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Creates the pod and waits until it has finished.
async fn run_to_end(h: &Harness, ns: &str, sent: &Value) -> Pod {
    let name = sent["metadata"]["name"].as_str().expect("pod name");
    let created = h.create_pod(ns, sent, false).await.pod();
    assert_eq!(
        pods::status(&created),
        Some(ann::STATUS_INJECTED),
        "{name}: injected"
    );
    h.finished(ns, name).await
}

#[track_caller]
fn assert_succeeded(p: &Pod) {
    assert_eq!(
        phase(p),
        "Succeeded",
        "pod {}: {}",
        pods::name(p),
        serde_json::to_string(&p.status).unwrap_or_default()
    );
}

/// Init mode: the app (user 1000, read-only root filesystem) reads every output byte for byte
/// as the seed holds it, files 0400 owned by its user — after the agent image fetched them from
/// ps-emulator through the pod network, resolving its name from `/etc/hosts` (hostAliases) and
/// trusting only the CA bundle ConfigMap.
#[tokio::test]
#[ignore = "needs the e2e node: run tests/e2e/run"]
async fn init_mode_app_reads_every_output_byte_exact() {
    let h = Harness::new().await;
    let n = setup_env();
    let ns = h.running_namespace("run-init").await;
    let m = h.config.mount_path.clone();
    let outputs = [
        "db",
        "api-key",
        "settings",
        "certs/tls.crt",
        "certs/tls.key",
        "ledger",
        "dsn",
    ];
    let paths: Vec<String> = outputs.iter().map(|o| format!("{m}/{o}")).collect();
    let mut args = vec!["report"];
    args.extend(paths.iter().map(String::as_str));
    let sent = running_pod(
        &n,
        "init",
        &opted_in(&[
            (ann::MODE, "init"),
            (SECRET_DB, DB_PATH),
            ("ps-injector.io/secret-api-key", "team-a/api/key"),
            ("ps-injector.io/secret-settings", "team-a/config/settings"),
            ("ps-injector.io/folder-certs", "team-a/certs"),
            ("ps-injector.io/account-ledger", "ledger-db/svc_team_a"),
            ("ps-injector.io/secret-dsn", DB_PATH),
            (
                "ps-injector.io/template-dsn",
                "{{ secret.username }}@{{ secret.value }}",
            ),
        ]),
        &args,
    );
    let p = run_to_end(&h, &ns, &sent).await;
    assert_succeeded(&p);
    assert_eq!(
        terminated(&p, "ps-agent-init").map(|t| t.0),
        Some(0),
        "the agent's init step"
    );
    let r = Harness::report(&p, "app");
    assert_eq!(r.uid, node::UID, "the app ran as its own user");
    let seed = &h.seed;
    let db = seed.secret(DB_PATH).unwrap();
    let mut want: Vec<(&str, Vec<u8>)> = vec![
        ("db", db.value().as_bytes().to_vec()),
        (
            "api-key",
            seed.secret("team-a/api/key").unwrap().value().as_bytes().to_vec(),
        ),
        (
            "settings",
            seed.secret("team-a/config/settings")
                .unwrap()
                .value()
                .as_bytes()
                .to_vec(),
        ),
        (
            "ledger",
            seed.account("ledger-db/svc_team_a")
                .unwrap()
                .password
                .as_bytes()
                .to_vec(),
        ),
        (
            "dsn",
            format!("{}@{}", db.username.as_deref().unwrap_or_default(), db.value()).into_bytes(),
        ),
    ];
    for s in &seed.folder("team-a/certs").unwrap().secrets {
        let name: &'static str = if s.title == "tls.crt" {
            "certs/tls.crt"
        } else {
            "certs/tls.key"
        };
        want.push((name, s.value().as_bytes().to_vec()));
    }
    assert_eq!(want.len(), outputs.len());
    for (o, bytes) in &want {
        assert_file(&r, &format!("{m}/{o}"), bytes, "0400");
        assert_eq!(
            r.files[&format!("{m}/{o}")].uid,
            node::UID,
            "{o}: owned by the app's user"
        );
    }
}

/// Native sidecar: the app's first instruction finds the file (the startup probe held it back
/// until the first complete write); after the secret changes in Password Safe the app sees the
/// new content within the refresh interval plus jitter, told by `signal`; it is never told when
/// nothing changed.
async fn refresh_reaches_the_app(kind: &str, signal: &str, notify: &str, share_pid: bool) {
    let h = Harness::new().await;
    let n = setup_env();
    let ns = h.running_namespace(&format!("run-refresh-{kind}")).await;
    let m = h.config.mount_path.clone();
    let secret = format!("team-a/refresh/{kind}");
    let old = h.seed.secret(&secret).unwrap().value().to_owned();
    let new = format!(
        "PSCANARY-secret-text-e2e-refreshed-{kind}-{:08x}",
        fastrand::u32(..)
    );
    let interval_s = 5;
    let file = format!("{m}/token");
    let notify = notify.replace("MOUNT", &m);
    let mut sent = running_pod(
        &n,
        "refresh",
        &opted_in(&[
            (ann::MODE, "native-sidecar"),
            ("ps-injector.io/secret-token", &secret),
            (ann::REFRESH_INTERVAL, &format!("{interval_s}s")),
            (ann::SIGNAL, signal),
        ]),
        &["watch", "--notify", &notify, "--timeout", "90", &file],
    );
    if share_pid {
        sent["spec"]["shareProcessNamespace"] = json!(true);
    }
    h.create_pod(&ns, &sent, false).await.pod();
    let running = h
        .wait_pod(&ns, "refresh", "running its app", Duration::from_secs(120), |p| {
            node::container_status(p, "app")
                .and_then(|s| s.state.as_ref())
                .is_some_and(|s| s.running.is_some())
                || matches!(phase(p), "Succeeded" | "Failed")
        })
        .await;
    assert_eq!(phase(&running), "Running", "{kind}: the app is running");
    let sidecar = node::container_status(&running, "ps-agent").expect("the native sidecar");
    assert_eq!(
        sidecar.started,
        Some(true),
        "{kind}: the sidecar passed its startup probe first"
    );
    // The probe takes its first digest at start; give it a moment before the change.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let folder = secret.rsplit_once('/').unwrap().0;
    h.set_secret(folder, kind, &new).await;
    let changed_at = now_ms();
    let p = h.finished(&ns, "refresh").await;
    let r = Harness::report(&p, "app");
    let w = r.watch.as_ref().expect("a watch report");
    assert!(
        w.notification_error.is_none(),
        "{kind}: {:?}",
        w.notification_error
    );
    assert!(
        !w.timed_out,
        "{kind}: the app was never told about the new content ({w:?})"
    );
    assert_succeeded(&p);
    assert_eq!(
        w.initial,
        node::sha256(old.as_bytes()),
        "{kind}: at its first instruction the app read the seed's content"
    );
    assert!(
        w.final_sha == node::sha256(new.as_bytes()),
        "{kind}: the app read {} bytes after the signal, not the {} bytes of the new value",
        w.final_len,
        new.len()
    );
    assert_eq!(w.unchanged, 0, "{kind}: signalled without a change");
    let latency = w.seen_at_ms - changed_at;
    // Interval + 10 % jitter, plus a grace for the fetch, the write and the signal on a
    // loaded 2-core machine. A refresh that never delivers fails on the probe's timeout above.
    let bound = interval_s * 1100 + 5000;
    assert!(
        latency <= bound,
        "{kind}: the app saw the new content {latency} ms after the change (bound {bound} ms)"
    );
    eprintln!("{kind}: new content reached the app {latency} ms after the change");
    // The kubelet stops the native sidecar once the app is done; watch exits 0 on SIGTERM.
    let agent_exit = terminated(&p, "ps-agent").map(|t| t.0);
    if agent_exit != Some(0) {
        // The agent's log (it never logs values) says how far its shutdown got.
        let log = h.log(&ns, "refresh", "ps-agent").await;
        panic!(
            "{kind}: the sidecar did not exit 0 after the app ({agent_exit:?}); its state: {:?}; its log:\n{log}",
            node::container_status(&p, "ps-agent").and_then(|s| s.state.as_ref())
        );
    }
}

#[tokio::test]
#[ignore = "needs the e2e node: run tests/e2e/run"]
async fn native_sidecar_refresh_reaches_the_app_by_file_marker() {
    refresh_reaches_the_app("file", "file:changed", "file:MOUNT/changed", false).await;
}

#[tokio::test]
#[ignore = "needs the e2e node: run tests/e2e/run"]
async fn native_sidecar_refresh_reaches_the_app_by_sighup() {
    refresh_reaches_the_app("process", "process:probe:SIGHUP", "signal", true).await;
}

#[tokio::test]
#[ignore = "needs the e2e node: run tests/e2e/run"]
async fn native_sidecar_refresh_reaches_the_app_by_http() {
    refresh_reaches_the_app("http", "http:8080/reload", "http:8080", false).await;
}

/// A Job whose pod gets the native sidecar (the cluster default) reaches Complete: the app
/// reads its file and exits, and the kubelet terminates the agent.
#[tokio::test]
#[ignore = "needs the e2e node: run tests/e2e/run"]
async fn job_with_the_native_sidecar_completes() {
    let h = Harness::new().await;
    let n = setup_env();
    let ns = h.running_namespace("run-job").await;
    let file = format!("{}/db", h.config.mount_path);
    let mut template = running_pod(
        &n,
        "unused",
        &opted_in(&[(SECRET_DB, DB_PATH)]),
        &["report", &file],
    );
    template["metadata"].as_object_mut().unwrap().remove("name");
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "batch"},
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": template["metadata"], "spec": template["spec"]},
        },
    }))
    .unwrap();
    let jobs = Api::<Job>::namespaced(h.client.clone(), &ns);
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("creating the Job");
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let complete = loop {
        let j = jobs.get("batch").await.expect("GET job");
        let cond = |t: &str| {
            j.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == "True"))
        };
        if cond("Complete") {
            break true;
        }
        if cond("Failed") || std::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let list = h
        .pods(&ns)
        .list(&ListParams::default().labels("batch.kubernetes.io/job-name=batch"))
        .await
        .expect("listing the Job's pods");
    assert_eq!(list.items.len(), 1, "one pod (backoffLimit 0)");
    let p = &list.items[0];
    assert!(
        complete,
        "the Job did not complete; its pod: {}",
        serde_json::to_string(&p.status).unwrap_or_default()
    );
    assert_eq!(pods::status(p), Some(ann::STATUS_INJECTED));
    assert_eq!(
        pods::container(p, "ps-agent").and_then(|c| c.restart_policy.as_deref()),
        Some("Always"),
        "the native sidecar"
    );
    let r = Harness::report(p, "app");
    assert_file(
        &r,
        &file,
        h.seed.secret(DB_PATH).unwrap().value().as_bytes(),
        "0400",
    );
    assert!(
        terminated(p, "ps-agent").is_some(),
        "the agent container terminated: {:?}",
        node::container_status(p, "ps-agent")
    );
}

/// Exec mode: the app image has neither a shell nor the agent; `ps-agent copy-self` put the
/// agent into the pod's volume, and the wrapped app process sees its variables, and no
/// Password Safe credential or agent configuration in its environment.
#[tokio::test]
#[ignore = "needs the e2e node: run tests/e2e/run"]
async fn exec_mode_app_without_shell_sees_its_variables_and_no_credentials() {
    let h = Harness::new().await;
    let n = setup_env();
    let ns = h.running_namespace("run-exec").await;
    let sent = running_pod(
        &n,
        "exec",
        &opted_in(&[
            (ann::MODE, "init"),
            ("ps-injector.io/env-DB_PASSWORD", DB_PATH),
            ("ps-injector.io/env-DB_USER", "username:team-a/db/password"),
            ("ps-injector.io/env-API_KEY", "secret:team-a/api/key"),
            ("ps-injector.io/env-LEDGER", "account:ledger-db/svc_team_a"),
        ]),
        &[
            "report",
            "--env",
            "DB_PASSWORD,DB_USER,API_KEY,LEDGER",
            "--absent",
            "/bin/sh,/usr/local/bin/ps-agent",
        ],
    );
    let p = run_to_end(&h, &ns, &sent).await;
    let app = pods::container(&p, "app").unwrap();
    assert_eq!(
        app.command.as_ref().and_then(|c| c.first()).map(String::as_str),
        Some(format!("{}/.ps-bin/ps-agent", h.config.mount_path).as_str()),
        "the app's command is wrapped"
    );
    assert_succeeded(&p);
    let r = Harness::report(&p, "app");
    assert!(
        r.absent.values().all(|a| *a),
        "the app image has no shell and no agent: {:?}",
        r.absent
    );
    let seed = &h.seed;
    let db = seed.secret(DB_PATH).unwrap();
    assert_var(&r, "DB_PASSWORD", db.value().as_bytes());
    assert_var(
        &r,
        "DB_USER",
        db.username.as_deref().unwrap_or_default().as_bytes(),
    );
    assert_var(
        &r,
        "API_KEY",
        seed.secret("team-a/api/key").unwrap().value().as_bytes(),
    );
    assert_var(
        &r,
        "LEDGER",
        seed.account("ledger-db/svc_team_a").unwrap().password.as_bytes(),
    );
    for forbidden in [
        "PS_API_KEY",
        "PS_CLIENT_SECRET",
        "PS_CLIENT_ID",
        "PS_RUNAS",
        "PS_AGENT_CONFIG",
    ] {
        assert!(
            !r.env_names.iter().any(|n| n == forbidden),
            "{forbidden} reached the app process; its variables: {:?}",
            r.env_names
        );
    }
}

/// A pod that names no user, from an image whose user is 4321, without fsGroup: the webhook
/// adds the agent's group to supplementalGroups, and the app reads the 0440 files through it.
#[tokio::test]
#[ignore = "needs the e2e node: run tests/e2e/run"]
async fn unknown_user_reads_0440_files_through_the_supplemental_group() {
    let h = Harness::new().await;
    let n = setup_env();
    let ns = h.running_namespace("run-unknown-user").await;
    let file = format!("{}/db", h.config.mount_path);
    let mut sent = running_pod(
        &n,
        "unknown-user",
        &opted_in(&[(ann::MODE, "init"), (SECRET_DB, DB_PATH)]),
        &["report", &file],
    );
    sent["spec"]["securityContext"] = json!({
        "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"},
    });
    sent["spec"]["containers"][0]["image"] = json!(n.probe_4321_image);
    let p = run_to_end(&h, &ns, &sent).await;
    assert_succeeded(&p);
    let r = Harness::report(&p, "app");
    assert_eq!(r.uid, 4321, "the image's user");
    assert!(
        r.files.get(&file).is_some_and(|f| f.gid != 4321 && f.uid != 4321),
        "the file is not the app user's own: {:?}",
        r.files.get(&file)
    );
    let group = r.files[&file].gid;
    assert!(
        r.groups.as_deref().unwrap_or_default().contains(&group),
        "the app holds the file's group {group} as a supplemental group: {:?}",
        r.groups
    );
    assert_file(
        &r,
        &file,
        h.seed.secret(DB_PATH).unwrap().value().as_bytes(),
        "0440",
    );
}

/// In a namespace enforcing `restricted`, an injected pod with the default mode (native
/// sidecar) and a long-running app becomes Ready.
#[tokio::test]
#[ignore = "needs the e2e node: run tests/e2e/run"]
async fn restricted_namespace_injected_pod_becomes_ready() {
    let h = Harness::new().await;
    let n = setup_env();
    let ns = h.running_namespace("run-restricted").await;
    let sent = running_pod(&n, "ready", &opted_in(&[(SECRET_DB, DB_PATH)]), &["sleep"]);
    let created = h.create_pod(&ns, &sent, false).await;
    assert!(
        !created.warnings.iter().any(|w| w.contains("PodSecurity")),
        "{:?}",
        created.warnings
    );
    created.pod();
    let p = h
        .wait_pod(&ns, "ready", "Ready", Duration::from_secs(120), |p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .await;
    for c in ["ps-agent", "app"] {
        let st = node::container_status(&p, c).expect("status");
        assert!(
            st.state.as_ref().is_some_and(|s| s.running.is_some()) && st.ready,
            "{c} running and ready: {st:?}"
        );
    }
    h.pods(&ns)
        .delete("ready", &DeleteParams::default())
        .await
        .expect("deleting the pod");
}

/// Fail closed: a missing secret, and a wrong API key. The app never starts; the init
/// container's termination message names what failed and why; no key is in any log the API
/// server returns.
#[tokio::test]
#[ignore = "needs the e2e node: run tests/e2e/run"]
async fn fail_closed_app_never_starts_and_the_message_names_the_cause() {
    let h = Harness::new().await;
    let n = setup_env();
    let (real_key, user) = h.seed.api_key().unwrap();

    let ns = h.running_namespace("run-missing").await;
    let missing = "team-a/db/no-such-secret";
    let sent = running_pod(
        &n,
        "missing",
        &opted_in(&[(ann::MODE, "init"), (SECRET_DB, missing)]),
        &["report", "/"],
    );
    let p = run_to_end(&h, &ns, &sent).await;
    assert_eq!(phase(&p), "Failed");
    assert!(
        !ever_ran(&p, "app"),
        "the app never started: {:?}",
        node::container_status(&p, "app")
    );
    let (code, msg) = terminated(&p, "ps-agent-init").expect("the agent's init step terminated");
    assert_eq!(code, 1, "{msg}");
    assert!(
        msg.contains(missing) && msg.contains("not found"),
        "the termination message names the secret and the reason: {msg}"
    );

    // A wrong API key: the credentials Secret holds a key Password Safe does not know.
    let ns = h.namespace("run-wrong-key", &[]).await;
    h.ca_config_map(&ns).await;
    let wrong = format!("wrong-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    h.secret(
        &ns,
        &h.config.secret_name,
        &[
            (h.config.api_key_key.as_str(), wrong.as_str()),
            (h.config.run_as_key.as_str(), user),
        ],
    )
    .await;
    let sent = running_pod(
        &n,
        "wrong-key",
        &opted_in(&[(ann::MODE, "init"), (SECRET_DB, DB_PATH)]),
        &["report", "/"],
    );
    let p = run_to_end(&h, &ns, &sent).await;
    assert_eq!(phase(&p), "Failed");
    assert!(!ever_ran(&p, "app"), "the app never started");
    let (code, msg) = terminated(&p, "ps-agent-init").expect("terminated");
    assert_eq!(code, 1, "{}", msg.len());
    assert!(
        msg.contains("sign-in") && msg.contains("authentication failed"),
        "the termination message says the sign-in failed ({} bytes)",
        msg.len()
    );
    let logs = h.all_logs(&ns, &p).await;
    assert!(!logs.is_empty(), "the API server returned the agent's log");
    for (what, key) in [("the wrong key", wrong.as_str()), ("the real key", real_key)] {
        assert!(!logs.contains(key), "{what} appears in a container log");
        assert!(!msg.contains(key), "{what} appears in the termination message");
    }
}

/// BeyondTrust's secrets-agent manifest shape with ps-agent's image: an init container with
/// BT_API_URL, BT_API_KEY, SECRETS_LIST, FOLDER_LIST, MANAGED_ACCOUNTS_LIST and SECRETS_PATH
/// from a Secret, a shared emptyDir, no annotation. The app reads `<root>/<folder>/<title>`.
#[tokio::test]
#[ignore = "needs the e2e node: run tests/e2e/run"]
async fn beyondtrust_drop_in_manifest_runs_with_the_agent_image() {
    let h = Harness::new().await;
    let n = setup_env();
    let ns = h.running_namespace("run-bt").await;
    let (key, user) = h.seed.api_key().unwrap();
    let root = "/usr/src/app/secrets_files";
    let url = h.env.emulator_url.replacen(&n.node_ip, &n.emulator_host, 1);
    let bt_key = format!("{key};runas={user};");
    h.secret(
        &ns,
        "secrets-agent",
        &[
            ("BT_API_URL", url.as_str()),
            ("BT_API_KEY", bt_key.as_str()),
            ("SECRETS_LIST", "team-a/db/password,team-a/api/key"),
            ("FOLDER_LIST", "team-a/certs"),
            ("MANAGED_ACCOUNTS_LIST", "ledger-db/svc_team_a"),
            ("SECRETS_PATH", root),
        ],
    )
    .await;
    let files = [
        "team-a/db/password",
        "team-a/api/key",
        "team-a/certs/tls.crt",
        "team-a/certs/tls.key",
        "ledger-db/svc_team_a",
    ];
    let paths: Vec<String> = files.iter().map(|f| format!("{root}/{f}")).collect();
    let mut args = vec!["report"];
    args.extend(paths.iter().map(String::as_str));
    let mut sent = running_pod(&n, "bt", &[], &args);
    let ca = h
        .config
        .ca_bundle
        .clone()
        .expect("the e2e configuration names a CA bundle");
    sent["spec"]["volumes"] = json!([
        {"name": "secrets-files", "emptyDir": {"medium": "Memory"}},
        {"name": "ps-ca", "configMap": {"name": ca}},
    ]);
    sent["spec"]["initContainers"] = json!([{
        "name": "secrets-agent",
        "image": h.config.agent_image,
        "imagePullPolicy": "IfNotPresent",
        "envFrom": [{"secretRef": {"name": "secrets-agent"}}],
        // The emulator's certificate is from the test CA (BT_VERIFY_CA is on by default).
        "env": [{"name": "PS_CA_FILE", "value": "/etc/ps-ca/ca.crt"}],
        "volumeMounts": [
            {"name": "secrets-files", "mountPath": root},
            {"name": "ps-ca", "mountPath": "/etc/ps-ca", "readOnly": true},
        ],
        "securityContext": e2e_tests::pods::restricted_container_sc(),
    }]);
    sent["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "secrets-files", "mountPath": root, "readOnly": true}]);
    h.create_pod(&ns, &sent, false).await.pod();
    let p = h.finished(&ns, "bt").await;
    assert_eq!(pods::status(&p), None, "no annotation: the webhook never saw it");
    assert_succeeded(&p);
    let r = Harness::report(&p, "app");
    let seed = &h.seed;
    let want = |f: &str| -> Vec<u8> {
        if f == "ledger-db/svc_team_a" {
            seed.account(f).unwrap().password.as_bytes().to_vec()
        } else {
            seed.secret(f).unwrap().value().as_bytes().to_vec()
        }
    };
    for f in files {
        assert_file(&r, &format!("{root}/{f}"), &want(f), "0400");
    }
}
