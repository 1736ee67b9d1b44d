//! Log output: `tracing` events to stderr, as plain text or one JSON object per line.
//!
//! The filter comes from `PS_WEBHOOK_LOG` (an `EnvFilter` directive such as `info` or
//! `ps_webhook=debug,warn`). Admissions are logged inside an `admission` span carrying `uid`,
//! `namespace`, `pod`, `outcome`, `mode` and `duration_us`; the JSON format prints those span
//! fields with every event. Nothing logged ever carries a secret value: the webhook handles
//! references only, and request bodies are never logged.

use std::{fmt, io::IsTerminal, str::FromStr};

use tracing_subscriber::{
    EnvFilter,
    fmt::{MakeWriter, format::FmtSpan},
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
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .finish(),
        ),
    })
}
