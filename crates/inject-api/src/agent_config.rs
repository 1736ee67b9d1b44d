//! `AgentConfig`: the document the webhook renders into the agent container's environment
//! (`PS_AGENT_CONFIG`) and the agent reads at start-up. It carries references (paths, names),
//! never a secret value or credential; credentials reach the agent through the `PS_*`
//! credential environment variables filled from a Kubernetes Secret.
//!
//! The format is versioned: `version` must be [`AgentConfig::VERSION`]. Unknown fields are
//! rejected so that a webhook newer than the agent fails loudly instead of being half-obeyed.

use std::{collections::BTreeSet, fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{
    names::{self, NameError},
    refs::{AccountRef, FolderPath, SecretPath, ValueRef},
};

/// The whole configuration of one agent container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Format version; always [`AgentConfig::VERSION`] for this crate.
    pub version: u32,
    pub password_safe: PasswordSafe,
    /// Absolute directory the agent writes into (the shared volume's mount path).
    pub root: String,
    /// Named secrets, each written to `<root>/<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretOutput>,
    /// Whole folders, each written under `<root>/<name>/` (or one rendered file `<root>/<name>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<FolderOutput>,
    /// Managed-account passwords, each written to `<root>/<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<AccountOutput>,
    /// BeyondTrust-style lists written in BeyondTrust's layout `<root>/<folder path>/<title>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beyondtrust: Option<BeyondTrustLists>,
    /// Environment variables for `ps-agent exec` (env delivery).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Refresh::is_default")]
    pub refresh: Refresh,
    /// How the application learns that a refresh changed its files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<ChangeSignal>,
    #[serde(default, skip_serializing_if = "Readiness::is_default")]
    pub readiness: Readiness,
}

impl AgentConfig {
    pub const VERSION: u32 = 1;

    /// Parses and validates a configuration, as the agent does at start-up. References are
    /// parsed by their own validating constructors on the way in; an error names the field.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        // The path of a type error names the field (`secrets[0].fileMode`); serde_json alone
        // gives only a line and column.
        let config: Self = serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(json))
            .map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                // Text that is not JSON has no field to name; nor has the document itself.
                let is_json = serde_json::from_str::<serde::de::IgnoredAny>(json).is_ok();
                if !is_json || path == "." || path.is_empty() {
                    ConfigError::Json(inner.to_string())
                } else {
                    ConfigError::Field {
                        field: path,
                        reason: inner.to_string(),
                    }
                }
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Compact JSON, as the webhook writes it into `PS_AGENT_CONFIG`.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("AgentConfig always serialises")
    }

    /// Checks everything serde cannot: the version, that output names are safe single path
    /// components, that no two outputs write the same name, and that references are well formed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.version != Self::VERSION {
            return Err(ConfigError::Version(self.version));
        }
        if !self.root.starts_with('/') {
            return Err(ConfigError::field("root", "must be an absolute path"));
        }
        if !self.password_safe.url.starts_with("https://") {
            return Err(ConfigError::field("passwordSafe.url", "must start with https://"));
        }
        let mut taken = BTreeSet::new();
        let outputs = self
            .secrets
            .iter()
            .map(|s| ("secrets", &s.name, &s.render))
            .chain(self.folders.iter().map(|f| ("folders", &f.name, &f.render)))
            .chain(self.accounts.iter().map(|a| ("accounts", &a.name, &a.render)));
        for (kind, name, render) in outputs {
            let field = format!("{kind}[{name}]");
            names::validate_output_name(name).map_err(|e| ConfigError::name(&field, e))?;
            if !taken.insert(name.as_str()) {
                return Err(ConfigError::field(&field, "the same output name is used twice"));
            }
            if (render.format == Format::Template) != render.template.is_some() {
                return Err(ConfigError::field(
                    &field,
                    "format \"template\" and a template go together: set both or neither",
                ));
            }
        }
        let mut env_names = BTreeSet::new();
        for var in &self.env {
            names::validate_env_name(&var.name).map_err(|e| ConfigError::name("env", e))?;
            if !env_names.insert(var.name.as_str()) {
                return Err(ConfigError::field(&format!("env[{}]", var.name), "defined twice"));
            }
        }
        Ok(())
    }
}

/// How to reach and authenticate to Password Safe. Credentials are not here: they come from
/// the `PS_*` credential environment variables (see [`crate::env`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordSafe {
    /// API base URL, e.g. `https://ps.example.com/BeyondTrust/api/public/v3`.
    pub url: String,
    /// Secrets Safe API minor version sent as `version=` (`3.0`, `3.1`, `3.2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// TLS verification; `false` only with an explicit cluster setting, and logged loudly.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub verify_tls: bool,
    /// PEM bundle to trust, a path inside the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Trust only `ca_file`, not the system roots.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ca_only: bool,
    /// Client certificate and key (PEM) for registrations requiring one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<String>,
    /// Managed-account request settings.
    #[serde(default, skip_serializing_if = "AccountRequest::is_default")]
    pub request: AccountRequest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountRequest {
    #[serde(default = "AccountRequest::default_duration")]
    pub duration_minutes: u32,
    #[serde(default = "AccountRequest::default_reason")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_on_checkin: Option<bool>,
}

impl AccountRequest {
    fn default_duration() -> u32 {
        5
    }
    fn default_reason() -> String {
        "ps-injector".to_owned()
    }
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for AccountRequest {
    fn default() -> Self {
        Self {
            duration_minutes: Self::default_duration(),
            reason: Self::default_reason(),
            rotate_on_checkin: None,
        }
    }
}

/// How one output is rendered and written. Shared by secret, folder and account outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Render {
    #[serde(default, skip_serializing_if = "Format::is_raw")]
    pub format: Format,
    /// Template source when `format` is `template` (minijinja syntax; see the README).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(default, skip_serializing_if = "FileMode::is_default")]
    pub file_mode: FileMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// An optional output may be missing without failing the run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretOutput {
    /// File name under the root.
    pub name: String,
    /// `folder/.../title` in Secrets Safe.
    pub path: SecretPath,
    #[serde(flatten)]
    pub render: Render,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FolderOutput {
    /// Directory (raw format) or file (other formats) name under the root.
    pub name: String,
    /// Folder path in Secrets Safe; every secret directly in it is written.
    pub path: FolderPath,
    #[serde(flatten)]
    pub render: Render,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountOutput {
    pub name: String,
    /// `system/account` of a managed account.
    pub account: AccountRef,
    #[serde(flatten)]
    pub render: Render,
}

/// BeyondTrust secrets-agent compatible lists (`SECRETS_LIST`, `FOLDER_LIST`,
/// `MANAGED_ACCOUNTS_LIST`), written as `<root>/<folder path>/<title>` and
/// `<root>/<system>/<account>` holding exactly the value's bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BeyondTrustLists {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretPath>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folders: Vec<FolderPath>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<AccountRef>,
    #[serde(default, skip_serializing_if = "FileMode::is_default")]
    pub file_mode: FileMode,
}

/// One environment variable delivered through `ps-agent exec`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EnvVar {
    pub name: String,
    pub from: ValueRef,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
}

/// Output formats. `raw` writes exactly the value's bytes; the others render the output's
/// fields (see the README for the field names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Raw,
    Json,
    Yaml,
    Dotenv,
    Properties,
    Template,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::Raw,
        Format::Json,
        Format::Yaml,
        Format::Dotenv,
        Format::Properties,
        Format::Template,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Json => "json",
            Format::Yaml => "yaml",
            Format::Dotenv => "dotenv",
            Format::Properties => "properties",
            Format::Template => "template",
        }
    }

    fn is_raw(&self) -> bool {
        *self == Format::Raw
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Format::ALL.into_iter().find(|f| f.as_str() == s).ok_or_else(|| {
            format!("unknown format {s:?}: expected one of raw, json, yaml, dotenv, properties, template")
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Unix permission bits of a written file. Serialised as an octal string (`"0400"`).
/// Never world-readable or writable, never executable, never setuid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileMode(u32);

impl FileMode {
    pub const DEFAULT: FileMode = FileMode(0o400);

    pub fn new(bits: u32) -> Result<Self, String> {
        if bits & !0o660 != 0 {
            return Err(format!(
                "file mode {bits:04o} is not allowed: only read/write bits for owner and group \
                 (at most 0660, e.g. 0400 or 0440), never world access or execute"
            ));
        }
        if bits & 0o400 == 0 {
            return Err(format!(
                "file mode {bits:04o} must let the owner read (e.g. 0400)"
            ));
        }
        Ok(Self(bits))
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    fn is_default(&self) -> bool {
        *self == Self::DEFAULT
    }
}

impl Default for FileMode {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for FileMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let digits = s.trim();
        if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            return Err(format!("file mode {s:?} is not an octal mode like \"0400\""));
        }
        Self::new(u32::from_str_radix(digits, 8).map_err(|e| e.to_string())?)
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Refresh loop settings (`ps-agent watch`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Refresh {
    /// Seconds between refreshes.
    #[serde(default = "Refresh::default_interval")]
    pub interval_seconds: u64,
    /// Up to this fraction (percent) of the interval is added or removed at random.
    #[serde(default = "Refresh::default_jitter")]
    pub jitter_percent: u8,
}

impl Refresh {
    pub const DEFAULT_INTERVAL_SECONDS: u64 = 300;
    fn default_interval() -> u64 {
        Self::DEFAULT_INTERVAL_SECONDS
    }
    fn default_jitter() -> u8 {
        10
    }
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for Refresh {
    fn default() -> Self {
        Self {
            interval_seconds: Self::default_interval(),
            jitter_percent: Self::default_jitter(),
        }
    }
}

/// How the application is told that a refresh wrote a new generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ChangeSignal {
    /// Touch `<root>/<name>` (a marker file whose content is the generation id).
    File(String),
    /// Send a Unix signal to every process whose command name is `process`
    /// (needs `shareProcessNamespace: true`).
    Process { process: String, signal: UnixSignal },
    /// `POST` to `http://127.0.0.1:<port><path>` (loopback only: same pod network).
    Http { port: u16, path: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UnixSignal {
    #[serde(rename = "SIGHUP")]
    Hup,
    #[serde(rename = "SIGUSR1")]
    Usr1,
    #[serde(rename = "SIGUSR2")]
    Usr2,
    #[serde(rename = "SIGTERM")]
    Term,
}

impl FromStr for UnixSignal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim_start_matches("SIG") {
            "HUP" => Ok(Self::Hup),
            "USR1" => Ok(Self::Usr1),
            "USR2" => Ok(Self::Usr2),
            "TERM" => Ok(Self::Term),
            _ => Err(format!(
                "unknown signal {s:?}: expected SIGHUP, SIGUSR1, SIGUSR2 or SIGTERM"
            )),
        }
    }
}

/// Readiness reporting: the ready file `<root>/.ps-ready` after the first complete
/// generation, and optionally an HTTP endpoint answering `GET /ready` on every interface
/// (kubelet probes come from the node, not from loopback).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Readiness {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
}

impl Readiness {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// A configuration the agent refuses, naming the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("PS_AGENT_CONFIG is not valid JSON for this agent: {0}")]
    Json(String),
    #[error("PS_AGENT_CONFIG version {0} is not supported by this agent (expected {v})", v = AgentConfig::VERSION)]
    Version(u32),
    #[error("PS_AGENT_CONFIG {field}: {reason}")]
    Field { field: String, reason: String },
}

impl ConfigError {
    fn field(field: &str, reason: &str) -> Self {
        Self::Field {
            field: field.to_owned(),
            reason: reason.to_owned(),
        }
    }
    fn name(field: &str, e: NameError) -> Self {
        Self::field(field, &e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> AgentConfig {
        AgentConfig {
            version: 1,
            password_safe: PasswordSafe {
                url: "https://ps.example.com/BeyondTrust/api/public/v3".into(),
                api_version: Some("3.1".into()),
                verify_tls: true,
                ca_file: None,
                ca_only: false,
                client_cert_file: None,
                client_key_file: None,
                request: AccountRequest::default(),
            },
            root: "/ps/secrets".into(),
            secrets: vec![SecretOutput {
                name: "db".into(),
                path: "team-a/db/password".parse().unwrap(),
                render: Render::default(),
            }],
            folders: vec![],
            accounts: vec![],
            beyondtrust: None,
            env: vec![],
            refresh: Refresh::default(),
            signal: None,
            readiness: Readiness::default(),
        }
    }

    #[test]
    fn round_trips_and_omits_defaults() {
        let config = minimal();
        let json = config.to_json();
        assert_eq!(
            json,
            r#"{"version":1,"passwordSafe":{"url":"https://ps.example.com/BeyondTrust/api/public/v3","apiVersion":"3.1"},"root":"/ps/secrets","secrets":[{"name":"db","path":"team-a/db/password"}]}"#
        );
        assert_eq!(AgentConfig::from_json(&json).unwrap(), config);
    }

    #[test]
    fn every_field_round_trips() {
        let mut config = minimal();
        config.secrets[0].render = Render {
            format: Format::Template,
            template: Some("{{ secret.value }}".into()),
            file_mode: "0440".parse().unwrap(),
            uid: Some(1000),
            gid: Some(2000),
            optional: true,
        };
        config.folders.push(FolderOutput {
            name: "all".into(),
            path: "team-a/db".parse().unwrap(),
            render: Render::default(),
        });
        config.accounts.push(AccountOutput {
            name: "app".into(),
            account: "db-prod/svc_app".parse().unwrap(),
            render: Render {
                format: Format::Json,
                ..Render::default()
            },
        });
        config.beyondtrust = Some(BeyondTrustLists {
            secrets: vec!["team-a/db/password".parse().unwrap()],
            folders: vec!["team-a/db".parse().unwrap()],
            accounts: vec!["db-prod/svc_app".parse().unwrap()],
            file_mode: FileMode::DEFAULT,
        });
        config.env.push(EnvVar {
            name: "DB_PASSWORD".into(),
            from: ValueRef::Secret("team-a/db/password".parse().unwrap()),
            optional: false,
        });
        config.env.push(EnvVar {
            name: "DB_USER".into(),
            from: ValueRef::SecretUsername("team-a/db/password".parse().unwrap()),
            optional: false,
        });
        config.refresh = Refresh {
            interval_seconds: 60,
            jitter_percent: 5,
        };
        config.signal = Some(ChangeSignal::Process {
            process: "nginx".into(),
            signal: UnixSignal::Hup,
        });
        config.readiness.http_port = Some(8099);
        config.password_safe.request.rotate_on_checkin = Some(true);
        let json = config.to_json();
        assert_eq!(AgentConfig::from_json(&json).unwrap(), config);
        assert!(json.contains(r#""fileMode":"0440""#), "{json}");
        assert!(
            json.contains(r#""signal":{"process":{"process":"nginx","signal":"SIGHUP"}}"#),
            "{json}"
        );
    }

    #[test]
    fn rejects_unknown_fields_and_versions() {
        let json = minimal().to_json().replace(r#""root""#, r#""rooot""#);
        let e = AgentConfig::from_json(&json).unwrap_err().to_string();
        assert!(e.contains("rooot"), "{e}");
        // A type error names its field.
        let json = minimal().to_json().replace(r#""url":"#, r#""url":1,"x":"#);
        let e = AgentConfig::from_json(&json).unwrap_err().to_string();
        assert!(
            e.starts_with("PS_AGENT_CONFIG passwordSafe.url: invalid type"),
            "{e}"
        );
        let json = minimal().to_json().replace(r#""version":1"#, r#""version":2"#);
        assert_eq!(AgentConfig::from_json(&json), Err(ConfigError::Version(2)));
    }

    #[test]
    fn rejects_unsafe_and_duplicate_names() {
        for bad in ["..", ".hidden", "a/b", "a\\b", "", "x\0y", "line\nbreak"] {
            let mut config = minimal();
            config.secrets[0].name = bad.into();
            let err = config.validate().unwrap_err();
            assert!(
                matches!(&err, ConfigError::Field { field, .. } if field.starts_with("secrets[")),
                "{bad:?}: {err}"
            );
        }
        let mut config = minimal();
        config.accounts.push(AccountOutput {
            name: "db".into(),
            account: "s/a".parse().unwrap(),
            render: Render::default(),
        });
        assert!(config.validate().unwrap_err().to_string().contains("used twice"));
    }

    #[test]
    fn template_and_format_go_together() {
        let mut config = minimal();
        config.secrets[0].render.format = Format::Template;
        assert!(config.validate().is_err());
        config.secrets[0].render.template = Some("x".into());
        assert!(config.validate().is_ok());
        config.secrets[0].render.format = Format::Json;
        assert!(config.validate().is_err());
    }

    #[test]
    fn file_modes() {
        assert_eq!("0400".parse::<FileMode>().unwrap().bits(), 0o400);
        assert_eq!("440".parse::<FileMode>().unwrap().to_string(), "0440");
        assert!("0644".parse::<FileMode>().is_err(), "world-readable");
        assert!("0700".parse::<FileMode>().is_err(), "executable");
        assert!("0040".parse::<FileMode>().is_err(), "owner cannot read");
        assert!("04400".parse::<FileMode>().is_err());
        assert!("rw".parse::<FileMode>().is_err());
    }

    #[test]
    fn references_are_parsed_at_the_boundary() {
        let json = minimal()
            .to_json()
            .replace("team-a/db/password", "a/b/c/d/e/f/g/h/title");
        let err = AgentConfig::from_json(&json).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Field { field, reason }
                if field == "secrets[0].path" && reason.contains("folder depth of 8, more than the maximum of 7")),
            "{err}"
        );
        let json = minimal().to_json().replace(
            r#""secrets":[{"name":"db","path":"team-a/db/password"}]"#,
            r#""accounts":[{"name":"db","account":"sys/acct/extra"}]"#,
        );
        let err = AgentConfig::from_json(&json).unwrap_err();
        assert!(err.to_string().contains("accounts[0].account"), "{err}");
        // The canonical (trimmed) form is what is kept.
        let json = minimal()
            .to_json()
            .replace("team-a/db/password", " team-a / db / password ");
        assert_eq!(AgentConfig::from_json(&json).unwrap(), minimal());
    }

    #[test]
    fn signals_parse_with_or_without_prefix() {
        assert_eq!("SIGHUP".parse::<UnixSignal>().unwrap(), UnixSignal::Hup);
        assert_eq!("USR1".parse::<UnixSignal>().unwrap(), UnixSignal::Usr1);
        assert!("SIGKILL".parse::<UnixSignal>().is_err());
    }
}
