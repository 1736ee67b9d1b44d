//! JSON Patch (RFC 6902) operations as the webhook emits them: `add` only, except the one
//! `replace` of a container's `command` that exec mode needs (an opted-in feature).
//!
//! Values are serialised once, when the operation is built ([`RawValue`]), so writing the
//! patch is a copy. Paths are RFC 6901 pointers built from unescaped tokens, or constants for
//! the fixed ones (no allocation, no escaping pass).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;

/// The operations the webhook emits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    Add,
    Replace,
}

/// One JSON Patch operation.
#[derive(Clone, Debug, Serialize)]
pub struct PatchOp {
    pub op: OpKind,
    pub path: Cow<'static, str>,
    pub value: Box<RawValue>,
}

impl PatchOp {
    /// `add` of a serialisable value at `path`.
    pub fn add(path: impl Into<Cow<'static, str>>, value: &impl Serialize) -> Self {
        Self {
            op: OpKind::Add,
            path: path.into(),
            value: raw(value),
        }
    }

    /// `replace` of a serialisable value at `path`. Only for exec mode's `command`.
    pub fn replace(path: impl Into<Cow<'static, str>>, value: &impl Serialize) -> Self {
        Self {
            op: OpKind::Replace,
            path: path.into(),
            value: raw(value),
        }
    }
}

fn raw(value: &impl Serialize) -> Box<RawValue> {
    // The injected types are plain structs, strings and vectors: serialisation cannot fail.
    serde_json::value::to_raw_value(value).unwrap_or_default()
}

/// Builds an RFC 6901 pointer from unescaped tokens (`~` → `~0`, `/` → `~1`).
pub fn pointer<'a>(tokens: impl IntoIterator<Item = &'a str>) -> String {
    let mut out = String::with_capacity(48);
    for token in tokens {
        out.push('/');
        for c in token.chars() {
            match c {
                '~' => out.push_str("~0"),
                '/' => out.push_str("~1"),
                c => out.push(c),
            }
        }
    }
    out
}

/// Serialises a patch as the JSON array the AdmissionResponse carries (before base64).
pub fn to_json(ops: &[PatchOp]) -> Vec<u8> {
    let size = ops
        .iter()
        .map(|o| o.path.len() + o.value.get().len() + 40)
        .sum::<usize>()
        + 2;
    let mut out = Vec::with_capacity(size);
    match serde_json::to_writer(&mut out, ops) {
        Ok(()) => out,
        Err(_) => b"[]".to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_escape_tokens() {
        assert_eq!(pointer(["spec", "containers", "-"]), "/spec/containers/-");
        assert_eq!(
            pointer(["metadata", "annotations", "ps-injector.io/status"]),
            "/metadata/annotations/ps-injector.io~1status"
        );
        assert_eq!(pointer(["a~b/c"]), "/a~0b~1c");
        assert_eq!(pointer([]), "");
    }

    #[test]
    fn ops_serialise_as_rfc6902() {
        let ops = vec![
            PatchOp::add(pointer(["spec", "volumes"]), &vec!["x"]),
            PatchOp::replace(pointer(["spec", "containers", "0", "command"]), &["a", "b"]),
        ];
        assert_eq!(
            String::from_utf8(to_json(&ops)).unwrap(),
            r#"[{"op":"add","path":"/spec/volumes","value":["x"]},{"op":"replace","path":"/spec/containers/0/command","value":["a","b"]}]"#
        );
    }
}
