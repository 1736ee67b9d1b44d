//! `inject`: multi-document manifests in, the same documents out with pod templates injected
//! by the webhook's code path.
// A test, not the core: the purity lints (clippy.toml) do not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]

use std::{fs, path::Path};

mod admission_common;
mod inject_common;

use inject_common::{expected_document, json_difference, json_eq};
use serde_json::{Value, json};
use webhook_core::{
    admission::{Outcome, review},
    config::Config,
    inject::{InjectError, diff, inject_manifests},
    kubeyaml::read_stream,
};

fn fixture(path: &str) -> String {
    fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(path),
    )
    .unwrap()
}

fn config() -> Config {
    admission_common::config_for("default")
}

/// The documents of a stream, split the simple way (enough for these fixtures).
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else {
            docs.last_mut().unwrap().push_str(line);
        }
    }
    docs
}

/// The first document of `text` as kubectl reads it.
fn yaml_to_json(text: &str) -> Value {
    let stream = read_stream(text).unwrap();
    stream
        .documents
        .iter()
        .find_map(|d| d.node.as_ref())
        .map_or(Value::Null, |n| n.to_json())
}

#[test]
fn workloads_golden() {
    let input = fixture("inject/workloads.yaml");
    let out = inject_manifests(&input, &config(), Some("team-a")).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/inject/workloads.expected.yaml");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        fs::write(&path, &out.output).unwrap();
    } else {
        let expected = fs::read_to_string(&path).expect("run with UPDATE_GOLDEN=1");
        assert!(
            expected == out.output,
            "{}",
            similar::TextDiff::from_lines(&expected, &out.output).unified_diff()
        );
    }
    assert_eq!(
        out.changed, 7,
        "Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod, List item"
    );
    // Warnings name the object.
    assert!(
        out.warnings
            .iter()
            .any(|w| w.starts_with("Job/migrate: annotation ps-injector.io/mode:")),
        "{:?}",
        out.warnings
    );
    assert!(
        out.warnings.iter().any(|w| w.starts_with("CronJob/report:")),
        "{:?}",
        out.warnings
    );
}

#[test]
fn untouched_documents_are_byte_identical_and_order_is_kept() {
    let input = fixture("inject/workloads.yaml");
    let out = inject_manifests(&input, &config(), None).unwrap();
    let before = documents(&input);
    let after = documents(&out.output);
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        let opted_in = b.contains("ps-injector.io/inject: \"true\"");
        if opted_in {
            assert_ne!(b, a);
            // Same object, in the same place.
            let (bj, aj) = (yaml_to_json(b), yaml_to_json(a));
            assert_eq!(bj["kind"], aj["kind"]);
            assert_eq!(bj["metadata"]["name"], aj["metadata"]["name"]);
        } else {
            assert_eq!(b, a, "an untouched document changed");
        }
    }
    // Leading comments of a changed document survive.
    assert!(
        out.output
            .contains("# The web Deployment.\napiVersion: apps/v1\n")
    );
    assert!(out.output.contains("name: team-a   # untouched, comment kept\n"));
    assert!(out.output.ends_with("---\n# trailing comment-only document\n"));
}

#[test]
fn second_run_changes_nothing() {
    let input = fixture("inject/workloads.yaml");
    let once = inject_manifests(&input, &config(), None).unwrap();
    let twice = inject_manifests(&once.output, &config(), None).unwrap();
    assert_eq!(twice.changed, 0);
    assert_eq!(twice.output, once.output);
    assert_eq!(diff(&once.output, &twice.output), "");
}

/// The template injected by `inject` equals the pod the webhook's patch produces.
#[test]
fn same_code_path_as_the_webhook() {
    let input = fixture("inject/workloads.yaml");
    let out = inject_manifests(&input, &config(), None).unwrap();
    let mut injected = 0;
    for (b, a) in documents(&input).iter().zip(documents(&out.output)) {
        let before = yaml_to_json(b);
        let after = yaml_to_json(&a);
        let expected = expected_document(&before, None, &config()).unwrap();
        assert!(
            json_difference(&after, &expected, "").is_none(),
            "{}: {:?}",
            before["kind"],
            json_difference(&after, &expected, "")
        );
        injected += usize::from(!json_eq(&before, &after));
    }
    assert_eq!(
        injected, 7,
        "Deployment, StatefulSet, DaemonSet, Job, CronJob, Pod, List"
    );
}

#[test]
fn cronjob_and_job_never_get_a_classic_sidecar() {
    let input = fixture("inject/workloads.yaml");
    let out = inject_manifests(&input, &config(), None).unwrap();
    for doc in documents(&out.output) {
        let v = yaml_to_json(&doc);
        let pointer = match v["kind"].as_str() {
            Some("Job") => "/spec/template/spec",
            Some("CronJob") => "/spec/jobTemplate/spec/template/spec",
            _ => continue,
        };
        let spec = v.pointer(pointer).unwrap();
        let names: Vec<&str> = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert!(!names.iter().any(|n| n.starts_with("ps-agent")), "{names:?}");
        let native = spec["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "ps-agent")
            .expect("native sidecar");
        assert_eq!(native["restartPolicy"], "Always");
    }
}

#[test]
fn every_workload_kind_and_json_documents() {
    let config = config();
    let template = r#"{"metadata": {"annotations": {"ps-injector.io/inject": "true", "ps-injector.io/secret-db": "team-a/db/password"}},
        "spec": {"securityContext": {"runAsUser": 1000}, "containers": [{"name": "app", "image": "x", "command": ["/app"]}]}}"#;
    for (api_version, kind) in [
        ("apps/v1", "Deployment"),
        ("apps/v1", "StatefulSet"),
        ("apps/v1", "DaemonSet"),
        ("apps/v1", "ReplicaSet"),
        ("v1", "ReplicationController"),
        ("batch/v1", "Job"),
    ] {
        let doc = format!(
            r#"{{"apiVersion": "{api_version}", "kind": "{kind}", "metadata": {{"name": "w"}}, "spec": {{"template": {template}}}}}"#
        );
        let out = inject_manifests(&doc, &config, Some("team-a")).unwrap();
        assert_eq!(out.changed, 1, "{kind}");
        assert!(
            out.output.trim_start().starts_with('{'),
            "{kind}: a JSON document stays JSON"
        );
        let v: Value = serde_json::from_str(&out.output).unwrap();
        assert_eq!(
            v["spec"]["template"]["metadata"]["annotations"]["ps-injector.io/status"],
            "injected"
        );
    }
    let doc = format!(
        r#"{{"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {{"name": "c"}}, "spec": {{"jobTemplate": {{"spec": {{"template": {template}}}}}}}}}"#
    );
    assert_eq!(inject_manifests(&doc, &config, None).unwrap().changed, 1);
    // Not a workload: untouched even with the annotation.
    let doc = "kind: Secret\nmetadata:\n  annotations:\n    ps-injector.io/inject: \"true\"\n";
    let out = inject_manifests(doc, &config, None).unwrap();
    assert_eq!((out.changed, out.output.as_str()), (0, doc));
}

#[test]
fn errors_carry_the_webhooks_message() {
    let doc = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: team-a}\nspec:\n  template:\n    metadata:\n      annotations:\n        ps-injector.io/inject: \"true\"\n        ps-injector.io/secret-db: team-a/db/password\n        ps-injector.io/format-db: jsn\n    spec:\n      containers: [{name: app, image: x}]\n";
    let input = format!("kind: ConfigMap\nmetadata: {{name: a}}\n---\n{doc}");
    let err = inject_manifests(&input, &config(), None).unwrap_err();
    let InjectError::Denied {
        document,
        object,
        message,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((*document, object.as_str()), (2, "Deployment/web"));

    // The webhook's answer for the same pod.
    let pod = json!({"metadata": {"annotations": {"ps-injector.io/inject": "true", "ps-injector.io/secret-db": "team-a/db/password", "ps-injector.io/format-db": "jsn"}},
        "spec": {"containers": [{"name": "app", "image": "x"}]}});
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE", "namespace": "team-a", "object": pod}});
    let result = review(&serde_json::to_vec(&body).unwrap(), &config());
    assert_eq!(result.outcome, Outcome::Denied);
    assert_eq!(result.message.as_deref(), Some(message.as_str()));
    assert_eq!(
        message,
        "annotation ps-injector.io/format-db: unknown format \"jsn\"; use one of raw, json, yaml, dotenv, properties, template"
    );
    assert!(
        err.to_string()
            .starts_with("document 2 (Deployment/web): annotation ps-injector.io/format-db")
    );

    // The location is the annotation the message names, in the file's own lines.
    assert_eq!(err.mark().line, 13, "{err}");
    assert!(
        err.located("app.yaml")
            .starts_with("app.yaml:13:9: document 2 (Deployment/web): "),
        "{}",
        err.located("app.yaml")
    );

    let err = inject_manifests("a: 1\n---\nb: [1,\n", &config(), None).unwrap_err();
    assert!(matches!(err, InjectError::Yaml { .. }), "{err}");
    assert_eq!(err.mark().line, 4, "{err}");
}

#[test]
fn namespace_argument_feeds_the_policy() {
    let doc = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n    ps-injector.io/inject: \"true\"\n    ps-injector.io/secret-db: team-b/db/password\nspec:\n  securityContext: {runAsUser: 1000}\n  containers: [{name: app, image: x}]\n";
    // team-a may read only team-a/** and shared/*.
    let err = inject_manifests(doc, &config(), Some("team-a")).unwrap_err();
    assert!(
        err.to_string()
            .contains("outside the secret paths namespace team-a"),
        "{err}"
    );
    // Without a namespace: `default`, which has no policy.
    assert_eq!(inject_manifests(doc, &config(), None).unwrap().changed, 1);
}

#[test]
fn diff_shows_only_the_change() {
    let d = diff("a\nb\nc\n", "a\nB\nc\n");
    assert!(d.contains("-b\n+B\n"), "{d}");
    assert!(d.starts_with("--- before\n+++ after\n"), "{d}");
}

#[test]
fn annotations_on_the_workload_instead_of_its_template_are_named() {
    let input = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  annotations:\n    \
                 ps-injector.io/inject: \"true\"\n    ps-injector.io/secret-db: team-a/db\n    other: x\nspec:\n  \
                 template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n";
    let out = inject_manifests(input, &config(), Some("team-a")).unwrap();
    assert_eq!(out.changed, 0);
    assert_eq!(out.output, input, "nothing is injected");
    let warning = out
        .warnings
        .iter()
        .find(|w| w.starts_with("Deployment/web: "))
        .expect("a warning");
    assert!(
        warning.contains("ps-injector.io/inject, ps-injector.io/secret-db")
            && warning.contains("move them to spec.template.metadata.annotations")
            && !warning.contains("other"),
        "{warning}"
    );

    // A CronJob names its deeper template path; annotations in the right place warn nothing.
    let cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: c\n  annotations: {ps-injector.io/inject: \"true\"}\n\
                spec:\n  schedule: \"@daily\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          \
                restartPolicy: Never\n          containers: [{name: c, image: x}]\n";
    let out = inject_manifests(cron, &config(), Some("team-a")).unwrap();
    assert!(
        out.warnings
            .iter()
            .any(|w| w.contains("move it to spec.jobTemplate.spec.template.metadata.annotations")),
        "{:?}",
        out.warnings
    );
    let fine = fixture("inject/workloads.yaml");
    let out = inject_manifests(&fine, &config(), Some("team-a")).unwrap();
    assert!(
        !out.warnings.iter().any(|w| w.contains("own metadata")),
        "{:?}",
        out.warnings
    );
}
