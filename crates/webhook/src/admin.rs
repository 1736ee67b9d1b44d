//! The admin port: plain HTTP/1.1 for the kubelet's probes and Prometheus.
//!
//! - `GET /livez`: 200 while the process runs.
//! - `GET /readyz`: 200 once the serving certificate is loaded and the TLS listener is bound
//!   (with self-managed certificates: and the webhook configuration's `caBundle` trusts it);
//!   503 from the first shutdown signal on, so endpoints drop the pod while it drains.
//! - `GET /metrics`: OpenMetrics text (see [`crate::metrics`]).
//!
//! Anything else is 404; a known path with another method than GET or HEAD is 405. The routes
//! are an axum [`Router`] ([`router`]), served by the loop in [`serve`].

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    response::Response,
    routing::{MethodRouter, get},
};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::watch};
use tower::ServiceExt;

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

fn text(status: StatusCode, body: &'static str) -> Response {
    let mut rsp = Response::new(Body::from(Bytes::from_static(body.as_bytes())));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}

/// The admin routes: GET (and HEAD, which axum answers with the GET handler's head) only.
pub fn router(state: AdminState) -> Router {
    let only_get = |route: MethodRouter| {
        route.fallback(|| async {
            let mut rsp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            rsp.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            rsp
        })
    };
    let readiness = state.readiness;
    let registry = state.metrics;
    Router::new()
        .route("/livez", only_get(get(|| async { text(StatusCode::OK, "ok\n") })))
        .route(
            "/readyz",
            only_get(get(move || async move {
                if readiness.get() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            })),
        )
        .route(
            "/metrics",
            only_get(get(move || async move {
                let mut rsp = Response::new(Body::from(registry.encode()));
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(metrics::CONTENT_TYPE),
                );
                rsp
            })),
        )
        .fallback(|| async { text(StatusCode::NOT_FOUND, "not found\n") })
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
    let router = router(state);
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
        let router = router.clone();
        let service = service_fn(move |req: Request<Incoming>| router.clone().oneshot(req));
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

#[cfg(test)]
mod tests {
    //! The admin routes in process, through the router as a tower service.
    use http_body_util::BodyExt;

    use super::*;

    async fn call(
        state: &AdminState,
        method: http::Method,
        path: &str,
    ) -> (StatusCode, http::HeaderMap, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let rsp = router(state.clone()).oneshot(req).await.unwrap();
        let (parts, body) = rsp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn probes_metrics_and_refusals() {
        let state = AdminState {
            readiness: Readiness::default(),
            metrics: Arc::new(Metrics::new()),
        };
        use http::Method;
        assert_eq!(call(&state, Method::GET, "/livez").await.0, StatusCode::OK);
        // Not ready until the server says so, and again from the shutdown signal on.
        assert_eq!(
            call(&state, Method::GET, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        state.readiness.set(true);
        assert_eq!(call(&state, Method::GET, "/readyz").await.2, "ready\n");
        state.readiness.set_trusted(false);
        assert_eq!(
            call(&state, Method::GET, "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );

        state
            .metrics
            .observe_admission("skipped", None, Duration::from_micros(20));
        let (status, headers, body) = call(&state, Method::GET, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], metrics::CONTENT_TYPE);
        assert!(
            body.contains(r#"ps_webhook_admissions_total{outcome="skipped",mode="none"} 1"#),
            "{body}"
        );

        // HEAD answers like GET, without a body.
        let (status, _, body) = call(&state, Method::HEAD, "/livez").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, ""));

        let (status, headers, _) = call(&state, Method::POST, "/livez").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(headers[header::ALLOW], "GET, HEAD");
        assert_eq!(
            call(&state, Method::GET, "/nothing").await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            call(&state, Method::GET, "/livez/").await.0,
            StatusCode::NOT_FOUND
        );
    }
}
