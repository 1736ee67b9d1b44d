//! AdmissionReview bytes in, AdmissionReview bytes out: the thin adapter around
//! [`crate::spec`] and [`crate::mutate`].
//!
//! Cost model (instruction budgets: ≤ 30k on the skip path, ≤ 150k on the inject path):
//! - the review is deserialised once into borrowed structs; strings stay slices of the body;
//! - of `request.object` only `metadata` is parsed (name, namespace, annotations as a list of
//!   borrowed pairs); `spec` and `ownerReferences` are kept as raw JSON and parsed only for an
//!   opted-in pod, into a minimal view rather than a full `Pod`;
//! - the response is written through small serde structs; the patch is serialised once and
//!   base64-encoded into a string (`patchType: JSONPatch`).
//!
//! Non-Pod kinds, subresources, operations other than CREATE and pods without the opt-in are
//! allowed unchanged. `dryRun` gets the same answer (the webhook has no side effects). A body
//! that is not JSON gets HTTP 400; JSON that is not a usable AdmissionReview gets an
//! AdmissionReview with `allowed: false` (echoing the uid when it can be read).

use base64::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{
    config::Config,
    mutate::{self, PodMeta, PodSpecView, PodView, Text},
    patch::{self, PatchOp},
    spec,
};

/// What happened to one admission request; a bounded metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Not a pod CREATE, or a pod without the opt-in: allowed unchanged.
    Skipped,
    /// Allowed with a patch.
    Injected,
    /// Carries the status annotation already: allowed unchanged.
    AlreadyInjected,
    /// Refused: an invalid annotation, a policy violation or a name clash.
    Denied,
    /// Not a usable AdmissionReview.
    Invalid,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Skipped => "skipped",
            Outcome::Injected => "injected",
            Outcome::AlreadyInjected => "already_injected",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
        }
    }
}

/// The answer to one request, plus what the server logs and counts.
#[derive(Clone, Debug)]
pub struct AdmissionResult {
    /// 200, or 400 when the body is not JSON.
    pub http_status: u16,
    /// The AdmissionReview JSON (or error text for 400).
    pub body: Vec<u8>,
    pub outcome: Outcome,
    /// Injection mode label when injected.
    pub mode: Option<&'static str>,
    pub uid: String,
    pub namespace: String,
    /// `metadata.name`, or `generateName` when the name is not set yet.
    pub name: String,
    pub message: Option<String>,
    pub warnings: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ReviewIn<'a> {
    #[serde(borrow, default, rename = "apiVersion")]
    api_version: Option<Text<'a>>,
    #[serde(borrow, default)]
    request: Option<RequestIn<'a>>,
}

#[derive(Deserialize)]
struct RequestIn<'a> {
    #[serde(borrow, default)]
    uid: Option<Text<'a>>,
    #[serde(borrow, default)]
    kind: Option<GroupVersionKind<'a>>,
    #[serde(borrow, default, rename = "subResource")]
    sub_resource: Option<Text<'a>>,
    #[serde(borrow, default)]
    operation: Option<Text<'a>>,
    #[serde(borrow, default)]
    namespace: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    object: Option<ObjectIn<'a>>,
}

#[derive(Deserialize)]
struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    group: Option<Text<'a>>,
    #[serde(borrow, default)]
    kind: Option<Text<'a>>,
}

/// `request.object`: metadata parsed, spec kept raw.
#[derive(Deserialize)]
struct ObjectIn<'a> {
    #[serde(borrow, default)]
    metadata: Option<PodMeta<'a>>,
    #[serde(borrow, default)]
    spec: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct ReviewOut<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'a str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<StatusOut<'a>>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    warnings: &'a [String],
}

#[derive(Serialize)]
struct StatusOut<'a> {
    status: &'static str,
    message: &'a str,
    reason: &'static str,
    code: u16,
}

const V1: &str = "admission.k8s.io/v1";

// ---------------------------------------------------------------------------------------------
// The decision, shared with `inject`
// ---------------------------------------------------------------------------------------------

/// What the webhook does with one pod (or pod template).
#[derive(Debug)]
pub enum Decision {
    /// No opt-in: unchanged.
    Skip,
    /// The status annotation is there: unchanged.
    AlreadyInjected,
    /// Refused with this message.
    Deny { message: String, warnings: Vec<String> },
    /// The patch to apply.
    Inject {
        patch: Vec<PatchOp>,
        warnings: Vec<String>,
        mode: &'static str,
    },
}

/// Decides for one pod: `metadata` parsed, `spec` raw. `template_runs_to_completion` is set by
/// `inject` for the templates of Jobs and CronJobs; a pod's ownerReferences and restartPolicy
/// are checked here.
pub fn decide(
    meta: &PodMeta<'_>,
    spec_raw: Option<&RawValue>,
    namespace: &str,
    template_runs_to_completion: bool,
    config: &Config,
) -> Decision {
    let annotations = &meta.annotations;
    match spec::opted_in(annotations.iter()) {
        Ok(false) => return Decision::Skip,
        Ok(true) => {}
        Err(deny) => {
            return Decision::Deny {
                message: deny.0,
                warnings: Vec::new(),
            };
        }
    }
    if spec::already_injected(annotations.iter()) {
        return Decision::AlreadyInjected;
    }
    let injection = match spec::build(annotations.iter(), namespace, config) {
        Ok(s) => s,
        Err(deny) => {
            return Decision::Deny {
                message: deny.0,
                warnings: Vec::new(),
            };
        }
    };
    let pod_spec: PodSpecView<'_> = match spec_raw.map(|raw| serde_json::from_str(raw.get())).transpose() {
        Ok(s) => s.unwrap_or_default(),
        Err(e) => {
            return Decision::Deny {
                message: format!("the pod spec cannot be read: {e}"),
                warnings: injection.warnings,
            };
        }
    };
    let restart_once = pod_spec
        .restart_policy
        .as_ref()
        .is_some_and(|p| matches!(p.as_str(), "Never" | "OnFailure"));
    let view = PodView {
        runs_to_completion: template_runs_to_completion || restart_once || meta.owned_by_job(),
        meta: meta.clone(),
        spec: pod_spec,
    };
    match mutate::mutate(&view, &injection, config) {
        Ok(m) => Decision::Inject {
            patch: m.patch,
            warnings: m.warnings,
            mode: m.mode.as_str(),
        },
        Err(deny) => Decision::Deny {
            message: deny.0,
            warnings: injection.warnings,
        },
    }
}

// ---------------------------------------------------------------------------------------------
// review()
// ---------------------------------------------------------------------------------------------

/// Answers one AdmissionReview. Never panics, never 5xx.
pub fn review(body: &[u8], config: &Config) -> AdmissionResult {
    let parsed: ReviewIn<'_> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return unreadable(body, &e),
    };
    let api_version = parsed.api_version.as_ref().map_or(V1, |v| v.as_str());
    let api_version = if api_version.starts_with("admission.k8s.io/") {
        api_version
    } else {
        V1
    };
    let Some(request) = parsed.request else {
        return invalid(api_version, "", "the AdmissionReview has no request".to_owned());
    };
    let uid = request.uid.as_ref().map_or("", |u| u.as_str());
    if uid.is_empty() {
        return invalid(
            api_version,
            "",
            "the AdmissionReview request has no uid".to_owned(),
        );
    }
    let meta = request.object.as_ref().and_then(|o| o.metadata.as_ref());
    let namespace = request
        .namespace
        .as_ref()
        .or(meta.and_then(|m| m.namespace.as_ref()))
        .map_or("default", |n| n.as_str());
    let name = request
        .name
        .as_ref()
        .filter(|n| !n.as_str().is_empty())
        .or(meta.and_then(|m| m.name.as_ref().filter(|n| !n.as_str().is_empty())))
        .or(meta.and_then(|m| m.generate_name.as_ref()))
        .map_or("", |n| n.as_str());

    let is_pod = request.kind.as_ref().is_some_and(|k| {
        k.group.as_ref().is_none_or(|g| g.as_str().is_empty())
            && k.kind.as_ref().is_some_and(|k| k.as_str() == "Pod")
    }) && request
        .sub_resource
        .as_ref()
        .is_none_or(|s| s.as_str().is_empty());
    let create = request.operation.as_ref().is_some_and(|o| o.as_str() == "CREATE");
    let mut result = AdmissionResult {
        http_status: 200,
        body: Vec::new(),
        outcome: Outcome::Skipped,
        mode: None,
        uid: uid.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        message: None,
        warnings: Vec::new(),
    };
    if !is_pod || !create {
        result.body = allowed(api_version, uid, None, &[]);
        return result;
    }
    let Some(object) = &request.object else {
        result.outcome = Outcome::Invalid;
        let message = "the AdmissionReview request has no object".to_owned();
        result.body = refused(api_version, uid, &message, 400, &[]);
        result.message = Some(message);
        return result;
    };
    let default_meta = PodMeta::default();
    let meta = object.metadata.as_ref().unwrap_or(&default_meta);
    match decide(meta, object.spec, namespace, false, config) {
        Decision::Skip => result.body = allowed(api_version, uid, None, &[]),
        Decision::AlreadyInjected => {
            result.outcome = Outcome::AlreadyInjected;
            result.body = allowed(api_version, uid, None, &[]);
        }
        Decision::Deny { message, warnings } => {
            result.outcome = Outcome::Denied;
            result.body = refused(api_version, uid, &message, 403, &warnings);
            result.message = Some(message);
            result.warnings = warnings;
        }
        Decision::Inject {
            patch,
            warnings,
            mode,
        } => {
            result.outcome = Outcome::Injected;
            result.mode = Some(mode);
            let encoded = BASE64_STANDARD.encode(patch::to_json(&patch));
            result.body = allowed(api_version, uid, Some(encoded), &warnings);
            result.warnings = warnings;
        }
    }
    result
}

fn allowed(api_version: &str, uid: &str, patch: Option<String>, warnings: &[String]) -> Vec<u8> {
    write(&ReviewOut {
        api_version,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid,
            allowed: true,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            status: None,
            warnings,
        },
    })
}

fn refused(api_version: &str, uid: &str, message: &str, code: u16, warnings: &[String]) -> Vec<u8> {
    write(&ReviewOut {
        api_version,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid,
            allowed: false,
            patch_type: None,
            patch: None,
            status: Some(StatusOut {
                status: "Failure",
                message,
                reason: if code == 403 { "Forbidden" } else { "BadRequest" },
                code,
            }),
            warnings,
        },
    })
}

fn write(review: &ReviewOut<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + review.response.patch.as_ref().map_or(0, String::len));
    // Writing plain structs of strings and booleans into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, review);
    out
}

fn invalid(api_version: &str, uid: &str, message: String) -> AdmissionResult {
    AdmissionResult {
        http_status: 200,
        body: refused(api_version, uid, &message, 400, &[]),
        outcome: Outcome::Invalid,
        mode: None,
        uid: uid.to_owned(),
        namespace: String::new(),
        name: String::new(),
        message: Some(message),
        warnings: Vec::new(),
    }
}

/// The body did not deserialise: HTTP 400 when it is not JSON at all, else an AdmissionReview
/// refusal that echoes whatever uid and apiVersion can be read.
fn unreadable(body: &[u8], error: &serde_json::Error) -> AdmissionResult {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        let message = format!("the request body is not JSON: {error}");
        return AdmissionResult {
            http_status: 400,
            body: message.clone().into_bytes(),
            outcome: Outcome::Invalid,
            mode: None,
            uid: String::new(),
            namespace: String::new(),
            name: String::new(),
            message: Some(message),
            warnings: Vec::new(),
        };
    };
    let uid = value
        .pointer("/request/uid")
        .and_then(|u| u.as_str())
        .unwrap_or_default();
    let api_version = value
        .pointer("/apiVersion")
        .and_then(|v| v.as_str())
        .filter(|v| v.starts_with("admission.k8s.io/"))
        .unwrap_or(V1);
    invalid(
        api_version,
        uid,
        format!("the body is not a usable AdmissionReview: {error}"),
    )
}
