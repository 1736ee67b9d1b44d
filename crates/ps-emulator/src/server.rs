//! TLS, the accept loop and the per-request pipeline (routing, counting, faults, dispatch).

use std::{
    fmt,
    future::Future as _,
    hash::{Hash as _, Hasher as _},
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    sync::atomic::Ordering,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::{
    Method, Request, Response, StatusCode,
    body::{Frame, Incoming, SizeHint},
    header::{self, HeaderValue},
    server::conn::{http1, http2},
    service::service_fn,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::{
    RootCertStore, ServerConfig,
    server::{WebPkiClientVerifier, danger::ClientCertVerifier},
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::{
    net::TcpListener,
    sync::{Notify, oneshot},
    task::JoinSet,
};
use tokio_rustls::TlsAcceptor;

use crate::{
    Error,
    api::{self, Call, Resp},
    limits::Refusal,
    operator,
    routes::{Matched, match_route, strip_prefix},
    state::{Injected, Shared},
    util::Query,
};

/// Largest request body read (file secrets go up to 5,000,000 bytes).
const MAX_BODY: usize = 8 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Streams one HTTP/2 connection carries at once: IIS's default (HTTP.sys
/// `Http2MaxConcurrentStreams`), so a client that opens more waits as it would there.
const H2_MAX_STREAMS: u32 = 100;

/// The serving certificate and what clients should trust.
pub(crate) struct TlsMaterial {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// PEM of the generated CA, or of the provided certificate chain.
    pub trust_pem: String,
}

/// Generates a CA and a serving certificate for 127.0.0.1, ::1 and localhost (ECDSA P-256).
pub(crate) fn generate_tls() -> Result<TlsMaterial, Error> {
    let ca_key = KeyPair::generate().map_err(Error::CertGen)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(Error::CertGen)?;
    ca.distinguished_name
        .push(DnType::CommonName, "ps-emulator test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(Error::CertGen)?;
    let issuer = Issuer::new(ca, ca_key);

    let leaf_key = KeyPair::generate().map_err(Error::CertGen)?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".into(), "::1".into(), "localhost".into()])
        .map_err(Error::CertGen)?;
    leaf.distinguished_name.push(DnType::CommonName, "ps-emulator");
    // RFC 5280 §4.2.1.1: a certificate not self-issued names its issuer's key. OpenSSL's strict
    // verification (`VERIFY_X509_STRICT`, on by default in Python 3.13's `ssl` and in urllib3 2.x
    // on Python 3.13+, so in BeyondTrust's Python library) refuses a leaf without it.
    leaf.use_authority_key_identifier_extension = true;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).map_err(Error::CertGen)?;

    Ok(TlsMaterial {
        chain: vec![leaf_cert.der().clone(), ca_cert.der().clone()],
        key: PrivateKeyDer::try_from(leaf_key.serialize_der()).map_err(|e| Error::Tls(e.to_string()))?,
        trust_pem: ca_cert.pem(),
    })
}

/// Loads a PEM certificate chain and private key.
pub(crate) fn load_tls(cert_pem: &str, key_pem: &str) -> Result<TlsMaterial, Error> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("certificate: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Tls("certificate: no CERTIFICATE block found".into()));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| Error::Tls(format!("key: {e}")))?;
    Ok(TlsMaterial {
        chain,
        key,
        trust_pem: cert_pem.to_string(),
    })
}

/// The rustls server configuration. ALPN offers `h2` then `http/1.1` (IIS, which serves
/// Password Safe, speaks both), or `http/1.1` alone with `http1_only` (a server behind an
/// HTTP/1.1-only proxy).
pub(crate) fn server_config(
    tls: &TlsMaterial,
    client_ca_pem: Option<&str>,
    http1_only: bool,
) -> Result<ServerConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(e.to_string()))?;
    let builder = match client_ca_pem {
        None => builder.with_no_client_auth(),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| Error::Tls(format!("client CA: {e}")))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Tls(format!("client CA: {e}")))?;
            }
            if roots.is_empty() {
                return Err(Error::Tls("client CA: no CERTIFICATE block found".into()));
            }
            // Certificates are optional at the TLS level (the token call needs none); SignAppIn
            // refuses a connection that did not present a verified one.
            let verifier: Arc<dyn ClientCertVerifier> =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .allow_unauthenticated()
                    .build()
                    .map_err(|e| Error::Tls(format!("client CA: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = if http1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// The accept loop: runs until `stop` fires; dropping the JoinSet aborts open connections.
pub(crate) async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    // Numbers every connection: unlike its address (a port is soon reused on loopback), a
    // number is never given twice, so it identifies a client that has no session yet.
    let mut next_conn: u64 = 0;
    loop {
        let accepted = tokio::select! {
            _ = &mut stop => break,
            a = listener.accept() => a,
        };
        while conns.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        next_conn += 1;
        let conn = next_conn;
        let acceptor = acceptor.clone();
        let shared = Arc::clone(&shared);
        conns.spawn(async move {
            let counted = Arc::clone(&shared);
            let _open = counted.traffic.accepted();
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let session = tls.get_ref().1;
            let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            shared.traffic.handshake(resumed);
            let client_cert = session.peer_certificates().is_some_and(|c| !c.is_empty());
            // The protocol is the one ALPN agreed on; a client that offered none gets HTTP/1.1.
            let h2 = session.alpn_protocol() == Some(b"h2");
            // Fired by the `drop` and `truncate` faults: the whole connection is closed, as
            // their contract says, also under HTTP/2 (where a failed stream alone would only
            // be reset and the connection would live on).
            let cut = Arc::new(Notify::new());
            let cut_by_call = Arc::clone(&cut);
            let svc = service_fn(move |req| {
                handle(
                    Arc::clone(&shared),
                    req,
                    client_cert,
                    peer,
                    conn,
                    Arc::clone(&cut_by_call),
                )
            });
            let io = TokioIo::new(tls);
            let served = async {
                if h2 {
                    http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(H2_MAX_STREAMS)
                        .serve_connection(io, svc)
                        .await
                } else {
                    http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(io, svc)
                        .await
                }
            };
            tokio::select! {
                r = served => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended");
                },
                _ = cut.notified() => tracing::debug!(%peer, "fault: connection closed"),
            }
        });
    }
}

/// Returned by the service to close the connection without an answer (the `drop` fault), and
/// by a truncated body to cut the connection (the `truncate` fault).
#[derive(Debug)]
pub(crate) struct Dropped;

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// What the service answers with: a whole body, or (the `truncate` fault) a body cut short.
type Served = Response<Either<Full<Bytes>, Truncated>>;

/// A body that announces its full length, sends the first half, and then fails, so hyper
/// closes the connection in the middle of the body.
pub(crate) struct Truncated {
    part: Option<Bytes>,
    declared: u64,
    /// A short pause after the part, so it reaches the socket before the connection is cut.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Closes the connection once the part is out.
    cut: Arc<Notify>,
}

impl Truncated {
    fn new(full: &Bytes, cut: Arc<Notify>) -> Truncated {
        Truncated {
            part: Some(full.slice(..full.len() / 2)),
            // An empty body is cut short too: one byte is announced and none sent.
            declared: full.len().max(1) as u64,
            pause: None,
            cut,
        }
    }
}

impl hyper::body::Body for Truncated {
    type Data = Bytes;
    type Error = Dropped;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Dropped>>> {
        if let Some(part) = self.part.take() {
            self.pause = Some(Box::pin(tokio::time::sleep(Duration::from_millis(20))));
            if !part.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(part))));
            }
        }
        if let Some(pause) = self.pause.as_mut() {
            std::task::ready!(pause.as_mut().poll(cx));
        }
        // `notify_one` keeps the permit if the connection task is not waiting yet.
        self.cut.notify_one();
        Poll::Ready(Some(Err(Dropped)))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.declared)
    }
}

async fn read_body(body: Incoming) -> Result<Bytes, Resp> {
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(api::json_string(
            StatusCode::PAYLOAD_TOO_LARGE,
            "The request body is too large",
        )),
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    client_cert: bool,
    peer: SocketAddr,
    conn: u64,
    cut: Arc<Notify>,
) -> Result<Served, Dropped> {
    let lower = req.uri().path().to_lowercase();
    if lower.starts_with("/_emulator/") || lower == "/_emulator" {
        let method = req.method().clone();
        let body = match read_body(req.into_body()).await {
            Ok(b) => b,
            Err(r) => return Ok(whole(r)),
        };
        return Ok(whole(operator::handle(&shared, &method, &lower, &body)));
    }
    shared.traffic.request();
    let Some(rest) = strip_prefix(&lower) else {
        return Ok(whole(api::json_string(StatusCode::NOT_FOUND, "Not found")));
    };
    let (route, id) = match match_route(req.method(), rest) {
        Matched::Api(route, id) => (route, id.map(str::to_string)),
        Matched::MethodNotAllowed => {
            return Ok(whole(api::json_string(
                StatusCode::METHOD_NOT_ALLOWED,
                "The requested resource does not support this method",
            )));
        }
        Matched::NotFound => return Ok(whole(api::json_string(StatusCode::NOT_FOUND, "Not found"))),
    };
    shared.calls[route as usize].fetch_add(1, Ordering::Relaxed);

    let (parts, body) = req.into_parts();
    let body = if parts.method == Method::GET {
        Bytes::new()
    } else {
        match read_body(body).await {
            Ok(b) => b,
            Err(r) => return Ok(whole(r)),
        }
    };
    let key = || call_key(&parts, &body, conn);
    let mut flight = shared.limits.enter(key);
    if let Err(refusal) = shared.limits.admit(&mut flight, key) {
        let (status, retry_after, msg) = match refusal {
            Refusal::Throttled(s) => (StatusCode::TOO_MANY_REQUESTS, s, "Too many requests"),
            Refusal::Overloaded(s) => (StatusCode::SERVICE_UNAVAILABLE, s, "Server too busy"),
        };
        tracing::debug!(%peer, route = route.key(), status = status.as_u16(), "limit: refusing the call");
        let mut r = api::json_string(status, msg);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        return Ok(whole(r));
    }

    let latency = shared.faults.latency_ms.load(Ordering::Relaxed);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let mut truncate = false;
    match shared.faults.take(route) {
        Injected::None => {}
        Injected::Truncate => truncate = true,
        Injected::Drop => {
            tracing::debug!(%peer, route = route.key(), "fault: dropping the connection");
            cut.notify_one();
            return Err(Dropped);
        }
        Injected::Fail(status) => {
            tracing::debug!(%peer, route = route.key(), status, "fault: failing the call");
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            return Ok(whole(
                if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
                    api::empty(status)
                } else {
                    api::json_string(status, "Injected fault")
                },
            ));
        }
    }

    let call = Call {
        shared: &shared,
        id: id.as_deref(),
        query: Query::parse(parts.uri.query()),
        headers: &parts.headers,
        body,
        client_cert,
    };
    let resp = api::dispatch(route, &call);
    tracing::debug!(%peer, route = route.key(), status = resp.status().as_u16(), "call");
    if !truncate {
        return Ok(whole(resp));
    }
    tracing::debug!(%peer, route = route.key(), "fault: cutting the body short");
    let (mut head, full) = resp.into_parts();
    let full = full.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
    let part = Truncated::new(&full, cut);
    head.headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(part.declared));
    Ok(Response::from_parts(head, Either::Right(part)))
}

fn whole(r: Resp) -> Served {
    r.map(Either::Left)
}

/// Identifies a call for recognising its retry: the client (session cookie, else the number of
/// its TCP connection) and the method, path, query and body.
fn call_key(parts: &hyper::http::request::Parts, body: &[u8], conn: u64) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    match api::session_id(&parts.headers) {
        Some(id) => (0u8, id).hash(&mut h),
        None => (1u8, conn).hash(&mut h),
    }
    parts.method.as_str().hash(&mut h);
    parts.uri.path().to_ascii_lowercase().hash(&mut h);
    parts.uri.query().hash(&mut h);
    body.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::generate_tls;

    /// Object identifiers (DER contents) of subjectKeyIdentifier and authorityKeyIdentifier.
    const SKI: &[u8] = &[0x55, 0x1d, 0x0e];
    const AKI: &[u8] = &[0x55, 0x1d, 0x23];

    /// Splits one DER element off `der`: (tag, contents, rest).
    fn tlv(der: &[u8]) -> (u8, &[u8], &[u8]) {
        let (len, header) = match der[1] {
            short if short < 0x80 => (usize::from(short), 2),
            long => {
                let n = usize::from(long & 0x7f);
                let len = der[2..2 + n]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                (len, 2 + n)
            }
        };
        (der[0], &der[header..header + len], &der[header + len..])
    }

    /// The extensions of a DER certificate: (OID contents, extnValue contents).
    fn extensions(cert: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let (_, cert, _) = tlv(cert);
        let (_, mut tbs, _) = tlv(cert);
        let mut out = Vec::new();
        while !tbs.is_empty() {
            let (tag, body, rest) = tlv(tbs);
            tbs = rest;
            if tag != 0xa3 {
                continue;
            }
            let (_, mut exts, _) = tlv(body);
            while !exts.is_empty() {
                let (_, ext, rest) = tlv(exts);
                exts = rest;
                let (_, oid, ext) = tlv(ext);
                let (tag, value, ext) = tlv(ext);
                // An optional `critical` BOOLEAN comes before the value.
                let value = if tag == 0x01 { tlv(ext).1 } else { value };
                out.push((oid.to_vec(), value.to_vec()));
            }
        }
        out
    }

    fn extension(cert: &[u8], oid: &[u8]) -> Option<Vec<u8>> {
        extensions(cert)
            .into_iter()
            .find(|(o, _)| o == oid)
            .map(|(_, v)| v)
    }

    /// OpenSSL's strict mode (Python 3.13 `ssl`, urllib3 2.x on Python 3.13+) refuses a leaf
    /// without an authority key identifier ("Missing Authority Key Identifier"), so the generated
    /// leaf must carry one, equal to the CA's subject key identifier.
    #[test]
    fn generated_leaf_names_the_ca_key() {
        let tls = generate_tls().expect("generate");
        assert_eq!(tls.chain.len(), 2, "leaf and CA");
        let (leaf, ca) = (tls.chain[0].as_ref(), tls.chain[1].as_ref());

        let ski = extension(ca, SKI).expect("the CA has a subject key identifier");
        let (tag, ca_key_id, _) = tlv(&ski);
        assert_eq!(tag, 0x04, "SKI is an OCTET STRING");
        assert!(!ca_key_id.is_empty());

        let aki = extension(leaf, AKI).expect("the leaf has an authority key identifier");
        let (tag, aki_seq, _) = tlv(&aki);
        assert_eq!(tag, 0x30, "AKI is a SEQUENCE");
        let (tag, leaf_key_id, _) = tlv(aki_seq);
        assert_eq!(tag, 0x80, "AKI starts with [0] keyIdentifier");
        assert_eq!(leaf_key_id, ca_key_id, "the leaf's AKI names the CA's key");
    }
}
