//! Operator endpoints: state, faults, secret and password updates.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn state_counts_calls_per_route_key() {
    let emu = start().await;
    let s = state(&emu).await;
    assert_eq!(s["sessions_open"], 0);
    assert_eq!(s["requests_open"], 0);
    for key in [
        "POST auth/connect/token",
        "POST auth/signappin",
        "POST auth/signout",
        "GET secrets-safe/secrets",
        "GET secrets-safe/secrets/{id}",
        "GET secrets-safe/secrets/{id}/file/download",
        "GET secrets-safe/folders",
        "GET secrets-safe/safes",
        "GET managedaccounts",
        "POST requests",
        "GET requests",
        "GET credentials/{id}",
        "PUT requests/{id}/checkin",
    ] {
        assert_eq!(s["calls"][key], 0, "contract route key {key}");
    }
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    for _ in 0..3 {
        get(&c, &emu, "Secrets-Safe/Secrets?path=team-a/db&title=password").await;
    }
    get(&c, &emu, "secrets-safe/secrets/abc").await;
    get(&c, &emu, "Credentials/1").await;
    c.put(url(&emu, "Requests/5/Checkin")).send().await.unwrap();
    c.post(url(&emu, "Auth/Signout")).send().await.unwrap();
    let s = state(&emu).await;
    assert_eq!(s["calls"]["POST auth/signappin"], 1);
    assert_eq!(s["calls"]["GET secrets-safe/secrets"], 3);
    assert_eq!(s["calls"]["GET secrets-safe/secrets/{id}"], 1);
    assert_eq!(s["calls"]["GET credentials/{id}"], 1);
    assert_eq!(s["calls"]["PUT requests/{id}/checkin"], 1);
    assert_eq!(s["calls"]["POST auth/signout"], 1);
    assert_eq!(s["sessions_open"], 0);
}

/// `traffic` counts what a benchmark needs beside `calls`: connections, TLS handshakes (full
/// and resumed), API requests, and the peaks of open connections and sessions.
#[tokio::test]
async fn state_counts_connections_handshakes_requests_and_peaks() {
    let emu = start().await;
    let t = state(&emu).await["traffic"].clone();
    // The state call itself came over one connection; operator requests are not counted.
    assert_eq!(t["tcp_accepted"], 1, "{t}");
    assert_eq!(t["tls_handshakes"], 1, "{t}");
    assert_eq!(t["http_requests"], 0, "{t}");
    assert_eq!(t["peak_sessions"], 0, "{t}");

    // Two clients, each on one keep-alive connection, with sessions open at the same time.
    let a = client(&emu);
    let b = client(&emu);
    sign_in(&a, &emu, "svc-team-a").await;
    sign_in(&b, &emu, "svc-team-a").await;
    for _ in 0..3 {
        get(&a, &emu, "Secrets-Safe/Secrets?path=team-a/db&title=password").await;
    }
    a.post(url(&emu, "Auth/Signout")).send().await.unwrap();
    b.post(url(&emu, "Auth/Signout")).send().await.unwrap();
    let t = state(&emu).await["traffic"].clone();
    assert_eq!(t["tcp_accepted"], 4, "{t}");
    assert_eq!(t["tls_handshakes"], 4, "{t}");
    assert_eq!(t["tls_resumed"], 0, "{t}");
    assert_eq!(t["http_requests"], 7, "{t}");
    assert_eq!(t["peak_sessions"], 2, "{t}");
    assert!(t["peak_connections"].as_u64().unwrap() >= 2, "{t}");

    // A client that closes its connection after each request reconnects with TLS resumption.
    let c = client(&emu);
    for _ in 0..2 {
        let r = c
            .get(url(&emu, "Secrets-Safe/Secrets?path=team-a/db&title=password"))
            .header("Connection", "close")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let t = state(&emu).await["traffic"].clone();
    assert_eq!(t["tcp_accepted"], 7, "{t}");
    assert_eq!(t["tls_handshakes"], 7, "{t}");
    assert_eq!(t["tls_resumed"], 1, "{t}");
    assert_eq!(t["http_requests"], 9, "{t}");
}

#[tokio::test]
async fn fail_the_next_n_calls_of_a_route() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let (status, f) = faults(
        &emu,
        json!({"fail": {"route": "GET secrets-safe/secrets", "status": 503, "count": 2}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        f["fail"]["GET secrets-safe/secrets"],
        json!({"status": 503, "count": 2})
    );
    let path = "secrets-safe/secrets?path=team-a/db&title=password";
    assert_eq!(
        get(&c, &emu, path).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // Other routes are unaffected.
    assert_eq!(get(&c, &emu, "secrets-safe/safes").await.status(), StatusCode::OK);
    assert_eq!(
        get(&c, &emu, path).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&c, &emu, path).await.status(), StatusCode::OK);
    // Failed calls are counted too.
    assert_eq!(state(&emu).await["calls"]["GET secrets-safe/secrets"], 3);

    // A forced 401 on sign-in, several routes at once, keys in any case.
    let (status, _) = faults(
        &emu,
        json!({"fail": [{"route": "post Auth/SignAppIn", "status": 401}, {"route": "GET managedaccounts", "status": 408, "count": 1}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let r = sign_in_header(&c, &emu, &format!("PS-Auth key={KEY_A}; runas=svc-team-a;")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(&c, &emu, "ManagedAccounts").await.status(),
        StatusCode::REQUEST_TIMEOUT
    );
    sign_in(&c, &emu, "svc-team-a").await;
}

#[tokio::test]
async fn drop_closes_the_connection_without_an_answer() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let (status, _) = faults(
        &emu,
        json!({"drop": {"route": "GET secrets-safe/secrets", "count": 1}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let err = c
        .get(url(&emu, "secrets-safe/secrets?path=team-a/db&title=password"))
        .send()
        .await;
    assert!(err.is_err(), "the call must fail at the transport level");
    // The next call works (on a new connection).
    assert_eq!(
        get(&c, &emu, "secrets-safe/secrets?path=team-a/db&title=password")
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn latency_is_added_and_cleared() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    faults(&emu, json!({"latency_ms": 400})).await;
    let t = Instant::now();
    assert_eq!(get(&c, &emu, "secrets-safe/safes").await.status(), StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(400), "{:?}", t.elapsed());
    // Operator endpoints are not delayed.
    let t = Instant::now();
    state(&emu).await;
    assert!(t.elapsed() < Duration::from_millis(400));
    faults(&emu, json!({"latency_ms": 0})).await;
    let t = Instant::now();
    get(&c, &emu, "secrets-safe/safes").await;
    assert!(t.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn expire_sessions_and_reset() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    faults(
        &emu,
        json!({"latency_ms": 10, "fail": {"route": "GET requests", "status": 500, "count": 5}}),
    )
    .await;
    let (_, f) = faults(&emu, json!({"expire_sessions": true})).await;
    assert_eq!(f["latency_ms"], 10, "a call replaces only what it names");
    assert_eq!(state(&emu).await["sessions_open"], 0);
    assert_eq!(
        get(&c, &emu, "secrets-safe/safes").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (_, f) = faults(&emu, json!({"reset": true})).await;
    assert_eq!(f, no_faults());
    sign_in(&c, &emu, "svc-team-a").await;
    assert_eq!(get(&c, &emu, "Requests").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_fault_bodies_change_nothing() {
    let emu = start().await;
    for body in [
        json!({"fail": {"route": "GET nowhere", "status": 500}}),
        json!({"fail": {"route": "GET requests", "status": 99}}),
        json!({"latency_ms": 5, "drop": {"route": "bogus"}}),
        json!({"unknown": 1}),
    ] {
        let (status, v) = faults(&emu, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(v["error"].is_string());
    }
    let s = state(&emu).await;
    assert_eq!(s["faults"], no_faults());
}

#[tokio::test]
async fn put_secret_changes_values_of_every_type() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let op = bare_client(&emu);
    let put = |body: Value| {
        let op = op.clone();
        let u = format!("{}/_emulator/secret", emu.origin());
        async move { op.put(u).json(&body).send().await.unwrap().status() }
    };
    let (_, before) = get_json(&c, &emu, "secrets-safe/secrets?path=team-a/db&title=password").await;
    assert_eq!(
        put(json!({"path": "team-a/db", "title": "password", "value": "PSCANARY-secret-pw-rotated-1"})).await,
        StatusCode::OK
    );
    let (_, after) = get_json(&c, &emu, "secrets-safe/secrets?path=team-a/db&title=password").await;
    assert_value(
        after[0]["Password"].as_str(),
        "PSCANARY-secret-pw-rotated-1",
        "rotated credential",
    );
    assert_ne!(before[0]["ModifiedOn"], after[0]["ModifiedOn"]);
    assert_eq!(before[0]["CreatedOn"], after[0]["CreatedOn"]);

    assert_eq!(
        put(json!({"path": "TEAM-A/db", "title": "Config", "value": "PSCANARY-secret-text-a=2"})).await,
        StatusCode::OK
    );
    let (_, v) = get_json(&c, &emu, "secrets-safe/secrets?path=team-a/db&title=config").await;
    assert_value(
        v[0]["Password"].as_str(),
        "PSCANARY-secret-text-a=2",
        "rotated text",
    );

    assert_eq!(
        put(json!({"path": "team-a*db", "separator": "*", "title": "tls.crt", "value": "PSCANARY-secret-file-new"})).await,
        StatusCode::OK
    );
    let id = get_json(&c, &emu, "secrets-safe/secrets?path=team-a/db&title=tls.crt")
        .await
        .1[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let body = get(&c, &emu, &format!("secrets-safe/secrets/{id}/file/download"))
        .await
        .text()
        .await
        .unwrap();
    assert_value(Some(&body), "PSCANARY-secret-file-new", "rotated file");

    assert_eq!(
        put(json!({"path": "team-a/db", "title": "nope", "value": "x"})).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put(json!({"path": "team-z", "title": "password", "value": "x"})).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put(json!({"path": "team-a/db", "value": "x"})).await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put(json!({"path": "team-a/db", "title": "password", "value": "x", "password": "y"})).await,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn put_managed_account_password() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
    let op = bare_client(&emu);
    let u = format!("{}/_emulator/secret", emu.origin());
    let r = op
        .put(&u)
        .json(
            &json!({"system": "db-prod", "account": "svc_static", "password": "PSCANARY-account-pw-changed"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (_, acct) = get_json(
        &c,
        &emu,
        "ManagedAccounts?systemName=db-prod&accountName=svc_static",
    )
    .await;
    let r = c
        .post(url(&emu, "Requests"))
        .json(&json!({"SystemID": acct["SystemId"], "AccountID": acct["AccountId"], "DurationMinutes": 1}))
        .send()
        .await
        .unwrap();
    let id = r.text().await.unwrap();
    let pw = get(&c, &emu, &format!("Credentials/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert_value(
        serde_json::from_str::<String>(&pw).ok().as_deref(),
        "PSCANARY-account-pw-changed",
        "operator-set password",
    );
    let r = op
        .put(&u)
        .json(&json!({"system": "db-prod", "account": "ghost", "password": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_operator_paths() {
    let emu = start().await;
    let op = bare_client(&emu);
    let r = op
        .get(format!("{}/_emulator/nothing", emu.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = op
        .get(format!("{}/_emulator/faults", emu.origin()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

/// The `faults` object with nothing injected and no limits.
fn no_faults() -> serde_json::Value {
    json!({
        "latency_ms": 0, "fail": {}, "drop": {}, "truncate": {}, "pending_approval": false,
        "checkin_before_read": 0,
        "limits": {"max_concurrent": 0, "rate_per_second": 0, "burst": 0, "retry_after_seconds": 1},
    })
}
