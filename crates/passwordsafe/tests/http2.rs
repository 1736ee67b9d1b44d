//! HTTP/2: the client offers `h2` and `http/1.1` in ALPN. Against a server that speaks HTTP/2
//! (IIS does; so does ps-emulator by default), the concurrent calls after sign-in share
//! sign-in's connection: one TCP connection and one TLS handshake per session, whatever the
//! number of calls in flight. Against an HTTP/1.1-only server (`Options::http1_only`, as behind
//! an HTTP/1.1 proxy) the same calls open one connection each and still work.

mod common;

use common::*;
use passwordsafe::{Session, parse_secret_paths};
use ps_emulator::{Emulator, Options, testing::Operator};
use serde_json::{Value, json};

/// Fetches `n` secrets of `team-a/many` at once over `session` and checks their values.
async fn fetch(session: &Session, n: usize) {
    let list: Vec<String> = (0..n).map(|i| format!("team-a/many/s{i:02}")).collect();
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    let tasks: Vec<_> = parse_secret_paths(&refs, '/')
        .expect("valid")
        .into_iter()
        .map(|p| {
            let s = session.clone();
            tokio::spawn(async move { s.secret(&p).await })
        })
        .collect();
    for (i, t) in tasks.into_iter().enumerate() {
        assert_value(
            &t.await.unwrap().expect("secret").value,
            &format!("PSCANARY-secret-text-v{i:02}"),
            "many",
        );
    }
}

/// How much a `traffic` counter grew between two states.
fn grew(before: &Value, after: &Value, key: &str) -> u64 {
    after["traffic"][key].as_u64().unwrap() - before["traffic"][key].as_u64().unwrap()
}

/// Signs in, fetches 5 secrets at once (each answer 100 ms late, so all 5 are in flight
/// together), signs out; returns the emulator's state before and after. The operator keeps one
/// connection of its own, opened before the first reading.
async fn session_of_five(emu: &Emulator) -> (Value, Value) {
    let op = Operator::new(emu);
    op.faults(json!({"latency_ms": 100})).await;
    let before = op.state().await;
    let session = client(emu, api_key("svc-a")).sign_in().await.unwrap();
    fetch(&session, 5).await;
    session.sign_out().await.unwrap();
    let after = op.state().await;
    assert_eq!(after["calls"]["POST auth/signappin"], 1);
    assert_eq!(after["calls"]["GET secrets-safe/secrets"], 5);
    assert_eq!(after["calls"]["POST auth/signout"], 1);
    assert_eq!(grew(&before, &after, "http_requests"), 7, "{after}");
    op.assert_closed().await;
    (before, after)
}

#[tokio::test]
async fn concurrent_calls_after_sign_in_ride_one_h2_connection() {
    let emu = start().await;
    let (before, after) = session_of_five(&emu).await;
    assert_eq!(grew(&before, &after, "tcp_accepted"), 1, "{after}");
    assert_eq!(grew(&before, &after, "tls_handshakes"), 1, "{after}");
}

#[tokio::test]
async fn an_http1_only_server_gets_one_connection_per_call_in_flight() {
    let emu = start_with(Options {
        http1_only: true,
        ..Options::default()
    })
    .await;
    let (before, after) = session_of_five(&emu).await;
    // Sign-in's connection serves one of the five; four more are opened for the others.
    assert_eq!(grew(&before, &after, "tcp_accepted"), 5, "{after}");
    assert_eq!(grew(&before, &after, "tls_handshakes"), 5, "{after}");
}

/// A dropped connection takes every call in flight on it down with it under HTTP/2: they are
/// retried on a new connection, as are 503s and the calls of an expired session.
#[tokio::test]
async fn h2_survives_reauthentication_retries_and_a_dropped_connection() {
    let emu = start().await;
    let op = Operator::new(&emu);
    let session = client(&emu, api_key("svc-a")).sign_in().await.unwrap();
    op.faults(json!({"expire_sessions": true})).await;
    op.faults(json!({
        "fail": {"route": "GET secrets-safe/secrets", "status": 503, "count": 2},
        "drop": {"route": "GET secrets-safe/secrets", "count": 1},
    }))
    .await;
    fetch(&session, 5).await;
    session.sign_out().await.unwrap();
    assert_eq!(op.calls("POST auth/signappin").await, 2, "one re-authentication");
    op.assert_closed().await;
}

/// The size limit of responses holds over HTTP/2: a file larger than `max_file_bytes` is
/// refused, naming the limit, and the session goes on.
#[tokio::test]
async fn the_response_size_limit_holds_over_h2() {
    let emu = start().await;
    let mut cfg = config(&emu, api_key("svc-a"));
    cfg.max_file_bytes = 10;
    let session = passwordsafe::Client::new(cfg).unwrap().sign_in().await.unwrap();
    let path = "team-a/db/tls.crt".parse().unwrap();
    let err = session.secret(&path).await.unwrap_err();
    assert!(
        matches!(&err, passwordsafe::Error::InvalidResponse { reason, .. }
            if reason.contains("larger than the limit of 10 bytes")),
        "{err}"
    );
    fetch(&session, 2).await;
    session.sign_out().await.unwrap();
}

/// A call that outlives `request_timeout` fails as a network error after its retries; under
/// HTTP/2 only its stream is given up, and the session's connection serves the next calls.
#[tokio::test]
async fn request_timeouts_hold_over_h2_and_keep_the_connection() {
    let emu = start().await;
    let op = Operator::new(&emu);
    let before = op.state().await;
    let mut cfg = config(&emu, api_key("svc-a"));
    cfg.request_timeout = std::time::Duration::from_millis(300);
    cfg.retry.max_elapsed = std::time::Duration::from_millis(500);
    let session = passwordsafe::Client::new(cfg).unwrap().sign_in().await.unwrap();
    op.faults(json!({"latency_ms": 1000})).await;
    let path = "team-a/many/s00".parse().unwrap();
    let err = session.secret(&path).await.unwrap_err();
    assert!(
        matches!(&err, passwordsafe::Error::Network { detail, .. } if detail.contains("timed out")),
        "{err}"
    );
    op.faults(json!({"latency_ms": 0})).await;
    fetch(&session, 3).await;
    session.sign_out().await.unwrap();
    let after = op.state().await;
    assert_eq!(grew(&before, &after, "tcp_accepted"), 1, "{after}");
}
