//! The admin port: plain HTTP/1.1 for the kubelet's probes and Prometheus.
//!
//! - `GET /livez`: 200 while the process runs.
//! - `GET /readyz`: 200 once the serving certificate is loaded and the TLS listener is bound
//!   (with self-managed certificates: and the webhook configuration's `caBundle` trusts it);
//!   503 from the first shutdown signal on, so endpoints drop the pod while it drains.
//! - `GET /metrics`: OpenMetrics text (see [`crate::metrics`]).
//!
//! Anything else is 404; a known path with another method than GET or HEAD is 405.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::watch};

use crate::metrics::{self, Metrics};

/// Readiness as reported by `/readyz`: serving (set by the server) and trusted (cleared only
/// by self-managed certificates until the `caBundle` trusts the certificate served).
#[derive(Clone, Debug)]
pub struct Readiness {
    serving: Arc<AtomicBool>,
    trusted: Arc<AtomicBool>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            serving: Arc::new(AtomicBool::new(false)),
            trusted: Arc::new(AtomicBool::new(true)),
        }
    }
}

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.serving.store(ready, Ordering::SeqCst);
    }

    pub fn set_trusted(&self, trusted: bool) {
        self.trusted.store(trusted, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.serving.load(Ordering::SeqCst) && self.trusted.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Debug)]
pub struct AdminState {
    pub readiness: Readiness,
    pub metrics: Arc<Metrics>,
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// Answers one admin request.
pub fn respond<B>(req: &Request<B>, state: &AdminState) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if !matches!(path, "/livez" | "/readyz" | "/metrics") {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut rsp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        rsp.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return rsp;
    }
    match path {
        "/livez" => text(StatusCode::OK, "ok\n"),
        "/readyz" if state.readiness.get() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => {
            let mut rsp = Response::new(Full::new(Bytes::from(state.metrics.encode())));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            rsp
        }
    }
}

/// Serves the admin port on `listener` until `stop` turns true, then closes idle connections
/// and waits (briefly) for requests in flight.
pub async fn serve(listener: TcpListener, state: AdminState, mut stop: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .keep_alive(true);
    loop {
        let (tcp, peer): (_, SocketAddr) = tokio::select! {
            biased;
            () = crate::server::stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    tracing::warn!(%error, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let rsp = respond(&req, &state);
            async move { Ok::<_, Infallible>(rsp) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%peer, %error, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
}
