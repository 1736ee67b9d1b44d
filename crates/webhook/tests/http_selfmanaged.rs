//! Self-managed certificates over real TLS on 127.0.0.1: the server serves from a resolver the
//! self-managed code keeps current, `/readyz` waits for the trust gate, and through a whole
//! rotation (renew, publish, switch, retire) every client trusting a bundle the API servers may
//! still use completes a real admission request.

mod common;

use std::{sync::Arc, time::Duration};

use ps_webhook::{
    admin::Readiness,
    metrics::Metrics,
    selfmanaged::{
        cluster::serve_state,
        state::{self, CertState, Names, Step, Timing},
    },
    server::{self, ServerConfig, TlsSource},
    tls::{self, CertResolver},
};
use rustls_pki_types::pem::PemObject as _;

fn client_trusting(bundle_pem: &str) -> reqwest::Client {
    let certs = rustls_pki_types::CertificateDer::pem_slice_iter(bundle_pem.as_bytes())
        .map(|c| reqwest::Certificate::from_der(&c.unwrap()).unwrap())
        .collect::<Vec<_>>();
    assert!(!certs.is_empty());
    reqwest::Client::builder()
        .tls_certs_only(certs)
        .no_proxy()
        .build()
        .unwrap()
}

async fn admitted(client: &reqwest::Client, addr: std::net::SocketAddr) -> Result<u16, reqwest::Error> {
    let body = common::pod_review("u1", common::app_pod("app", serde_json::json!({})));
    let rsp = client
        .post(format!("https://localhost:{}/mutate", addr.port()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    Ok(rsp.status().as_u16())
}

#[tokio::test]
async fn readiness_waits_for_trust_and_rotation_keeps_every_bundle_working() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let timing = Timing::new(Duration::from_secs(120)).unwrap();
    let names = Names {
        dns: vec!["localhost".into()],
        ips: vec!["127.0.0.1".parse().unwrap()],
    };
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let mut state: CertState = state::generate_state(&names, now(), &timing).unwrap();
    let first_ca = state::der_to_pem(&state.ca.cert);

    // Start as `serve` does: a placeholder nobody trusts, not ready.
    let placeholder = tls::generate("placeholder", &["localhost"]).unwrap();
    let resolver = Arc::new(CertResolver::new(
        tls::certified_key_from_pem(
            placeholder.cert_pem.as_bytes(),
            placeholder.key_pem.as_bytes(),
            "p".as_ref(),
            "p".as_ref(),
        )
        .unwrap(),
    ));
    let readiness = Readiness::default();
    readiness.set_trusted(false);
    let mut cfg = ServerConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        "unused".into(),
        "unused".into(),
    );
    cfg.tls = TlsSource::Resolver(resolver.clone());
    cfg.readiness = readiness.clone();
    cfg.drain_delay = Duration::ZERO;
    let srv = server::spawn(cfg).await.unwrap();
    let addr = srv.addr();
    let readyz = format!("http://{}/readyz", srv.admin_addr());
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(
        plain.get(&readyz).send().await.unwrap().status(),
        503,
        "placeholder: not ready"
    );
    assert!(
        admitted(&client_trusting(&state.bundle_pem()), addr)
            .await
            .is_err(),
        "the placeholder is not trusted by the bundle"
    );

    // The Secret's certificate is served; ready once the webhook configuration trusts it.
    let metrics = Metrics::new();
    assert!(serve_state(&state, &resolver, &metrics));
    assert_eq!(
        plain.get(&readyz).send().await.unwrap().status(),
        503,
        "still untrusted"
    );
    readiness.set_trusted(true);
    assert_eq!(plain.get(&readyz).send().await.unwrap().status(), 200);
    assert_eq!(
        admitted(&client_trusting(&state.bundle_pem()), addr)
            .await
            .unwrap(),
        200
    );

    // A rotation, step by step as the leader performs it. After each step: a client with the
    // bundle before the step (an API server whose informer lags) and one with the bundle after
    // it both get through.
    for step in [Step::Renew, Step::Publish, Step::Switch, Step::Retire] {
        let before = state.bundle_pem();
        state = state::apply(state, step, &names, now(), &timing)
            .unwrap()
            .unwrap();
        // The leader waits the propagation time before the switch and the overlap before the
        // retirement; here the clients are built after each step, so both bundles are current.
        assert!(serve_state(&state, &resolver, &metrics));
        for (which, bundle) in [("before", &before), ("after", &state.bundle_pem())] {
            let status = admitted(&client_trusting(bundle), addr).await;
            assert_eq!(
                status.as_ref().ok(),
                Some(&200),
                "{step:?}: client with the bundle {which} the step: {status:?}"
            );
        }
    }
    assert_eq!(
        state.bundle().len(),
        1,
        "after the overlap only the new CA remains"
    );
    // A client that knows only the first CA is refused now: the check can fail.
    assert!(admitted(&client_trusting(&first_ca), addr).await.is_err());
    assert!(metrics.certificate_reloads(true) >= 5);
    srv.shutdown().await;
}
