//! Client-certificate mode: SignAppIn requires a certificate signed by the configured CA.

mod common;

use common::*;
use ps_emulator::{AUTH_FAILED, Options};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use reqwest::StatusCode;

/// A CA and a client certificate it signed: (CA PEM, client cert + key PEM).
fn client_pki(name: &str) -> (String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} client CA"));
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, "svc-team-a");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), format!("{}{}", cert.pem(), key.serialize_pem()))
}

#[tokio::test]
async fn sign_in_requires_a_verified_client_certificate() {
    let (ca_pem, identity_pem) = client_pki("trusted");
    let emu = start_with(Options {
        client_ca_pem: Some(ca_pem),
        ..Options::default()
    })
    .await;
    let header = format!("PS-Auth key={KEY_A}; runas=svc-team-a;");

    // No certificate: TLS still works (optional at the TLS level), SignAppIn is refused.
    let plain = client(&emu);
    let r = sign_in_header(&plain, &emu, &header).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(error_text(r).await, AUTH_FAILED);
    // The token endpoint needs no certificate.
    let r = token_response(&plain, &emu, CLIENT_ID, CLIENT_SECRET).await;
    assert_eq!(r.status(), StatusCode::OK);

    // With a certificate from the trusted CA: accepted, and the session works.
    let identity = reqwest::Identity::from_pem(identity_pem.as_bytes()).unwrap();
    let with_cert = builder(&emu)
        .identity(identity)
        .cookie_store(true)
        .build()
        .unwrap();
    let r = sign_in_header(&with_cert, &emu, &header).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        get(&with_cert, &emu, "secrets-safe/safes").await.status(),
        StatusCode::OK
    );
    // A valid certificate does not excuse a bad key.
    let r = sign_in_header(&with_cert, &emu, "PS-Auth key=nope; runas=svc-team-a;").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // A certificate from another CA is rejected during the handshake.
    let (_, foreign_pem) = client_pki("foreign");
    let foreign = builder(&emu)
        .identity(reqwest::Identity::from_pem(foreign_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let r = foreign
        .post(url(&emu, "Auth/SignAppIn"))
        .header("Authorization", &header)
        .send()
        .await;
    assert!(
        r.is_err(),
        "an untrusted client certificate must fail the handshake"
    );
}

#[tokio::test]
async fn without_client_ca_certificates_are_not_needed() {
    let emu = start().await;
    let c = client(&emu);
    sign_in(&c, &emu, "svc-team-a").await;
}
