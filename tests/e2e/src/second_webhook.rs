//! Another team's mutating webhook, for the reinvocation scenario: a minimal HTTPS admission
//! server on 127.0.0.1 (rcgen CA and certificate, rustls with ring, hyper) that adds one init
//! container to every pod it sees, named by the request path (`POST /<container-name>`), unless
//! the pod has it already. It records every call (what it saw, whether it patched).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result};
use base64::prelude::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use inject_api::annotations as ann;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::{Api, api::PostParams};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_rustls::TlsAcceptor;

use crate::{Harness, pods::restricted_container_sc};

/// One AdmissionReview the server answered.
#[derive(Clone, Debug)]
pub struct Call {
    /// The init container this endpoint adds (the request path without `/`).
    pub adds: String,
    pub dry_run: bool,
    /// The pod's `ps-injector.io/status` when this call saw it.
    pub saw_status: Option<String>,
    /// Names of the init containers the pod had when this call saw it.
    pub saw_init_containers: Vec<String>,
    /// Whether this call returned a patch.
    pub patched: bool,
}

pub struct SecondWebhook {
    pub addr: SocketAddr,
    pub ca_pem: String,
    calls: Arc<Mutex<Vec<Call>>>,
    task: JoinHandle<()>,
}

impl Drop for SecondWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SecondWebhook {
    pub async fn start() -> Result<SecondWebhook> {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let now = std::time::SystemTime::now();
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "e2e second webhook CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = (now - Duration::from_secs(3600)).into();
        ca_params.not_after = (now + Duration::from_secs(86_400)).into();
        let ca_pem = ca_params.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(86_400)).into();
        let leaf = params.signed_by(&leaf_key, &issuer)?;

        let certs = vec![CertificateDer::from(leaf.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let mut tls =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .context("the second webhook's certificate")?;
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let recorded = calls.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let calls = recorded.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| handle(req, calls.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(SecondWebhook {
            addr,
            ca_pem,
            calls,
            task,
        })
    }

    /// Calls that were not dry runs.
    pub fn calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .expect("calls lock")
            .iter()
            .filter(|c| !c.dry_run)
            .cloned()
            .collect()
    }

    /// Registers a MutatingWebhookConfiguration `name` whose one webhook adds init container
    /// `adds`, for pods of namespace `ns` only (so other scenarios never see it), with
    /// `reinvocationPolicy: IfNeeded`.
    pub async fn register(&self, h: &Harness, name: &str, adds: &str, ns: &str) {
        let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": format!("{adds}.e2e.invalid"),
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
                "reinvocationPolicy": "IfNeeded",
                "clientConfig": {
                    "url": format!("https://{}/{adds}", self.addr),
                    "caBundle": BASE64_STANDARD.encode(&self.ca_pem),
                },
                "rules": [{
                    "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                    "resources": ["pods"], "scope": "Namespaced",
                }],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
            }],
        }))
        .expect("webhook configuration JSON");
        Api::<MutatingWebhookConfiguration>::all(h.client.clone())
            .create(&PostParams::default(), &mwc)
            .await
            .unwrap_or_else(|e| panic!("creating MutatingWebhookConfiguration {name}: {e}"));
    }

    pub async fn unregister(h: &Harness, name: &str) {
        Api::<MutatingWebhookConfiguration>::all(h.client.clone())
            .delete(name, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("deleting MutatingWebhookConfiguration {name}: {e}"));
    }
}

async fn handle(
    req: Request<Incoming>,
    calls: Arc<Mutex<Vec<Call>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let adds = req.uri().path().trim_start_matches('/').to_owned();
    let body = req.into_body().collect().await?.to_bytes();
    let (status, answer) = match serde_json::from_slice::<Value>(&body) {
        Ok(review) => (200, review_answer(&review, &adds, &calls)),
        Err(_) => (400, json!("not JSON")),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .expect("response"))
}

fn review_answer(review: &Value, adds: &str, calls: &Mutex<Vec<Call>>) -> Value {
    let request = &review["request"];
    let pod = &request["object"];
    let inits: Vec<String> = pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    let has = inits.iter().any(|n| n == adds);
    let mut response = json!({"uid": request["uid"], "allowed": true});
    if !has {
        let container = json!({
            "name": adds,
            "image": "registry.invalid/e2e/other-team:1",
            "command": ["/bin/true"],
            "securityContext": restricted_container_sc(),
        });
        let patch = if pod["spec"]["initContainers"].is_array() {
            json!([{"op": "add", "path": "/spec/initContainers/-", "value": container}])
        } else {
            json!([{"op": "add", "path": "/spec/initContainers", "value": [container]}])
        };
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(BASE64_STANDARD.encode(patch.to_string()));
    }
    calls.lock().expect("calls lock").push(Call {
        adds: adds.to_owned(),
        dry_run: request["dryRun"].as_bool().unwrap_or(false),
        saw_status: pod["metadata"]["annotations"][ann::STATUS]
            .as_str()
            .map(str::to_owned),
        saw_init_containers: inits,
        patched: !has,
    });
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
}
