//! Offline injection (`ps-webhook inject`): manifests in, the same manifests out with their pod
//! templates injected by the same code path as the webhook ([`crate::admission::decide`]).
//!
//! - The stream is read exactly as `kubectl apply -f` reads it ([`crate::kubeyaml`]): the same
//!   document splitting, YAML 1.1 values (`no` is false, `0400` is 256), merge keys, JSON
//!   streams, a byte-order mark. Every document that is not changed is copied byte for byte,
//!   comments included, and the order is kept.
//! - The built-in workloads are injected: `v1` Pod and ReplicationController, `apps/v1`
//!   Deployment, StatefulSet, DaemonSet and ReplicaSet, `batch/v1` Job and CronJob, and the
//!   items of `List` documents. The templates of Jobs and CronJobs run to completion and so
//!   never get a classic sidecar. The opt-in on any other object (an Argo Rollout, a
//!   DeploymentConfig, a PodTemplate, a custom resource of kind `Deployment`) is left alone
//!   with a warning naming its kind.
//! - A changed document is written again with its keys in their original order and strings
//!   quoted wherever a YAML 1.1 or 1.2 reader could take them for another type
//!   ([`crate::kubeyaml::write`]); its leading and trailing comment lines are kept, comments
//!   inside it are not; aliases and merge keys are written out expanded. A JSON document stays
//!   JSON, a CRLF document stays CRLF.
//! - A denied pod template is an [`InjectError`] carrying the webhook's message; every error
//!   has its line and column in the input.

use serde_json::value::RawValue;

use crate::{
    admission::{Decision, SpecInput, decide},
    config::Config,
    kubeyaml::{self, Entry, LineCounter, Map, Mark, Node, Syntax, Value, write},
    patch::{OpKind, PatchOp},
    pod::PodMeta,
    workload::{Workload, misplaced_annotations, workload},
};

/// The result of [`inject_manifests`].
#[derive(Clone, Debug, PartialEq)]
pub struct Injected {
    /// The documents, pod templates mutated, others byte-for-byte unchanged.
    pub output: String,
    /// Admission warnings, each prefixed with the object (`Deployment/web: ...`).
    pub warnings: Vec<String>,
    /// How many pod templates were injected.
    pub changed: usize,
    /// The changed documents, written as they were and as they are now.
    changes: Vec<Change>,
}

/// One changed document: its text written unchanged and injected, and where it starts in the
/// input and in the output.
#[derive(Clone, Debug, PartialEq)]
struct Change {
    before: String,
    after: String,
    input_line: usize,
    output_line: usize,
}

/// Why `inject` failed; the process exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// The stream cannot be read as kubectl reads it (or is beyond inject's limits).
    #[error("{message}")]
    Yaml { mark: Mark, message: String },
    /// The webhook would deny this pod; `message` is exactly the webhook's message.
    #[error("document {document} ({object}): {message}")]
    Denied {
        document: usize,
        object: String,
        mark: Mark,
        message: String,
    },
    /// A value Kubernetes would refuse, named by its path in the document.
    #[error("document {document} ({object}): {path}: {message}")]
    Invalid {
        document: usize,
        object: String,
        mark: Mark,
        path: String,
        message: String,
    },
    #[error("document {document} ({object}): {message}")]
    Unusable {
        document: usize,
        object: String,
        mark: Mark,
        message: String,
    },
}

impl InjectError {
    /// Where in the input the error is.
    pub fn mark(&self) -> Mark {
        match self {
            Self::Yaml { mark, .. }
            | Self::Denied { mark, .. }
            | Self::Invalid { mark, .. }
            | Self::Unusable { mark, .. } => *mark,
        }
    }

    /// `FILE:LINE:COLUMN: message`, as compilers print errors.
    pub fn located(&self, file: &str) -> String {
        let mark = self.mark();
        if mark.is_none() {
            format!("{file}: {self}")
        } else {
            format!("{file}:{}:{}: {self}", mark.line, mark.column)
        }
    }
}

pub use crate::workload::HANDLED_KINDS;

/// Injects every pod template in a manifest stream. `namespace` is used for policy lookups when
/// a document names none (then `default`).
pub fn inject_manifests(
    input: &str,
    config: &Config,
    namespace: Option<&str>,
) -> Result<Injected, InjectError> {
    let stream = kubeyaml::read_stream(input).map_err(|e| InjectError::Yaml {
        mark: e.mark,
        message: e.message,
    })?;
    let mut output = String::with_capacity(input.len() + 1024);
    let mut warnings = Vec::new();
    let mut changes = Vec::new();
    let mut changed = 0;
    let mut document = 0;
    let mut output_lines = LineCounter::default();
    for doc in stream.documents {
        output.push_str(doc.before);
        let Some(original) = doc.node else {
            output.push_str(doc.text);
            continue;
        };
        document += 1;
        let mut node = original.clone();
        let mut ctx = Ctx {
            config,
            namespace,
            document,
            warnings: &mut warnings,
            changed: 0,
        };
        ctx.object(&mut node)?;
        if ctx.changed == 0 {
            output.push_str(doc.text);
            continue;
        }
        changed += ctx.changed;
        let crlf = doc.text.contains("\r\n");
        let (lead, rest) = doc.text.split_at(doc.lead);
        let (content, trail) = rest.split_at(rest.len() - doc.trail);
        let render = |node: &Node| match doc.syntax {
            Syntax::Json => {
                let mut text = write::to_json(node, crlf);
                text.truncate(text.trim_end().len());
                text
            }
            Syntax::Yaml if content.trim_start().starts_with('{') => write::to_json(node, crlf),
            Syntax::Yaml => write::to_yaml(node, crlf),
        };
        let (before, after) = (render(&original), render(&node));
        output.push_str(lead);
        let output_line = output_lines.line_at(&output, output.len());
        output.push_str(&after);
        output.push_str(trail);
        changes.push(Change {
            before,
            after,
            input_line: doc.line + lead.matches('\n').count(),
            output_line,
        });
    }
    output.push_str(stream.tail);
    Ok(Injected {
        output,
        warnings,
        changed,
        changes,
    })
}

impl Injected {
    /// A unified diff of the injection, `--- old` / `+++ new` headers: each changed document
    /// is compared with itself written unchanged, so the diff holds only the injection (none
    /// of the writer's restyling), and hunks carry the document's lines in the input and the
    /// output. Each document is diffed on its own, so the time grows with the size of the
    /// changed documents, not with the square of the stream. Empty when nothing changed.
    pub fn diff(&self, old: &str, new: &str) -> String {
        if self.changes.is_empty() {
            return String::new();
        }
        let mut out = format!("--- {old}\n+++ {new}\n");
        for change in &self.changes {
            let diff = similar::TextDiff::from_lines(&change.before, &change.after);
            for group in diff.grouped_ops(3) {
                let (Some(first), Some(last)) = (group.first(), group.last()) else {
                    continue;
                };
                let old_range = first.old_range().start..last.old_range().end;
                let new_range = first.new_range().start..last.new_range().end;
                out.push_str(&format!(
                    "@@ -{} +{} @@\n",
                    hunk_range(change.input_line, &old_range),
                    hunk_range(change.output_line, &new_range)
                ));
                for op in &group {
                    for c in diff.iter_changes(op) {
                        let sign = match c.tag() {
                            similar::ChangeTag::Equal => ' ',
                            similar::ChangeTag::Delete => '-',
                            similar::ChangeTag::Insert => '+',
                        };
                        out.push(sign);
                        let line = c.value();
                        out.push_str(line.strip_suffix('\n').unwrap_or(line).trim_end_matches('\r'));
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

/// `start,len` of a hunk in unified-diff notation (1-based; `start-1,0` for an empty range).
fn hunk_range(first_line: usize, range: &std::ops::Range<usize>) -> String {
    let len = range.end - range.start;
    let start = first_line + range.start;
    if len == 0 {
        format!("{},0", start - 1)
    } else if len == 1 {
        start.to_string()
    } else {
        format!("{start},{len}")
    }
}

/// A unified diff of two small texts (`--- before` / `+++ after`).
pub fn diff(before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header("before", "after")
        .to_string()
}

struct Ctx<'c> {
    config: &'c Config,
    namespace: Option<&'c str>,
    document: usize,
    warnings: &'c mut Vec<String>,
    changed: usize,
}

fn str_at<'n>(node: &'n Node, path: &[&str]) -> Option<&'n str> {
    node.at(path).and_then(Node::as_str)
}

impl Ctx<'_> {
    /// Injects the pod template(s) of one object, in place.
    fn object(&mut self, node: &mut Node) -> Result<(), InjectError> {
        let kind = str_at(node, &["kind"]).unwrap_or_default().to_owned();
        let api_version = str_at(node, &["apiVersion"]).unwrap_or_default().to_owned();
        let name = str_at(node, &["metadata", "name"])
            .or_else(|| str_at(node, &["metadata", "generateName"]))
            .unwrap_or("-")
            .to_owned();
        let namespace = str_at(node, &["metadata", "namespace"])
            .or(self.namespace)
            .unwrap_or("default")
            .to_owned();
        let object = format!("{kind}/{name}");
        if kind.ends_with("List")
            && let Some(Node {
                value: Value::Seq(items),
                ..
            }) = node.get_mut("items")
        {
            for item in items {
                self.object(item)?;
            }
            return Ok(());
        }
        let Some(workload) = workload(&api_version, &kind) else {
            self.warn_unhandled(node, &object, &api_version);
            return Ok(());
        };
        let (path, runs_to_completion) = (workload.template_path, workload.runs_to_completion);
        self.warn_misplaced_annotations(node, &object, &workload, &kind);
        let mut template = &mut *node;
        for key in path {
            match template.get_mut(key) {
                Some(next) => template = next,
                None => return Ok(()),
            }
        }
        let place = if path.is_empty() {
            String::new()
        } else {
            format!("{}.", path.join("."))
        };
        self.template(template, &place, &object, &namespace, runs_to_completion)
    }

    fn template(
        &mut self,
        template: &mut Node,
        place: &str,
        object: &str,
        namespace: &str,
        runs_to_completion: bool,
    ) -> Result<(), InjectError> {
        let document = self.document;
        let unusable = |mark: Mark, message: String| InjectError::Unusable {
            document,
            object: object.to_owned(),
            mark,
            message,
        };
        let Some(meta) = template.get("metadata") else {
            return Ok(());
        };
        let Some(annotations) = meta.get("annotations").and_then(Node::as_map) else {
            return Ok(());
        };
        if !self.opted_in(annotations, place, object)? {
            return Ok(());
        }
        let meta_json = serde_json::to_string(meta).map_err(|e| unusable(meta.mark, e.to_string()))?;
        let spec_json = match template.get("spec") {
            Some(spec) => Some(serde_json::to_string(spec).map_err(|e| unusable(spec.mark, e.to_string()))?),
            None => None,
        };
        let pod_meta: PodMeta<'_> = serde_json::from_str(&meta_json)
            .map_err(|e| unusable(meta.mark, format!("{place}metadata: {e}")))?;
        let spec_raw: Option<Box<RawValue>> = spec_json
            .map(RawValue::from_string)
            .transpose()
            .map_err(|e| unusable(template.mark, e.to_string()))?;
        let spec = SpecInput::Raw(spec_raw.as_deref());
        match decide(pod_meta, spec, namespace, runs_to_completion, self.config) {
            Decision::Skip | Decision::AlreadyInjected => Ok(()),
            Decision::Deny { message, warnings } => {
                self.push_warnings(object, warnings);
                Err(InjectError::Denied {
                    document: self.document,
                    object: object.to_owned(),
                    mark: denied_mark(template, &message),
                    message,
                })
            }
            Decision::Inject { patch, warnings, .. } => {
                self.push_warnings(object, warnings);
                apply(template, &patch)
                    .map_err(|e| unusable(template.mark, format!("cannot apply the patch: {e}")))?;
                self.changed += 1;
                Ok(())
            }
        }
    }

    /// Whether the template opts in, by the webhook's own rule. An opted-in template must have
    /// only string annotations (Kubernetes refuses anything else); a non-string opt-in is
    /// refused as such.
    fn opted_in(&self, annotations: &Map, place: &str, object: &str) -> Result<bool, InjectError> {
        let invalid = |key: &str, entry: &Entry| {
            let text = match &entry.node.value {
                Value::String(s) => s.clone(),
                _ => serde_json::to_string(&entry.node).unwrap_or_default(),
            };
            InjectError::Invalid {
                document: self.document,
                object: object.to_owned(),
                mark: entry.node.mark,
                path: format!("{place}metadata.annotations.{key}"),
                message: format!(
                    "{} where Kubernetes wants a string (annotation values are strings); quote it: {key}: {}",
                    entry.node.describe(),
                    serde_json::to_string(&text).unwrap_or_default()
                ),
            }
        };
        if let Some(entry) = annotations.get(inject_api::annotations::INJECT)
            && !matches!(entry.node.value, Value::String(_))
        {
            return Err(invalid(inject_api::annotations::INJECT, entry));
        }
        let strings = annotations
            .iter()
            .filter_map(|(k, e)| e.node.as_str().map(|v| (k.as_str(), v)));
        // A malformed opt-in counts as one: the webhook's refusal follows.
        if !crate::spec::opted_in(strings).unwrap_or(true) {
            return Ok(false);
        }
        match annotations
            .iter()
            .find(|(_, e)| !matches!(e.node.value, Value::String(_)))
        {
            Some((key, entry)) => Err(invalid(key, entry)),
            None => Ok(true),
        }
    }

    /// Annotations under the prefix on a workload's own metadata do nothing (the webhook sees
    /// only pods); a common slip, so `inject` names it and the place they belong, by the same
    /// rule as the webhook's warning-only entry.
    fn warn_misplaced_annotations(&mut self, node: &Node, object: &str, workload: &Workload, kind: &str) {
        let Some(annotations) = node.at(&["metadata", "annotations"]).and_then(Node::as_map) else {
            return;
        };
        if let Some(warning) = misplaced_annotations(workload, kind, annotations.keys().map(String::as_str)) {
            self.warnings.push(format!("{object}: {warning}"));
        }
    }

    /// The opt-in anywhere in an object `inject` does not handle: a warning naming the kind.
    fn warn_unhandled(&mut self, node: &Node, object: &str, api_version: &str) {
        let mut places = Vec::new();
        find_opt_ins(node, &mut Vec::new(), &mut places);
        if places.is_empty() {
            return;
        }
        let kind = object.split('/').next().unwrap_or_default();
        let what = if api_version.is_empty() {
            format!("kind {kind:?} without an apiVersion")
        } else {
            format!("kind {kind} of {api_version}")
        };
        self.warnings.push(format!(
            "{object}: {} at {} is not injected: inject handles only {HANDLED_KINDS}, not {what}; \
             the webhook still injects the pods made from it when they are created in the cluster",
            inject_api::annotations::INJECT,
            places.join(", ")
        ));
    }

    fn push_warnings(&mut self, object: &str, warnings: Vec<String>) {
        self.warnings
            .extend(warnings.into_iter().map(|w| format!("{object}: {w}")));
    }
}

/// Paths of `annotations` mappings that hold the opt-in.
fn find_opt_ins<'n>(node: &'n Node, path: &mut Vec<&'n str>, found: &mut Vec<String>) {
    match &node.value {
        Value::Map(map) => {
            for (key, entry) in map {
                if key == "annotations"
                    && entry
                        .node
                        .as_map()
                        .is_some_and(|a| a.contains_key(inject_api::annotations::INJECT))
                {
                    found.push(
                        path.iter()
                            .chain([&"annotations"])
                            .copied()
                            .collect::<Vec<_>>()
                            .join("."),
                    );
                }
                path.push(key);
                find_opt_ins(&entry.node, path, found);
                path.pop();
            }
        }
        Value::Seq(items) => {
            for item in items {
                path.push("[]");
                find_opt_ins(item, path, found);
                path.pop();
            }
        }
        _ => {}
    }
}

/// Where a denial points: the annotation it names (`annotation ps-injector.io/x: ...`), else the
/// template.
fn denied_mark(template: &Node, message: &str) -> Mark {
    let annotations = template.at(&["metadata", "annotations"]).and_then(Node::as_map);
    message
        .strip_prefix("annotation ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|key| annotations?.get(key))
        .map_or(template.mark, |e| e.key_mark)
}

/// Applies the webhook's patch (adds and replaces) to a document, keeping key order.
pub fn apply(target: &mut Node, ops: &[PatchOp]) -> Result<(), String> {
    for op in ops {
        let value = Node::from_json(op.value.get(), Mark::NONE).map_err(|e| e.to_string())?;
        let tokens: Vec<String> = op
            .path
            .split('/')
            .skip(1)
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        let Some((last, parents)) = tokens.split_last() else {
            return Err("empty path".to_owned());
        };
        let mut node = &mut *target;
        for token in parents {
            node = child(node, token).ok_or_else(|| format!("{}: no {token:?}", op.path))?;
        }
        if node.value == Value::Null && op.op == OpKind::Add {
            node.value = Value::Map(Map::new());
        }
        match &mut node.value {
            Value::Map(map) => {
                if op.op == OpKind::Replace && !map.contains_key(last.as_str()) {
                    return Err(format!("{}: nothing to replace", op.path));
                }
                match map.get_mut(last.as_str()) {
                    Some(entry) => entry.node = value,
                    None => {
                        map.insert(
                            last.clone(),
                            Entry {
                                key_mark: Mark::NONE,
                                node: value,
                            },
                        );
                    }
                }
            }
            Value::Seq(seq) => {
                if last == "-" {
                    seq.push(value);
                } else {
                    let index: usize = last.parse().map_err(|_| format!("{}: bad index", op.path))?;
                    match op.op {
                        OpKind::Add if index <= seq.len() => seq.insert(index, value),
                        OpKind::Replace if index < seq.len() => seq[index] = value,
                        _ => return Err(format!("{}: index out of range", op.path)),
                    }
                }
            }
            _ => return Err(format!("{}: parent is not a map or a list", op.path)),
        }
    }
    Ok(())
}

fn child<'v>(node: &'v mut Node, token: &str) -> Option<&'v mut Node> {
    match &mut node.value {
        Value::Map(map) => map.get_mut(token).map(|e| &mut e.node),
        Value::Seq(seq) => token.parse::<usize>().ok().and_then(|i| seq.get_mut(i)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_with_its_line() {
        let deep = format!(
            "kind: Pod\nspec: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = super::inject_manifests(&deep, &crate::config::Config::default(), None).unwrap_err();
        assert!(e.to_string().contains("nest deeper than 256 levels"), "{e}");
        assert_eq!(e.mark().line, 2);
        // Templates and flow mappings of real manifests pass.
        let ok = "a: {b: [1, {c: \"{{ x }}\"}]}\n";
        assert!(super::inject_manifests(ok, &crate::config::Config::default(), None).is_ok());
    }

    #[test]
    fn hunk_ranges() {
        assert_eq!(hunk_range(10, &(0..3)), "10,3");
        assert_eq!(hunk_range(10, &(2..3)), "12");
        assert_eq!(hunk_range(10, &(2..2)), "11,0");
    }
}
