//! Connection warm-up (`ClientConfig::warm_connections`): the extra connections are opened (TCP
//! and TLS) while sign-in is in flight, used by the calls that follow, and never cost an API
//! call. A TCP relay in front of the emulator counts the connections and what the client sent
//! on each, and when.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use common::*;
use passwordsafe::{Client, Error, SecretPath, Session, parse_secret_paths};
use ps_emulator::Emulator;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// What the client sent on one connection: (time, bytes) per read.
type Sent = Arc<Mutex<Vec<(Instant, usize)>>>;

/// A TCP relay to the emulator that records every connection.
struct Relay {
    base_url: String,
    conns: Arc<Mutex<Vec<Sent>>>,
}

impl Relay {
    async fn start(emu: &Emulator) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = emu.addr();
        let conns: Arc<Mutex<Vec<Sent>>> = Arc::default();
        let all = conns.clone();
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let sent: Sent = Arc::default();
                all.lock().unwrap().push(sent.clone());
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = (down.set_nodelay(true), up.set_nodelay(true));
                    let (mut down_r, mut down_w) = down.into_split();
                    let (mut up_r, mut up_w) = up.into_split();
                    let to_server = async {
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n @ 1..) = down_r.read(&mut buf).await {
                            sent.lock().unwrap().push((Instant::now(), n));
                            if up_w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = up_w.shutdown().await;
                    };
                    let to_client = async {
                        let _ = tokio::io::copy(&mut up_r, &mut down_w).await;
                        let _ = down_w.shutdown().await;
                    };
                    tokio::join!(to_server, to_client);
                });
            }
        });
        Relay {
            base_url: format!("https://127.0.0.1:{port}/BeyondTrust/api/public/v3"),
            conns,
        }
    }

    fn client(&self, emu: &Emulator, warm: usize) -> Client {
        let mut cfg = config(emu, api_key("svc-a"));
        cfg.base_url = self.base_url.clone();
        cfg.warm_connections = warm;
        Client::new(cfg).unwrap()
    }

    fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }

    /// Per connection, the bytes the client had sent by `t`.
    fn sent_by(&self, t: Instant) -> Vec<usize> {
        self.conns
            .lock()
            .unwrap()
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap()
                    .iter()
                    .filter(|(at, _)| *at <= t)
                    .map(|(_, n)| n)
                    .sum()
            })
            .collect()
    }
}

fn paths(n: usize) -> Vec<SecretPath> {
    let list: Vec<String> = (0..n).map(|i| format!("team-a/many/s{i:02}")).collect();
    let refs: Vec<&str> = list.iter().map(String::as_str).collect();
    parse_secret_paths(&refs, '/').expect("valid")
}

/// Fetches `n` secrets at once over `session` and checks their values.
async fn fetch(session: &Session, n: usize) {
    let tasks: Vec<_> = paths(n)
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

/// Signs in, fetches `n` secrets at once, signs out; returns when sign-in returned.
async fn run(client: &Client, n: usize) -> Instant {
    let session = client.sign_in().await.unwrap();
    let signed_in = Instant::now();
    fetch(&session, n).await;
    session.sign_out().await.unwrap();
    signed_in
}

/// The smallest TLS client flight of a handshake (a ClientHello of 200+ bytes, then the
/// client's Finished): a connection that sent at least this much finished its handshake.
const HANDSHAKE_BYTES: usize = 280;

#[tokio::test]
async fn warm_connections_are_ready_before_sign_in_returns_and_used() {
    let emu = start().await;
    faults(&emu, json!({"latency_ms": 150})).await;
    let relay = Relay::start(&emu).await;
    let signed_in = run(&relay.client(&emu, 5), 5).await;

    assert_eq!(
        relay.connections(),
        5,
        "sign-in's connection and 4 warm ones, nothing more"
    );
    let by_sign_in = relay.sent_by(signed_in);
    assert!(
        by_sign_in.iter().all(|&n| n >= HANDSHAKE_BYTES),
        "every handshake was done while sign-in was in flight: {by_sign_in:?}"
    );
    let st = state(&emu).await;
    assert_eq!(st["calls"]["POST auth/signappin"], 1);
    assert_eq!(st["calls"]["GET secrets-safe/secrets"], 5);
    assert_eq!(st["calls"]["POST auth/signout"], 1);
    assert_closed(&emu).await;
}

#[tokio::test]
async fn without_warm_up_the_connections_follow_sign_in() {
    let emu = start().await;
    faults(&emu, json!({"latency_ms": 150})).await;
    let relay = Relay::start(&emu).await;
    let signed_in = run(&relay.client(&emu, 0), 5).await;

    assert_eq!(relay.connections(), 5);
    let opened_during_sign_in = relay.sent_by(signed_in).iter().filter(|&&n| n > 0).count();
    assert_eq!(opened_during_sign_in, 1, "only sign-in's own connection");
    assert_closed(&emu).await;
}

#[tokio::test]
async fn unused_warm_connections_cost_no_api_call() {
    let emu = start().await;
    let relay = Relay::start(&emu).await;
    // More warm connections than calls; capped by max_concurrent_requests.
    let mut cfg = config(&emu, api_key("svc-a"));
    cfg.base_url = relay.base_url.clone();
    cfg.warm_connections = 50;
    cfg.max_concurrent_requests = 4;
    run(&Client::new(cfg).unwrap(), 2).await;
    let st = state(&emu).await;
    assert_eq!(st["calls"]["POST auth/signappin"], 1);
    assert_eq!(st["calls"]["GET secrets-safe/secrets"], 2);
    assert_eq!(st["calls"]["POST auth/signout"], 1);
    let total: u64 = st["calls"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(|v| v.as_u64())
        .sum();
    assert_eq!(total, 4, "no other API call: {}", st["calls"]);
    assert_eq!(
        relay.connections(),
        4,
        "at most max_concurrent_requests connections"
    );
    assert_closed(&emu).await;
}

#[tokio::test]
async fn warm_up_with_an_untrusted_server_fails_promptly() {
    let emu = start().await;
    let mut cfg = config(&emu, api_key("svc-a"));
    let other = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    cfg.tls.ca_bundle_pem = Some(params.self_signed(&other).unwrap().pem().into_bytes());
    cfg.warm_connections = 5;
    let started = Instant::now();
    let err = Client::new(cfg).unwrap().sign_in().await.unwrap_err();
    assert!(matches!(err, Error::Network { attempts: 1, .. }), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "no wait for the warm-up"
    );
    assert_eq!(calls(&emu, "POST auth/signappin").await, 0);
}

#[tokio::test]
async fn warm_up_survives_reauthentication_retries_and_dropped_connections() {
    let emu = start().await;
    let relay = Relay::start(&emu).await;
    let client = relay.client(&emu, 5);
    let session = client.sign_in().await.unwrap();
    faults(&emu, json!({"expire_sessions": true})).await;
    faults(
        &emu,
        json!({
            "fail": {"route": "GET secrets-safe/secrets", "status": 503, "count": 2},
            "drop": {"route": "GET secrets-safe/secrets", "count": 1},
        }),
    )
    .await;
    fetch(&session, 5).await;
    session.sign_out().await.unwrap();
    assert_eq!(
        calls(&emu, "POST auth/signappin").await,
        2,
        "one re-authentication"
    );
    assert_closed(&emu).await;
}
