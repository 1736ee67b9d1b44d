//! The agent's side of the webhook's answers, shared by the contract tests: the environment of
//! every injected agent container, ready for `ps_agent::config::load`.

use std::collections::BTreeMap;

use serde_json::Value;

/// One injected container that runs the agent with a configuration.
pub struct AgentContainer {
    pub name: String,
    /// Its `env`: literal values as they are; `valueFrom` variables (credentials from the
    /// Secret) with an empty value, to be filled by [`with_credentials`].
    pub env: BTreeMap<String, String>,
}

/// The agent containers of an AdmissionReview response carrying a JSONPatch, wherever the
/// patch put them. The container that only copies the binary (`ps-agent-copy`) has no env and
/// is left out.
pub fn agent_containers(response: &[u8]) -> Vec<AgentContainer> {
    let response: Value = serde_json::from_slice(response).expect("the response is JSON");
    let ops: Vec<Value> =
        serde_json::from_value(ps_testkit::decoded_patch(&response).expect("a patch")).unwrap();
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
    containers
        .into_iter()
        .filter_map(|c| {
            let name = c["name"].as_str().expect("a container name").to_owned();
            let Some(env) = c["env"].as_array() else {
                assert_eq!(name, "ps-agent-copy", "{name} has no env");
                return None;
            };
            let env = env
                .iter()
                .map(|e| {
                    let var = e["name"].as_str().expect("an env name").to_owned();
                    (var, e["value"].as_str().unwrap_or_default().to_owned())
                })
                .collect();
            Some(AgentContainer { name, env })
        })
        .collect()
}

/// Fills the credentials a Secret would give, one method: OAuth when the container names
/// `PS_CLIENT_ID` and no API key, else an API key with a run-as user. Test values only.
pub fn with_credentials(mut vars: BTreeMap<String, String>) -> BTreeMap<String, String> {
    if vars.contains_key("PS_CLIENT_ID") && !vars.contains_key("PS_API_KEY") {
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
    vars
}
