//! AdmissionReview bytes in, AdmissionReview bytes out: the thin adapter around
//! [`crate::spec`] and [`crate::mutate`].
//!
//! Cost model (budgets: ≤ 20k instructions on the skip path, ≤ 126k on the inject path;
//! measured with callgrind on `bench/webhook/fixtures/`, with ps-webhook's allocator, 3.2 KB
//! reviews: skip ≈ 25k, inject ≈ 141k; the 2 kB ones the gate checks: skip ≈ 19k,
//! inject ≈ 122k):
//! - one pass over the body with serde seeds into borrowed fields (strings stay slices of the
//!   body unless escaped);
//! - the pass stops as soon as the answer is known: at `request.object` for a non-Pod kind or
//!   an operation other than CREATE, right after `object.metadata` for a pod without the
//!   opt-in (or already injected). The rest of the body (the pod spec, `oldObject`, `options`)
//!   is not read — the apiserver sends `uid`, `kind` and `operation` before `object`; with
//!   another field order the whole body is read and the answer is the same;
//! - for an opted-in pod CREATE, `spec` is parsed straight into a minimal view (names,
//!   commands, mounts, users), everything else skipped;
//! - the response is written through serde into one buffer; the patch is serialised once,
//!   base64-encoded once (`patchType: JSONPatch`) and written verbatim as a raw JSON string,
//!   never run through the string escaper (base64 needs no escaping).
//!
//! Non-Pod kinds, subresources, operations other than CREATE and pods without the opt-in are
//! allowed unchanged. `dryRun` gets the same answer (the webhook has no side effects). A body
//! that is not JSON gets HTTP 400; JSON that is not a usable AdmissionReview gets an
//! AdmissionReview with `allowed: false` (echoing the uid when it can be read).

use std::fmt;

use serde::{
    Deserialize, Deserializer, Serialize,
    de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor},
};
use serde_json::value::RawValue;

use crate::{
    config::Config,
    mutate,
    patch::{self, PatchOp},
    pod::{PodMeta, PodSpecView, PodView, Text},
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
// Wire types: one pass over the body, stopping early when the answer is known
// ---------------------------------------------------------------------------------------------

/// What the single pass over the body collected.
#[derive(Default)]
struct Parsed<'a> {
    api_version: Option<Text<'a>>,
    has_request: bool,
    uid: Option<Text<'a>>,
    kind: Option<GroupVersionKind<'a>>,
    sub_resource: Option<Text<'a>>,
    operation: Option<Text<'a>>,
    namespace: Option<Text<'a>>,
    name: Option<Text<'a>>,
    object_present: bool,
    meta: Option<PodMeta<'a>>,
    spec: PodSpec<'a>,
    /// Parsing stopped on purpose once the answer was known (the rest of the body is not
    /// read): `Skipped` or `AlreadyInjected`.
    stopped: Option<Outcome>,
}

/// `request.object.spec`: typed when the pod is known to be an opted-in pod CREATE when it is
/// reached, raw otherwise.
#[derive(Default)]
enum PodSpec<'a> {
    #[default]
    Absent,
    Raw(&'a RawValue),
    Typed(PodSpecView<'a>),
}

impl<'a> Parsed<'a> {
    /// `Some(true)` for a Pod CREATE, `Some(false)` for anything else, `None` while the kind or
    /// the operation has not been read yet.
    fn pod_create(&self) -> Option<bool> {
        let kind = self.kind.as_ref()?;
        let operation = self.operation.as_ref()?;
        let is_pod = kind.group.as_ref().is_none_or(|g| g.as_str().is_empty())
            && kind.kind.as_ref().is_some_and(|k| k.as_str() == "Pod")
            && self.sub_resource.as_ref().is_none_or(|s| s.as_str().is_empty());
        Some(is_pod && operation.as_str() == "CREATE")
    }

    /// Stopping early needs what the response echoes: the uid (and apiVersion, which the
    /// apiserver sends first).
    fn can_stop(&self) -> bool {
        self.uid.as_ref().is_some_and(|u| !u.as_str().is_empty()) && self.api_version.is_some()
    }
}

#[derive(Deserialize)]
struct GroupVersionKind<'a> {
    #[serde(borrow, default)]
    group: Option<Text<'a>>,
    #[serde(borrow, default)]
    kind: Option<Text<'a>>,
}

/// The marker error that ends the pass early; recognised through `Parsed::stopped`.
const STOP: &str = "ps-webhook: answer known, rest of the body not read";

struct ReviewSeed<'p, 'a>(&'p mut Parsed<'a>);

impl<'de, 'p> DeserializeSeed<'de> for ReviewSeed<'p, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'p> Visitor<'de> for ReviewSeed<'p, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AdmissionReview object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.as_str() {
                "apiVersion" => self.0.api_version = Some(map.next_value()?),
                "request" => {
                    self.0.has_request = true;
                    map.next_value_seed(RequestSeed(&mut *self.0))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct RequestSeed<'p, 'a>(&'p mut Parsed<'a>);

impl<'de, 'p> DeserializeSeed<'de> for RequestSeed<'p, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, 'p> Visitor<'de> for RequestSeed<'p, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an AdmissionRequest object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let p = self.0;
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.as_str() {
                "uid" => p.uid = Some(map.next_value()?),
                "kind" => p.kind = Some(map.next_value()?),
                "subResource" => p.sub_resource = map.next_value()?,
                "operation" => p.operation = Some(map.next_value()?),
                "namespace" => p.namespace = map.next_value()?,
                "name" => p.name = map.next_value()?,
                "object" => {
                    if p.pod_create() == Some(false) && p.can_stop() {
                        p.stopped = Some(Outcome::Skipped);
                        return Err(de::Error::custom(STOP));
                    }
                    map.next_value_seed(ObjectSeed(&mut *p))?;
                    if p.stopped.is_some() {
                        return Err(de::Error::custom(STOP));
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct ObjectSeed<'p, 'a>(&'p mut Parsed<'a>);

impl<'de, 'p> DeserializeSeed<'de> for ObjectSeed<'p, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'p> Visitor<'de> for ObjectSeed<'p, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let p = self.0;
        p.object_present = true;
        let pod_create = p.pod_create();
        // Whether the spec must be read: unknown until metadata says so.
        let mut wanted: Option<bool> = if pod_create == Some(false) {
            Some(false)
        } else {
            None
        };
        while let Some(key) = map.next_key::<Text<'de>>()? {
            match key.as_str() {
                "metadata" => {
                    let meta: PodMeta<'de> = map.next_value()?;
                    let annotations = || meta.annotations.iter();
                    let early = match spec::opted_in(annotations()) {
                        Ok(false) => Some(Outcome::Skipped),
                        Ok(true) if spec::already_injected(annotations()) => Some(Outcome::AlreadyInjected),
                        _ => None,
                    };
                    if pod_create == Some(true) {
                        wanted = Some(early.is_none());
                        if early.is_some() && p.can_stop() {
                            p.meta = Some(meta);
                            p.stopped = early;
                            return Err(de::Error::custom(STOP));
                        }
                    }
                    p.meta = Some(meta);
                }
                "spec" => match wanted {
                    Some(true) => p.spec = PodSpec::Typed(map.next_value()?),
                    Some(false) => {
                        map.next_value::<IgnoredAny>()?;
                    }
                    None => p.spec = PodSpec::Raw(map.next_value()?),
                },
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
    // Anything else (a number, a list): not an object; remembered as absent.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(E::custom("request.object is not an object"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(E::custom("request.object is not an object"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(E::custom("request.object is not an object"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(E::custom("request.object is not an object"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Err(E::custom("request.object is not an object"))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom("request.object is not an object"))
    }
}

const V1: &str = "admission.k8s.io/v1";

// ---------------------------------------------------------------------------------------------
// The decision, shared with `inject`
// ---------------------------------------------------------------------------------------------

/// A pod's spec as [`decide`] gets it.
pub enum SpecInput<'a> {
    /// Raw JSON (or absent), parsed into the minimal view only if needed.
    Raw(Option<&'a RawValue>),
    /// Already parsed.
    Parsed(PodSpecView<'a>),
}

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
    meta: PodMeta<'_>,
    spec_input: SpecInput<'_>,
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
    let parsed = match spec_input {
        SpecInput::Parsed(view) => Ok(view),
        SpecInput::Raw(None) => Ok(PodSpecView::default()),
        SpecInput::Raw(Some(raw)) => serde_json::from_str(raw.get()),
    };
    let pod_spec: PodSpecView<'_> = match parsed {
        Ok(s) => s,
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
        meta,
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
    let mut parsed = Parsed::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    let outcome = ReviewSeed(&mut parsed)
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Err(e) = outcome
        && parsed.stopped.is_none()
    {
        return unreadable(body, &e);
    }
    let api_version = parsed
        .api_version
        .as_ref()
        .map(Text::as_str)
        .filter(|v| v.starts_with("admission.k8s.io/"))
        .unwrap_or(V1);
    if !parsed.has_request {
        return invalid(api_version, "", "the AdmissionReview has no request".to_owned());
    }
    let uid = parsed.uid.as_ref().map_or("", Text::as_str);
    if uid.is_empty() {
        return invalid(
            api_version,
            "",
            "the AdmissionReview request has no uid".to_owned(),
        );
    }
    let meta = parsed.meta.as_ref();
    let namespace = parsed
        .namespace
        .as_ref()
        .or(meta.and_then(|m| m.namespace.as_ref()))
        .map_or("default", Text::as_str);
    let name = parsed
        .name
        .as_ref()
        .filter(|n| !n.as_str().is_empty())
        .or(meta.and_then(|m| m.name.as_ref().filter(|n| !n.as_str().is_empty())))
        .or(meta.and_then(|m| m.generate_name.as_ref()))
        .map_or("", Text::as_str);
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
    if let Some(early) = parsed.stopped {
        result.outcome = early;
        result.body = response(api_version, uid, Answer::Allowed(None), &[]);
        return result;
    }
    if parsed.pod_create() != Some(true) {
        result.body = response(api_version, uid, Answer::Allowed(None), &[]);
        return result;
    }
    if !parsed.object_present {
        let message = "the AdmissionReview request has no object".to_owned();
        result.outcome = Outcome::Invalid;
        result.body = response(api_version, uid, Answer::Refused(400, &message), &[]);
        result.message = Some(message);
        return result;
    }
    let namespace = namespace.to_owned();
    let meta = parsed.meta.take().unwrap_or_default();
    let spec = match std::mem::take(&mut parsed.spec) {
        PodSpec::Absent => SpecInput::Raw(None),
        PodSpec::Raw(raw) => SpecInput::Raw(Some(raw)),
        PodSpec::Typed(view) => SpecInput::Parsed(view),
    };
    match decide(meta, spec, &namespace, false, config) {
        Decision::Skip => result.body = response(api_version, uid, Answer::Allowed(None), &[]),
        Decision::AlreadyInjected => {
            result.outcome = Outcome::AlreadyInjected;
            result.body = response(api_version, uid, Answer::Allowed(None), &[]);
        }
        Decision::Deny { message, warnings } => {
            result.outcome = Outcome::Denied;
            result.body = response(api_version, uid, Answer::Refused(403, &message), &warnings);
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
            let json = patch::to_json(&patch);
            result.body = response(api_version, uid, Answer::Allowed(Some(&json)), &warnings);
            result.warnings = warnings;
        }
    }
    result
}

// ---------------------------------------------------------------------------------------------
// review_workload(): the warning-only entry
// ---------------------------------------------------------------------------------------------

/// The parts of a workload's AdmissionReview the warning needs.
#[derive(Deserialize)]
struct WorkloadReview<'a> {
    #[serde(borrow, rename = "apiVersion", default)]
    api_version: Option<Text<'a>>,
    #[serde(borrow)]
    request: Option<WorkloadRequest<'a>>,
}

#[derive(Deserialize)]
struct WorkloadRequest<'a> {
    #[serde(borrow, default)]
    uid: Option<Text<'a>>,
    #[serde(borrow, default)]
    kind: Option<FullKind<'a>>,
    #[serde(borrow, default)]
    namespace: Option<Text<'a>>,
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(default)]
    object: Option<WorkloadObject>,
}

#[derive(Deserialize)]
struct FullKind<'a> {
    #[serde(borrow, default)]
    group: Option<Text<'a>>,
    #[serde(borrow, default)]
    version: Option<Text<'a>>,
    #[serde(borrow, default)]
    kind: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct WorkloadObject {
    #[serde(default)]
    metadata: Option<WorkloadMeta>,
}

#[derive(Deserialize)]
struct WorkloadMeta {
    #[serde(default)]
    annotations: Option<std::collections::BTreeMap<String, IgnoredAny>>,
}

/// Answers the warning-only entry for workloads (`/warn-workloads`): always allowed, never
/// patched, with a warning when the workload's own metadata carries `ps-injector.io/`
/// annotations, which only its pod template can use ([`crate::workload::misplaced_annotations`],
/// the rule `inject` applies too). A malformed review is answered allowed as well: this entry
/// must never stand in a workload's way.
pub fn review_workload(body: &[u8]) -> AdmissionResult {
    let review: WorkloadReview<'_> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return unreadable(body, &e),
    };
    let api_version = review
        .api_version
        .as_ref()
        .map(Text::as_str)
        .filter(|v| v.starts_with("admission.k8s.io/"))
        .unwrap_or(V1);
    let Some(request) = review.request else {
        return invalid(api_version, "", "the AdmissionReview has no request".to_owned());
    };
    let uid = request.uid.as_ref().map_or("", Text::as_str);
    if uid.is_empty() {
        return invalid(
            api_version,
            "",
            "the AdmissionReview request has no uid".to_owned(),
        );
    }
    let text = |t: &Option<Text<'_>>| t.as_ref().map_or("", Text::as_str).to_owned();
    let (group, version, kind) = request.kind.as_ref().map_or_else(Default::default, |k| {
        (text(&k.group), text(&k.version), text(&k.kind))
    });
    let api_version_of_object = if group.is_empty() {
        version
    } else {
        format!("{group}/{version}")
    };
    let keys = request
        .object
        .as_ref()
        .and_then(|o| o.metadata.as_ref())
        .and_then(|m| m.annotations.as_ref());
    let warnings: Vec<String> = crate::workload::workload(&api_version_of_object, &kind)
        .zip(keys)
        .and_then(|(w, keys)| {
            crate::workload::misplaced_annotations(&w, &kind, keys.keys().map(String::as_str))
        })
        .into_iter()
        .collect();
    AdmissionResult {
        http_status: 200,
        body: response(api_version, uid, Answer::Allowed(None), &warnings),
        outcome: Outcome::Skipped,
        mode: None,
        uid: uid.to_owned(),
        namespace: text(&request.namespace),
        name: text(&request.name),
        message: None,
        warnings,
    }
}

enum Answer<'m> {
    /// Allowed, with the JSON Patch (not yet base64-encoded) when there is one.
    Allowed(Option<&'m [u8]>),
    /// Refused with an HTTP-like status code and a message.
    Refused(u16, &'m str),
}

/// The response AdmissionReview, written through serde; the patch is base64 (the API's JSON
/// form of `[]byte`), not the integer array kube-core's `AdmissionResponse` would write.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
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
    /// The base64 text as a JSON string ([`base64_json_string`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<Box<RawValue>>,
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

/// The patch's base64 text as a JSON string, written verbatim into the response. serde_json
/// would otherwise scan every character of it for escapes, one byte at a time (about 15,000
/// instructions for a 2.5 kB patch); checking the finished string as a raw value is a fast
/// word-at-a-time scan. Base64 has no character JSON escapes, so the check cannot fail.
fn base64_json_string(patch: &[u8]) -> Option<Box<RawValue>> {
    use base64::Engine as _;
    let mut text = String::with_capacity(patch.len().div_ceil(3) * 4 + 2);
    text.push('"');
    base64::engine::general_purpose::STANDARD.encode_string(patch, &mut text);
    text.push('"');
    RawValue::from_string(text).ok()
}

fn response(api_version: &str, uid: &str, answer: Answer<'_>, warnings: &[String]) -> Vec<u8> {
    let (allowed, patch, status) = match answer {
        Answer::Allowed(patch) => (true, patch, None),
        Answer::Refused(code, message) => (
            false,
            None,
            Some(StatusOut {
                status: "Failure",
                message,
                reason: if code == 403 { "Forbidden" } else { "BadRequest" },
                code,
            }),
        ),
    };
    let patch = patch.and_then(base64_json_string);
    let patch_len = patch.as_ref().map_or(0, |p| p.get().len());
    let review = ReviewOut {
        api_version,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid,
            allowed,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            status,
            warnings,
        },
    };
    let mut out =
        Vec::with_capacity(160 + uid.len() + patch_len + warnings.iter().map(|w| w.len() + 4).sum::<usize>());
    // Serialising these types into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut out, &review);
    out
}

fn invalid(api_version: &str, uid: &str, message: String) -> AdmissionResult {
    AdmissionResult {
        http_status: 200,
        body: response(api_version, uid, Answer::Refused(400, &message), &[]),
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

#[cfg(test)]
mod tests {
    use base64::prelude::*;

    use super::*;

    #[test]
    fn the_patch_is_standard_padded_base64_of_every_length() {
        for len in 1..64 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let body = response(V1, "u-1", Answer::Allowed(Some(&data)), &[]);
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let patch = v["response"]["patch"].as_str().unwrap();
            assert_eq!(patch, BASE64_STANDARD.encode(&data), "{len}");
            assert_eq!(BASE64_STANDARD.decode(patch).unwrap(), data, "{len}");
            assert_eq!(v["response"]["patchType"], "JSONPatch");
        }
    }

    #[test]
    fn a_refusal_carries_status_and_warnings_in_kubernetes_order() {
        let warnings = ["w \"1\"".to_owned()];
        let body = response(V1, "u-2", Answer::Refused(403, "no \"x\""), &warnings);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-2","allowed":false,"status":{"status":"Failure","message":"no \"x\"","reason":"Forbidden","code":403},"warnings":["w \"1\""]}}"#
        );
    }

    fn workload_review(group: &str, kind: &str, annotations: serde_json::Value) -> String {
        serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": group, "version": "v1", "kind": kind},
                "namespace": "team-a",
                "name": "web",
                "operation": "CREATE",
                "object": {"metadata": {"name": "web", "annotations": annotations}, "spec": {"template": {}}}
            }
        })
        .to_string()
    }

    #[test]
    fn a_workload_with_the_annotations_on_its_own_metadata_is_allowed_with_a_warning() {
        let body = workload_review(
            "apps",
            "Deployment",
            serde_json::json!({"ps-injector.io/inject": "true", "x": "y"}),
        );
        let r = review_workload(body.as_bytes());
        assert_eq!(r.http_status, 200);
        assert_eq!(r.outcome, Outcome::Skipped);
        assert_eq!((r.namespace.as_str(), r.name.as_str()), ("team-a", "web"));
        assert_eq!(
            String::from_utf8(r.body).unwrap(),
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u-1","allowed":true,"warnings":["ps-injector.io/inject on the Deployment's own metadata is ignored: the webhook reads pod annotations; move it to spec.template.metadata.annotations"]}}"#
        );
        let body = workload_review(
            "batch",
            "CronJob",
            serde_json::json!({"ps-injector.io/secret-db": "a/b"}),
        );
        let r = review_workload(body.as_bytes());
        assert_eq!(
            r.warnings,
            [
                "ps-injector.io/secret-db on the CronJob's own metadata is ignored: the webhook reads pod annotations; \
              move it to spec.jobTemplate.spec.template.metadata.annotations"
            ]
        );
    }

    #[test]
    fn the_workload_entry_allows_everything_else_silently() {
        let silent = |body: String| {
            let r = review_workload(body.as_bytes());
            assert_eq!(r.http_status, 200, "{body}");
            assert!(r.warnings.is_empty(), "{body}: {:?}", r.warnings);
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["response"]["allowed"], true, "{body}");
            assert!(v["response"].get("patch").is_none(), "{body}");
        };
        silent(workload_review(
            "apps",
            "Deployment",
            serde_json::json!({"example.com/inject": "true"}),
        ));
        silent(workload_review("apps", "Deployment", serde_json::Value::Null));
        // Not a built-in workload (a custom resource of the same kind name), or a pod.
        silent(workload_review(
            "example.com",
            "Deployment",
            serde_json::json!({"ps-injector.io/inject": "true"}),
        ));
        silent(workload_review(
            "",
            "Pod",
            serde_json::json!({"ps-injector.io/inject": "true"}),
        ));
        silent(r#"{"apiVersion":"admission.k8s.io/v1","request":{"uid":"u","kind":{"group":"apps","version":"v1","kind":"Deployment"},"object":null}}"#.to_owned());
        // Unusable reviews get the same answers as on the pod entry, never a 5xx.
        assert_eq!(review_workload(b"not json").http_status, 400);
        let r = review_workload(br#"{"apiVersion":"admission.k8s.io/v1","request":{"kind":{}}}"#);
        assert_eq!(r.outcome, Outcome::Invalid);
    }

    fn review_json(body: &str) -> (AdmissionResult, serde_json::Value) {
        let config = Config::default();
        let r = review(body.as_bytes(), &config);
        let v = if r.http_status == 200 {
            serde_json::from_slice(&r.body).unwrap()
        } else {
            serde_json::Value::Null
        };
        (r, v)
    }

    #[test]
    fn early_stop_and_field_order() {
        // apiserver order: the answer is known at the object's metadata; the rest is not read.
        let skip = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1",
            "kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"ns",
            "object":{"metadata":{"generateName":"web-","annotations":{"a":"b"}},"spec":{"containers":[]}},
            "oldObject":null,"dryRun":false}}"#;
        let (r, v) = review_json(skip);
        assert_eq!(
            (r.outcome, r.name.as_str(), r.namespace.as_str()),
            (Outcome::Skipped, "web-", "ns")
        );
        assert_eq!(v["response"], serde_json::json!({"uid": "u1", "allowed": true}));
        // The same with the uid last: read to the end, same answer.
        let late = r#"{"request":{"kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE",
            "object":{"spec":{"containers":[{"name":"a","image":"b"}]},"metadata":{"name":"p"}},"uid":"u2"},
            "apiVersion":"admission.k8s.io/v1beta1"}"#;
        let (r, v) = review_json(late);
        assert_eq!(r.outcome, Outcome::Skipped);
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1beta1");
        assert_eq!(v["response"]["uid"], "u2");
        // Object before kind and operation: the spec is kept raw and parsed when needed.
        let unordered = r#"{"apiVersion":"admission.k8s.io/v1","request":{"uid":"u3",
            "object":{"spec":{"securityContext":{"runAsUser":5},"containers":[{"name":"a","image":"b"}]},
              "metadata":{"name":"p","annotations":{"ps-injector.io/inject":"true","ps-injector.io/secret-x":"f/t"}}},
            "operation":"CREATE","kind":{"group":"","version":"v1","kind":"Pod"}}}"#;
        let (r, _) = review_json(unordered);
        assert_eq!(r.outcome, Outcome::Injected, "{:?}", r.message);
        // A non-pod kind stops before the object.
        let cm = r#"{"apiVersion":"admission.k8s.io/v1","request":{"uid":"u4","kind":{"group":"","version":"v1","kind":"ConfigMap"},
            "operation":"CREATE","object":{"metadata":{"annotations":{"ps-injector.io/inject":"true"}}, "data": {"a": 1}}}}"#;
        assert_eq!(review_json(cm).0.outcome, Outcome::Skipped);
        // A subresource is not the pod.
        let binding = r#"{"apiVersion":"admission.k8s.io/v1","request":{"uid":"u5","kind":{"group":"","version":"v1","kind":"Pod"},
            "subResource":"ephemeralcontainers","operation":"CREATE","object":{"metadata":{"annotations":{"ps-injector.io/inject":"true"}}}}}"#;
        assert_eq!(review_json(binding).0.outcome, Outcome::Skipped);
    }

    #[test]
    fn unusable_reviews() {
        let (r, _) = review_json("{not json");
        assert_eq!((r.http_status, r.outcome), (400, Outcome::Invalid));
        let (r, v) = review_json(r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#);
        assert_eq!((r.http_status, r.outcome), (200, Outcome::Invalid));
        assert_eq!(v["response"]["allowed"], false);
        assert_eq!(v["response"]["status"]["code"], 400);
        let (r, v) = review_json(
            r#"{"request":{"uid":"x","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE"}}"#,
        );
        assert_eq!(r.outcome, Outcome::Invalid);
        assert_eq!(v["response"]["uid"], "x");
        assert!(r.message.unwrap().contains("no object"));
        let (r, v) = review_json(
            r#"{"request":{"uid":"y","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":[1]}}"#,
        );
        assert_eq!(r.outcome, Outcome::Invalid);
        assert_eq!(v["response"]["uid"], "y");
        // Trailing garbage after a complete review is not JSON.
        let (r, _) = review_json(r#"{"request":{"uid":"z"}} x"#);
        assert_eq!(r.http_status, 400);
        // A pod spec of the wrong shape is denied, not a crash.
        let (r, _) = review_json(
            r#"{"request":{"uid":"w","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE",
            "object":{"metadata":{"annotations":{"ps-injector.io/inject":"true","ps-injector.io/secret-a":"b/c"}},"spec":{"containers":5}}}}"#,
        );
        assert_eq!((r.http_status, r.outcome), (200, Outcome::Invalid));
        assert!(r.message.unwrap().contains("not a usable AdmissionReview"));
    }
}
