//! `ps-agent`: runs in every injected pod. Signs in to Password Safe, fetches every reference
//! concurrently over one session, renders and writes the outputs atomically (one generation,
//! switched in with one rename), signs out, and fails closed. Modes: `fetch` (one shot),
//! `watch` (refresh loop), `exec` (env delivery), `copy-self`, `ready`.
//!
//! See `docs/agent.md` for configuration, formats, exit codes and every message.

pub mod config;
pub mod exec;
pub mod generation;
pub mod log;
pub mod notify;
pub mod paths;
pub mod pkcs12;
pub mod render;
pub mod run;
pub mod value;
pub mod writer;

use std::{ffi::OsString, path::PathBuf, time::Duration};

use clap::{Parser, Subcommand};
use inject_api::{env as vars, layout};

/// Exit codes.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// A required output failed (fetch), or a command failed at run time.
    pub const FAILED: u8 = 1;
    /// Invalid configuration or usage.
    pub const CONFIG: u8 = 2;
    /// `exec`: the command cannot be executed (permission, not a program).
    pub const EXEC_NOT_EXECUTABLE: u8 = 126;
    /// `exec`: the command was not found.
    pub const EXEC_NOT_FOUND: u8 = 127;
}

/// Command line. Every flag has an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "ps-agent",
    version,
    about = "Password Safe secrets into the pod: fetch, watch, exec"
)]
pub struct Cli {
    /// Total time one Password Safe call may take, retries included (seconds).
    #[arg(long, env = "PS_RETRY_BUDGET_SECONDS", default_value_t = 60, global = true)]
    pub retry_budget_seconds: u64,
    /// Timeout of one HTTP attempt (seconds).
    #[arg(long, env = "PS_REQUEST_TIMEOUT_SECONDS", default_value_t = 30, global = true)]
    pub request_timeout_seconds: u64,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch once and write every output; exit 0 only if every required output was written.
    Fetch,
    /// Fetch, write, then refresh every interval; exit 0 on SIGTERM.
    Watch,
    /// Set the env data written by fetch/watch in the environment and exec CMD.
    Exec {
        /// The env file (default: <root>/..data/.ps-env).
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// The output root (default: PS_AGENT_ROOT, else the directory holding .ps-bin/ps-agent
        /// when run from there, else /ps/secrets).
        #[arg(long)]
        root: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<OsString>,
    },
    /// Copy this binary to DIR/ps-agent (mode 0555), atomically.
    CopySelf {
        /// Target directory (created if missing).
        dir: PathBuf,
    },
    /// Exit 0 if the ready file exists (a startup probe).
    Ready {
        /// The output root.
        #[arg(long, env = "PS_AGENT_ROOT", default_value = layout::DEFAULT_MOUNT_PATH)]
        root: PathBuf,
    },
}

/// A failure, with its exit code. Already logged when returned from [`run`].
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// A run-time failure, logged by [`run`].
    #[error("{0}")]
    Failed(String),
    /// A run whose failures were already reported line by line (fetch).
    #[error("{0}")]
    Reported(String),
    #[error("{message}")]
    Exec { message: String, code: u8 },
}

impl AgentError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Config(_) => exit::CONFIG,
            AgentError::Failed(_) | AgentError::Reported(_) => exit::FAILED,
            AgentError::Exec { code, .. } => *code,
        }
    }
}

fn init_logging() {
    let format = log::LogFormat::from_env_value(std::env::var(vars::LOG_FORMAT).ok().as_deref());
    let level = log::level_from_env_value(std::env::var("PS_LOG_LEVEL").ok().as_deref());
    log::init(format, level);
}

/// Runs the command line. Errors are logged here; the caller maps them to exit codes.
pub fn run(cli: Cli) -> Result<(), AgentError> {
    init_logging();
    let result = dispatch(cli);
    if let Err(e) = &result {
        match e {
            // Already reported line by line.
            AgentError::Reported(_) => {}
            e => tracing::error!("{e}"),
        }
    }
    result
}

fn dispatch(cli: Cli) -> Result<(), AgentError> {
    let tuning = config::Tuning {
        retry_budget: Duration::from_secs(cli.retry_budget_seconds),
        request_timeout: Duration::from_secs(cli.request_timeout_seconds.max(1)),
    };
    match cli.command {
        Some(Command::Exec {
            env_file,
            root,
            command,
        }) => exec::exec(env_file, root, command),
        Some(Command::CopySelf { dir }) => exec::copy_self(&dir),
        Some(Command::Ready { root }) => exec::ready(&root),
        Some(Command::Fetch) => with_settings(&tuning, run::fetch),
        Some(Command::Watch) => with_settings(&tuning, run::watch),
        None => with_settings(&tuning, |s| match s.default_mode {
            config::DefaultMode::Fetch => run::fetch(s),
            config::DefaultMode::Watch => run::watch(s),
        }),
    }
}

fn with_settings(
    tuning: &config::Tuning,
    f: impl FnOnce(config::Settings) -> Result<(), AgentError>,
) -> Result<(), AgentError> {
    let settings = config::load(&config::ProcessEnv, tuning)?;
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    f(settings)
}
