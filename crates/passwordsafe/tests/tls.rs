//! TLS: trust modes, verification, client certificates (PKCS#8, PKCS#1 and SEC1 keys).

mod common;

use common::*;
use passwordsafe::{CaMode, Client, ClientIdentity, Error};
use ps_emulator::Options;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};

fn other_ca_pem() -> String {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

#[tokio::test]
async fn bundle_added_to_system_roots_is_trusted() {
    let emu = start().await;
    let mut cfg = config(&emu, api_key("svc-a"));
    cfg.tls.ca_mode = CaMode::Add;
    let session = Client::new(cfg)
        .unwrap()
        .sign_in()
        .await
        .expect("trusted through the added bundle");
    session.sign_out().await.unwrap();
}

#[tokio::test]
async fn untrusted_server_fails_without_retrying() {
    let emu = start().await;
    for mode in [CaMode::Replace, CaMode::Add] {
        let mut cfg = config(&emu, api_key("svc-a"));
        cfg.tls.ca_bundle_pem = Some(other_ca_pem().into_bytes());
        cfg.tls.ca_mode = mode;
        let err = Client::new(cfg).unwrap().sign_in().await.unwrap_err();
        let Error::Network { attempts, .. } = &err else {
            panic!("unexpected error: {err}")
        };
        assert_eq!(*attempts, 1, "a certificate failure is not retried: {err}");
        assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
    }
    assert_eq!(calls(&emu, "POST auth/signappin").await, 0);
}

#[tokio::test]
async fn verification_off_connects_to_anything() {
    let emu = start().await;
    let mut cfg = config(&emu, api_key("svc-a"));
    cfg.tls.ca_bundle_pem = None;
    cfg.tls.verify = false;
    let session = Client::new(cfg)
        .unwrap()
        .sign_in()
        .await
        .expect("verification off");
    session.sign_out().await.unwrap();
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[tokio::test]
async fn client_certificates_with_every_key_format() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca_params, ca_key);

    let emu = start_with(Options {
        client_ca_pem: Some(ca_pem),
        ..Options::default()
    })
    .await;

    // Without a certificate, sign-in is refused.
    let err = client(&emu, api_key("svc-a")).sign_in().await.unwrap_err();
    assert!(matches!(err, Error::Authentication { .. }), "{err}");

    for (pkcs8, key_file) in [
        ("client-rsa.pkcs8.pem", "client-rsa.pkcs1.pem"),
        ("client-rsa.pkcs8.pem", "client-rsa.pkcs8.pem"),
        ("client-ec.pkcs8.pem", "client-ec.sec1.pem"),
        ("client-ec.pkcs8.pem", "client-ec.pkcs8.pem"),
    ] {
        let leaf_key = KeyPair::from_pem(&fixture(pkcs8)).unwrap();
        let mut params = CertificateParams::new(vec!["svc-a".to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&leaf_key, &issuer).unwrap();
        let mut cfg = config(&emu, api_key("svc-a"));
        cfg.tls.client_identity =
            Some(ClientIdentity::from_pem(cert.pem().as_bytes(), fixture(key_file).as_bytes()).unwrap());
        let session = Client::new(cfg)
            .unwrap()
            .sign_in()
            .await
            .unwrap_or_else(|e| panic!("{key_file}: {e}"));
        session
            .secret(&"team-a/db/password".parse().unwrap())
            .await
            .expect("read with mTLS");
        session.sign_out().await.unwrap();
    }

    // DER as a PKCS#12 file yields it, with no PEM on the way.
    let leaf_key = KeyPair::from_pem(&fixture("client-ec.pkcs8.pem")).unwrap();
    let mut params = CertificateParams::new(vec!["svc-a".to_owned()]).unwrap();
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&leaf_key, &issuer).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut cfg = config(&emu, api_key("svc-a"));
    cfg.tls.client_identity = Some(ClientIdentity::from_der(vec![cert.der().clone()], key).unwrap());
    let session = Client::new(cfg)
        .unwrap()
        .sign_in()
        .await
        .expect("sign in with a DER identity");
    session.sign_out().await.unwrap();

    // A key that does not match the certificate is a configuration error.
    let leaf_key = KeyPair::from_pem(&fixture("client-ec.pkcs8.pem")).unwrap();
    let cert = CertificateParams::new(vec!["x".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let mut cfg = config(&emu, api_key("svc-a"));
    cfg.tls.client_identity = Some(
        ClientIdentity::from_pem(cert.pem().as_bytes(), fixture("client-rsa.pkcs1.pem").as_bytes()).unwrap(),
    );
    let err = Client::new(cfg).unwrap_err();
    assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
    assert_closed(&emu).await;
}

#[tokio::test]
async fn host_names_resolve_with_both_resolvers() {
    let emu = start().await;
    let url = emu.base_url().replace("127.0.0.1", "localhost");
    for resolver in [passwordsafe::Resolver::Builtin, passwordsafe::Resolver::System] {
        let mut cfg = config(&emu, api_key("svc-a"));
        cfg.base_url = url.clone();
        cfg.resolver = resolver;
        let session = Client::new(cfg)
            .unwrap()
            .sign_in()
            .await
            .unwrap_or_else(|e| panic!("{resolver:?}: {e}"));
        session.sign_out().await.unwrap();
    }
    assert_closed(&emu).await;
}
