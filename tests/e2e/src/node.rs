//! Pods that really run on the suite's node (issue 10): the kubelet of `tests/e2e/node`, the
//! webhook deployed by the chart (Service mode), the agent image built from `Dockerfile.agent`.
//!
//! The app containers run the probe (`tests/e2e/node/probe`, a static Go program in a
//! `FROM scratch` image): it reports what it observed — files and variables by length and
//! SHA-256, its own user and groups — as JSON in its termination message, which the scenarios
//! read back through the API. Secret values are never printed; the scenarios compare digests.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, ContainerState, ContainerStatus, Pod, Secret},
};
use kube::api::{LogParams, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Harness, pods::restricted_container_sc};

/// Variables `tests/e2e/run` exports for the node phase.
pub mod vars {
    pub const NODE_IP: &str = "PS_E2E_NODE_IP";
    pub const EMULATOR_HOST: &str = "PS_E2E_EMULATOR_HOST";
    pub const PROBE_IMAGE: &str = "PS_E2E_PROBE_IMAGE";
    pub const PROBE_4321_IMAGE: &str = "PS_E2E_PROBE_4321_IMAGE";
    pub const NODE_TAINT: &str = "PS_E2E_NODE_TAINT";
    pub const RELEASE: &str = "PS_E2E_RELEASE";
}

/// The node phase's environment.
#[derive(Clone, Debug)]
pub struct NodeEnv {
    /// The bridge's host address: where ps-emulator listens, what `hostAliases` map its name to.
    pub node_ip: String,
    /// The emulator's host name in the chart's `passwordSafe.url` (resolved in pods through
    /// `/etc/hosts`, i.e. `hostAliases`, by the agent's own resolver).
    pub emulator_host: String,
    pub probe_image: String,
    /// The probe with `USER 4321` in its image.
    pub probe_4321_image: String,
    /// Taint of the node: only pods that tolerate it are scheduled.
    pub taint: String,
    /// Helm release (and Deployment) of the in-cluster webhook.
    pub release: String,
}

impl NodeEnv {
    pub fn from_env() -> NodeEnv {
        let v = |n: &str| match std::env::var(n) {
            Ok(v) if !v.is_empty() => v,
            _ => panic!(
                "{n} is not set: the running-pod scenarios need the node that tests/e2e/run starts \
                 (run `tests/e2e/run`, optionally with a filter)"
            ),
        };
        NodeEnv {
            node_ip: v(vars::NODE_IP),
            emulator_host: v(vars::EMULATOR_HOST),
            probe_image: v(vars::PROBE_IMAGE),
            probe_4321_image: v(vars::PROBE_4321_IMAGE),
            taint: v(vars::NODE_TAINT),
            release: v(vars::RELEASE),
        }
    }
}

/// The app's user in the running pods.
pub const UID: i64 = 1000;

/// A pod that runs on the node: one container `app` from the probe image running
/// `/probe ARGS...` as user 1000, restricted-compliant (read-only root filesystem), never
/// restarted, tolerating the node's taint, with the emulator's name in `/etc/hosts`.
pub fn running_pod(env: &NodeEnv, name: &str, annotations: &[(&str, &str)], args: &[&str]) -> Value {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let mut command = vec!["/probe".to_owned()];
    command.extend(args.iter().map(|a| (*a).to_owned()));
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations, "labels": {"app": "e2e-run"}},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "tolerations": [{"key": env.taint, "operator": "Exists", "effect": "NoSchedule"}],
            "hostAliases": [{"ip": env.node_ip, "hostnames": [env.emulator_host]}],
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": UID,
                "runAsGroup": UID,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [{
                "name": "app",
                "image": env.probe_image,
                "imagePullPolicy": "Never",
                "command": command,
                "securityContext": restricted_container_sc(),
            }],
        },
    })
}

/// What the probe reported (its termination message).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub uid: i64,
    pub gid: i64,
    #[serde(default)]
    pub groups: Option<Vec<i64>>,
    #[serde(default)]
    pub files: BTreeMap<String, Observed>,
    #[serde(default)]
    pub absent: BTreeMap<String, bool>,
    #[serde(default)]
    pub env: BTreeMap<String, Observed>,
    #[serde(default)]
    pub env_names: Vec<String>,
    pub watch: Option<Watch>,
    pub error: Option<String>,
}

/// A file or variable as the probe saw it: length and SHA-256 of the content, never the content.
#[derive(Debug, Deserialize)]
pub struct Observed {
    #[serde(default)]
    pub len: usize,
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub mode: String,
    pub uid: i64,
    pub gid: i64,
    pub error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Watch {
    pub initial: String,
    #[serde(rename = "final")]
    pub final_sha: String,
    pub notifications: u32,
    pub unchanged: u32,
    pub started_at_ms: i64,
    pub seen_at_ms: i64,
    pub timed_out: bool,
    pub final_len: usize,
    pub notification_error: Option<String>,
}

/// Hex SHA-256, as the probe reports it.
pub fn sha256(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Panics unless the probe saw `path` with exactly `want` (compared by digest; only lengths
/// are printed) and mode `mode`.
#[track_caller]
pub fn assert_file(report: &Report, path: &str, want: &[u8], mode: &str) {
    let got = report
        .files
        .get(path)
        .unwrap_or_else(|| panic!("the probe did not report {path}: {:?}", report.files.keys()));
    assert!(
        got.error.is_none(),
        "the app could not read {path}: {:?}",
        got.error
    );
    assert!(
        got.sha256 == sha256(want),
        "{path}: the app read {} bytes that differ from the seed's {} bytes (values are not printed)",
        got.len,
        want.len()
    );
    assert_eq!(got.mode, mode, "{path}: file mode the app saw");
}

/// Panics unless the probe saw variable `name` holding exactly `want` (by digest).
#[track_caller]
pub fn assert_var(report: &Report, name: &str, want: &[u8]) {
    let got = report
        .env
        .get(name)
        .unwrap_or_else(|| panic!("the probe did not report variable {name}"));
    assert!(got.error.is_none(), "variable {name}: {:?}", got.error);
    assert!(
        got.sha256 == sha256(want),
        "variable {name}: the app saw {} bytes that differ from the seed's {} bytes (values are not printed)",
        got.len,
        want.len()
    );
}

/// The status of container `name` (init or app).
pub fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let st = pod.status.as_ref()?;
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
}

pub fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// `(exit code, termination message)` of a terminated container.
pub fn terminated(pod: &Pod, name: &str) -> Option<(i32, String)> {
    let t = container_status(pod, name)?.state.as_ref()?.terminated.as_ref()?;
    Some((t.exit_code, t.message.clone().unwrap_or_default()))
}

/// Whether container `name` ever started: running now, or terminated after running.
pub fn ever_ran(pod: &Pod, name: &str) -> bool {
    let Some(st) = container_status(pod, name) else {
        return false;
    };
    let ran = |s: &Option<ContainerState>| {
        s.as_ref()
            .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
    };
    ran(&st.state) || ran(&st.last_state) || st.started == Some(true)
}

impl Harness {
    /// A fresh namespace for a running pod, labelled `restricted`, with what injected pods need
    /// there: the credentials Secret and the CA bundle ConfigMap the configuration names.
    pub async fn running_namespace(&self, prefix: &str) -> String {
        let ns = self
            .namespace(
                prefix,
                &[
                    ("pod-security.kubernetes.io/enforce", "restricted"),
                    ("pod-security.kubernetes.io/enforce-version", "latest"),
                ],
            )
            .await;
        self.credentials_secret(&ns).await;
        self.ca_config_map(&ns).await;
        ns
    }

    /// The ConfigMap `passwordSafe.caBundle.configMap` names, holding the emulator's CA under
    /// `ca.crt`.
    pub async fn ca_config_map(&self, ns: &str) {
        let Some(name) = &self.config.ca_bundle else {
            return;
        };
        let ca = std::fs::read_to_string(&self.env.emulator_ca).expect("the emulator CA");
        let cm: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name},
            "data": {"ca.crt": ca},
        }))
        .unwrap();
        kube::Api::<ConfigMap>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &cm)
            .await
            .unwrap_or_else(|e| panic!("creating ConfigMap {name} in {ns}: {e}"));
    }

    /// Creates a Secret `name` with string data.
    pub async fn secret(&self, ns: &str, name: &str, data: &[(&str, &str)]) {
        let data: BTreeMap<String, ByteString> = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
            .collect();
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        kube::Api::<Secret>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("creating Secret {name} in {ns}: {e}"));
    }

    /// Polls pod `name` until `done` holds; panics after `timeout` with the pod's status.
    pub async fn wait_pod(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Pod) -> bool,
    ) -> Pod {
        let deadline = Instant::now() + timeout;
        loop {
            let p = self.get_pod(ns, name).await;
            if done(&p) {
                return p;
            }
            if Instant::now() > deadline {
                panic!(
                    "pod {ns}/{name}: not {what} within {timeout:?}; status: {}",
                    serde_json::to_string(&p.status).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the pod has finished (Succeeded or Failed).
    pub async fn finished(&self, ns: &str, name: &str) -> Pod {
        self.wait_pod(ns, name, "finished", Duration::from_secs(120), |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        })
        .await
    }

    /// The probe's report from container `container` of a finished pod; panics with the
    /// container's state when there is none.
    #[track_caller]
    pub fn report(pod: &Pod, container: &str) -> Report {
        let (code, msg) = terminated(pod, container).unwrap_or_else(|| {
            panic!(
                "container {container} has not terminated: {:?}",
                container_status(pod, container)
            )
        });
        serde_json::from_str(&msg).unwrap_or_else(|e| {
            panic!("container {container} (exit {code}) left no probe report ({e}): {msg:?}")
        })
    }

    /// Every log the API server returns for the pod's containers that ran (init containers
    /// included; a container that never started has no log and the API answers 400).
    pub async fn all_logs(&self, ns: &str, pod: &Pod) -> String {
        let spec = pod.spec.as_ref().expect("pod spec");
        let mut out = String::new();
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter());
        for c in containers.filter(|c| ever_ran(pod, &c.name)) {
            out.push_str(&self.log(ns, crate::pods::name(pod), &c.name).await);
        }
        out
    }

    /// The log of one container as the API server returns it (`kubectl logs`).
    pub async fn log(&self, ns: &str, pod: &str, container: &str) -> String {
        self.pods(ns)
            .logs(
                pod,
                &LogParams {
                    container: Some(container.to_owned()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("GET log of {ns}/{pod}/{container}: {e}"))
    }

    /// `PUT /_emulator/secret`: replaces a secret's value (the response names no value).
    pub async fn set_secret(&self, folder: &str, title: &str, value: &str) {
        self.http
            .put(format!("{}/_emulator/secret", self.env.emulator_origin()))
            .json(&json!({"path": folder, "title": title, "value": value}))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("PUT /_emulator/secret {folder}/{title}: {e}"));
    }
}
