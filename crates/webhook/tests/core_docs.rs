//! The reference docs cover the whole vocabulary and schema.

use std::{fs, path::Path};

use inject_api::annotations::ALL;
use ps_webhook::config::Config;

fn doc(name: &str) -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs").join(name)).unwrap()
}

#[test]
fn every_annotation_key_is_in_the_table() {
    let text = doc("annotations.md");
    for info in ALL {
        let cell = if info.family {
            format!("| `{}<", info.short())
        } else {
            format!("| `{}` |", info.short())
        };
        assert!(text.contains(&cell), "annotations.md has no row for {}", info.key);
    }
}

#[test]
fn every_config_field_is_documented_and_the_example_parses() {
    let text = doc("configuration.md");
    for field in [
        "url",
        "apiVersion",
        "verifyTls",
        "caBundle.configMap",
        "caBundle.key",
        "caOnly",
        "request.durationMinutes",
        "request.reason",
        "request.rotateOnCheckin",
        "secretName",
        "auth",
        "keys.apiKey",
        "keys.runAs",
        "keys.runAsPassword",
        "keys.clientId",
        "keys.clientSecret",
        "image",
        "imagePullPolicy",
        "command",
        "resources.requests.cpu",
        "resources.requests.memory",
        "resources.limits.cpu",
        "resources.limits.memory",
        "runAsUser",
        "runAsGroup",
        "mode",
        "nativeSidecars",
        "refreshInterval",
        "refreshJitterPercent",
        "minRefreshInterval",
        "mountPath",
        "volumeSizeLimit",
        "initFirst",
        "requireKnownUser",
        "meshInitContainers",
        "meshAnnotations",
        "startupFailureThreshold",
        "allowedHosts",
        "allowOverrides",
        "namespaces.<name>.allowedPaths",
        "namespaces.<name>.allowedAccounts",
        "namespaces.<name>.allowOverrides",
    ] {
        assert!(
            text.contains(&format!("| `{field}` |")),
            "configuration.md has no row for {field}"
        );
    }
    let example = text
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .unwrap();
    let config = Config::from_yaml(example).unwrap();
    assert!(
        config
            .namespace_policy("team-a")
            .unwrap()
            .allows_path("shared/common-eu/x")
    );
    assert!(!config.namespace_policy("team-b").unwrap().allows_path("team-a/x"));
}
