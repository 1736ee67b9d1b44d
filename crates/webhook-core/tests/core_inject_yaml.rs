//! `inject` keeps manifests exactly as kubectl reads them: one test per way it used not to
//! (issue 9). Values are checked with the crate's reader, which the corpus test
//! (`tests/yaml-oracle/run`) holds to kubectl's own on every document it reads.
// A test, not the core: the purity lints (clippy.toml) do not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]

mod admission_common;

use serde_json::{Value, json};
use webhook_core::{
    config::Config,
    inject::{InjectError, inject_manifests},
    kubeyaml::read_stream,
};

fn config() -> Config {
    admission_common::config_for("default")
}

/// The documents kubectl reads, as JSON.
fn read(text: &str) -> Vec<Value> {
    read_stream(text)
        .unwrap()
        .documents
        .iter()
        .filter_map(|d| d.node.as_ref().map(|n| n.to_json()))
        .collect()
}

/// A Deployment whose pod template opts in; `extra` is more pod spec, indented for `spec:`.
fn deployment(name: &str, extra: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  selector:\n    matchLabels: {{app: {name}}}\n  \
         template:\n    metadata:\n      labels: {{app: {name}}}\n      annotations:\n        ps-injector.io/inject: \"true\"\n        \
         ps-injector.io/secret-db: team-a/db/password\n    spec:\n      securityContext:\n        runAsUser: 1000\n{extra}"
    )
}

fn injected(input: &str) -> (Vec<Value>, webhook_core::inject::Injected) {
    let out = inject_manifests(input, &config(), Some("team-a")).unwrap();
    assert!(out.changed > 0, "nothing injected:\n{}", out.output);
    (read(&out.output), out)
}

fn app_container(doc: &Value) -> &Value {
    &doc["spec"]["template"]["spec"]["containers"][0]
}

/// Argo CD's redis has `args: [..., "no"]`: written back bare, kubectl read `false`.
#[test]
fn yaml_1_1_boolean_words_stay_strings() {
    let words = [
        "no", "yes", "on", "off", "y", "n", "Y", "N", "NO", "True", "~", "null", "",
    ];
    let quoted: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
    let input = deployment(
        "redis",
        &format!(
            "      containers:\n      - name: redis\n        image: redis\n        args: [{}]\n        env:\n        - name: APPENDONLY\n          value: \"no\"\n",
            quoted.join(", ")
        ),
    );
    let before = read(&input);
    let (after, out) = injected(&input);
    assert_eq!(app_container(&after[0])["args"], json!(words), "{}", out.output);
    assert_eq!(
        app_container(&after[0])["args"],
        app_container(&before[0])["args"]
    );
    assert_eq!(app_container(&after[0])["env"][0]["value"], "no");
    assert!(out.output.contains("  - 'no'\n"), "{}", out.output);
}

/// Istio's jwt-server has `defaultMode: 0400`: read as 400 and written '0400' (a string).
#[test]
fn octal_and_other_yaml_1_1_numbers_keep_their_value() {
    let input = deployment(
        "jwt",
        "      containers:\n      - name: app\n        image: x\n        command: [\"/app\"]\n        ports: [{containerPort: 0x1F90}]\n      \
         volumes:\n      - name: keys\n        secret:\n          secretName: keys\n          defaultMode: 0400\n      \
         terminationGracePeriodSeconds: 1_0\n",
    );
    let (after, out) = injected(&input);
    let spec = &after[0]["spec"]["template"]["spec"];
    assert_eq!(spec["volumes"][0]["secret"]["defaultMode"], 256, "{}", out.output);
    assert_eq!(spec["containers"][0]["ports"][0]["containerPort"], 8080);
    assert_eq!(spec["terminationGracePeriodSeconds"], 10);
    assert!(out.output.contains("defaultMode: 256\n"), "{}", out.output);
}

/// Merge keys were not resolved: an inherited mount was lost, a merged runAsUser unseen, a
/// pod spec built by a merge had "no containers".
#[test]
fn merge_keys_are_resolved() {
    let input = "apiVersion: v1\nkind: List\nitems:\n\
- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: web}\n  spec:\n    template:\n      metadata:\n        annotations: &opt-in\n          \
ps-injector.io/inject: \"true\"\n          ps-injector.io/secret-db: team-a/db/password\n      spec: &podspec\n        securityContext:\n          \
<<: {runAsUser: 1000}\n        containers:\n        - &base\n          name: web\n          image: app:1\n          volumeMounts:\n          \
- {name: data, mountPath: /data}\n        - <<: *base\n          name: worker\n        volumes: [{name: data, emptyDir: {}}]\n\
- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: copy}\n  spec:\n    template:\n      metadata:\n        annotations: *opt-in\n      \
spec:\n        <<: *podspec\n";
    let (after, out) = injected(input);
    assert_eq!(out.changed, 2, "{:?}", out.warnings);
    for item in after[0]["items"].as_array().unwrap() {
        let spec = &item["spec"]["template"]["spec"];
        assert_eq!(spec["securityContext"]["runAsUser"], 1000);
        for (container, name) in spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .zip(["web", "worker"])
        {
            assert_eq!(container["name"], name);
            assert_eq!(container["image"], "app:1");
            let mounts: Vec<&str> = container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["name"].as_str().unwrap())
                .collect();
            assert_eq!(
                mounts,
                ["data", "ps-injector-secrets"],
                "the inherited mount is kept: {}",
                out.output
            );
        }
    }
    // The merged runAsUser is what the webhook saw: no warning about an unknown user.
    assert!(
        !out.warnings.iter().any(|w| w.contains("unknown")),
        "{:?}",
        out.warnings
    );
}

/// go-yaml v2's merge order: a merge overwrites keys before it, keys after it win, and in a
/// list of merges the first map wins.
#[test]
fn merge_precedence_is_go_yaml_v2s() {
    let docs = read(
        "a: &a {x: 1, w: 1}\nb: &b {x: 2, z: 2}\nc:\n  x: 0\n  <<: [*a, *b]\n  z: 3\nd: {<<: *a, x: 0}\n",
    );
    assert_eq!(docs[0]["c"], json!({"x": 1, "w": 1, "z": 3}));
    assert_eq!(docs[0]["d"], json!({"x": 0, "w": 1}));
    // YAML 1.1 keys: `y` is the boolean true, so the JSON key "true".
    assert_eq!(read("{y: 1, 2: b}")[0], json!({"true": 1, "2": "b"}));
}

/// A byte-order mark was refused ("more than one document").
#[test]
fn a_byte_order_mark_is_accepted_and_kept() {
    let input = format!(
        "\u{feff}---\n{}",
        deployment("bom", "      containers: [{name: app, image: x}]\n")
    );
    let (after, out) = injected(&input);
    assert_eq!(after[0]["metadata"]["name"], "bom");
    assert!(
        out.output.starts_with("\u{feff}---\napiVersion: apps/v1\n"),
        "{:?}",
        &out.output[..40]
    );
}

/// A non-string annotation stopped the run with a location that pointed nowhere.
#[test]
fn a_non_string_annotation_is_named_where_it_is() {
    let doc = deployment("web", "      containers: [{name: app, image: x}]\n").replace(
        "ps-injector.io/inject: \"true\"",
        "ps-injector.io/inject: \"true\"\n        prometheus.io/port: 8080",
    );
    let input = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\n{doc}");
    let err = inject_manifests(&input, &config(), None).unwrap_err();
    let InjectError::Invalid { path, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(path, "spec.template.metadata.annotations.prometheus.io/port");
    assert_eq!(
        err.located("app.yaml"),
        "app.yaml:17:29: document 2 (Deployment/web): spec.template.metadata.annotations.prometheus.io/port: \
         a number (8080) where Kubernetes wants a string (annotation values are strings); quote it: prometheus.io/port: \"8080\""
    );
    // The opt-in itself as a bare boolean.
    let doc = deployment("web", "      containers: [{name: app, image: x}]\n")
        .replace("ps-injector.io/inject: \"true\"", "ps-injector.io/inject: yes");
    let err = inject_manifests(&doc, &config(), None).unwrap_err();
    assert!(
        err.to_string()
            .contains("a boolean (true) where Kubernetes wants a string"),
        "{err}"
    );
    assert_eq!((err.mark().line, err.mark().column), (12, 32));
    // Without the opt-in, a non-string annotation is not inject's business: copied as is.
    let other = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {port: 8080}\nspec:\n  containers: [{name: a, image: x}]\n";
    assert_eq!(inject_manifests(other, &config(), None).unwrap().output, other);
}

/// Error lines counted from each document, not from the file.
#[test]
fn syntax_errors_carry_file_lines() {
    let input = "a: 1\n---\nb: 2\n---\n# three\nc:\n  d: [1, 2\n  e: 3\n";
    let err = inject_manifests(input, &config(), None).unwrap_err();
    assert!(matches!(err, InjectError::Yaml { .. }), "{err}");
    assert!((7..=8).contains(&err.mark().line), "{err} at {}", err.mark());
    let err = inject_manifests("a: 1\n--- !!map\nb: 2\n", &config(), None).unwrap_err();
    assert_eq!(err.mark().line, 2, "{err}");
}

/// The opt-in on kinds inject does not handle was ignored without a word.
#[test]
fn opt_in_on_other_kinds_is_warned_about() {
    let template = "  template:\n    metadata:\n      annotations:\n        ps-injector.io/inject: \"true\"\n        \
                    ps-injector.io/secret-db: team-a/db/password\n    spec:\n      containers: [{name: app, image: x}]\n";
    let input = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {{name: web}}\nspec:\n{template}---\n\
         apiVersion: apps.openshift.io/v1\nkind: DeploymentConfig\nmetadata: {{name: dc}}\nspec:\n{template}---\n\
         apiVersion: v1\nkind: PodTemplate\nmetadata: {{name: pt}}\n{}",
        template.replace("\n  ", "\n").trim_start()
    );
    let out = inject_manifests(&input, &config(), None).unwrap();
    assert_eq!(out.changed, 0);
    assert_eq!(out.output, input, "left alone");
    for (object, kind, path) in [
        (
            "Rollout/web",
            "kind Rollout of argoproj.io/v1alpha1",
            "spec.template.metadata.annotations",
        ),
        (
            "DeploymentConfig/dc",
            "kind DeploymentConfig of apps.openshift.io/v1",
            "spec.template.metadata.annotations",
        ),
        (
            "PodTemplate/pt",
            "kind PodTemplate of v1",
            "template.metadata.annotations",
        ),
    ] {
        let w = out
            .warnings
            .iter()
            .find(|w| w.starts_with(&format!("{object}: ")))
            .unwrap_or_else(|| panic!("no warning for {object}: {:?}", out.warnings));
        assert!(w.contains(kind) && w.contains(&format!(" at {path} ")), "{w}");
        assert!(w.contains("the webhook still injects the pods"), "{w}");
    }
}

/// A custom resource whose kind happens to be `Deployment` was injected.
#[test]
fn only_built_in_api_groups_are_injected() {
    let input =
        deployment("web", "      containers: [{name: app, image: x}]\n").replace("apps/v1", "example.com/v1");
    let out = inject_manifests(&input, &config(), None).unwrap();
    assert_eq!((out.changed, out.output.as_str()), (0, input.as_str()));
    assert!(
        out.warnings
            .iter()
            .any(|w| w.starts_with("Deployment/web: ") && w.contains("not kind Deployment of example.com/v1")),
        "{:?}",
        out.warnings
    );
    // The same object in apps/v1 is injected.
    let input = input.replace("example.com/v1", "apps/v1");
    assert_eq!(inject_manifests(&input, &config(), None).unwrap().changed, 1);
}

/// `--diff` was one diff of the whole stream, quadratic in the number of injected documents
/// (an 8 MB stream took 65 s). Now each changed document is diffed alone: this stream of 400
/// injected Deployments took the old diff minutes. Hunks carry each document's own lines.
#[test]
fn diff_is_per_document_with_file_lines() {
    let one = deployment("web", "      containers: [{name: app, image: x}]\n");
    let lines_per_doc = one.lines().count() + 1;
    let input: String = (0..400)
        .map(|i| format!("{}---\n", one.replace("name: web", &format!("name: web-{i}"))))
        .collect();
    let out = inject_manifests(&input, &config(), Some("team-a")).unwrap();
    assert_eq!(out.changed, 400);
    let diff = out.diff("app.yaml", "app.yaml (injected)");
    assert!(
        diff.starts_with("--- app.yaml\n+++ app.yaml (injected)\n@@ "),
        "{}",
        &diff[..200]
    );
    let hunks: Vec<&str> = diff.lines().filter(|l| l.starts_with("@@ ")).collect();
    assert!(hunks.len() >= 400, "{}", hunks.len());
    // Every hunk of document i starts within its lines in the input.
    let first_of = |hunk: &str| -> usize {
        hunk.trim_start_matches("@@ -")
            .split([',', ' '])
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let starts: Vec<usize> = hunks.iter().map(|h| first_of(h)).collect();
    assert!(starts.windows(2).all(|w| w[0] < w[1]), "hunks in order");
    assert!(starts.iter().all(|&s| s <= 400 * lines_per_doc));
    assert!(
        !diff.lines().any(|l| l.starts_with('-') && !l.starts_with("---")),
        "only additions"
    );
    // Nothing injected: an empty diff.
    let again = inject_manifests(&out.output, &config(), Some("team-a")).unwrap();
    assert_eq!(again.diff("a", "b"), "");
}

/// Kept as before: a CRLF document stays CRLF, JSON stays JSON, leading comments stay.
#[test]
fn crlf_json_and_comments_are_kept() {
    let input = deployment("crlf", "      containers: [{name: app, image: x}]\n").replace('\n', "\r\n");
    let input = format!("# lead\r\n{input}");
    let (after, out) = injected(&input);
    assert_eq!(after[0]["metadata"]["name"], "crlf");
    assert!(
        out.output.starts_with("# lead\r\napiVersion: apps/v1\r\n"),
        "{:?}",
        &out.output[..40]
    );
    assert!(
        !out.output.replace("\r\n", "").contains('\n'),
        "only CRLF line breaks"
    );

    let json_doc =
        serde_json::to_string(&read(&deployment("j", "      containers: [{name: app, image: x}]\n"))[0])
            .unwrap();
    let input = format!("kind: ConfigMap\n---\n{json_doc}\n");
    let (_, out) = injected(&input);
    assert!(
        out.output
            .starts_with("kind: ConfigMap\n---\n{\n  \"apiVersion\": \"apps/v1\",\n"),
        "{}",
        out.output
    );
}
