//! The agent accepts what the webhook renders: every injected golden case's agent container
//! environment is loaded with `ps_agent::config::load`, the agent's own start-up parser.
//!
//! The in-cluster CA bundle path is rendered in one place, `PS_CA_FILE`: the test points it at
//! a bundle outside any pod (as the demo and the end-to-end suite do) and the agent loads,
//! `caOnly` included; without the variable a `caOnly` configuration is refused, so nothing else
//! names a CA file the override could not reach.

use std::{collections::BTreeMap, fs, path::Path};

use base64::prelude::*;
use ps_webhook::{
    admission::{Outcome, review},
    config::Config,
};
use serde_json::Value;

/// The golden fixtures of the core (`crates/webhook-core/tests/fixtures`).
fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../webhook-core/tests/fixtures")
}

#[test]
fn the_agent_loads_every_rendered_configuration() {
    let mut checked = 0;
    let mut ca_checked = 0;
    let tmp = tempfile::tempdir().unwrap();
    let local_ca = tmp.path().join("ca.pem");
    fs::write(
        &local_ca,
        ps_webhook::tls::generate("contract CA", &["localhost"])
            .unwrap()
            .ca_pem,
    )
    .unwrap();
    for entry in fs::read_dir(fixtures().join("admission")).unwrap() {
        let path = entry.unwrap().path();
        let case = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let specific = fixtures().join(format!("config/{case}.yaml"));
        let config_path = if specific.exists() {
            specific
        } else {
            fixtures().join("config/default.yaml")
        };
        let config = Config::from_yaml(&fs::read_to_string(&config_path).unwrap()).unwrap();
        let body = fs::read(&path).unwrap();
        let result = review(&body, &config);
        if result.outcome != Outcome::Injected {
            continue;
        }
        let response: Value = serde_json::from_slice(&result.body).unwrap();
        let patch = BASE64_STANDARD
            .decode(response["response"]["patch"].as_str().unwrap())
            .unwrap();
        let ops: Vec<Value> = serde_json::from_slice(&patch).unwrap();
        // Every injected container, wherever the patch put it.
        let mut containers = Vec::new();
        for op in &ops {
            match &op["value"] {
                Value::Array(items) => {
                    containers.extend(items.iter().filter(|c| c.get("image").is_some()).cloned())
                }
                v if v.get("image").is_some() => containers.push(v.clone()),
                _ => {}
            }
        }
        for c in containers {
            let name = c["name"].as_str().unwrap();
            let Some(env) = c["env"].as_array() else {
                assert_eq!(name, "ps-agent-copy", "{case}: {name} has no env");
                continue;
            };
            let mut vars = BTreeMap::new();
            let mut has_client = false;
            for e in env {
                let var = e["name"].as_str().unwrap().to_owned();
                if let Some(v) = e["value"].as_str() {
                    vars.insert(var, v.to_owned());
                } else {
                    has_client |= var == "PS_CLIENT_ID";
                    vars.insert(var, String::new()); // filled below
                }
            }
            // Credentials as a Secret would give them: one method.
            if has_client && !vars.contains_key("PS_API_KEY") {
                vars.insert(
                    "PS_CLIENT_ID".into(),
                    "6f3e2d1c-0000-4000-8000-000000000001".into(),
                );
                vars.insert("PS_CLIENT_SECRET".into(), "s".repeat(40));
            } else {
                vars.insert("PS_API_KEY".into(), "k".repeat(64));
                vars.insert("PS_RUNAS".into(), "svc".into());
                vars.remove("PS_CLIENT_ID");
                vars.remove("PS_CLIENT_SECRET");
            }
            if vars.contains_key("PS_CA_FILE") {
                let in_pod = &vars["PS_CA_FILE"];
                assert!(in_pod.starts_with("/etc/ps-injector/ca/"), "{case}: {in_pod}");
                let rendered: &str = &vars["PS_AGENT_CONFIG"];
                assert!(
                    !rendered.contains(in_pod.as_str()) && !rendered.contains("caFile"),
                    "{case}: {name}: the CA path is also in PS_AGENT_CONFIG"
                );
                let ca_only = rendered.contains("\"caOnly\":true");
                if ca_only {
                    let mut without = vars.clone();
                    without.remove("PS_CA_FILE");
                    let e = ps_agent::config::load(&without, &ps_agent::config::Tuning::default())
                        .err()
                        .unwrap_or_else(|| panic!("{case}: caOnly without a CA accepted"));
                    assert!(e.0.contains("passwordSafe.caOnly: needs"), "{case}: {}", e.0);
                }
                // The bundle exists only in the pod: redirect the one place that names it.
                vars.insert("PS_CA_FILE".into(), local_ca.display().to_string());
                ca_checked += usize::from(ca_only);
            }
            let settings = ps_agent::config::load(&vars, &ps_agent::config::Tuning::default())
                .unwrap_or_else(|e| panic!("{case}: the agent refuses {name}'s configuration: {}", e.0));
            assert!(!settings.config.root.is_empty());
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} configurations checked");
    assert!(ca_checked >= 1, "no caOnly configuration checked");
}
