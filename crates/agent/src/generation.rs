//! From configuration to a generation: the [`Plan`] (unique references, each fetched once, and
//! the outputs that use them) and [`assemble`] (fetched results → [`Tree`] + per-output
//! [`Outcome`]s). Pure: no IO, no logging.

use std::{collections::BTreeMap, fmt, sync::Arc};

use inject_api::{AgentConfig, FileMode, Format, Render, ValueRef, layout};
use passwordsafe::{
    AccountRef, Error as PsError, FolderPath, ManagedCredential, Secret, SecretKind, SecretPath,
};

use crate::{
    paths::{SafePath, split_api_folder},
    render::{self, Fields, Templates},
    value::Sensitive,
    writer::{Entry, FileSpec, Owner, Tree},
};

/// Mode of `<root>/..data/.ps-env`: group-readable so an app container running as another
/// user of the pod's `fsGroup` can run `ps-agent exec`.
pub const ENV_FILE_MODE: u32 = 0o440;

/// Which fetched reference an output uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefId {
    Secret(usize),
    Folder(usize),
    Account(usize),
}

/// What an output writes.
#[derive(Clone, Debug)]
pub enum OutputKind {
    /// A named output of `PS_AGENT_CONFIG` (`secrets`, `folders`, `accounts`).
    Named { name: String, render: Render },
    /// A BeyondTrust list entry: `<root>/<folder path>/<title>` or `<root>/<system>/<account>`.
    BeyondTrust { mode: FileMode },
    /// One variable of the env file.
    Env { var: String, username: bool },
}

#[derive(Clone, Debug)]
pub struct Output {
    pub kind: OutputKind,
    pub reference: RefId,
    pub optional: bool,
}

/// Unique references and the outputs that use them.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub secrets: Vec<SecretPath>,
    pub folders: Vec<FolderPath>,
    pub accounts: Vec<AccountRef>,
    pub outputs: Vec<Output>,
}

fn index_of<T: PartialEq + Clone>(list: &mut Vec<T>, item: &T) -> usize {
    match list.iter().position(|x| x == item) {
        Some(i) => i,
        None => {
            list.push(item.clone());
            list.len() - 1
        }
    }
}

impl Plan {
    pub fn new(config: &AgentConfig) -> Plan {
        let mut p = Plan::default();
        for s in &config.secrets {
            let id = RefId::Secret(index_of(&mut p.secrets, &s.path));
            p.named(&s.name, &s.render, id);
        }
        for f in &config.folders {
            let id = RefId::Folder(index_of(&mut p.folders, &f.path));
            p.named(&f.name, &f.render, id);
        }
        for a in &config.accounts {
            let id = RefId::Account(index_of(&mut p.accounts, &a.account));
            p.named(&a.name, &a.render, id);
        }
        if let Some(bt) = &config.beyondtrust {
            let ids: Vec<RefId> = (bt
                .secrets
                .iter()
                .map(|s| RefId::Secret(index_of(&mut p.secrets, s))))
            .chain(
                bt.folders
                    .iter()
                    .map(|f| RefId::Folder(index_of(&mut p.folders, f))),
            )
            .chain(
                bt.accounts
                    .iter()
                    .map(|a| RefId::Account(index_of(&mut p.accounts, a))),
            )
            .collect();
            for reference in ids {
                // A list entry given twice is written once.
                let written = p
                    .outputs
                    .iter()
                    .any(|o| matches!(o.kind, OutputKind::BeyondTrust { .. }) && o.reference == reference);
                if !written {
                    p.outputs.push(Output {
                        kind: OutputKind::BeyondTrust { mode: bt.file_mode },
                        reference,
                        optional: false,
                    });
                }
            }
        }
        for v in &config.env {
            let (id, username) = match &v.from {
                ValueRef::Secret(s) => (RefId::Secret(index_of(&mut p.secrets, s)), false),
                ValueRef::SecretUsername(s) => (RefId::Secret(index_of(&mut p.secrets, s)), true),
                ValueRef::Account(a) => (RefId::Account(index_of(&mut p.accounts, a)), false),
            };
            p.outputs.push(Output {
                kind: OutputKind::Env {
                    var: v.name.clone(),
                    username,
                },
                reference: id,
                optional: v.optional,
            });
        }
        p
    }

    fn named(&mut self, name: &str, render: &Render, reference: RefId) {
        self.outputs.push(Output {
            kind: OutputKind::Named {
                name: name.to_owned(),
                render: render.clone(),
            },
            reference,
            optional: render.optional,
        });
    }

    /// Number of distinct references (API lookups).
    pub fn reference_count(&self) -> usize {
        self.secrets.len() + self.folders.len() + self.accounts.len()
    }

    pub fn reference(&self, id: RefId) -> (&'static str, String) {
        match id {
            RefId::Secret(i) => ("secret", self.secrets[i].to_string()),
            RefId::Folder(i) => ("folder", self.folders[i].to_string()),
            RefId::Account(i) => ("account", self.accounts[i].to_string()),
        }
    }

    /// How messages name output `i`: `output "db"`, `env DB_PASSWORD`, or for BeyondTrust list
    /// entries the reference itself (`secret "team/db/password"`).
    pub fn label(&self, i: usize) -> String {
        let o = &self.outputs[i];
        let (kind, reference) = self.reference(o.reference);
        match &o.kind {
            OutputKind::Named { name, .. } => format!("output {name:?}"),
            OutputKind::Env { var, .. } => format!("env {var}"),
            OutputKind::BeyondTrust { .. } => {
                let kind = if kind == "account" {
                    "managed account"
                } else {
                    kind
                };
                format!("{kind} {reference:?}")
            }
        }
    }

    /// The output's name in the result file: the output name, the env var, or the
    /// BeyondTrust reference.
    pub fn output_name(&self, i: usize) -> String {
        match &self.outputs[i].kind {
            OutputKind::Named { name, .. } => name.clone(),
            OutputKind::Env { var, .. } => var.clone(),
            OutputKind::BeyondTrust { .. } => self.reference(self.outputs[i].reference).1,
        }
    }
}

/// The error of one fetch, shared by every output of its reference.
pub type FetchError = Arc<PsError>;

/// Results of one fetch, by reference. Errors stay typed (they name the reference, never a
/// value) up to the report.
#[derive(Debug, Default)]
pub struct Results {
    pub secrets: Vec<Result<Secret, FetchError>>,
    pub folders: Vec<Result<Vec<Secret>, FetchError>>,
    pub accounts: Vec<Result<ManagedCredential, FetchError>>,
}

/// Why an output was not written.
#[derive(Clone, Debug)]
pub enum OutputError {
    /// Nothing was fetched (sign-in failed): the run's own error, reported once for all.
    NotFetched(Arc<str>),
    /// Fetching the output's reference failed; the message starts with that reference.
    Fetch(FetchError),
    /// Its content cannot be made: format, template, environment value, path rules, or a
    /// conflict with another output.
    Content(String),
    /// Writing it failed.
    Write(String),
}

impl fmt::Display for OutputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputError::NotFetched(m) => f.write_str(m),
            OutputError::Fetch(e) => e.fmt(f),
            OutputError::Content(m) | OutputError::Write(m) => f.write_str(m),
        }
    }
}

impl From<String> for OutputError {
    fn from(m: String) -> Self {
        OutputError::Content(m)
    }
}

impl From<&str> for OutputError {
    fn from(m: &str) -> Self {
        OutputError::Content(m.to_owned())
    }
}

fn fetched<T>(r: &Result<T, FetchError>) -> Result<&T, OutputError> {
    r.as_ref().map_err(|e| OutputError::Fetch(e.clone()))
}

/// What became of one output.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub index: usize,
    pub optional: bool,
    pub error: Option<OutputError>,
}

/// A generation ready to commit (if `ok`).
#[derive(Debug)]
pub struct Assembled {
    pub tree: Tree,
    pub outcomes: Vec<Outcome>,
    /// True when every required output made it into the tree.
    pub ok: bool,
}

fn secret_fields(s: &Secret) -> Fields {
    let mut f = Fields::new();
    f.insert("value".into(), Sensitive::new(s.value.expose_bytes().to_vec()));
    f.insert("title".into(), Sensitive::from(s.title.as_str()));
    match &s.kind {
        SecretKind::Credential { username } => {
            f.insert("username".into(), Sensitive::from(username.as_str()));
        }
        SecretKind::File { file_name } => {
            f.insert("fileName".into(), Sensitive::from(file_name.as_str()));
        }
        SecretKind::Text => {}
    }
    f
}

fn folder_fields(list: &[Secret]) -> Fields {
    list.iter()
        .map(|s| (s.title.clone(), Sensitive::new(s.value.expose_bytes().to_vec())))
        .collect()
}

fn account_fields(a: &ManagedCredential) -> Fields {
    let mut f = Fields::new();
    f.insert("value".into(), Sensitive::new(a.password.expose_bytes().to_vec()));
    f.insert("system".into(), Sensitive::from(a.system.as_str()));
    f.insert("account".into(), Sensitive::from(a.account.as_str()));
    f
}

/// The fields of a named output, or the fetch error.
fn fields_of(results: &Results, id: RefId) -> Result<Fields, OutputError> {
    Ok(match id {
        RefId::Secret(i) => secret_fields(fetched(&results.secrets[i])?),
        RefId::Folder(i) => folder_fields(fetched(&results.folders[i])?),
        RefId::Account(i) => account_fields(fetched(&results.accounts[i])?),
    })
}

fn spec(content: Sensitive, render: &Render) -> FileSpec {
    FileSpec {
        content,
        mode: render.file_mode.bits(),
        uid: render.uid,
        gid: render.gid,
    }
}

fn unsafe_path(e: crate::paths::UnsafePath) -> String {
    format!("refusing to write outside the rules: {e}")
}

/// The path of a secret of a BeyondTrust folder entry: the configured folder, then any deeper
/// folders the API reports for it, then the title.
fn bt_folder_secret_path(folder: &FolderPath, s: &Secret) -> Result<SafePath, String> {
    let mut comps: Vec<String> = folder.segments().map(str::to_owned).collect();
    let api = split_api_folder(&s.folder_path);
    if api.len() > comps.len() && api.iter().zip(&comps).all(|(a, b)| a.eq_ignore_ascii_case(b)) {
        comps.extend(api[comps.len()..].iter().cloned());
    }
    comps.push(s.title.clone());
    SafePath::new(&comps).map_err(unsafe_path)
}

fn entries_of(
    plan: &Plan,
    results: &Results,
    o: &Output,
    fields: Option<&Fields>,
    templates: &Templates,
    all: &BTreeMap<String, Fields>,
) -> Result<Vec<Entry>, OutputError> {
    match &o.kind {
        OutputKind::Named { name, render } => {
            let fields = fields.ok_or("no data")?;
            let top = SafePath::new(&[name.as_str()]).map_err(unsafe_path)?;
            if let (RefId::Folder(i), Format::Raw) = (o.reference, render.format) {
                let list = fetched(&results.folders[i])?;
                let mut out = vec![Entry::Dir(top.clone(), render.uid, render.gid)];
                for s in list {
                    let path = top.join(&s.title).map_err(unsafe_path)?;
                    out.push(Entry::File(
                        path,
                        spec(Sensitive::new(s.value.expose_bytes().to_vec()), render),
                    ));
                }
                return Ok(out);
            }
            let content = match render.format {
                Format::Template => templates.render(name, fields, all),
                f => render::render(f, fields),
            }
            .map_err(|e| e.to_string())?;
            Ok(vec![Entry::File(top, spec(content, render))])
        }
        OutputKind::BeyondTrust { mode } => {
            let file = |path: SafePath, value: &[u8]| {
                Entry::File(
                    path,
                    FileSpec {
                        content: Sensitive::new(value.to_vec()),
                        mode: mode.bits(),
                        uid: None,
                        gid: None,
                    },
                )
            };
            match o.reference {
                RefId::Secret(i) => {
                    let s = fetched(&results.secrets[i])?;
                    let p = &plan.secrets[i];
                    let comps: Vec<&str> = p.folder_segments().chain([p.title()]).collect();
                    let path = SafePath::new(&comps).map_err(unsafe_path)?;
                    Ok(vec![file(path, s.value.expose_bytes())])
                }
                RefId::Folder(i) => {
                    let list = fetched(&results.folders[i])?;
                    list.iter()
                        .map(|s| {
                            Ok(file(
                                bt_folder_secret_path(&plan.folders[i], s)?,
                                s.value.expose_bytes(),
                            ))
                        })
                        .collect()
                }
                RefId::Account(i) => {
                    let a = fetched(&results.accounts[i])?;
                    let acct = &plan.accounts[i];
                    let path = SafePath::new(&[acct.system(), acct.account()]).map_err(unsafe_path)?;
                    Ok(vec![file(path, a.password.expose_bytes())])
                }
            }
        }
        OutputKind::Env { .. } => Ok(vec![]),
    }
}

/// The value of an env output.
fn env_value(results: &Results, o: &Output) -> Result<String, OutputError> {
    let (var, username) = match &o.kind {
        OutputKind::Env { var, username } => (var, *username),
        _ => return Err("not an env output".into()),
    };
    let bytes: Vec<u8> = match o.reference {
        RefId::Secret(i) => {
            let s = fetched(&results.secrets[i])?;
            if username {
                match &s.kind {
                    SecretKind::Credential { username } => username.as_bytes().to_vec(),
                    _ => {
                        return Err(format!(
                            "{var}: the secret is not a credential secret, it has no username"
                        )
                        .into());
                    }
                }
            } else {
                s.value.expose_bytes().to_vec()
            }
        }
        RefId::Account(i) => fetched(&results.accounts[i])?.password.expose_bytes().to_vec(),
        RefId::Folder(_) => return Err("a folder cannot be an environment variable".into()),
    };
    let s = String::from_utf8(bytes)
        .map_err(|_| "the value is not UTF-8 text, so it cannot be an environment variable")?;
    if s.contains('\0') {
        return Err("the value contains NUL, which an environment variable cannot hold".into());
    }
    Ok(s)
}

/// Builds the generation. Outputs in `skip` are failed with the given error (used to retry a
/// commit without an optional output whose write failed).
pub fn assemble(
    plan: &Plan,
    results: &Results,
    templates: &Templates,
    skip: &BTreeMap<usize, OutputError>,
) -> Assembled {
    let mut outcomes: Vec<Outcome> = plan
        .outputs
        .iter()
        .enumerate()
        .map(|(index, o)| Outcome {
            index,
            optional: o.optional,
            error: skip.get(&index).cloned(),
        })
        .collect();
    // Fields of every named output, for templates (`secrets.<name>`).
    let mut fields: Vec<Option<Fields>> = Vec::with_capacity(plan.outputs.len());
    let mut all = BTreeMap::new();
    for (i, o) in plan.outputs.iter().enumerate() {
        let f = match &o.kind {
            OutputKind::Named { name, .. } if outcomes[i].error.is_none() => {
                match fields_of(results, o.reference) {
                    Ok(f) => {
                        all.insert(name.clone(), f.clone());
                        Some(f)
                    }
                    Err(e) => {
                        outcomes[i].error = Some(e);
                        None
                    }
                }
            }
            _ => None,
        };
        fields.push(f);
    }
    let mut tree = Tree::new();
    let mut env = serde_json::Map::new();
    for (i, o) in plan.outputs.iter().enumerate() {
        if outcomes[i].error.is_some() {
            continue;
        }
        if let OutputKind::Env { var, .. } = &o.kind {
            match env_value(results, o) {
                Ok(v) => {
                    env.insert(var.clone(), v.into());
                }
                Err(e) => outcomes[i].error = Some(e),
            }
            continue;
        }
        let owner = Owner::Output {
            index: i,
            label: plan.label(i).into(),
        };
        let added = entries_of(plan, results, o, fields[i].as_ref(), templates, &all)
            .and_then(|entries| Ok(tree.add_output(owner, entries)?));
        if let Err(e) = added {
            outcomes[i].error = Some(e);
        }
    }
    if plan
        .outputs
        .iter()
        .any(|o| matches!(o.kind, OutputKind::Env { .. }))
    {
        let json = serde_json::to_vec(&serde_json::Value::Object(env)).unwrap_or_default();
        tree.add_agent_file(
            layout::ENV_FILE,
            FileSpec {
                content: Sensitive::new(json),
                mode: ENV_FILE_MODE,
                uid: None,
                gid: None,
            },
        );
    }
    let ok = outcomes.iter().all(|o| o.optional || o.error.is_none());
    Assembled { tree, outcomes, ok }
}

#[cfg(test)]
mod tests {
    use inject_api::AgentConfig;
    use passwordsafe::SecretValue;

    use super::*;
    use crate::config::{self, Tuning};

    fn secret(folder: &str, title: &str, kind: SecretKind, value: &str) -> Secret {
        Secret {
            title: title.into(),
            folder_path: folder.into(),
            kind,
            value: SecretValue::new(value.as_bytes().to_vec()),
            id: "00000000-0000-0000-0000-000000000000".into(),
            metadata: serde_json::Value::Null,
        }
    }

    fn cred(folder: &str, title: &str, user: &str, value: &str) -> Secret {
        secret(
            folder,
            title,
            SecretKind::Credential {
                username: user.into(),
            },
            value,
        )
    }

    fn settings(json: &str) -> config::Settings {
        let env: BTreeMap<String, String> = [
            ("PS_AGENT_CONFIG".to_owned(), json.to_owned()),
            ("PS_API_KEY".to_owned(), "K;runas=u;".to_owned()),
        ]
        .into();
        config::load(&env, &Tuning::default()).unwrap()
    }

    fn error_text(o: &Outcome) -> String {
        o.error.as_ref().expect("an error").to_string()
    }

    fn plan_of(s: &config::Settings) -> Plan {
        Plan::new(&s.config)
    }

    #[test]
    fn references_are_fetched_once() {
        let s = settings(
            r#"{"version":1,"passwordSafe":{"url":"https://ps/x"},"root":"/r",
            "secrets":[{"name":"a","path":"t/db"},{"name":"b","path":"t/db","format":"json"}],
            "beyondtrust":{"secrets":["t/db","t/other"]},
            "env":[{"name":"P","from":{"secret":"t/db"}},{"name":"U","from":{"secretUsername":"t/db"}}]}"#,
        );
        let p = plan_of(&s);
        assert_eq!(p.secrets.len(), 2);
        assert_eq!(p.outputs.len(), 6);
        assert_eq!(p.reference_count(), 2);
        assert_eq!(p.label(0), "output \"a\"");
        assert_eq!(p.label(2), "secret \"t/db\"");
        assert_eq!(p.label(4), "env P");
        let _: &AgentConfig = &s.config;
    }

    #[test]
    fn assemble_fails_closed_and_keeps_optional_out() {
        let s = settings(
            r#"{"version":1,"passwordSafe":{"url":"https://ps/x"},"root":"/r",
            "secrets":[{"name":"a","path":"t/db"},{"name":"opt","path":"t/missing","optional":true}],
            "env":[{"name":"P","from":{"secret":"t/db"}},{"name":"Q","from":{"secret":"t/missing"},"optional":true}]}"#,
        );
        let p = plan_of(&s);
        let results = Results {
            secrets: vec![
                Ok(cred("t", "db", "admin", "pw")),
                Err(Arc::new(PsError::NotFound {
                    what: "secret \"t/missing\"".into(),
                    route: "GET secrets-safe/secrets",
                    reason: "empty result".into(),
                    detail: None,
                })),
            ],
            ..Results::default()
        };
        let a = assemble(&p, &results, &s.templates, &BTreeMap::new());
        assert!(a.ok);
        assert_eq!(a.tree.file_count(), 2, "a and .ps-env");
        assert!(error_text(&a.outcomes[1]).contains("not found"));
        // The same with the missing one required: not ok.
        let s2 = settings(
            r#"{"version":1,"passwordSafe":{"url":"https://ps/x"},"root":"/r",
            "secrets":[{"name":"a","path":"t/db"},{"name":"req","path":"t/missing"}]}"#,
        );
        let a = assemble(&plan_of(&s2), &results, &s2.templates, &BTreeMap::new());
        assert!(!a.ok);
    }

    #[test]
    fn hostile_titles_fail_the_folder_output() {
        let s = settings(
            r#"{"version":1,"passwordSafe":{"url":"https://ps/x"},"root":"/r",
            "folders":[{"name":"all","path":"t"}],"beyondtrust":{"folders":["t"]}}"#,
        );
        let p = plan_of(&s);
        for bad in ["../../etc/x", "a\\b", "x\0y", "line\nbreak", "..data", ".."] {
            let results = Results {
                folders: vec![Ok(vec![cred("t", "fine", "u", "v"), cred("t", bad, "u", "v")])],
                ..Results::default()
            };
            let a = assemble(&p, &results, &s.templates, &BTreeMap::new());
            assert!(!a.ok, "{bad:?}");
            for o in &a.outcomes {
                let e = o
                    .error
                    .as_ref()
                    .unwrap_or_else(|| panic!("{bad:?} accepted"))
                    .to_string();
                assert!(e.contains("cannot be a file or directory name"), "{e}");
            }
            assert_eq!(
                a.tree.file_count(),
                0,
                "{bad:?}: nothing of the folder is written"
            );
        }
    }

    #[test]
    fn beyondtrust_layout_and_api_subfolders() {
        let s = settings(
            r#"{"version":1,"passwordSafe":{"url":"https://ps/x"},"root":"/r",
            "beyondtrust":{"secrets":["Team/db/pw"],"folders":["team"],"accounts":["sys/acct"]}}"#,
        );
        let p = plan_of(&s);
        let results = Results {
            secrets: vec![Ok(cred("TEAM/DB", "pw", "u", "v1"))],
            folders: vec![Ok(vec![
                secret("team\\sub", "f", SecretKind::Text, "v2"),
                secret("team", "g", SecretKind::Text, "v3"),
            ])],
            accounts: vec![Ok(ManagedCredential {
                system: "sys".into(),
                account: "acct".into(),
                password: SecretValue::new(b"v4".to_vec()),
            })],
        };
        let a = assemble(&p, &results, &s.templates, &BTreeMap::new());
        assert!(a.ok, "{:?}", a.outcomes);
        assert_eq!(a.tree.file_count(), 4);
        let mut names: Vec<&str> = a.tree.top_names().collect();
        names.sort();
        assert_eq!(names, ["Team", "sys", "team"]);
    }

    #[test]
    fn env_values_must_be_text() {
        let s = settings(
            r#"{"version":1,"passwordSafe":{"url":"https://ps/x"},"root":"/r",
            "env":[{"name":"U","from":{"secretUsername":"t/text"}},{"name":"B","from":{"secret":"t/bin"}}]}"#,
        );
        let p = plan_of(&s);
        let mut bin = secret("t", "bin", SecretKind::Text, "");
        bin.value = SecretValue::new(vec![0xff, 0]);
        let results = Results {
            secrets: vec![Ok(secret("t", "text", SecretKind::Text, "x")), Ok(bin)],
            ..Results::default()
        };
        let a = assemble(&p, &results, &s.templates, &BTreeMap::new());
        assert!(!a.ok);
        assert!(error_text(&a.outcomes[0]).contains("no username"));
        assert!(error_text(&a.outcomes[1]).contains("not UTF-8"));
    }

    #[test]
    fn templates_see_all_named_outputs() {
        let s = settings(
            r#"{"version":1,"passwordSafe":{"url":"https://ps/x"},"root":"/r",
            "secrets":[{"name":"db","path":"t/db"},
                       {"name":"cfg","path":"t/db","format":"template","template":"{{ secret.username }}:{{ secrets.db.value }}@{{ secrets.acct.system }}"}],
            "accounts":[{"name":"acct","account":"sys/a"}]}"#,
        );
        let p = plan_of(&s);
        let results = Results {
            secrets: vec![Ok(cred("t", "db", "admin", "pw"))],
            accounts: vec![Ok(ManagedCredential {
                system: "sys".into(),
                account: "a".into(),
                password: SecretValue::new(b"x".to_vec()),
            })],
            ..Results::default()
        };
        let a = assemble(&p, &results, &s.templates, &BTreeMap::new());
        assert!(a.ok, "{:?}", a.outcomes);
        let mut skip = BTreeMap::new();
        skip.insert(2, OutputError::Write("write failed".to_owned()));
        let a = assemble(&p, &results, &s.templates, &skip);
        assert!(!a.ok);
        assert!(
            error_text(&a.outcomes[1]).contains("undefined"),
            "template lost secrets.acct"
        );
    }
}
