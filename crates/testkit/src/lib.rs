//! Test support shared by the crates' tests (a dev-dependency only; nothing here ships).
//!
//! - [`proptest_config`]: the project's property-test convention: a fixed case count and a
//!   fixed seed in CI, longer or elsewhere with `PROPTEST_CASES` and `PROPTEST_RNG_SEED`.
//! - [`json`]: arbitrary JSON values and generic edits of a JSON document (replace, remove or
//!   insert at a node picked at random), for mutating golden inputs.
//! - [`bytes`]: byte-level edits (set, cut, insert, truncate) of a serialised input.
//! - [`decoded_patch`]: the JSON Patch an AdmissionReview response carries, decoded.
//! - [`LogCapture`]: a `tracing-subscriber` writer that keeps what was logged, for assertions.

use proptest::{prelude::*, test_runner::RngSeed};

/// The seed of every property test when `PROPTEST_RNG_SEED` is not set.
pub const SEED: u64 = 0x5eed_ad31;

/// `cases` cases from [`SEED`], so CI does the same work on every run. `PROPTEST_CASES` and
/// `PROPTEST_RNG_SEED` (and proptest's other `PROPTEST_*` variables) override them:
/// `PROPTEST_CASES=100000 PROPTEST_RNG_SEED=7 cargo test -p CRATE --test NAME`.
/// Failures are not persisted: a failing case prints its input and the seed reproduces it.
pub fn proptest_config(cases: u32) -> ProptestConfig {
    let set = |name: &str| std::env::var_os(name).is_some();
    // `default()` reads the PROPTEST_* variables.
    let mut config = ProptestConfig::default();
    if !set("PROPTEST_CASES") {
        config.cases = cases;
    }
    if !set("PROPTEST_RNG_SEED") {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config.failure_persistence = None;
    config
}

/// The JSON Patch of an AdmissionReview response (the whole review, or its `response`), decoded
/// from base64: `None` when there is no patch. Panics, naming the fault, when the patch is not
/// a base64 string of a JSON array.
pub fn decoded_patch(review: &serde_json::Value) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let response = review.get("response").unwrap_or(review);
    let encoded = response.get("patch")?;
    let text = encoded
        .as_str()
        .unwrap_or_else(|| panic!("the patch is not a string: {encoded}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("the patch is not standard base64: {e}"));
    let patch: serde_json::Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("the patch is not JSON: {e}"));
    assert!(patch.is_array(), "the patch is not a JSON array: {patch}");
    Some(patch)
}

pub mod json {
    //! Arbitrary JSON and generic edits of a JSON document.

    use proptest::{prelude::*, sample::Index};
    use serde_json::{Map, Value, json};

    /// A small nested JSON value of any type. Strings are drawn from `words` (the spellings that
    /// matter to the parser under test) or are random printable text.
    pub fn any_json(words: &[&'static str]) -> BoxedStrategy<Value> {
        let words = words.to_vec();
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            prop::sample::select(words).prop_map(|s| json!(s)),
            "\\PC{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-zA-Z/._-]{0,10}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
            ]
        })
        .boxed()
    }

    /// One generic edit of a document. Nodes are numbered in pre-order; the number is taken
    /// modulo the document's node count, so any `usize` picks a node.
    #[derive(Debug, Clone)]
    pub enum Edit {
        /// The node becomes the value.
        Replace(usize, Value),
        /// One member (object) or element (array) of the node is removed; a scalar becomes null.
        Remove(usize),
        /// `name: value` is added to the first object at or after the node.
        Insert(usize, String, Value),
    }

    /// A generic edit, new values from [`any_json`]`(words)`.
    pub fn edit(words: &[&'static str]) -> BoxedStrategy<Edit> {
        prop_oneof![
            3 => (any::<usize>(), any_json(words)).prop_map(|(n, v)| Edit::Replace(n, v)),
            2 => any::<usize>().prop_map(Edit::Remove),
            1 => (any::<usize>(), "[a-zA-Z]{1,8}", any_json(words))
                .prop_map(|(n, k, v)| Edit::Insert(n, k, v)),
        ]
        .boxed()
    }

    /// The number of nodes of `v` (itself included).
    pub fn count(v: &Value) -> usize {
        1 + match v {
            Value::Array(items) => items.iter().map(count).sum(),
            Value::Object(map) => map.values().map(count).sum(),
            _ => 0,
        }
    }

    /// Calls `f` on every node in pre-order with its number, until `f` returns true.
    fn visit(v: &mut Value, n: &mut usize, f: &mut dyn FnMut(usize, &mut Value) -> bool) -> bool {
        let i = *n;
        *n += 1;
        if f(i, v) {
            return true;
        }
        match v {
            Value::Array(items) => items.iter_mut().any(|c| visit(c, n, f)),
            Value::Object(map) => map.values_mut().any(|c| visit(c, n, f)),
            _ => false,
        }
    }

    /// Applies `edit` to `doc`.
    pub fn apply(doc: &mut Value, edit: &Edit) {
        let total = count(doc);
        match edit {
            Edit::Replace(n, value) => {
                let target = n % total;
                visit(doc, &mut 0, &mut |i, v| {
                    if i == target {
                        *v = value.clone();
                    }
                    i == target
                });
            }
            Edit::Remove(n) => {
                let target = n % total;
                visit(doc, &mut 0, &mut |i, v| {
                    if i != target {
                        return false;
                    }
                    match v {
                        Value::Array(items) if !items.is_empty() => {
                            items.remove(n % items.len());
                        }
                        Value::Object(map) if !map.is_empty() => {
                            let key = map.keys().nth(n % map.len()).cloned().unwrap_or_default();
                            map.remove(&key);
                        }
                        _ => *v = Value::Null,
                    }
                    true
                });
            }
            Edit::Insert(n, key, value) => {
                let target = n % total;
                visit(doc, &mut 0, &mut |i, v| match v {
                    Value::Object(map) if i >= target => {
                        map.insert(key.clone(), value.clone());
                        true
                    }
                    _ => false,
                });
            }
        }
    }

    /// Picks one of `items` (for building documents from a vocabulary).
    pub fn pick<'a, T>(items: &'a [T], i: &Index) -> &'a T {
        &items[i.index(items.len())]
    }
}

pub mod bytes {
    //! Byte-level edits of a serialised input.

    use proptest::{prelude::*, sample::Index};

    #[derive(Debug, Clone)]
    pub enum Edit {
        /// The byte at the index becomes the value.
        Set(Index, u8),
        /// Up to `n` bytes from the index are removed.
        Cut(Index, usize),
        /// Bytes are inserted at the index.
        Insert(Index, Vec<u8>),
        /// The input ends at the index.
        Truncate(Index),
    }

    /// An edit; inserted bytes favour JSON's structural characters.
    pub fn edit() -> BoxedStrategy<Edit> {
        prop_oneof![
            (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
            (any::<Index>(), 1usize..64).prop_map(|(i, n)| Edit::Cut(i, n)),
            (
                any::<Index>(),
                prop::collection::vec(
                    prop_oneof![any::<u8>(), prop::sample::select(b"{}[]\":,\\ 0-e".to_vec())],
                    1..8
                )
            )
                .prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<Index>().prop_map(Edit::Truncate),
        ]
        .boxed()
    }

    /// Applies `edit` to `body` (an empty body stays empty).
    pub fn apply(body: &mut Vec<u8>, edit: &Edit) {
        if body.is_empty() {
            return;
        }
        match edit {
            Edit::Set(i, b) => {
                let i = i.index(body.len());
                body[i] = *b;
            }
            Edit::Cut(i, n) => {
                let i = i.index(body.len());
                let end = (i + n).min(body.len());
                body.drain(i..end);
            }
            Edit::Insert(i, bytes) => {
                let i = i.index(body.len());
                body.splice(i..i, bytes.iter().copied());
            }
            Edit::Truncate(i) => body.truncate(i.index(body.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::json::{Edit, apply, count};

    #[test]
    fn edits_reach_every_node() {
        let doc = json!({"a": [1, {"b": 2}], "c": "x"});
        assert_eq!(count(&doc), 6);
        for n in 0..6 {
            let mut d = doc.clone();
            apply(&mut d, &Edit::Replace(n, json!("new")));
            assert_ne!(d, doc, "node {n}");
        }
        let mut d = doc.clone();
        apply(&mut d, &Edit::Insert(3, "k".into(), json!(true)));
        assert_eq!(d["a"][1]["k"], true);
        let mut d = doc.clone();
        apply(&mut d, &Edit::Remove(0));
        assert_eq!(count(&d), 2, "{d}");
    }

    #[test]
    fn decoded_patch_reads_a_review_or_its_response() {
        // "W10=" is `[]`; "W3sib3AiOiJhZGQifV0=" is `[{"op":"add"}]`.
        let review = json!({"response": {"patch": "W3sib3AiOiJhZGQifV0="}});
        assert_eq!(super::decoded_patch(&review), Some(json!([{"op": "add"}])));
        assert_eq!(
            super::decoded_patch(&review["response"]),
            Some(json!([{"op": "add"}]))
        );
        assert_eq!(
            super::decoded_patch(&json!({"response": {"allowed": true}})),
            None
        );
        let not_a_list = std::panic::catch_unwind(|| super::decoded_patch(&json!({"patch": "e30="})));
        assert!(not_a_list.is_err());
    }
}

/// A writer for a `tracing-subscriber` that keeps every byte logged; clones share one buffer.
#[derive(Clone, Default)]
pub struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    /// Everything logged so far (logs are UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().expect("log capture lock").clone()).expect("UTF-8 logs")
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log capture lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> LogCapture {
        self.clone()
    }
}
