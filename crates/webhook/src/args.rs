//! The command line: `serve`, `inject` and `demo`. Every flag can also be set through an
//! environment variable `PS_WEBHOOK_<FLAG>` (shown in `--help`).

use std::{
    fmt,
    io::{Read, Write},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::ExitCode,
    str::FromStr,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::{
    config::Config,
    demo, inject,
    logging::{self, LogFormat},
    server::{self, Limits, ServerConfig},
};

#[derive(Debug, Parser)]
#[command(
    name = "ps-webhook",
    version,
    about = "Password Safe secrets injector for Kubernetes pods"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the mutating admission webhook over TLS, with an admin port for probes and metrics.
    Serve(ServeArgs),
    /// Inject into manifests offline (GitOps, CI): YAML in, mutated YAML out.
    Inject(InjectArgs),
    /// Run the whole flow on this machine without a cluster: emulator, webhook, agent.
    Demo(demo::DemoArgs),
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address of the TLS admission endpoint.
    #[arg(long, env = "PS_WEBHOOK_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first; reloaded when the file changes.
    #[arg(long, env = "PS_WEBHOOK_TLS_CERT")]
    pub tls_cert: PathBuf,
    /// PEM private key of the certificate; reloaded when the file changes.
    #[arg(long, env = "PS_WEBHOOK_TLS_KEY")]
    pub tls_key: PathBuf,
    /// Address of the plain-HTTP admin port (/livez, /readyz, /metrics).
    #[arg(long, env = "PS_WEBHOOK_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
    /// Cluster configuration (YAML); built-in defaults without it. Reloaded when it changes.
    #[arg(long, env = "PS_WEBHOOK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log line format; the filter comes from PS_WEBHOOK_LOG (default info).
    #[arg(long, env = "PS_WEBHOOK_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// After SIGTERM: how long to keep serving with /readyz at 503 before closing the listener.
    #[arg(long, env = "PS_WEBHOOK_DRAIN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub drain_delay: Duration,
    /// After the drain delay: how long requests in flight may take before the process exits.
    #[arg(long, env = "PS_WEBHOOK_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Largest request body accepted (bytes, or with KiB/MiB); larger ones get 413.
    #[arg(long, env = "PS_WEBHOOK_MAX_BODY", default_value = "3MiB")]
    pub max_body: ByteSize,
    /// Time allowed to send a request head; also how long an idle keep-alive connection stays.
    #[arg(long, env = "PS_WEBHOOK_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Time allowed for the TLS handshake, and for the body once the head is in.
    #[arg(long, env = "PS_WEBHOOK_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// How often the certificate, key and configuration files are checked for changes.
    #[arg(long, env = "PS_WEBHOOK_RELOAD_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub reload_interval: Duration,
    /// Connection threads, each running its own tokio runtime (connections stay on one thread).
    #[arg(long, env = "PS_WEBHOOK_WORKER_THREADS", default_value_t = 2)]
    pub worker_threads: usize,
}

#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// Manifests to read (multi-document YAML), or - for standard input.
    #[arg(short = 'f', long = "filename", env = "PS_WEBHOOK_INJECT_FILE")]
    pub file: String,
    /// Cluster configuration (YAML); built-in defaults without it.
    #[arg(long, env = "PS_WEBHOOK_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print only a unified diff of the injection instead of the mutated manifests; exits 1
    /// when something would be injected, 0 when nothing would (like `diff`, `kubectl diff`).
    #[arg(long, env = "PS_WEBHOOK_INJECT_DIFF")]
    pub diff: bool,
    /// Namespace to assume for documents that name none (policy is per namespace).
    #[arg(short = 'n', long, env = "PS_WEBHOOK_INJECT_NAMESPACE")]
    pub namespace: Option<String>,
}

/// A byte count: `1048576`, `512KiB`, `3MiB`, `1GiB` (also `KB`/`MB`/`GB`, powers of 1000).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{s:?} is not a size like 3MiB or 1048576"))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "Ki" => 1 << 10,
            "MiB" | "Mi" => 1 << 20,
            "GiB" | "Gi" => 1 << 30,
            "KB" | "kB" | "K" | "k" => 1_000,
            "MB" | "M" => 1_000_000,
            "GB" | "G" => 1_000_000_000,
            other => return Err(format!("unknown size unit {other:?}: use B, KiB, MiB or GiB")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B", self.0)
    }
}

/// `5s`, `250ms`, `1m30s` (humantime).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 5s or 250ms: {e}"))
}

impl Args {
    /// Runs the chosen subcommand; the exit code tells the outcome.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self.command {
            Command::Serve(args) => serve(args),
            Command::Inject(args) => run_inject(args),
            Command::Demo(args) => demo::run(args),
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let ServeArgs {
        listen,
        tls_cert,
        tls_key,
        admin_listen,
        config,
        log_format,
        drain_delay,
        shutdown_timeout,
        max_body,
        header_read_timeout,
        request_timeout,
        reload_interval,
        worker_threads,
    } = args;
    logging::init(log_format, "info")?;
    let max_body = usize::try_from(max_body.0).context("--max-body is too large for this platform")?;
    if worker_threads == 0 {
        bail!("--worker-threads must be at least 1");
    }
    let cfg = ServerConfig {
        listen,
        admin_listen,
        tls_cert,
        tls_key,
        config,
        limits: Limits {
            max_body,
            header_read_timeout,
            handshake_timeout: request_timeout,
            body_timeout: request_timeout,
        },
        drain_delay,
        shutdown_timeout,
        reload_interval,
        workers: worker_threads,
    };
    // Signals, the accept loop, the admin port and the reload pollers run on the main thread;
    // admissions on the server's connection threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = server::spawn(cfg).await?;
        let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot listen for SIGTERM")?;
        tokio::select! {
            _ = sigterm.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
        }
        server.trigger_shutdown();
        // A second signal skips the drain.
        tokio::select! {
            _ = server.wait() => Ok(ExitCode::SUCCESS),
            _ = sigterm.recv() => {
                tracing::warn!("second signal: exiting without draining");
                Ok(ExitCode::from(1))
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::warn!("second signal: exiting without draining");
                Ok(ExitCode::from(1))
            }
        }
    })
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read manifests from standard input")?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))
    }
}

fn load_config(path: Option<&Path>) -> anyhow::Result<Config> {
    match path {
        Some(p) => Config::from_file(p).with_context(|| format!("configuration {}", p.display())),
        None => Ok(Config::default()),
    }
}

fn run_inject(args: InjectArgs) -> anyhow::Result<ExitCode> {
    let InjectArgs {
        file,
        config,
        diff,
        namespace,
    } = args;
    let config = load_config(config.as_deref())?;
    let input = read_input(&file)?;
    let name = if file == "-" {
        "(standard input)"
    } else {
        file.as_str()
    };
    let code = inject_io(
        &input,
        name,
        &config,
        diff,
        namespace.as_deref(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
    .context("cannot write the output")?;
    Ok(ExitCode::from(code))
}

/// `ps-webhook inject` on text already read from `name`: the mutated manifests (or, with
/// `diff`, the diff) to `out`, warnings and the error message (`name:LINE:COLUMN: ...`) to
/// `err`. Returns the exit code. Without `diff`: 0, or 1 when the core refuses the input (with
/// the message the webhook would give). With `diff`, as `diff` and `kubectl diff` do: 0 when
/// nothing would be injected, 1 when something would, 2 on an error.
pub fn inject_io(
    input: &str,
    name: &str,
    config: &Config,
    diff: bool,
    namespace: Option<&str>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> std::io::Result<u8> {
    let injected = match inject::inject_manifests(input, config, namespace) {
        Ok(injected) => injected,
        Err(error) => {
            writeln!(err, "ps-webhook inject: {}", error.located(name))?;
            return Ok(if diff { 2 } else { 1 });
        }
    };
    for warning in &injected.warnings {
        writeln!(err, "warning: {warning}")?;
    }
    let code = if diff {
        out.write_all(injected.diff(name, &format!("{name} (injected)")).as_bytes())?;
        u8::from(injected.changed > 0)
    } else {
        out.write_all(injected.output.as_bytes())?;
        0
    };
    out.flush()?;
    Ok(code)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Args::command().debug_assert();
    }

    const DEPLOYMENT: &str = include_str!("../../../examples/demo/deployment.yaml");

    fn inject(input: &str, diff: bool) -> (u8, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = inject_io(
            input,
            "app.yaml",
            &Config::default(),
            diff,
            None,
            &mut out,
            &mut err,
        )
        .unwrap();
        (
            code,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn inject_prints_manifests_and_warnings() {
        let (code, out, err) = inject(DEPLOYMENT, false);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("ps-injector.io/status"), "{out}");
        assert!(out.contains("kind: Deployment"), "{out}");
        // The built-in configuration has no Password Safe URL: warned about, on stderr.
        assert!(err.lines().all(|l| l.starts_with("warning: ")), "{err}");
        assert!(err.contains("passwordSafe.url"), "{err}");
    }

    #[test]
    fn inject_diff_shows_only_the_change() {
        let (code, out, _) = inject(DEPLOYMENT, true);
        assert_eq!(code, 1, "differences: exit 1, like diff");
        assert!(
            out.starts_with("--- app.yaml\n+++ app.yaml (injected)\n@@ "),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with('+') && l.contains("ps-injector.io/status")),
            "{out}"
        );
    }

    #[test]
    fn inject_diff_leaves_out_restyling() {
        // The serialiser re-quotes and unfolds flow mappings; none of that is part of the change.
        let input = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {ps-injector.io/inject: \"true\", \
                     ps-injector.io/secret-db: \"a/b\", note: \"*/5 * * * *\"}\nspec:\n  securityContext: {runAsUser: 1000}\n  \
                     containers: [{name: app, image: \"busybox\"}]\n";
        let (code, out, err) = inject(input, true);
        assert_eq!(code, 1, "{err}");
        let removed: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with('-') && !l.starts_with("---"))
            .collect();
        assert!(removed.is_empty(), "only additions expected: {removed:?}\n{out}");
        assert!(out.lines().any(|l| l.starts_with('+')), "{out}");
    }

    #[test]
    fn inject_refusal_exits_1_with_the_message() {
        let bad = DEPLOYMENT.replace("payments/stripe/api-key", "no-folder");
        let (code, out, err) = inject(&bad, false);
        assert_eq!(code, 1);
        assert!(out.is_empty(), "{out}");
        assert!(err.starts_with("ps-webhook inject: app.yaml:"), "{err}");
        assert!(err.contains("ps-injector.io/secret-stripe-key"), "{err}");
        // With --diff an error is 2 (1 means "differences").
        assert_eq!(inject(&bad, true).0, 2);
    }

    #[test]
    fn inject_diff_of_nothing_exits_0() {
        let (code, out, err) = inject("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", true);
        assert_eq!((code, out.as_str()), (0, ""), "{err}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!("3MiB".parse::<ByteSize>(), Ok(ByteSize(3 << 20)));
        assert_eq!("512KiB".parse::<ByteSize>(), Ok(ByteSize(512 << 10)));
        assert_eq!("1000".parse::<ByteSize>(), Ok(ByteSize(1000)));
        assert_eq!("2MB".parse::<ByteSize>(), Ok(ByteSize(2_000_000)));
        assert!("3 parsecs".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn every_serve_flag_has_an_env_var() {
        let cmd = Args::command();
        for sub in cmd.get_subcommands() {
            for arg in sub.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let env = arg
                    .get_env()
                    .unwrap_or_else(|| panic!("{} --{id} has no env var", sub.get_name()));
                assert!(env.to_string_lossy().starts_with("PS_WEBHOOK_"), "{env:?}");
            }
        }
    }
}
