//! Cluster configuration: defaults for every injected pod and the policy that guards tenants.
//!
//! One YAML document (camelCase keys), usually mounted from a ConfigMap. Every field has a
//! built-in default, so `Config::default()` is a working configuration and an empty file is
//! valid. Unknown fields are rejected; every error names the field (`policy.namespaces.team-a.
//! allowedPaths[2]: ...`). The schema is documented in the README (Cluster configuration and policy).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use inject_api::{AccountRequest, annotations::Mode, layout};
use serde::{Deserialize, Deserializer};

/// The whole cluster configuration. `Default` is the built-in configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Config {
    pub password_safe: PasswordSafeSettings,
    pub credentials: CredentialSettings,
    pub agent: AgentSettings,
    pub injection: InjectionSettings,
    pub policy: Policy,
}

/// A configuration file that was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// YAML syntax, a wrong type or an unknown field; the message starts with the field path
    /// and ends with the line and column.
    #[error("{message}")]
    Parse { message: String },
    /// A value that parses but is not acceptable.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl ConfigError {
    fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Config {
    /// The placeholder URL used when the configuration names none: `.invalid` never resolves,
    /// so an agent configured with it fails closed, and every admission warns about it.
    pub const PLACEHOLDER_URL: &'static str = "https://passwordsafe.invalid/BeyondTrust/api/public/v3";

    /// Parses and validates a configuration document.
    pub fn from_yaml(s: &str) -> Result<Config, ConfigError> {
        if s.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#') || l == "---"
        }) {
            return Ok(Config::default());
        }
        let de = serde_yaml_ng::Deserializer::from_str(s);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde_yaml_ng prefixes the parent's path; the full path replaces it.
            let message = match inner.split_once(": ") {
                Some((head, rest)) if !head.contains(' ') && path.starts_with(head) => rest.to_owned(),
                _ => inner,
            };
            ConfigError::Parse {
                message: if path == "." {
                    message
                } else {
                    format!("{path}: {message}")
                },
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The mode used when a pod names none.
    pub fn default_mode(&self) -> Mode {
        self.injection.mode.unwrap_or(if self.injection.native_sidecars {
            Mode::NativeSidecar
        } else {
            Mode::InitSidecar
        })
    }

    /// Whether `passwordSafe.url` is still the built-in placeholder.
    pub fn url_is_placeholder(&self) -> bool {
        self.password_safe.url == Self::PLACEHOLDER_URL
    }

    /// The policy for a namespace: its own entry, else the `"*"` entry, else none.
    pub fn namespace_policy(&self, namespace: &str) -> Option<&NamespacePolicy> {
        self.policy
            .namespaces
            .get(namespace)
            .or_else(|| self.policy.namespaces.get("*"))
    }

    /// Whether pods in `namespace` may set the guarded annotation `short` (e.g. `url`).
    pub fn may_override(&self, namespace: &str, short: &str) -> bool {
        let list = self
            .namespace_policy(namespace)
            .and_then(|p| p.allow_overrides.as_ref())
            .unwrap_or(&self.policy.allow_overrides);
        list.iter().any(|a| a == short)
    }

    /// Checks every value serde cannot and compiles the policy globs.
    fn validate(&mut self) -> Result<(), ConfigError> {
        let ps = &self.password_safe;
        url_host(&ps.url).map_err(|e| ConfigError::invalid("passwordSafe.url", e))?;
        if let Some(v) = &ps.api_version
            && !(v.split('.').count() == 2
                && v.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())))
        {
            return Err(ConfigError::invalid(
                "passwordSafe.apiVersion",
                format!("{v:?} is not a version like \"3.1\""),
            ));
        }
        if let Some(ca) = &ps.ca_bundle {
            validate_dns_subdomain(&ca.config_map)
                .map_err(|e| ConfigError::invalid("passwordSafe.caBundle.configMap", e))?;
            validate_key_name(&ca.key).map_err(|e| ConfigError::invalid("passwordSafe.caBundle.key", e))?;
        } else if ps.ca_only {
            return Err(ConfigError::invalid(
                "passwordSafe.caOnly",
                "caOnly needs passwordSafe.caBundle (the only CA to trust)",
            ));
        }
        if ps.request.duration_minutes == 0 {
            return Err(ConfigError::invalid(
                "passwordSafe.request.durationMinutes",
                "must be at least 1",
            ));
        }

        let c = &self.credentials;
        validate_dns_subdomain(&c.secret_name)
            .map_err(|e| ConfigError::invalid("credentials.secretName", e))?;
        for (field, key) in [
            ("apiKey", &c.keys.api_key),
            ("runAs", &c.keys.run_as),
            ("runAsPassword", &c.keys.run_as_password),
            ("clientId", &c.keys.client_id),
            ("clientSecret", &c.keys.client_secret),
        ] {
            validate_key_name(key)
                .map_err(|e| ConfigError::invalid(format!("credentials.keys.{field}"), e))?;
        }

        let a = &self.agent;
        if a.image.trim().is_empty() || a.image.chars().any(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "agent.image",
                "must be an image reference without spaces",
            ));
        }
        if a.command.is_empty() || a.command.iter().any(|c| c.is_empty()) {
            return Err(ConfigError::invalid(
                "agent.command",
                "must be a non-empty list of non-empty strings",
            ));
        }
        if let AgentUser::Id(uid) = a.run_as_user
            && uid <= 0
        {
            return Err(ConfigError::invalid(
                "agent.runAsUser",
                "must be a non-root user id (the restricted Pod Security standard forbids 0), or \"platform\"",
            ));
        }
        if let Some(g) = a.run_as_group
            && g < 0
        {
            return Err(ConfigError::invalid("agent.runAsGroup", "must not be negative"));
        }
        a.resources.validate("agent.resources")?;

        let i = &self.injection;
        if i.mode == Some(Mode::NativeSidecar) && !i.native_sidecars {
            return Err(ConfigError::invalid(
                "injection.mode",
                "native-sidecar needs injection.nativeSidecars: true",
            ));
        }
        validate_mount_path(&i.mount_path).map_err(|e| ConfigError::invalid("injection.mountPath", e))?;
        parse_quantity(&i.volume_size_limit)
            .map_err(|e| ConfigError::invalid("injection.volumeSizeLimit", e))?;
        if i.refresh_jitter_percent > 50 {
            return Err(ConfigError::invalid(
                "injection.refreshJitterPercent",
                "must be at most 50",
            ));
        }
        if i.startup_failure_threshold < 1 {
            return Err(ConfigError::invalid(
                "injection.startupFailureThreshold",
                "must be at least 1",
            ));
        }

        let p = &mut self.policy;
        for (idx, host) in p.allowed_hosts.iter().enumerate() {
            validate_host_pattern(host)
                .map_err(|e| ConfigError::invalid(format!("policy.allowedHosts[{idx}]"), e))?;
        }
        validate_overrides(&p.allow_overrides, "policy.allowOverrides")?;
        for (ns, np) in &mut p.namespaces {
            let base = format!("policy.namespaces.{ns}");
            if ns != "*" {
                validate_dns_label(ns).map_err(|e| ConfigError::invalid(&base, e))?;
            }
            if let Some(list) = &np.allow_overrides {
                validate_overrides(list, &format!("{base}.allowOverrides"))?;
            }
            if let Some(list) = &np.allowed_paths {
                np.paths = Some(compile_globs(list, &format!("{base}.allowedPaths"))?);
            }
            if let Some(list) = &np.allowed_accounts {
                np.accounts = Some(compile_globs(list, &format!("{base}.allowedAccounts"))?);
            }
        }
        Ok(())
    }
}

/// Where the agent finds Password Safe and how it talks to it.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PasswordSafeSettings {
    /// API base URL, `https://HOST/BeyondTrust/api/public/v3`.
    pub url: String,
    /// Secrets Safe API version sent as `version=` (`3.0`, `3.1`, `3.2`); unset: the agent's
    /// default.
    pub api_version: Option<String>,
    /// Verify the server certificate. `false` is possible only here, never per pod.
    pub verify_tls: bool,
    /// A ConfigMap in the pod's namespace holding a PEM CA bundle, mounted read-only into the
    /// agent container only.
    pub ca_bundle: Option<CaBundle>,
    /// Trust only `caBundle`, not the agent image's system roots.
    pub ca_only: bool,
    /// Managed-account request settings (duration, reason, rotate on check-in).
    pub request: AccountRequest,
}

impl Default for PasswordSafeSettings {
    fn default() -> Self {
        Self {
            url: Config::PLACEHOLDER_URL.to_owned(),
            api_version: None,
            verify_tls: true,
            ca_bundle: None,
            ca_only: false,
            request: AccountRequest::default(),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CaBundle {
    pub config_map: String,
    #[serde(default = "CaBundle::default_key")]
    pub key: String,
}

impl CaBundle {
    fn default_key() -> String {
        "ca.crt".to_owned()
    }
}

/// The Kubernetes Secret with the Password Safe credentials and how the agent reads it.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialSettings {
    /// Secret name in the pod's namespace.
    pub secret_name: String,
    /// Which keys must exist (see [`Auth`]).
    pub auth: Auth,
    pub keys: CredentialKeys,
}

impl Default for CredentialSettings {
    fn default() -> Self {
        Self {
            secret_name: "ps-injector-credentials".to_owned(),
            auth: Auth::Auto,
            keys: CredentialKeys::default(),
        }
    }
}

/// Which credential keys the agent container requires. Required keys are `secretKeyRef`s
/// without `optional`, so a missing Secret or key keeps the agent container from starting with
/// a clear kubelet event; optional keys may be absent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Auth {
    /// Every key optional: the agent uses whichever the Secret holds (an API key, or an OAuth
    /// client id and secret; both at once is an error) and fails closed when it holds neither.
    #[default]
    Auto,
    /// `apiKey` required; `runAs`/`runAsPassword` optional (the key may carry `runas=`).
    ApiKey,
    /// `clientId` and `clientSecret` required; no API-key variables.
    #[serde(rename = "oauth")]
    OAuth,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct CredentialKeys {
    pub api_key: String,
    pub run_as: String,
    pub run_as_password: String,
    pub client_id: String,
    pub client_secret: String,
}

impl Default for CredentialKeys {
    fn default() -> Self {
        Self {
            api_key: "api-key".to_owned(),
            run_as: "runas".to_owned(),
            run_as_password: "runas-password".to_owned(),
            client_id: "client-id".to_owned(),
            client_secret: "client-secret".to_owned(),
        }
    }
}

/// The injected agent container(s).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentSettings {
    pub image: String,
    pub image_pull_policy: PullPolicy,
    /// The agent executable in the image; the subcommand (`fetch`, `watch`, ...) goes in `args`.
    pub command: Vec<String>,
    pub resources: Resources,
    /// The user the agent runs as when the app's user is not known (fsGroup case), or
    /// `platform` to leave it to the platform.
    pub run_as_user: AgentUser,
    /// Optional primary group for the agent containers.
    pub run_as_group: Option<i64>,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            image: concat!("ps-injector/ps-agent:", env!("CARGO_PKG_VERSION")).to_owned(),
            image_pull_policy: PullPolicy::IfNotPresent,
            command: vec![layout::BIN_NAME.to_owned()],
            resources: Resources::default(),
            run_as_user: AgentUser::Id(65532),
            run_as_group: None,
        }
    }
}

/// `agent.runAsUser`: a user id, or `platform`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentUser {
    /// The agent runs as this (non-root) user unless the app's one user decides it.
    Id(i64),
    /// `platform`: the agent's `runAsUser` stays unset and the platform assigns one, as
    /// OpenShift's restricted SCCs do from the namespace's range (they refuse a user outside it).
    /// No supplemental group is added: the files are group-readable (0440) for the pod's
    /// fsGroup, which the platform assigns as well.
    Platform,
}

impl AgentUser {
    /// The user id to set, `None` for `platform`.
    pub fn id(self) -> Option<i64> {
        match self {
            AgentUser::Id(uid) => Some(uid),
            AgentUser::Platform => None,
        }
    }
}

impl<'de> Deserialize<'de> for AgentUser {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AgentUser;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a user id or \"platform\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<AgentUser, E> {
                Ok(AgentUser::Id(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<AgentUser, E> {
                i64::try_from(v)
                    .map(AgentUser::Id)
                    .map_err(|_| E::custom("the user id is too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AgentUser, E> {
                match v {
                    "platform" => Ok(AgentUser::Platform),
                    _ => Err(E::custom(format!(
                        "{v:?} is neither a user id nor \"platform\" (leave the user to the platform, e.g. \
                         OpenShift's restricted SCCs)"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
pub enum PullPolicy {
    Always,
    #[default]
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Requests and limits of the agent container (Kubernetes quantities).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    pub requests: ResourceList,
    pub limits: ResourceList,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            requests: ResourceList {
                cpu: Some("5m".to_owned()),
                memory: Some("8Mi".to_owned()),
            },
            limits: ResourceList {
                cpu: None,
                memory: Some("32Mi".to_owned()),
            },
        }
    }
}

impl Resources {
    /// Every quantity well formed, and no request above its limit.
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        let pairs = [
            ("requests.cpu", &self.requests.cpu, "limits.cpu", &self.limits.cpu),
            (
                "requests.memory",
                &self.requests.memory,
                "limits.memory",
                &self.limits.memory,
            ),
        ];
        for (rname, request, lname, limit) in pairs {
            let r = request
                .as_deref()
                .map(parse_quantity)
                .transpose()
                .map_err(|e| (rname, e))?;
            let l = limit
                .as_deref()
                .map(parse_quantity)
                .transpose()
                .map_err(|e| (lname, e))?;
            if let (Some(r), Some(l)) = (r, l)
                && r > l
            {
                return Err((
                    rname,
                    format!(
                        "request {} is above the limit {}",
                        request.as_deref().unwrap_or_default(),
                        limit.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate(&self, base: &str) -> Result<(), ConfigError> {
        self.check()
            .map_err(|(field, e)| ConfigError::invalid(format!("{base}.{field}"), e))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceList {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

/// Defaults of the injection itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct InjectionSettings {
    /// Mode for pods without `ps-injector.io/mode`; unset: `native-sidecar` when
    /// `nativeSidecars` is on, else `init+sidecar`.
    pub mode: Option<Mode>,
    /// Whether the cluster supports native sidecars (Kubernetes ≥ 1.29).
    pub native_sidecars: bool,
    #[serde(deserialize_with = "de_duration")]
    pub refresh_interval: Duration,
    pub refresh_jitter_percent: u8,
    /// Refresh intervals below this get an admission warning.
    #[serde(deserialize_with = "de_duration")]
    pub min_refresh_interval: Duration,
    pub mount_path: String,
    /// `sizeLimit` of the in-memory volume.
    pub volume_size_limit: String,
    /// Place the agent's init step before every other init container by default.
    pub init_first: bool,
    /// When the readers' users are unknown or differ and the pod has no fsGroup: deny (true), or
    /// add the agent's group to the pod's supplementalGroups so 0440 files reach them (false).
    pub require_known_user: bool,
    /// Init containers that set up a service mesh's traffic interception; the agent's init step
    /// goes before them.
    pub mesh_init_containers: Vec<String>,
    /// Pod annotations that show a mesh proxy was (or will be) injected.
    pub mesh_annotations: Vec<String>,
    /// Startup-probe attempts (one per second) a native sidecar gets for its first write
    /// (`int32` in the Pod API; at least 1, checked in `validate`).
    pub startup_failure_threshold: i32,
}

impl Default for InjectionSettings {
    fn default() -> Self {
        Self {
            mode: None,
            native_sidecars: true,
            refresh_interval: Duration::from_secs(inject_api::Refresh::DEFAULT_INTERVAL_SECONDS),
            refresh_jitter_percent: 10,
            min_refresh_interval: Duration::from_secs(30),
            mount_path: layout::DEFAULT_MOUNT_PATH.to_owned(),
            volume_size_limit: "16Mi".to_owned(),
            init_first: false,
            require_known_user: false,
            mesh_init_containers: vec!["istio-init".to_owned(), "linkerd-init".to_owned()],
            mesh_annotations: vec![
                "sidecar.istio.io/status".to_owned(),
                "linkerd.io/proxy-version".to_owned(),
            ],
            startup_failure_threshold: 300,
        }
    }
}

/// Tenant guardrails.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Hosts a pod's `ps-injector.io/url` may name (`ps.example.com`, `*.example.com`); the
    /// host of `passwordSafe.url` is always allowed.
    pub allowed_hosts: Vec<String>,
    /// Guarded annotations (`url`, `credentials-secret`, `mount-path`) pods may set, unless a
    /// namespace entry says otherwise.
    pub allow_overrides: Vec<String>,
    /// Per-namespace rules; the `"*"` entry applies to namespaces without their own.
    pub namespaces: BTreeMap<String, NamespacePolicy>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespacePolicy {
    /// Globs over secret and folder path prefixes (`team-a`, `team-a/**`, `shared/common-*`);
    /// a path is allowed when one of its leading segment sequences matches. Unset: all.
    pub allowed_paths: Option<Vec<String>>,
    /// Globs over managed accounts `system/account` (same prefix rule). Unset: all.
    pub allowed_accounts: Option<Vec<String>>,
    /// Replaces `policy.allowOverrides` for this namespace.
    pub allow_overrides: Option<Vec<String>>,
    #[serde(skip)]
    paths: Option<GlobSet>,
    #[serde(skip)]
    accounts: Option<GlobSet>,
}

impl NamespacePolicy {
    /// Whether a secret or folder path is allowed.
    pub fn allows_path(&self, path: &str) -> bool {
        prefix_match(self.paths.as_ref(), path)
    }

    /// Whether a managed account `system/account` is allowed.
    pub fn allows_account(&self, account: &str) -> bool {
        prefix_match(self.accounts.as_ref(), account)
    }
}

fn prefix_match(set: Option<&GlobSet>, path: &str) -> bool {
    let Some(set) = set else { return true };
    if set.is_match(path) {
        return true;
    }
    path.match_indices('/').any(|(i, _)| set.is_match(&path[..i]))
}

fn compile_globs(list: &[String], field: &str) -> Result<GlobSet, ConfigError> {
    let mut builder = GlobSetBuilder::new();
    for (idx, pattern) in list.iter().enumerate() {
        let glob: Glob = GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .map_err(|e| {
                ConfigError::invalid(
                    format!("{field}[{idx}]"),
                    format!("invalid glob {pattern:?}: {}", e.kind()),
                )
            })?;
        builder.add(glob);
    }
    builder
        .build()
        .map_err(|e| ConfigError::invalid(field, format!("invalid globs: {e}")))
}

fn validate_overrides(list: &[String], field: &str) -> Result<(), ConfigError> {
    for (idx, name) in list.iter().enumerate() {
        if !inject_api::annotations::GUARDED.contains(&name.as_str()) {
            return Err(ConfigError::invalid(
                format!("{field}[{idx}]"),
                format!(
                    "{name:?} is not a guarded annotation; use one of {}",
                    inject_api::annotations::GUARDED.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    inject_api::annotations::parse_duration(&s).map_err(serde::de::Error::custom)
}

// ---------------------------------------------------------------------------------------------
// Shared validators (also used for annotations)
// ---------------------------------------------------------------------------------------------

/// Parses a Kubernetes quantity (`5m`, `8Mi`, `1.5`, `2e3`) to a number for comparisons.
pub fn parse_quantity(s: &str) -> Result<f64, String> {
    let bad = || format!("{s:?} is not a Kubernetes quantity like \"5m\", \"100m\", \"8Mi\" or \"1Gi\"");
    let body = s.strip_prefix('+').unwrap_or(s);
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(split);
    if number.is_empty() || number.bytes().filter(|b| *b == b'.').count() > 1 || number == "." {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().map_err(|_| bad())?;
            10f64.powi(e)
        }
        _ => return Err(bad()),
    };
    Ok(value * factor)
}

/// An absolute, normalised directory path for a volume mount.
pub fn validate_mount_path(path: &str) -> Result<(), String> {
    let fix = "use an absolute path like \"/ps/secrets\"";
    if !path.starts_with('/') || path == "/" {
        return Err(format!("mount path {path:?} is not an absolute directory; {fix}"));
    }
    if path.len() > 1024 || path.chars().any(|c| c.is_control() || c == ':') {
        return Err(format!(
            "mount path {path:?} contains ':' or control characters; {fix}"
        ));
    }
    if path[1..]
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!(
            "mount path {path:?} has an empty, \".\" or \"..\" segment or a trailing '/'; {fix}"
        ));
    }
    Ok(())
}

/// An RFC 1123 DNS subdomain (Secret and ConfigMap names).
pub fn validate_dns_subdomain(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid Kubernetes object name (lower-case letters, digits, '-' and '.')"
        ))
    }
}

/// An RFC 1123 DNS label (namespace names).
pub fn validate_dns_label(name: &str) -> Result<(), String> {
    if name.len() <= 63 && !name.contains('.') && validate_dns_subdomain(name).is_ok() {
        Ok(())
    } else {
        Err(format!("{name:?} is not a valid namespace name"))
    }
}

/// A key of a Secret or ConfigMap.
fn validate_key_name(key: &str) -> Result<(), String> {
    if !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(())
    } else {
        Err(format!(
            "{key:?} is not a valid Secret/ConfigMap key (letters, digits, '-', '_' and '.')"
        ))
    }
}

fn validate_host_pattern(pattern: &str) -> Result<(), String> {
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    if !host.is_empty()
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
    {
        Ok(())
    } else {
        Err(format!(
            "{pattern:?} is not a host name or \"*.domain\" pattern (lower-case, no port)"
        ))
    }
}

/// The host of an `https://` URL (lower-cased by the caller for comparisons).
pub fn url_host(url: &str) -> Result<&str, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("{url:?} must start with https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!("{url:?} must not carry user information"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6
            .find(']')
            .ok_or_else(|| format!("{url:?} has an unterminated IPv6 address"))?;
        (&v6[..end], v6[end + 1..].strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} has no valid host"));
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Err(format!("{url:?} has an invalid port"));
    }
    Ok(host)
}

/// Whether `host` may be named by a pod: the configured URL's host or an allowed pattern.
pub fn host_allowed(config: &Config, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    if url_host(&config.password_safe.url).is_ok_and(|h| h.eq_ignore_ascii_case(&host)) {
        return true;
    }
    config
        .policy
        .allowed_hosts
        .iter()
        .any(|p| match p.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => *p == host,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(yaml: &str) -> String {
        Config::from_yaml(yaml).unwrap_err().to_string()
    }

    #[test]
    fn defaults_are_valid() {
        let mut c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.default_mode(), Mode::NativeSidecar);
        assert!(c.url_is_placeholder());
        assert_eq!(c.injection.mount_path, "/ps/secrets");
        assert_eq!(c.agent.run_as_user, AgentUser::Id(65532));
        let platform = Config::from_yaml("agent:\n  runAsUser: platform\n").unwrap();
        assert_eq!(platform.agent.run_as_user, AgentUser::Platform);
        assert_eq!(platform.agent.run_as_user.id(), None);
        let empty = Config::from_yaml("# nothing\n\n").unwrap();
        assert_eq!(empty.injection.volume_size_limit, "16Mi");
    }

    #[test]
    fn full_document_parses() {
        let c = Config::from_yaml(
            r#"
passwordSafe:
  url: https://ps.example.com/BeyondTrust/api/public/v3
  apiVersion: "3.1"
  verifyTls: true
  caBundle: { configMap: ps-ca }
  caOnly: true
  request: { durationMinutes: 10, reason: k8s }
credentials:
  secretName: ps-creds
  auth: oauth
  keys: { clientId: id, clientSecret: secret }
agent:
  image: registry.example.com/ps-agent:1.0
  imagePullPolicy: Always
  resources: { requests: { cpu: 10m, memory: 16Mi }, limits: { cpu: 100m, memory: 64Mi } }
  runAsUser: 1001
injection:
  mode: init
  nativeSidecars: false
  refreshInterval: 10m
  minRefreshInterval: 1m
  mountPath: /var/run/secrets/ps
  volumeSizeLimit: 4Mi
  initFirst: true
  requireKnownUser: false
policy:
  allowedHosts: [ps2.example.com, "*.ps.example.com"]
  allowOverrides: [mount-path]
  namespaces:
    team-a:
      allowedPaths: ["team-a/**", "shared/common-*"]
      allowedAccounts: ["db-prod/*"]
      allowOverrides: [url, credentials-secret]
    "*":
      allowedPaths: [shared]
"#,
        )
        .unwrap();
        assert_eq!(c.credentials.auth, Auth::OAuth);
        assert_eq!(c.default_mode(), Mode::Init);
        assert_eq!(c.injection.refresh_interval, Duration::from_secs(600));
        assert_eq!(c.password_safe.ca_bundle.as_ref().unwrap().key, "ca.crt");
        let a = c.namespace_policy("team-a").unwrap();
        assert!(a.allows_path("team-a/db/password"));
        assert!(a.allows_path("shared/common-eu/x"));
        assert!(!a.allows_path("team-b/db/password"));
        assert!(!a.allows_path("shared/other/x"));
        assert!(a.allows_account("db-prod/svc"));
        assert!(!a.allows_account("db-test/svc"));
        let other = c.namespace_policy("team-b").unwrap();
        assert!(other.allows_path("shared/x/y"));
        assert!(other.allows_path("shared"));
        assert!(!other.allows_path("sharedx/y"));
        assert!(other.allows_account("anything/at-all"));
        assert!(c.may_override("team-a", "url"));
        assert!(!c.may_override("team-a", "mount-path"));
        assert!(c.may_override("team-b", "mount-path"));
        assert!(host_allowed(&c, "ps.example.com"));
        assert!(host_allowed(&c, "PS2.example.com"));
        assert!(host_allowed(&c, "eu.ps.example.com"));
        assert!(!host_allowed(&c, "evil.com"));
        assert!(!host_allowed(&c, "xps.example.com"));
    }

    #[test]
    fn errors_name_the_field() {
        let e = err("policy:\n  namespaces:\n    team-a:\n      allowedPaths: [a, b, \"c[\"]\n");
        assert!(
            e.starts_with("policy.namespaces.team-a.allowedPaths[2]: invalid glob \"c[\""),
            "{e}"
        );
        let e = err("agent:\n  imagee: x\n");
        assert!(e.starts_with("agent.imagee: unknown field `imagee`"), "{e}");
        let e = err("injection:\n  refreshInterval: soon\n");
        assert!(e.starts_with("injection.refreshInterval:"), "{e}");
        let e = err("passwordSafe:\n  url: http://ps\n");
        assert!(e.contains("passwordSafe.url") && e.contains("https://"), "{e}");
        let e = err("policy:\n  allowOverrides: [mode]\n");
        assert!(
            e.starts_with("policy.allowOverrides[0]: \"mode\" is not a guarded"),
            "{e}"
        );
        let e = err("agent:\n  resources:\n    requests: { memory: 64Mi }\n");
        assert!(
            e.contains("agent.resources.requests.memory: request 64Mi is above the limit 32Mi"),
            "{e}"
        );
        let e = err("agent:\n  resources:\n    limits: { cpu: lots }\n");
        assert!(e.starts_with("agent.resources.limits.cpu:"), "{e}");
        let e = err("injection:\n  mode: native-sidecar\n  nativeSidecars: false\n");
        assert!(e.starts_with("injection.mode:"), "{e}");
        // The probe's failureThreshold is an int32 in the Pod API: negative and zero refused,
        // too large refused by the type.
        for bad in ["0", "-1"] {
            let e = err(&format!("injection:\n  startupFailureThreshold: {bad}\n"));
            assert!(
                e.starts_with("injection.startupFailureThreshold: must be at least 1"),
                "{e}"
            );
        }
        let e = err("injection:\n  startupFailureThreshold: 2147483648\n");
        assert!(e.starts_with("injection.startupFailureThreshold:"), "{e}");
        let e = err("injection:\n  mode: sidecars\n");
        assert!(
            e.starts_with("injection.mode:") && e.contains("unknown mode"),
            "{e}"
        );
        let e = err("agent:\n  runAsUser: 0\n");
        assert!(e.starts_with("agent.runAsUser:"), "{e}");
        let e = err("agent:\n  runAsUser: openshift\n");
        assert!(
            e.starts_with("agent.runAsUser:") && e.contains("neither a user id nor \"platform\""),
            "{e}"
        );
        let e = err("policy:\n  namespaces:\n    Team_A: {}\n");
        assert!(e.starts_with("policy.namespaces.Team_A:"), "{e}");
        let e = err("passwordSafe: [1, 2]\n");
        assert!(e.starts_with("passwordSafe:"), "{e}");
        let e = err(": : :\n");
        assert!(!e.is_empty());
    }

    #[test]
    fn glob_prefix_semantics() {
        let c = Config::from_yaml(
            "policy:\n  namespaces:\n    a: {allowedPaths: [\"team-a/**\"]}\n    b: {allowedPaths: [\"x/*/z\"]}\n    \"*\": {allowedPaths: []}\n",
        )
        .unwrap();
        let a = c.namespace_policy("a").unwrap();
        assert!(a.allows_path("team-a/db/password"));
        assert!(a.allows_path("team-a/app"));
        assert!(!a.allows_path("team-ab/x"));
        let b = c.namespace_policy("b").unwrap();
        assert!(b.allows_path("x/y/z"));
        assert!(b.allows_path("x/y/z/deeper"));
        assert!(!b.allows_path("x/y"), "a parent folder is wider than the pattern");
        assert!(!b.allows_path("x/y/w/z"), "* does not cross /");
        let other = c.namespace_policy("elsewhere").unwrap();
        assert!(
            !other.allows_path("anything/x"),
            "an empty list denies everything"
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("5m").unwrap(), 0.005);
        assert_eq!(parse_quantity("8Mi").unwrap(), 8.0 * 1024.0 * 1024.0);
        assert_eq!(parse_quantity("1.5").unwrap(), 1.5);
        assert_eq!(parse_quantity("2e3").unwrap(), 2000.0);
        for bad in ["", "-1", "1.2.3", "5 m", "5mb", "Mi", "."] {
            assert!(parse_quantity(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn mount_paths_and_urls() {
        assert!(validate_mount_path("/ps/secrets").is_ok());
        for bad in ["", "/", "relative", "/a/../b", "/a/", "/a//b", "/a:b"] {
            assert!(validate_mount_path(bad).is_err(), "{bad:?}");
        }
        assert_eq!(url_host("https://ps.example.com/x"), Ok("ps.example.com"));
        assert_eq!(url_host("https://ps.example.com:8443"), Ok("ps.example.com"));
        assert_eq!(url_host("https://[::1]:443/v3"), Ok("::1"));
        assert!(url_host("https://user@ps/").is_err());
        assert!(url_host("https://ps:99999/").is_err());
        assert!(url_host("https:///x").is_err());
    }
}
