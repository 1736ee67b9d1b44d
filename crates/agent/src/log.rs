//! A small `tracing` subscriber writing one line per event to stderr, plain or JSON
//! (`PS_LOG_FORMAT=json`). Hand-written instead of `tracing-subscriber` to keep the static
//! binary small and the output format exact.
//!
//! Events of other crates (hyper, reqwest, rustls, ...) are shown at `warn` and `error` only,
//! whatever `PS_LOG_LEVEL` says: their debug output could carry headers. The agent and the
//! `passwordsafe` client never put a value, key, token or cookie into an event.

use std::{
    fmt::{self, Write as _},
    io::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use tracing::{
    Event, Level, Metadata, Subscriber,
    field::{Field, Visit},
    span,
    subscriber::Interest,
};

/// Line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

impl LogFormat {
    /// From `PS_LOG_FORMAT`: `json` or anything else (plain).
    pub fn from_env_value(v: Option<&str>) -> LogFormat {
        match v.map(str::trim) {
            Some(v) if v.eq_ignore_ascii_case("json") => LogFormat::Json,
            _ => LogFormat::Plain,
        }
    }
}

/// Parses `PS_LOG_LEVEL` (`error`, `warn`, `info` (default), `debug`, `trace`).
pub fn level_from_env_value(v: Option<&str>) -> Level {
    match v.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        Some("error") => Level::ERROR,
        Some("warn" | "warning") => Level::WARN,
        Some("debug") => Level::DEBUG,
        Some("trace") => Level::TRACE,
        _ => Level::INFO,
    }
}

struct StderrLogger {
    format: LogFormat,
    level: Level,
    next_id: AtomicU64,
}

fn ours(target: &str) -> bool {
    target.starts_with("ps_agent") || target.starts_with("passwordsafe")
}

impl StderrLogger {
    fn wants(&self, meta: &Metadata<'_>) -> bool {
        let max = if ours(meta.target()) {
            self.level
        } else {
            Level::WARN
        };
        *meta.level() <= max
    }
}

impl Subscriber for StderrLogger {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.wants(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.wants(meta)
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(
            self.level.max(Level::WARN),
        ))
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(self.next_id.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let meta = event.metadata();
        let mut v = Collect::default();
        event.record(&mut v);
        let line = format_line(self.format, *meta.level(), meta.target(), &v.message, &v.fields);
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

#[derive(Default)]
struct Collect {
    message: String,
    fields: Vec<(&'static str, FieldValue)>,
}

enum FieldValue {
    Str(String),
    Num(String),
    Raw(serde_json::Value),
}

impl Visit for Collect {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields
                .push((field.name(), FieldValue::Str(value.to_owned())));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields
            .push((field.name(), FieldValue::Num(value.to_string())));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields
            .push((field.name(), FieldValue::Num(value.to_string())));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields
            .push((field.name(), FieldValue::Num(format!("{value:.3}"))));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), FieldValue::Raw(value.into())));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let s = format!("{value:?}");
        if field.name() == "message" {
            self.message = s;
        } else if field.name().starts_with("json_") {
            // Pre-serialised JSON (the summary's lists); shown as is in both formats.
            let raw = serde_json::from_str(s.trim_matches('"')).unwrap_or(serde_json::Value::String(s));
            self.fields.push((&field.name()[5..], FieldValue::Raw(raw)));
        } else {
            self.fields.push((field.name(), FieldValue::Str(s)));
        }
    }
}

fn format_line(
    format: LogFormat,
    level: Level,
    target: &str,
    message: &str,
    fields: &[(&'static str, FieldValue)],
) -> String {
    let ts = timestamp_now();
    let mut out = String::with_capacity(128);
    match format {
        LogFormat::Plain => {
            let _ = write!(out, "{ts} {:<5} {message}", level.as_str());
            for (k, v) in fields {
                match v {
                    FieldValue::Str(s) if needs_quotes(s) => {
                        let _ = write!(out, " {k}={s:?}");
                    }
                    FieldValue::Str(s) | FieldValue::Num(s) => {
                        let _ = write!(out, " {k}={s}");
                    }
                    FieldValue::Raw(r) => {
                        let _ = write!(out, " {k}={r}");
                    }
                }
            }
            if !ours(target) {
                let _ = write!(out, " target={target}");
            }
        }
        LogFormat::Json => {
            let mut m = serde_json::Map::new();
            m.insert("ts".into(), ts.into());
            m.insert("level".into(), level.as_str().to_ascii_lowercase().into());
            m.insert("target".into(), target.into());
            m.insert("msg".into(), message.into());
            for (k, v) in fields {
                let v = match v {
                    FieldValue::Str(s) => serde_json::Value::String(s.clone()),
                    FieldValue::Num(s) => serde_json::from_str(s).unwrap_or_else(|_| s.clone().into()),
                    FieldValue::Raw(r) => r.clone(),
                };
                m.insert((*k).to_owned(), v);
            }
            out.push_str(&serde_json::Value::Object(m).to_string());
        }
    }
    // One event, one line, whatever a message contains.
    let mut out = out.replace(['\n', '\r'], " ");
    out.push('\n');
    out
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '=' || c.is_control())
}

/// Installs the logger for the whole process. Later calls do nothing.
pub fn init(format: LogFormat, level: Level) {
    let logger = StderrLogger {
        format,
        level,
        next_id: AtomicU64::new(1),
    };
    let _ = tracing::subscriber::set_global_default(logger);
}

/// RFC 3339 UTC with milliseconds.
pub fn timestamp_now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let ts = timestamp_now();
        assert_eq!(ts.len(), "2026-01-01T00:00:00.000Z".len(), "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
        assert!(humantime::parse_rfc3339(&ts).is_ok(), "{ts}");
    }

    #[test]
    fn lines() {
        let fields = vec![
            ("refs", FieldValue::Num("5".into())),
            ("mode", FieldValue::Str("fetch".into())),
            ("err", FieldValue::Str("a b\nc".into())),
        ];
        let plain = format_line(LogFormat::Plain, Level::INFO, "ps_agent::run", "summary", &fields);
        assert!(
            plain.ends_with("INFO  summary refs=5 mode=fetch err=\"a b\\nc\"\n"),
            "{plain}"
        );
        let json = format_line(LogFormat::Json, Level::WARN, "hyper", "m\nx", &fields);
        assert_eq!(json.matches('\n').count(), 1);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["level"], "warn");
        assert_eq!(v["refs"], 5);
        assert_eq!(v["mode"], "fetch");
        assert_eq!(v["target"], "hyper");
    }

    #[test]
    fn formats_and_levels() {
        assert_eq!(LogFormat::from_env_value(Some("JSON")), LogFormat::Json);
        assert_eq!(LogFormat::from_env_value(None), LogFormat::Plain);
        assert_eq!(level_from_env_value(Some("debug")), Level::DEBUG);
        assert_eq!(level_from_env_value(Some("bogus")), Level::INFO);
    }
}
