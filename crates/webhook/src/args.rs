//! The command line: `serve`, `inject` and `demo`. Every flag can also be set through an
//! environment variable `PS_WEBHOOK_<FLAG>` (shown in `--help`).

use std::{
    fmt,
    io::{Read, Write},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

use crate::{
    config::Config,
    demo, inject,
    logging::{self, LogFormat},
    selfmanaged,
    server::{self, Limits, ServerConfig, TlsSource},
    tls::{self, CertResolver},
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
    Serve(Box<ServeArgs>),
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
    /// PEM certificate chain, leaf first; reloaded when the file changes. Either this and
    /// --tls-key, or --self-managed-secret.
    #[arg(
        long,
        env = "PS_WEBHOOK_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "self_managed_secret"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the certificate; reloaded when the file changes.
    #[arg(long, env = "PS_WEBHOOK_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub self_managed: SelfManagedArgs,
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

/// Self-managed certificates (`certificates.mode: selfManaged`): the webhook generates, stores,
/// publishes and rotates its own (see [`crate::selfmanaged`]). Needs Kubernetes API access: the
/// in-cluster ServiceAccount, or KUBECONFIG.
#[derive(Debug, clap::Args)]
pub struct SelfManagedArgs {
    /// Self-managed certificates: the Secret (in --namespace) holding the webhook's CA and
    /// serving certificate; created on first start. Instead of --tls-cert and --tls-key.
    #[arg(long, env = "PS_WEBHOOK_SELF_MANAGED_SECRET")]
    pub self_managed_secret: Option<String>,
    /// The MutatingWebhookConfiguration whose every entry gets the caBundle (self-managed).
    #[arg(long, env = "PS_WEBHOOK_WEBHOOK_CONFIGURATION")]
    pub webhook_configuration: Option<String>,
    /// The Lease (in --namespace) electing the replica that leads rotations (self-managed).
    #[arg(long, env = "PS_WEBHOOK_LEASE")]
    pub lease: Option<String>,
    /// Namespace of the Secret, the Lease and the Service (self-managed); default: the
    /// ServiceAccount's namespace in a pod, else the kubeconfig's.
    #[arg(long, env = "PS_WEBHOOK_NAMESPACE")]
    pub namespace: Option<String>,
    /// The Service in front of the webhook: the certificate names SVC, SVC.NAMESPACE and
    /// SVC.NAMESPACE.svc (self-managed).
    #[arg(long, env = "PS_WEBHOOK_SERVICE")]
    pub service: Option<String>,
    /// Further DNS names of the serving certificate, comma-separated or repeated (self-managed).
    #[arg(long = "dns-name", env = "PS_WEBHOOK_DNS_NAMES", value_delimiter = ',')]
    pub dns_names: Vec<String>,
    /// IP addresses of the serving certificate, comma-separated or repeated (self-managed).
    #[arg(long = "ip-address", env = "PS_WEBHOOK_IP_ADDRESSES", value_delimiter = ',')]
    pub ip_addresses: Vec<IpAddr>,
    /// Lifetime of each generated CA and serving certificate; a rotation starts at half of it.
    /// Values down to 2m exist for tests (rotation under load); keep the default in production.
    #[arg(long, env = "PS_WEBHOOK_CERT_VALIDITY", default_value = "8760h", value_parser = parse_duration)]
    pub cert_validity: Duration,
    /// This replica's name in the Lease; default: $HOSTNAME (the pod's name in Kubernetes).
    #[arg(long, env = "PS_WEBHOOK_POD_NAME")]
    pub pod_name: Option<String>,
}

impl SelfManagedArgs {
    /// The settings of self-managed certificates, once the API client tells the default
    /// namespace; `Ok(None)` when the mode is off.
    pub fn settings(&self, default_namespace: &str) -> anyhow::Result<Option<selfmanaged::Settings>> {
        let Some(secret) = self.self_managed_secret.clone() else {
            return Ok(None);
        };
        let need = |value: &Option<String>, flag: &str, what: &str| {
            value
                .clone()
                .filter(|v| !v.is_empty())
                .with_context(|| format!("--self-managed-secret needs --{flag}: {what}"))
        };
        let webhook_configuration = need(
            &self.webhook_configuration,
            "webhook-configuration",
            "the MutatingWebhookConfiguration whose caBundle the webhook keeps",
        )?;
        let lease = need(
            &self.lease,
            "lease",
            "the Lease electing the replica that rotates",
        )?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| default_namespace.to_owned());
        let names = match &self.service {
            Some(svc) => {
                selfmanaged::Names::for_service(svc, &namespace, &self.dns_names, &self.ip_addresses)
            }
            None if self.dns_names.is_empty() && self.ip_addresses.is_empty() => {
                bail!(
                    "--self-managed-secret needs --service (or --dns-name/--ip-address): the names of the serving certificate"
                )
            }
            None => selfmanaged::Names {
                dns: self.dns_names.clone(),
                ips: self.ip_addresses.clone(),
            },
        };
        let timing = selfmanaged::Timing::new(self.cert_validity)
            .map_err(|e| anyhow::anyhow!("--cert-validity: {e}"))?;
        let identity = self
            .pod_name
            .clone()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| format!("ps-webhook-{}", std::process::id()));
        Ok(Some(selfmanaged::Settings {
            namespace,
            secret,
            webhook_configuration,
            lease,
            identity,
            names,
            timing,
        }))
    }
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
            Command::Serve(args) => serve(*args),
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
        self_managed,
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
    let readiness = crate::admin::Readiness::default();
    let tls = match (tls_cert, tls_key, &self_managed.self_managed_secret) {
        (Some(cert), Some(key), None) => TlsSource::Files { cert, key },
        (None, None, Some(_)) => {
            // Until the Secret is read: a throwaway certificate nobody trusts, and not ready.
            let placeholder = tls::generate("ps-webhook placeholder", &["ps-webhook.invalid"])
                .context("cannot generate the placeholder certificate")?;
            let key = tls::certified_key_from_pem(
                placeholder.cert_pem.as_bytes(),
                placeholder.key_pem.as_bytes(),
                Path::new("placeholder"),
                Path::new("placeholder"),
            )?;
            readiness.set_trusted(false);
            TlsSource::Resolver(Arc::new(CertResolver::new(key)))
        }
        _ => bail!(
            "the serving certificate: give --tls-cert and --tls-key, or --self-managed-secret (with --webhook-configuration, --lease and --service)"
        ),
    };
    let cfg = ServerConfig {
        listen,
        admin_listen,
        tls,
        readiness,
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
        // Self-managed certificates: the API client and settings first, so a missing
        // kubeconfig or flag fails the start instead of leaving a replica that never gets ready.
        let cluster = match &self_managed.self_managed_secret {
            None => None,
            Some(_) => {
                let client = kube::Client::try_default().await.context(
                    "self-managed certificates need the Kubernetes API: no in-cluster ServiceAccount token and no usable KUBECONFIG",
                )?;
                let settings = self_managed.settings(client.default_namespace())?.context("self-managed settings")?;
                tracing::info!(
                    secret = %settings.secret,
                    namespace = %settings.namespace,
                    webhook_configuration = %settings.webhook_configuration,
                    validity = %humantime::format_duration(settings.timing.validity),
                    "self-managed certificates"
                );
                Some(selfmanaged::Cluster::new(client, settings))
            }
        };
        let server = server::spawn(cfg).await?;
        let _controller = cluster.map(|cluster| {
            let task = selfmanaged::cluster::spawn(
                cluster,
                server.resolver().clone(),
                server.metrics().clone(),
                server.readiness().clone(),
            );
            AbortOnDrop(task)
        });
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

/// Ends a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
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
        Some(p) => crate::reload::read_config(p).with_context(|| format!("configuration {}", p.display())),
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
