//! The admission server: TLS on `--listen`, the admin port beside it, reloads and shutdown.
//!
//! - **Accept loop**: `TCP_NODELAY` on every socket; the TLS handshake is bounded by
//!   [`Limits::handshake_timeout`]; then hyper HTTP/1.1 with keep-alive and a header-read
//!   timeout (which also closes keep-alive connections idle for that long).
//! - **Handshake thread** ([`HANDSHAKE_THREAD`]): every TLS handshake runs there, on its own
//!   current-thread runtime; the finished connection then moves to a connection thread
//!   ([`Movable`]). A handshake costs a key exchange and a signature, about 0.3 ms of CPU with
//!   a P-256 key (what cert-manager and selfManaged issue) and 0.9 ms with RSA 2048, where an
//!   admission costs tens of microseconds. On the connection threads, a burst of new
//!   connections (a thousand clients cut off together and reconnecting) queued its handshakes
//!   in the same run queue as the requests of established connections, and a request waited
//!   behind every ClientHello ahead of it: normal traffic's p99 went from about 2 ms to 4.8 ms
//!   next to `webhook-soak --scenario abuse`. On their own thread, the handshakes and the
//!   requests share the cores through the kernel's scheduler instead (see RELIABILITY.md).
//! - **Connection threads**: handshaken connections are handed round-robin to
//!   [`ServerConfig::workers`] threads, each running its own current-thread tokio runtime, and
//!   stay on that thread for their lifetime. Not the work-stealing scheduler: hyper's HTTP/1
//!   body channel wakes the connection's own task while it runs (the body receiver signals
//!   "want" to the dispatcher), so every request ends with the task rescheduled as a yield, and
//!   a multi-thread runtime answers each of those by waking a parked sibling worker to steal
//!   it: one futex wake and often a migration of the connection to the other core per request,
//!   which is what made the single-connection p99 tail (see `docs/webhook.md` §8).
//! - **Routes** (an axum [`Router`], [`router`], served as a tower service by the loop above,
//!   not by `axum::serve`): `POST /mutate` and `POST /` call [`admission::review`] inline (it
//!   takes microseconds, no blocking pool); `POST /warn-workloads` calls
//!   [`admission::review_workload`] (allowed, no patch, perhaps a warning). Other paths are 404;
//!   another method is 405 with `Allow: POST`. A
//!   `Content-Type` that is present and not JSON is 400 (kube-apiserver always sends
//!   `application/json`; a missing one is accepted). A body over [`Limits::max_body`] is 413
//!   without reading it, and a body not complete within [`Limits::body_timeout`] is 408.
//!   Nothing here answers 5xx.
//! - **Observability**: one `admission` span per request (uid, namespace, pod, outcome, mode,
//!   duration_us); skips at debug, injections at info, denials and invalid requests at info with
//!   the core's message (which names annotations, never values); metrics per request.
//! - **Shutdown** ([`RunningServer::trigger_shutdown`], SIGTERM/SIGINT in `serve`): `/readyz`
//!   turns 503 at once; the server keeps accepting and answering for [`ServerConfig::drain_delay`]
//!   (kube-apiserver keeps using pooled connections until endpoints converge), and every answer
//!   in that time carries `Connection: close`, so each client leaves its connection with an
//!   answer in hand and reconnects (through the Service, to another pod) instead of having an
//!   idle connection closed under a request it is sending; then it stops accepting, lets hyper
//!   finish requests in flight and close idle connections, serves the first request of a
//!   connection that has not sent one yet (see [`serve_until_drained`]), waits up to
//!   [`ServerConfig::shutdown_timeout`] for all that, and stops the admin port last.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use axum::{
    Router,
    body::Body,
    extract::Request,
    response::Response,
    routing::{MethodRouter, post},
};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::{GracefulConnection, GracefulShutdown},
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::{
    admin::{self, AdminState, Readiness},
    admission::{self, Outcome},
    config::ConfigError,
    metrics::Metrics,
    reload::{self, SharedConfig},
    tls::{self, CertResolver, TlsError},
};

/// Per-connection and per-request bounds.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest accepted request body. kube-apiserver caps objects at about 1.5 MiB in etcd, and
    /// an AdmissionReview of a CREATE carries one object.
    pub max_body: usize,
    /// Time for a client to send a complete request head; also the idle keep-alive timeout.
    pub header_read_timeout: Duration,
    /// Time to complete a TLS handshake after the TCP accept.
    pub handshake_timeout: Duration,
    /// Time to receive the whole body once the head is in.
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: 3 * 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything [`spawn`] needs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Where the serving certificate comes from.
    pub tls: TlsSource,
    /// Readiness of `/readyz`, shared with whoever else gates it (self-managed certificates hold
    /// it until the webhook configuration trusts the certificate served).
    pub readiness: Readiness,
    /// Cluster configuration file; built-in defaults when `None`.
    pub config: Option<PathBuf>,
    pub limits: Limits,
    /// How long to keep serving after the shutdown signal, with `/readyz` already 503.
    pub drain_delay: Duration,
    /// How long to wait for requests in flight once the listener is closed.
    pub shutdown_timeout: Duration,
    /// Poll interval of the certificate and configuration watchers.
    pub reload_interval: Duration,
    /// Connection threads (each a current-thread tokio runtime); at least 1.
    pub workers: usize,
}

impl ServerConfig {
    /// Defaults for everything but the addresses and the certificate files.
    pub fn new(listen: SocketAddr, admin_listen: SocketAddr, tls_cert: PathBuf, tls_key: PathBuf) -> Self {
        Self {
            listen,
            admin_listen,
            tls: TlsSource::Files {
                cert: tls_cert,
                key: tls_key,
            },
            readiness: Readiness::default(),
            config: None,
            limits: Limits::default(),
            drain_delay: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            reload_interval: reload::DEFAULT_INTERVAL,
            workers: 2,
        }
    }
}

/// The serving certificate's source.
#[derive(Clone, Debug)]
pub enum TlsSource {
    /// PEM files, reloaded when they change (`--tls-cert`, `--tls-key`).
    Files { cert: PathBuf, key: PathBuf },
    /// A resolver someone else keeps current (self-managed certificates).
    Resolver(Arc<CertResolver>),
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("serving certificate: {0}")]
    Tls(#[from] TlsError),
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot start the connection threads: {0}")]
    Workers(#[source] std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Shared by every connection of one server.
pub(crate) struct State {
    config: SharedConfig,
    metrics: Arc<Metrics>,
    limits: Limits,
    /// Set at the shutdown signal: answers carry `Connection: close` from then on.
    draining: AtomicBool,
}

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    readiness: Readiness,
    metrics: Arc<Metrics>,
    config: SharedConfig,
    resolver: Arc<CertResolver>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// The bound TLS address (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The configuration in force.
    pub fn config(&self) -> &SharedConfig {
        &self.config
    }

    /// The certificate resolver in use.
    pub fn resolver(&self) -> &Arc<CertResolver> {
        &self.resolver
    }

    /// Starts the shutdown sequence and returns at once.
    pub fn trigger_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Waits until the server has stopped (after [`Self::trigger_shutdown`]).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Triggers the shutdown sequence and waits for it to finish.
    pub async fn shutdown(self) {
        self.trigger_shutdown();
        self.wait().await;
    }
}

/// Loads configuration and certificate, binds both ports, and serves in the background on the
/// current tokio runtime. Errors out (before binding) on an unusable certificate or
/// configuration, so a bad deployment fails at start-up.
pub async fn spawn(cfg: ServerConfig) -> Result<RunningServer, ServeError> {
    let config: SharedConfig = Arc::new(ArcSwap::from_pointee(reload::load_config(cfg.config.as_deref())?));
    let resolver = match &cfg.tls {
        TlsSource::Files { cert, key } => Arc::new(CertResolver::new(tls::load_certified_key(cert, key)?)),
        TlsSource::Resolver(resolver) => resolver.clone(),
    };
    let acceptor = TlsAcceptor::from(Arc::new(tls::server_config(resolver.clone())?));
    let bind = |addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })
    };
    let admin_listener = bind(cfg.admin_listen).await?;
    let listener = bind(cfg.listen).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let admin_addr = admin_listener.local_addr().map_err(|source| ServeError::Bind {
        addr: cfg.admin_listen,
        source,
    })?;

    let metrics = Arc::new(Metrics::new());
    metrics.set_certificate_expiry(resolver.not_after());
    let readiness = cfg.readiness.clone();
    let mut watchers = Vec::new();
    if let TlsSource::Files { cert, key } = &cfg.tls {
        watchers.push(tls::watch(
            cert.clone(),
            key.clone(),
            resolver.clone(),
            metrics.clone(),
            cfg.reload_interval,
        ));
    }
    if let Some(path) = &cfg.config {
        watchers.push(reload::watch_config(
            path.clone(),
            config.clone(),
            metrics.clone(),
            cfg.reload_interval,
        ));
    }

    let (stop_workers_tx, stop_workers_rx) = watch::channel(false);
    let threads = match start_threads(cfg.workers.max(1), &stop_workers_rx) {
        Ok(t) => t,
        Err(error) => {
            for w in watchers {
                w.abort();
            }
            return Err(ServeError::Workers(error));
        }
    };
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (stop_admin_tx, stop_admin_rx) = watch::channel(false);
    let (stop_accept_tx, stop_accept_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        AdminState {
            readiness: readiness.clone(),
            metrics: metrics.clone(),
        },
        stop_admin_rx,
    ));
    let state = Arc::new(State {
        config: config.clone(),
        metrics: metrics.clone(),
        limits: cfg.limits.clone(),
        draining: AtomicBool::new(false),
    });
    let accept_task = tokio::spawn(accept_loop(
        listener,
        acceptor,
        state.clone(),
        threads,
        stop_accept_rx,
    ));
    readiness.set(true);
    tracing::info!(%addr, %admin_addr, "serving admission requests");

    let task = tokio::spawn({
        let readiness = readiness.clone();
        let (drain_delay, shutdown_timeout) = (cfg.drain_delay, cfg.shutdown_timeout);
        async move {
            let mut shutdown_rx = shutdown_rx;
            stopped(&mut shutdown_rx).await;
            readiness.set(false);
            state.draining.store(true, Ordering::SeqCst);
            tracing::info!(?drain_delay, "shutdown requested: not ready, draining");
            tokio::time::sleep(drain_delay).await;
            stop_accept_tx.send_replace(true);
            match tokio::time::timeout(shutdown_timeout, accept_task).await {
                Ok(_) => tracing::info!("connections closed"),
                Err(_) => tracing::warn!(
                    ?shutdown_timeout,
                    "connections still open at the shutdown deadline"
                ),
            }
            for w in watchers {
                w.abort();
            }
            stop_admin_tx.send_replace(true);
            let _ = admin_task.await;
            // The connection threads end their runtimes (dropping anything still open).
            stop_workers_tx.send_replace(true);
            tracing::info!("stopped");
        }
    });

    Ok(RunningServer {
        addr,
        admin_addr,
        readiness,
        metrics,
        config,
        resolver,
        shutdown: shutdown_tx,
        task,
    })
}

/// The name of the thread that runs every TLS handshake.
pub const HANDSHAKE_THREAD: &str = "ps-webhook-tls";

/// The runtimes connections are served on: handshakes on one thread, then each connection on
/// one of the workers for the rest of its life.
struct Threads {
    handshakes: tokio::runtime::Handle,
    workers: Vec<tokio::runtime::Handle>,
}

/// Starts `n` connection threads and the handshake thread, each with a current-thread runtime
/// that runs until `stop` holds `true` (or its sender is gone, so an error here stops the
/// threads already started).
fn start_threads(n: usize, stop: &watch::Receiver<bool>) -> std::io::Result<Threads> {
    let workers = (0..n)
        .map(|i| start_thread(&format!("ps-webhook-conn-{i}"), stop.clone()))
        .collect::<std::io::Result<Vec<_>>>()?;
    let handshakes = start_thread(HANDSHAKE_THREAD, stop.clone())?;
    Ok(Threads { handshakes, workers })
}

/// Starts one thread named `name` with a current-thread runtime that runs until `stop` holds
/// `true`. The runtime is built and dropped on its own thread.
fn start_thread(name: &str, mut stop: watch::Receiver<bool>) -> std::io::Result<tokio::runtime::Handle> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(error) => {
                let _ = tx.send(Err(error));
                return;
            }
        };
        let _ = tx.send(Ok(runtime.handle().clone()));
        runtime.block_on(stopped(&mut stop));
    })?;
    rx.recv()
        .map_err(|_| std::io::Error::other(format!("thread {name} exited at start")))?
}

/// Accepts until `stop`, then waits for the connections to finish gracefully. The caller
/// bounds that wait. Each connection is served on one of `workers`, round-robin.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<State>,
    threads: Threads,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = 0usize;
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.limits.header_read_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let router = router(state.clone());
    loop {
        let (tcp, peer) = tokio::select! {
            biased;
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        // Moved to the handshake thread's runtime, which registers it with its own driver.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(error) => {
                tracing::debug!(%error, "cannot hand the connection over");
                continue;
            }
        };
        // Created here, before any shutdown signal, so that the wait below counts every
        // accepted connection until its task ends.
        let watcher = graceful.watcher();
        let drained = stop.clone();
        let (acceptor, router, state, builder) =
            (acceptor.clone(), router.clone(), state.clone(), builder.clone());
        let span = tracing::debug_span!("conn", %peer);
        let worker = threads.workers[next % threads.workers.len()].clone();
        next = next.wrapping_add(1);
        let handshake_span = span.clone();
        threads.handshakes.spawn(
            async move {
                let tcp = match tokio::net::TcpStream::from_std(tcp) {
                    Ok(tcp) => Movable::Registered(tcp),
                    Err(error) => {
                        tracing::debug!(%error, "cannot register the connection");
                        return;
                    }
                };
                let mut tls =
                    match tokio::time::timeout(state.limits.handshake_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                // Off this thread's driver, onto the worker's: anything the client sent after
                // its Finished is either in the TLS session's buffers, which move with it, or
                // still in the socket, which the worker's driver reports readable at once.
                if let Err(error) = tls.get_mut().0.deregister() {
                    tracing::debug!(%error, "cannot hand the connection over");
                    return;
                }
                worker.spawn(
                    async move {
                        if let Err(error) = tls.get_mut().0.register() {
                            tracing::debug!(%error, "cannot register the connection");
                            return;
                        }
                        serve(tls, router, state, builder, drained).await;
                        drop(watcher);
                    }
                    .instrument(span),
                );
            }
            .instrument(handshake_span),
        );
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves the HTTP/1.1 connection `tls` until it ends or the drain is over (`drained`).
async fn serve(
    tls: tokio_rustls::server::TlsStream<Movable>,
    router: Router,
    state: Arc<State>,
    builder: Arc<http1::Builder>,
    drained: watch::Receiver<bool>,
) {
    let requested = Arc::new(AtomicBool::new(false));
    // The router is a tower service; hyper calls it through this adapter. Its error type is
    // Infallible: every request gets an answer.
    let service = service_fn({
        let requested = requested.clone();
        move |req: Request<Incoming>| {
            requested.store(true, Ordering::SeqCst);
            let (router, state) = (router.clone(), state.clone());
            async move {
                let mut rsp = router.oneshot(req).await?;
                if state.draining.load(Ordering::SeqCst) {
                    // hyper closes the connection after this answer.
                    rsp.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(rsp)
            }
        }
    });
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    if let Err(error) = serve_until_drained(conn, &requested, drained).await {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// A TCP connection that moves from one runtime to another: its TLS handshake runs on the
/// handshake thread, its requests on a connection thread, and each thread's runtime has its own
/// I/O driver. [`Movable::deregister`] takes it off the current driver, [`Movable::register`]
/// puts it on the driver of the runtime it is called on; in between it does no I/O.
enum Movable {
    Registered(tokio::net::TcpStream),
    Deregistered(std::net::TcpStream),
    /// Only while switching, or after a switch failed (the socket is then closed).
    Gone,
}

impl Movable {
    /// Takes the socket off the current runtime's driver (it stays non-blocking and open).
    fn deregister(&mut self) -> std::io::Result<()> {
        if let Movable::Registered(tcp) = std::mem::replace(self, Movable::Gone) {
            *self = Movable::Deregistered(tcp.into_std()?);
        }
        Ok(())
    }

    /// Registers the socket with the driver of the runtime this is called on.
    fn register(&mut self) -> std::io::Result<()> {
        if let Movable::Deregistered(tcp) = std::mem::replace(self, Movable::Gone) {
            *self = Movable::Registered(tokio::net::TcpStream::from_std(tcp)?);
        }
        Ok(())
    }

    fn registered(self: Pin<&mut Self>) -> std::io::Result<Pin<&mut tokio::net::TcpStream>> {
        match self.get_mut() {
            Movable::Registered(tcp) => Ok(Pin::new(tcp)),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                "the connection is not registered with this thread's runtime",
            )),
        }
    }
}

impl tokio::io::AsyncRead for Movable {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.registered() {
            Ok(tcp) => tcp.poll_read(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl tokio::io::AsyncWrite for Movable {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.registered() {
            Ok(tcp) => tcp.poll_write(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.registered() {
            Ok(tcp) => tcp.poll_write_vectored(cx, bufs),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Movable::Registered(tcp) => tcp.is_write_vectored(),
            _ => false,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.registered() {
            Ok(tcp) => tcp.poll_flush(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.registered() {
            Ok(tcp) => tcp.poll_shutdown(cx),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

/// Serves `conn` to its end. Once `drained` holds `true` (the drain delay is over), a connection
/// that has had a request is shut down gracefully: a request in flight is finished, an idle
/// connection is closed. One that has not had a request yet is left to run: hyper would close
/// it at once, having read nothing, under a first request the client may already have sent
/// (a connection accepted in the last moments of the drain, or still in its TLS handshake when
/// the drain ended). It ends after that request, whose answer carries `Connection: close`, or
/// at the header read timeout; the caller's shutdown timeout bounds both.
async fn serve_until_drained<C: GracefulConnection>(
    conn: C,
    requested: &AtomicBool,
    mut drained: watch::Receiver<bool>,
) -> Result<(), C::Error> {
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => return result,
        () = stopped(&mut drained) => {}
    }
    if requested.load(Ordering::SeqCst) {
        conn.as_mut().graceful_shutdown();
    }
    conn.await
}

/// Resolves once `rx` holds `true` (or its sender is gone).
pub(crate) async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    let mut rsp = Response::new(Body::from(Bytes::from_static(body.as_bytes())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

fn is_json(value: &HeaderValue) -> bool {
    let Ok(v) = value.to_str() else { return false };
    let essence = v.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// The warning-only entry for workloads (Deployments, ...) that carry the annotations on their
/// own metadata: [`admission::review_workload`].
pub const WARN_WORKLOADS_PATH: &str = "/warn-workloads";

/// Which review an entry point runs.
#[derive(Clone, Copy)]
enum Entry {
    /// `/mutate` and `/`: pods, [`admission::review`].
    Pods,
    /// [`WARN_WORKLOADS_PATH`]: [`admission::review_workload`].
    Workloads,
}

/// The admission port's routes over `state`: every entry point takes POST only.
pub(crate) fn router(state: Arc<State>) -> Router {
    let entry = |entry: Entry| -> MethodRouter {
        let state = state.clone();
        post(move |req: Request| async move { admit(req, &state, entry).await }).fallback(|| async {
            let mut rsp = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use POST\n");
            rsp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            rsp
        })
    };
    Router::new()
        .route("/mutate", entry(Entry::Pods))
        .route("/", entry(Entry::Pods))
        .route(WARN_WORKLOADS_PATH, entry(Entry::Workloads))
        .fallback(|| async {
            plain(
                StatusCode::NOT_FOUND,
                "not found: POST AdmissionReviews to /mutate (pods) or /warn-workloads (workloads)\n",
            )
        })
}

/// Answers one POST to an entry point: checks the content type and size, reads the body within
/// the limits, reviews it, logs and counts the outcome.
async fn admit(req: Request, state: &State, entry: Entry) -> Response {
    let start = Instant::now();
    let rejected = |status, body, why: &'static str| {
        tracing::info!(status = u16::from(status), "request rejected: {why}");
        state
            .metrics
            .observe_admission(Outcome::Invalid.as_str(), None, start.elapsed());
        plain(status, body)
    };
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE)
        && !is_json(ct)
    {
        return rejected(
            StatusCode::BAD_REQUEST,
            "unsupported content type: expected application/json\n",
            "content type is not JSON",
        );
    }
    let max = state.limits.max_body;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large\n",
            "declared body too large",
        );
    }
    let body = match tokio::time::timeout(
        state.limits.body_timeout,
        Limited::new(req.into_body(), max).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            return rejected(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large\n",
                "body too large",
            );
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "reading the request body failed");
            return rejected(
                StatusCode::BAD_REQUEST,
                "cannot read the request body\n",
                "body unreadable",
            );
        }
        Err(_) => {
            return rejected(
                StatusCode::REQUEST_TIMEOUT,
                "request body not received in time\n",
                "body timed out",
            );
        }
    };

    let result = match entry {
        Entry::Workloads => admission::review_workload(&body),
        Entry::Pods => admission::review(&body, &state.config.load()),
    };
    let elapsed = start.elapsed();
    let outcome = result.outcome.as_str();
    // The span is created once every field is known (recording fields one by one re-encodes
    // them). Plain skips get a debug span, which costs nothing at the default info level.
    let quiet =
        matches!(result.outcome, Outcome::Skipped | Outcome::AlreadyInjected) && result.warnings.is_empty();
    macro_rules! admission_span {
        ($level:ident) => {
            tracing::$level!(
                "admission",
                uid = result.uid.as_str(),
                namespace = result.namespace.as_str(),
                pod = result.name.as_str(),
                outcome,
                mode = result.mode,
                duration_us = elapsed.as_micros() as u64,
            )
        };
    }
    let span = if quiet {
        admission_span!(debug_span)
    } else {
        admission_span!(info_span)
    };
    let entered = span.enter();
    // One event per admission (none for quiet skips at the default level).
    let reason = result.message.as_deref();
    let warnings = (!result.warnings.is_empty()).then(|| tracing::field::debug(&result.warnings));
    match result.outcome {
        Outcome::Skipped | Outcome::AlreadyInjected if quiet => tracing::debug!("admitted unchanged"),
        Outcome::Skipped | Outcome::AlreadyInjected => tracing::info!(warnings, "admitted unchanged"),
        Outcome::Injected => tracing::info!(warnings, "injected"),
        Outcome::Denied => tracing::info!(reason, warnings, "denied"),
        Outcome::Invalid => tracing::info!(reason, "invalid admission request"),
    }
    drop(entered);
    state.metrics.observe_admission(outcome, result.mode, elapsed);

    let mut rsp = Response::new(Body::from(result.body));
    *rsp.status_mut() = StatusCode::from_u16(result.http_status).unwrap_or(StatusCode::BAD_REQUEST);
    rsp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    rsp
}

#[cfg(test)]
mod tests {
    //! The routes in process, through the router as a tower service (no socket, no TLS; the
    //! served path is covered by tests/http_server.rs).
    use base64::prelude::*;
    use serde_json::Value;

    use super::*;
    use crate::config::Config;

    const INJECT: &[u8] = include_bytes!("../../../bench/webhook/fixtures/inject.json");
    const SKIP: &[u8] = include_bytes!("../../../bench/webhook/fixtures/skip.json");
    const CONFIG: &str = "passwordSafe:\n  url: https://ps.example.com/BeyondTrust/api/public/v3\n";

    fn state(limits: Limits) -> Arc<State> {
        Arc::new(State {
            config: Arc::new(ArcSwap::from_pointee(Config::from_yaml(CONFIG).unwrap())),
            metrics: Arc::new(Metrics::new()),
            limits,
            draining: AtomicBool::new(false),
        })
    }

    /// One request through a fresh router: status, headers, body.
    async fn call(state: &Arc<State>, req: http::Request<Body>) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        let rsp = router(state.clone()).oneshot(req).await.unwrap();
        let (parts, body) = rsp.into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        (parts.status, parts.headers, body)
    }

    fn post(path: &str, content_type: Option<&str>, body: impl Into<Body>) -> http::Request<Body> {
        let mut req = http::Request::post(path);
        if let Some(ct) = content_type {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        req.body(body.into()).unwrap()
    }

    fn json(body: &[u8]) -> Value {
        serde_json::from_slice(body).unwrap()
    }

    /// A current-thread runtime on its own thread (as the server's threads are), its handle.
    fn thread_runtime(stop: watch::Receiver<bool>) -> tokio::runtime::Handle {
        start_thread("test-runtime", stop).unwrap()
    }

    /// A connection handshaken on one runtime is served on another: the bytes the client sent
    /// right behind its handshake (in the TLS session's buffer or still in the socket) are read
    /// there, and the answer gets back. Between the two, I/O fails instead of hanging.
    #[tokio::test]
    async fn a_connection_moves_from_the_handshake_runtime_to_a_worker() {
        use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
        use rustls_pki_types::{CertificateDer, pem::PemObject};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let generated = tls::generate("move test CA", &["localhost"]).unwrap();
        let key = tls::certified_key_from_pem(
            generated.cert_pem.as_bytes(),
            generated.key_pem.as_bytes(),
            std::path::Path::new("cert"),
            std::path::Path::new("key"),
        )
        .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(
            tls::server_config(Arc::new(tls::CertResolver::new(key))).unwrap(),
        ));
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(generated.ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let client_config = ClientConfig::builder_with_provider(tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));

        let (_stop_tx, stop_rx) = watch::channel(false);
        let (handshakes, worker) = (thread_runtime(stop_rx.clone()), thread_runtime(stop_rx));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();

        // Each request on its own connection: written at once behind the handshake, in one piece
        // and in two.
        for split in [None, Some(7)] {
            let client = tokio::spawn({
                let connector = connector.clone();
                async move {
                    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                    let mut tls = connector
                        .connect(ServerName::try_from("localhost").unwrap(), tcp)
                        .await
                        .unwrap();
                    let request = b"ping from the client";
                    match split {
                        None => tls.write_all(request).await.unwrap(),
                        Some(n) => {
                            tls.write_all(&request[..n]).await.unwrap();
                            tls.flush().await.unwrap();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            tls.write_all(&request[n..]).await.unwrap();
                        }
                    }
                    tls.flush().await.unwrap();
                    let mut answer = Vec::new();
                    tls.read_to_end(&mut answer).await.unwrap();
                    answer
                }
            });
            // Accepted here, registered there: as the accept loop hands sockets over.
            let tcp = listener.accept().await.unwrap().0.into_std().unwrap();
            let (acceptor, worker) = (acceptor.clone(), worker.clone());
            let served = handshakes
                .spawn(async move {
                    let tcp = Movable::Registered(tokio::net::TcpStream::from_std(tcp).unwrap());
                    let mut tls = acceptor.accept(tcp).await.unwrap();
                    tls.get_mut().0.deregister().unwrap();
                    // Deregistered: the socket does no I/O, and says so rather than hang.
                    let mut byte = [0u8; 1];
                    let error = tls.get_mut().0.read(&mut byte).await.unwrap_err();
                    assert_eq!(error.kind(), std::io::ErrorKind::NotConnected);
                    let error = tls.get_mut().0.write(b"x").await.unwrap_err();
                    assert_eq!(error.kind(), std::io::ErrorKind::NotConnected);
                    worker
                        .spawn(async move {
                            tls.get_mut().0.register().unwrap();
                            let mut request = vec![0u8; b"ping from the client".len()];
                            tls.read_exact(&mut request).await.unwrap();
                            assert_eq!(request, b"ping from the client");
                            tls.write_all(b"pong").await.unwrap();
                            tls.shutdown().await.unwrap();
                            std::thread::current().name().map(str::to_owned)
                        })
                        .await
                        .unwrap()
                })
                .await
                .unwrap();
            assert_eq!(served.as_deref(), Some("test-runtime"));
            assert_eq!(client.await.unwrap(), b"pong", "split {split:?}");
        }
    }

    #[tokio::test]
    async fn entry_points_review_pods_and_workloads() {
        let s = state(Limits::default());
        // Both pod entry points, with the apiserver's timeout query, inject.
        for path in ["/mutate", "/", "/mutate?timeout=10s"] {
            let (status, headers, body) = call(&s, post(path, Some("application/json"), INJECT)).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            let rsp = json(&body);
            assert_eq!(rsp["response"]["allowed"], true, "{rsp}");
            let patch = BASE64_STANDARD
                .decode(rsp["response"]["patch"].as_str().unwrap())
                .unwrap();
            assert!(json(&patch).as_array().is_some_and(|ops| !ops.is_empty()));
        }
        // No content type is accepted (kube-apiserver always sends one).
        let (status, _, body) = call(&s, post("/mutate", None, SKIP)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(json(&body)["response"].get("patch").is_none());
        assert_eq!(s.metrics.admissions("injected", Some("init")), 3);
        assert_eq!(s.metrics.admissions("skipped", None), 1);

        // The workload entry never patches a pod review's object.
        let (status, _, body) = call(&s, post(WARN_WORKLOADS_PATH, Some("application/json"), INJECT)).await;
        assert_eq!(status, StatusCode::OK);
        let rsp = json(&body);
        assert_eq!(rsp["response"]["allowed"], true, "{rsp}");
        assert!(rsp["response"].get("patch").is_none(), "{rsp}");
    }

    #[tokio::test]
    async fn wrong_paths_methods_and_bodies_are_4xx_with_a_reason() {
        let s = state(Limits {
            max_body: 4096,
            ..Limits::default()
        });
        let (status, _, body) = call(&s, post("/validate", Some("application/json"), "{}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(
            String::from_utf8(body)
                .unwrap()
                .contains("POST AdmissionReviews to /mutate")
        );

        for path in ["/mutate", "/", WARN_WORKLOADS_PATH] {
            for method in [http::Method::GET, http::Method::PUT, http::Method::HEAD] {
                let req = http::Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .body(Body::empty())
                    .unwrap();
                let (status, headers, _) = call(&s, req).await;
                assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                assert_eq!(headers[header::ALLOW], "POST", "{method} {path}");
            }
        }

        let (status, _, body) = call(&s, post("/mutate", Some("text/plain"), SKIP)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, b"unsupported content type: expected application/json\n");

        // Declared too large: refused without reading; undeclared (a stream): cut at the limit.
        let big = vec![b' '; 5000];
        let (status, _, _) = call(&s, post("/mutate", Some("application/json"), big.clone())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        let chunks = futures_util::stream::iter(
            big.chunks(1000)
                .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        );
        let (status, _, _) = call(
            &s,
            post("/mutate", Some("application/json"), Body::from_stream(chunks)),
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(s.metrics.admissions("invalid", None), 3);
    }

    #[tokio::test]
    async fn malformed_reviews_are_answered_never_5xx_and_the_uid_is_echoed() {
        let s = state(Limits::default());
        // A review that is JSON but unusable: allowed false, the uid echoed.
        let (status, _, body) = call(
            &s,
            post("/mutate", Some("application/json"), r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-1","kind":7}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let rsp = json(&body);
        assert_eq!(rsp["response"]["uid"], "u-1", "{rsp}");
        assert_eq!(rsp["response"]["allowed"], false, "{rsp}");

        // Anything else, cut and mangled: an answer below 500 every time.
        let mut inputs: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"nope".to_vec(),
            b"{".to_vec(),
            b"[]".to_vec(),
            vec![0xff; 64],
        ];
        inputs.extend((0..INJECT.len()).step_by(97).map(|n| INJECT[..n].to_vec()));
        for input in inputs {
            for path in ["/mutate", WARN_WORKLOADS_PATH] {
                let (status, _, _) = call(&s, post(path, Some("application/json"), input.clone())).await;
                assert!(
                    status.as_u16() < 500,
                    "{status} for {path} {:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }
}
