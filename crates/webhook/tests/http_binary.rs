//! The `ps-webhook` binary itself: `serve` over TLS on 127.0.0.1 until SIGTERM (readiness drops,
//! the drain runs, exit 0), start-up failures (exit 1 with a message, before binding), and
//! `inject` through standard input and output.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use ps_webhook::tls;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_ps-webhook");
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_until_sigterm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::generate("binary test CA", &["localhost"]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &ca.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &ca.key_pem).unwrap();

    let mut child = tokio::process::Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json", "--drain-delay", "1s"])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .env("PS_WEBHOOK_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a first log line")
        .unwrap()
        .expect("the server logs where it listens");
    let started: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{e}: {first}"));
    let addr: std::net::SocketAddr = started["fields"]["addr"].as_str().unwrap().parse().unwrap();
    let admin = started["fields"]["admin_addr"].as_str().unwrap().to_owned();
    // Keep draining the log so the server never blocks on a full pipe.
    let rest = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            all.push(line);
        }
        all
    });

    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.ca_pem.as_bytes()).unwrap()])
        .no_proxy()
        .timeout(WAIT)
        .build()
        .unwrap();
    let readyz = || {
        let client = client.clone();
        let url = format!("http://{admin}/readyz");
        async move { client.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(readyz().await.unwrap(), 200);
    let rsp = client
        .post(format!("https://localhost:{}/mutate", addr.port()))
        .header("content-type", "application/json")
        .body(common::pod_review("bin-1", common::app_pod("p", json!({}))))
        .send()
        .await
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let body: Value = rsp.json().await.unwrap();
    assert_eq!(body["response"]["uid"], "bin-1");
    assert_eq!(body["response"]["allowed"], true);

    let pid = child.id().unwrap().to_string();
    let killed = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    // Unready at once, still serving during the drain delay.
    let deadline = Instant::now() + WAIT;
    while readyz().await.unwrap() != 503 {
        assert!(Instant::now() < deadline, "/readyz never turned 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the server exits after the drain")
        .unwrap();
    assert!(status.success(), "{status}");
    assert!(
        killed.elapsed() >= Duration::from_millis(900),
        "the drain delay was honoured"
    );
    let log = rest.await.unwrap().join("\n");
    assert!(
        log.contains("SIGTERM received") && log.contains("\"stopped\""),
        "{log}"
    );
}

#[test]
fn unusable_certificate_fails_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let a = tls::generate("a", &["localhost"]).unwrap();
    let b = tls::generate("b", &["localhost"]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &a.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &b.key_pem).unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("serving certificate") && err.contains("tls.crt"),
        "{err}"
    );
    assert!(!err.contains("PRIVATE KEY"), "{err}");
}

#[test]
fn inject_through_stdin_and_stdout() {
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: team-a\n  annotations:\n    \
                    ps-injector.io/inject: \"true\"\n    ps-injector.io/secret-db: team-a/db/password\nspec:\n  \
                    securityContext:\n    runAsUser: 1000\n  containers:\n  - name: app\n    image: busybox\n";
    let run = |input: &str| {
        let mut child = Command::new(BIN)
            .args(["inject", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run(manifest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("ps-injector.io/status"), "{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("warning: "), "{stderr}");

    let out = run(&manifest.replace("team-a/db/password", "nofolder"));
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("ps-injector.io/secret-db"), "{stderr}");
}

#[test]
fn plain_logs_to_a_pipe_carry_no_colour_codes() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let ca = tls::generate("plain log CA", &["localhost"]).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &ca.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &ca.key_pem).unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "plain"])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .env("PS_WEBHOOK_LOG", "info")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(first.contains("serving admission requests"), "{first:?}");
    assert!(!first.contains('\x1b'), "colour codes in a pipe: {first:?}");
}
