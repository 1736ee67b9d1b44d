//! The golden AdmissionReview fixtures, the configuration of each case ([`config_for`]) and
//! the invariants every injected pod keeps, shared by the golden, property and inject tests of
//! webhook-core and by ps-webhook's agent contract test (which includes this file by path).
#![allow(dead_code)] // each test file uses a part
// A test, not the core: the purity lints (clippy.toml) do not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use inject_api::{AgentConfig, layout};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::Value;
use webhook_core::{
    admission::{Outcome, review},
    config::{AgentUser, Config},
};

pub const AGENT_NAMES: [&str; 3] = ["ps-agent", "ps-agent-init", "ps-agent-copy"];

pub fn fixtures() -> PathBuf {
    // From either crate's directory (crates/webhook-core or crates/webhook).
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../webhook-core/tests/fixtures")
}

/// The cluster configuration of golden case `case`: `config/<case>.yaml`, else `default.yaml`.
pub fn config_for(case: &str) -> Config {
    let dir = fixtures().join("config");
    let specific = dir.join(format!("{case}.yaml"));
    let path = if specific.exists() {
        specific
    } else {
        dir.join("default.yaml")
    };
    let text = fs::read_to_string(&path).unwrap();
    Config::from_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn cases() -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(fixtures().join("admission"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}

/// Applies the patch and checks the invariants of an injected pod.
pub fn check_invariants(case: &str, body: &[u8], config: &Config) {
    let input: Value = serde_json::from_slice(body).unwrap();
    let original = input["request"]["object"].clone();
    let result = review(body, config);
    let response: Value = serde_json::from_slice(&result.body).unwrap();
    assert_eq!(response["response"]["patchType"], "JSONPatch", "{case}");
    let decoded = ps_testkit::decoded_patch(&response).expect("a patch");
    let patch: json_patch::Patch = serde_json::from_value(decoded.clone()).unwrap();

    // Only adds, except exec mode's command replacement.
    let ops: Vec<Value> = serde_json::from_value(decoded).unwrap();
    for op in &ops {
        let path = op["path"].as_str().unwrap();
        match op["op"].as_str().unwrap() {
            "add" => {}
            "replace" => assert!(path.ends_with("/command"), "{case}: replace of {path}"),
            other => panic!("{case}: {other} operation"),
        }
    }
    let last = ops.last().unwrap();
    assert!(
        last["path"].as_str().unwrap().contains("ps-injector.io~1status")
            || last["value"].get("ps-injector.io/status").is_some(),
        "{case}: the status annotation is the last operation"
    );

    let mut patched = original.clone();
    json_patch::patch(&mut patched, &patch).unwrap_or_else(|e| panic!("{case}: patch does not apply: {e}"));
    let pod: Pod =
        serde_json::from_value(patched.clone()).unwrap_or_else(|e| panic!("{case}: not a Pod: {e}"));
    let spec = pod.spec.as_ref().unwrap();
    let inits = spec.init_containers.clone().unwrap_or_default();
    let all: Vec<&Container> = spec.containers.iter().chain(inits.iter()).collect();

    // The agents are the containers the patch added: a user's container may carry an agent's
    // name that this injection does not use (`ps-agent-init` next to a native sidecar).
    let user_names: BTreeSet<&str> = ["containers", "initContainers"]
        .iter()
        .filter_map(|a| original["spec"][a].as_array())
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let is_agent = |name: &str| AGENT_NAMES.contains(&name) && !user_names.contains(name);

    // Each agent container once in the pod (kube-apiserver refuses a duplicate name), at least
    // one agent.
    for name in AGENT_NAMES.into_iter().filter(|n| is_agent(n)) {
        let n = all.iter().filter(|c| c.name == name).count();
        assert!(n <= 1, "{case}: {name} {n} times");
    }
    let agents: Vec<&&Container> = all.iter().filter(|c| is_agent(&c.name)).collect();
    assert!(
        agents.iter().any(|c| c.name != "ps-agent-copy"),
        "{case}: no agent container"
    );

    // The volume once, in memory, with a size limit.
    let volumes = spec.volumes.clone().unwrap_or_default();
    let ours: Vec<_> = volumes.iter().filter(|v| v.name == layout::VOLUME_NAME).collect();
    assert_eq!(ours.len(), 1, "{case}: volume count");
    let empty_dir = ours[0].empty_dir.as_ref().expect("emptyDir");
    assert_eq!(empty_dir.medium.as_deref(), Some("Memory"), "{case}");
    assert!(empty_dir.size_limit.is_some(), "{case}: sizeLimit");

    // The no-token volume once, in memory, tiny.
    let no_token: Vec<_> = volumes
        .iter()
        .filter(|v| v.name == layout::NO_TOKEN_VOLUME_NAME)
        .collect();
    assert_eq!(no_token.len(), 1, "{case}: no-token volume count");
    let empty_dir = no_token[0].empty_dir.as_ref().expect("no-token emptyDir");
    assert_eq!(empty_dir.medium.as_deref(), Some("Memory"), "{case}");
    assert_eq!(
        empty_dir.size_limit.as_ref().map(|q| q.0.as_str()),
        Some(layout::NO_TOKEN_SIZE_LIMIT),
        "{case}"
    );

    // Every injected container has exactly one mount at the ServiceAccount token path, the
    // no-token volume read-only: the ServiceAccount plugin (re-run after us) skips it. No app
    // container mounts the no-token volume, and the app's own mounts are kept as they were.
    for c in &all {
        let mounts: Vec<_> = c.volume_mounts.iter().flatten().collect();
        let ours: Vec<_> = mounts
            .iter()
            .filter(|m| m.name == layout::NO_TOKEN_VOLUME_NAME)
            .collect();
        if is_agent(&c.name) {
            let at_token_path: Vec<_> = mounts
                .iter()
                .filter(|m| m.mount_path.trim_end_matches('/') == layout::SERVICE_ACCOUNT_DIR)
                .collect();
            assert_eq!(at_token_path.len(), 1, "{case}: {} token-path mounts", c.name);
            assert_eq!(
                at_token_path[0].name,
                layout::NO_TOKEN_VOLUME_NAME,
                "{case}: {}",
                c.name
            );
            assert_eq!(at_token_path[0].read_only, Some(true), "{case}: {}", c.name);
            assert!(
                !mounts.iter().any(|m| m.name.starts_with("kube-api-access-")),
                "{case}: {} mounts a ServiceAccount token",
                c.name
            );
        } else {
            assert!(
                ours.is_empty(),
                "{case}: app container {} mounts the no-token volume",
                c.name
            );
            let array = if spec.containers.iter().any(|a| a.name == c.name) {
                "containers"
            } else {
                "initContainers"
            };
            // Compared as JSON, not through the typed Pod (which fills in defaults).
            let own_mounts = |pod: &Value| -> Vec<Value> {
                pod["spec"][array]
                    .as_array()
                    .and_then(|a| a.iter().find(|o| o["name"] == c.name.as_str()))
                    .and_then(|o| o["volumeMounts"].as_array().cloned())
                    .unwrap_or_default()
            };
            let before = own_mounts(&original);
            let after: Vec<Value> = own_mounts(&patched).into_iter().take(before.len()).collect();
            assert_eq!(after, before, "{case}: {}'s own mounts kept", c.name);
        }
    }

    // The user's volumes and containers are kept, in order.
    let original_volumes: Vec<&str> = original["spec"]["volumes"]
        .as_array()
        .map(|a| a.iter().map(|v| v["name"].as_str().unwrap()).collect())
        .unwrap_or_default();
    let kept: Vec<&str> = volumes
        .iter()
        .map(|v| v.name.as_str())
        .filter(|n| original_volumes.contains(n))
        .collect();
    assert_eq!(kept, original_volumes, "{case}: user volumes kept in order");
    for (array, list) in [("containers", &spec.containers), ("initContainers", &inits)] {
        let original_names: Vec<&str> = original["spec"][array]
            .as_array()
            .map(|a| a.iter().map(|c| c["name"].as_str().unwrap()).collect())
            .unwrap_or_default();
        let kept: Vec<&str> = list
            .iter()
            .map(|c| c.name.as_str())
            .filter(|n| !is_agent(n))
            .collect();
        assert_eq!(kept, original_names, "{case}: user {array} kept in order");
    }

    // Targets: the `containers` annotation, else every app container, plus exec containers.
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let mount_path = agent_config(agents.iter().find(|c| c.name != "ps-agent-copy").unwrap()).root;
    let targets: BTreeSet<String> = match annotations.get("ps-injector.io/containers") {
        Some(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
        None => original["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect(),
    };
    for c in &all {
        let mounts: Vec<_> = c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name == layout::VOLUME_NAME)
            .collect();
        if is_agent(&c.name) {
            assert_eq!(mounts.len(), 1, "{case}: agent {} mounts the volume once", c.name);
            assert_ne!(mounts[0].read_only, Some(true), "{case}: the agent writes");
            continue;
        }
        if targets.contains(&c.name) {
            assert_eq!(mounts.len(), 1, "{case}: {} mounted once", c.name);
            assert_eq!(mounts[0].read_only, Some(true), "{case}: {} read-only", c.name);
            assert_eq!(mounts[0].mount_path, mount_path, "{case}");
        }
        for m in &mounts {
            assert_eq!(m.read_only, Some(true), "{case}: {} mount read-only", c.name);
        }
    }

    // Injected containers: restricted Pod Security, credentials by reference, a valid config.
    for c in &agents {
        let sc = c.security_context.as_ref().expect("securityContext");
        assert_eq!(sc.run_as_non_root, Some(true), "{case}: {}", c.name);
        match sc.run_as_user {
            Some(uid) => assert!(uid > 0, "{case}: {}", c.name),
            // Left to the platform (OpenShift's restricted SCCs), and only then.
            None => assert_eq!(
                config.agent.run_as_user,
                AgentUser::Platform,
                "{case}: {}",
                c.name
            ),
        }
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{case}: {}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{case}: {}", c.name);
        assert_ne!(sc.privileged, Some(true), "{case}");
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]), "{case}");
        assert!(caps.add.is_none(), "{case}");
        assert_eq!(
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault"),
            "{case}"
        );
        assert!(c.resources.is_some(), "{case}: resources");
        for e in c.env.iter().flatten() {
            if e.name.starts_with("PS_") && e.name != "PS_AGENT_CONFIG" && e.name != "PS_CA_FILE" {
                assert!(e.value.is_none(), "{case}: credential {} by value", e.name);
                assert!(
                    e.value_from
                        .as_ref()
                        .and_then(|f| f.secret_key_ref.as_ref())
                        .is_some(),
                    "{case}: credential {} not from a Secret",
                    e.name
                );
            }
        }
        if c.name != "ps-agent-copy" {
            agent_config(c);
        }
        if c.name == "ps-agent" && inits.iter().any(|i| i.name == "ps-agent") {
            assert_eq!(
                c.restart_policy.as_deref(),
                Some("Always"),
                "{case}: native sidecar"
            );
            let probe = c.startup_probe.as_ref().expect("startup probe");
            let cmd = probe.exec.as_ref().unwrap().command.as_ref().unwrap();
            assert_eq!(
                cmd[cmd.len() - 3..],
                ["ready", "--root", mount_path.as_str()],
                "{case}"
            );
        }
    }
    // App containers never receive credentials.
    for c in &all {
        if !is_agent(&c.name) {
            for e in c.env.iter().flatten() {
                assert!(!e.name.starts_with("PS_"), "{case}: {} got {}", c.name, e.name);
            }
        }
    }
    // A pod that runs to completion never gets a classic sidecar. (No restartPolicy is
    // Kubernetes' default, Always: such a pod keeps running.)
    if matches!(spec.restart_policy.as_deref(), Some("Never" | "OnFailure")) {
        assert!(
            !spec.containers.iter().any(|c| is_agent(&c.name)),
            "{case}: classic sidecar in a run-to-completion pod"
        );
    }
    // Exec mode wraps the command and keeps the args.
    let exec_bin = format!("{mount_path}/{}/{}", layout::BIN_DIR, layout::BIN_NAME);
    for (i, c) in spec.containers.iter().enumerate() {
        let before = &original["spec"]["containers"][i];
        if let Some(cmd) = &c.command
            && cmd.first() == Some(&exec_bin)
        {
            assert_eq!(cmd[1..3], ["exec", "--"], "{case}");
            let original_cmd: Vec<String> = serde_json::from_value(before["command"].clone()).unwrap();
            assert_eq!(cmd[3..], original_cmd[..], "{case}");
            assert!(
                inits.iter().any(|i| i.name == "ps-agent-copy"),
                "{case}: copy step"
            );
        }
        if is_agent(&c.name) {
            continue;
        }
        assert_eq!(
            serde_json::to_value(&c.args).unwrap(),
            before.get("args").cloned().unwrap_or(Value::Null),
            "{case}: args unchanged"
        );
    }
    assert_eq!(
        annotations.get("ps-injector.io/status").map(String::as_str),
        Some("injected"),
        "{case}"
    );

    // A second pass changes nothing.
    let mut again = input.clone();
    again["request"]["object"] = patched;
    let second = review(&serde_json::to_vec(&again).unwrap(), config);
    assert_eq!(second.outcome, Outcome::AlreadyInjected, "{case}: second pass");
    let second_review: Value = serde_json::from_slice(&second.body).unwrap();
    assert!(
        second_review["response"].get("patch").is_none(),
        "{case}: second pass patched"
    );
    assert_eq!(second_review["response"]["allowed"], true);
}

pub fn agent_config(c: &Container) -> AgentConfig {
    let json = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "PS_AGENT_CONFIG")
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| panic!("{} has no PS_AGENT_CONFIG", c.name));
    AgentConfig::from_json(&json).unwrap_or_else(|e| panic!("{}: {e}", c.name))
}
