//! Configuration, two ways, one result ([`Settings`]):
//!
//! - (a) `PS_AGENT_CONFIG`: the JSON [`AgentConfig`] the webhook writes, with credentials in
//!   `PS_API_KEY` (+ `PS_RUNAS`, `PS_RUNAS_PASSWORD`) or `PS_CLIENT_ID` + `PS_CLIENT_SECRET`;
//! - (b) the environment variables of BeyondTrust's secrets-agent (`BT_API_URL`, `BT_API_KEY`,
//!   `CLIENT_ID`, `CLIENT_SECRET`, `SECRETS_LIST`, ...), mapped onto an [`AgentConfig`] whose
//!   `beyondtrust` lists hold the references, so the same code writes both.
//!
//! `PS_CA_FILE` adds a PEM bundle in both ways, `PS_AGENT_ROOT` overrides the root in both. When
//! both ways are present, (a) wins with a warning. Every error names the variable or field.

use std::{collections::BTreeMap, time::Duration};

use inject_api::{
    AgentConfig, BeyondTrustLists, ChangeSignal, Format, PasswordSafe, Refresh, env as vars, names,
    refs::{self, DEFAULT_SEPARATOR, ListResult},
};
use passwordsafe::{
    ApiVersion, Auth, CaMode, ClientConfig, ClientIdentity, RequestOptions, RetryPolicy, TlsOptions,
};

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret as _, zeroize::Zeroizing};

use crate::render::Templates;

/// BeyondTrust's default output directory.
pub const BT_DEFAULT_SECRETS_PATH: &str = "/usr/src/app/secrets_files";

/// The BeyondTrust variables whose presence selects way (b).
pub const BT_VARS: &[&str] = &[
    "BT_API_URL",
    "BT_API_KEY",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "BT_API_VERSION",
    "SECRETS_LIST",
    "FOLDER_LIST",
    "MANAGED_ACCOUNTS_LIST",
    "SECRETS_PATH",
    "BT_VERIFY_CA",
    "BT_CLIENT_CERTIFICATE_PATH",
    "BT_CLIENT_CERTIFICATE_PASSWORD",
    "POLLING_WAIT_BETWEEN_REQUESTS_MINUTES",
];

/// A configuration the agent refuses (exit code 2). The message names the variable or field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Read access to the environment (the process's, or a map in tests).
pub trait Env {
    /// The variable's value; `Err` names a variable that is set but not UTF-8.
    fn var(&self, name: &str) -> Result<Option<String>, ConfigError>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match std::env::var(name) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => err(format!("{name} is not valid UTF-8")),
        }
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.get(name).cloned())
    }
}

/// A variable that is set and not blank.
fn nonblank(env: &dyn Env, name: &str) -> Result<Option<String>, ConfigError> {
    Ok(env.var(name)?.filter(|v| !v.trim().is_empty()))
}

/// Where the configuration came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `PS_AGENT_CONFIG`.
    AgentConfig,
    /// BeyondTrust secrets-agent variables.
    BeyondTrust,
}

/// What runs without a subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultMode {
    Fetch,
    Watch,
}

/// Knobs given on the command line (or their env vars).
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Total retry budget of one API call.
    pub retry_budget: Duration,
    /// Timeout of one HTTP attempt.
    pub request_timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            retry_budget: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything the agent needs to run.
#[derive(Debug)]
pub struct Settings {
    pub origin: Origin,
    /// Validated (its references are typed, hence valid), with `PS_AGENT_ROOT` applied.
    pub config: AgentConfig,
    pub client: ClientConfig,
    pub templates: Templates,
    pub default_mode: DefaultMode,
    /// Logged once the logger is up.
    pub warnings: Vec<String>,
}

/// Loads the configuration from the environment.
pub fn load(env: &dyn Env, tuning: &Tuning) -> Result<Settings, ConfigError> {
    let agent_config = nonblank(env, vars::AGENT_CONFIG)?;
    let mut warnings = Vec::new();
    let bt_present: Vec<&str> = BT_VARS
        .iter()
        .copied()
        .filter(|v| env.var(v).ok().flatten().is_some())
        .collect();
    let (origin, mut config, auth, tls, default_mode) = match agent_config {
        Some(json) => {
            if !bt_present.is_empty() {
                warnings.push(format!(
                    "both {} and BeyondTrust variables ({}) are set: using {} and ignoring the others",
                    vars::AGENT_CONFIG,
                    bt_present.join(", "),
                    vars::AGENT_CONFIG
                ));
            }
            let config = AgentConfig::from_json(&json).map_err(|e| ConfigError(e.to_string()))?;
            let auth = ps_auth(env)?;
            let tls = agent_config_tls(env, &config.password_safe, &mut warnings)?;
            (Origin::AgentConfig, config, auth, tls, DefaultMode::Fetch)
        }
        None if bt_present.is_empty() => {
            return err(format!(
                "nothing to do: set {} (the webhook does), or BeyondTrust's BT_API_URL with SECRETS_LIST, \
                 FOLDER_LIST or MANAGED_ACCOUNTS_LIST",
                vars::AGENT_CONFIG
            ));
        }
        None => bt_env(env, &mut warnings)?,
    };
    if let Some(root) = nonblank(env, vars::ROOT_OVERRIDE)? {
        if !root.starts_with('/') {
            return err(format!("{} must be an absolute path", vars::ROOT_OVERRIDE));
        }
        config.root = root;
    }
    check_something_to_fetch(&config)?;
    let templates = templates(&config)?;
    check_extras(&config)?;
    if !config.password_safe.verify_tls {
        warnings.push(
            "TLS certificate verification of Password Safe is DISABLED: anyone on the network path can \
             impersonate the server and read every credential and secret. Enable it and trust the \
             server's CA with PS_CA_FILE instead."
                .to_owned(),
        );
    }
    let api_version = match config.password_safe.api_version.as_deref() {
        None => None,
        Some(v) => Some(v.parse::<ApiVersion>().map_err(|e| {
            let field = match origin {
                Origin::AgentConfig => "PS_AGENT_CONFIG passwordSafe.apiVersion",
                Origin::BeyondTrust => "BT_API_VERSION",
            };
            ConfigError(format!("{field}: {e}"))
        })?),
    };
    let mut client = ClientConfig::new(config.password_safe.url.clone(), auth);
    client.api_version = api_version;
    client.tls = tls;
    client.request_timeout = tuning.request_timeout;
    client.retry = RetryPolicy {
        max_elapsed: tuning.retry_budget,
        ..RetryPolicy::default()
    };
    let r = &config.password_safe.request;
    client.request = RequestOptions {
        duration_minutes: r.duration_minutes,
        reason: r.reason.clone(),
        rotate_on_checkin: r.rotate_on_checkin,
    };
    if !(1..=525_600).contains(&r.duration_minutes) {
        return err("PS_AGENT_CONFIG passwordSafe.request.durationMinutes: must be 1-525600");
    }
    if r.reason.chars().count() > 1000 {
        return err("PS_AGENT_CONFIG passwordSafe.request.reason: at most 1000 characters");
    }
    Ok(Settings {
        origin,
        config,
        client,
        templates,
        default_mode,
        warnings,
    })
}

/// Credentials of way (a).
fn ps_auth(env: &dyn Env) -> Result<Auth, ConfigError> {
    let key = nonblank(env, vars::API_KEY)?;
    let runas = nonblank(env, vars::RUNAS)?;
    let password = env.var(vars::RUNAS_PASSWORD)?.filter(|p| !p.is_empty());
    let client_id = nonblank(env, vars::CLIENT_ID)?;
    let client_secret = env.var(vars::CLIENT_SECRET)?.filter(|p| !p.is_empty());
    match (key, client_id) {
        (Some(_), Some(_)) => err(format!(
            "{} and {} are both set: choose one authentication method",
            vars::API_KEY,
            vars::CLIENT_ID
        )),
        (Some(key), None) => {
            if let Some(runas) = runas {
                if key.contains(';') || key.to_ascii_lowercase().contains("runas=") {
                    return err(format!(
                        "{} holds ';runas=...;' and {} is set as well: give the run-as user in one place",
                        vars::API_KEY,
                        vars::RUNAS
                    ));
                }
                Ok(Auth::ApiKey {
                    key: key.into(),
                    runas,
                    password: password.map(Into::into),
                })
            } else {
                let auth = Auth::from_beyondtrust_key(&key).map_err(|e| {
                    ConfigError(format!(
                        "{}: {e} (give the run-as user in {} or as KEY;runas=USER; in {})",
                        vars::API_KEY,
                        vars::RUNAS,
                        vars::API_KEY
                    ))
                })?;
                match (auth, password) {
                    (
                        Auth::ApiKey {
                            password: Some(_), ..
                        },
                        Some(_),
                    ) => err(format!(
                        "{} holds pwd=[...] and {} is set as well: give the password in one place",
                        vars::API_KEY,
                        vars::RUNAS_PASSWORD
                    )),
                    (
                        Auth::ApiKey {
                            key,
                            runas,
                            password: None,
                        },
                        Some(p),
                    ) => Ok(Auth::ApiKey {
                        key,
                        runas,
                        password: Some(p.into()),
                    }),
                    (auth, _) => Ok(auth),
                }
            }
        }
        (None, Some(client_id)) => match client_secret {
            Some(secret) => Ok(Auth::OAuth {
                client_id,
                client_secret: secret.into(),
            }),
            None => err(format!(
                "{} is set but {} is not",
                vars::CLIENT_ID,
                vars::CLIENT_SECRET
            )),
        },
        (None, None) => {
            if client_secret.is_some() {
                err(format!(
                    "{} is set but {} is not",
                    vars::CLIENT_SECRET,
                    vars::CLIENT_ID
                ))
            } else {
                err(format!(
                    "no credentials: set {} (with {} or ;runas=USER; in the key) or {} and {}",
                    vars::API_KEY,
                    vars::RUNAS,
                    vars::CLIENT_ID,
                    vars::CLIENT_SECRET
                ))
            }
        }
    }
}

fn read_file(what: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| ConfigError(format!("{what}: cannot read {path}: {e}")))
}

fn pem_bundle(env: &dyn Env, config_file: Option<(&str, &str)>) -> Result<Option<Vec<u8>>, ConfigError> {
    let mut bundle = Vec::new();
    if let Some((field, path)) = config_file {
        bundle.extend(read_file(field, path)?);
        bundle.push(b'\n');
    }
    if let Some(path) = nonblank(env, vars::CA_FILE)? {
        bundle.extend(read_file(vars::CA_FILE, &path)?);
        bundle.push(b'\n');
    }
    Ok((!bundle.is_empty()).then_some(bundle))
}

fn agent_config_tls(
    env: &dyn Env,
    ps: &PasswordSafe,
    _warnings: &mut Vec<String>,
) -> Result<TlsOptions, ConfigError> {
    let ca = pem_bundle(
        env,
        ps.ca_file
            .as_deref()
            .map(|p| ("PS_AGENT_CONFIG passwordSafe.caFile", p)),
    )?;
    if ps.ca_only && ca.is_none() {
        return err("PS_AGENT_CONFIG passwordSafe.caOnly: needs passwordSafe.caFile or PS_CA_FILE");
    }
    let identity = match (&ps.client_cert_file, &ps.client_key_file) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            let cert = read_file("PS_AGENT_CONFIG passwordSafe.clientCertFile", c)?;
            let key = Zeroizing::new(read_file("PS_AGENT_CONFIG passwordSafe.clientKeyFile", k)?);
            Some(ClientIdentity::from_pem(&cert, &key).map_err(|e| {
                ConfigError(format!(
                    "PS_AGENT_CONFIG passwordSafe.clientCertFile ({c}) and clientKeyFile ({k}): {e}"
                ))
            })?)
        }
        _ => {
            return err("PS_AGENT_CONFIG passwordSafe.clientCertFile and clientKeyFile: set both or neither");
        }
    };
    Ok(TlsOptions {
        ca_bundle_pem: ca,
        ca_mode: if ps.ca_only { CaMode::Replace } else { CaMode::Add },
        verify: ps.verify_tls,
        client_identity: identity,
    })
}

/// A BeyondTrust list (`SECRETS_LIST`, ...): comma separated, whitespace trimmed, empty entries
/// ignored, each entry parsed by the same function as the webhook's annotations. Every invalid
/// entry is reported, by number.
fn bt_list<T>(
    env: &dyn Env,
    var: &str,
    parse: fn(&[&str], char) -> ListResult<T>,
    problems: &mut Vec<String>,
) -> Result<Vec<T>, ConfigError> {
    let value = env.var(var)?.unwrap_or_default();
    let entries: Vec<&str> = refs::split_list(&value).collect();
    Ok(parse(&entries, DEFAULT_SEPARATOR).unwrap_or_else(|errors| {
        problems.extend(errors.iter().map(|e| format!("{var} {e}")));
        Vec::new()
    }))
}

/// Way (b): BeyondTrust's variables onto an [`AgentConfig`].
#[allow(clippy::type_complexity)]
fn bt_env(
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<(Origin, AgentConfig, Auth, TlsOptions, DefaultMode), ConfigError> {
    let url = nonblank(env, "BT_API_URL")?.ok_or_else(|| ConfigError("BT_API_URL is not set".into()))?;
    let url = url.trim().to_owned();
    if !url.starts_with("https://") {
        return err("BT_API_URL must start with https://");
    }
    let key = nonblank(env, "BT_API_KEY")?;
    let client_id = nonblank(env, "CLIENT_ID")?;
    let client_secret = env.var("CLIENT_SECRET")?.filter(|s| !s.is_empty());
    let auth = match (key, client_id) {
        (Some(_), Some(_)) => {
            return err("BT_API_KEY and CLIENT_ID are both set: choose one authentication method");
        }
        (Some(key), None) => Auth::from_beyondtrust_key(&key).map_err(|e| {
            ConfigError(format!(
                "BT_API_KEY: {e} (expected KEY;runas=USER; or KEY;runas=USER;pwd=[PASSWORD];)"
            ))
        })?,
        (None, Some(id)) => match client_secret {
            Some(secret) => Auth::OAuth {
                client_id: id.trim().to_owned(),
                client_secret: secret.into(),
            },
            None => return err("CLIENT_SECRET is not set (CLIENT_ID is)"),
        },
        (None, None) if client_secret.is_some() => return err("CLIENT_ID is not set (CLIENT_SECRET is)"),
        (None, None) => {
            return err("no credentials: set BT_API_KEY (KEY;runas=USER;) or CLIENT_ID and CLIENT_SECRET");
        }
    };
    let api_version = nonblank(env, "BT_API_VERSION")?.map(|v| v.trim().to_owned());
    let mut problems = Vec::new();
    let lists = BeyondTrustLists {
        secrets: bt_list(env, "SECRETS_LIST", refs::parse_secret_paths, &mut problems)?,
        folders: bt_list(env, "FOLDER_LIST", refs::parse_folder_paths, &mut problems)?,
        accounts: bt_list(
            env,
            "MANAGED_ACCOUNTS_LIST",
            refs::parse_account_refs,
            &mut problems,
        )?,
        file_mode: Default::default(),
    };
    if !problems.is_empty() {
        return err(problems.join("; "));
    }
    if lists.secrets.is_empty() && lists.folders.is_empty() && lists.accounts.is_empty() {
        return err("SECRETS_LIST, FOLDER_LIST and MANAGED_ACCOUNTS_LIST are all empty: nothing to fetch");
    }
    if let Some(v) = nonblank(env, "FETCH_ALL_MANAGED_ACCOUNTS")?
        && !v.trim().eq_ignore_ascii_case("false")
        && lists.accounts.is_empty()
    {
        warnings.push(
            "FETCH_ALL_MANAGED_ACCOUNTS is not supported (it would release every account the user can \
             request): list the accounts in MANAGED_ACCOUNTS_LIST"
                .into(),
        );
    }
    let root = match nonblank(env, "SECRETS_PATH")? {
        None => BT_DEFAULT_SECRETS_PATH.to_owned(),
        Some(p) if p.starts_with('/') => p,
        Some(p) => {
            let cwd = std::env::current_dir().map_err(|e| ConfigError(format!("SECRETS_PATH: {e}")))?;
            cwd.join(p).to_string_lossy().into_owned()
        }
    };
    let verify = match nonblank(env, "BT_VERIFY_CA")?.map(|v| v.trim().to_ascii_lowercase()) {
        None => true,
        Some(v) if v == "true" => true,
        Some(v) if v == "false" => false,
        Some(_) => return err("BT_VERIFY_CA must be true or false (default true)"),
    };
    let identity = bt_client_certificate(env, warnings)?;
    let ca = pem_bundle(env, None)?;
    let refresh = match nonblank(env, "POLLING_WAIT_BETWEEN_REQUESTS_MINUTES")? {
        None => None,
        Some(v) => {
            let minutes: f64 = v.trim().parse().map_err(|_| {
                ConfigError(
                    "POLLING_WAIT_BETWEEN_REQUESTS_MINUTES must be a number of minutes, e.g. 5".into(),
                )
            })?;
            if !(minutes.is_finite() && minutes > 0.0 && minutes <= 525_600.0) {
                return err("POLLING_WAIT_BETWEEN_REQUESTS_MINUTES must be more than 0");
            }
            Some(Refresh {
                interval_seconds: ((minutes * 60.0).ceil() as u64).max(1),
                ..Refresh::default()
            })
        }
    };
    let default_mode = if refresh.is_some() {
        DefaultMode::Watch
    } else {
        DefaultMode::Fetch
    };
    let config = AgentConfig {
        version: AgentConfig::VERSION,
        password_safe: PasswordSafe {
            url,
            api_version,
            verify_tls: verify,
            ca_file: None,
            ca_only: false,
            client_cert_file: None,
            client_key_file: None,
            request: Default::default(),
        },
        root,
        secrets: vec![],
        folders: vec![],
        accounts: vec![],
        beyondtrust: Some(lists),
        env: vec![],
        refresh: refresh.unwrap_or_default(),
        signal: None,
        readiness: Default::default(),
    };
    config.validate().map_err(|e| ConfigError(e.to_string()))?;
    let tls = TlsOptions {
        ca_bundle_pem: ca,
        ca_mode: CaMode::Add,
        verify,
        client_identity: identity,
    };
    Ok((Origin::BeyondTrust, config, auth, tls, default_mode))
}

/// `BT_CLIENT_CERTIFICATE_PATH`: a PKCS#12 file (`.pfx`/`.p12`, what BeyondInsight hands out)
/// opened with `BT_CLIENT_CERTIFICATE_PASSWORD` (absent = empty password), or a PEM file with the
/// certificate chain and the private key (unencrypted). Messages never show the password.
fn bt_client_certificate(
    env: &dyn Env,
    warnings: &mut Vec<String>,
) -> Result<Option<ClientIdentity>, ConfigError> {
    let Some(path) = nonblank(env, "BT_CLIENT_CERTIFICATE_PATH")? else {
        return Ok(None);
    };
    let bytes = read_file("BT_CLIENT_CERTIFICATE_PATH", &path)?;
    let text = std::str::from_utf8(&bytes)
        .ok()
        .filter(|t| t.contains("-----BEGIN"));
    let Some(text) = text else {
        let bytes = Zeroizing::new(bytes);
        let password =
            secrecy::SecretString::from(env.var("BT_CLIENT_CERTIFICATE_PASSWORD")?.unwrap_or_default());
        return bt_pkcs12(&path, &bytes, secrecy::ExposeSecret::expose_secret(&password)).map(Some);
    };
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return err(format!(
            "BT_CLIENT_CERTIFICATE_PATH: {path} has no CERTIFICATE block"
        ));
    }
    if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return err(format!(
            "BT_CLIENT_CERTIFICATE_PATH: the private key in {path} is encrypted; decrypt it with \
             openssl pkey -in {path} -out key.pem and put the key and the certificate in one file"
        ));
    }
    if !text.contains("PRIVATE KEY-----") {
        return err(format!(
            "BT_CLIENT_CERTIFICATE_PATH: {path} has no PRIVATE KEY block; put the certificate and its key in one PEM file"
        ));
    }
    if env
        .var("BT_CLIENT_CERTIFICATE_PASSWORD")?
        .is_some_and(|p| !p.is_empty())
    {
        warnings.push("BT_CLIENT_CERTIFICATE_PASSWORD is ignored: the PEM key is not encrypted".into());
    }
    let bytes = Zeroizing::new(bytes);
    ClientIdentity::from_pem(&bytes, &bytes)
        .map(Some)
        .map_err(|e| ConfigError(format!("BT_CLIENT_CERTIFICATE_PATH: {path}: {e}")))
}

/// A PKCS#12 `BT_CLIENT_CERTIFICATE_PATH`: its DER goes to the TLS layer as it is.
fn bt_pkcs12(path: &str, der: &[u8], password: &str) -> Result<ClientIdentity, ConfigError> {
    use crate::pkcs12::Pkcs12Error as E;
    let id = crate::pkcs12::decode(der, password).map_err(|e| {
        ConfigError(match e {
            E::Mac | E::Decrypt(_) => format!(
                "BT_CLIENT_CERTIFICATE_PASSWORD does not open {path} ({e}); set the password the \
                 PKCS#12 file was exported with (empty or unset = no password)"
            ),
            E::Malformed(_) | E::Expected(_) => format!(
                "BT_CLIENT_CERTIFICATE_PATH: {path} is neither PEM nor PKCS#12 ({e}); point it at the \
                 .pfx/.p12 file, or at one PEM file with the certificate chain and its unencrypted key"
            ),
            E::Unsupported { .. } | E::TooCostly(_) => format!(
                "BT_CLIENT_CERTIFICATE_PATH: {path}: {e}; convert it once to PEM with: openssl pkcs12 \
                 -in {path} -out client.pem -nodes -legacy (omit -legacy before OpenSSL 3) and point \
                 BT_CLIENT_CERTIFICATE_PATH at client.pem, or re-export that as PKCS#12 with the OpenSSL 3 \
                 defaults (AES-256, SHA-256): openssl pkcs12 -export -in client.pem -out client.p12"
            ),
            E::Content(_) => format!(
                "BT_CLIENT_CERTIFICATE_PATH: {path}: {e}; export the client certificate with its private key"
            ),
        })
    })?;
    let key = PrivateKeyDer::Pkcs8(id.private_key.expose_secret().to_vec().into());
    let chain = id.certificates.into_iter().map(CertificateDer::from).collect();
    ClientIdentity::from_der(chain, key)
        .map_err(|e| ConfigError(format!("BT_CLIENT_CERTIFICATE_PATH: {path}: {e}")))
}

fn check_something_to_fetch(config: &AgentConfig) -> Result<(), ConfigError> {
    if config.secrets.is_empty()
        && config.folders.is_empty()
        && config.accounts.is_empty()
        && config.env.is_empty()
        && config
            .beyondtrust
            .as_ref()
            .is_none_or(|b| b.secrets.is_empty() && b.folders.is_empty() && b.accounts.is_empty())
    {
        return err(
            "PS_AGENT_CONFIG: no secrets, folders, accounts, beyondtrust lists or env: nothing to fetch",
        );
    }
    Ok(())
}

fn templates(config: &AgentConfig) -> Result<Templates, ConfigError> {
    let mut t = Templates::new();
    let outputs = config
        .secrets
        .iter()
        .map(|s| ("secrets", &s.name, &s.render))
        .chain(config.folders.iter().map(|f| ("folders", &f.name, &f.render)))
        .chain(config.accounts.iter().map(|a| ("accounts", &a.name, &a.render)));
    for (kind, name, render) in outputs {
        if render.format == Format::Template
            && let Some(src) = &render.template
        {
            t.add(name, src)
                .map_err(|e| ConfigError(format!("PS_AGENT_CONFIG {kind}[{name}].template: {e}")))?;
        }
    }
    Ok(t)
}

/// Checks the parts `AgentConfig::validate` leaves to the agent.
fn check_extras(config: &AgentConfig) -> Result<(), ConfigError> {
    if config.refresh.interval_seconds == 0 {
        return err("PS_AGENT_CONFIG refresh.intervalSeconds: must be at least 1");
    }
    if config.refresh.jitter_percent > 100 {
        return err("PS_AGENT_CONFIG refresh.jitterPercent: must be at most 100");
    }
    let taken = |n: &str| {
        config.secrets.iter().any(|s| s.name == n)
            || config.folders.iter().any(|f| f.name == n)
            || config.accounts.iter().any(|a| a.name == n)
    };
    match &config.signal {
        Some(ChangeSignal::File(name)) => {
            names::validate_output_name(name)
                .map_err(|e| ConfigError(format!("PS_AGENT_CONFIG signal.file: {e}")))?;
            if taken(name) {
                return err(format!(
                    "PS_AGENT_CONFIG signal.file: {name:?} is also an output name"
                ));
            }
        }
        Some(ChangeSignal::Process { process, .. })
            if process.is_empty() || process.contains('/') || process.contains('\0') =>
        {
            return err(
                "PS_AGENT_CONFIG signal.process.process: must be a command name (as in /proc/PID/comm)",
            );
        }
        Some(ChangeSignal::Http { port, path }) => {
            if *port == 0 {
                return err("PS_AGENT_CONFIG signal.http.port: must not be 0");
            }
            if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return err(
                    "PS_AGENT_CONFIG signal.http.path: must start with '/' and contain no spaces or control characters",
                );
            }
        }
        Some(ChangeSignal::Process { .. }) | None => {}
    }
    if config.readiness.http_port == Some(0) {
        return err("PS_AGENT_CONFIG readiness.httpPort: must not be 0");
    }
    if let Some(bt) = &config.beyondtrust {
        // BeyondTrust's layout puts folders (or systems) directly under the root; they must not
        // collide with named outputs or the agent's own entries.
        let entries = (bt.secrets.iter().map(|p| p.as_str()))
            .chain(bt.folders.iter().map(|p| p.as_str()))
            .chain(bt.accounts.iter().map(|p| p.as_str()));
        for p in entries {
            let top = p.split(DEFAULT_SEPARATOR).next().unwrap_or_default();
            if taken(top) {
                return err(format!(
                    "PS_AGENT_CONFIG beyondtrust: {p:?} is written under {top:?}, which is also an output name"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::pem::PemObject as _;
    use secrecy::ExposeSecret;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        load(&env(pairs), &Tuning::default())
    }

    fn msg(pairs: &[(&str, &str)]) -> String {
        load_env(pairs).unwrap_err().0
    }

    const CFG: &str = r#"{"version":1,"passwordSafe":{"url":"https://ps/BeyondTrust/api/public/v3"},"root":"/ps/secrets","secrets":[{"name":"db","path":"team/db/password"}]}"#;

    #[test]
    fn beyondtrust_env_maps_onto_agent_config() {
        let s = load_env(&[
            ("BT_API_URL", "https://ps.example/BeyondTrust/api/public/v3"),
            ("BT_API_KEY", "KEY123;runas=svc;"),
            ("BT_API_VERSION", "3.1"),
            ("SECRETS_LIST", "team/db/password, team/api/key ,team/db/password"),
            ("FOLDER_LIST", "team/certs"),
            ("MANAGED_ACCOUNTS_LIST", "db-prod/svc_app"),
            ("SECRETS_PATH", ""),
            ("BT_VERIFY_CA", ""),
        ])
        .unwrap();
        assert_eq!(s.origin, Origin::BeyondTrust);
        assert_eq!(s.default_mode, DefaultMode::Fetch);
        assert_eq!(s.config.root, BT_DEFAULT_SECRETS_PATH);
        assert!(s.client.tls.verify, "verification is on by default");
        let bt = s.config.beyondtrust.as_ref().unwrap();
        assert_eq!(bt.secrets.len(), 3, "the plan removes duplicates");
        assert_eq!(bt.secrets[1].as_str(), "team/api/key", "entries trimmed");
        assert_eq!(bt.folders.len(), 1);
        assert_eq!(bt.accounts[0].to_string(), "db-prod/svc_app");
        assert_eq!(s.client.api_version, Some(ApiVersion::V3_1));
        match &s.client.auth {
            Auth::ApiKey { key, runas, password } => {
                assert!(key.expose_secret() == "KEY123");
                assert_eq!(runas, "svc");
                assert!(password.is_none());
            }
            other => panic!("unexpected auth {other:?}"),
        }
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn beyondtrust_polling_selects_watch_and_verify_false_warns() {
        let s = load_env(&[
            ("BT_API_URL", "https://ps/BeyondTrust/api/public/v3"),
            ("CLIENT_ID", "id"),
            ("CLIENT_SECRET", "secret"),
            ("SECRETS_LIST", "a/b"),
            ("BT_VERIFY_CA", "False"),
            ("POLLING_WAIT_BETWEEN_REQUESTS_MINUTES", "0.5"),
            ("SECRETS_PATH", "/tmp/x"),
        ])
        .unwrap();
        assert_eq!(s.default_mode, DefaultMode::Watch);
        assert_eq!(s.config.refresh.interval_seconds, 30);
        assert!(!s.client.tls.verify);
        assert!(s.warnings.iter().any(|w| w.contains("DISABLED")));
        assert!(matches!(s.client.auth, Auth::OAuth { .. }));
        assert_eq!(s.config.root, "/tmp/x");
    }

    #[test]
    fn beyondtrust_errors_name_the_variable() {
        let base = [
            ("BT_API_URL", "https://ps/BeyondTrust/api/public/v3"),
            ("SECRETS_LIST", "a/b"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut v: Vec<(&str, &str)> = base.to_vec();
            v.extend_from_slice(extra);
            msg(&v)
        };
        assert!(with(&[]).contains("no credentials"));
        assert!(with(&[("CLIENT_ID", "x")]).contains("CLIENT_SECRET is not set"));
        assert!(with(&[("CLIENT_SECRET", "x")]).contains("CLIENT_ID is not set"));
        assert!(with(&[("BT_API_KEY", "SEKRIT")]).starts_with("BT_API_KEY: "));
        assert!(
            !with(&[("BT_API_KEY", "SEKRIT")]).contains("SEKRIT"),
            "no key in messages"
        );
        assert!(with(&[("BT_API_KEY", "K;runas=u;"), ("CLIENT_ID", "c")]).contains("both set"));
        let e = with(&[("BT_API_KEY", "K;runas=u;"), ("BT_VERIFY_CA", "maybe")]);
        assert!(e.contains("BT_VERIFY_CA"), "{e}");
        let e = with(&[
            ("BT_API_KEY", "K;runas=u;"),
            ("POLLING_WAIT_BETWEEN_REQUESTS_MINUTES", "soon"),
        ]);
        assert!(e.contains("POLLING_WAIT_BETWEEN_REQUESTS_MINUTES"), "{e}");
        let e = with(&[
            ("BT_API_KEY", "K;runas=u;"),
            ("POLLING_WAIT_BETWEEN_REQUESTS_MINUTES", "0"),
        ]);
        assert!(e.contains("POLLING_WAIT_BETWEEN_REQUESTS_MINUTES"), "{e}");
        let e = with(&[("BT_API_KEY", "K;runas=u;"), ("BT_API_VERSION", "4.0")]);
        assert!(e.starts_with("BT_API_VERSION"), "{e}");
        let e = msg(&[
            ("BT_API_URL", "http://ps/x"),
            ("SECRETS_LIST", "a/b"),
            ("BT_API_KEY", "K;runas=u;"),
        ]);
        assert!(e.contains("BT_API_URL must start with https://"), "{e}");
        let e = msg(&[
            ("BT_API_URL", "https://ps/x"),
            ("BT_API_KEY", "K;runas=u;"),
            ("SECRETS_LIST", " , "),
        ]);
        assert!(e.contains("all empty"), "{e}");
        let e = msg(&[
            ("BT_API_URL", "https://ps/x"),
            ("BT_API_KEY", "K;runas=u;"),
            ("SECRETS_LIST", "ok/x,justtitle,a//b"),
            ("MANAGED_ACCOUNTS_LIST", "sys"),
        ]);
        assert!(
            e.contains("SECRETS_LIST entry 2: secret path \"justtitle\" has no folder"),
            "{e}"
        );
        assert!(
            e.contains("SECRETS_LIST entry 3: secret path \"a//b\" has an empty segment (number 2)"),
            "{e}"
        );
        assert!(
            e.contains("MANAGED_ACCOUNTS_LIST entry 1: managed account \"sys\""),
            "{e}"
        );
        // The limits the webhook applies to annotations.
        let e = msg(&[
            ("BT_API_URL", "https://ps/x"),
            ("BT_API_KEY", "K;runas=u;"),
            ("FOLDER_LIST", "a/b/c/d/e/f/g/h"),
        ]);
        assert!(
            e.contains(
                "FOLDER_LIST entry 1: folder path \"a/b/c/d/e/f/g/h\" has a folder depth of 8, more than the maximum of 7"
            ),
            "{e}"
        );
        assert!(msg(&[("SECRETS_LIST", "a/b")]).contains("BT_API_URL is not set"));
        assert!(msg(&[]).contains("nothing to do"));
    }

    fn pkcs12_fixture(name: &str) -> String {
        format!("{}/tests/fixtures/pkcs12/{name}", env!("CARGO_MANIFEST_DIR"))
    }

    fn bt_with_certificate(path: &str, password: Option<&str>) -> Result<Settings, ConfigError> {
        let mut pairs = vec![
            ("BT_API_URL", "https://ps/x"),
            ("BT_API_KEY", "K;runas=u;"),
            ("SECRETS_LIST", "a/b"),
            ("BT_CLIENT_CERTIFICATE_PATH", path),
        ];
        if let Some(p) = password {
            pairs.push(("BT_CLIENT_CERTIFICATE_PASSWORD", p));
        }
        load_env(&pairs)
    }

    #[test]
    fn pkcs12_client_certificate_is_read_with_its_password() {
        let s = bt_with_certificate(&pkcs12_fixture("chain-ec.p12"), Some("test-password")).unwrap();
        let id = s.client.tls.client_identity.as_ref().expect("a client identity");
        let chain = [
            std::fs::read_to_string(pkcs12_fixture("leaf-ec.pem")).unwrap(),
            std::fs::read_to_string(pkcs12_fixture("intermediate.pem")).unwrap(),
        ]
        .concat();
        let chain: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes())
            .map(Result::unwrap)
            .collect();
        assert_eq!(id.chain(), chain, "leaf first, then the chain");
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        // No password: BT_CLIENT_CERTIFICATE_PASSWORD unset or empty.
        for password in [None, Some("")] {
            let s = bt_with_certificate(&pkcs12_fixture("nopass.p12"), password).unwrap();
            assert!(s.client.tls.client_identity.is_some());
        }
        // The legacy algorithms too.
        let s = bt_with_certificate(&pkcs12_fixture("legacy-rc2-40.p12"), Some("test-password")).unwrap();
        assert!(s.client.tls.client_identity.is_some());
    }

    #[test]
    fn pkcs12_errors_name_the_variable_and_never_the_password() {
        let path = pkcs12_fixture("modern-rsa.p12");
        let e = bt_with_certificate(&path, Some("hunter2-wrong")).unwrap_err().0;
        assert!(
            e.contains(&format!(
                "BT_CLIENT_CERTIFICATE_PASSWORD does not open {path} (the PKCS#12 MAC does not verify)"
            )),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        let e = bt_with_certificate(&path, None).unwrap_err().0;
        assert!(e.contains("BT_CLIENT_CERTIFICATE_PASSWORD does not open"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let pfx = dir.path().join("client.pfx");
        std::fs::write(&pfx, [0x30, 0x82, 0x01, 0x00, 0xff]).unwrap();
        let e = bt_with_certificate(pfx.to_str().unwrap(), Some("hunter2"))
            .unwrap_err()
            .0;
        assert!(e.contains("BT_CLIENT_CERTIFICATE_PATH"), "{e}");
        assert!(e.contains("neither PEM nor PKCS#12"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");

        // A valid file with an algorithm ps-agent does not read: the conversion command.
        let mut der = std::fs::read(pkcs12_fixture("plain-nomac.p12")).unwrap();
        let version = der.windows(3).position(|w| w == [0x02, 0x01, 0x03]).unwrap();
        der[version + 2] = 4;
        std::fs::write(&pfx, &der).unwrap();
        let e = bt_with_certificate(pfx.to_str().unwrap(), None).unwrap_err().0;
        assert!(e.contains("unsupported PFX version: 4"), "{e}");
        assert!(e.contains("openssl pkcs12"), "{e}");
    }

    #[test]
    fn agent_config_with_each_credential_form() {
        let s = load_env(&[
            ("PS_AGENT_CONFIG", CFG),
            ("PS_API_KEY", "K"),
            ("PS_RUNAS", "svc"),
            ("PS_RUNAS_PASSWORD", "pw"),
        ])
        .unwrap();
        assert!(matches!(&s.client.auth, Auth::ApiKey { runas, password: Some(_), .. } if runas == "svc"));
        let s = load_env(&[("PS_AGENT_CONFIG", CFG), ("PS_API_KEY", "K;runas=svc;pwd=[p];")]).unwrap();
        assert!(matches!(&s.client.auth, Auth::ApiKey { runas, password: Some(_), .. } if runas == "svc"));
        let s = load_env(&[
            ("PS_AGENT_CONFIG", CFG),
            ("PS_API_KEY", "K;runas=svc;"),
            ("PS_RUNAS_PASSWORD", "p"),
        ])
        .unwrap();
        assert!(matches!(
            &s.client.auth,
            Auth::ApiKey {
                password: Some(_),
                ..
            }
        ));
        let s = load_env(&[
            ("PS_AGENT_CONFIG", CFG),
            ("PS_CLIENT_ID", "id"),
            ("PS_CLIENT_SECRET", "s"),
        ])
        .unwrap();
        assert!(matches!(&s.client.auth, Auth::OAuth { .. }));
        assert_eq!(s.origin, Origin::AgentConfig);
        assert_eq!(s.config.secrets[0].path.to_string(), "team/db/password");

        assert!(msg(&[("PS_AGENT_CONFIG", CFG)]).contains("no credentials"));
        assert!(msg(&[("PS_AGENT_CONFIG", CFG), ("PS_API_KEY", "K")]).starts_with("PS_API_KEY"));
        assert!(
            msg(&[
                ("PS_AGENT_CONFIG", CFG),
                ("PS_API_KEY", "K;runas=a;"),
                ("PS_RUNAS", "b")
            ])
            .contains("one place")
        );
        assert!(
            msg(&[
                ("PS_AGENT_CONFIG", CFG),
                ("PS_API_KEY", "K"),
                ("PS_CLIENT_ID", "c")
            ])
            .contains("both set")
        );
        assert!(msg(&[("PS_AGENT_CONFIG", CFG), ("PS_CLIENT_ID", "c")]).contains("PS_CLIENT_SECRET"));
    }

    #[test]
    fn agent_config_wins_over_beyondtrust_with_a_warning() {
        let s = load_env(&[
            ("PS_AGENT_CONFIG", CFG),
            ("PS_API_KEY", "K;runas=u;"),
            ("SECRETS_LIST", "x/y"),
            ("BT_API_URL", "https://other/x"),
            ("PS_AGENT_ROOT", "/tmp/override"),
        ])
        .unwrap();
        assert_eq!(s.origin, Origin::AgentConfig);
        assert_eq!(s.config.root, "/tmp/override");
        assert!(
            s.warnings[0].contains("BT_API_URL, SECRETS_LIST"),
            "{:?}",
            s.warnings
        );
    }

    #[test]
    fn agent_config_errors_name_the_field() {
        let bad = |json: &str| msg(&[("PS_AGENT_CONFIG", json), ("PS_API_KEY", "K;runas=u;")]);
        assert!(bad("{").starts_with("PS_AGENT_CONFIG is not valid JSON"));
        let e = bad(&CFG.replace("team/db/password", "justtitle"));
        assert!(e.contains("secrets[0].path"), "{e}");
        let e = bad(&CFG.replace(
            r#""path":"team/db/password"}"#,
            r#""path":"team/db/password","format":"template","template":"{{ x "}"#,
        ));
        assert!(e.contains("secrets[db].template: syntax error"), "{e}");
        let e = bad(&CFG.replace(r#""root""#, r#""refresh":{"intervalSeconds":0},"root""#));
        assert!(e.contains("refresh.intervalSeconds"), "{e}");
        let e = bad(&CFG.replace(r#""root""#, r#""signal":{"file":"db"},"root""#));
        assert!(e.contains("signal.file"), "{e}");
        let e = bad(&CFG.replace(
            r#""root""#,
            r#""env":[{"name":"X","from":{"account":"nosep"}}],"root""#,
        ));
        assert!(e.contains("env[0].from.account"), "{e}");
        let e = bad(&CFG.replace(r#""root""#, r#""passwordSafe2":1,"root""#));
        assert!(e.contains("passwordSafe2"), "{e}");
        let e = msg(&[
            ("PS_AGENT_CONFIG", CFG),
            ("PS_API_KEY", "K;runas=u;"),
            ("PS_CA_FILE", "/nonexistent/ca.pem"),
        ]);
        assert!(
            e.starts_with("PS_CA_FILE: cannot read /nonexistent/ca.pem"),
            "{e}"
        );
        let e = msg(&[
            ("PS_AGENT_CONFIG", CFG),
            ("PS_API_KEY", "K;runas=u;"),
            ("PS_AGENT_ROOT", "rel"),
        ]);
        assert!(e.contains("PS_AGENT_ROOT"), "{e}");
    }
}
