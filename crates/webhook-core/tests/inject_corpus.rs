//! The corpus test: `inject` against kubectl's own reader, on manifests nobody here wrote.
//!
//! Run by `tests/yaml-oracle/run`, which builds the oracle (a Go program over apimachinery's
//! `YAMLOrJSONDecoder`, exactly what `kubectl apply -f` reads with) and assembles the corpus:
//! the edge cases in `tests/yaml-oracle/corpus`, Kubernetes' own test fixtures from the Go module
//! cache, and charts from Helm's test data rendered with `helm template`.
//!
//! For every file:
//! 1. the crate's reader sees every document exactly as kubectl does (same values and types,
//!    same documents, an error where kubectl has one);
//! 2. some pod templates of the built-in workloads get the opt-in (two annotation lines added to
//!    the text), then, with kubectl reading input and output:
//!    - every document of the output is the input document plus exactly the injection, which
//!      is computed apart from `inject`: the webhook's own patch applied to kubectl's reading
//!      of the input document;
//!    - documents without the opt-in are unchanged byte for byte;
//!    - a second pass changes nothing.
//!
//! Failures are collected over the whole corpus and reported together.
// A test, not the core: the purity lints (clippy.toml) do not apply.
#![allow(
    clippy::disallowed_methods,
    clippy::disallowed_types,
    clippy::disallowed_macros
)]

mod inject_common;

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use inject_common::{expected_document, json_difference, json_eq};
use serde_json::Value as Json;
use webhook_core::{
    config::Config,
    inject::{InjectError, inject_manifests},
    kubeyaml::{Mark, Node, Syntax, Value, read_stream},
};

/// What the oracle printed for one file.
#[derive(Debug, Clone, serde::Deserialize)]
struct Reading {
    objects: Vec<Json>,
    #[serde(default)]
    error: Option<String>,
}

/// kubectl's reading of many files (in batches, one process each).
fn oracle(files: &[PathBuf]) -> Vec<Reading> {
    let bin = std::env::var("PS_YAML_ORACLE")
        .expect("PS_YAML_ORACLE: the oracle binary (run tests/yaml-oracle/run)");
    let mut out = Vec::with_capacity(files.len());
    for batch in files.chunks(256) {
        let result = Command::new(&bin).args(batch).output().expect("the oracle runs");
        assert!(
            result.status.success(),
            "oracle: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        let text = String::from_utf8(result.stdout).expect("the oracle prints UTF-8");
        for line in text.lines() {
            out.push(serde_json::from_str(line).unwrap_or_else(|e| panic!("oracle line {line:?}: {e}")));
        }
    }
    assert_eq!(out.len(), files.len());
    out
}

fn corpus_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Our reading: the documents kubectl keeps, as JSON, or the error.
fn our_reading(text: &str) -> Result<Vec<Json>, String> {
    let stream = read_stream(text).map_err(|e| format!("{}: {}", e.mark, e.message))?;
    Ok(stream
        .documents
        .iter()
        .filter_map(|d| d.node.as_ref().map(Node::to_json))
        .collect())
}

/// Refusals `inject` makes of documents kubectl reads: its documented limits.
fn accepted_refusal(message: &str) -> bool {
    message.contains("inject refuses") || message.contains("kubectl keeps one of them at random")
}

/// Compares our reading of a text with kubectl's; `None` when they agree.
fn reader_divergence(text: &str, kubectl: &Reading) -> Option<String> {
    match (our_reading(text), &kubectl.error) {
        (Ok(ours), None) => {
            if ours.len() != kubectl.objects.len() {
                return Some(format!(
                    "{} documents, kubectl reads {}",
                    ours.len(),
                    kubectl.objects.len()
                ));
            }
            ours.iter()
                .zip(&kubectl.objects)
                .enumerate()
                .find_map(|(i, (a, b))| json_difference(a, b, "").map(|d| format!("document {}: {d}", i + 1)))
        }
        (Err(_), Some(_)) => None,
        (Err(e), None) if accepted_refusal(&e) => None,
        (Err(e), None) => Some(format!("refused ({e}) but kubectl reads it")),
        (Ok(ours), Some(e)) => Some(format!("read ({} documents) but kubectl fails: {e}", ours.len())),
    }
}

/// The character offset of a mark in `text` (marks are 1-based lines and character columns).
fn offset(text: &str, line_starts: &[usize], mark: Mark) -> Option<usize> {
    let start = *line_starts.get(mark.line.checked_sub(1)?)?;
    let rest = &text[start..];
    let mut chars = rest.char_indices();
    let column = if mark.line == 1 && text.starts_with('\u{feff}') {
        mark.column
    } else {
        mark.column - 1
    };
    for _ in 0..column {
        chars.next()?;
    }
    Some(start + chars.next().map_or(rest.len(), |(i, _)| i))
}

const OPT_IN_KEYS: [(&str, &str); 2] = [
    ("ps-injector.io/inject", "\"true\""),
    ("ps-injector.io/secret-corpus", "\"corpus/db/password\""),
];

/// Where and what to insert so a template opts in, by its shape in the text.
fn opt_in_insertion(text: &str, starts: &[usize], template: &Node) -> Option<(usize, String)> {
    let meta = template.get("metadata")?;
    let meta_map = meta.as_map()?;
    let flow_at = |node: &Node| -> Option<usize> {
        let at = offset(text, starts, node.mark)?;
        text[at..].starts_with('{').then_some(at + 1)
    };
    let flow_pairs = |quote_keys: bool| {
        OPT_IN_KEYS
            .iter()
            .map(|(k, v)| {
                if quote_keys {
                    format!("\"{k}\": {v}")
                } else {
                    format!("{k}: {v}")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let block_lines = |indent: usize| {
        OPT_IN_KEYS
            .iter()
            .map(|(k, v)| format!("{}{k}: {v}\n", " ".repeat(indent)))
            .collect::<String>()
    };
    // The line start of an entry's key, when the key is the first thing on its line.
    let block_at = |mark: Mark| -> Option<(usize, usize)> {
        let start = *starts.get(mark.line.checked_sub(1)?)?;
        let indent = mark.column - 1;
        text.get(start..start + indent)
            .is_some_and(|s| s.bytes().all(|b| b == b' '))
            .then_some((start, indent))
    };
    if let Some(annotations) = meta.get("annotations") {
        let map = annotations.as_map()?;
        if map.contains_key(OPT_IN_KEYS[0].0) || map.is_empty() {
            return None;
        }
        if let Some(at) = flow_at(annotations) {
            return Some((at, format!(" {}, ", flow_pairs(true))));
        }
        let first = map.values().next()?;
        let (at, indent) = block_at(first.key_mark)?;
        return Some((at, block_lines(indent)));
    }
    if meta_map.is_empty() {
        return None;
    }
    if let Some(at) = flow_at(meta) {
        return Some((at, format!(" annotations: {{{}}}, ", flow_pairs(true))));
    }
    let first = meta_map.values().next()?;
    let (at, indent) = block_at(first.key_mark)?;
    Some((
        at,
        format!("{}annotations:\n{}", " ".repeat(indent), block_lines(indent + 2)),
    ))
}

fn workload_template(node: &Node) -> Option<&Node> {
    let json = serde_json::json!({"apiVersion": node.get("apiVersion")?.as_str()?, "kind": node.get("kind")?.as_str()?});
    let (pointer, _) = inject_common::template_pointer(&json)?;
    let path: Vec<&str> = pointer.split('/').skip(1).collect();
    node.at(&path)
}

/// Insertions that opt in every other workload template of a text (the first one first), per
/// document index (as kubectl counts documents).
fn opt_in_plan(text: &str) -> Vec<(usize, usize, String)> {
    let Ok(stream) = read_stream(text) else {
        return Vec::new();
    };
    let starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let mut plan = Vec::new();
    let mut toggle = true;
    let mut document = 0;
    for doc in &stream.documents {
        let Some(node) = &doc.node else { continue };
        document += 1;
        if doc.syntax == Syntax::Json {
            continue; // marks of a JSON stream document are its start only
        }
        let mut objects = vec![node];
        if let Some(Value::Seq(items)) = node.get("items").map(|n| &n.value) {
            objects.extend(items.iter());
        }
        for object in objects {
            let Some(template) = workload_template(object) else {
                continue;
            };
            if toggle && let Some((at, insert)) = opt_in_insertion(text, &starts, template) {
                plan.push((document, at, insert));
            }
            toggle = !toggle;
        }
    }
    plan
}

fn apply_plan(text: &str, plan: &[(usize, usize, String)]) -> String {
    let mut edits: Vec<&(usize, usize, String)> = plan.iter().collect();
    edits.sort_by_key(|e| std::cmp::Reverse(e.1));
    edits.dedup_by_key(|e| e.1);
    let mut out = text.to_owned();
    for (_, at, insert) in edits {
        out.insert_str(*at, insert);
    }
    out
}

#[derive(Default)]
struct Report {
    files: usize,
    documents: usize,
    injected: usize,
    denied: usize,
    kubectl_refuses: usize,
    failures: Vec<String>,
    notes: Vec<String>,
}

#[test]
#[ignore = "needs kubectl's reader (Go) and the corpus: run tests/yaml-oracle/run"]
fn inject_keeps_what_kubectl_reads() {
    let dir = PathBuf::from(std::env::var("PS_YAML_CORPUS").expect("PS_YAML_CORPUS: the corpus directory"));
    let files = corpus_files(&dir);
    assert!(!files.is_empty(), "empty corpus in {}", dir.display());
    let config = Config::default();
    let work = tempfile::tempdir().unwrap();
    let mut report = Report::default();

    let texts: Vec<Option<String>> = files.iter().map(|f| std::fs::read_to_string(f).ok()).collect();
    let originals = oracle(&files);

    // Opted-in variants: the plan, minus templates the webhook denies.
    let mut plans: Vec<Vec<(usize, usize, String)>> = texts
        .iter()
        .map(|t| t.as_deref().map(opt_in_plan).unwrap_or_default())
        .collect();
    let mut results: HashMap<usize, Result<webhook_core::inject::Injected, InjectError>> = HashMap::new();
    let mut variants: Vec<String> = vec![String::new(); files.len()];
    for (i, text) in texts.iter().enumerate() {
        let Some(text) = text else { continue };
        loop {
            let variant = apply_plan(text, &plans[i]);
            let result = inject_manifests(&variant, &config, None);
            if let Err(InjectError::Denied {
                document, message, ..
            }) = &result
                && plans[i].iter().any(|p| p.0 == *document)
            {
                report.notes.push(format!(
                    "{}: document {document} denied: {message}",
                    files[i].display()
                ));
                report.denied += 1;
                let document = *document;
                plans[i].retain(|p| p.0 != document);
                continue;
            }
            variants[i] = variant;
            results.insert(i, result);
            break;
        }
    }
    let variant_files: Vec<PathBuf> = variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let path = work.path().join(format!("in-{i}.yaml"));
            std::fs::write(&path, v).unwrap();
            path
        })
        .collect();
    let output_texts: Vec<String> = (0..files.len())
        .map(|i| match results.get(&i) {
            Some(Ok(out)) => out.output.clone(),
            _ => String::new(),
        })
        .collect();
    let output_files: Vec<PathBuf> = output_texts
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let path = work.path().join(format!("out-{i}.yaml"));
            std::fs::write(&path, o).unwrap();
            path
        })
        .collect();
    let inputs = oracle(&variant_files);
    let outputs = oracle(&output_files);

    for (i, file) in files.iter().enumerate() {
        let name = file.strip_prefix(&dir).unwrap_or(file).display().to_string();
        let Some(text) = &texts[i] else {
            // Not UTF-8: kubectl's reader must refuse it too (it reads UTF-8 only).
            if originals[i].error.is_none() && !originals[i].objects.is_empty() {
                report
                    .failures
                    .push(format!("{name}: not UTF-8, yet kubectl reads it"));
            }
            continue;
        };
        report.files += 1;
        let mut fail = |m: String| report.failures.push(format!("{name}: {m}"));
        // 1. Reading.
        if let Some(d) = reader_divergence(text, &originals[i]) {
            fail(format!("reading differs from kubectl's: {d}"));
            continue;
        }
        if originals[i].error.is_some() {
            report.kubectl_refuses += 1;
        }
        let variant = &variants[i];
        let kubectl_in = &inputs[i];
        if originals[i].error.is_none() && kubectl_in.error.is_some() {
            report.notes.push(format!(
                "{name}: the opt-in insertion broke the file; not injected"
            ));
        }
        // 2. Injection.
        let result = results.remove(&i).unwrap();
        let out = match (result, &kubectl_in.error) {
            (Err(_), Some(_)) => continue,
            (Err(e), None) if accepted_refusal(&e.to_string()) => continue,
            (Err(e), None) => {
                fail(format!(
                    "inject failed on what kubectl reads: {}",
                    e.located("input")
                ));
                continue;
            }
            (Ok(out), Some(e)) => {
                if out.changed > 0 || out.output != *variant {
                    fail(format!("inject changed a stream kubectl cannot read ({e})"));
                }
                continue;
            }
            (Ok(out), None) => out,
        };
        report.documents += kubectl_in.objects.len();
        report.injected += out.changed;
        let kubectl_out = &outputs[i];
        if let Some(e) = &kubectl_out.error {
            fail(format!("kubectl cannot read the output: {e}"));
            continue;
        }
        if kubectl_out.objects.len() != kubectl_in.objects.len() {
            fail(format!(
                "{} documents in, {} out",
                kubectl_in.objects.len(),
                kubectl_out.objects.len()
            ));
            continue;
        }
        let before_docs = read_stream(variant).unwrap();
        let after_docs = read_stream(&out.output).unwrap();
        let texts_in: Vec<&str> = before_docs
            .documents
            .iter()
            .filter(|d| d.node.is_some())
            .map(|d| d.text)
            .collect();
        let texts_out: Vec<&str> = after_docs
            .documents
            .iter()
            .filter(|d| d.node.is_some())
            .map(|d| d.text)
            .collect();
        for (d, (before, after)) in kubectl_in.objects.iter().zip(&kubectl_out.objects).enumerate() {
            let expected = match expected_document(before, None, &config) {
                Ok(e) => e,
                Err(m) => {
                    fail(format!(
                        "document {}: the webhook denies ({m}) but inject did not",
                        d + 1
                    ));
                    continue;
                }
            };
            if let Some(diff) = json_difference(after, &expected, "") {
                fail(format!(
                    "document {}: kubectl reads the output differently from the input plus the injection: {diff}",
                    d + 1
                ));
            }
            if json_eq(&expected, before) && texts_in.get(d) != texts_out.get(d) {
                fail(format!("document {}: not injected, yet its text changed", d + 1));
            }
        }
        // 3. A second pass changes nothing.
        match inject_manifests(&out.output, &config, None) {
            Ok(again) if again.changed == 0 && again.output == out.output => {}
            Ok(again) => fail(format!("a second pass changed {} templates", again.changed)),
            Err(e) => fail(format!("a second pass failed: {e}")),
        }
        // The output is read by us as by kubectl.
        if let Some(d) = reader_divergence(&out.output, kubectl_out) {
            fail(format!("reading of the output differs from kubectl's: {d}"));
        }
    }

    let mut summary = String::new();
    let _ = writeln!(
        summary,
        "yaml corpus: {} files, {} documents read by kubectl, {} pod templates injected, {} denied by the webhook, {} files kubectl refuses",
        report.files, report.documents, report.injected, report.denied, report.kubectl_refuses
    );
    for note in &report.notes {
        let _ = writeln!(summary, "  note: {note}");
    }
    println!("{summary}");
    assert!(
        report.failures.is_empty(),
        "{} failures:\n{}\n{summary}",
        report.failures.len(),
        report.failures.join("\n")
    );
    let minimum: usize = std::env::var("PS_YAML_CORPUS_MIN_INJECTED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    assert!(
        report.injected >= minimum,
        "only {} templates injected (want {minimum})\n{summary}",
        report.injected
    );
}
