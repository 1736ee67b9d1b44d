//! Pod annotations + cluster configuration + policy → a validated [`InjectionSpec`], or a
//! [`Deny`] whose message names the annotation and the fix.
//!
//! Pure: no IO, no clock. Everything that depends on the pod's spec (containers, users, owner)
//! is decided later by [`crate::mutate`].

use std::{collections::BTreeMap, fmt, time::Duration};

use inject_api::{
    AccountOutput, AccountRef, AgentConfig, BeyondTrustLists, ChangeSignal, EnvVar, FileMode, FolderOutput,
    FolderPath, Format, PasswordSafe, Readiness, Refresh, Render, SecretOutput, SecretPath, ValueRef,
    annotations::{self as ann, Key, Mode},
    layout, names,
    refs::DEFAULT_SEPARATOR,
};

use crate::config::{self, Config, NamespacePolicy, Resources};

/// A refusal: the message is what the user sees in `kubectl apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deny(pub String);

impl Deny {
    /// `annotation <key>: <problem>` (the problem text carries the fix).
    pub fn annotation(key: &str, problem: impl fmt::Display) -> Self {
        Deny(format!("annotation {key}: {problem}"))
    }
}

impl fmt::Display for Deny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Deny {}

/// Where the CA bundle is mounted in the agent container.
pub const CA_MOUNT_DIR: &str = "/etc/ps-injector/ca";
/// The CA bundle file inside [`CA_MOUNT_DIR`].
pub const CA_FILE_NAME: &str = "ca.crt";
/// The ConfigMap volume carrying the CA bundle (agent containers only).
pub const CA_VOLUME_NAME: &str = "ps-injector-ca";

/// Everything the annotations ask for, validated against the cluster configuration and the
/// namespace's policy.
#[derive(Clone, Debug, PartialEq)]
pub struct InjectionSpec {
    /// The mode the annotation names; `None`: the cluster default (adapted to the workload).
    pub mode: Option<Mode>,
    /// The agent configuration; `root` is the mount path. File modes are left at their default:
    /// the mutation decides them, once it knows who reads the files.
    pub agent: AgentConfig,
    /// The outputs whose `file-mode-<name>` was set, with that mode.
    pub file_modes: BTreeMap<String, FileMode>,
    /// Whether `refresh-interval` was set explicitly.
    pub refresh_explicit: bool,
    /// `containers`: the containers that get the mount; `None`: every app container.
    pub containers: Option<Vec<String>>,
    /// `exec-containers`; `None`: the app containers that get the mount.
    pub exec_containers: Option<Vec<String>>,
    /// `init-first`; `None`: automatic.
    pub init_first: Option<bool>,
    pub mount_path: String,
    pub credentials_secret: String,
    pub resources: Resources,
    /// Suspicious but allowed input.
    pub warnings: Vec<String>,
}

impl InjectionSpec {
    /// Whether exec mode (env delivery) is on.
    pub fn exec(&self) -> bool {
        !self.agent.env.is_empty()
    }
}

/// Whether the opt-in annotation asks for injection: `Ok(true)` for `"true"`, `Ok(false)` when
/// absent or false, a [`Deny`] for a value that is not a boolean.
pub fn opted_in<'a>(mut annotations: impl Iterator<Item = (&'a str, &'a str)>) -> Result<bool, Deny> {
    match annotations.find(|(k, _)| *k == ann::INJECT) {
        None => Ok(false),
        Some((_, v)) => ann::parse_bool(v).map_err(|e| Deny::annotation(ann::INJECT, e)),
    }
}

/// Whether the status annotation marks the pod as injected.
pub fn already_injected<'a>(mut annotations: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
    annotations.any(|(k, v)| k == ann::STATUS && v == ann::STATUS_INJECTED)
}

#[derive(Default)]
struct OutputDraft<'a> {
    kind: Option<(OutputKind, &'a str, &'a str)>, // kind, key, value
    format: Option<(&'a str, &'a str)>,
    template: Option<(&'a str, &'a str)>,
    file_mode: Option<(&'a str, &'a str)>,
    optional: Option<(&'a str, &'a str)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum OutputKind {
    Secret,
    Folder,
    Account,
}

/// The annotations of a pod, sorted by what they configure; nothing validated against the
/// configuration yet.
#[derive(Default)]
struct Read<'a> {
    /// Per-output annotations, by output name.
    outputs: BTreeMap<&'a str, OutputDraft<'a>>,
    /// `env-<VAR>` annotations: (var, key, value).
    env: Vec<(&'a str, &'a str, &'a str)>,
    /// The single-valued annotations, by short name.
    fixed: Fixed<'a>,
    warnings: Vec<String>,
}

/// Single-valued annotations by short name (`mode`, `url`, ...): (key, value).
#[derive(Default)]
struct Fixed<'a>(BTreeMap<&'static str, (&'a str, &'a str)>);

impl<'a> Fixed<'a> {
    fn get(&self, short: &str) -> Option<(&'a str, &'a str)> {
        self.0.get(short).copied()
    }

    /// An optional annotation parsed with `parse`; its error names the key.
    fn parse<T, E: fmt::Display>(
        &self,
        short: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Option<T>, Deny> {
        self.get(short)
            .map(|(key, v)| parse(v).map_err(|e| Deny::annotation(key, e)))
            .transpose()
    }
}

/// Builds the spec for an opted-in pod.
pub fn build<'a>(
    annotations: impl Iterator<Item = (&'a str, &'a str)>,
    namespace: &str,
    config: &Config,
) -> Result<InjectionSpec, Deny> {
    let Read {
        outputs,
        env,
        fixed,
        mut warnings,
    } = read(annotations)?;
    let ns_policy = config.namespace_policy(namespace);
    check_overrides(&fixed, namespace, config)?;

    let url = url(&fixed, config, &mut warnings)?;
    let mount_path = mount_path(&fixed, config)?;
    let credentials_secret = credentials_secret(&fixed, config)?;
    let mode = mode(&fixed, config)?;
    let refresh_interval = refresh_interval_of(&fixed, config, &mut warnings)?;
    let containers = container_list(&fixed, "containers")?;
    let exec_containers = container_list(&fixed, "exec-containers")?;
    let init_first = fixed.parse("init-first", ann::parse_bool)?;
    let signal = fixed.parse("signal", ann::parse_signal)?;
    let resources = resources(&fixed, config)?;

    let mut agent = AgentConfig {
        version: AgentConfig::VERSION,
        password_safe: PasswordSafe {
            url,
            api_version: config.password_safe.api_version.clone(),
            verify_tls: config.password_safe.verify_tls,
            // The CA bundle's path is given in one place only, `PS_CA_FILE` (see
            // `crate::mutate`): the documented override for running the agent elsewhere.
            ca_file: None,
            ca_only: config.password_safe.ca_only,
            client_cert_file: None,
            client_key_file: None,
            request: config.password_safe.request.clone(),
        },
        root: mount_path.clone(),
        secrets: Vec::new(),
        folders: Vec::new(),
        accounts: Vec::new(),
        beyondtrust: None,
        env: Vec::new(),
        refresh: Refresh {
            interval_seconds: refresh_interval
                .unwrap_or(config.injection.refresh_interval)
                .as_secs()
                .max(1),
            jitter_percent: config.injection.refresh_jitter_percent,
        },
        signal: signal.clone(),
        readiness: Readiness::default(),
    };
    let policy = Policy {
        ns: ns_policy,
        namespace,
    };
    let file_modes = add_outputs(&mut agent, &outputs, &env, policy)?;
    agent.beyondtrust = beyondtrust_lists(&fixed, &outputs, policy)?;
    agent.env = env_delivery(&env, &outputs, policy)?;
    check_complete(&agent, &outputs)?;

    Ok(InjectionSpec {
        mode,
        agent,
        file_modes,
        refresh_explicit: refresh_interval.is_some(),
        containers,
        exec_containers,
        init_first,
        mount_path,
        credentials_secret,
        resources,
        warnings,
    })
}

/// Sorts the annotations by what they configure; checks output and env names.
fn read<'a>(annotations: impl Iterator<Item = (&'a str, &'a str)>) -> Result<Read<'a>, Deny> {
    let mut r = Read::default();
    for (key, value) in annotations {
        let Some(class) = ann::classify(key) else { continue };
        match class {
            Key::Secret(n) | Key::Folder(n) | Key::Account(n) => {
                let kind = match class {
                    Key::Secret(_) => OutputKind::Secret,
                    Key::Folder(_) => OutputKind::Folder,
                    _ => OutputKind::Account,
                };
                names::validate_output_name(n).map_err(|e| {
                    Deny::annotation(key, format!("the part after the prefix is the file name: {e}"))
                })?;
                let draft = r.outputs.entry(n).or_default();
                if let Some((_, other, _)) = draft.kind {
                    return Err(Deny::annotation(
                        key,
                        format!("output name {n:?} is also used by {other}; every output needs its own name"),
                    ));
                }
                draft.kind = Some((kind, key, value));
            }
            Key::Format(n) => r.outputs.entry(n).or_default().format = Some((key, value)),
            Key::Template(n) => r.outputs.entry(n).or_default().template = Some((key, value)),
            Key::FileMode(n) => r.outputs.entry(n).or_default().file_mode = Some((key, value)),
            Key::Optional(n) => r.outputs.entry(n).or_default().optional = Some((key, value)),
            Key::Env(var) => {
                names::validate_env_name(var).map_err(|e| {
                    Deny::annotation(key, format!("{e}; use e.g. ps-injector.io/env-DB_PASSWORD"))
                })?;
                r.env.push((var, key, value));
            }
            Key::Unknown => r.warnings.push(match ann::suggest(key) {
                Some(s) => format!("unknown annotation {key} is ignored; did you mean {s}?"),
                None => format!("unknown annotation {key} is ignored"),
            }),
            Key::Inject => {}
            Key::Status => {
                if value != ann::STATUS_INJECTED {
                    r.warnings.push(format!(
                        "annotation {key} is written by the webhook; the value {value:?} is ignored"
                    ));
                }
            }
            other => {
                r.fixed.0.insert(short_of(other), (key, value));
            }
        }
    }
    Ok(r)
}

/// Guarded overrides need the namespace's permission.
fn check_overrides(fixed: &Fixed<'_>, namespace: &str, config: &Config) -> Result<(), Deny> {
    for short in ann::GUARDED {
        if let Some((key, _)) = fixed.get(short)
            && !config.may_override(namespace, short)
        {
            return Err(Deny::annotation(
                key,
                format!(
                    "pods in namespace {namespace} may not set this annotation (cluster policy); remove it, \
                     or ask the cluster admin to add \"{short}\" to policy.allowOverrides"
                ),
            ));
        }
    }
    Ok(())
}

/// Password Safe's URL: the annotation's, on an allowed host, or the cluster's.
fn url(fixed: &Fixed<'_>, config: &Config, warnings: &mut Vec<String>) -> Result<String, Deny> {
    let Some((key, v)) = fixed.get("url") else {
        if config.url_is_placeholder() {
            warnings.push(format!(
                "the webhook has no Password Safe URL configured (passwordSafe.url is the placeholder {}); \
                 the agent will not connect until the cluster admin sets it",
                Config::PLACEHOLDER_URL
            ));
        }
        return Ok(config.password_safe.url.clone());
    };
    let v = v.trim();
    let host = config::url_host(v)
        .map_err(|e| Deny::annotation(key, format!("{e}; use https://HOST/BeyondTrust/api/public/v3")))?;
    if !config::host_allowed(config, host) {
        return Err(Deny::annotation(
            key,
            format!(
                "host {host:?} is not an allowed Password Safe host; use the cluster's Password Safe, \
                 or ask the cluster admin to add it to policy.allowedHosts"
            ),
        ));
    }
    Ok(v.to_owned())
}

/// Where the files appear in the app containers; clear of the agent's CA and token directories.
fn mount_path(fixed: &Fixed<'_>, config: &Config) -> Result<String, Deny> {
    let mount_path = match fixed.get("mount-path") {
        Some((key, v)) => {
            config::validate_mount_path(v.trim()).map_err(|e| Deny::annotation(key, e))?;
            v.trim().to_owned()
        }
        None => config.injection.mount_path.clone(),
    };
    let nested = |inner: &str, outer: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    let overlaps = |dir: &str| mount_path == dir || nested(&mount_path, dir) || nested(dir, &mount_path);
    if overlaps(CA_MOUNT_DIR) {
        return Err(Deny::annotation(
            ann::MOUNT_PATH,
            format!("{mount_path:?} overlaps the agent's CA directory {CA_MOUNT_DIR}; choose another path"),
        ));
    }
    if overlaps(layout::SERVICE_ACCOUNT_DIR) {
        return Err(Deny::annotation(
            ann::MOUNT_PATH,
            format!(
                "{mount_path:?} overlaps the ServiceAccount token directory {}; choose another path",
                layout::SERVICE_ACCOUNT_DIR
            ),
        ));
    }
    Ok(mount_path)
}

fn credentials_secret(fixed: &Fixed<'_>, config: &Config) -> Result<String, Deny> {
    match fixed.get("credentials-secret") {
        Some((key, v)) => {
            config::validate_dns_subdomain(v.trim())
                .map_err(|e| Deny::annotation(key, format!("{e}; name a Secret in the pod's namespace")))?;
            Ok(v.trim().to_owned())
        }
        None => Ok(config.credentials.secret_name.clone()),
    }
}

fn mode(fixed: &Fixed<'_>, config: &Config) -> Result<Option<Mode>, Deny> {
    let mode = fixed.parse("mode", str::parse::<Mode>)?;
    if mode == Some(Mode::NativeSidecar) && !config.injection.native_sidecars {
        return Err(Deny::annotation(
            ann::MODE,
            "native sidecars are disabled in this cluster (injection.nativeSidecars: false); use init, \
             init+sidecar or sidecar",
        ));
    }
    Ok(mode)
}

/// The annotation's refresh interval, with a warning below the cluster's recommended minimum.
fn refresh_interval_of(
    fixed: &Fixed<'_>,
    config: &Config,
    warnings: &mut Vec<String>,
) -> Result<Option<Duration>, Deny> {
    let Some((key, v)) = fixed.get("refresh-interval") else {
        return Ok(None);
    };
    let d = ann::parse_duration(v).map_err(|e| Deny::annotation(key, e))?;
    if d < config.injection.min_refresh_interval {
        warnings.push(format!(
            "annotation {key}: {v:?} is below the recommended minimum of {}; every refresh calls \
             Password Safe, so short intervals multiply its load",
            humantime::format_duration(config.injection.min_refresh_interval)
        ));
    }
    Ok(Some(d))
}

/// A list of container names (`containers`, `exec-containers`); never empty when given.
fn container_list(fixed: &Fixed<'_>, short: &str) -> Result<Option<Vec<String>>, Deny> {
    let Some((key, v)) = fixed.get(short) else {
        return Ok(None);
    };
    let items: Vec<String> = ann::parse_list(v).map(str::to_owned).collect();
    if items.is_empty() {
        return Err(Deny::annotation(
            key,
            "the list is empty; name at least one container, e.g. \"app\"",
        ));
    }
    Ok(Some(items))
}

/// The agent's resources: cluster defaults, each overridable; requests within limits.
fn resources(fixed: &Fixed<'_>, config: &Config) -> Result<Resources, Deny> {
    let mut resources = config.agent.resources.clone();
    for (short, slot) in [
        ("agent-cpu-request", &mut resources.requests.cpu),
        ("agent-memory-request", &mut resources.requests.memory),
        ("agent-cpu-limit", &mut resources.limits.cpu),
        ("agent-memory-limit", &mut resources.limits.memory),
    ] {
        if let Some((key, v)) = fixed.get(short) {
            config::parse_quantity(v.trim()).map_err(|e| Deny::annotation(key, e))?;
            *slot = Some(v.trim().to_owned());
        }
    }
    if let Err((field, e)) = resources.check() {
        let (request, limit) = if field.ends_with("cpu") {
            ("agent-cpu-request", ann::AGENT_CPU_LIMIT)
        } else {
            ("agent-memory-request", ann::AGENT_MEMORY_LIMIT)
        };
        let key = fixed.get(request).map_or(limit, |(k, _)| k);
        return Err(Deny::annotation(
            key,
            format!("agent {field}: {e}; raise the limit or lower the request"),
        ));
    }
    Ok(resources)
}

/// The namespace's policy, which every secret path and managed account must pass.
#[derive(Clone, Copy)]
struct Policy<'p> {
    ns: Option<&'p NamespacePolicy>,
    namespace: &'p str,
}

impl Policy<'_> {
    fn path(self, key: &str, path: &str) -> Result<(), Deny> {
        check_path(self.ns, self.namespace, key, path)
    }

    fn account(self, key: &str, account: &str) -> Result<(), Deny> {
        check_account(self.ns, self.namespace, key, account)
    }
}

/// A reference parsed by the contract of `inject_api::refs`, the agent's own rules; a refusal
/// names the annotation, the fault (the limit, for a limit) and the fix.
fn reference<T: std::str::FromStr<Err = inject_api::RefError>>(key: &str, value: &str) -> Result<T, Deny> {
    value.parse().map_err(|e| Deny::annotation(key, e))
}

/// The named outputs (`secret-`, `folder-`, `account-<name>` and their settings) into `agent`;
/// returns the explicit file modes. A setting without its output is denied with the closest name,
/// except an `optional-<VAR>` of an env var.
fn add_outputs(
    agent: &mut AgentConfig,
    outputs: &BTreeMap<&str, OutputDraft<'_>>,
    env: &[(&str, &str, &str)],
    policy: Policy<'_>,
) -> Result<BTreeMap<String, FileMode>, Deny> {
    let mut file_modes = BTreeMap::new();
    for (name, draft) in outputs {
        let Some((kind, key, value)) = draft.kind else {
            if let (Some(_), None, None, None) =
                (draft.optional, draft.format, draft.template, draft.file_mode)
                && env.iter().any(|(var, _, _)| var == name)
            {
                continue;
            }
            return Err(orphan(name, draft, outputs));
        };
        let render = render_of(name, draft, &mut file_modes)?;
        let name = (*name).to_owned();
        match kind {
            OutputKind::Secret => {
                let path: SecretPath = reference(key, value)?;
                policy.path(key, path.as_str())?;
                agent.secrets.push(SecretOutput { name, path, render });
            }
            OutputKind::Folder => {
                let path: FolderPath = reference(key, value)?;
                policy.path(key, path.as_str())?;
                agent.folders.push(FolderOutput { name, path, render });
            }
            OutputKind::Account => {
                let account: AccountRef = reference(key, value)?;
                policy.account(key, account.as_str())?;
                agent.accounts.push(AccountOutput {
                    name,
                    account,
                    render,
                });
            }
        }
    }
    Ok(file_modes)
}

/// The denial of a per-output setting whose output does not exist.
fn orphan(name: &str, draft: &OutputDraft<'_>, outputs: &BTreeMap<&str, OutputDraft<'_>>) -> Deny {
    let (orphan_key, _) = draft
        .format
        .or(draft.template)
        .or(draft.file_mode)
        .or(draft.optional)
        .unwrap_or((ann::SECRET_PREFIX, ""));
    let known: Vec<&str> = outputs
        .iter()
        .filter(|(_, d)| d.kind.is_some())
        .map(|(n, _)| *n)
        .collect();
    let hint = closest(name, &known)
        .map(|c| format!("; did you mean {c:?}?"))
        .unwrap_or_default();
    Deny::annotation(
        orphan_key,
        format!(
            "there is no output named {name:?} (no {}{name}, {}{name} or {}{name}){hint}",
            ann::SECRET_PREFIX,
            ann::FOLDER_PREFIX,
            ann::ACCOUNT_PREFIX
        ),
    )
}

/// BeyondTrust-style lists (`secrets`, `folders`, `managed-accounts`); none may write under a
/// directory named like an output.
fn beyondtrust_lists(
    fixed: &Fixed<'_>,
    outputs: &BTreeMap<&str, OutputDraft<'_>>,
    policy: Policy<'_>,
) -> Result<Option<BeyondTrustLists>, Deny> {
    let mut bt = BeyondTrustLists::default();
    if let Some((key, v)) = fixed.get("secrets") {
        for entry in ann::parse_list(v) {
            let path: SecretPath = reference(key, entry)?;
            policy.path(key, path.as_str())?;
            bt.secrets.push(path);
        }
    }
    if let Some((key, v)) = fixed.get("folders") {
        for entry in ann::parse_list(v) {
            let path: FolderPath = reference(key, entry)?;
            policy.path(key, path.as_str())?;
            bt.folders.push(path);
        }
    }
    if let Some((key, v)) = fixed.get("managed-accounts") {
        for entry in ann::parse_list(v) {
            let account: AccountRef = reference(key, entry)?;
            policy.account(key, account.as_str())?;
            bt.accounts.push(account);
        }
    }
    let entries = (bt.secrets.iter().map(|p| (ann::SECRETS, p.as_str())))
        .chain(bt.folders.iter().map(|p| (ann::FOLDERS, p.as_str())))
        .chain(bt.accounts.iter().map(|p| (ann::MANAGED_ACCOUNTS, p.as_str())));
    for (key, entry) in entries {
        let top = entry.split(DEFAULT_SEPARATOR).next().unwrap_or_default();
        if outputs.get(top).is_some_and(|d| d.kind.is_some()) {
            return Err(Deny::annotation(
                key,
                format!(
                    "{entry:?} is written under the directory {top:?}, which is also the name of an output; \
                     rename that output"
                ),
            ));
        }
    }
    let empty = bt.secrets.is_empty() && bt.folders.is_empty() && bt.accounts.is_empty();
    Ok((!empty).then_some(bt))
}

/// Env delivery (`env-<VAR>`, with `optional-<VAR>`); the first annotation of a name wins.
fn env_delivery(
    env: &[(&str, &str, &str)],
    outputs: &BTreeMap<&str, OutputDraft<'_>>,
    policy: Policy<'_>,
) -> Result<Vec<EnvVar>, Deny> {
    let mut vars: Vec<EnvVar> = Vec::new();
    for (var, key, value) in env {
        let from = ann::parse_env_source(value).map_err(|e| Deny::annotation(key, e))?;
        match &from {
            ValueRef::Secret(p) | ValueRef::SecretUsername(p) => policy.path(key, p.as_str())?,
            ValueRef::Account(a) => policy.account(key, a.as_str())?,
        }
        let optional = match outputs.get(var).and_then(|d| d.optional) {
            Some((okey, v)) => ann::parse_bool(v).map_err(|e| Deny::annotation(okey, e))?,
            None => false,
        };
        if vars.iter().any(|v| v.name == *var) {
            continue;
        }
        vars.push(EnvVar {
            name: (*var).to_owned(),
            from,
            optional,
        });
    }
    Ok(vars)
}

/// The last checks of the whole configuration: the signal file is no output, something is
/// requested, and the agent accepts it.
fn check_complete(agent: &AgentConfig, outputs: &BTreeMap<&str, OutputDraft<'_>>) -> Result<(), Deny> {
    if let Some(ChangeSignal::File(name)) = &agent.signal
        && outputs.get(name.as_str()).is_some_and(|d| d.kind.is_some())
    {
        return Err(Deny::annotation(
            ann::SIGNAL,
            format!("the signal file {name:?} has the name of an output; choose another, e.g. file:changed"),
        ));
    }
    if agent.secrets.is_empty()
        && agent.folders.is_empty()
        && agent.accounts.is_empty()
        && agent.beyondtrust.is_none()
        && agent.env.is_empty()
    {
        return Err(Deny::annotation(
            ann::INJECT,
            format!(
                "the pod asks for injection but names no secret; add e.g. {}db: \"folder/title\" (see the \
                 annotation table)",
                ann::SECRET_PREFIX
            ),
        ));
    }
    agent
        .validate()
        .map_err(|e| Deny(format!("the generated agent configuration is invalid: {e}")))
}

fn render_of(
    name: &str,
    draft: &OutputDraft<'_>,
    file_modes: &mut BTreeMap<String, FileMode>,
) -> Result<Render, Deny> {
    let mut render = Render::default();
    let format = draft
        .format
        .map(|(key, v)| {
            v.trim()
                .parse::<Format>()
                .map_err(|e| Deny::annotation(key, use_instead(&e)))
        })
        .transpose()?;
    match (format, draft.template) {
        (Some(f), Some((tkey, _))) if f != Format::Template => {
            return Err(Deny::annotation(
                tkey,
                format!(
                    "a template needs format template, but {}{name} is {:?}; remove one of the two",
                    ann::FORMAT_PREFIX,
                    f.as_str()
                ),
            ));
        }
        (Some(Format::Template), None) => {
            let (fkey, _) = draft.format.unwrap_or_default();
            return Err(Deny::annotation(
                fkey,
                format!(
                    "format template needs the template itself in {}{name}",
                    ann::TEMPLATE_PREFIX
                ),
            ));
        }
        (_, Some((tkey, source))) => {
            check_template(source).map_err(|e| Deny::annotation(tkey, e))?;
            render.format = Format::Template;
            render.template = Some(source.to_owned());
        }
        (Some(f), None) => render.format = f,
        (None, None) => {}
    }
    if let Some((key, v)) = draft.file_mode {
        let mode = v.parse::<FileMode>().map_err(|e| Deny::annotation(key, e))?;
        file_modes.insert(name.to_owned(), mode);
    }
    if let Some((key, v)) = draft.optional {
        render.optional = ann::parse_bool(v).map_err(|e| Deny::annotation(key, e))?;
    }
    Ok(render)
}

/// `Format::from_str` says "expected one of"; the deny messages say "use one of".
fn use_instead(e: &str) -> String {
    e.replace(": expected one of", "; use one of")
}

fn check_template(source: &str) -> Result<(), String> {
    // Syntax only: filters and globals are resolved when the agent renders.
    let env = minijinja::Environment::empty();
    env.template_from_str(source)
        .map(|_| ())
        .map_err(|e| format!("template does not parse: {e}; see the template syntax in the README"))
}

fn check_path(policy: Option<&NamespacePolicy>, namespace: &str, key: &str, path: &str) -> Result<(), Deny> {
    match policy {
        Some(p) if !p.allows_path(path) => Err(Deny::annotation(
            key,
            format!(
                "path {path:?} is outside the secret paths namespace {namespace} may read ({}); use a path \
                 under an allowed prefix, or ask the cluster admin to extend the policy",
                p.allowed_paths.as_deref().unwrap_or_default().join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

fn check_account(
    policy: Option<&NamespacePolicy>,
    namespace: &str,
    key: &str,
    account: &str,
) -> Result<(), Deny> {
    match policy {
        Some(p) if !p.allows_account(account) => Err(Deny::annotation(
            key,
            format!(
                "managed account {account:?} is outside the accounts namespace {namespace} may use ({}); ask \
                 the cluster admin to extend the policy",
                p.allowed_accounts.as_deref().unwrap_or_default().join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

fn closest<'a>(name: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (ann::edit_distance(name, c), *c))
        .filter(|(d, _)| *d > 0 && *d <= 2)
        .min()
        .map(|(_, c)| c)
}

fn short_of(key: Key<'_>) -> &'static str {
    match key {
        Key::Secrets => "secrets",
        Key::Folders => "folders",
        Key::ManagedAccounts => "managed-accounts",
        Key::Mode => "mode",
        Key::RefreshInterval => "refresh-interval",
        Key::Containers => "containers",
        Key::ExecContainers => "exec-containers",
        Key::InitFirst => "init-first",
        Key::MountPath => "mount-path",
        Key::CredentialsSecret => "credentials-secret",
        Key::Signal => "signal",
        Key::AgentCpuRequest => "agent-cpu-request",
        Key::AgentMemoryRequest => "agent-memory-request",
        Key::AgentCpuLimit => "agent-cpu-limit",
        Key::AgentMemoryLimit => "agent-memory-limit",
        Key::Url => "url",
        _ => "",
    }
}

/// The refresh interval in effect, for messages.
pub fn refresh_interval(spec: &InjectionSpec) -> Duration {
    Duration::from_secs(spec.agent.refresh.interval_seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
passwordSafe:
  url: https://ps.example.com/BeyondTrust/api/public/v3
policy:
  allowedHosts: ["*.dr.example.com"]
  namespaces:
    team-a:
      allowedPaths: ["team-a/**"]
      allowedAccounts: ["db-prod/*"]
      allowOverrides: [url, mount-path]
"#;

    fn build_with(pairs: &[(&str, &str)], namespace: &str) -> Result<InjectionSpec, Deny> {
        let config = Config::from_yaml(POLICY).unwrap();
        let full: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| {
                let k = if k.contains('/') {
                    (*k).to_owned()
                } else {
                    format!("ps-injector.io/{k}")
                };
                (k, (*v).to_owned())
            })
            .collect();
        build(
            full.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            namespace,
            &config,
        )
    }

    #[test]
    fn opt_in_and_status() {
        let yes = [("ps-injector.io/inject", "true")];
        assert_eq!(opted_in(yes.iter().copied()), Ok(true));
        assert_eq!(opted_in([("other/inject", "true")].into_iter()), Ok(false));
        assert_eq!(
            opted_in([("ps-injector.io/inject", "False")].into_iter()),
            Ok(false)
        );
        assert!(opted_in([("ps-injector.io/inject", "ja")].into_iter()).is_err());
        assert!(already_injected(
            [("ps-injector.io/status", "injected")].into_iter()
        ));
        assert!(!already_injected(
            [("ps-injector.io/status", "pending")].into_iter()
        ));
    }

    /// (case, annotations, expected deny fragment)
    type Pairs = &'static [(&'static str, &'static str)];

    const DENIES: &[(&str, Pairs, &str)] = &[
        ("no secrets", &[("inject", "true")], "names no secret"),
        (
            "bad format",
            &[("secret-db", "team-a/db"), ("format-db", "jsn")],
            "annotation ps-injector.io/format-db: unknown format \"jsn\"; use one of raw, json",
        ),
        (
            "template without format",
            &[("secret-db", "team-a/db"), ("format-db", "template")],
            "format template needs the template itself in ps-injector.io/template-db",
        ),
        (
            "template with other format",
            &[
                ("secret-db", "team-a/db"),
                ("format-db", "yaml"),
                ("template-db", "x"),
            ],
            "annotation ps-injector.io/template-db: a template needs format template",
        ),
        (
            "broken template",
            &[("secret-db", "team-a/db"), ("template-db", "{% if %}")],
            "template does not parse",
        ),
        ("bad path", &[("secret-db", "db")], "has no folder"),
        ("empty segment", &[("secret-db", "team-a//db")], "empty segment"),
        (
            "bad folder",
            &[("folder-all", "team-a/")],
            "annotation ps-injector.io/folder-all",
        ),
        ("bad account", &[("account-sa", "db-prod")], "system/account"),
        (
            "output name",
            &[("secret-a:b", "team-a/db")],
            "the part after the prefix is the file name",
        ),
        (
            "duplicate output",
            &[("secret-db", "team-a/db"), ("folder-db", "team-a")],
            "is also used by",
        ),
        (
            "orphan file mode",
            &[("secret-db", "team-a/db"), ("file-mode-dbb", "0400")],
            "did you mean \"db\"?",
        ),
        (
            "orphan optional",
            &[("secret-db", "team-a/db"), ("optional-x", "true")],
            "no output named \"x\"",
        ),
        (
            "bad file mode",
            &[("secret-db", "team-a/db"), ("file-mode-db", "0777")],
            "file mode 0777 is not allowed",
        ),
        (
            "bad optional",
            &[("secret-db", "team-a/db"), ("optional-db", "perhaps")],
            "annotation ps-injector.io/optional-db: \"perhaps\" is not a boolean",
        ),
        (
            "bad env name",
            &[("env-A-B", "team-a/db")],
            "environment variable name \"A-B\"",
        ),
        (
            "bad env source",
            &[("env-A", "vault:team-a/db")],
            "unknown source \"vault\"",
        ),
        (
            "env path policy",
            &[("env-A", "team-b/db")],
            "outside the secret paths namespace team-a may read (team-a/**)",
        ),
        (
            "path policy",
            &[("secret-db", "team-b/db/password")],
            "annotation ps-injector.io/secret-db: path \"team-b/db/password\" is outside",
        ),
        ("folder policy", &[("folder-all", "team")], "is outside"),
        (
            "bt list policy",
            &[("secrets", "team-a/x, team-b/y")],
            "annotation ps-injector.io/secrets: path \"team-b/y\" is outside",
        ),
        (
            "account policy",
            &[("account-sa", "db-test/svc")],
            "managed account \"db-test/svc\" is outside",
        ),
        (
            "bt account policy",
            &[("managed-accounts", "db-test/svc")],
            "is outside",
        ),
        (
            "bt clash",
            &[("secret-team-a", "team-a/x"), ("secrets", "team-a/db/password")],
            "also the name of an output",
        ),
        (
            "unknown mode",
            &[("secret-db", "team-a/db"), ("mode", "daemon")],
            "unknown mode \"daemon\"",
        ),
        (
            "bad interval",
            &[("secret-db", "team-a/db"), ("refresh-interval", "0s")],
            "zero interval",
        ),
        (
            "empty containers",
            &[("secret-db", "team-a/db"), ("containers", " , ")],
            "the list is empty",
        ),
        (
            "bad init-first",
            &[("secret-db", "team-a/db"), ("init-first", "first")],
            "not a boolean",
        ),
        (
            "bad signal",
            &[("secret-db", "team-a/db"), ("signal", "smoke")],
            "file:NAME, process:NAME[:SIGNAL] or http:PORT[/PATH]",
        ),
        (
            "signal clash",
            &[("secret-db", "team-a/db"), ("signal", "file:db")],
            "has the name of an output",
        ),
        (
            "bad cpu",
            &[("secret-db", "team-a/db"), ("agent-cpu-request", "lots")],
            "annotation ps-injector.io/agent-cpu-request: \"lots\" is not a Kubernetes quantity",
        ),
        (
            "request above limit",
            &[("secret-db", "team-a/db"), ("agent-cpu-limit", "1m")],
            "annotation ps-injector.io/agent-cpu-limit: agent requests.cpu: request 5m is above the limit 1m",
        ),
        (
            "guarded override",
            &[("secret-db", "team-a/db"), ("credentials-secret", "x")],
            "may not set this annotation",
        ),
        (
            "bad mount path",
            &[("secret-db", "team-a/db"), ("mount-path", "relative")],
            "not an absolute directory",
        ),
        (
            "ca overlap",
            &[("secret-db", "team-a/db"), ("mount-path", "/etc/ps-injector")],
            "overlaps the agent's CA directory",
        ),
        (
            "token dir overlap",
            &[("secret-db", "team-a/db"), ("mount-path", "/var/run/secrets")],
            "overlaps the ServiceAccount token directory /var/run/secrets/kubernetes.io/serviceaccount",
        ),
        (
            "token dir",
            &[
                ("secret-db", "team-a/db"),
                ("mount-path", "/var/run/secrets/kubernetes.io/serviceaccount"),
            ],
            "overlaps the ServiceAccount token directory",
        ),
        (
            "http url",
            &[("secret-db", "team-a/db"), ("url", "http://ps.example.com")],
            "must start with https://",
        ),
        (
            "foreign host",
            &[("secret-db", "team-a/db"), ("url", "https://evil.example.com/x")],
            "not an allowed Password Safe host",
        ),
    ];

    #[test]
    fn deny_table() {
        for (case, pairs, fragment) in DENIES {
            let mut all = vec![("inject", "true")];
            all.extend_from_slice(pairs);
            match build_with(&all, "team-a") {
                Ok(_) => panic!("{case}: allowed"),
                Err(Deny(message)) => assert!(message.contains(fragment), "{case}: {message}"),
            }
        }
    }

    #[test]
    fn full_spec() {
        let spec = build_with(
            &[
                ("inject", "true"),
                ("secret-db", "team-a/db/password"),
                ("format-db", "json"),
                ("file-mode-db", "0440"),
                ("folder-cfg", "team-a/app"),
                ("template-cfg", "{% for s in secrets %}{{ s.title }}{% endfor %}"),
                ("optional-cfg", "true"),
                ("account-sa", "db-prod/svc"),
                ("secrets", "team-a/x/y, team-a/z/w"),
                ("folders", "team-a/bulk"),
                ("managed-accounts", "db-prod/other"),
                ("env-DB_PASSWORD", "team-a/db/password"),
                ("env-DB_USER", "username:team-a/db/password"),
                ("optional-DB_USER", "true"),
                ("mode", "init+sidecar"),
                ("refresh-interval", "10s"),
                ("containers", "app, worker"),
                ("init-first", "true"),
                ("mount-path", "/secrets"),
                ("signal", "process:nginx:SIGHUP"),
                ("agent-memory-limit", "64Mi"),
                ("url", "https://eu.dr.example.com/BeyondTrust/api/public/v3"),
                ("secert-x", "y"),
                ("example.com/other", "ignored"),
            ],
            "team-a",
        )
        .unwrap();
        assert_eq!(spec.mode, Some(Mode::InitSidecar));
        assert_eq!(spec.mount_path, "/secrets");
        assert_eq!(spec.agent.root, "/secrets");
        assert_eq!(
            spec.containers.as_deref(),
            Some(&["app".to_owned(), "worker".to_owned()][..])
        );
        assert_eq!(spec.init_first, Some(true));
        assert_eq!(
            spec.file_modes
                .iter()
                .map(|(n, m)| (n.as_str(), m.bits()))
                .collect::<Vec<_>>(),
            [("db", 0o440)]
        );
        assert_eq!(
            spec.agent.secrets[0].render.file_mode,
            FileMode::DEFAULT,
            "decided by mutate"
        );
        assert_eq!(spec.agent.refresh.interval_seconds, 10);
        assert_eq!(
            spec.agent.password_safe.url,
            "https://eu.dr.example.com/BeyondTrust/api/public/v3"
        );
        assert_eq!(spec.resources.limits.memory.as_deref(), Some("64Mi"));
        assert_eq!(spec.agent.secrets[0].render.format, Format::Json);
        assert_eq!(spec.agent.folders[0].render.format, Format::Template);
        assert!(spec.agent.folders[0].render.optional);
        assert_eq!(spec.agent.accounts[0].account, "db-prod/svc");
        let bt = spec.agent.beyondtrust.as_ref().unwrap();
        assert_eq!(bt.secrets, ["team-a/x/y", "team-a/z/w"]);
        assert_eq!(bt.accounts, ["db-prod/other"]);
        assert_eq!(spec.agent.env.len(), 2);
        assert!(spec.agent.env.iter().any(|e| e.name == "DB_USER" && e.optional));
        assert!(spec.exec());
        assert_eq!(spec.warnings.len(), 2, "{:?}", spec.warnings);
        assert!(
            spec.warnings[0].contains("did you mean ps-injector.io/secret-x?"),
            "{:?}",
            spec.warnings
        );
        assert!(
            spec.warnings[1].contains("below the recommended minimum of 30s"),
            "{:?}",
            spec.warnings
        );
        spec.agent.validate().unwrap();
    }

    #[test]
    fn defaults_come_from_the_config() {
        let spec = build_with(&[("inject", "true"), ("secret-db", "any/where")], "team-b").unwrap();
        assert_eq!(spec.mode, None);
        assert_eq!(spec.mount_path, "/ps/secrets");
        assert_eq!(spec.credentials_secret, "ps-injector-credentials");
        assert_eq!(spec.agent.refresh.interval_seconds, 300);
        assert_eq!(spec.resources, Config::default().agent.resources);
        assert!(spec.warnings.is_empty());
        // The placeholder URL is allowed but warned about.
        let config = Config::default();
        let spec = build(
            [
                ("ps-injector.io/inject", "true"),
                ("ps-injector.io/secret-db", "a/b"),
            ]
            .into_iter(),
            "x",
            &config,
        )
        .unwrap();
        assert!(
            spec.warnings[0].contains("no Password Safe URL configured"),
            "{:?}",
            spec.warnings
        );
    }
}
