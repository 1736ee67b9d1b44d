//! Log output: `tracing` events to stderr, as plain text or one JSON object per line.
//!
//! The filter comes from `PS_WEBHOOK_LOG` (an `EnvFilter` directive such as `info` or
//! `ps_webhook=debug,warn`). Admissions are logged inside an `admission` span carrying `uid`,
//! `namespace`, `pod`, `outcome`, `mode` and `duration_us`; the JSON format prints those span
//! fields with every event. Nothing logged ever carries a secret value: the webhook handles
//! references only, and request bodies are never logged.
//!
//! The JSON lines are tracing-subscriber's JSON format, byte for byte (same keys, order,
//! escaping, timestamp), written by [`JsonLine`] and [`SortedJsonFields`] here at about a
//! quarter of the instructions: the stock formatter stores a span's fields as JSON text, then
//! parses that text back into a `serde_json::Value` for every event in the span and writes it
//! again, and builds a `Value` map to store them in the first place (about 27,000 of the 38,000
//! instructions an injected admission's log line cost, `bench/webhook/split`). Here the fields
//! are stored already sorted, as the stock `JsonFields` stores them, and copied verbatim into
//! each line. The unit tests below compare both formatters' output line by line.

use std::{cell::RefCell, fmt, io::IsTerminal, str::FromStr};

use serde::ser::{SerializeMap, Serializer as _};
use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    EnvFilter,
    field::{RecordFields, Visit},
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter,
        format::{FmtSpan, Writer},
        time::{FormatTime, SystemTime},
    },
    registry::LookupSpan,
};

/// Environment variable holding the log filter directive.
pub const FILTER_ENV: &str = "PS_WEBHOOK_LOG";

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object per line, span fields included.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        })
    }
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "plain" => Ok(Self::Plain),
            "json" => Ok(Self::Json),
            _ => Err(format!("unknown log format {s:?}: expected plain or json")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("{FILTER_ENV} is not a valid log filter: {0}")]
    Filter(#[source] tracing_subscriber::filter::ParseError),
    #[error("a global log subscriber is already installed")]
    AlreadyInstalled,
}

/// Installs the global subscriber. `default_directive` applies when `PS_WEBHOOK_LOG` is unset
/// or empty (`info` for `serve`; the demo uses `warn` to keep its own output readable).
pub fn init(format: LogFormat, default_directive: &str) -> Result<(), LoggingError> {
    let filter = match std::env::var(FILTER_ENV) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => default_directive.to_owned(),
    };
    // Colour codes only where a person reads them: a file, a pipe or a log collector would
    // store the escape sequences (about 40% of a plain admission line).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let subscriber = subscriber(format, &filter, std::io::stderr, colour)?;
    tracing::subscriber::set_global_default(subscriber).map_err(|_| LoggingError::AlreadyInstalled)
}

/// The subscriber [`init`] installs, writing to `writer` (tests capture the output with it);
/// `colour` adds ANSI colours to the plain format.
pub fn subscriber<W>(
    format: LogFormat,
    filter: &str,
    writer: W,
    colour: bool,
) -> Result<Box<dyn tracing::Subscriber + Send + Sync>, LoggingError>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_new(filter).map_err(LoggingError::Filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_span_events(FmtSpan::NONE);
    Ok(match format {
        LogFormat::Plain => Box::new(builder.with_target(false).with_ansi(colour).finish()),
        LogFormat::Json => Box::new(
            builder
                .with_ansi(false)
                .fmt_fields(SortedJsonFields)
                .event_format(JsonLine)
                .finish(),
        ),
    })
}

/// A span's fields as tracing-subscriber's `JsonFields` stores them: one JSON object, keys in
/// byte order (it collects them in a `BTreeMap`), a repeated key keeping its last value,
/// `r#` stripped from raw identifiers, `log.*` fields (already in the metadata) left out.
/// Unlike `JsonFields`, no `serde_json::Value` is built on the way.
#[derive(Clone, Copy, Debug, Default)]
pub struct SortedJsonFields;

/// Collects fields as (name, JSON text of the value) into one buffer.
#[derive(Default)]
struct FieldsVisitor {
    json: Vec<u8>,
    /// (name, start, end) of each value in `json`.
    fields: Vec<(&'static str, usize, usize)>,
}

impl FieldsVisitor {
    fn push(&mut self, name: &'static str, value: &(impl serde::Serialize + ?Sized)) {
        let start = self.json.len();
        // Writing plain values into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.json, value);
        self.fields.push((name, start, self.json.len()));
    }

    /// Writes `{"k":v,...}` sorted by key, the last of a repeated key winning.
    fn finish(mut self, out: &mut impl fmt::Write) -> fmt::Result {
        // Stable: of equal keys the last recorded comes last, and is the one kept.
        self.fields.sort_by(|a, b| a.0.cmp(b.0));
        let mut line = Vec::with_capacity(self.json.len() + self.fields.len() * 16 + 2);
        line.push(b'{');
        for (i, &(name, start, end)) in self.fields.iter().enumerate() {
            if self.fields.get(i + 1).is_some_and(|next| next.0 == name) {
                continue;
            }
            if line.len() > 1 {
                line.push(b',');
            }
            let _ = serde_json::to_writer(&mut line, name);
            line.push(b':');
            line.extend_from_slice(&self.json[start..end]);
        }
        line.push(b'}');
        out.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
    }
}

impl Visit for FieldsVisitor {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field.name(), &value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field.name(), &value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field.name(), &value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field.name(), &value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.push(field.name(), value);
    }
    fn record_bytes(&mut self, field: &Field, value: &[u8]) {
        self.push(field.name(), value);
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            name if name.starts_with("log.") => {}
            name => {
                let name = name.strip_prefix("r#").unwrap_or(name);
                self.push(name, &format_args!("{value:?}"));
            }
        }
    }
}

impl<'w> FormatFields<'w> for SortedJsonFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = FieldsVisitor::default();
        fields.record(&mut v);
        v.finish(&mut writer)
    }

    /// Fields recorded after the span was created (`Span::record`; the webhook's spans have
    /// all theirs at creation) are merged into the stored object, as `JsonFields` does.
    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut v = FieldsVisitor::default();
        fields.record(&mut v);
        if current.fields.is_empty() {
            return v.finish(&mut current.fields);
        }
        let mut map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&current.fields).map_err(|_| fmt::Error)?;
        for &(name, start, end) in &v.fields {
            let value = serde_json::from_slice(&v.json[start..end]).map_err(|_| fmt::Error)?;
            map.insert(name.to_owned(), value);
        }
        current.fields = serde_json::to_string(&map).map_err(|_| fmt::Error)?;
        Ok(())
    }
}

/// One JSON line per event, as tracing-subscriber's JSON format writes it with this module's
/// settings (timestamp, level, fields, target, current span; no span list, file, line or
/// thread): `{"timestamp":…,"level":…,"fields":{…},"target":…,"span":{…,"name":…}}`.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLine;

thread_local! {
    /// The line being written, reused: the fmt layer hands each event a `fmt::Write`, and
    /// serde_json writes bytes.
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// The line's timestamp as tracing-subscriber's `SystemTime` writes it (RFC 3339, UTC,
/// microseconds, truncated). humantime writes the same text with the same civil-date algorithm
/// into a stack buffer, where tracing-subscriber formats each part through `write!` (2,300
/// instructions a line, `bench/webhook/split`); humantime covers 1970 to 9999, and a clock
/// outside that range gets tracing-subscriber's own formatter (which reads the clock itself).
fn timestamp(now: std::time::SystemTime) -> Result<String, fmt::Error> {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(32);
    match now.duration_since(std::time::UNIX_EPOCH) {
        Ok(since) if since.as_secs() < 253_402_300_800 => {
            write!(out, "{}", humantime::format_rfc3339_micros(now))?;
        }
        _ => SystemTime.format_time(&mut Writer::new(&mut out))?,
    }
    Ok(out)
}

/// An event's fields in recording order, as tracing-serde's `SerdeMapVisitor` writes them.
struct EventFields<'a, 'e>(&'a Event<'e>);

impl serde::Serialize for EventFields<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct V<M: SerializeMap> {
            map: M,
            state: Result<(), M::Error>,
        }
        impl<M: SerializeMap> Visit for V<M> {
            fn record_bool(&mut self, field: &Field, value: bool) {
                if self.state.is_ok() {
                    self.state = self.map.serialize_entry(field.name(), &value);
                }
            }
            fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
                if self.state.is_ok() {
                    self.state = self.map.serialize_entry(field.name(), &format_args!("{value:?}"));
                }
            }
            fn record_u64(&mut self, field: &Field, value: u64) {
                if self.state.is_ok() {
                    self.state = self.map.serialize_entry(field.name(), &value);
                }
            }
            fn record_i64(&mut self, field: &Field, value: i64) {
                if self.state.is_ok() {
                    self.state = self.map.serialize_entry(field.name(), &value);
                }
            }
            fn record_f64(&mut self, field: &Field, value: f64) {
                if self.state.is_ok() {
                    self.state = self.map.serialize_entry(field.name(), &value);
                }
            }
            fn record_str(&mut self, field: &Field, value: &str) {
                if self.state.is_ok() {
                    self.state = self.map.serialize_entry(field.name(), &value);
                }
            }
        }
        let mut v = V {
            map: serializer.serialize_map(None)?,
            state: Ok(()),
        };
        self.0.record(&mut v);
        v.state?;
        v.map.end()
    }
}

/// A span's stored fields (an object written by [`SortedJsonFields`]) with its name added.
struct SpanFields<'a> {
    fields: &'a str,
    name: &'static str,
}

impl SpanFields<'_> {
    fn write(&self, out: &mut Vec<u8>) {
        let inner = self
            .fields
            .strip_prefix('{')
            .and_then(|f| f.strip_suffix('}'))
            .unwrap_or("");
        out.push(b'{');
        out.extend_from_slice(inner.as_bytes());
        if !inner.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"name\":");
        let _ = serde_json::to_writer(&mut *out, self.name);
        out.push(b'}');
    }
}

impl<S> FormatEvent<S, SortedJsonFields> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, SortedJsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            write_line(&mut line, ctx, event)?;
            writer.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
        })
    }
}

fn write_line<S>(
    line: &mut Vec<u8>,
    ctx: &FmtContext<'_, S, SortedJsonFields>,
    event: &Event<'_>,
) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let meta = event.metadata();
    let timestamp = timestamp(std::time::SystemTime::now())?;
    let span = event
        .parent()
        .and_then(|id| ctx.span(id))
        .or_else(|| ctx.lookup_current());
    {
        // The map is left open (no `end`): its closing brace comes after the span, which is
        // copied in from the span's stored fields rather than serialised again.
        let mut ser = serde_json::Serializer::new(&mut *line);
        let mut map = ser.serialize_map(None).map_err(|_| fmt::Error)?;
        let head = (|| {
            map.serialize_entry("timestamp", &timestamp)?;
            map.serialize_entry("level", meta.level().as_str())?;
            map.serialize_entry("fields", &EventFields(event))?;
            map.serialize_entry("target", meta.target())
        })();
        head.map_err(|_| fmt::Error)?;
    }
    if let Some(span) = &span {
        let ext = span.extensions();
        let fields = ext
            .get::<FormattedFields<SortedJsonFields>>()
            .map_or("{}", |f| f.fields.as_str());
        line.extend_from_slice(b",\"span\":");
        SpanFields {
            fields,
            name: span.metadata().name(),
        }
        .write(line);
    }
    line.extend_from_slice(b"}\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    //! [`JsonLine`] and [`SortedJsonFields`] against tracing-subscriber's own JSON format with
    //! the settings they replace: the same events, line for line, timestamps aside.
    use ps_testkit::LogCapture as Capture;

    use super::*;

    /// Events of every field type, in and out of spans, escapes and all.
    fn emit() {
        let awkward = "quote \" backslash \\ newline \n tab \t nul \u{0} é 💡 </script>";
        tracing::info!(addr = "127.0.0.1:8443", n = 3_u64, "serving admission requests");
        tracing::warn!(
            s = awkward,
            i = -42_i64,
            u = u64::MAX,
            f = 1.5_f64,
            nan = f64::NAN,
            inf = f64::INFINITY,
            b = true,
            d = ?vec!["a", "b\"c"],
            disp = %awkward,
            "message with {} and {:?}",
            "args",
            awkward
        );
        tracing::error!(bytes = &b"\x00\xffab"[..]);
        let elapsed: u64 = 187;
        let mode: Option<&str> = Some("init");
        let admission = tracing::info_span!(
            "admission",
            uid = "a1f3c5e7-0b2d-4f6a-8c9e-1b3d5f7a9c01",
            namespace = "payments",
            pod = "payments-7d4b9c8f6d-",
            outcome = "injected",
            mode,
            duration_us = elapsed,
        );
        admission.in_scope(|| {
            let list = vec!["a \"warning\"".to_owned()];
            let warnings = Some(tracing::field::debug(&list));
            tracing::info!(warnings, "injected");
            let reason = Some("ps-injector.io/secret-db: no folder");
            tracing::info!(reason, warnings = tracing::field::Empty, "denied");
        });
        let empty = tracing::info_span!("empty");
        let raw = tracing::info_span!(parent: &empty, "raw", r#type = "x", zeta = 1_i64, alpha = awkward, f = 0.1_f64);
        empty.in_scope(|| tracing::info!("in an empty span"));
        raw.in_scope(|| tracing::debug!(k = i128::MIN, "in a raw-named span"));
        tracing::info!(parent: &raw, "explicit parent");
        let recorded = tracing::info_span!("recorded", b = 1_u64, later = tracing::field::Empty, a = "x");
        recorded.record("later", "set afterwards");
        recorded.record("b", 2_u64);
        recorded.in_scope(|| tracing::info!(x = 1_i64, "after record"));
        let unrecorded = tracing::info_span!("unrecorded", later = tracing::field::Empty);
        unrecorded.record("later", 7_i64);
        unrecorded.in_scope(|| tracing::info!("recorded into an empty span"));
    }

    fn lines(subscriber: impl Subscriber + Send + Sync + 'static, capture: &Capture) -> Vec<String> {
        tracing::subscriber::with_default(subscriber, emit);
        let text = capture.text();
        text.lines().map(str::to_owned).collect()
    }

    /// The line without its timestamp's value, which differs between runs; checks its shape.
    fn untimed(line: &str) -> String {
        let rest = line
            .strip_prefix("{\"timestamp\":\"")
            .unwrap_or_else(|| panic!("no timestamp first: {line}"));
        let (ts, rest) = rest.split_once('"').unwrap();
        assert_eq!(ts.len(), "2026-12-02T18:30:07.607594Z".len(), "{line}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{line}");
        rest.to_owned()
    }

    #[test]
    fn timestamps_are_rfc3339_utc_microseconds_truncated() {
        use std::time::{Duration, UNIX_EPOCH};
        let at = |secs: u64, nanos: u32| timestamp(UNIX_EPOCH + Duration::new(secs, nanos)).unwrap();
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_399, 999_999_999), "2000-02-28T23:59:59.999999Z");
        assert_eq!(at(951_782_400, 1_000), "2000-02-29T00:00:00.000001Z");
        assert_eq!(at(951_868_800, 999), "2000-03-01T00:00:00.000000Z");
        assert_eq!(at(1_709_251_199, 123_456_789), "2024-02-29T23:59:59.123456Z");
        assert_eq!(at(1_796_220_000, 0), "2026-12-02T14:00:00.000000Z");
        assert_eq!(at(253_402_300_799, 999_999_000), "9999-12-31T23:59:59.999999Z");
        // Past humantime's range: tracing-subscriber's formatter, which reads the clock itself
        // (only ever reached with a clock that far off), rather than an error.
        assert!(at(253_402_300_800, 0).ends_with('Z'));
    }

    #[test]
    fn json_lines_are_tracing_subscribers_byte_for_byte() {
        let stock_out = Capture::default();
        let stock = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("trace"))
            .with_writer(stock_out.clone())
            .with_span_events(FmtSpan::NONE)
            .with_ansi(false)
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        let ours_out = Capture::default();
        let ours = subscriber(LogFormat::Json, "trace", ours_out.clone(), false).unwrap();
        let want = lines(stock, &stock_out);
        let got = lines(ours, &ours_out);
        assert_eq!(
            got.len(),
            want.len(),
            "ours:\n{}\nstock:\n{}",
            got.join("\n"),
            want.join("\n")
        );
        assert!(want.len() >= 9, "{want:#?}");
        for (got, want) in got.iter().zip(&want) {
            assert_eq!(untimed(got), untimed(want), "\nours:  {got}\nstock: {want}");
        }
        // The admission line as the server writes it.
        assert!(
            want.iter().any(|l| l.ends_with(
                r#""fields":{"message":"injected","warnings":"[\"a \\\"warning\\\"\"]"},"target":"ps_webhook::logging::tests","span":{"duration_us":187,"mode":"init","namespace":"payments","outcome":"injected","pod":"payments-7d4b9c8f6d-","uid":"a1f3c5e7-0b2d-4f6a-8c9e-1b3d5f7a9c01","name":"admission"}}"#
            )),
            "{want:#?}"
        );
    }
}
