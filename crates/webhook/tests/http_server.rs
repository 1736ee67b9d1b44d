//! The admission server over real TLS on 127.0.0.1: round trips, bounds, timeouts, certificate
//! rotation, configuration reload, metrics and graceful shutdown.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

mod common;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use ps_webhook::{
    server::{self, Limits, RunningServer, ServerConfig},
    tls::{self, GeneratedCert},
};
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

/// Bound on every wait in these tests, so a regression fails instead of hanging.
const WAIT: Duration = Duration::from_secs(10);

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn review(uid: &str, annotations: Value) -> Vec<u8> {
    common::pod_review(uid, common::app_pod("app", annotations))
}

fn opted_in(uid: &str) -> Vec<u8> {
    review(
        uid,
        json!({"ps-injector.io/inject": "true", "ps-injector.io/secret-db": "team-a/db/password"}),
    )
}

fn not_opted_in(uid: &str) -> Vec<u8> {
    review(uid, json!({"team": "a"}))
}

/// The decoded JSON Patch of a response, if any, as JSON text.
fn patch_of(rsp: &Value) -> Option<String> {
    ps_testkit::decoded_patch(rsp).map(|patch| patch.to_string())
}

struct Harness {
    dir: tempfile::TempDir,
    ca: GeneratedCert,
    server: Option<RunningServer>,
    client: reqwest::Client,
}

struct Options {
    limits: Limits,
    drain_delay: Duration,
    config: Option<&'static str>,
    /// Lay the certificate out as kubelet does for a Secret volume: `tls.crt -> ..data/tls.crt`,
    /// `..data -> ..v1`.
    kube_layout: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            drain_delay: Duration::from_millis(100),
            config: None,
            kube_layout: false,
        }
    }
}

/// Writes a new "version" of a Secret volume the way kubelet's atomic writer does: a fresh
/// `..NAME` directory, then `..data` swapped to it with one rename.
fn kube_write(dir: &Path, version: &str, cert: &str, key: &str) {
    let data = dir.join(format!("..{version}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("tls.crt"), cert).unwrap();
    std::fs::write(data.join("tls.key"), key).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in ["tls.crt", "tls.key"] {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
}

impl Harness {
    async fn start(opts: Options) -> Self {
        init();
        let dir = tempfile::tempdir().unwrap();
        let ca = tls::generate("ps-webhook test CA", &["localhost", "127.0.0.1"]).unwrap();
        if opts.kube_layout {
            kube_write(dir.path(), "v1", &ca.cert_pem, &ca.key_pem);
        } else {
            std::fs::write(dir.path().join("tls.crt"), &ca.cert_pem).unwrap();
            std::fs::write(dir.path().join("tls.key"), &ca.key_pem).unwrap();
        }
        let mut cfg = ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
        );
        if let Some(yaml) = opts.config {
            std::fs::write(dir.path().join("config.yaml"), yaml).unwrap();
            cfg.config = Some(dir.path().join("config.yaml"));
        }
        cfg.limits = opts.limits;
        cfg.drain_delay = opts.drain_delay;
        cfg.shutdown_timeout = Duration::from_secs(5);
        cfg.reload_interval = Duration::from_millis(50);
        let server = server::spawn(cfg).await.expect("server starts");
        let client = client_trusting(&[&ca.ca_pem]);
        Self {
            dir,
            ca,
            server: Some(server),
            client,
        }
    }

    fn server(&self) -> &RunningServer {
        self.server.as_ref().unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.server().addr().port())
    }

    fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.server().admin_addr())
    }

    async fn post(&self, body: Vec<u8>) -> (u16, Value) {
        let rsp = tokio::time::timeout(
            WAIT,
            self.client
                .post(self.url("/mutate"))
                .header("content-type", "application/json")
                .body(body)
                .send(),
        )
        .await
        .expect("no hang")
        .expect("request succeeds");
        let status = rsp.status().as_u16();
        let bytes = rsp.bytes().await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn get_admin(&self, path: &str) -> (u16, String) {
        let rsp = tokio::time::timeout(WAIT, self.client.get(self.admin(path)).send())
            .await
            .expect("no hang")
            .expect("admin answers");
        (rsp.status().as_u16(), rsp.text().await.unwrap())
    }

    async fn shutdown(mut self) {
        let server = self.server.take().unwrap();
        tokio::time::timeout(WAIT, server.shutdown())
            .await
            .expect("shutdown completes");
    }
}

fn client_trusting(cas: &[&str]) -> reqwest::Client {
    let certs = cas
        .iter()
        .map(|pem| reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .collect::<Vec<_>>();
    reqwest::Client::builder()
        .tls_certs_only(certs)
        .no_proxy()
        .build()
        .unwrap()
}

fn tls_connector(cas: &[&str]) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for pem in cas {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let config = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_connect(addr: SocketAddr, cas: &[&str]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio::time::timeout(
        WAIT,
        tls_connector(cas).connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .expect("handshake does not hang")
    .expect("handshake succeeds")
}

fn leaf_der(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

fn pem_leaf(pem: &str) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
}

/// A keep-alive HTTP/1.1 connection under our control.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    peer_leaf: CertificateDer<'static>,
}

impl Conn {
    async fn open(addr: SocketAddr, cas: &[&str]) -> Self {
        let stream = tls_connect(addr, cas).await;
        let peer_leaf = leaf_der(&stream);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { sender, peer_leaf }
    }

    async fn post(&mut self, body: Vec<u8>) -> (u16, Value) {
        let (status, _, value) = self.send(body).await;
        (status, value)
    }

    /// [`Conn::post`] with the answer's headers.
    async fn send(&mut self, body: Vec<u8>) -> (u16, http::HeaderMap, Value) {
        let req = http::Request::post("/mutate")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let rsp = tokio::time::timeout(WAIT, self.sender.send_request(req))
            .await
            .expect("no hang")
            .expect("the connection still works");
        let status = rsp.status().as_u16();
        let headers = rsp.headers().clone();
        let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }
}

/// Reads until the peer closes the connection; returns what arrived and how long it took.
async fn read_until_closed(stream: &mut (impl AsyncReadExt + Unpin)) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("connection still open after {WAIT:?}"),
        }
    }
    (out, start.elapsed())
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Replaces a file the way an editor or `kubectl cp` would: new content under a temporary
/// name, then renamed over the old one.
fn replace_file(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_round_trip_injects_and_skips() {
    let h = Harness::start(Options::default()).await;

    let (status, rsp) = h.post(opted_in("7f3a3d4e-0001")).await;
    assert_eq!(status, 200, "{rsp}");
    assert_eq!(rsp["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(rsp["kind"], "AdmissionReview");
    assert_eq!(rsp["response"]["uid"], "7f3a3d4e-0001");
    assert_eq!(rsp["response"]["allowed"], true, "{rsp}");
    assert_eq!(rsp["response"]["patchType"], "JSONPatch");
    let patch: Value = serde_json::from_str(&patch_of(&rsp).expect("a patch")).unwrap();
    assert!(!patch.as_array().unwrap().is_empty());

    let (status, rsp) = h.post(not_opted_in("7f3a3d4e-0002")).await;
    assert_eq!(status, 200);
    assert_eq!(rsp["response"]["uid"], "7f3a3d4e-0002");
    assert_eq!(rsp["response"]["allowed"], true);
    assert!(rsp["response"].get("patch").is_none(), "{rsp}");

    // `/` is accepted as well as `/mutate`.
    let rsp = h
        .client
        .post(h.url("/"))
        .header("content-type", "application/json")
        .body(not_opted_in("7f3a3d4e-0003"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);

    // The warning-only workload entry: allowed, no patch, the warning.
    let deployment = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "7f3a3d4e-0004",
            "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "namespace": "team-a",
            "name": "web",
            "operation": "UPDATE",
            "object": {"metadata": {"name": "web", "annotations": {"ps-injector.io/inject": "true"}}}
        }
    });
    let rsp: Value = h
        .client
        .post(h.url("/warn-workloads"))
        .header("content-type", "application/json")
        .body(deployment.to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rsp["response"]["uid"], "7f3a3d4e-0004");
    assert_eq!(rsp["response"]["allowed"], true, "{rsp}");
    assert!(rsp["response"].get("patch").is_none(), "{rsp}");
    assert!(
        rsp["response"]["warnings"][0]
            .as_str()
            .is_some_and(|w| w.ends_with("move it to spec.template.metadata.annotations")),
        "{rsp}"
    );

    let m = h.server().metrics();
    let injected: u64 = ["init", "sidecar", "native-sidecar", "init+sidecar"]
        .into_iter()
        .map(|mode| m.admissions("injected", Some(mode)))
        .sum();
    assert_eq!(injected, 1);
    assert_eq!(m.admissions("skipped", None), 3);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_4xx_never_5xx() {
    let h = Harness::start(Options {
        limits: Limits {
            max_body: 4096,
            ..Limits::default()
        },
        ..Options::default()
    })
    .await;

    // Not JSON.
    let (status, _) = h.post(b"{\"apiVersion\": ".to_vec()).await;
    assert_eq!(status, 400);
    // Empty body.
    let (status, _) = h.post(Vec::new()).await;
    assert!((400..500).contains(&status), "{status}");
    // JSON, but not an AdmissionReview: a well-formed answer, never 5xx.
    let (status, _) = h.post(b"[1, 2, 3]".to_vec()).await;
    assert!(status == 200 || status == 400, "{status}");
    let (status, _) = h.post(br#"{"request": {"uid": 42}}"#.to_vec()).await;
    assert!(status == 200 || status == 400, "{status}");

    // Wrong content type.
    let rsp = h
        .client
        .post(h.url("/mutate"))
        .header("content-type", "text/plain")
        .body(not_opted_in("u"))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 400);

    // Oversize, declared in Content-Length: refused without reading.
    let rsp = h
        .client
        .post(h.url("/mutate"))
        .header("content-type", "application/json")
        .body(vec![b' '; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 413);

    // Oversize, chunked (no Content-Length): cut off at the limit.
    let mut stream = tls_connect(h.server().addr(), &[&h.ca.ca_pem]).await;
    let mut req = b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\n\
                    transfer-encoding: chunked\r\n\r\n"
        .to_vec();
    for _ in 0..3 {
        req.extend_from_slice(b"800\r\n");
        req.extend_from_slice(&[b' '; 0x800]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&req).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(WAIT, stream.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 413", "{}", String::from_utf8_lossy(&head));

    // Wrong path and wrong method.
    let rsp = h.client.post(h.url("/validate")).body("{}").send().await.unwrap();
    assert_eq!(rsp.status(), 404);
    let rsp = h.client.get(h.url("/mutate")).send().await.unwrap();
    assert_eq!(rsp.status(), 405);

    // Still healthy, and every answer so far was 4xx or 200.
    let (status, _) = h.post(not_opted_in("after")).await;
    assert_eq!(status, 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off() {
    let h = Harness::start(Options {
        limits: Limits {
            header_read_timeout: Duration::from_millis(300),
            handshake_timeout: Duration::from_millis(300),
            body_timeout: Duration::from_millis(300),
            ..Limits::default()
        },
        ..Options::default()
    })
    .await;
    let addr = h.server().addr();

    // TCP connection that never starts TLS.
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let (_, took) = read_until_closed(&mut tcp).await;
    assert!(took < Duration::from_secs(3), "{took:?}");

    // TLS, then half a request head, then silence.
    let mut stream = tls_connect(addr, &[&h.ca.ca_pem]).await;
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    let (_, took) = read_until_closed(&mut stream).await;
    assert!(took < Duration::from_secs(3), "{took:?}");

    // Whole head, then a body that never completes: 408, not a hang.
    let mut stream = tls_connect(addr, &[&h.ca.ca_pem]).await;
    stream
        .write_all(b"POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100\r\n\r\n{\"a\":")
        .await
        .unwrap();
    let (out, took) = read_until_closed(&mut stream).await;
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(
        out.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&out)
    );

    // The server is fine afterwards.
    let (status, _) = h.post(not_opted_in("after")).await;
    assert_eq!(status, 200);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_keeps_connections() {
    let h = Harness::start(Options::default()).await;
    let addr = h.server().addr();
    let new = tls::generate("ps-webhook rotated CA", &["localhost", "127.0.0.1"]).unwrap();
    let cas = [h.ca.ca_pem.as_str(), new.ca_pem.as_str()];

    let mut old_conn = Conn::open(addr, &cas).await;
    assert_eq!(old_conn.peer_leaf, pem_leaf(&h.ca.cert_pem));
    assert_eq!(old_conn.post(not_opted_in("before")).await.0, 200);

    // Rotate: key first, then certificate, as a careless writer might.
    replace_file(&h.path("tls.key"), &new.key_pem);
    replace_file(&h.path("tls.crt"), &new.cert_pem);
    let m = h.server().metrics().clone();
    wait_for("the certificate reload", || m.certificate_reloads(true) == 1).await;
    // (The debounce that keeps a half-written pair from being tried is unit-tested in
    // reload.rs; a stalled test process could make it visible here, so failures are counted
    // relative to this point.)
    let failures = m.certificate_reloads(false);

    let mut new_conn = Conn::open(addr, &cas).await;
    assert_eq!(
        new_conn.peer_leaf,
        pem_leaf(&new.cert_pem),
        "a new connection sees the new certificate"
    );
    assert_eq!(new_conn.post(not_opted_in("new")).await.0, 200);
    assert_eq!(
        old_conn.post(not_opted_in("old")).await.0,
        200,
        "an existing connection keeps working"
    );
    // A client that trusts only the new CA now connects; one trusting only the old CA does not.
    assert_eq!(
        client_trusting(&[&new.ca_pem])
            .post(h.url("/mutate"))
            .header("content-type", "application/json")
            .body(not_opted_in("x"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert!(
        client_trusting(&[&h.ca.ca_pem])
            .post(h.url("/mutate"))
            .body(not_opted_in("x"))
            .send()
            .await
            .is_err()
    );

    // A mismatched pair is rejected; the current certificate stays.
    let other = tls::generate("other", &["localhost"]).unwrap();
    replace_file(&h.path("tls.key"), &other.key_pem);
    wait_for("the rejected reload", || {
        m.certificate_reloads(false) == failures + 1
    })
    .await;
    let conn = Conn::open(addr, &cas).await;
    assert_eq!(conn.peer_leaf, pem_leaf(&new.cert_pem));
    let (status, body) = h.get_admin("/readyz").await;
    assert_eq!(status, 200, "{body}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_volume_updates_are_seen() {
    let h = Harness::start(Options {
        kube_layout: true,
        ..Options::default()
    })
    .await;
    let addr = h.server().addr();
    let new = tls::generate("ps-webhook rotated CA", &["localhost", "127.0.0.1"]).unwrap();
    let cas = [h.ca.ca_pem.as_str(), new.ca_pem.as_str()];
    let mut old_conn = Conn::open(addr, &cas).await;
    assert_eq!(old_conn.peer_leaf, pem_leaf(&h.ca.cert_pem));

    kube_write(h.dir.path(), "v2", &new.cert_pem, &new.key_pem);
    let m = h.server().metrics().clone();
    wait_for("the certificate reload", || m.certificate_reloads(true) == 1).await;
    let new_conn = Conn::open(addr, &cas).await;
    assert_eq!(new_conn.peer_leaf, pem_leaf(&new.cert_pem));
    assert_eq!(old_conn.post(not_opted_in("old")).await.0, 200);
    h.shutdown().await;
}

const CONFIG_V1: &str = "passwordSafe:\n  url: https://ps.example.com/BeyondTrust/api/public/v3\n\
                         agent:\n  image: registry.example.com/ps-agent:1.0.0\n";
const CONFIG_V2: &str = "passwordSafe:\n  url: https://ps.example.com/BeyondTrust/api/public/v3\n\
                         agent:\n  image: registry.example.com/ps-agent:2.0.0\n";
/// Unknown fields are refused, so this valid-looking change is rejected as a whole.
const CONFIG_BAD: &str = "passwordSafe:\n  url: https://ps.example.com/BeyondTrust/api/public/v3\n\
                          agent:\n  image: registry.example.com/ps-agent:3.0.0\nbogusSetting: true\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_reload() {
    let h = Harness::start(Options {
        config: Some(CONFIG_V1),
        ..Options::default()
    })
    .await;
    let m = h.server().metrics().clone();
    let (_, rsp) = h.post(opted_in("v1")).await;
    assert!(patch_of(&rsp).unwrap().contains("ps-agent:1.0.0"), "{rsp}");

    replace_file(&h.path("config.yaml"), CONFIG_V2);
    wait_for("the configuration reload", || m.config_reloads(true) == 1).await;
    let (_, rsp) = h.post(opted_in("v2")).await;
    assert!(patch_of(&rsp).unwrap().contains("ps-agent:2.0.0"), "{rsp}");

    replace_file(&h.path("config.yaml"), CONFIG_BAD);
    wait_for("the rejected reload", || m.config_reloads(false) == 1).await;
    let (_, rsp) = h.post(opted_in("v3")).await;
    let patch = patch_of(&rsp).unwrap();
    assert!(
        patch.contains("ps-agent:2.0.0") && !patch.contains("3.0.0"),
        "{patch}"
    );
    let (status, _) = h.get_admin("/readyz").await;
    assert_eq!(status, 200, "readiness is unaffected by a bad configuration");
    let (_, metrics) = h.get_admin("/metrics").await;
    assert!(
        metrics.contains(r#"ps_webhook_config_reloads_total{result="failure"} 1"#),
        "{metrics}"
    );

    // Fixing the file recovers.
    replace_file(&h.path("config.yaml"), CONFIG_V1);
    wait_for("the recovering reload", || m.config_reloads(true) == 2).await;
    let (_, rsp) = h.post(opted_in("v4")).await;
    assert!(patch_of(&rsp).unwrap().contains("ps-agent:1.0.0"), "{rsp}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_port_probes_and_metrics() {
    let h = Harness::start(Options::default()).await;
    h.post(not_opted_in("a")).await;
    h.post(opted_in("b")).await;
    h.post(b"nope".to_vec()).await;

    assert_eq!(h.get_admin("/livez").await.0, 200);
    assert_eq!(h.get_admin("/readyz").await.0, 200);
    assert_eq!(h.get_admin("/nothing").await.0, 404);
    let rsp = h.client.get(h.admin("/metrics")).send().await.unwrap();
    assert_eq!(rsp.status(), 200);
    assert!(
        rsp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = rsp.text().await.unwrap();
    for want in [
        r#"ps_webhook_admissions_total{outcome="skipped",mode="none"} 1"#,
        r#"ps_webhook_admissions_total{outcome="invalid",mode="none"} 1"#,
        r#"outcome="injected""#,
        r#"ps_webhook_admission_duration_seconds_bucket{le="0.0001"}"#,
        r#"ps_webhook_admission_duration_seconds_bucket{le="0.00025"}"#,
        r#"ps_webhook_admission_duration_seconds_bucket{le="0.0005"}"#,
        r#"ps_webhook_admission_duration_seconds_bucket{le="1.0"}"#,
        "ps_webhook_admission_duration_seconds_count 3",
        r#"ps_webhook_config_reloads_total{result="success"} 0"#,
        r#"ps_webhook_certificate_reloads_total{result="failure"} 0"#,
        "# EOF",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(!text.contains("namespace"), "no namespace label");
    let expiry: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("ps_webhook_certificate_expiry_timestamp_seconds "))
        .expect("certificate expiry gauge")
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(expiry > now && expiry <= now + 86_400 + 60, "{expiry} vs {now}");
    h.shutdown().await;
}

/// During the drain delay every answer carries `Connection: close`, so a client (kube-apiserver
/// on a connection pinned to this pod) learns with the answer not to reuse the connection, and
/// opens a new one, which by then reaches another pod. Without it, keep-alive connections stay
/// in use until the server closes them idle at the end of the drain, and a request sent as the
/// close crosses it fails (`bench/reliability/webhook-soak --scenario sigterm` found 8 to 14 per
/// shutdown at 16 busy connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_answers_close_their_connections() {
    let h = Harness::start(Options {
        drain_delay: Duration::from_secs(2),
        ..Options::default()
    })
    .await;
    let addr = h.server().addr();
    let mut conn = Conn::open(addr, &[&h.ca.ca_pem]).await;
    let (status, headers, _) = conn.send(not_opted_in("before")).await;
    assert_eq!(status, 200);
    assert!(headers.get("connection").is_none(), "{headers:?}");

    h.server().trigger_shutdown();
    let (status, headers, rsp) = conn.send(not_opted_in("draining")).await;
    assert_eq!(status, 200);
    assert_eq!(rsp["response"]["uid"], "draining");
    assert_eq!(
        headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    wait_for("the server to close the connection after its answer", || {
        conn.sender.is_closed()
    })
    .await;

    // A new connection is still served during the drain delay, one request.
    let mut fresh = Conn::open(addr, &[&h.ca.ca_pem]).await;
    let (status, headers, _) = fresh.send(not_opted_in("new, draining")).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );

    // A connection opened in the drain whose first request comes only after the listener has
    // closed is answered too: hyper alone closes a connection that has read nothing at the
    // shutdown signal, under the request the client is sending (the sigterm run found 8 to 15
    // such failures per shutdown once answers carried `Connection: close`).
    let mut late = Conn::open(addr, &[&h.ca.ca_pem]).await;
    let started = Instant::now();
    while TcpStream::connect(addr).await.is_ok() {
        assert!(started.elapsed() < WAIT, "listener still open");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (status, headers, rsp) = late.send(not_opted_in("after the drain")).await;
    assert_eq!(status, 200);
    assert_eq!(rsp["response"]["uid"], "after the drain");
    assert_eq!(
        headers.get("connection").map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_drains() {
    let h = Harness::start(Options {
        drain_delay: Duration::from_millis(400),
        ..Options::default()
    })
    .await;
    let addr = h.server().addr();

    // A request in flight across the whole shutdown: head and half the body now...
    let body = not_opted_in("in-flight");
    let (first, rest) = body.split_at(body.len() / 2);
    let mut slow = tls_connect(addr, &[&h.ca.ca_pem]).await;
    let head = format!(
        "POST /mutate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(first).await.unwrap();
    let mut idle = Conn::open(addr, &[&h.ca.ca_pem]).await;
    assert_eq!(idle.post(not_opted_in("idle")).await.0, 200);

    let server = h.server.as_ref().unwrap();
    server.trigger_shutdown();
    // Not ready at once, but still serving during the drain delay.
    let (status, _) = h.get_admin("/readyz").await;
    assert_eq!(status, 503);
    let (status, _) = h.post(not_opted_in("during drain")).await;
    assert_eq!(status, 200);
    assert_eq!(idle.post(not_opted_in("idle, during drain")).await.0, 200);

    // After the drain delay the listener is closed...
    let started = Instant::now();
    loop {
        if TcpStream::connect(addr).await.is_err() {
            break;
        }
        assert!(started.elapsed() < WAIT, "listener still open");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // ...and the request in flight still completes.
    slow.write_all(rest).await.unwrap();
    let (out, _) = read_until_closed(&mut slow).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("in-flight"), "{text}");

    let admin_addr = h.server().admin_addr();
    let mut h = h;
    let server = h.server.take().unwrap();
    tokio::time::timeout(WAIT, server.wait())
        .await
        .expect("the server stops");
    assert!(
        TcpStream::connect(admin_addr).await.is_err(),
        "the admin port is closed last"
    );
}
