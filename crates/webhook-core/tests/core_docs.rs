//! The reference docs cover the whole vocabulary and schema.
// A test, not the core: the purity lints (clippy.toml) do not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]

use std::{fs, path::Path};

use inject_api::annotations::ALL;
use webhook_core::config::Config;

/// The README is the reference for annotations and cluster configuration.
fn readme() -> String {
    fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap()
}

#[test]
fn every_annotation_key_is_in_the_table() {
    let text = readme();
    for info in ALL {
        let cell = if info.family {
            format!("| `{}<", info.short())
        } else {
            format!("| `{}` |", info.short())
        };
        assert!(
            text.contains(&cell),
            "README.md has no annotation row for {}",
            info.key
        );
    }
}

#[test]
fn every_config_field_is_documented_and_the_example_parses() {
    let text = readme();
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
            "README.md has no configuration row for {field}"
        );
    }
    // The example of the configuration section, the first YAML block after its heading.
    let example = text
        .split("## Cluster configuration and policy")
        .nth(1)
        .and_then(|section| section.split("```yaml\n").nth(1))
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
