//! The emulator's seed (`tests/e2e/seed.yaml`), read back so the scenarios can compare the files
//! the agent wrote with the data Password Safe holds. Only the fields the checks need; values are
//! compared, never printed.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct Seed {
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
    #[serde(default)]
    pub safes: Vec<Folder>,
    #[serde(default)]
    pub managed_accounts: Vec<ManagedAccount>,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub struct ApiKey {
    pub key: String,
    pub users: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct Folder {
    pub name: String,
    #[serde(default)]
    pub secrets: Vec<Secret>,
    #[serde(default)]
    pub folders: Vec<Folder>,
}

#[derive(Debug, Deserialize)]
pub struct Secret {
    pub title: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub text: Option<String>,
    pub content: Option<String>,
}

impl Secret {
    /// What the agent writes for a `raw` output: the password, the text or the file content.
    pub fn value(&self) -> &str {
        match self.kind.to_ascii_lowercase().as_str() {
            "credential" => self.password.as_deref(),
            "text" => self.text.as_deref(),
            _ => self.content.as_deref(),
        }
        .unwrap_or_default()
    }
}

#[derive(Debug, Deserialize)]
pub struct ManagedAccount {
    pub system: String,
    pub account: String,
    pub password: String,
}

impl Seed {
    pub fn load(path: &Path) -> Result<Seed> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading the seed {}", path.display()))?;
        serde_yaml_ng::from_str(&text).with_context(|| format!("parsing the seed {}", path.display()))
    }

    /// The first API key and the run-as user it names: the credentials the scenarios put into the
    /// credentials Secret.
    pub fn api_key(&self) -> Result<(&str, &str)> {
        let key = self
            .api_keys
            .first()
            .ok_or_else(|| anyhow!("the seed has no api_keys"))?;
        let user = key
            .users
            .first()
            .ok_or_else(|| anyhow!("the seed's first API key names no user"))?;
        Ok((&key.key, user))
    }

    /// The secret at `safe/folder/.../title`.
    pub fn secret(&self, path: &str) -> Result<&Secret> {
        let (folder, title) = path
            .rsplit_once('/')
            .ok_or_else(|| anyhow!("{path:?} has no folder"))?;
        self.folder(folder)?
            .secrets
            .iter()
            .find(|s| s.title == title)
            .ok_or_else(|| anyhow!("the seed has no secret {path:?}"))
    }

    /// The folder at `safe/folder/...`.
    pub fn folder(&self, path: &str) -> Result<&Folder> {
        let mut parts = path.split('/');
        let first = parts.next().unwrap_or_default();
        let mut folder = self
            .safes
            .iter()
            .find(|s| s.name == first)
            .ok_or_else(|| anyhow!("the seed has no safe {first:?}"))?;
        for part in parts {
            folder = folder
                .folders
                .iter()
                .find(|f| f.name == part)
                .ok_or_else(|| anyhow!("the seed has no folder {path:?}"))?;
        }
        Ok(folder)
    }

    /// The managed account `system/account`.
    pub fn account(&self, reference: &str) -> Result<&ManagedAccount> {
        let (system, account) = reference
            .split_once('/')
            .ok_or_else(|| anyhow!("{reference:?} is not system/account"))?;
        self.managed_accounts
            .iter()
            .find(|a| a.system == system && a.account == account)
            .ok_or_else(|| anyhow!("the seed has no managed account {reference:?}"))
    }
}

/// Panics when `got` differs from `want`, naming `what` and the lengths only: secret values are
/// never printed, not even by a failing test.
#[track_caller]
pub fn assert_same_value(what: &str, got: &[u8], want: &[u8]) {
    if got != want {
        panic!(
            "{what}: the content differs from the seed ({} bytes written, {} bytes expected; values are not printed)",
            got.len(),
            want.len()
        );
    }
}
