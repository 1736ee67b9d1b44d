//! HTTP/2 through ALPN: the emulator offers `h2` and `http/1.1` (as IIS does) and serves the one
//! the client picks; `Options::http1_only` offers `http/1.1` alone. The traffic counters count
//! connections and handshakes, not streams, and the `drop` and `truncate` faults close the whole
//! connection under HTTP/2 too.

mod common;

use common::*;
use ps_emulator::{Emulator, Options, testing::Operator};
use reqwest::{Client, StatusCode, Version};
use serde_json::{Value, json};

const LOOKUP: &str = "secrets-safe/secrets?path=team-a/db&title=password";

/// A client with a cookie jar that offers `h2` and `http/1.1`.
fn h2_client(emu: &Emulator) -> Client {
    any_version_builder(emu)
        .cookie_store(true)
        .build()
        .expect("client")
}

/// Signs in with key A and returns the HTTP version the answer came with.
async fn sign_in_version(c: &Client, emu: &Emulator) -> Version {
    let r = sign_in_header(c, emu, &format!("PS-Auth key={KEY_A}; runas=svc-team-a;")).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.version()
}

/// `traffic` after minus before, for one counter.
fn grew(before: &Value, after: &Value, key: &str) -> u64 {
    after["traffic"][key].as_u64().unwrap() - before["traffic"][key].as_u64().unwrap()
}

/// `n` lookups at once; returns the HTTP version of each answer.
async fn lookups(c: &Client, emu: &Emulator, n: usize) -> Vec<Version> {
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (c, url) = (c.clone(), url(emu, LOOKUP));
        calls.spawn(async move {
            let r = c.get(url).send().await.expect("an answer");
            assert_eq!(r.status(), StatusCode::OK);
            let version = r.version();
            r.bytes().await.expect("the whole body");
            version
        });
    }
    calls.join_all().await
}

#[tokio::test]
async fn concurrent_calls_share_one_h2_connection() {
    let emu = start().await;
    // One operator connection, opened before the first reading and reused after.
    let op = Operator::new(&emu);
    op.faults(json!({"latency_ms": 100})).await;
    let before = op.state().await;
    let c = h2_client(&emu);
    assert_eq!(sign_in_version(&c, &emu).await, Version::HTTP_2);
    let versions = lookups(&c, &emu, 10).await;
    assert!(versions.iter().all(|v| *v == Version::HTTP_2), "{versions:?}");
    let after = op.state().await;
    assert_eq!(grew(&before, &after, "tcp_accepted"), 1, "{after}");
    assert_eq!(grew(&before, &after, "tls_handshakes"), 1, "{after}");
    assert_eq!(grew(&before, &after, "http_requests"), 11, "{after}");
    assert_eq!(after["calls"]["GET secrets-safe/secrets"], 10);
}

#[tokio::test]
async fn http1_only_serves_http1_to_a_client_that_offers_h2() {
    let emu = start_with(Options {
        http1_only: true,
        ..Options::default()
    })
    .await;
    let op = Operator::new(&emu);
    // The three lookups overlap: each needs a connection of its own.
    op.faults(json!({"latency_ms": 100})).await;
    let before = op.state().await;
    let c = h2_client(&emu);
    assert_eq!(sign_in_version(&c, &emu).await, Version::HTTP_11);
    let versions = lookups(&c, &emu, 3).await;
    assert!(versions.iter().all(|v| *v == Version::HTTP_11), "{versions:?}");
    let after = op.state().await;
    assert_eq!(grew(&before, &after, "tcp_accepted"), 3, "{after}");
    assert_eq!(grew(&before, &after, "http_requests"), 4, "{after}");
}

#[tokio::test]
async fn drop_and_truncate_close_the_h2_connection() {
    let emu = start().await;
    let op = Operator::new(&emu);
    let before = op.state().await;
    let c = h2_client(&emu);
    assert_eq!(sign_in_version(&c, &emu).await, Version::HTTP_2);

    op.faults(json!({"drop": {"route": "GET secrets-safe/secrets", "count": 1}}))
        .await;
    assert!(
        c.get(url(&emu, LOOKUP)).send().await.is_err(),
        "no answer to the dropped call"
    );
    // The session lives on; the connection does not.
    assert_eq!(lookups(&c, &emu, 1).await, [Version::HTTP_2]);
    let mid = op.state().await;
    assert_eq!(grew(&before, &mid, "tcp_accepted"), 2, "{mid}");

    op.faults(json!({"truncate": {"route": "GET secrets-safe/secrets", "count": 1}}))
        .await;
    let r = get(&c, &emu, LOOKUP).await;
    assert_eq!(r.status(), StatusCode::OK, "the status and headers arrive");
    assert!(r.bytes().await.is_err(), "the body is cut off");
    assert_eq!(lookups(&c, &emu, 1).await, [Version::HTTP_2]);
    let after = op.state().await;
    assert_eq!(grew(&before, &after, "tcp_accepted"), 3, "{after}");
}
