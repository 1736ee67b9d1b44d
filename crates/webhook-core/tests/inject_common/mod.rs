//! What `inject` must produce, computed independently of it: the webhook's own answer
//! (AdmissionReview in, JSON Patch out) applied with the `json-patch` crate to the document as
//! kubectl reads it. Shared by the inject tests, the property tests and the corpus test.
#![allow(dead_code)] // each test file uses a part

use serde_json::{Value, json};
use webhook_core::{
    admission::{Outcome, review},
    config::Config,
};

/// The built-in workloads: where the pod template is, and whether it runs to completion.
pub fn template_pointer(doc: &Value) -> Option<(&'static str, bool)> {
    let api_version = doc["apiVersion"].as_str()?;
    let kind = doc["kind"].as_str()?;
    Some(match (api_version, kind) {
        ("v1", "Pod") => ("", false),
        ("v1", "ReplicationController")
        | ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => ("/spec/template", false),
        ("batch/v1", "Job") => ("/spec/template", true),
        ("batch/v1", "CronJob") => ("/spec/jobTemplate/spec/template", true),
        _ => return None,
    })
}

/// Whether a document is a list `inject` descends into.
pub fn is_list(doc: &Value) -> bool {
    doc["kind"].as_str().is_some_and(|k| k.ends_with("List")) && doc["items"].is_array()
}

/// The webhook's answer for one pod template: `Ok(Some(injected template))`, `Ok(None)` when
/// it is left alone, `Err(message)` when the webhook denies it.
pub fn webhook_template(
    template: &Value,
    namespace: &str,
    runs_to_completion: bool,
    config: &Config,
) -> Result<Option<Value>, String> {
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": template.get("metadata").cloned().unwrap_or(json!({}))});
    if let Some(spec) = template.get("spec") {
        pod["spec"] = spec.clone();
    }
    if runs_to_completion && pod["metadata"].is_object() {
        // The webhook tells a Job's pod by its owner; templates of Jobs and CronJobs are one.
        pod["metadata"]["ownerReferences"] =
            json!([{"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": "u"}]);
    }
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "operation": "CREATE", "namespace": namespace, "object": pod,
        }
    });
    let result = review(&serde_json::to_vec(&body).unwrap(), config);
    match result.outcome {
        Outcome::Injected => {}
        Outcome::Denied => return Err(result.message.unwrap_or_default()),
        _ => return Ok(None),
    }
    let response: Value = serde_json::from_slice(&result.body).unwrap();
    let patch: json_patch::Patch =
        serde_json::from_value(ps_testkit::decoded_patch(&response).expect("a patch")).unwrap();
    json_patch::patch(&mut pod, &patch).map_err(|e| format!("the webhook's patch does not apply: {e}"))?;
    if runs_to_completion {
        let meta = pod["metadata"].as_object_mut().unwrap();
        meta.remove("ownerReferences");
    }
    let mut out = template.clone();
    out["metadata"] = pod["metadata"].take();
    if let Some(spec) = pod.get_mut("spec") {
        out["spec"] = spec.take();
    }
    Ok(Some(out))
}

/// A document as kubectl must read it after `inject`: its pod templates replaced by the
/// webhook's answer. `Err` when the webhook denies one.
pub fn expected_document(
    doc: &Value,
    default_namespace: Option<&str>,
    config: &Config,
) -> Result<Value, String> {
    let mut doc = doc.clone();
    if is_list(&doc) {
        let items = doc["items"].as_array_mut().unwrap();
        for item in items.iter_mut() {
            *item = expected_document(item, default_namespace, config)?;
        }
        return Ok(doc);
    }
    let Some((pointer, runs_to_completion)) = template_pointer(&doc) else {
        return Ok(doc);
    };
    let namespace = doc["metadata"]["namespace"]
        .as_str()
        .or(default_namespace)
        .unwrap_or("default")
        .to_owned();
    let Some(template) = doc.pointer(pointer) else {
        return Ok(doc);
    };
    if !template["metadata"].is_object() {
        return Ok(doc);
    }
    if let Some(injected) = webhook_template(template, &namespace, runs_to_completion, config)? {
        *doc.pointer_mut(pointer).unwrap() = injected;
    }
    Ok(doc)
}

/// JSON equality as kubectl means it: numbers equal as numbers (`3` and `3.0` are one value;
/// two integers compare exactly).
pub fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
            (Some(i), Some(j), _, _) => i == j,
            (_, _, Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// The first difference between two JSON values, as a pointer and both sides.
pub fn json_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (a, b))| json_difference(a, b, &format!("{path}/{i}"))),
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => {
                        if let Some(d) = json_difference(v, w, &format!("{path}/{k}")) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{path}/{k}: only on the left: {v}")),
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}/{k}: only on the right: {}", y[k]))
        }
        _ if json_eq(a, b) => None,
        _ => Some(format!("{path}: {a} != {b}")),
    }
}
