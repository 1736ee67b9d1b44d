//! `ps-emulator`: an emulator of the BeyondTrust Password Safe public REST API v3, for tests,
//! benchmarks and the demo. Never for production.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ps_emulator::Error> {
//! let seed = ps_emulator::Seed::from_file("seed.yaml")?;
//! let emu = ps_emulator::start(seed, ps_emulator::Options::default()).await?;
//! println!("{} (trust {} bytes of CA PEM)", emu.base_url(), emu.ca_pem().len());
//! emu.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! The served API, the seed format and the operator endpoints are described in
//! `docs/emulator.md`; the stable surface other crates rely on in `docs/emulator-contract.md`.

mod api;
mod limits;
mod operator;
mod routes;
mod seed;
mod server;
mod state;
#[cfg(feature = "testing")]
pub mod testing;
mod traffic;
mod util;

use std::{io::Write as _, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

pub use api::{ACCOUNT_NOT_FOUND, AUTH_FAILED, NOT_SIGNED_IN, SESSION_COOKIE};
pub use limits::LimitConfig;
pub use routes::Route;
pub use seed::{Problem, Seed, SeedError};

/// The API base path (the current prefix; the legacy `/eEye.RetinaCS.Server/api/public/v3` is
/// served too).
pub const API_PREFIX: &str = "/BeyondTrust/api/public/v3";
/// The legacy API base path of releases before 6.2.0.
pub const LEGACY_API_PREFIX: &str = "/eEye.RetinaCS.Server/api/public/v3";
/// The marker of the test suite's secret canaries (crates/testkit/canaries.txt): with
/// [`Options::canaries`], every session cookie, OAuth access token and rotated password this
/// emulator mints starts `PSCANARY-<kind>-`, so that `scripts/canary-check` finds one that reaches
/// a log.
pub const CANARY_MARKER: &str = "PSCANARY";
/// The real server's idle session lifetime.
pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(20 * 60);

/// Errors of the emulator library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error("cannot generate certificates: {0}")]
    CertGen(#[source] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid option: {0}")]
    Option(String),
}

/// The serving certificate.
#[derive(Debug, Clone, Default)]
pub enum Tls {
    /// Generate a CA and a serving certificate for 127.0.0.1, ::1 and localhost (ECDSA P-256).
    #[default]
    Generate,
    /// Use this PEM certificate chain and PEM private key.
    Pem { cert: String, key: String },
}

/// How to run the emulator.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address to listen on; port 0 picks a free port. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    pub tls: Tls,
    /// When set, SignAppIn requires a client certificate signed by this CA (PEM).
    pub client_ca_pem: Option<String>,
    /// A session without calls for this long is closed. Default 20 minutes.
    pub session_idle: Duration,
    /// Separator between folder names in `FolderPath` of responses. Default `\` (as the real
    /// server appears to write it; clients must accept `/` too).
    pub folder_path_separator: String,
    /// Appliance-like limits (concurrent calls, rate); all off by default. Changeable later
    /// through `POST /_emulator/faults`.
    pub limits: LimitConfig,
    /// Minted secrets carry a canary: session cookies `PSCANARY-session-…`, OAuth access tokens
    /// with `PSCANARY-oauth-token-…` as their signature segment, rotated passwords
    /// `PSCANARY-rotated-pw-…` ([`CANARY_MARKER`]). On by default: the emulator serves tests,
    /// and every test run is then a canary run. Request IDs are numbers and not secret.
    pub canaries: bool,
    /// Offer only `http/1.1` in ALPN, as a server behind an HTTP/1.1-only proxy would. By
    /// default `h2` is offered first, as IIS does, and a client that picks it gets HTTP/2.
    pub http1_only: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tls: Tls::Generate,
            client_ca_pem: None,
            session_idle: DEFAULT_SESSION_IDLE,
            folder_path_separator: "\\".into(),
            limits: LimitConfig::default(),
            canaries: true,
            http1_only: false,
        }
    }
}

/// A running emulator. Dropping it stops the server too; [`Emulator::shutdown`] also waits.
pub struct Emulator {
    addr: SocketAddr,
    origin: String,
    base_url: String,
    ca_pem: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Emulator {
    /// The bound address (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:PORT`.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `https://127.0.0.1:PORT/BeyondTrust/api/public/v3`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// PEM of the CA that signed the serving certificate (with `Tls::Pem`, the given chain).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Stops accepting, closes every connection and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the emulator on a tokio runtime and returns once it is listening.
pub async fn start(seed: Seed, opts: Options) -> Result<Emulator, Error> {
    if opts.folder_path_separator.is_empty() {
        return Err(Error::Option("folder_path_separator must not be empty".into()));
    }
    if opts.session_idle.is_zero() {
        return Err(Error::Option("session_idle must be positive".into()));
    }
    let material = match &opts.tls {
        Tls::Generate => server::generate_tls()?,
        Tls::Pem { cert, key } => server::load_tls(cert, key)?,
    };
    let config = server::server_config(&material, opts.client_ca_pem.as_deref(), opts.http1_only)?;
    let shared = Arc::new(state::Shared::new(&seed, &opts));
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| Error::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(server::serve(
        listener,
        TlsAcceptor::from(Arc::new(config)),
        shared,
        stopped,
    ));
    let origin = format!("https://{addr}");
    Ok(Emulator {
        addr,
        base_url: format!("{origin}{API_PREFIX}"),
        origin,
        ca_pem: material.trust_pem,
        stop: Some(stop),
        task: Some(task),
    })
}

/// Command line of the `ps-emulator` binary.
#[derive(Debug, clap::Parser)]
#[command(
    name = "ps-emulator",
    version,
    about = "Emulator of the BeyondTrust Password Safe REST API v3 (tests only)"
)]
pub struct Cli {
    /// Address to listen on (HTTPS); port 0 picks a free port.
    #[arg(long, env = "PS_EMULATOR_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Seed file (YAML): users, API keys, OAuth clients, safes, managed accounts.
    #[arg(long, env = "PS_EMULATOR_DATA")]
    pub data: PathBuf,
    /// PEM certificate chain to serve (with --tls-key). Without it a CA and a certificate are generated.
    #[arg(
        long,
        env = "PS_EMULATOR_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "ca_out"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "PS_EMULATOR_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Where to write the PEM of the generated CA.
    #[arg(long, env = "PS_EMULATOR_CA_OUT")]
    pub ca_out: Option<PathBuf>,
    /// Require, at SignAppIn, a client certificate signed by this CA (PEM).
    #[arg(long, env = "PS_EMULATOR_CLIENT_CA")]
    pub client_ca: Option<PathBuf>,
    /// Seconds without calls after which a session is closed.
    #[arg(long, env = "PS_EMULATOR_SESSION_IDLE_SECONDS", default_value_t = 1200)]
    pub session_idle_seconds: u64,
    /// Separator between folder names in the `FolderPath` field of responses.
    #[arg(long, env = "PS_EMULATOR_FOLDER_PATH_SEPARATOR", default_value = "\\")]
    pub folder_path_separator: String,
    /// API calls served at once; one more is answered 503 with Retry-After (0: no limit).
    #[arg(long, env = "PS_EMULATOR_MAX_CONCURRENT", default_value_t = 0)]
    pub max_concurrent: u32,
    /// API calls admitted per second; beyond it 429 with Retry-After (0: no limit).
    #[arg(long, env = "PS_EMULATOR_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,
    /// Calls admitted at once after an idle period (0: the rate limit).
    #[arg(long, env = "PS_EMULATOR_RATE_BURST", default_value_t = 0)]
    pub rate_burst: u32,
    /// Retry-After of a 429 or 503 from the limits, in seconds (0: 1).
    #[arg(long, env = "PS_EMULATOR_RETRY_AFTER_SECONDS", default_value_t = 1)]
    pub retry_after_seconds: u32,
    /// Mint session cookies, OAuth tokens and rotated passwords without the `PSCANARY-` canary
    /// the test suite looks for in its logs.
    #[arg(long, env = "PS_EMULATOR_NO_CANARIES")]
    pub no_canaries: bool,
    /// Serve HTTP/1.1 only (ALPN `http/1.1`), as behind an HTTP/1.1-only proxy. Without it,
    /// ALPN offers `h2` and `http/1.1` and the client chooses.
    #[arg(long, env = "PS_EMULATOR_HTTP1_ONLY")]
    pub http1_only: bool,
}

fn read_file(path: &PathBuf) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.clone(),
        source,
    })
}

/// Runs the binary: validates everything, starts, prints `listening on https://ADDR` as the first
/// line on stdout, and serves until SIGINT or SIGTERM.
pub async fn run(cli: Cli) -> Result<(), Error> {
    let seed = Seed::from_file(&cli.data)?;
    let tls = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => Tls::Pem {
            cert: read_file(cert)?,
            key: read_file(key)?,
        },
        _ => Tls::Generate,
    };
    let client_ca_pem = cli.client_ca.as_ref().map(read_file).transpose()?;
    let opts = Options {
        listen: cli.listen,
        tls,
        client_ca_pem,
        session_idle: Duration::from_secs(cli.session_idle_seconds),
        folder_path_separator: cli.folder_path_separator.clone(),
        limits: LimitConfig {
            max_concurrent: cli.max_concurrent,
            rate_per_second: cli.rate_limit,
            burst: cli.rate_burst,
            retry_after_seconds: cli.retry_after_seconds,
        },
        canaries: !cli.no_canaries,
        http1_only: cli.http1_only,
    };
    let emu = start(seed, opts).await?;
    if let Some(path) = &cli.ca_out {
        std::fs::write(path, emu.ca_pem()).map_err(|source| Error::WriteFile {
            path: path.clone(),
            source,
        })?;
    } else if cli.tls_cert.is_none() {
        tracing::warn!("no --ca-out given: clients cannot verify the generated certificate");
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {}", emu.origin())?;
        out.flush()?;
    }
    wait_for_signal().await?;
    emu.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> Result<(), Error> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}
