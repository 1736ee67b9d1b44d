//! The seed file: users, API keys, OAuth clients, safes with folders and secrets, managed
//! accounts. Parsed strictly (unknown fields are errors) and validated completely before the
//! server starts; every problem names its field and location.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    path::Path,
};

use serde::Deserialize;

/// Most folder segments in a path, the safe included (the server's limit).
pub const MAX_FOLDER_DEPTH: usize = 7;
/// Longest folder name, safe name and secret title.
pub const MAX_NAME_LEN: usize = 256;
/// Default OAuth access-token lifetime.
pub const DEFAULT_TOKEN_TTL_SECONDS: u64 = 3600;

/// A validated seed. Build it with [`Seed::from_yaml_str`] or [`Seed::from_file`].
#[derive(Debug, Clone)]
pub struct Seed {
    pub(crate) raw: RawSeed,
}

/// Why a seed could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The file could not be read.
    #[error("cannot read seed file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or does not have the seed's shape.
    #[error("{location}: {message}")]
    Parse { location: String, message: String },
    /// The seed parsed but breaks one or more rules; every problem is listed.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
}

/// One validation problem: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Field path such as `safes[0].folders[1].secrets[2].type`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid seed ({} problem{}):",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for p in self.0 {
            write!(f, "\n  {p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSeed {
    #[serde(default)]
    pub users: Vec<RawUser>,
    #[serde(default)]
    pub api_keys: Vec<RawApiKey>,
    #[serde(default)]
    pub oauth_clients: Vec<RawOauthClient>,
    #[serde(default)]
    pub safes: Vec<RawFolder>,
    #[serde(default)]
    pub managed_accounts: Vec<RawManagedAccount>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    pub name: String,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawApiKey {
    pub key: String,
    pub users: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOauthClient {
    pub client_id: String,
    pub client_secret: String,
    pub user: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub token_ttl_seconds: Option<u64>,
}

/// A safe (top level, with `readers`) or a folder (nested, without them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFolder {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub readers: Option<Vec<String>>,
    #[serde(default)]
    pub secrets: Vec<RawSecret>,
    #[serde(default)]
    pub folders: Vec<RawFolder>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecret {
    pub title: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawManagedAccount {
    pub system: String,
    pub account: String,
    pub password: String,
    #[serde(default)]
    pub requestors: Vec<String>,
    #[serde(default)]
    pub rotate_on_checkin: bool,
    #[serde(default)]
    pub description: Option<String>,
}

/// The three secret types of Secrets Safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretKind {
    Credential,
    Text,
    File,
}

impl SecretKind {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "credential" => Some(Self::Credential),
            "text" => Some(Self::Text),
            "file" => Some(Self::File),
            _ => None,
        }
    }

    /// The `SecretType` value of the API.
    pub(crate) fn api_name(self) -> &'static str {
        match self {
            Self::Credential => "Credential",
            Self::Text => "Text",
            Self::File => "File",
        }
    }
}

impl Seed {
    /// Parses and validates a seed document.
    pub fn from_yaml_str(yaml: &str) -> Result<Seed, SeedError> {
        if yaml.lines().all(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#') || t == "---"
        }) {
            return Err(SeedError::Parse {
                location: "seed".into(),
                message: "the document is empty".into(),
            });
        }
        let de = serde_yaml_ng::Deserializer::from_str(yaml);
        let raw: RawSeed = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let at = inner
                .location()
                .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
                .unwrap_or_default();
            let field = if field == "." || field.is_empty() {
                "seed".to_string()
            } else {
                field
            };
            SeedError::Parse {
                location: format!("{field}{at}"),
                message: strip_location(&inner.to_string()),
            }
        })?;
        let problems = validate(&raw);
        if problems.is_empty() {
            Ok(Seed { raw })
        } else {
            Err(SeedError::Invalid(problems))
        }
    }

    /// Reads, parses and validates a seed file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Seed, SeedError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SeedError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Seed::from_yaml_str(&text)
    }
}

/// serde_yaml_ng appends " at line L column C"; the location is reported separately.
fn strip_location(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    /// A required, non-blank name of at most `max` characters.
    fn name(&mut self, field: &str, value: &str, max: usize) {
        if value.trim().is_empty() {
            self.add(field, "must not be empty");
        } else if value.trim() != value {
            self.add(field, format!("{value:?} has leading or trailing whitespace"));
        } else if value.chars().count() > max {
            self.add(field, format!("longer than {max} characters"));
        }
    }

    fn optional_nonempty(&mut self, field: &str, value: Option<&String>, hint: &str) {
        if value.is_some_and(|v| v.is_empty()) {
            self.add(field, format!("must not be empty ({hint})"));
        }
    }
}

fn validate(raw: &RawSeed) -> Vec<Problem> {
    let mut c = Checker { problems: Vec::new() };

    // Users and the groups they define.
    let mut groups: HashSet<&str> = HashSet::new();
    let mut users: HashMap<String, usize> = HashMap::new();
    for (i, u) in raw.users.iter().enumerate() {
        let f = format!("users[{i}]");
        c.name(&format!("{f}.name"), &u.name, MAX_NAME_LEN);
        if let Some(first) = users.insert(u.name.to_lowercase(), i) {
            c.add(
                format!("{f}.name"),
                format!("duplicate user {:?} (also users[{first}])", u.name),
            );
        }
        c.optional_nonempty(
            &format!("{f}.password"),
            u.password.as_ref(),
            "omit it for no password",
        );
        check_groups(&mut c, &format!("{f}.groups"), &u.groups, &mut groups);
    }

    // API keys.
    let mut keys: HashMap<&str, usize> = HashMap::new();
    for (i, k) in raw.api_keys.iter().enumerate() {
        let f = format!("api_keys[{i}]");
        if k.key.trim().is_empty() {
            c.add(format!("{f}.key"), "must not be empty");
        } else if k.key.contains([';', '=', ' ', '"']) {
            c.add(
                format!("{f}.key"),
                "must not contain ';', '=', '\"' or spaces (PS-Auth could not carry it)",
            );
        }
        if let Some(first) = keys.insert(k.key.as_str(), i) {
            c.add(
                format!("{f}.key"),
                format!("duplicate key (also api_keys[{first}])"),
            );
        }
        if k.users.is_empty() {
            c.add(format!("{f}.users"), "must name at least one user");
        }
        for (j, name) in k.users.iter().enumerate() {
            if !users.contains_key(&name.to_lowercase()) {
                c.add(
                    format!("{f}.users[{j}]"),
                    format!("unknown user {name:?} (not in users)"),
                );
            }
        }
    }

    // OAuth clients.
    let mut clients: HashMap<String, usize> = HashMap::new();
    for (i, o) in raw.oauth_clients.iter().enumerate() {
        let f = format!("oauth_clients[{i}]");
        c.name(&format!("{f}.client_id"), &o.client_id, MAX_NAME_LEN);
        if let Some(first) = clients.insert(o.client_id.to_lowercase(), i) {
            c.add(
                format!("{f}.client_id"),
                format!("duplicate client_id (also oauth_clients[{first}])"),
            );
        }
        if o.client_secret.is_empty() {
            c.add(format!("{f}.client_secret"), "must not be empty");
        }
        c.name(&format!("{f}.user"), &o.user, MAX_NAME_LEN);
        if o.token_ttl_seconds == Some(0) {
            c.add(format!("{f}.token_ttl_seconds"), "must be at least 1");
        }
        check_groups(&mut c, &format!("{f}.groups"), &o.groups, &mut groups);
    }

    // Safes, folders, secrets.
    let mut safes: HashMap<String, usize> = HashMap::new();
    for (i, s) in raw.safes.iter().enumerate() {
        let f = format!("safes[{i}]");
        c.name(&format!("{f}.name"), &s.name, MAX_NAME_LEN);
        if let Some(first) = safes.insert(s.name.to_lowercase(), i) {
            c.add(
                format!("{f}.name"),
                format!("duplicate safe {:?} (also safes[{first}])", s.name),
            );
        }
        match &s.readers {
            None => c.add(
                format!("{f}.readers"),
                "missing: list the groups allowed to read this safe",
            ),
            Some(readers) => check_references(&mut c, &format!("{f}.readers"), readers, &groups),
        }
        check_folder_content(&mut c, &f, s, 1);
    }

    // Managed accounts.
    let mut accounts: HashMap<(String, String), usize> = HashMap::new();
    for (i, a) in raw.managed_accounts.iter().enumerate() {
        let f = format!("managed_accounts[{i}]");
        c.name(&format!("{f}.system"), &a.system, 128);
        c.name(&format!("{f}.account"), &a.account, 245);
        if let Some(first) = accounts.insert((a.system.to_lowercase(), a.account.to_lowercase()), i) {
            c.add(
                format!("{f}.account"),
                format!(
                    "duplicate managed account {}/{} (also managed_accounts[{first}])",
                    a.system, a.account
                ),
            );
        }
        if a.password.is_empty() {
            c.add(format!("{f}.password"), "must not be empty");
        }
        check_references(&mut c, &format!("{f}.requestors"), &a.requestors, &groups);
    }

    c.problems
}

fn check_groups<'a>(c: &mut Checker, field: &str, list: &'a [String], groups: &mut HashSet<&'a str>) {
    let mut seen = HashSet::new();
    for (j, g) in list.iter().enumerate() {
        c.name(&format!("{field}[{j}]"), g, MAX_NAME_LEN);
        if !seen.insert(g.as_str()) {
            c.add(format!("{field}[{j}]"), format!("group {g:?} listed twice"));
        }
        groups.insert(g.as_str());
    }
}

fn check_references(c: &mut Checker, field: &str, list: &[String], groups: &HashSet<&str>) {
    for (j, g) in list.iter().enumerate() {
        if !groups.contains(g.as_str()) {
            c.add(
                format!("{field}[{j}]"),
                format!("unknown group {g:?} (no user or OAuth client is in it)"),
            );
        }
    }
}

fn check_folder_content(c: &mut Checker, f: &str, folder: &RawFolder, depth: usize) {
    if depth > MAX_FOLDER_DEPTH {
        c.add(
            format!("{f}.name"),
            format!("folder nested too deep: at most {MAX_FOLDER_DEPTH} levels including the safe"),
        );
    }
    let mut titles: HashMap<String, usize> = HashMap::new();
    for (k, s) in folder.secrets.iter().enumerate() {
        let sf = format!("{f}.secrets[{k}]");
        c.name(&format!("{sf}.title"), &s.title, MAX_NAME_LEN);
        if let Some(first) = titles.insert(s.title.to_lowercase(), k) {
            c.add(
                format!("{sf}.title"),
                format!(
                    "duplicate title {:?} in this folder (also secrets[{first}])",
                    s.title
                ),
            );
        }
        check_secret(c, &sf, s);
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    for (k, sub) in folder.folders.iter().enumerate() {
        let ff = format!("{f}.folders[{k}]");
        c.name(&format!("{ff}.name"), &sub.name, MAX_NAME_LEN);
        if let Some(first) = names.insert(sub.name.to_lowercase(), k) {
            c.add(
                format!("{ff}.name"),
                format!("duplicate folder {:?} (also folders[{first}])", sub.name),
            );
        }
        if sub.readers.is_some() {
            c.add(
                format!("{ff}.readers"),
                "only a safe has readers; folders inherit them from their safe",
            );
        }
        check_folder_content(c, &ff, sub, depth + 1);
    }
}

fn check_secret(c: &mut Checker, f: &str, s: &RawSecret) {
    let Some(kind) = SecretKind::parse(&s.kind) else {
        c.add(
            format!("{f}.type"),
            format!("unknown type {:?}, expected credential|text|file", s.kind),
        );
        return;
    };
    let fields: [(&str, bool, &[SecretKind]); 5] = [
        ("username", s.username.is_some(), &[SecretKind::Credential]),
        ("password", s.password.is_some(), &[SecretKind::Credential]),
        ("text", s.text.is_some(), &[SecretKind::Text]),
        ("file_name", s.file_name.is_some(), &[SecretKind::File]),
        ("content", s.content.is_some(), &[SecretKind::File]),
    ];
    for (name, present, allowed) in fields {
        if present && !allowed.contains(&kind) {
            c.add(
                format!("{f}.{name}"),
                format!("not allowed in a {} secret", s.kind.to_lowercase()),
            );
        }
    }
    let required: &[(&str, bool)] = match kind {
        SecretKind::Credential => &[("password", s.password.is_some())],
        SecretKind::Text => &[("text", s.text.is_some())],
        SecretKind::File => &[
            ("file_name", s.file_name.is_some()),
            ("content", s.content.is_some()),
        ],
    };
    for (name, present) in required {
        if !present {
            c.add(
                format!("{f}.{name}"),
                format!("missing: required for a {} secret", s.kind.to_lowercase()),
            );
        }
    }
    if let Some(name) = &s.file_name {
        c.name(&format!("{f}.file_name"), name, MAX_NAME_LEN);
    }
    if s.content.as_ref().is_some_and(|v| v.len() > 5_000_000) {
        c.add(format!("{f}.content"), "larger than 5,000,000 bytes");
    }
    if s.text.as_ref().is_some_and(|v| v.chars().count() > 4096) {
        c.add(format!("{f}.text"), "longer than 4096 characters");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
users:
  - name: svc-team-a
    password: pw
    groups: [team-a]
api_keys:
  - key: "k1"
    users: [svc-team-a]
oauth_clients:
  - client_id: "6f1c4a57-5b8e-4a86-9d6a-0a7b4c1e2f33"
    client_secret: "s"
    user: app-team-a
    groups: [team-a]
    token_ttl_seconds: 3600
safes:
  - name: team-a
    readers: [team-a]
    secrets: []
    folders:
      - name: db
        secrets:
          - {title: password, type: credential, username: admin, password: "s3cret"}
          - {title: config, type: text, text: "a=1"}
          - {title: tls.crt, type: file, file_name: tls.crt, content: "-----BEGIN..."}
        folders: []
managed_accounts:
  - system: db-prod
    account: svc_app
    password: "initial"
    requestors: [team-a]
    rotate_on_checkin: true
"#;

    fn problems(yaml: &str) -> Vec<String> {
        match Seed::from_yaml_str(yaml) {
            Err(SeedError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
            Err(e) => vec![e.to_string()],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn the_issue_example_is_valid() {
        let seed = Seed::from_yaml_str(GOOD).unwrap();
        assert_eq!(seed.raw.safes[0].folders[0].secrets.len(), 3);
    }

    #[test]
    fn unknown_secret_type_names_field_and_location() {
        let yaml = GOOD.replace("type: credential", "type: pasword");
        assert_eq!(
            problems(&yaml),
            vec![
                r#"safes[0].folders[0].secrets[0].type: unknown type "pasword", expected credential|text|file"#
            ]
        );
    }

    #[test]
    fn unknown_field_is_a_parse_error_with_path_and_line() {
        let yaml = GOOD.replace("username: admin", "usrname: admin");
        let err = Seed::from_yaml_str(&yaml).unwrap_err().to_string();
        assert!(err.starts_with("safes[0].folders[0].secrets[0].usrname"), "{err}");
        assert!(err.contains("line 22"), "{err}");
        assert!(err.contains("unknown field `usrname`"), "{err}");
    }

    #[test]
    fn wrong_yaml_type_is_reported_with_its_path() {
        let yaml = GOOD.replace("token_ttl_seconds: 3600", "token_ttl_seconds: soon");
        let err = Seed::from_yaml_str(&yaml).unwrap_err().to_string();
        assert!(err.starts_with("oauth_clients[0].token_ttl_seconds"), "{err}");
    }

    #[test]
    fn every_reference_and_duplicate_is_reported() {
        let yaml = r#"
users:
  - {name: u1, groups: [g1]}
  - {name: U1, groups: [g1]}
api_keys:
  - {key: k, users: [nobody]}
  - {key: k, users: []}
oauth_clients:
  - {client_id: c, client_secret: "", user: app, token_ttl_seconds: 0}
safes:
  - name: s
    readers: [g1, ghost]
    secrets:
      - {title: t, type: text, text: x, password: p}
      - {title: T, type: file, file_name: f}
    folders:
      - {name: f, readers: [g1]}
      - {name: F}
  - {name: S, readers: []}
  - {name: x}
managed_accounts:
  - {system: a, account: b, password: p, requestors: [g2]}
  - {system: A, account: B, password: "", requestors: []}
"#;
        let p = problems(yaml);
        let expected = [
            r#"users[1].name: duplicate user "U1" (also users[0])"#,
            r#"api_keys[0].users[0]: unknown user "nobody" (not in users)"#,
            "api_keys[1].key: duplicate key (also api_keys[0])",
            "api_keys[1].users: must name at least one user",
            "oauth_clients[0].client_secret: must not be empty",
            "oauth_clients[0].token_ttl_seconds: must be at least 1",
            r#"safes[0].readers[1]: unknown group "ghost" (no user or OAuth client is in it)"#,
            "safes[0].secrets[0].password: not allowed in a text secret",
            r#"safes[0].secrets[1].title: duplicate title "T" in this folder (also secrets[0])"#,
            "safes[0].secrets[1].content: missing: required for a file secret",
            "safes[0].folders[0].readers: only a safe has readers; folders inherit them from their safe",
            r#"safes[0].folders[1].name: duplicate folder "F" (also folders[0])"#,
            r#"safes[1].name: duplicate safe "S" (also safes[0])"#,
            "safes[2].readers: missing: list the groups allowed to read this safe",
            r#"managed_accounts[0].requestors[0]: unknown group "g2" (no user or OAuth client is in it)"#,
            "managed_accounts[1].account: duplicate managed account A/B (also managed_accounts[0])",
            "managed_accounts[1].password: must not be empty",
        ];
        for e in expected {
            assert!(p.iter().any(|x| x == e), "missing problem {e:?} in {p:#?}");
        }
        assert_eq!(p.len(), expected.len(), "{p:#?}");
    }

    #[test]
    fn depth_is_limited() {
        let mut yaml =
            String::from("users: [{name: u, groups: [g]}]\nsafes:\n  - name: s\n    readers: [g]\n");
        let mut indent = String::from("    ");
        for i in 0..7 {
            yaml.push_str(&format!("{indent}folders:\n{indent}  - name: f{i}\n"));
            indent.push_str("    ");
        }
        let p = problems(&yaml);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains(
                "folders[0].folders[0].folders[0].folders[0].folders[0].folders[0].folders[0].name"
            )
        );
        assert!(p[0].contains("too deep"));
    }

    #[test]
    fn empty_document_is_rejected() {
        assert!(
            Seed::from_yaml_str("# nothing\n")
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Seed::from_file("/nonexistent/seed.yaml").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/seed.yaml"), "{err}");
    }
}
