//! AdmissionReview bytes in, AdmissionReview bytes out. (Interface stub; implementation follows.)

use crate::config::Config;

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

/// Answers one AdmissionReview. Never panics, never 5xx.
pub fn review(body: &[u8], config: &Config) -> AdmissionResult {
    let _ = (body, config);
    AdmissionResult {
        http_status: 400,
        body: b"not implemented yet".to_vec(),
        outcome: Outcome::Invalid,
        mode: None,
        uid: String::new(),
        namespace: String::new(),
        name: String::new(),
        message: None,
        warnings: Vec::new(),
    }
}
