//! JSON logs of the admission server: one `admission` span per request carrying uid, namespace,
//! pod, outcome and mode; denials logged with the core's message; request bodies never logged.
//! (A test binary of its own: it installs the global subscriber.)

mod common;

use std::time::Duration;

use ps_webhook::{
    logging::{self, LogFormat},
    server::{self, ServerConfig},
    tls,
};
use serde_json::{Value, json};

use ps_testkit::LogCapture as Capture;

const CANARY: &str = "canary-value-that-must-never-be-logged";

fn review(uid: &str, annotations: Value) -> Vec<u8> {
    let mut pod = common::app_pod("web-5f7c9-", annotations);
    pod["spec"]["containers"][0]["env"] = json!([{"name": "TOKEN", "value": CANARY}]);
    common::pod_review(uid, pod)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_span_per_admission_and_no_values() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let capture = Capture::default();
    tracing::subscriber::set_global_default(
        logging::subscriber(LogFormat::Json, "info", capture.clone(), false).unwrap(),
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ca = tls::generate("log test CA", &["localhost"]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &ca.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &ca.key_pem).unwrap();
    let mut cfg = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
    );
    cfg.drain_delay = Duration::ZERO;
    let server = server::spawn(cfg).await.unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap()])
        .no_proxy()
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/mutate", server.addr().port());
    let post = |body: Vec<u8>| {
        let req = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body);
        async move { req.send().await.unwrap().status().as_u16() }
    };

    let opted_in = json!({
        "ps-injector.io/inject": "true",
        "ps-injector.io/mode": "init",
        "ps-injector.io/secret-db": "team-a/db/password",
    });
    assert_eq!(post(review("uid-injected", opted_in)).await, 200);
    let bad = json!({"ps-injector.io/inject": "true", "ps-injector.io/secret-db": "no-folder"});
    assert_eq!(post(review("uid-denied", bad)).await, 200);
    assert_eq!(post(review("uid-skipped", json!({}))).await, 200);
    server.shutdown().await;

    let text = capture.text();
    assert!(
        !text.contains(CANARY),
        "a request value reached the logs:\n{text}"
    );
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let span_of = |uid: &str| {
        lines
            .iter()
            .filter(|l| l["span"]["uid"] == uid)
            .cloned()
            .collect::<Vec<_>>()
    };

    let injected = span_of("uid-injected");
    assert_eq!(injected.len(), 1, "{text}");
    let span = &injected[0]["span"];
    assert_eq!(span["name"], "admission");
    assert_eq!(span["namespace"], "team-a");
    assert_eq!(span["pod"], "web-5f7c9-");
    assert_eq!(span["outcome"], "injected");
    assert_eq!(span["mode"], "init");
    assert!(span["duration_us"].is_u64(), "{span}");
    assert_eq!(injected[0]["level"], "INFO");
    assert_eq!(injected[0]["fields"]["message"], "injected");
    // The default configuration has no Password Safe URL: the core warns, on the same line.
    assert!(
        injected[0]["fields"]["warnings"]
            .as_str()
            .unwrap()
            .contains("passwordSafe.url"),
        "{}",
        injected[0]
    );

    let denied = span_of("uid-denied");
    assert_eq!(denied.len(), 1, "{text}");
    assert_eq!(denied[0]["span"]["outcome"], "denied");
    assert_eq!(denied[0]["fields"]["message"], "denied");
    let reason = denied[0]["fields"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("ps-injector.io/secret-db"),
        "the deny reason names the annotation: {reason}"
    );

    // Skips are debug-level: nothing at info.
    assert!(span_of("uid-skipped").is_empty(), "{text}");
}
