//! Harness of the end-to-end suite: ps-webhook (registered by the Helm chart in URL mode), the
//! real kube-apiserver and etcd of `tests/e2e/control-plane`, ps-emulator and ps-agent.
//!
//! `tests/e2e/run` starts all of that and exports the `PS_E2E_*` variables read by [`Harness::new`];
//! the scenarios (`tests/*.rs`) are `#[ignore]`d so `cargo test --workspace` compiles them but
//! never runs them without a cluster, and fail (never skip) when the variables are missing.
//!
//! Every assertion is on an object the real API server returned. Secret values are compared,
//! never printed (see [`seed::assert_same_value`]).

pub mod agent;
pub mod node;
pub mod pods;
pub mod second_webhook;
pub mod seed;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use http_body_util::BodyExt;
use k8s_openapi::{
    ByteString,
    api::core::v1::{Namespace, Pod, Secret, ServiceAccount},
};
use kube::{
    Api, Client,
    api::PostParams,
    config::{KubeConfigOptions, Kubeconfig},
    core::Status,
};
use serde_json::{Value, json};

pub use seed::{Seed, assert_same_value};

/// The annotation prefix and keys, from the contract crate.
pub use inject_api::annotations as ann;

/// Environment variables exported by `tests/e2e/run`.
pub mod vars {
    pub const KUBECONFIG: &str = "PS_E2E_KUBECONFIG";
    pub const EMULATOR_URL: &str = "PS_E2E_EMULATOR_URL";
    pub const EMULATOR_CA: &str = "PS_E2E_EMULATOR_CA";
    pub const SEED: &str = "PS_E2E_SEED";
    pub const AGENT_BIN: &str = "PS_E2E_AGENT_BIN";
    pub const WEBHOOK_URL: &str = "PS_E2E_WEBHOOK_URL";
    pub const WEBHOOK_CA: &str = "PS_E2E_WEBHOOK_CA";
    pub const WEBHOOK_ADMIN: &str = "PS_E2E_WEBHOOK_ADMIN";
    pub const WEBHOOK_CONFIG: &str = "PS_E2E_WEBHOOK_CONFIG";
    pub const WEBHOOK_CONFIGURATION: &str = "PS_E2E_WEBHOOK_CONFIGURATION";
    pub const RELEASE_NAMESPACE: &str = "PS_E2E_RELEASE_NAMESPACE";
    /// Set by `tests/e2e/run` only for the last phase, after it stopped the webhook.
    pub const WEBHOOK_STOPPED: &str = "PS_E2E_WEBHOOK_STOPPED";
}

/// The name of our webhook inside the chart's MutatingWebhookConfiguration.
pub const WEBHOOK_NAME: &str = "inject.ps-injector.io";

fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!(
            "{name} is not set. The end-to-end scenarios need the kube-apiserver, ps-emulator and ps-webhook \
             that tests/e2e/run starts: run `tests/e2e/run` (optionally with a test name filter, e.g. \
             `tests/e2e/run init_mode`) instead of `cargo test` directly."
        ),
    }
}

/// What `tests/e2e/run` started, read from the `PS_E2E_*` variables.
#[derive(Clone, Debug)]
pub struct Env {
    pub kubeconfig: PathBuf,
    /// API base URL of ps-emulator: `https://127.0.0.1:PORT/BeyondTrust/api/public/v3`.
    pub emulator_url: String,
    /// PEM of the CA that signed the emulator's serving certificate.
    pub emulator_ca: PathBuf,
    pub seed: PathBuf,
    /// The `ps-agent` binary that stands in for the agent image.
    pub agent_bin: PathBuf,
    /// `https://127.0.0.1:PORT/mutate`, as given to the chart's `webhook.url`.
    pub webhook_url: String,
    /// PEM of the test CA that signed the webhook's serving certificate.
    pub webhook_ca: PathBuf,
    /// `http://127.0.0.1:PORT` of the webhook's admin port.
    pub webhook_admin: String,
    /// The configuration file the webhook serves with (the chart's rendered ConfigMap).
    pub webhook_config: PathBuf,
    /// Name of the chart's MutatingWebhookConfiguration.
    pub webhook_configuration: String,
    /// Namespace of the Helm release (excluded from injection by the chart).
    pub release_namespace: String,
}

impl Env {
    /// Reads the variables; panics with instructions when one is missing.
    pub fn from_env() -> Env {
        Env {
            kubeconfig: var(vars::KUBECONFIG).into(),
            emulator_url: var(vars::EMULATOR_URL),
            emulator_ca: var(vars::EMULATOR_CA).into(),
            seed: var(vars::SEED).into(),
            agent_bin: var(vars::AGENT_BIN).into(),
            webhook_url: var(vars::WEBHOOK_URL),
            webhook_ca: var(vars::WEBHOOK_CA).into(),
            webhook_admin: var(vars::WEBHOOK_ADMIN),
            webhook_config: var(vars::WEBHOOK_CONFIG).into(),
            webhook_configuration: var(vars::WEBHOOK_CONFIGURATION),
            release_namespace: var(vars::RELEASE_NAMESPACE),
        }
    }

    /// The origin of the emulator (`https://127.0.0.1:PORT`), for its operator endpoints.
    pub fn emulator_origin(&self) -> &str {
        let rest = self
            .emulator_url
            .strip_prefix("https://")
            .unwrap_or(&self.emulator_url);
        let end = rest
            .find('/')
            .map_or(self.emulator_url.len(), |i| i + "https://".len());
        &self.emulator_url[..end]
    }
}

/// The webhook's effective cluster configuration (the file it serves with), with the defaults
/// of `crates/webhook-core/src/config.rs` for what the file leaves out.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub secret_name: String,
    pub api_key_key: String,
    pub run_as_key: String,
    pub mount_path: String,
    pub agent_image: String,
    pub agent_command: Vec<String>,
    /// `passwordSafe.caBundle.configMap`, when set.
    pub ca_bundle: Option<String>,
    /// `passwordSafe.caOnly`.
    pub ca_only: bool,
}

impl WebhookConfig {
    fn load(path: &std::path::Path) -> Result<WebhookConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let doc: Value =
            serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let s = |ptr: &str, default: &str| {
            doc.pointer(ptr)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_owned()
        };
        let agent_command = match doc.pointer("/agent/command") {
            Some(v) => serde_json::from_value(v.clone()).context("agent.command")?,
            None => vec![inject_api::layout::BIN_NAME.to_owned()],
        };
        Ok(WebhookConfig {
            secret_name: s("/credentials/secretName", "ps-injector-credentials"),
            api_key_key: s("/credentials/keys/apiKey", "api-key"),
            run_as_key: s("/credentials/keys/runAs", "runas"),
            mount_path: s("/injection/mountPath", inject_api::layout::DEFAULT_MOUNT_PATH),
            agent_image: s("/agent/image", ""),
            agent_command,
            ca_bundle: doc
                .pointer("/passwordSafe/caBundle/configMap")
                .and_then(Value::as_str)
                .map(str::to_owned),
            ca_only: doc
                .pointer("/passwordSafe/caOnly")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// One scenario's view of the environment: a client of the real API server and the data the
/// checks compare with.
pub struct Harness {
    pub env: Env,
    pub client: Client,
    pub seed: Seed,
    pub config: WebhookConfig,
    http: reqwest::Client,
}

/// The answer of the API server to a create: the stored (or dry-run) object, or the refusal,
/// plus the admission warnings it sent as `Warning` headers.
#[derive(Debug)]
pub struct Created<T = Pod> {
    pub result: std::result::Result<T, Status>,
    pub warnings: Vec<String>,
}

impl Created<Pod> {
    /// The created pod; panics with the API server's message when it was refused.
    #[track_caller]
    pub fn pod(self) -> Pod {
        match self.result {
            Ok(p) => p,
            Err(s) => panic!(
                "the API server refused the pod: {} (HTTP {}, {})",
                s.message, s.code, s.reason
            ),
        }
    }

    /// The refusal; panics when the pod was created.
    #[track_caller]
    pub fn refused(self) -> Status {
        match self.result {
            Ok(p) => panic!(
                "the API server created pod {:?}, but a refusal was expected",
                p.metadata.name.unwrap_or_default()
            ),
            Err(s) => s,
        }
    }
}

impl Harness {
    /// Connects to the API server named by `PS_E2E_KUBECONFIG`. Installs ring as the process's
    /// rustls provider (the only one in the build).
    pub async fn new() -> Harness {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let env = Env::from_env();
        Self::connect(env)
            .await
            .expect("connecting to the e2e control plane")
    }

    async fn connect(env: Env) -> Result<Harness> {
        let kubeconfig = Kubeconfig::read_from(&env.kubeconfig)
            .with_context(|| format!("reading the kubeconfig {}", env.kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .context("loading the kubeconfig")?;
        let client = Client::try_from(config).context("building the kube client")?;
        let seed = Seed::load(&env.seed)?;
        let webhook_config = WebhookConfig::load(&env.webhook_config)?;
        let ca = std::fs::read(&env.emulator_ca)
            .with_context(|| format!("reading {}", env.emulator_ca.display()))?;
        let http = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).context("the emulator CA")?])
            .timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Harness {
            env,
            client,
            seed,
            config: webhook_config,
            http,
        })
    }

    pub fn pods(&self, ns: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), ns)
    }

    /// Creates namespace `e2e-<prefix>-<random>` with `labels` and its `default` ServiceAccount
    /// (the ServiceAccount admission plugin is on and no controller-manager runs).
    pub async fn namespace(&self, prefix: &str, labels: &[(&str, &str)]) -> String {
        let name = format!("e2e-{prefix}-{:04x}", fastrand::u16(..));
        self.namespace_named(&name, labels).await;
        name
    }

    /// Creates namespace `name` (a fixed name, e.g. one the policy names) and its `default`
    /// ServiceAccount.
    pub async fn namespace_named(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: serde_json::Map<String, Value> =
            labels.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect();
        let ns: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }))
        .expect("namespace JSON");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| {
                panic!("creating namespace {name}: {e} (a leftover from an earlier run? tests/e2e/run starts a fresh control plane)")
            });
        self.service_account(name).await;
    }

    /// Creates the `default` ServiceAccount in `ns` unless it exists.
    pub async fn service_account(&self, ns: &str) {
        let sa: ServiceAccount = serde_json::from_value(
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
        )
        .expect("service account JSON");
        match Api::<ServiceAccount>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &sa)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => panic!("creating ServiceAccount default in {ns}: {e}"),
        }
    }

    /// Creates the credentials Secret the webhook's configuration names (`credentials.secretName`,
    /// keys `credentials.keys.apiKey` and `runAs`) with the emulator's API key and run-as user.
    pub async fn credentials_secret(&self, ns: &str) {
        let (key, user) = self.seed.api_key().expect("seed credentials");
        let mut data = std::collections::BTreeMap::new();
        data.insert(
            self.config.api_key_key.clone(),
            ByteString(key.as_bytes().to_vec()),
        );
        data.insert(
            self.config.run_as_key.clone(),
            ByteString(user.as_bytes().to_vec()),
        );
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(self.config.secret_name.clone()),
                ..Default::default()
            },
            data: Some(data),
            ..Default::default()
        };
        Api::<Secret>::namespaced(self.client.clone(), ns)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap_or_else(|e| panic!("creating the credentials Secret in {ns}: {e}"));
    }

    /// POSTs a pod (as JSON, exactly as given) and returns what the API server answered,
    /// including admission warnings. `dry_run` sends `dryRun=All`.
    pub async fn create_pod(&self, ns: &str, pod: &Value, dry_run: bool) -> Created {
        self.create(&format!("/api/v1/namespaces/{ns}/pods"), pod, dry_run)
            .await
    }

    /// POSTs any object (as JSON, exactly as given) to the collection at `path` (e.g.
    /// `/apis/apps/v1/namespaces/NS/deployments`) and returns what the API server answered,
    /// including admission warnings. `dry_run` sends `dryRun=All`.
    pub async fn create<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        object: &Value,
        dry_run: bool,
    ) -> Created<T> {
        self.try_create(path, object, dry_run)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e:#}"))
    }

    async fn try_create<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        object: &Value,
        dry_run: bool,
    ) -> Result<Created<T>> {
        let pp = PostParams {
            dry_run,
            field_manager: Some("e2e-tests".to_owned()),
        };
        let request = kube::core::Request::new(path)
            .create(&pp, serde_json::to_vec(object)?)
            .context("building the request")?;
        let response = self.client.send(request.map(kube::client::Body::from)).await?;
        let status = response.status();
        let warnings = response
            .headers()
            .get_all(http::header::WARNING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(parse_warning)
            .collect();
        let body = response.into_body().collect().await?.to_bytes();
        let result = if status.is_success() {
            Ok(serde_json::from_slice::<T>(&body).context("decoding the created object")?)
        } else {
            Err(serde_json::from_slice::<Status>(&body).with_context(|| {
                format!(
                    "decoding the refusal (HTTP {status}): {}",
                    String::from_utf8_lossy(&body)
                )
            })?)
        };
        Ok(Created { result, warnings })
    }

    /// Reads a pod back from the API server (what etcd holds).
    pub async fn get_pod(&self, ns: &str, name: &str) -> Pod {
        self.pods(ns)
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("GET pod {ns}/{name}: {e}"))
    }

    /// Sum of `ps_webhook_admissions_total` samples with this outcome (all modes), from the
    /// webhook's admin port.
    pub async fn admissions(&self, outcome: &str) -> f64 {
        let text = self.metrics().await;
        let label = format!("outcome=\"{outcome}\"");
        text.lines()
            .filter(|l| l.starts_with("ps_webhook_admissions_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Sum of every `ps_webhook_admissions_total` sample: how many admission requests reached
    /// the webhook at all.
    pub async fn admissions_total(&self) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| l.starts_with("ps_webhook_admissions_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.env.webhook_admin))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET /metrics of the webhook")
            .text()
            .await
            .expect("reading /metrics")
    }

    /// `GET /_emulator/state` of the emulator (counts only, no values).
    pub async fn emulator_state(&self) -> Value {
        self.http
            .get(format!("{}/_emulator/state", self.env.emulator_origin()))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("GET /_emulator/state")
            .json()
            .await
            .expect("decoding /_emulator/state")
    }

    /// Whether the webhook's admin port answers at all.
    pub async fn webhook_alive(&self) -> bool {
        self.http
            .get(format!("{}/livez", self.env.webhook_admin))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok()
    }

    /// Repeats a dry-run create of `pod` until `done` says the answer shows what is expected
    /// (webhook configurations reach the API server through an informer, with a delay).
    pub async fn until_in_effect(&self, ns: &str, pod: &Value, what: &str, done: impl Fn(&Created) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let created = self.create_pod(ns, pod, true).await;
            if done(&created) {
                return;
            }
            if Instant::now() > deadline {
                panic!("{what} did not take effect within 30 s; last answer: {created:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// `299 - "text"` → `text`.
fn parse_warning(header: &str) -> String {
    let text = header.split_once('"').map_or(header, |(_, rest)| rest);
    let text = text.strip_suffix('"').unwrap_or(text);
    text.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// An error for scenario helpers that return `Result`.
pub fn fail(msg: impl Into<String>) -> anyhow::Error {
    anyhow!(msg.into())
}

/// Fails when `cond` is false (helpers that return `Result`).
pub fn require(cond: bool, msg: impl FnOnce() -> String) -> Result<()> {
    if !cond {
        bail!(msg());
    }
    Ok(())
}
