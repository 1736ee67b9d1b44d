//! The pod annotation vocabulary: every key under [`crate::ANNOTATION_PREFIX`] defined once,
//! with its documentation, and the parsers for the values that need no cluster context.
//!
//! The webhook combines these with cluster defaults and policy into a validated injection
//! spec; the table [`ALL`] is the single source for the README table and for "did you mean"
//! suggestions on misspelled keys.
//!
//! Keys come in two shapes:
//! - fixed keys such as [`INJECT`] or [`MODE`];
//! - families sharing a `<name>` suffix, such as [`SECRET_PREFIX`]`<name>`: the suffix names an
//!   output file (checked with [`crate::names::validate_output_name`]) or, for [`ENV_PREFIX`],
//!   an environment variable (checked with [`crate::names::validate_env_name`]).

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ChangeSignal, UnixSignal, ValueRef, names};

// ---------------------------------------------------------------------------------------------
// Fixed keys
// ---------------------------------------------------------------------------------------------

/// Opt-in: `"true"` injects the agent. Any other boolean value (`"false"`) skips the pod.
pub const INJECT: &str = "ps-injector.io/inject";
/// Written by the webhook (value [`STATUS_INJECTED`]) as the last patch operation; a pod that
/// carries it is never injected again, so a second pass is a no-op.
pub const STATUS: &str = "ps-injector.io/status";
/// The value of [`STATUS`] after injection.
pub const STATUS_INJECTED: &str = "injected";
/// BeyondTrust-style comma-separated list of `folder/.../title` paths (like the secrets-agent's
/// `SECRETS_LIST`), written in BeyondTrust's layout `<root>/<folder path>/<title>`.
pub const SECRETS: &str = "ps-injector.io/secrets";
/// BeyondTrust-style comma-separated list of folder paths (like `FOLDER_LIST`).
pub const FOLDERS: &str = "ps-injector.io/folders";
/// BeyondTrust-style comma-separated list of managed accounts `system/account` (like
/// `MANAGED_ACCOUNTS_LIST`), written as `<root>/<system>/<account>`.
pub const MANAGED_ACCOUNTS: &str = "ps-injector.io/managed-accounts";
/// How the agent runs: `init`, `sidecar`, `native-sidecar` or `init+sidecar` (see [`Mode`]).
pub const MODE: &str = "ps-injector.io/mode";
/// Time between refreshes in the refresh modes, humantime syntax (`30s`, `5m`, `1h30m`).
pub const REFRESH_INTERVAL: &str = "ps-injector.io/refresh-interval";
/// Comma-separated container names that get the read-only mount. Default: every app container.
/// Init containers get it only when named here.
pub const CONTAINERS: &str = "ps-injector.io/containers";
/// Comma-separated container names whose command is wrapped by `ps-agent exec` when `env-*`
/// annotations are present. Default: the app containers that get the mount.
pub const EXEC_CONTAINERS: &str = "ps-injector.io/exec-containers";
/// `"true"`: the agent's init step runs before every other init container. `"false"`: it runs
/// after them even when a service mesh's network setup is detected. Unset: after them, except
/// before a mesh's network setup or an init container named in [`CONTAINERS`].
pub const INIT_FIRST: &str = "ps-injector.io/init-first";
/// Where the secrets volume is mounted in the agent and the chosen containers. Guarded by policy.
pub const MOUNT_PATH: &str = "ps-injector.io/mount-path";
/// Name of the Kubernetes Secret (in the pod's namespace) holding the Password Safe credentials.
/// Guarded by policy.
pub const CREDENTIALS_SECRET: &str = "ps-injector.io/credentials-secret";
/// How the application learns of a refresh: `file:NAME` (NAME follows the output-name rule),
/// `process:NAME[:SIGNAL]` or `http:PORT[/PATH]`.
pub const SIGNAL: &str = "ps-injector.io/signal";
/// Agent container CPU request (Kubernetes quantity).
pub const AGENT_CPU_REQUEST: &str = "ps-injector.io/agent-cpu-request";
/// Agent container memory request (Kubernetes quantity).
pub const AGENT_MEMORY_REQUEST: &str = "ps-injector.io/agent-memory-request";
/// Agent container CPU limit (Kubernetes quantity).
pub const AGENT_CPU_LIMIT: &str = "ps-injector.io/agent-cpu-limit";
/// Agent container memory limit (Kubernetes quantity).
pub const AGENT_MEMORY_LIMIT: &str = "ps-injector.io/agent-memory-limit";
/// Per-pod Password Safe API URL. Guarded by policy and checked against the allowed hosts.
pub const URL: &str = "ps-injector.io/url";

// ---------------------------------------------------------------------------------------------
// Families: `<prefix><name>`
// ---------------------------------------------------------------------------------------------

/// `secret-<name>: folder/.../title`: one Secrets Safe secret written to `<root>/<name>`.
pub const SECRET_PREFIX: &str = "ps-injector.io/secret-";
/// `folder-<name>: folder/path`: every secret directly in a folder, under `<root>/<name>/`
/// (raw format) or rendered into one file `<root>/<name>`.
pub const FOLDER_PREFIX: &str = "ps-injector.io/folder-";
/// `account-<name>: system/account`: a managed account's password written to `<root>/<name>`.
pub const ACCOUNT_PREFIX: &str = "ps-injector.io/account-";
/// `format-<name>`: how output `<name>` is rendered (see [`crate::Format`]).
pub const FORMAT_PREFIX: &str = "ps-injector.io/format-";
/// `template-<name>`: a template (minijinja syntax) for output `<name>`; implies format
/// `template`.
pub const TEMPLATE_PREFIX: &str = "ps-injector.io/template-";
/// `file-mode-<name>`: octal permissions of output `<name>` (default `0400`, at most `0660`).
pub const FILE_MODE_PREFIX: &str = "ps-injector.io/file-mode-";
/// `optional-<name>: "true"`: output or env var `<name>` may be missing without failing the run.
pub const OPTIONAL_PREFIX: &str = "ps-injector.io/optional-";
/// `env-<VAR>: SOURCE`: environment variable `<VAR>` for the wrapped app command (exec mode).
/// SOURCE is `folder/.../title` or `secret:folder/.../title` (the secret's value),
/// `username:folder/.../title` (a credential's username) or `account:system/account` (a managed
/// account's password).
pub const ENV_PREFIX: &str = "ps-injector.io/env-";

/// The annotations whose per-pod use the cluster policy must allow explicitly
/// (`policy.allowOverrides`), by short name.
pub const GUARDED: [&str; 3] = ["url", "credentials-secret", "mount-path"];

/// Documentation of one key (or key family) for the README table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyInfo {
    /// The full key, or for a family its prefix (ending in `-`).
    pub key: &'static str,
    /// Whether `key` is a family prefix completed by a `<name>` suffix.
    pub family: bool,
    pub values: &'static str,
    pub default: &'static str,
    pub example: &'static str,
}

impl KeyInfo {
    /// The key without the `ps-injector.io/` prefix.
    pub fn short(&self) -> &'static str {
        &self.key[crate::ANNOTATION_PREFIX.len()..]
    }
}

const fn fixed(
    key: &'static str,
    values: &'static str,
    default: &'static str,
    example: &'static str,
) -> KeyInfo {
    KeyInfo {
        key,
        family: false,
        values,
        default,
        example,
    }
}

const fn family(
    key: &'static str,
    values: &'static str,
    default: &'static str,
    example: &'static str,
) -> KeyInfo {
    KeyInfo {
        key,
        family: true,
        values,
        default,
        example,
    }
}

/// Every key and family, in documentation order.
pub const ALL: &[KeyInfo] = &[
    fixed(INJECT, "`true`, `false`", "not injected", "`\"true\"`"),
    family(
        SECRET_PREFIX,
        "`folder/.../title`",
        "-",
        "`secret-db: team-a/db/password`",
    ),
    family(FOLDER_PREFIX, "`folder/path`", "-", "`folder-app: team-a/app`"),
    family(
        ACCOUNT_PREFIX,
        "`system/account`",
        "-",
        "`account-sa: db-prod/svc_app`",
    ),
    fixed(
        SECRETS,
        "comma list of `folder/.../title`",
        "-",
        "`team-a/db/password,team-a/api/key`",
    ),
    fixed(FOLDERS, "comma list of folder paths", "-", "`team-a/app`"),
    fixed(
        MANAGED_ACCOUNTS,
        "comma list of `system/account`",
        "-",
        "`db-prod/svc_app`",
    ),
    family(
        FORMAT_PREFIX,
        "`raw`, `json`, `yaml`, `dotenv`, `properties`, `template`",
        "`raw`",
        "`format-db: json`",
    ),
    family(
        TEMPLATE_PREFIX,
        "minijinja template",
        "-",
        "`template-db: \"{{ secret.value }}\"`",
    ),
    family(
        FILE_MODE_PREFIX,
        "octal, at most `0660`",
        "`0400` (`0440` with fsGroup)",
        "`file-mode-db: \"0440\"`",
    ),
    family(
        OPTIONAL_PREFIX,
        "`true`, `false`",
        "`false`",
        "`optional-db: \"true\"`",
    ),
    family(
        ENV_PREFIX,
        "`folder/.../title`, `secret:PATH`, `username:PATH`, `account:system/account`",
        "-",
        "`env-DB_PASSWORD: team-a/db/password`",
    ),
    fixed(
        EXEC_CONTAINERS,
        "comma list of container names",
        "app containers with the mount",
        "`app`",
    ),
    fixed(
        MODE,
        "`init`, `sidecar`, `native-sidecar`, `init+sidecar`",
        "cluster `injection.mode`",
        "`init`",
    ),
    fixed(
        REFRESH_INTERVAL,
        "duration (`30s`, `5m`, `1h`)",
        "cluster `injection.refreshInterval` (`5m`)",
        "`10m`",
    ),
    fixed(
        CONTAINERS,
        "comma list of container names",
        "every app container",
        "`app,worker`",
    ),
    fixed(INIT_FIRST, "`true`, `false`", "automatic", "`\"true\"`"),
    fixed(
        SIGNAL,
        "`file:NAME`, `process:NAME[:SIGNAL]`, `http:PORT[/PATH]`",
        "none",
        "`process:nginx:SIGHUP`",
    ),
    fixed(AGENT_CPU_REQUEST, "quantity", "cluster (`5m`)", "`10m`"),
    fixed(AGENT_MEMORY_REQUEST, "quantity", "cluster (`8Mi`)", "`16Mi`"),
    fixed(AGENT_CPU_LIMIT, "quantity", "cluster (none)", "`100m`"),
    fixed(AGENT_MEMORY_LIMIT, "quantity", "cluster (`32Mi`)", "`64Mi`"),
    fixed(
        MOUNT_PATH,
        "absolute path",
        "cluster `injection.mountPath` (`/ps/secrets`)",
        "`/etc/app/secrets`",
    ),
    fixed(
        CREDENTIALS_SECRET,
        "Secret name",
        "cluster `credentials.secretName`",
        "`team-a-ps-credentials`",
    ),
    fixed(
        URL,
        "`https://` URL",
        "cluster `passwordSafe.url`",
        "`https://ps2.example.com/BeyondTrust/api/public/v3`",
    ),
    fixed(STATUS, "`injected` (written by the webhook)", "-", "`injected`"),
];

/// A key under the prefix, classified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key<'a> {
    Inject,
    Status,
    Secrets,
    Folders,
    ManagedAccounts,
    Mode,
    RefreshInterval,
    Containers,
    ExecContainers,
    InitFirst,
    MountPath,
    CredentialsSecret,
    Signal,
    AgentCpuRequest,
    AgentMemoryRequest,
    AgentCpuLimit,
    AgentMemoryLimit,
    Url,
    Secret(&'a str),
    Folder(&'a str),
    Account(&'a str),
    Format(&'a str),
    Template(&'a str),
    FileMode(&'a str),
    Optional(&'a str),
    Env(&'a str),
    /// Under the prefix but not part of the vocabulary.
    Unknown,
}

/// Classifies an annotation key; `None` when it is not under [`crate::ANNOTATION_PREFIX`].
pub fn classify(key: &str) -> Option<Key<'_>> {
    let short = key.strip_prefix(crate::ANNOTATION_PREFIX)?;
    let fixed = match short {
        "inject" => Some(Key::Inject),
        "status" => Some(Key::Status),
        "secrets" => Some(Key::Secrets),
        "folders" => Some(Key::Folders),
        "managed-accounts" => Some(Key::ManagedAccounts),
        "mode" => Some(Key::Mode),
        "refresh-interval" => Some(Key::RefreshInterval),
        "containers" => Some(Key::Containers),
        "exec-containers" => Some(Key::ExecContainers),
        "init-first" => Some(Key::InitFirst),
        "mount-path" => Some(Key::MountPath),
        "credentials-secret" => Some(Key::CredentialsSecret),
        "signal" => Some(Key::Signal),
        "agent-cpu-request" => Some(Key::AgentCpuRequest),
        "agent-memory-request" => Some(Key::AgentMemoryRequest),
        "agent-cpu-limit" => Some(Key::AgentCpuLimit),
        "agent-memory-limit" => Some(Key::AgentMemoryLimit),
        "url" => Some(Key::Url),
        _ => None,
    };
    if fixed.is_some() {
        return fixed;
    }
    const FAMILIES: [&str; 8] = [
        "secret-",
        "folder-",
        "account-",
        "format-",
        "template-",
        "file-mode-",
        "optional-",
        "env-",
    ];
    for (index, prefix) in FAMILIES.into_iter().enumerate() {
        if let Some(name) = short.strip_prefix(prefix) {
            return Some(match index {
                0 => Key::Secret(name),
                1 => Key::Folder(name),
                2 => Key::Account(name),
                3 => Key::Format(name),
                4 => Key::Template(name),
                5 => Key::FileMode(name),
                6 => Key::Optional(name),
                _ => Key::Env(name),
            });
        }
    }
    Some(Key::Unknown)
}

/// A "did you mean" for a key under the prefix that is not in the vocabulary: the closest
/// fixed key, or family prefix with the same suffix, within a small edit distance.
pub fn suggest(key: &str) -> Option<String> {
    let short = key.strip_prefix(crate::ANNOTATION_PREFIX).unwrap_or(key);
    let mut best: Option<(usize, String)> = None;
    let mut consider = |distance: usize, candidate: String| {
        if best.as_ref().is_none_or(|(d, _)| distance < *d) {
            best = Some((distance, candidate));
        }
    };
    for info in ALL {
        let candidate = info.short();
        if info.family {
            // Try every split of the unknown key after a '-': head ~ family prefix, tail = name.
            for (i, _) in short.match_indices('-') {
                let (head, tail) = short.split_at(i + 1);
                if tail.is_empty() {
                    continue;
                }
                consider(edit_distance(head, candidate), format!("{candidate}{tail}"));
            }
        } else if info.key != STATUS {
            consider(edit_distance(short, candidate), candidate.to_owned());
        }
    }
    let (distance, candidate) = best?;
    let limit = if short.len() <= 6 { 1 } else { 3 };
    (distance > 0 && distance <= limit).then(|| format!("{}{candidate}", crate::ANNOTATION_PREFIX))
}

/// Levenshtein distance with adjacent transpositions counted as one edit
/// (optimal string alignment), on bytes: keys are ASCII.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev2 = vec![0usize; b.len() + 1];
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0usize; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(prev2[j - 2] + 1);
            }
            cur[j] = d;
        }
        std::mem::swap(&mut prev2, &mut prev);
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

// ---------------------------------------------------------------------------------------------
// Value parsers. Errors are the problem and its fix; the caller prefixes the annotation key.
// ---------------------------------------------------------------------------------------------

/// `true`/`false` (also `yes`/`no`, `on`/`off`, `1`/`0`), case-insensitive.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(format!("{value:?} is not a boolean; use \"true\" or \"false\"")),
    }
}

/// A comma-separated list; entries trimmed, empty entries dropped (the reference lists' rule,
/// also used for container names).
pub use crate::refs::split_list as parse_list;

/// A duration in humantime syntax (`30s`, `5m`, `1h30m`); zero is refused.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(value.trim())
        .map_err(|e| format!("{value:?} is not a duration ({e}); use e.g. \"30s\", \"5m\" or \"1h\""))?;
    if d.is_zero() {
        return Err("a zero interval is not allowed; use e.g. \"5m\"".to_owned());
    }
    Ok(d)
}

/// How the agent runs in the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// An init container fetches once (`ps-agent fetch`); no refresh.
    Init,
    /// A regular container refreshes (`ps-agent watch`); the app may start before the first
    /// write.
    Sidecar,
    /// An init container with `restartPolicy: Always` refreshes, and a startup probe holds the
    /// app containers until the first complete write (Kubernetes ≥ 1.29).
    NativeSidecar,
    /// An init container fetches once, then a regular container refreshes.
    InitSidecar,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Init, Mode::Sidecar, Mode::NativeSidecar, Mode::InitSidecar];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Init => "init",
            Mode::Sidecar => "sidecar",
            Mode::NativeSidecar => "native-sidecar",
            Mode::InitSidecar => "init+sidecar",
        }
    }

    /// Whether the agent keeps running and refreshing.
    pub fn refreshes(self) -> bool {
        self != Mode::Init
    }

    /// Whether the files exist before the app containers start.
    pub fn prepopulates(self) -> bool {
        self != Mode::Sidecar
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        Mode::ALL.into_iter().find(|m| m.as_str() == t).ok_or_else(|| {
            format!("unknown mode {s:?}; use one of init, sidecar, native-sidecar, init+sidecar")
        })
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The source of an `env-<VAR>` annotation (see [`ENV_PREFIX`] and
/// [`ValueRef::parse_source`]).
pub fn parse_env_source(value: &str) -> Result<ValueRef, String> {
    ValueRef::parse_source(value)
}

/// A change signal (see [`SIGNAL`]).
pub fn parse_signal(value: &str) -> Result<ChangeSignal, String> {
    const USE: &str = "use file:NAME, process:NAME[:SIGNAL] or http:PORT[/PATH]";
    let value = value.trim();
    let Some((kind, rest)) = value.split_once(':') else {
        return Err(format!("{value:?} is not a signal; {USE}"));
    };
    match kind {
        "file" => {
            // The same rule as output names (the agent checks it again): no leading '.', so the
            // marker never collides with the agent's own `..data` and `.ps-*` entries.
            let name = rest.trim();
            names::validate_output_name(name).map_err(|e| format!("signal file: {e}; e.g. file:changed"))?;
            Ok(ChangeSignal::File(name.to_owned()))
        }
        "process" => {
            let (process, signal) = match rest.split_once(':') {
                Some((p, s)) => (p.trim(), s.parse::<UnixSignal>()?),
                None => (rest.trim(), UnixSignal::Hup),
            };
            if process.is_empty() || process.contains('/') || process.chars().any(char::is_whitespace) {
                return Err(format!(
                    "signal process {process:?} must be a command name like \"nginx\"; {USE}"
                ));
            }
            Ok(ChangeSignal::Process {
                process: process.to_owned(),
                signal,
            })
        }
        "http" => {
            let (port, path) = match rest.find('/') {
                Some(i) => (&rest[..i], &rest[i..]),
                None => (rest, "/"),
            };
            let port: u16 = port
                .trim()
                .parse()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("signal port {port:?} is not a port number 1-65535; {USE}"))?;
            if path.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!(
                    "signal path {path:?} contains spaces or control characters"
                ));
            }
            Ok(ChangeSignal::Http {
                port,
                path: path.to_owned(),
            })
        }
        _ => Err(format!("unknown signal kind {kind:?}; {USE}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_key_classifies() {
        for info in ALL {
            let key = if info.family {
                format!("{}x", info.key)
            } else {
                info.key.to_owned()
            };
            let class = classify(&key).unwrap();
            assert_ne!(class, Key::Unknown, "{key}");
        }
        assert_eq!(classify("example.com/inject"), None);
        assert_eq!(classify("ps-injector.io/injekt"), Some(Key::Unknown));
        assert_eq!(classify("ps-injector.io/secret-db"), Some(Key::Secret("db")));
        assert_eq!(classify("ps-injector.io/secrets"), Some(Key::Secrets));
        assert_eq!(classify("ps-injector.io/file-mode-db"), Some(Key::FileMode("db")));
        assert_eq!(classify("ps-injector.io/env-DB_URL"), Some(Key::Env("DB_URL")));
        assert_eq!(
            classify("ps-injector.io/exec-containers"),
            Some(Key::ExecContainers)
        );
    }

    #[test]
    fn suggestions() {
        let s = |k: &str| suggest(&format!("ps-injector.io/{k}"));
        assert_eq!(s("injekt").as_deref(), Some("ps-injector.io/inject"));
        assert_eq!(s("secert-db").as_deref(), Some("ps-injector.io/secret-db"));
        assert_eq!(s("fromat-db").as_deref(), Some("ps-injector.io/format-db"));
        assert_eq!(
            s("refresh-intervall").as_deref(),
            Some("ps-injector.io/refresh-interval")
        );
        assert_eq!(s("filemode-db").as_deref(), Some("ps-injector.io/file-mode-db"));
        assert_eq!(s("init_first").as_deref(), Some("ps-injector.io/init-first"));
        assert_eq!(s("completely-unrelated-thing"), None);
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn booleans_modes_durations() {
        assert_eq!(parse_bool("True"), Ok(true));
        assert_eq!(parse_bool("0"), Ok(false));
        assert!(parse_bool("maybe").unwrap_err().contains("\"true\""));
        assert_eq!("init+sidecar".parse::<Mode>(), Ok(Mode::InitSidecar));
        assert!("sidecars".parse::<Mode>().unwrap_err().contains("native-sidecar"));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 minutes please").is_err());
        assert_eq!(parse_list(" a, ,b ,").collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn signals() {
        assert!(parse_signal("file:.changed").is_err());
        assert_eq!(
            parse_signal("file:changed"),
            Ok(ChangeSignal::File("changed".into()))
        );
        assert!(parse_signal("file:..data").is_err());
        assert!(parse_signal("file:.ps-ready").is_err());
        assert!(parse_signal("file:a/b").is_err());
        assert_eq!(
            parse_signal("process:nginx:SIGHUP"),
            Ok(ChangeSignal::Process {
                process: "nginx".into(),
                signal: UnixSignal::Hup
            })
        );
        assert_eq!(
            parse_signal("process:java"),
            Ok(ChangeSignal::Process {
                process: "java".into(),
                signal: UnixSignal::Hup
            })
        );
        assert!(parse_signal("process:nginx:SIGKILL").is_err());
        assert_eq!(
            parse_signal("http:8080/reload"),
            Ok(ChangeSignal::Http {
                port: 8080,
                path: "/reload".into()
            })
        );
        assert_eq!(
            parse_signal("http:9000"),
            Ok(ChangeSignal::Http {
                port: 9000,
                path: "/".into()
            })
        );
        assert!(parse_signal("http:0/x").is_err());
        assert!(parse_signal("http:99999").is_err());
        assert!(parse_signal("smoke-signal").is_err());
        assert!(parse_signal("mail:me").is_err());
    }
}
