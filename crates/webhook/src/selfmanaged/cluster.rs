//! The Kubernetes side of self-managed certificates, kept thin: read and write the one Secret,
//! patch the one MutatingWebhookConfiguration, hold the one Lease. Every decision is in
//! [`super::state`] or in the pure helpers at the top of this file.
//!
//! Three tasks per replica ([`spawn`]):
//! - **serve**: a watch on the Secret (by name, so RBAC can bound it with `resourceNames`);
//!   every new `tls.crt`/`tls.key` goes into the TLS resolver. On first start a replica that
//!   finds no Secret generates one and creates it; a replica that loses that race (409) reads
//!   the winner's, so racing replicas end with one CA.
//! - **ready**: `/readyz` stays 503 until every entry of the webhook configuration trusts the CA
//!   of the certificate served; it polls the configuration once a second until then.
//! - **lead**: every [`Timing::tick`] the replica tries to take or renew the Lease; the holder
//!   brings the webhook configuration's `caBundle` to the Secret's bundle (every entry) and
//!   performs the next rotation step ([`plan`]). Secret writes carry the `resourceVersion` read,
//!   so a leader that lost the Lease between read and write gets a conflict and starts over.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures_util::StreamExt as _;
use k8s_openapi::{
    ByteString,
    api::{
        admissionregistration::v1::MutatingWebhookConfiguration, coordination::v1::Lease, core::v1::Secret,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams, WatchEvent, WatchParams},
};
use rustls_pki_types::CertificateDer;
use tokio::{sync::watch, task::JoinHandle};

use super::state::{self, CertState, Names, StateError, Step, Timing, Validity, plan};
use crate::{admin::Readiness, metrics::Metrics, tls::CertResolver};

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "ps-webhook";
/// Lease duration: another replica takes over this long after the leader's last renewal.
pub const LEASE_SECONDS: i32 = 15;

/// What a replica manages and as whom.
#[derive(Clone, Debug)]
pub struct Settings {
    pub namespace: String,
    pub secret: String,
    pub webhook_configuration: String,
    pub lease: String,
    /// This replica's name in the Lease (the pod name).
    pub identity: String,
    pub names: Names,
    pub timing: Timing,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("MutatingWebhookConfiguration {0} has no webhooks to trust the certificate")]
    NoWebhooks(String),
    #[error("{0} changed while being updated; retrying at the next tick")]
    Contended(String),
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

// ---- pure helpers ---------------------------------------------------------------------------

/// The state in a Secret object (`None` data = empty).
pub fn decode(secret: &Secret) -> Result<CertState, StateError> {
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    CertState::from_secret(&data, &annotations)
}

/// `state` written into `base` (the object read, or a new one): data replaced, this module's
/// annotations set or removed, everything else (labels, other annotations, resourceVersion)
/// kept.
pub fn encode(mut base: Secret, state: &CertState) -> Secret {
    let (data, ours) = state.to_secret();
    base.type_ = Some("kubernetes.io/tls".to_owned());
    base.data = Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect());
    let annotations = base.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for key in [state::ANN_NEXT_TRUSTED_SINCE, state::ANN_SWITCHED_AT] {
        annotations.remove(key);
    }
    annotations.extend(ours);
    base
}

/// A new Secret object for `state`.
pub fn new_secret(settings: &Settings, state: &CertState) -> Secret {
    encode(
        Secret {
            metadata: ObjectMeta {
                name: Some(settings.secret.clone()),
                namespace: Some(settings.namespace.clone()),
                labels: Some(BTreeMap::from([
                    ("app.kubernetes.io/managed-by".to_owned(), FIELD_MANAGER.to_owned()),
                    ("app.kubernetes.io/part-of".to_owned(), "ps-injector".to_owned()),
                ])),
                annotations: Some(BTreeMap::from([(
                    "ps-injector.io/description".to_owned(),
                    "Self-managed serving certificate of ps-webhook: generated, rotated and read by the webhook itself; do not edit".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        },
        state,
    )
}

/// The CAs each webhook entry of `mwc` trusts (its `caBundle`).
pub fn trusted(mwc: &MutatingWebhookConfiguration) -> Vec<Vec<CertificateDer<'static>>> {
    mwc.webhooks
        .iter()
        .flatten()
        .map(|w| {
            w.client_config
                .ca_bundle
                .as_ref()
                .map(|b| state::parse_bundle(&b.0))
                .unwrap_or_default()
        })
        .collect()
}

/// Whether every entry of `mwc` (and there is at least one) trusts `ca`.
pub fn trusts(mwc: &MutatingWebhookConfiguration, ca: &CertificateDer<'_>) -> bool {
    let entries = trusted(mwc);
    !entries.is_empty()
        && entries
            .iter()
            .all(|bundle| bundle.iter().any(|c| c.as_ref() == ca.as_ref()))
}

/// The strategic merge patch that sets `bundle_pem` as the `caBundle` of every entry of `mwc`,
/// guarded by the `resourceVersion` read (a concurrent change is a conflict, not lost); `None`
/// when every entry holds exactly that bundle already. Entries are matched by name (the merge
/// key of `webhooks`), so nothing else of the configuration is touched.
pub fn bundle_patch(mwc: &MutatingWebhookConfiguration, bundle_pem: &str) -> Option<serde_json::Value> {
    let webhooks = mwc.webhooks.as_deref().unwrap_or_default();
    let current = webhooks.iter().all(|w| {
        w.client_config
            .ca_bundle
            .as_ref()
            .is_some_and(|b| b.0 == bundle_pem.as_bytes())
    });
    if current {
        return None;
    }
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bundle_pem);
    Some(serde_json::json!({
        "metadata": {"resourceVersion": mwc.metadata.resource_version},
        "webhooks": webhooks
            .iter()
            .map(|w| serde_json::json!({"name": w.name, "clientConfig": {"caBundle": encoded}}))
            .collect::<Vec<_>>(),
    }))
}

/// What a replica does with the Lease it read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it over.
    Take,
    /// Another replica holds it.
    Follow,
}

/// Decides from the Lease's holder, last renewal (Unix seconds) and duration.
pub fn lease_action(
    holder: Option<&str>,
    renewed: Option<i64>,
    duration: Option<i32>,
    me: &str,
    now: i64,
) -> LeaseAction {
    match holder {
        Some(h) if h == me => LeaseAction::Renew,
        None | Some("") => LeaseAction::Take,
        Some(_) => {
            let expires = renewed.unwrap_or(i64::MIN / 2) + i64::from(duration.unwrap_or(LEASE_SECONDS));
            if now > expires {
                LeaseAction::Take
            } else {
                LeaseAction::Follow
            }
        }
    }
}

// ---- IO -------------------------------------------------------------------------------------

/// The API objects of one replica.
#[derive(Clone)]
pub struct Cluster {
    settings: Arc<Settings>,
    secrets: Api<Secret>,
    webhooks: Api<MutatingWebhookConfiguration>,
    leases: Api<Lease>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    pub fn new(client: Client, settings: Settings) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), &settings.namespace),
            leases: Api::namespaced(client.clone(), &settings.namespace),
            webhooks: Api::all(client),
            settings: Arc::new(settings),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The Secret and its state, creating it (first start) or starting over (unusable content)
    /// when needed. Optimistic: a 409 means another replica wrote first, and its version is
    /// read and used.
    pub async fn current(&self) -> Result<(Secret, CertState), ClusterError> {
        let s = &self.settings;
        for _ in 0..5 {
            let now = unix_now();
            match self.secrets.get_opt(&s.secret).await? {
                Some(secret) => match decode(&secret) {
                    Ok(state) => return Ok((secret, state)),
                    Err(error) => {
                        tracing::error!(secret = %s.secret, %error, "the certificate Secret is unusable: generating a new CA");
                        let state = state::generate_state(&s.names, now, &s.timing)?;
                        match self
                            .secrets
                            .replace(&s.secret, &PostParams::default(), &encode(secret, &state))
                            .await
                        {
                            Ok(written) => return Ok((written, state)),
                            Err(e) if is_status(&e, 409) => continue,
                            Err(e) => return Err(e.into()),
                        }
                    }
                },
                None => {
                    let state = state::generate_state(&s.names, now, &s.timing)?;
                    match self
                        .secrets
                        .create(&PostParams::default(), &new_secret(s, &state))
                        .await
                    {
                        Ok(written) => {
                            tracing::info!(secret = %s.secret, "generated a CA and a serving certificate");
                            return Ok((written, state));
                        }
                        Err(e) if is_status(&e, 409) => {
                            tracing::info!(secret = %s.secret, "another replica created the certificate Secret first; using its CA");
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Err(ClusterError::Contended(s.secret.clone()))
    }

    /// Sets `bundle` as the `caBundle` of every entry of the webhook configuration; `true` when
    /// it had to be changed.
    pub async fn ensure_bundle(&self, state: &CertState) -> Result<bool, ClusterError> {
        let name = &self.settings.webhook_configuration;
        let mwc = self.webhooks.get(name).await?;
        if mwc.webhooks.as_deref().unwrap_or_default().is_empty() {
            return Err(ClusterError::NoWebhooks(name.clone()));
        }
        let Some(patch) = bundle_patch(&mwc, &state.bundle_pem()) else {
            return Ok(false);
        };
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match self.webhooks.patch(name, &params, &Patch::Strategic(patch)).await {
            Ok(_) => {}
            // Changed since it was read (a GitOps sync, a Helm upgrade): read it again.
            Err(e) if is_status(&e, 409) => return Err(ClusterError::Contended(name.clone())),
            Err(e) => return Err(e.into()),
        }
        tracing::info!(webhook_configuration = %name, cas = state.bundle().len(), "caBundle updated");
        Ok(true)
    }

    /// Takes or renews the Lease; `true` while this replica leads.
    pub async fn lead(&self) -> Result<bool, ClusterError> {
        let s = &self.settings;
        let now = unix_now();
        let stamp = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let Some(mut lease) = self.leases.get_opt(&s.lease).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(s.lease.clone()),
                    namespace: Some(s.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(k8s_openapi::api::coordination::v1::LeaseSpec {
                    holder_identity: Some(s.identity.clone()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    acquire_time: Some(stamp.clone()),
                    renew_time: Some(stamp),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.leases.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_status(&e, 409) => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let action = lease_action(
            spec.holder_identity.as_deref(),
            spec.renew_time.as_ref().map(|t| t.0.as_second()),
            spec.lease_duration_seconds,
            &s.identity,
            now,
        );
        match action {
            LeaseAction::Follow => return Ok(false),
            LeaseAction::Take => {
                tracing::info!(lease = %s.lease, previous = spec.holder_identity.as_deref().unwrap_or(""), "taking the certificate Lease");
                spec.holder_identity = Some(s.identity.clone());
                spec.acquire_time = Some(stamp.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            LeaseAction::Renew => {}
        }
        spec.lease_duration_seconds = Some(LEASE_SECONDS);
        spec.renew_time = Some(stamp);
        match self
            .leases
            .replace(&s.lease, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// One leader pass: bring the `caBundle` to the Secret's bundle, then perform steps until
    /// one says to wait. Returns how long nothing is due.
    pub async fn step(&self, metrics: &Metrics) -> Result<Duration, ClusterError> {
        let s = &self.settings;
        for _ in 0..8 {
            let (secret, mut state) = self.current().await?;
            let patched = self.ensure_bundle(&state).await?;
            let now = unix_now();
            let mut step = plan(&state, &s.names, now, &s.timing);
            if patched && state.next.as_ref().is_some_and(|n| n.trusted_since.is_some()) {
                // The bundle with the next CA was missing (the configuration was reset, e.g. by
                // a GitOps sync): the propagation wait starts again from now.
                if let Some(next) = &mut state.next {
                    next.trusted_since = None;
                }
                step = Step::Publish;
            }
            if let Step::Wait { until } = step {
                return Ok(Duration::from_secs(u64::try_from(until - now).unwrap_or(0)));
            }
            let Some(new) = state::apply(state, step, &s.names, now, &s.timing)? else {
                continue;
            };
            match self
                .secrets
                .replace(&s.secret, &PostParams::default(), &encode(secret, &new))
                .await
            {
                Ok(_) => {
                    tracing::info!(step = ?step, secret = %s.secret, "certificate rotation step");
                    if matches!(step, Step::Switch | Step::Replace) {
                        metrics.certificate_rotation(true);
                    }
                }
                Err(e) if is_status(&e, 409) => {
                    tracing::debug!("the certificate Secret changed meanwhile; reading it again")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ClusterError::Contended(s.secret.clone()))
    }

    /// Follows the Secret with a watch and sends every usable state to `tx`.
    async fn follow(&self, tx: &watch::Sender<Option<Arc<CertState>>>) {
        let name = &self.settings.secret;
        let send = |secret: &Secret| match decode(secret) {
            Ok(state) => {
                tx.send_if_modified(|cur| {
                    if cur.as_deref() == Some(&state) {
                        false
                    } else {
                        *cur = Some(Arc::new(state));
                        true
                    }
                });
            }
            Err(error) => {
                tracing::warn!(secret = %name, %error, "ignoring an unusable version of the certificate Secret")
            }
        };
        loop {
            let version = match self.secrets.get_opt(name).await {
                Ok(Some(secret)) => {
                    send(&secret);
                    secret.metadata.resource_version.unwrap_or_else(|| "0".to_owned())
                }
                Ok(None) => "0".to_owned(),
                Err(error) => {
                    tracing::warn!(secret = %name, %error, "cannot read the certificate Secret");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let params = WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(290);
            let stream = match self.secrets.watch(&params, &version).await {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(secret = %name, %error, "cannot watch the certificate Secret");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Added(secret) | WatchEvent::Modified(secret)) => send(&secret),
                    Ok(WatchEvent::Deleted(_)) => {
                        tracing::warn!(secret = %name, "the certificate Secret was deleted; the leader creates a new one")
                    }
                    Ok(WatchEvent::Bookmark(_)) => {}
                    Ok(WatchEvent::Error(status)) => {
                        tracing::debug!(code = status.code, "watch ended; reading the Secret again");
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(%error, "watch failed; reading the Secret again");
                        break;
                    }
                }
            }
        }
    }
}

/// Loads `state`'s serving certificate into `resolver`; `false` (and counted) if unusable.
pub fn serve_state(state: &CertState, resolver: &CertResolver, metrics: &Metrics) -> bool {
    let cert = state::der_to_pem(&state.serving.cert);
    match crate::tls::certified_key_from_pem(
        cert.as_bytes(),
        state.serving.key.0.as_bytes(),
        Path::new("Secret tls.crt"),
        Path::new("Secret tls.key"),
    ) {
        Ok(key) => {
            resolver.set(key);
            metrics.certificate_reload(true);
            metrics.set_certificate_expiry(resolver.not_after());
            metrics.set_ca_expiry(Validity::of(&state.ca.cert).map(|v| v.not_after));
            true
        }
        Err(error) => {
            metrics.certificate_reload(false);
            tracing::error!(%error, "serving certificate from the Secret rejected; keeping the previous one");
            false
        }
    }
}

/// Starts the three tasks of a replica on the current runtime (see the module docs). The
/// returned handle ends them all when aborted.
pub fn spawn(
    cluster: Cluster,
    resolver: Arc<CertResolver>,
    metrics: Arc<Metrics>,
    readiness: Readiness,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (tx, rx) = watch::channel(None::<Arc<CertState>>);
        // First start: every replica makes sure the Secret exists (the race ends with one CA),
        // then serves from it.
        loop {
            match cluster.current().await {
                Ok((_, state)) => {
                    tx.send_replace(Some(Arc::new(state)));
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot read or create the certificate Secret yet");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        // The helper tasks end with this one (dropped when it is aborted).
        let mut tasks = AbortOnDrop(Vec::new());
        tasks.0.push({
            let cluster = cluster.clone();
            tokio::spawn(async move { cluster.follow(&tx).await })
        });
        tasks.0.push({
            let (mut rx, resolver, metrics) = (rx.clone(), resolver.clone(), metrics.clone());
            tokio::spawn(async move {
                let mut served: Option<CertificateDer<'static>> = None;
                loop {
                    let state = rx.borrow_and_update().clone();
                    if let Some(state) = state
                        && served.as_ref() != Some(&state.serving.cert)
                        && serve_state(&state, &resolver, &metrics)
                    {
                        tracing::info!(not_after = ?resolver.not_after(), "serving the certificate from the Secret");
                        served = Some(state.serving.cert.clone());
                    }
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            })
        });
        tasks.0.push({
            let (cluster, rx) = (cluster.clone(), rx.clone());
            tokio::spawn(async move {
                let mut logged = false;
                loop {
                    let ca = rx.borrow().as_ref().map(|s| s.ca.cert.clone());
                    if let Some(ca) = ca {
                        match cluster.webhooks.get(&cluster.settings.webhook_configuration).await {
                            Ok(mwc) if trusts(&mwc, &ca) => {
                                readiness.set_trusted(true);
                                tracing::info!("the webhook configuration trusts the serving certificate: ready");
                                return;
                            }
                            Ok(_) if !logged => {
                                tracing::info!("not ready until the webhook configuration's caBundle trusts the serving certificate");
                                logged = true;
                            }
                            Ok(_) => {}
                            Err(error) => tracing::warn!(%error, "cannot read the webhook configuration"),
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        });
        let tick = cluster.settings.timing.tick();
        let mut leading = false;
        loop {
            match cluster.lead().await {
                Ok(now_leading) => {
                    if now_leading != leading {
                        tracing::info!(leading = now_leading, identity = %cluster.settings.identity, "certificate Lease");
                        leading = now_leading;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot take or renew the certificate Lease");
                    leading = false;
                }
            }
            if leading {
                match cluster.step(&metrics).await {
                    Ok(_) => {}
                    // Someone else wrote at the same moment: not a failure, the next tick reads
                    // again.
                    Err(error @ ClusterError::Contended(_)) => tracing::info!(%error),
                    Err(error) => {
                        metrics.certificate_rotation(false);
                        tracing::error!(%error, "certificate step failed; retrying");
                    }
                }
            }
            tokio::time::sleep(tick).await;
        }
    })
}

struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::admissionregistration::v1::{MutatingWebhook, WebhookClientConfig};

    use super::*;

    fn timing() -> Timing {
        Timing::new(Duration::from_secs(120)).unwrap()
    }

    fn settings() -> Settings {
        Settings {
            namespace: "ps-system".into(),
            secret: "psi-ps-injector-certs".into(),
            webhook_configuration: "psi-ps-injector".into(),
            lease: "psi-ps-injector-certs".into(),
            identity: "pod-a".into(),
            names: Names::for_service("psi-ps-injector", "ps-system", &[], &[]),
            timing: timing(),
        }
    }

    fn mwc(bundles: &[Option<&str>]) -> MutatingWebhookConfiguration {
        MutatingWebhookConfiguration {
            metadata: ObjectMeta {
                name: Some("psi-ps-injector".into()),
                resource_version: Some("42".into()),
                ..ObjectMeta::default()
            },
            webhooks: Some(
                bundles
                    .iter()
                    .enumerate()
                    .map(|(i, b)| MutatingWebhook {
                        name: format!("w{i}.ps-injector.io"),
                        client_config: WebhookClientConfig {
                            ca_bundle: b.map(|b| ByteString(b.as_bytes().to_vec())),
                            ..WebhookClientConfig::default()
                        },
                        admission_review_versions: vec!["v1".into()],
                        side_effects: "None".into(),
                        ..MutatingWebhook::default()
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn the_patch_covers_every_entry_and_only_the_bundle() {
        let s = settings();
        let state = state::generate_state(&s.names, unix_now(), &s.timing).unwrap();
        let pem = state.bundle_pem();
        let m = mwc(&[None, Some("old")]);
        let patch = bundle_patch(&m, &pem).unwrap();
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pem);
        assert_eq!(
            patch,
            serde_json::json!({
                "metadata": {"resourceVersion": "42"},
                "webhooks": [
                    {"name": "w0.ps-injector.io", "clientConfig": {"caBundle": b64}},
                    {"name": "w1.ps-injector.io", "clientConfig": {"caBundle": b64}},
                ],
            })
        );
        assert!(!trusts(&m, &state.ca.cert));
        let done = mwc(&[Some(&pem), Some(&pem)]);
        assert_eq!(bundle_patch(&done, &pem), None);
        assert!(trusts(&done, &state.ca.cert));
        // One entry left behind is enough to patch, and not to be trusted.
        let half = mwc(&[Some(&pem), Some("")]);
        assert!(bundle_patch(&half, &pem).is_some());
        assert!(!trusts(&half, &state.ca.cert));
        assert!(!trusts(&mwc(&[]), &state.ca.cert), "no entries trust nothing");
    }

    #[test]
    fn secrets_keep_foreign_metadata_and_round_trip() {
        let s = settings();
        let now = unix_now();
        let state = state::generate_state(&s.names, now, &s.timing).unwrap();
        let mut secret = new_secret(&s, &state);
        assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(decode(&secret).unwrap(), state);
        secret.metadata.resource_version = Some("7".into());
        secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert("argocd.argoproj.io/x".into(), "y".into());
        let next = state::apply(state, Step::Renew, &s.names, now, &s.timing)
            .unwrap()
            .unwrap();
        let next = next.published(now).switched(now + 1);
        let written = encode(secret, &next);
        assert_eq!(decode(&written).unwrap(), next);
        assert_eq!(written.metadata.resource_version.as_deref(), Some("7"));
        let ann = written.metadata.annotations.unwrap();
        assert_eq!(ann["argocd.argoproj.io/x"], "y");
        assert!(
            !ann.contains_key(state::ANN_NEXT_TRUSTED_SINCE),
            "stale annotation removed"
        );
        assert_eq!(ann[state::ANN_SWITCHED_AT], (now + 1).to_string());
    }

    #[test]
    fn lease_decisions() {
        use LeaseAction::*;
        assert_eq!(lease_action(Some("a"), Some(100), Some(15), "a", 500), Renew);
        assert_eq!(lease_action(None, None, None, "a", 100), Take);
        assert_eq!(lease_action(Some(""), Some(100), Some(15), "a", 100), Take);
        assert_eq!(lease_action(Some("b"), Some(100), Some(15), "a", 115), Follow);
        assert_eq!(lease_action(Some("b"), Some(100), Some(15), "a", 116), Take);
        assert_eq!(
            lease_action(Some("b"), None, Some(15), "a", 116),
            Take,
            "never renewed"
        );
    }
}
