//! End-to-end scenarios against a real kube-apiserver, with ps-webhook registered by the Helm
//! chart's MutatingWebhookConfiguration (URL mode). Each scenario runs in a fresh namespace and
//! asserts on the object the API server returned (or its refusal).
//!
//! Run them with `tests/e2e/run` (they are `#[ignore]`d, and fail without its environment).
//! The failure-policy scenario, which needs the webhook stopped, is in `webhook_down.rs`.

use std::collections::BTreeSet;

use e2e_tests::{
    Harness, WEBHOOK_NAME,
    agent::{Options, Volume},
    ann, assert_same_value,
    pods::{self, opted_in, pod},
    second_webhook::SecondWebhook,
};
use inject_api::{env as agent_env, layout};
use k8s_openapi::api::{
    admissionregistration::v1::MutatingWebhookConfiguration, apps::v1::Deployment, batch::v1::Job,
};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use serde_json::{Value, json};

/// A pod's annotations as (key, value) pairs.
type Annotations<'a> = Vec<(&'a str, &'a str)>;

const SECRET_DB: &str = "ps-injector.io/secret-db";

/// Namespace labels enforcing the restricted Pod Security standard.
const RESTRICTED: &[(&str, &str)] = &[
    ("pod-security.kubernetes.io/enforce", "restricted"),
    ("pod-security.kubernetes.io/enforce-version", "latest"),
];
const DB_PATH: &str = "team-a/db/password";

fn ok_status(created: &e2e_tests::Created) -> Option<&str> {
    created.result.as_ref().ok().and_then(pods::status)
}

// ---------------------------------------------------------------------------------------------
// The chart's registration
// ---------------------------------------------------------------------------------------------

/// The chart (URL mode, `deployment.enabled=false`) registered our webhook with the scoping the
/// issue asks for, the API server stored it as such (CEL compiled), and the scoping works.
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn chart_registers_the_webhook_by_url_with_its_scoping() {
    let h = Harness::new().await;
    let mwc = Api::<MutatingWebhookConfiguration>::all(h.client.clone())
        .get(&h.env.webhook_configuration)
        .await
        .expect("the chart's MutatingWebhookConfiguration");
    let hooks = mwc.webhooks.as_deref().unwrap_or_default();
    assert_eq!(
        hooks.len(),
        2,
        "the injecting entry and the warning-only workload entry"
    );
    let warn = &hooks[1];
    assert_eq!(warn.name, "warn-workloads.ps-injector.io");
    assert_eq!(
        warn.failure_policy.as_deref(),
        Some("Ignore"),
        "the warning entry never blocks"
    );
    assert_eq!(
        warn.client_config.url.as_deref(),
        Some(h.env.webhook_url.replace("/mutate", "/warn-workloads").as_str())
    );
    let w = &hooks[0];
    assert_eq!(w.name, WEBHOOK_NAME);
    assert_eq!(
        w.client_config.url.as_deref(),
        Some(h.env.webhook_url.as_str()),
        "clientConfig.url"
    );
    assert!(
        w.client_config.service.is_none(),
        "no service reference in URL mode"
    );
    let ca = std::fs::read(&h.env.webhook_ca).expect("test CA");
    let bundle = w.client_config.ca_bundle.as_ref().expect("caBundle").0.clone();
    assert_eq!(
        String::from_utf8_lossy(&bundle).trim(),
        String::from_utf8_lossy(&ca).trim(),
        "caBundle is the test CA"
    );
    assert_eq!(w.admission_review_versions, vec!["v1".to_owned()]);
    assert_eq!(w.side_effects, "None");
    assert_eq!(w.failure_policy.as_deref(), Some("Fail"));
    assert_eq!(w.reinvocation_policy.as_deref(), Some("IfNeeded"));
    let rules = w.rules.as_deref().unwrap_or_default();
    assert_eq!(rules.len(), 1, "one rule");
    assert_eq!(
        rules[0].operations.as_deref(),
        Some(&["CREATE".to_owned()][..]),
        "CREATE only"
    );
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods".to_owned()][..]),
        "pods only"
    );
    assert_eq!(
        rules[0].api_groups.as_deref(),
        Some(&[String::new()][..]),
        "core group"
    );
    let conditions = w.match_conditions.as_deref().unwrap_or_default();
    assert!(
        conditions.iter().any(|c| c.expression.contains(ann::INJECT)),
        "a matchCondition on {}",
        ann::INJECT
    );
    let excluded: BTreeSet<&str> = w
        .namespace_selector
        .as_ref()
        .and_then(|s| s.match_expressions.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|e| e.key == "kubernetes.io/metadata.name" && e.operator == "NotIn")
        .flat_map(|e| e.values.iter().flatten().map(String::as_str))
        .collect();
    for ns in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        h.env.release_namespace.as_str(),
    ] {
        assert!(
            excluded.contains(ns),
            "namespaceSelector excludes {ns} (got {excluded:?})"
        );
    }

    // URL mode without the in-cluster Deployment.
    let deployments = Api::<Deployment>::namespaced(h.client.clone(), &h.env.release_namespace)
        .list(&ListParams::default())
        .await
        .expect("listing deployments");
    assert!(
        deployments.items.is_empty(),
        "deployment.enabled=false installs no Deployment"
    );

    // The scoping at work: opted-in pods in excluded namespaces never reach the webhook.
    let mut sent = Vec::new();
    for ns in [h.env.release_namespace.as_str(), "kube-public"] {
        h.service_account(ns).await;
        let name = format!("excluded-{:04x}", fastrand::u16(..));
        let p = pod(&name, &opted_in(&[(ann::MODE, "init"), (SECRET_DB, DB_PATH)]));
        sent.push((ns, p));
    }
    assert_created_untouched_without_admission(&h, &sent, "excluded namespaces").await;
}

/// Issue 9, item 6: `ps-injector.io/` annotations on a Deployment's own metadata (instead of its
/// pod template) do nothing, so the warning-only entry says so: the create is answered with a
/// warning naming the path where they belong (what `kubectl apply` prints), and the Deployment
/// is stored exactly as sent. A CronJob names its deeper path; a Deployment without such
/// annotations is not even sent to the webhook.
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn annotations_on_a_workload_instead_of_its_template_get_a_warning() {
    let h = Harness::new().await;
    let ns = h.namespace("misplaced", &[]).await;
    let template = json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "registry.example.com/web:1"}]}
    });
    let deployment = |name: &str, annotations: Value| {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web"}}, "template": template}
        })
    };
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments");
    let misplaced = deployment(
        "web",
        json!({ann::INJECT: "true", SECRET_DB: DB_PATH, "note": "x"}),
    );
    let expected = "ps-injector.io/inject, ps-injector.io/secret-db on the Deployment's own metadata are \
                    ignored: the webhook reads pod annotations; move them to spec.template.metadata.annotations";

    // The registration reaches the API server through an informer: dry runs until it answers.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let dry: e2e_tests::Created<Value> = h.create(&path, &misplaced, true).await;
        if dry.warnings.iter().any(|w| w == expected) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the warning-only entry did not take effect within 30 s; last answer: {dry:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let created: e2e_tests::Created<Deployment> = h.create(&path, &misplaced, false).await;
    assert_eq!(created.warnings, [expected], "exactly our warning");
    let created = created.result.expect("the Deployment is created");
    let stored = Api::<Deployment>::namespaced(h.client.clone(), &ns)
        .get("web")
        .await
        .expect("GET the Deployment");
    for d in [&created, &stored] {
        let annotations = d.metadata.annotations.clone().unwrap_or_default();
        for (k, v) in misplaced["metadata"]["annotations"].as_object().unwrap() {
            assert_eq!(
                annotations.get(k).map(String::as_str),
                v.as_str(),
                "{k} kept as sent"
            );
        }
        let stored_template = serde_json::to_value(&d.spec.as_ref().unwrap().template).unwrap();
        assert_eq!(
            stored_template["metadata"], template["metadata"],
            "template metadata unchanged"
        );
        let containers = stored_template["spec"]["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "no container added");
        assert_eq!(containers[0]["name"], "web");
    }

    // A CronJob: the path through its job template.
    let cronjob = json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "nightly", "annotations": {ann::INJECT: "true"}},
        "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "registry.example.com/c:1"}]}
        }}}}
    });
    let dry: e2e_tests::Created<Value> = h
        .create(
            &format!("/apis/batch/v1/namespaces/{ns}/cronjobs"),
            &cronjob,
            true,
        )
        .await;
    assert!(dry.result.is_ok(), "{dry:?}");
    assert_eq!(
        dry.warnings,
        [
            "ps-injector.io/inject on the CronJob's own metadata is ignored: the webhook reads pod annotations; \
          move it to spec.jobTemplate.spec.template.metadata.annotations"
        ]
    );

    // Without such annotations: no warning, and the matchCondition keeps it from the webhook.
    let total0 = h.admissions_total().await;
    let plain: e2e_tests::Created<Deployment> = h
        .create(&path, &deployment("plain", json!({"note": "x"})), false)
        .await;
    assert!(plain.result.is_ok(), "{plain:?}");
    assert!(plain.warnings.is_empty(), "{:?}", plain.warnings);
    assert_eq!(h.admissions_total().await, total0, "never reached the webhook");
}

/// Creates each (namespace, pod), checks the stored pod is the one sent, and that the webhook
/// saw none of them.
async fn assert_created_untouched_without_admission(h: &Harness, sent: &[(&str, Value)], what: &str) {
    let total0 = h.admissions_total().await;
    for (ns, p) in sent {
        let created = h.create_pod(ns, p, false).await.pod();
        pods::assert_untouched(&created, p);
    }
    assert_eq!(
        h.admissions_total().await,
        total0,
        "{what}: never reached the webhook"
    );
}

// ---------------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------------

/// Init mode, and item 4: the agent container of the stored pod, run with exactly its command
/// and env (secretKeyRef resolved from the real Secret) against the emulator, writes every
/// output with the seed's content; a secret the run-as user may not read fails it closed.
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn init_mode_injects_and_the_stored_agent_fetches_every_secret() {
    let h = Harness::new().await;
    let ns = h.namespace("init", &[]).await;
    h.credentials_secret(&ns).await;
    let template = "postgres://{{ secret.username }}:{{ secret.value }}@db:5432/app";
    let sent = pod(
        "init",
        &opted_in(&[
            (ann::MODE, "init"),
            (SECRET_DB, DB_PATH),
            ("ps-injector.io/format-db", "json"),
            ("ps-injector.io/secret-api-key", "team-a/api/key"),
            ("ps-injector.io/secret-settings", "team-a/config/settings"),
            ("ps-injector.io/folder-certs", "team-a/certs"),
            ("ps-injector.io/account-ledger", "ledger-db/svc_team_a"),
            ("ps-injector.io/secret-dsn", DB_PATH),
            ("ps-injector.io/template-dsn", template),
        ]),
    );
    let created = h.create_pod(&ns, &sent, false).await;
    assert!(
        created.warnings.is_empty(),
        "no admission warnings: {:?}",
        created.warnings
    );
    let p = created.pod();

    // The object the API server stored.
    assert_eq!(pods::status(&p), Some(ann::STATUS_INJECTED));
    assert_eq!(
        pods::agent_containers(&p, &h.config.agent_image),
        vec![("initContainers", "ps-agent-init")],
        "exactly one agent, the init container"
    );
    assert_eq!(pods::names(pods::containers(&p)), ["app"]);
    let agent = pods::container(&p, "ps-agent-init").expect("agent");
    assert_eq!(agent.command.as_deref(), Some(h.config.agent_command.as_slice()));
    assert_eq!(agent.args.as_deref(), Some(&["fetch".to_owned()][..]));
    assert!(agent.restart_policy.is_none(), "a plain init container");
    pods::assert_hardened(agent);
    pods::assert_secrets_volume(&p);
    let app = pods::container(&p, "app").expect("app");
    pods::assert_reads_secrets(app, &h.config.mount_path);
    // The ServiceAccount plugin ran after the webhook: the app has its token, the agent none.
    pods::assert_no_token(agent);
    pods::assert_has_token(app);
    pods::assert_no_credentials(app, &h.config.secret_name);
    let key_ref = |var: &str| {
        pods::env(agent, var)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.secret_key_ref.as_ref())
            .map(|r| (r.name.clone(), r.key.clone(), r.optional.unwrap_or(false)))
    };
    assert_eq!(
        key_ref(agent_env::API_KEY),
        Some((h.config.secret_name.clone(), h.config.api_key_key.clone(), false)),
        "PS_API_KEY from the configured Secret and key (auth apiKey: required)"
    );
    assert_eq!(
        key_ref(agent_env::RUNAS),
        Some((h.config.secret_name.clone(), h.config.run_as_key.clone(), true))
    );
    let cfg = pods::agent_config(agent);
    assert_eq!(
        cfg.root, h.config.mount_path,
        "the agent writes where the app reads"
    );
    assert_eq!(cfg.password_safe.url, h.env.emulator_url);
    // The CA bundle: its in-pod path in PS_CA_FILE only (the override point the run below
    // replaces), never also in the agent configuration; caOnly as configured.
    assert!(
        h.config.ca_bundle.is_some() && h.config.ca_only,
        "config.yaml names a CA bundle"
    );
    assert_eq!(
        pods::env(agent, agent_env::CA_FILE).and_then(|e| e.value.as_deref()),
        Some("/etc/ps-injector/ca/ca.crt")
    );
    assert_eq!(
        cfg.password_safe.ca_file, None,
        "the CA path is in PS_CA_FILE only"
    );
    assert!(cfg.password_safe.ca_only);
    let secret_names: BTreeSet<&str> = cfg.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(secret_names, BTreeSet::from(["api-key", "db", "dsn", "settings"]));
    assert_eq!(cfg.folders.len(), 1);
    assert_eq!(cfg.accounts.len(), 1);
    // Built-in admission ran too: the ServiceAccount plugin's token volume is there.
    let volumes = p
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    assert!(
        volumes.iter().any(|v| v.name.starts_with("kube-api-access-")),
        "the ServiceAccount admission plugin added its token volume"
    );
    // What etcd holds is what create returned.
    let stored = h.get_pod(&ns, "init").await;
    assert_eq!(
        serde_json::to_value(&stored.spec).unwrap(),
        serde_json::to_value(&p.spec).unwrap(),
        "GET returns the spec create returned"
    );

    // Item 4: run the stored agent container.
    let state0 = h.emulator_state().await;
    let volume = Volume::new();
    let run = h
        .run_container(&stored, "ps-agent-init", &volume, Options::default())
        .await;
    run.assert_success("the stored ps-agent-init container");
    let seed = &h.seed;
    let db = seed.secret(DB_PATH).unwrap();
    let json: Value = serde_json::from_slice(&volume.read("db")).expect("db is JSON");
    assert_same_value(
        "db (json) value",
        json["value"].as_str().unwrap_or_default().as_bytes(),
        db.value().as_bytes(),
    );
    assert_same_value(
        "db (json) username",
        json["username"].as_str().unwrap_or_default().as_bytes(),
        db.username.as_deref().unwrap_or_default().as_bytes(),
    );
    assert_eq!(json["title"], "password");
    assert_same_value(
        "api-key",
        &volume.read("api-key"),
        seed.secret("team-a/api/key").unwrap().value().as_bytes(),
    );
    assert_same_value(
        "settings",
        &volume.read("settings"),
        seed.secret("team-a/config/settings").unwrap().value().as_bytes(),
    );
    let certs = seed.folder("team-a/certs").unwrap();
    assert_eq!(certs.secrets.len(), 2);
    for s in &certs.secrets {
        assert_same_value(
            &format!("certs/{}", s.title),
            &volume.read(&format!("certs/{}", s.title)),
            s.value().as_bytes(),
        );
    }
    assert_same_value(
        "ledger",
        &volume.read("ledger"),
        seed.account("ledger-db/svc_team_a").unwrap().password.as_bytes(),
    );
    let dsn = format!(
        "postgres://{}:{}@db:5432/app",
        db.username.as_deref().unwrap_or_default(),
        db.value()
    );
    assert_same_value("dsn (template)", &volume.read("dsn"), dsn.as_bytes());
    assert_eq!(
        volume.mode("db"),
        0o400,
        "default file mode for a single known reader"
    );
    assert!(volume.exists(layout::READY_FILE), "the ready file");
    let result: Value = serde_json::from_slice(&volume.read(layout::RESULT_FILE)).expect("result file");
    assert_eq!(result["ok"], true);
    let state1 = h.emulator_state().await;
    let calls = |s: &Value, k: &str| s["calls"][k].as_u64().unwrap_or(0);
    assert_eq!(
        calls(&state1, "POST auth/signappin") - calls(&state0, "POST auth/signappin"),
        1,
        "one sign-in"
    );
    assert_eq!(state1["sessions_open"], 0, "signed out");
    assert_eq!(
        state1["requests_open"], 0,
        "the managed-account request was checked in"
    );

    // Fail closed through the same path: a secret the run-as user may not read.
    let sent = pod(
        "init-denied",
        &opted_in(&[(ann::MODE, "init"), (SECRET_DB, "team-b/db/password")]),
    );
    let denied = h.create_pod(&ns, &sent, false).await.pod();
    let volume = Volume::new();
    let run = h
        .run_container(&denied, "ps-agent-init", &volume, Options::default())
        .await;
    assert_eq!(
        run.code,
        Some(1),
        "a secret the run-as user may not read fails the init container: {}",
        run.stderr
    );
    assert!(
        !volume.exists("db") && !volume.exists(layout::READY_FILE),
        "nothing switched in"
    );
}

/// Sidecar mode: one refreshing agent container next to the app, no init step.
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn sidecar_mode_adds_one_refreshing_container() {
    let h = Harness::new().await;
    let ns = h.namespace("sidecar", &[]).await;
    let sent = pod(
        "sidecar",
        &opted_in(&[(ann::MODE, "sidecar"), (SECRET_DB, DB_PATH)]),
    );
    let p = h.create_pod(&ns, &sent, false).await.pod();
    assert_eq!(pods::status(&p), Some(ann::STATUS_INJECTED));
    assert_eq!(pods::names(pods::containers(&p)), ["app", "ps-agent"]);
    assert_eq!(
        pods::agent_containers(&p, &h.config.agent_image),
        vec![("containers", "ps-agent")]
    );
    let agent = pods::container(&p, "ps-agent").unwrap();
    assert_eq!(agent.args.as_deref(), Some(&["watch".to_owned()][..]));
    pods::assert_hardened(agent);
    pods::assert_no_token(agent);
    pods::assert_has_token(pods::container(&p, "app").unwrap());
    pods::assert_secrets_volume(&p);
    pods::assert_reads_secrets(pods::container(&p, "app").unwrap(), &h.config.mount_path);
    assert!(
        agent
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == layout::VOLUME_NAME && m.read_only != Some(true)),
        "the agent writes the volume"
    );
}

/// Native sidecar (explicit, and as the cluster default): an init container with
/// `restartPolicy: Always` and a startup probe on the agent's readiness — kept by the API server.
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn native_sidecar_mode_is_an_init_container_with_restart_policy_always() {
    let h = Harness::new().await;
    let ns = h.namespace("native", &[]).await;
    for (name, mode) in [("explicit", Some("native-sidecar")), ("default-mode", None)] {
        let mut a = opted_in(&[(SECRET_DB, DB_PATH)]);
        if let Some(m) = mode {
            a.push((ann::MODE, m));
        }
        let p = h.create_pod(&ns, &pod(name, &a), false).await.pod();
        assert_eq!(pods::status(&p), Some(ann::STATUS_INJECTED), "{name}");
        assert_eq!(
            pods::names(pods::containers(&p)),
            ["app"],
            "{name}: no classic sidecar"
        );
        assert_eq!(
            pods::agent_containers(&p, &h.config.agent_image),
            vec![("initContainers", "ps-agent")],
            "{name}"
        );
        let agent = pods::container(&p, "ps-agent").unwrap();
        assert_eq!(
            agent.restart_policy.as_deref(),
            Some("Always"),
            "{name}: native sidecar"
        );
        assert_eq!(agent.args.as_deref(), Some(&["watch".to_owned()][..]), "{name}");
        let probe = agent
            .startup_probe
            .as_ref()
            .and_then(|p| p.exec.as_ref())
            .and_then(|e| e.command.clone())
            .expect("startup probe exec");
        let mut want = h.config.agent_command.clone();
        want.extend([
            "ready".to_owned(),
            "--root".to_owned(),
            h.config.mount_path.clone(),
        ]);
        assert_eq!(probe, want, "{name}: the startup probe waits for the first write");
        pods::assert_hardened(agent);
        pods::assert_no_token(agent);
        pods::assert_reads_secrets(pods::container(&p, "app").unwrap(), &h.config.mount_path);
    }
}

/// A Job's pod (ownerReference to a real Job object) never gets a classic sidecar that would
/// keep it running: sidecar modes become the native sidecar, with a warning when asked for.
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn job_pod_never_gets_a_classic_sidecar() {
    let h = Harness::new().await;
    let ns = h.namespace("job", &[]).await;
    let template = pod("unused", &[]);
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "batch"},
        "spec": {"template": {
            "metadata": {"labels": {"app": "e2e"}},
            "spec": {
                "restartPolicy": "Never",
                "securityContext": template["spec"]["securityContext"],
                "containers": template["spec"]["containers"],
            },
        }},
    }))
    .unwrap();
    let job = Api::<Job>::namespaced(h.client.clone(), &ns)
        .create(&PostParams::default(), &job)
        .await
        .expect("creating the Job");
    let owner = json!([{
        "apiVersion": "batch/v1", "kind": "Job", "name": "batch",
        "uid": job.metadata.uid.clone().expect("job uid"),
        "controller": true, "blockOwnerDeletion": true,
    }]);
    for (name, mode, restart) in [
        ("job-sidecar", "sidecar", Some("Never")),
        ("job-init-sidecar", "init+sidecar", Some("Never")),
        // Owned by the Job but with the default restartPolicy: the owner reference alone decides.
        ("job-owner-only", "sidecar", None),
    ] {
        let mut sent = pod(name, &opted_in(&[(ann::MODE, mode), (SECRET_DB, DB_PATH)]));
        sent["metadata"]["ownerReferences"] = owner.clone();
        if let Some(r) = restart {
            sent["spec"]["restartPolicy"] = json!(r);
        }
        let created = h.create_pod(&ns, &sent, false).await;
        let warnings = created.warnings.clone();
        let p = created.pod();
        assert_eq!(
            p.metadata.owner_references.as_ref().map(|o| o[0].uid.clone()),
            job.metadata.uid.clone(),
            "{name}: stored with its owner"
        );
        assert_eq!(pods::status(&p), Some(ann::STATUS_INJECTED), "{name}");
        assert_eq!(
            pods::names(pods::containers(&p)),
            ["app"],
            "{name}: no classic sidecar"
        );
        assert_eq!(
            pods::agent_containers(&p, &h.config.agent_image),
            vec![("initContainers", "ps-agent")],
            "{name}: one agent, the native sidecar"
        );
        assert_eq!(
            pods::container(&p, "ps-agent").unwrap().restart_policy.as_deref(),
            Some("Always")
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(ann::MODE) && w.contains("native-sidecar")),
            "{name}: a warning says the mode was adapted: {warnings:?}"
        );
    }
    // Init mode stays init mode.
    let mut sent = pod(
        "job-init",
        &opted_in(&[(ann::MODE, "init"), (SECRET_DB, DB_PATH)]),
    );
    sent["metadata"]["ownerReferences"] = owner;
    sent["spec"]["restartPolicy"] = json!("Never");
    let p = h.create_pod(&ns, &sent, false).await.pod();
    assert_eq!(
        pods::agent_containers(&p, &h.config.agent_image),
        vec![("initContainers", "ps-agent-init")]
    );
}

/// Exec/env mode: a copy step, the fetch, and the app's command wrapped as `ps-agent exec --`.
/// Run for real from the stored pod: copy-self, fetch, then the wrapped app command (with the
/// app's own binary replaced by a shell that saves the variables) sees every variable.
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn exec_mode_delivers_env_vars_through_the_wrapped_command() {
    let h = Harness::new().await;
    let ns = h.namespace("env", &[]).await;
    h.credentials_secret(&ns).await;
    let sent = pod(
        "env",
        &opted_in(&[
            (ann::MODE, "init"),
            ("ps-injector.io/env-DB_PASSWORD", DB_PATH),
            ("ps-injector.io/env-DB_USER", "username:team-a/db/password"),
            ("ps-injector.io/env-API_KEY", "secret:team-a/api/key"),
            ("ps-injector.io/env-LEDGER", "account:ledger-db/svc_team_a"),
        ]),
    );
    let p = h.create_pod(&ns, &sent, false).await.pod();
    assert_eq!(pods::status(&p), Some(ann::STATUS_INJECTED));
    assert_eq!(
        pods::names(pods::init_containers(&p)),
        ["ps-agent-copy", "ps-agent-init"]
    );
    let bin_dir = format!("{}/{}", h.config.mount_path, layout::BIN_DIR);
    let copy = pods::container(&p, "ps-agent-copy").unwrap();
    assert_eq!(
        copy.args.as_deref(),
        Some(&["copy-self".to_owned(), bin_dir.clone()][..])
    );
    assert!(
        copy.env.as_deref().unwrap_or_default().is_empty(),
        "the copy step gets no credentials"
    );
    pods::assert_hardened(copy);
    pods::assert_hardened(pods::container(&p, "ps-agent-init").unwrap());
    pods::assert_no_token(copy);
    pods::assert_no_token(pods::container(&p, "ps-agent-init").unwrap());
    let app = pods::container(&p, "app").unwrap();
    let mut want: Vec<String> = vec![
        format!("{bin_dir}/{}", layout::BIN_NAME),
        "exec".into(),
        "--".into(),
    ];
    want.extend(["/app/server", "--config", "/etc/app/config.yaml"].map(String::from));
    assert_eq!(
        app.command.as_deref(),
        Some(want.as_slice()),
        "the app's command is wrapped"
    );
    pods::assert_reads_secrets(app, &h.config.mount_path);
    pods::assert_no_credentials(app, &h.config.secret_name);
    let cfg = pods::agent_config(pods::container(&p, "ps-agent-init").unwrap());
    let vars: BTreeSet<&str> = cfg.env.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        vars,
        BTreeSet::from(["API_KEY", "DB_PASSWORD", "DB_USER", "LEDGER"])
    );

    // Run the three steps of the stored pod in order, on one volume.
    let volume = Volume::new();
    h.run_container(&p, "ps-agent-copy", &volume, Options::default())
        .await
        .assert_success("ps-agent-copy");
    h.run_container(&p, "ps-agent-init", &volume, Options::default())
        .await
        .assert_success("ps-agent-init");
    let out = tempfile::tempdir().unwrap();
    let script =
        "for v in DB_PASSWORD DB_USER API_KEY LEDGER; do eval \"printf %s \\\"\\${$v}\\\"\" >\"$0/$v\"; done";
    let run = h
        .run_container(
            &p,
            "app",
            &volume,
            Options {
                replace_after_dashdash: Some(vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    script.into(),
                    out.path().display().to_string(),
                ]),
                ..Default::default()
            },
        )
        .await;
    run.assert_success("the app's wrapped command");
    let read = |v: &str| std::fs::read(out.path().join(v)).unwrap_or_else(|e| panic!("{v} not saved: {e}"));
    let db = h.seed.secret(DB_PATH).unwrap();
    assert_same_value("$DB_PASSWORD", &read("DB_PASSWORD"), db.value().as_bytes());
    assert_same_value(
        "$DB_USER",
        &read("DB_USER"),
        db.username.as_deref().unwrap_or_default().as_bytes(),
    );
    assert_same_value(
        "$API_KEY",
        &read("API_KEY"),
        h.seed.secret("team-a/api/key").unwrap().value().as_bytes(),
    );
    assert_same_value(
        "$LEDGER",
        &read("LEDGER"),
        h.seed
            .account("ledger-db/svc_team_a")
            .unwrap()
            .password
            .as_bytes(),
    );
}

// ---------------------------------------------------------------------------------------------
// Scoping, refusals, policy
// ---------------------------------------------------------------------------------------------

/// Pods without the opt-in (no annotation, a clear "no" in any case, other ps-injector keys
/// without `inject`) are created unchanged and never reach the webhook (matchConditions).
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn opt_out_pods_are_untouched_and_never_reach_the_webhook() {
    let h = Harness::new().await;
    let ns = h.namespace("optout", &[]).await;
    let cases: [(&str, Vec<(&str, &str)>); 5] = [
        ("plain", vec![]),
        ("false", vec![(ann::INJECT, "false")]),
        (
            "false-mixed-case",
            vec![(ann::INJECT, " False "), (SECRET_DB, DB_PATH)],
        ),
        ("zero", vec![(ann::INJECT, "0")]),
        ("no-inject-key", vec![(SECRET_DB, DB_PATH), (ann::MODE, "init")]),
    ];
    let sent: Vec<(&str, Value)> = cases
        .iter()
        .map(|(name, a)| (ns.as_str(), pod(name, a)))
        .collect();
    assert_created_untouched_without_admission(&h, &sent, "opt-out pods").await;
}

/// An invalid annotation fails the create with our message (naming the annotation and the
/// fix), through the real API server; a dry run gets the same answer; nothing is stored.
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn invalid_annotation_fails_the_create_with_our_message() {
    let h = Harness::new().await;
    let ns = h.namespace("invalid", &[]).await;
    let cases: Vec<(&str, Annotations<'_>, &str)> = vec![
        (
            "bad-mode",
            opted_in(&[(ann::MODE, "sidecars"), (SECRET_DB, DB_PATH)]),
            "annotation ps-injector.io/mode: unknown mode \"sidecars\"; use one of init, sidecar, native-sidecar, init+sidecar",
        ),
        (
            "bad-inject",
            vec![(ann::INJECT, "ture"), (SECRET_DB, DB_PATH)],
            "annotation ps-injector.io/inject: \"ture\" is not a boolean",
        ),
        (
            "bad-format",
            opted_in(&[(SECRET_DB, DB_PATH), ("ps-injector.io/format-db", "xml")]),
            "annotation ps-injector.io/format-db:",
        ),
        (
            "bad-env-name",
            opted_in(&[(ann::MODE, "init"), ("ps-injector.io/env-1DB", DB_PATH)]),
            "annotation ps-injector.io/env-1DB:",
        ),
        (
            "bad-interval",
            opted_in(&[
                (ann::MODE, "native-sidecar"),
                (SECRET_DB, DB_PATH),
                (ann::REFRESH_INTERVAL, "soon"),
            ]),
            "annotation ps-injector.io/refresh-interval:",
        ),
    ];
    for (name, a, want) in cases {
        for dry_run in [true, false] {
            let status = h.create_pod(&ns, &pod(name, &a), dry_run).await.refused();
            assert_eq!(status.code, 403, "{name}: {}", status.message);
            assert!(
                status.message.contains(&format!(
                    "admission webhook \"{WEBHOOK_NAME}\" denied the request"
                )),
                "{name}: {}",
                status.message
            );
            assert!(
                status.message.contains(want),
                "{name} (dry run {dry_run}): want {want:?} in {:?}",
                status.message
            );
        }
        assert!(
            h.pods(&ns).get_opt(name).await.unwrap().is_none(),
            "{name}: nothing stored"
        );
    }

    // Exec mode without a command in the spec: denied with the fix.
    let mut sent = pod(
        "no-command",
        &opted_in(&[(ann::MODE, "init"), ("ps-injector.io/env-DB", DB_PATH)]),
    );
    sent["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("command");
    let status = h.create_pod(&ns, &sent, false).await.refused();
    assert!(
        status
            .message
            .contains("container \"app\" has no command in the pod spec"),
        "{}",
        status.message
    );
}

/// Policy: namespace e2e-policy may read only `team-a/**` and `ledger-db/*`; anything else is
/// denied with a message naming the annotation and the allowed prefixes. The same path is fine
/// in a namespace without a policy entry.
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn policy_violation_is_denied() {
    let h = Harness::new().await;
    let ns = "e2e-policy";
    h.namespace_named(ns, &[]).await;

    let allowed = h
        .create_pod(
            ns,
            &pod(
                "allowed",
                &opted_in(&[
                    (ann::MODE, "init"),
                    (SECRET_DB, DB_PATH),
                    ("ps-injector.io/account-ledger", "ledger-db/svc_team_a"),
                ]),
            ),
            false,
        )
        .await;
    assert_eq!(
        ok_status(&allowed),
        Some(ann::STATUS_INJECTED),
        "paths inside the policy: {allowed:?}"
    );

    let cases: Vec<(&str, Annotations<'_>, String)> = vec![
        (
            "other-team-secret",
            opted_in(&[(ann::MODE, "init"), (SECRET_DB, "team-b/db/password")]),
            format!(
                "annotation {SECRET_DB}: path \"team-b/db/password\" is outside the secret paths namespace {ns} may read (team-a/**)"
            ),
        ),
        (
            "other-team-folder",
            opted_in(&[(ann::MODE, "init"), ("ps-injector.io/folder-db", "team-b/db")]),
            "annotation ps-injector.io/folder-db: path \"team-b/db\"".to_owned(),
        ),
        (
            "other-team-list",
            opted_in(&[(ann::MODE, "init"), (ann::SECRETS, "team-a/api/key, team-b/db/password")]),
            "\"team-b/db/password\" is outside the secret paths".to_owned(),
        ),
        (
            "other-team-env",
            opted_in(&[(ann::MODE, "init"), ("ps-injector.io/env-DB", "team-b/db/password")]),
            "\"team-b/db/password\" is outside the secret paths".to_owned(),
        ),
        (
            "other-account",
            opted_in(&[(ann::MODE, "init"), ("ps-injector.io/account-x", "billing-db/svc_billing")]),
            "annotation ps-injector.io/account-x: managed account \"billing-db/svc_billing\" is outside the accounts".to_owned(),
        ),
        (
            "guarded-override",
            opted_in(&[(ann::MODE, "init"), (SECRET_DB, DB_PATH), (ann::CREDENTIALS_SECRET, "other-credentials")]),
            format!("annotation {}: pods in namespace {ns} may not set this annotation (cluster policy)", ann::CREDENTIALS_SECRET),
        ),
    ];
    for (name, a, want) in cases {
        let status = h.create_pod(ns, &pod(name, &a), false).await.refused();
        assert_eq!(status.code, 403, "{name}");
        assert!(
            status.message.contains(&format!(
                "admission webhook \"{WEBHOOK_NAME}\" denied the request"
            )),
            "{name}: {}",
            status.message
        );
        assert!(
            status.message.contains(&want),
            "{name}: want {want:?} in {:?}",
            status.message
        );
    }

    // The policy is per namespace: elsewhere team-b's path passes the webhook (Password Safe's
    // own permissions decide there).
    let other = h.namespace("nopolicy", &[]).await;
    let created = h
        .create_pod(
            &other,
            &pod(
                "other-team",
                &opted_in(&[(ann::MODE, "init"), (SECRET_DB, "team-b/db/password")]),
            ),
            false,
        )
        .await;
    assert_eq!(ok_status(&created), Some(ann::STATUS_INJECTED), "{created:?}");
}

/// A namespace enforcing the restricted Pod Security standard accepts every injected pod: the
/// real API server judges the mutated pod, our containers included, after the webhook.
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn restricted_namespace_accepts_injected_pods() {
    let h = Harness::new().await;
    let ns = h.namespace("restricted", RESTRICTED).await;
    let cases: Vec<(&str, Annotations<'_>, Option<&str>)> = vec![
        (
            "init",
            opted_in(&[(ann::MODE, "init"), (SECRET_DB, DB_PATH)]),
            None,
        ),
        (
            "sidecar",
            opted_in(&[(ann::MODE, "sidecar"), (SECRET_DB, DB_PATH)]),
            None,
        ),
        (
            "native",
            opted_in(&[(ann::MODE, "native-sidecar"), (SECRET_DB, DB_PATH)]),
            None,
        ),
        (
            "init-and-sidecar",
            opted_in(&[(ann::MODE, "init+sidecar"), (SECRET_DB, DB_PATH)]),
            None,
        ),
        (
            "env",
            opted_in(&[(ann::MODE, "init"), ("ps-injector.io/env-DB", DB_PATH)]),
            None,
        ),
        ("job-like", opted_in(&[(SECRET_DB, DB_PATH)]), Some("Never")),
    ];
    for (name, a, restart) in cases {
        let mut sent = pod(name, &a);
        if let Some(r) = restart {
            sent["spec"]["restartPolicy"] = json!(r);
        }
        let created = h.create_pod(&ns, &sent, false).await;
        let warnings = created.warnings.clone();
        let p = created.pod();
        assert_eq!(pods::status(&p), Some(ann::STATUS_INJECTED), "{name}");
        assert!(
            !warnings.iter().any(|w| w.contains("PodSecurity")),
            "{name}: Pod Security warnings {warnings:?}"
        );
        for (_, agent) in pods::agent_containers(&p, &h.config.agent_image) {
            pods::assert_hardened(pods::container(&p, agent).unwrap());
            pods::assert_no_token(pods::container(&p, agent).unwrap());
        }
    }

    // Control: Pod Security is really enforced on opted-in pods (an app container that is not
    // compliant is refused after injection).
    let mut sent = pod(
        "non-compliant",
        &opted_in(&[(ann::MODE, "init"), (SECRET_DB, DB_PATH)]),
    );
    sent["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
    let status = h.create_pod(&ns, &sent, false).await.refused();
    assert!(
        status.message.contains("violates PodSecurity \"restricted"),
        "{}",
        status.message
    );
}

/// Another team's mutating webhook adds an init container too, one ordered before ours and one
/// after: with `reinvocationPolicy: IfNeeded` the API server calls ours again after the later
/// one changed the pod, the status annotation makes that a no-op, and the pod has exactly one
/// agent.
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn second_webhook_and_reinvocation_keep_exactly_one_agent() {
    let h = Harness::new().await;
    let ns = h.namespace("reinvoke", &[]).await;
    let other = SecondWebhook::start().await.expect("starting the second webhook");
    // Mutating webhooks run in the order of their configurations' names: "aa-…" before the
    // chart's "ps-injector", "zz-…" after it.
    let (before, after) = ("aa-e2e-other-team", "zz-e2e-other-team");
    assert!(before < h.env.webhook_configuration.as_str() && after > h.env.webhook_configuration.as_str());
    other.register(&h, before, "e2e-before-init", &ns).await;
    other.register(&h, after, "e2e-after-init", &ns).await;
    let a = opted_in(&[(ann::MODE, "init"), (SECRET_DB, DB_PATH)]);
    h.until_in_effect(&ns, &pod("probe", &a), "the other team's two webhooks", |c| {
        c.result.as_ref().is_ok_and(|p| {
            let n = pods::names(pods::init_containers(p));
            n.contains(&"e2e-before-init") && n.contains(&"e2e-after-init")
        })
    })
    .await;

    let injected0 = h.admissions("injected").await;
    let again0 = h.admissions("already_injected").await;
    let p = h.create_pod(&ns, &pod("reinvoked", &a), false).await.pod();
    assert_eq!(pods::status(&p), Some(ann::STATUS_INJECTED));
    assert_eq!(
        pods::names(pods::init_containers(&p)),
        ["e2e-before-init", "ps-agent-init", "e2e-after-init"],
        "each webhook's container once, in webhook order"
    );
    assert_eq!(
        pods::agent_containers(&p, &h.config.agent_image),
        vec![("initContainers", "ps-agent-init")],
        "exactly one agent"
    );
    pods::assert_secrets_volume(&p);
    pods::assert_reads_secrets(pods::container(&p, "app").unwrap(), &h.config.mount_path);
    // Through every reinvocation the ServiceAccount plugin skipped only our container.
    pods::assert_no_token(pods::container(&p, "ps-agent-init").unwrap());
    for other in ["app", "e2e-before-init", "e2e-after-init"] {
        pods::assert_has_token(pods::container(&p, other).unwrap());
    }
    assert_eq!(h.admissions("injected").await - injected0, 1.0, "injected once");
    assert!(
        h.admissions("already_injected").await - again0 >= 1.0,
        "our webhook was called again after the later webhook changed the pod, and did nothing"
    );
    let calls = other.calls();
    let by = |adds: &str| {
        calls
            .iter()
            .filter(|c| c.adds == adds)
            .cloned()
            .collect::<Vec<_>>()
    };
    let later = by("e2e-after-init");
    assert!(!later.is_empty(), "the later webhook was called");
    assert_eq!(
        later[0].saw_status.as_deref(),
        Some(ann::STATUS_INJECTED),
        "the later webhook saw the injected pod"
    );
    let earlier = by("e2e-before-init");
    assert!(
        earlier.len() >= 2,
        "the earlier webhook was reinvoked after ours changed the pod: {earlier:?}"
    );
    assert!(earlier[0].saw_status.is_none() && earlier[0].patched);
    assert!(
        earlier[1..].iter().all(|c| !c.patched),
        "its reinvocation changed nothing"
    );

    SecondWebhook::unregister(&h, before).await;
    SecondWebhook::unregister(&h, after).await;
}

/// Pods that do not say which user the app runs as — a manifest with no securityContext, and a
/// restricted one that only sets `runAsNonRoot` and leaves the user to the image — are injected:
/// the agent's group is added to the pod's `supplementalGroups` (appended to an existing list)
/// and the agent runs with it as its primary group, so the 0440 files reach any app user.
#[tokio::test]
#[ignore = "needs the e2e control plane: run tests/e2e/run"]
async fn pods_without_a_known_user_read_the_files_through_a_supplemental_group() {
    let h = Harness::new().await;
    let ns = h.namespace("no-user", RESTRICTED).await;
    let mut image_user = pod(
        "image-user",
        &opted_in(&[(ann::MODE, "init"), (SECRET_DB, DB_PATH)]),
    );
    image_user["spec"]["securityContext"] = json!({
        "runAsNonRoot": true,
        "seccompProfile": {"type": "RuntimeDefault"},
        "supplementalGroups": [4242],
    });
    let p = h.create_pod(&ns, &image_user, false).await.pod();
    assert_eq!(pods::status(&p), Some(ann::STATUS_INJECTED));
    let agent = pods::container(&p, "ps-agent-init").unwrap();
    let agent_group = agent
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_group)
        .expect("the agent runs with an explicit group");
    let groups = p
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.supplemental_groups.clone());
    assert_eq!(groups, Some(vec![4242, agent_group]), "appended, never replaced");
    pods::assert_hardened(agent);
    let config = pods::agent_config(agent);
    assert!(
        config.secrets.iter().all(|s| s.render.file_mode.bits() == 0o440),
        "group-readable files"
    );

    // No securityContext at all (Pod Security baseline allows it).
    let plain_ns = h.namespace("no-user-plain", &[]).await;
    let mut plain = pod("plain", &opted_in(&[(SECRET_DB, DB_PATH)]));
    plain["spec"].as_object_mut().unwrap().remove("securityContext");
    plain["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let created = h.create_pod(&plain_ns, &plain, false).await;
    assert!(created.warnings.is_empty(), "{:?}", created.warnings);
    let p = created.pod();
    assert_eq!(pods::status(&p), Some(ann::STATUS_INJECTED));
    let groups = p
        .spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|s| s.supplemental_groups.clone());
    assert_eq!(groups, Some(vec![agent_group]));
}
