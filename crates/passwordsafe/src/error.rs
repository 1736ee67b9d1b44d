//! Typed errors.
//!
//! Every message says *what* failed (which secret, folder, account or route) and never contains
//! a secret value, a session cookie, a token or a key. Bodies of error responses are included
//! (truncated, control characters removed) only where they cannot hold a value: never for the
//! `Credentials` route or for secret/file reads, never for 5xx answers.

use std::fmt;

/// Maximum number of characters of an error body kept in an [`Error`].
pub(crate) const MAX_DETAIL_CHARS: usize = 200;

/// Everything that can go wrong talking to Password Safe.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Sign-in was refused (bad key, runas, password, OAuth client, certificate, source IP), or a
    /// call got 401 again right after a re-authentication.
    #[error("{what}: authentication failed ({route}: {}){}", status_text(*status), Detail(detail))]
    Authentication {
        /// What was being done.
        what: String,
        /// Route key, e.g. `POST auth/signappin`.
        route: &'static str,
        /// HTTP status, if a response arrived.
        status: Option<u16>,
        /// The server's (opaque, truncated) explanation, when safe to show.
        detail: Option<String>,
    },

    /// The secret, folder, managed account or request does not exist (or is not visible to the
    /// signed-in user). Secrets Safe answers an unknown path with an empty list, which is mapped
    /// here too.
    #[error("{what}: not found ({route}: {reason}){}", Detail(detail))]
    NotFound {
        /// What was looked up, e.g. `secret "team-a/db/password"`.
        what: String,
        /// Route key.
        route: &'static str,
        /// Why it counts as not found, e.g. `HTTP 404` or `empty result`.
        reason: String,
        /// Server explanation, when safe to show.
        detail: Option<String>,
    },

    /// The signed-in user lacks a permission or role (HTTP 403).
    #[error("{what}: permission denied ({route}: HTTP {status}){}", Detail(detail))]
    Permission {
        /// What was being done.
        what: String,
        /// Route key.
        route: &'static str,
        /// HTTP status (403).
        status: u16,
        /// Server explanation (may be a sub-code such as `4031`), when safe to show.
        detail: Option<String>,
    },

    /// HTTP 409. On `POST Requests` it is retried with backoff (the per-account "Concurrent
    /// Requests" limit can cause it during rollouts); this error means the budget ran out.
    #[error(
        "{what}: conflict ({route}: HTTP 409) after {attempts} attempt(s){}",
        Detail(detail)
    )]
    Conflict {
        /// What was being done.
        what: String,
        /// Route key.
        route: &'static str,
        /// Attempts made.
        attempts: u32,
        /// Server explanation, when safe to show.
        detail: Option<String>,
    },

    /// The server failed (5xx) or throttled (408, 429) and retries did not help within the budget.
    #[error("{what}: server error ({route}: HTTP {status}) after {attempts} attempt(s)")]
    Server {
        /// What was being done.
        what: String,
        /// Route key.
        route: &'static str,
        /// Last HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },

    /// Password Safe kept refusing the call for load (HTTP 429, or 503 with `Retry-After`) until
    /// the retry budget ran out, or asked for a wait longer than the budget had left.
    #[error(
        "{what}: throttled by Password Safe ({route}: HTTP {status}{}) {}; the retry budget ran out",
        RetryAfter(retry_after),
        Attempts(*attempts)
    )]
    Throttled {
        /// What was being done.
        what: String,
        /// Route key.
        route: &'static str,
        /// Last HTTP status (429 or 503).
        status: u16,
        /// Attempts made (0: the session was still told to wait when the call was made).
        attempts: u32,
        /// The last `Retry-After` the server gave.
        retry_after: Option<std::time::Duration>,
    },

    /// Every managed-account request this client read through was checked in by another client
    /// of the same user (they share it through `ConflictOption: reuse`) before the read, until
    /// the retry budget ran out.
    #[error(
        "{what}: the request shared with other clients of this user (ConflictOption reuse) was checked in by one of them before it could be read, {attempts} time(s); the retry budget ran out"
    )]
    SharedRequestClosed {
        /// What was being done.
        what: String,
        /// Reads refused.
        attempts: u32,
    },

    /// Any other refused request (400, 405, 422, ...): not retried.
    #[error("{what}: request rejected ({route}: HTTP {status}){}", Detail(detail))]
    Rejected {
        /// What was being done.
        what: String,
        /// Route key.
        route: &'static str,
        /// HTTP status.
        status: u16,
        /// Server explanation, when safe to show.
        detail: Option<String>,
    },

    /// Connection, TLS, DNS or timeout failure; retries did not help within the budget.
    #[error("{what}: network error ({route}) after {attempts} attempt(s): {detail}")]
    Network {
        /// What was being done.
        what: String,
        /// Route key.
        route: &'static str,
        /// Attempts made.
        attempts: u32,
        /// The error chain as text (URLs removed).
        detail: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// The server answered successfully but the body is not what the API documents (for example a
    /// `Credentials` body that is not a JSON string). Never carries the body itself.
    #[error("{what}: unexpected response from {route}: {reason}")]
    InvalidResponse {
        /// What was being done.
        what: String,
        /// Route key.
        route: &'static str,
        /// What was wrong with it.
        reason: String,
    },

    /// A caller-supplied value is invalid (path, key string, configuration).
    #[error("{what}: invalid input: {reason}")]
    InvalidInput {
        /// Which input.
        what: String,
        /// Why.
        reason: String,
    },

    /// The session was already signed out.
    #[error("{what}: the session is signed out")]
    SignedOut {
        /// What was attempted.
        what: String,
    },
}

impl Error {
    /// The HTTP status of the failing response, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Authentication { status, .. } => *status,
            Error::Permission { status, .. }
            | Error::Server { status, .. }
            | Error::Throttled { status, .. }
            | Error::Rejected { status, .. } => Some(*status),
            Error::Conflict { .. } => Some(409),
            Error::NotFound { reason, .. } if reason == "HTTP 404" => Some(404),
            _ => None,
        }
    }

    /// Whether a later attempt (for example the next refresh in watch mode) may succeed without a
    /// configuration change: network, server, throttling and conflict errors.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Network { .. }
                | Error::Server { .. }
                | Error::Throttled { .. }
                | Error::Conflict { .. }
                | Error::SharedRequestClosed { .. }
        )
    }

    pub(crate) fn invalid_input(what: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidInput {
            what: what.into(),
            reason: reason.into(),
        }
    }
}

fn status_text(status: Option<u16>) -> String {
    match status {
        Some(s) => format!("HTTP {s}"),
        None => "no response".to_owned(),
    }
}

/// Formats an optional `Retry-After` as `, Retry-After N s`.
struct RetryAfter<'a>(&'a Option<std::time::Duration>);

impl fmt::Display for RetryAfter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) => write!(f, ", Retry-After {} s", d.as_secs()),
            None => Ok(()),
        }
    }
}

/// `after N attempt(s)`, or, for a call never sent, why.
struct Attempts(u32);

impl fmt::Display for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            0 => f.write_str("before the call could be sent, as an earlier answer to this session asked"),
            n => write!(f, "after {n} attempt(s)"),
        }
    }
}

/// Formats an optional server explanation as `: "<text>"`.
struct Detail<'a>(&'a Option<String>);

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(d) if !d.is_empty() => write!(f, ": {d:?}"),
            _ => Ok(()),
        }
    }
}

/// Turns an error body into a short, single-line explanation. A JSON string body (the usual
/// Password Safe form) is unquoted; anything else is kept as opaque text. Control characters are
/// replaced and the result is truncated to [`MAX_DETAIL_CHARS`].
pub(crate) fn summarize_body(body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let unquoted = serde_json::from_str::<String>(text).ok();
    let text = unquoted.as_deref().unwrap_or(text).trim();
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == MAX_DETAIL_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    Some(out)
}

/// The error chain of a reqwest error as one line, without URLs.
pub(crate) fn chain_text(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_summary_unquotes_json_strings_and_truncates() {
        assert_eq!(
            summarize_body(br#""Managed Account not found""#).as_deref(),
            Some("Managed Account not found")
        );
        assert_eq!(summarize_body(b"  plain\ntext ").as_deref(), Some("plain text"));
        assert_eq!(summarize_body(b"   "), None);
        let long = "x".repeat(500);
        let s = summarize_body(long.as_bytes()).unwrap();
        assert_eq!(s.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn messages_name_what_failed() {
        let e = Error::NotFound {
            what: "secret \"a/b\"".into(),
            route: "GET secrets-safe/secrets",
            reason: "empty result".into(),
            detail: None,
        };
        assert_eq!(
            e.to_string(),
            "secret \"a/b\": not found (GET secrets-safe/secrets: empty result)"
        );
        let e = Error::Authentication {
            what: "sign-in".into(),
            route: "POST auth/signappin",
            status: Some(401),
            detail: Some("Failed to authenticate".into()),
        };
        assert_eq!(
            e.to_string(),
            "sign-in: authentication failed (POST auth/signappin: HTTP 401): \"Failed to authenticate\""
        );
        assert_eq!(e.status(), Some(401));
        assert!(!e.is_transient());
        let e = Error::Throttled {
            what: "sign-in".into(),
            route: "POST auth/signappin",
            status: 429,
            attempts: 3,
            retry_after: Some(std::time::Duration::from_secs(2)),
        };
        assert_eq!(
            e.to_string(),
            "sign-in: throttled by Password Safe (POST auth/signappin: HTTP 429, Retry-After 2 s) after 3 attempt(s); the retry budget ran out"
        );
        assert_eq!(e.status(), Some(429));
        assert!(e.is_transient());
    }
}
