//! Offline injection: manifests in, mutated manifests out. (Interface stub.)

use crate::config::Config;

/// The result of [`inject_manifests`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    /// The documents, pod templates mutated, others byte-for-byte unchanged.
    pub output: String,
    pub warnings: Vec<String>,
    /// How many pod templates were injected.
    pub changed: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("document {document}: not valid YAML: {message}")]
    Yaml { document: usize, message: String },
    #[error("document {document} ({object}): {message}")]
    Denied {
        document: usize,
        object: String,
        message: String,
    },
}

pub fn inject_manifests(
    input: &str,
    config: &Config,
    namespace: Option<&str>,
) -> Result<Injected, InjectError> {
    let _ = (config, namespace);
    Ok(Injected {
        output: input.to_owned(),
        warnings: Vec::new(),
        changed: 0,
    })
}

/// A unified diff of two texts.
pub fn diff(before: &str, after: &str) -> String {
    similar::TextDiff::from_lines(before, after)
        .unified_diff()
        .header("before", "after")
        .to_string()
}
