//! Offline injection (`ps-webhook inject`): manifests in, the same manifests out with their pod
//! templates injected by the same code path as the webhook ([`crate::admission::decide`]).
//!
//! - The input is split on `---` lines by hand, so every document that is not changed is
//!   copied byte for byte, comments included, and the order is kept.
//! - Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, ReplicationController, Job, CronJob
//!   and `List` documents are understood; the templates of Jobs and CronJobs run to completion
//!   and so never get a classic sidecar.
//! - A changed document is re-serialised with its keys in their original order; its leading
//!   comment lines are kept, comments inside it are not (YAML libraries do not keep them). A
//!   JSON document stays JSON.
//! - A denied pod template is an [`InjectError`] carrying the webhook's message.

use serde_json::value::RawValue;
use serde_yaml_ng::{Mapping, Value};

use crate::{
    admission::{Decision, SpecInput, decide},
    config::Config,
    mutate::PodMeta,
    patch::{OpKind, PatchOp},
};

/// The result of [`inject_manifests`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    /// The documents, pod templates mutated, others byte-for-byte unchanged.
    pub output: String,
    /// The input as `output` would print it without the injection: changed documents
    /// re-serialised unmutated, so a diff against `output` shows only the injection and none of
    /// the serialiser's restyling (quotes, flow mappings).
    pub before: String,
    /// Admission warnings, each prefixed with the object (`Deployment/web: ...`).
    pub warnings: Vec<String>,
    /// How many pod templates were injected.
    pub changed: usize,
}

/// Why `inject` failed; the process exits non-zero.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("document {document}: not valid YAML: {message}")]
    Yaml { document: usize, message: String },
    /// The webhook would deny this pod; `message` is exactly the webhook's message.
    #[error("document {document} ({object}): {message}")]
    Denied {
        document: usize,
        object: String,
        message: String,
    },
    #[error("document {document} ({object}): {message}")]
    Unusable {
        document: usize,
        object: String,
        message: String,
    },
}

/// Injects every pod template in a multi-document YAML stream. `namespace` is used for policy
/// lookups when a document names none (then `default`).
pub fn inject_manifests(
    input: &str,
    config: &Config,
    namespace: Option<&str>,
) -> Result<Injected, InjectError> {
    let mut output = String::with_capacity(input.len() + 1024);
    let mut before = String::with_capacity(input.len());
    let mut warnings = Vec::new();
    let mut changed = 0;
    for (index, doc) in split_documents(input).into_iter().enumerate() {
        output.push_str(doc.separator);
        before.push_str(doc.separator);
        let number = index + 1;
        if is_blank(doc.body) {
            output.push_str(doc.body);
            before.push_str(doc.body);
            continue;
        }
        check_flow_depth(doc.body).map_err(|message| InjectError::Yaml {
            document: number,
            message,
        })?;
        let mut value: Value = serde_yaml_ng::from_str(doc.body).map_err(|e| InjectError::Yaml {
            document: number,
            message: e.to_string(),
        })?;
        let mut ctx = Ctx {
            config,
            namespace,
            document: number,
            warnings: &mut warnings,
            changed: 0,
        };
        let original = value.clone();
        ctx.object(&mut value)?;
        if ctx.changed == 0 {
            output.push_str(doc.body);
            before.push_str(doc.body);
            continue;
        }
        changed += ctx.changed;
        let json = doc.body.trim_start().starts_with('{');
        for (text, value) in [(&mut output, &value), (&mut before, &original)] {
            text.push_str(leading_comments(doc.body));
            text.push_str(&render(value, json, number)?);
        }
    }
    Ok(Injected {
        output,
        before,
        warnings,
        changed,
    })
}

/// Deepest `[`/`{` nesting a document may reach. The YAML scanner's time grows with the square
/// of the nesting, so a deeply nested (hostile) document is refused before it is parsed; real
/// manifests stay in single digits.
const MAX_FLOW_DEPTH: usize = 256;

/// Refuses a document whose brackets nest deeper than [`MAX_FLOW_DEPTH`]. Brackets inside
/// scalars count too, which can only over-estimate the depth of a legitimate document slightly.
fn check_flow_depth(body: &str) -> Result<(), String> {
    let mut depth = 0usize;
    for (line, text) in body.lines().enumerate() {
        for b in text.bytes() {
            match b {
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Err(format!(
                            "flow collections ([ ] or {{ }}) nest deeper than {MAX_FLOW_DEPTH} levels at line {}",
                            line + 1
                        ));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    Ok(())
}

/// A changed document as text: pretty JSON when it was JSON, else YAML.
fn render(value: &Value, json: bool, document: usize) -> Result<String, InjectError> {
    let yaml_error = |e: &dyn std::fmt::Display| InjectError::Yaml {
        document,
        message: e.to_string(),
    };
    if json {
        let mut text = serde_json::to_string_pretty(value).map_err(|e| yaml_error(&e))?;
        text.push('\n');
        Ok(text)
    } else {
        serde_yaml_ng::to_string(value).map_err(|e| yaml_error(&e))
    }
}

/// A unified diff of two texts.
pub fn diff(before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .context_radius(3)
        .header("before", "after")
        .to_string()
}

struct Document<'a> {
    /// The `---` line (with its newline) before the body; empty for the first document.
    separator: &'a str,
    body: &'a str,
}

/// Splits on lines that are `---` (optionally followed by spaces or a comment).
fn split_documents(input: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut separator = "";
    let mut body_start = 0;
    let mut pos = 0;
    while pos < input.len() {
        let end = input[pos..].find('\n').map_or(input.len(), |i| pos + i + 1);
        let line = input[pos..end].trim_end_matches(['\n', '\r']);
        let is_separator = line
            .strip_prefix("---")
            .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '#']));
        if is_separator {
            docs.push(Document {
                separator,
                body: &input[body_start..pos],
            });
            separator = &input[pos..end];
            body_start = end;
        }
        pos = end;
    }
    docs.push(Document {
        separator,
        body: &input[body_start..],
    });
    // A stream starting with `---` has an empty first "document" before it: keep it (it is
    // blank, so it is copied as is).
    docs
}

fn is_blank(body: &str) -> bool {
    body.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#')
    })
}

fn leading_comments(body: &str) -> &str {
    let mut end = 0;
    for line in body.split_inclusive('\n') {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            end += line.len();
        } else {
            break;
        }
    }
    &body[..end]
}

struct Ctx<'c> {
    config: &'c Config,
    namespace: Option<&'c str>,
    document: usize,
    warnings: &'c mut Vec<String>,
    changed: usize,
}

impl Ctx<'_> {
    /// Injects the pod template(s) of one object, in place.
    fn object(&mut self, value: &mut Value) -> Result<(), InjectError> {
        let kind = value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let name = value
            .get("metadata")
            .and_then(|m| m.get("name").or_else(|| m.get("generateName")))
            .and_then(Value::as_str)
            .unwrap_or("-")
            .to_owned();
        let namespace = value
            .get("metadata")
            .and_then(|m| m.get("namespace"))
            .and_then(Value::as_str)
            .or(self.namespace)
            .unwrap_or("default")
            .to_owned();
        let object = format!("{kind}/{name}");
        let (path, runs_to_completion): (&[&str], bool) = match kind.as_str() {
            "Pod" => (&[], false),
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "ReplicationController" => {
                (&["spec", "template"], false)
            }
            "Job" => (&["spec", "template"], true),
            "CronJob" => (&["spec", "jobTemplate", "spec", "template"], true),
            "List" => {
                if let Some(Value::Sequence(items)) = value.get_mut("items") {
                    for item in items {
                        self.object(item)?;
                    }
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        if !path.is_empty() {
            self.warn_misplaced_annotations(value, &object, path);
        }
        let mut template = &mut *value;
        for key in path {
            match template.get_mut(*key) {
                Some(next) => template = next,
                None => return Ok(()),
            }
        }
        self.template(template, &object, &namespace, runs_to_completion)
    }

    fn template(
        &mut self,
        template: &mut Value,
        object: &str,
        namespace: &str,
        runs_to_completion: bool,
    ) -> Result<(), InjectError> {
        let document = self.document;
        let unusable = |message: String| InjectError::Unusable {
            document,
            object: object.to_owned(),
            message,
        };
        let meta_json = match template.get("metadata") {
            Some(m) => serde_json::to_string(m).map_err(|e| unusable(e.to_string()))?,
            None => return Ok(()),
        };
        let spec_json = match template.get("spec") {
            Some(s) => Some(serde_json::to_string(s).map_err(|e| unusable(e.to_string()))?),
            None => None,
        };
        let meta: PodMeta<'_> =
            serde_json::from_str(&meta_json).map_err(|e| unusable(format!("metadata: {e}")))?;
        let spec_raw: Option<Box<RawValue>> = spec_json
            .map(RawValue::from_string)
            .transpose()
            .map_err(|e| unusable(e.to_string()))?;
        let spec = SpecInput::Raw(spec_raw.as_deref());
        match decide(meta, spec, namespace, runs_to_completion, self.config) {
            Decision::Skip | Decision::AlreadyInjected => Ok(()),
            Decision::Deny { message, warnings } => {
                self.push_warnings(object, warnings);
                Err(InjectError::Denied {
                    document: self.document,
                    object: object.to_owned(),
                    message,
                })
            }
            Decision::Inject { patch, warnings, .. } => {
                self.push_warnings(object, warnings);
                apply(template, &patch).map_err(|e| unusable(format!("cannot apply the patch: {e}")))?;
                self.changed += 1;
                Ok(())
            }
        }
    }

    /// Annotations under the prefix on a workload's own metadata do nothing (the webhook sees
    /// only pods); a common slip, so `inject` names it and the place they belong.
    fn warn_misplaced_annotations(&mut self, workload: &Value, object: &str, template_path: &[&str]) {
        let Some(Value::Mapping(annotations)) = workload.get("metadata").and_then(|m| m.get("annotations"))
        else {
            return;
        };
        let misplaced: Vec<&str> = annotations
            .keys()
            .filter_map(Value::as_str)
            .filter(|k| k.starts_with(inject_api::ANNOTATION_PREFIX))
            .collect();
        if misplaced.is_empty() {
            return;
        }
        let place = template_path.join(".");
        self.warnings.push(format!(
            "{object}: {} on the {}'s own metadata {} ignored: the webhook reads the pod template's annotations; \
             move {} to {place}.metadata.annotations",
            misplaced.join(", "),
            object.split('/').next().unwrap_or("object"),
            if misplaced.len() == 1 { "is" } else { "are" },
            if misplaced.len() == 1 { "it" } else { "them" },
        ));
    }

    fn push_warnings(&mut self, object: &str, warnings: Vec<String>) {
        self.warnings
            .extend(warnings.into_iter().map(|w| format!("{object}: {w}")));
    }
}

/// Applies the webhook's patch (adds and replaces) to a YAML value, keeping key order.
pub fn apply(target: &mut Value, ops: &[PatchOp]) -> Result<(), String> {
    for op in ops {
        let value: Value = serde_json::from_str(op.value.get()).map_err(|e| e.to_string())?;
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
        if node.is_null() && op.op == OpKind::Add {
            *node = Value::Mapping(Mapping::new());
        }
        match node {
            Value::Mapping(map) => {
                if op.op == OpKind::Replace && !map.contains_key(last.as_str()) {
                    return Err(format!("{}: nothing to replace", op.path));
                }
                map.insert(Value::String(last.clone()), value);
            }
            Value::Sequence(seq) => {
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

fn child<'v>(node: &'v mut Value, token: &str) -> Option<&'v mut Value> {
    match node {
        Value::Mapping(map) => map.get_mut(token),
        Value::Sequence(seq) => token.parse::<usize>().ok().and_then(|i| seq.get_mut(i)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_rejoins_byte_for_byte() {
        for input in [
            "",
            "a: 1\n",
            "---\na: 1\n",
            "# c\na: 1\n---\nb: 2\n--- # x\nc: 3",
            "a: |\n  ---not a separator\n---\n\n",
            "a: 1\r\n---\r\nb: 2\r\n",
        ] {
            let docs = split_documents(input);
            let joined: String = docs.iter().flat_map(|d| [d.separator, d.body]).collect();
            assert_eq!(joined, input);
        }
        assert_eq!(split_documents("a: 1\n---\nb: 2\n---\n").len(), 3);
        assert_eq!(split_documents("a: |\n  --- x\n").len(), 1);
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        let deep = format!(
            "kind: Pod\nspec: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = super::inject_manifests(&deep, &crate::config::Config::default(), None).unwrap_err();
        assert!(
            e.to_string().contains("nest deeper than 256 levels at line 2"),
            "{e}"
        );
        // Templates and flow mappings of real manifests pass.
        assert!(check_flow_depth("a: {b: [1, {c: \"{{ x }}\"}]}\n").is_ok());
    }

    #[test]
    fn leading_comment_lines() {
        assert_eq!(leading_comments("# a\n\n# b\nkind: Pod\n# c\n"), "# a\n\n# b\n");
        assert_eq!(leading_comments("kind: Pod\n"), "");
    }
}
