//! Pods as the scenarios send them (JSON, restricted-compliant) and structural checks of the
//! pods the API server returns.

use inject_api::{AgentConfig, annotations as ann, env as agent_env, layout};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, SecurityContext};
use serde_json::{Map, Value, json};

/// Image of the application containers; never pulled (no kubelet).
pub const APP_IMAGE: &str = "registry.invalid/e2e/app:1";
/// The app's user and group: set in the pod's securityContext, so the webhook knows who reads
/// the files.
pub const APP_UID: i64 = 10001;

/// The restricted Pod Security profile's container requirements.
pub fn restricted_container_sc() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
    })
}

/// A restricted-compliant pod with one app container `app` (command `/app/server`), carrying
/// `annotations`.
pub fn pod(name: &str, annotations: &[(&str, &str)]) -> Value {
    let annotations: Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations, "labels": {"app": "e2e"}},
        "spec": {
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": APP_UID,
                "runAsGroup": APP_UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "app",
                "image": APP_IMAGE,
                "command": ["/app/server", "--config", "/etc/app/config.yaml"],
                "securityContext": restricted_container_sc(),
            }],
        },
    })
}

/// `ps-injector.io/inject: "true"` plus `extra`.
pub fn opted_in<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut v = vec![(ann::INJECT, "true")];
    v.extend_from_slice(extra);
    v
}

pub fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or_default()
}

pub fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

/// The webhook's status annotation.
pub fn status(pod: &Pod) -> Option<&str> {
    annotation(pod, ann::STATUS)
}

pub fn containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
}

pub fn init_containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
}

pub fn names(cs: &[Container]) -> Vec<&str> {
    cs.iter().map(|c| c.name.as_str()).collect()
}

pub fn container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    containers(pod)
        .iter()
        .chain(init_containers(pod))
        .find(|c| c.name == name)
}

/// `(where, name)` of every container (init or app) running the agent image.
pub fn agent_containers<'a>(pod: &'a Pod, agent_image: &str) -> Vec<(&'static str, &'a str)> {
    init_containers(pod)
        .iter()
        .map(|c| ("initContainers", c))
        .chain(containers(pod).iter().map(|c| ("containers", c)))
        .filter(|(_, c)| c.image.as_deref() == Some(agent_image))
        .map(|(w, c)| (w, c.name.as_str()))
        .collect()
}

/// The injected volume: exactly one, an in-memory emptyDir with a size limit.
#[track_caller]
pub fn assert_secrets_volume(pod: &Pod) {
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    let ours: Vec<_> = volumes.iter().filter(|v| v.name == layout::VOLUME_NAME).collect();
    assert_eq!(
        ours.len(),
        1,
        "pod {}: volume {} once, got {}",
        name(pod),
        layout::VOLUME_NAME,
        ours.len()
    );
    let ed = ours[0].empty_dir.as_ref().unwrap_or_else(|| {
        panic!(
            "pod {}: volume {} is not an emptyDir",
            name(pod),
            layout::VOLUME_NAME
        )
    });
    assert_eq!(
        ed.medium.as_deref(),
        Some("Memory"),
        "pod {}: the secrets volume must be in memory",
        name(pod)
    );
    assert!(
        ed.size_limit.is_some(),
        "pod {}: the secrets volume needs a size limit",
        name(pod)
    );
}

/// `c` mounts the secrets volume exactly once, read-only, at `mount_path`.
#[track_caller]
pub fn assert_reads_secrets(c: &Container, mount_path: &str) {
    let mounts: Vec<_> = c
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| m.name == layout::VOLUME_NAME)
        .collect();
    assert_eq!(
        mounts.len(),
        1,
        "container {}: one mount of {}",
        c.name,
        layout::VOLUME_NAME
    );
    assert_eq!(
        mounts[0].mount_path, mount_path,
        "container {}: mount path",
        c.name
    );
    assert_eq!(
        mounts[0].read_only,
        Some(true),
        "container {}: the app's mount must be read-only",
        c.name
    );
}

/// `c` does not mount the secrets volume.
#[track_caller]
pub fn assert_no_secrets_mount(c: &Container) {
    assert!(
        !c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == layout::VOLUME_NAME),
        "container {} must not mount {}",
        c.name,
        layout::VOLUME_NAME
    );
}

/// The injected container satisfies the restricted Pod Security standard on its own (without
/// relying on the pod's securityContext), as DESIGN.md §4 promises.
#[track_caller]
pub fn assert_hardened(c: &Container) {
    let sc: &SecurityContext = c
        .security_context
        .as_ref()
        .unwrap_or_else(|| panic!("injected container {} has no securityContext", c.name));
    assert_eq!(sc.run_as_non_root, Some(true), "{}: runAsNonRoot", c.name);
    assert!(
        sc.run_as_user.is_some_and(|u| u > 0),
        "{}: runAsUser must be a non-root id",
        c.name
    );
    assert_eq!(
        sc.allow_privilege_escalation,
        Some(false),
        "{}: allowPrivilegeEscalation",
        c.name
    );
    assert_eq!(
        sc.read_only_root_filesystem,
        Some(true),
        "{}: readOnlyRootFilesystem",
        c.name
    );
    let drop = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.as_deref())
        .unwrap_or_default();
    assert!(
        drop.iter().any(|d| d == "ALL"),
        "{}: capabilities.drop must hold ALL",
        c.name
    );
    assert_eq!(
        sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        Some("RuntimeDefault"),
        "{}: seccompProfile RuntimeDefault",
        c.name
    );
    assert!(sc.privileged != Some(true), "{}: privileged", c.name);
}

/// The ServiceAccount admission plugin (which runs again after the webhook) gave the injected
/// container `c` no API token: no mount of a `kube-api-access-*` volume, and its one mount at
/// the token path is the webhook's empty, read-only no-token volume (the plugin skips a
/// container that already mounts something there).
#[track_caller]
pub fn assert_no_token(c: &Container) {
    let mounts: Vec<_> = c.volume_mounts.iter().flatten().collect();
    assert!(
        !mounts.iter().any(|m| m.name.starts_with("kube-api-access-")),
        "injected container {} got the ServiceAccount token: mounts {:?}",
        c.name,
        mounts
            .iter()
            .map(|m| (&m.name, &m.mount_path))
            .collect::<Vec<_>>()
    );
    let at_token_path: Vec<_> = mounts
        .iter()
        .filter(|m| m.mount_path.trim_end_matches('/') == layout::SERVICE_ACCOUNT_DIR)
        .collect();
    assert_eq!(
        at_token_path.len(),
        1,
        "injected container {}: one mount at {}",
        c.name,
        layout::SERVICE_ACCOUNT_DIR
    );
    assert_eq!(
        at_token_path[0].name,
        layout::NO_TOKEN_VOLUME_NAME,
        "injected container {}",
        c.name
    );
    assert_eq!(
        at_token_path[0].read_only,
        Some(true),
        "injected container {}: the no-token mount is read-only",
        c.name
    );
}

/// Control for [`assert_no_token`]: the ServiceAccount plugin did mount its token into the
/// user's container `c`, and the webhook's no-token volume is not mounted there.
#[track_caller]
pub fn assert_has_token(c: &Container) {
    assert!(
        c.volume_mounts.iter().flatten().any(|m| {
            m.name.starts_with("kube-api-access-")
                && m.mount_path.trim_end_matches('/') == layout::SERVICE_ACCOUNT_DIR
        }),
        "container {}: the ServiceAccount admission plugin mounted no token",
        c.name
    );
    assert!(
        !c.volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == layout::NO_TOKEN_VOLUME_NAME),
        "container {} must not mount {}",
        c.name,
        layout::NO_TOKEN_VOLUME_NAME
    );
}

pub fn env<'a>(c: &'a Container, name: &str) -> Option<&'a EnvVar> {
    c.env.iter().flatten().find(|e| e.name == name)
}

/// The agent container's `PS_AGENT_CONFIG`, parsed with the contract crate.
#[track_caller]
pub fn agent_config(c: &Container) -> AgentConfig {
    let json = env(c, agent_env::AGENT_CONFIG)
        .and_then(|e| e.value.as_deref())
        .unwrap_or_else(|| panic!("container {} has no {} value", c.name, agent_env::AGENT_CONFIG));
    AgentConfig::from_json(json).unwrap_or_else(|e| {
        panic!(
            "container {}: {} does not parse: {e}",
            c.name,
            agent_env::AGENT_CONFIG
        )
    })
}

/// Credentials reach only agent containers: no app container has an env var from the
/// credentials Secret, nor the Password Safe variables.
#[track_caller]
pub fn assert_no_credentials(c: &Container, secret_name: &str) {
    for e in c.env.iter().flatten() {
        let from_secret = e
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .is_some_and(|r| r.name == secret_name);
        assert!(
            !from_secret && !e.name.starts_with("PS_"),
            "app container {} must not receive {} (credentials stay with the agent)",
            c.name,
            e.name
        );
    }
    for ef in c.env_from.iter().flatten() {
        assert!(
            ef.secret_ref.as_ref().is_none_or(|r| r.name != secret_name),
            "app container {} must not receive the credentials Secret",
            c.name
        );
    }
}

/// The pod as stored, minus what the API server and built-in admission add, compared with
/// what was sent: containers (name, image, command, mounts of ours) and volumes of ours.
#[track_caller]
pub fn assert_untouched(pod: &Pod, sent: &Value) {
    assert_eq!(
        status(pod),
        None,
        "pod {}: status annotation on a pod that was not opted in",
        name(pod)
    );
    let sent_names: Vec<&str> = sent["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(
        names(containers(pod)),
        sent_names,
        "pod {}: containers changed",
        name(pod)
    );
    let sent_inits = sent["spec"]["initContainers"].as_array().map_or(0, Vec::len);
    assert_eq!(
        init_containers(pod).len(),
        sent_inits,
        "pod {}: init containers changed",
        name(pod)
    );
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    assert!(
        volumes.iter().all(|v| v.name != layout::VOLUME_NAME),
        "pod {}: the secrets volume was added",
        name(pod)
    );
    for (c, s) in containers(pod)
        .iter()
        .zip(sent["spec"]["containers"].as_array().into_iter().flatten())
    {
        assert_eq!(
            serde_json::to_value(&c.command).unwrap_or_default(),
            s["command"],
            "pod {}: command of {} changed",
            name(pod),
            c.name
        );
        assert_no_secrets_mount(c);
    }
}
