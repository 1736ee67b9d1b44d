//! Appliance-like limits (503 beyond the concurrent calls, 429 beyond the rate, both with
//! Retry-After), the load counters, and the `truncate` fault.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::json;

const LOOKUP: &str = "secrets-safe/secrets?path=team-a/db&title=password";

fn retry_after(r: &reqwest::Response) -> Option<u64> {
    r.headers().get("retry-after")?.to_str().ok()?.parse().ok()
}

#[tokio::test]
async fn no_limits_by_default_and_reset_removes_them() {
    let emu = start().await;
    let s = state(&emu).await;
    assert_eq!(
        s["faults"]["limits"],
        json!({"max_concurrent": 0, "rate_per_second": 0, "burst": 0, "retry_after_seconds": 1})
    );
    assert_eq!(
        s["load"],
        json!({"in_flight": 0, "peak_in_flight": 0, "admitted_in_flight": 0, "peak_admitted": 0,
               "throttled": 0, "overloaded": 0, "early_retries": 0})
    );
    let (status, f) = faults(&emu, json!({"limits": {"rate_per_second": 7}})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        f["limits"],
        json!({"max_concurrent": 0, "rate_per_second": 7, "burst": 0, "retry_after_seconds": 1})
    );
    let (_, f) = faults(&emu, json!({"reset": true})).await;
    assert_eq!(f["limits"]["rate_per_second"], 0);
    let (status, _) = faults(&emu, json!({"limits": {"rate": 7}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown field");
}

#[tokio::test]
async fn beyond_the_concurrent_calls_503_with_retry_after() {
    let emu = start_with(ps_emulator::Options {
        limits: ps_emulator::LimitConfig {
            max_concurrent: 2,
            retry_after_seconds: 3,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    faults(&emu, json!({"latency_ms": 1500})).await;
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (c, u) = (c.clone(), url(&emu, LOOKUP));
            tokio::spawn(async move { c.get(u).send().await.unwrap().status() })
        })
        .collect();
    // Wait until both are admitted (and sleeping their latency) at the emulator.
    for _ in 0..200 {
        if state(&emu).await["load"]["admitted_in_flight"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = get(&c, &emu, LOOKUP).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after(&r), Some(3));
    for t in slow {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let load = state(&emu).await["load"].clone();
    assert_eq!(load["overloaded"], 1);
    assert_eq!(load["peak_admitted"], 2, "the limit held");
    assert!(
        load["peak_in_flight"].as_u64().unwrap() >= 3,
        "the refused call was in flight too"
    );
    assert_eq!(load["in_flight"], 0);
    // Freed: served again (refusals are never delayed, admitted calls are).
    faults(&emu, json!({"latency_ms": 0})).await;
    assert_eq!(get(&c, &emu, LOOKUP).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn beyond_the_rate_429_with_retry_after_and_early_retries_counted() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    faults(
        &emu,
        json!({"limits": {"rate_per_second": 1, "burst": 2, "retry_after_seconds": 2}}),
    )
    .await;
    assert_eq!(get(&c, &emu, LOOKUP).await.status(), StatusCode::OK);
    assert_eq!(get(&c, &emu, "secrets-safe/safes").await.status(), StatusCode::OK);
    let r = get(&c, &emu, LOOKUP).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&r).is_some_and(|s| s >= 2), "{:?}", retry_after(&r));
    // Another call is not a retry of the refused one; the same call at once is.
    get(&c, &emu, "secrets-safe/folders").await;
    assert_eq!(state(&emu).await["load"]["early_retries"], 0);
    get(&c, &emu, LOOKUP).await;
    let s = state(&emu).await;
    assert_eq!(s["load"]["early_retries"], 1);
    assert!(s["load"]["throttled"].as_u64().unwrap() >= 2);
    // Counters restart; limits stay.
    let (_, f) = faults(&emu, json!({"reset_counters": true})).await;
    assert_eq!(f["limits"]["rate_per_second"], 1);
    let s = state(&emu).await;
    assert_eq!(s["load"]["early_retries"], 0);
    assert_eq!(s["load"]["throttled"], 0);
    assert_eq!(s["calls"]["GET secrets-safe/secrets"], 0);
}

#[tokio::test]
async fn truncate_cuts_the_body_and_closes_the_connection() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let (status, f) = faults(
        &emu,
        json!({"truncate": {"route": "GET secrets-safe/secrets", "count": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(f["truncate"]["GET secrets-safe/secrets"], 1);
    let r = get(&c, &emu, LOOKUP).await;
    assert_eq!(r.status(), StatusCode::OK, "the status and headers arrive");
    let announced = r.content_length().expect("a Content-Length");
    let body = r.bytes().await;
    assert!(body.is_err(), "the body is cut off ({announced} bytes announced)");
    // Used up: the next call is whole.
    let r = get(&c, &emu, LOOKUP).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.is_ok());
    assert_eq!(state(&emu).await["faults"]["truncate"], json!({}));
}

/// Sends raw HTTP/1.1 requests over one TLS connection from a fixed local address and returns
/// the status of each answer (the last request asks the server to close the connection).
async fn raw_calls(emu: &ps_emulator::Emulator, local: std::net::SocketAddr, requests: &[&str]) -> Vec<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(emu.ca_pem().as_bytes()) {
        let cert: rustls_pki_types::CertificateDer<'static> = cert.expect("CA PEM");
        roots.add(cert).expect("CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(local).expect("bind the fixed client port");
    let tcp = socket.connect(emu.addr()).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS");
    let mut statuses = Vec::new();
    for (i, target) in requests.iter().enumerate() {
        let close = if i + 1 == requests.len() {
            "Connection: close\r\n"
        } else {
            ""
        };
        let req = format!(
            "POST {}/{target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: PS-Auth key={KEY_A}; runas=svc-team-a;\r\nContent-Type: application/json\r\nContent-Length: 0\r\n{close}\r\n",
            ps_emulator::API_PREFIX
        );
        tls.write_all(req.as_bytes()).await.unwrap();
        // Read one answer: the head, then Content-Length bytes of body.
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            tls.read_exact(&mut byte).await.expect("answer head");
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_string();
        statuses.push(head[9..12].parse().unwrap());
        let len: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        tls.read_exact(&mut body).await.unwrap();
    }
    // The server closes (Connection: close): its side keeps TIME_WAIT, the client port is free.
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest).await;
    statuses
}

#[tokio::test]
async fn another_client_on_a_reused_port_is_not_an_early_retry() {
    // Found by the storm: a refused sign-in was recognised by the client's address, and on
    // loopback another agent process soon gets the same port; its first sign-in was counted as
    // an early retry. Clients without a session are now recognised by their connection.
    let emu = start().await;
    faults(
        &emu,
        json!({"limits": {"rate_per_second": 1, "burst": 1, "retry_after_seconds": 30}}),
    )
    .await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // One client: a sign-in takes the only token, the next one on the connection is refused.
    assert_eq!(
        raw_calls(&emu, port, &["Auth/SignAppIn", "Auth/SignAppIn"]).await,
        [200, 429]
    );
    // Another client from the same address and port, at once: its own first call, not a retry.
    let statuses = raw_calls(&emu, port, &["Auth/SignAppIn"]).await;
    assert_eq!(statuses, [429]);
    assert_eq!(state(&emu).await["load"]["early_retries"], 0);
    // The first client's retry on its connection, too early, is counted.
    let again = raw_calls(&emu, port, &["Auth/SignAppIn", "Auth/SignAppIn"]).await;
    assert_eq!(again, [429, 429]);
    assert_eq!(state(&emu).await["load"]["early_retries"], 1);
}
