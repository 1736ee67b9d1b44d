//! The `ps-emulator` binary: first stdout line, CA file, provided certificates, bad seeds.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
};

use common::*;
use reqwest::StatusCode;

const BIN: &str = env!("CARGO_BIN_EXE_ps-emulator");

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and returns it with the origin of its first stdout line.
fn spawn(args: &[&str]) -> (Running, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let origin = line
        .trim_end()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Running(child), origin)
}

async fn sign_in_at(origin: &str, ca_pem: &[u8]) -> StatusCode {
    install_crypto_provider();
    let c = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem).unwrap()])
        .build()
        .unwrap();
    c.post(format!("{origin}/BeyondTrust/api/public/v3/Auth/SignAppIn"))
        .header("Authorization", format!("PS-Auth key={KEY_A}; runas=svc-team-a;"))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn generated_ca_is_written_and_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, SEED).unwrap();
    let ca = dir.path().join("ca.pem");
    let (_child, origin) = spawn(&[
        "--listen",
        "127.0.0.1:0",
        "--data",
        seed.to_str().unwrap(),
        "--ca-out",
        ca.to_str().unwrap(),
    ]);
    assert!(origin.starts_with("https://127.0.0.1:"), "{origin}");
    assert_ne!(origin, "https://127.0.0.1:0");
    let pem = std::fs::read(&ca).unwrap();
    assert!(pem.starts_with(b"-----BEGIN CERTIFICATE-----"));
    assert_eq!(sign_in_at(&origin, &pem).await, StatusCode::OK);
    // The certificate is valid for localhost too.
    let localhost = origin.replace("127.0.0.1", "localhost");
    assert_eq!(sign_in_at(&localhost, &pem).await, StatusCode::OK);
}

#[tokio::test]
async fn provided_certificate_and_env_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, SEED).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let mut child = Command::new(BIN)
        .env("PS_EMULATOR_DATA", &seed)
        .env("PS_EMULATOR_TLS_CERT", &cert_path)
        .env("PS_EMULATOR_TLS_KEY", &key_path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let running = Running(child);
    let origin = line.trim_end().strip_prefix("listening on ").unwrap().to_string();
    assert_eq!(sign_in_at(&origin, cert.pem().as_bytes()).await, StatusCode::OK);
    drop(running);
}

#[test]
fn a_bad_seed_stops_the_start_with_the_location() {
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(
        &seed,
        SEED.replace(
            "type: credential, username: admin, password: \"PSCANARY-secret-pw-s3cret\"",
            "type: pasword, username: admin, password: \"PSCANARY-secret-pw-s3cret\"",
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--data", seed.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "nothing listened");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            r#"safes[0].folders[0].secrets[0].type: unknown type "pasword", expected credential|text|file"#
        ),
        "{err}"
    );
    // Secret values never appear in the error.
    assert!(!err.contains("PSCANARY-secret-pw-s3cret"));
}

#[test]
fn cert_without_key_is_a_usage_error() {
    let out = Command::new(BIN)
        .args(["--data", "x.yaml", "--tls-cert", "c.pem"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

#[test]
fn missing_seed_file_is_reported() {
    let out = Command::new(BIN)
        .args(["--data", "/nonexistent/seed.yaml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/seed.yaml"));
}

/// The HTTP version of a sign-in at `origin` by a client that offers `h2` and `http/1.1`.
async fn sign_in_version_at(origin: &str, ca_pem: &[u8]) -> reqwest::Version {
    install_crypto_provider();
    let c = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca_pem).unwrap()])
        .build()
        .unwrap();
    let r = c
        .post(format!("{origin}/BeyondTrust/api/public/v3/Auth/SignAppIn"))
        .header("Authorization", format!("PS-Auth key={KEY_A}; runas=svc-team-a;"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.version()
}

#[tokio::test]
async fn h2_by_default_and_http1_only_on_request() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--http1-only"), "{help}");

    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("seed.yaml");
    std::fs::write(&seed, SEED).unwrap();
    for (extra, want) in [
        (None, reqwest::Version::HTTP_2),
        (Some("--http1-only"), reqwest::Version::HTTP_11),
    ] {
        let ca = dir.path().join("ca.pem");
        let mut args = vec!["--data", seed.to_str().unwrap(), "--ca-out", ca.to_str().unwrap()];
        args.extend(extra);
        let (_child, origin) = spawn(&args);
        let pem = std::fs::read(&ca).unwrap();
        assert_eq!(sign_in_version_at(&origin, &pem).await, want, "{extra:?}");
    }
}
