//! Requests shared by the webhook's HTTP tests.

use serde_json::{Value, json};

/// The namespace of every test pod.
pub const NAMESPACE: &str = "team-a";

/// A pod in [`NAMESPACE`] with one app container (`busybox`, `sleep 3600`) running as user
/// 10001, carrying `annotations`. A `name` ending in `-` becomes `generateName`, as for the
/// pods of a ReplicaSet.
pub fn app_pod(name: &str, annotations: Value) -> Value {
    let name_key = if name.ends_with('-') {
        "generateName"
    } else {
        "name"
    };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {name_key: name, "namespace": NAMESPACE, "annotations": annotations},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 10001},
            "containers": [{"name": "app", "image": "busybox:1.36", "command": ["sleep", "3600"]}]
        }
    })
}

/// The AdmissionReview v1 body kube-apiserver sends to create `pod`.
pub fn pod_review(uid: &str, pod: Value) -> Vec<u8> {
    let name = pod["metadata"]["name"].clone();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name,
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
    .to_string()
    .into_bytes()
}
