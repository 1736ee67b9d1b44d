//! The contract between `ps-webhook` and `ps-agent`: the [`AgentConfig`] document, the names of
//! the environment variables, volume and files they share, and the rules for names that become
//! files. No IO.
//!
//! Annotation keys and their parsing live in [`annotations`]; the grammar and limits of every
//! reference to Password Safe (secret paths, folders, managed accounts, env sources) in [`refs`].

pub mod agent_config;
pub mod annotations;
pub mod names;
pub mod refs;
pub mod yaml;

pub use agent_config::{
    AccountOutput, AccountRequest, AgentConfig, BeyondTrustLists, ChangeSignal, ConfigError, EnvVar,
    FileMode, FolderOutput, Format, PasswordSafe, Readiness, Refresh, Render, SecretOutput, UnixSignal,
};
pub use refs::{AccountRef, FolderPath, RefError, SecretPath, ValueRef};

/// Prefix of every annotation this project reads or writes.
pub const ANNOTATION_PREFIX: &str = "ps-injector.io/";

/// Environment variables of the agent container.
pub mod env {
    /// The JSON [`crate::AgentConfig`].
    pub const AGENT_CONFIG: &str = "PS_AGENT_CONFIG";
    /// A PEM bundle to trust in addition to (or, with `caOnly`, instead of) the system roots.
    pub const CA_FILE: &str = "PS_CA_FILE";
    /// API-key credentials: the key (optionally BeyondTrust style `KEY;runas=USER;pwd=[P];`),
    /// the run-as user and that user's password. Filled from the credentials Secret.
    pub const API_KEY: &str = "PS_API_KEY";
    pub const RUNAS: &str = "PS_RUNAS";
    pub const RUNAS_PASSWORD: &str = "PS_RUNAS_PASSWORD";
    /// OAuth client credentials. Filled from the credentials Secret.
    pub const CLIENT_ID: &str = "PS_CLIENT_ID";
    pub const CLIENT_SECRET: &str = "PS_CLIENT_SECRET";
    /// Overrides `root` of the config: for running an injected agent outside its pod (the demo,
    /// the end-to-end suite).
    pub const ROOT_OVERRIDE: &str = "PS_AGENT_ROOT";
    /// `plain` (default) or `json` log lines.
    pub const LOG_FORMAT: &str = "PS_LOG_FORMAT";
}

/// Names shared by the webhook's patch and the agent's files.
pub mod layout {
    /// The shared in-memory `emptyDir` volume.
    pub const VOLUME_NAME: &str = "ps-injector-secrets";
    /// Default mount path of that volume in the agent and the app containers.
    pub const DEFAULT_MOUNT_PATH: &str = "/ps/secrets";
    /// The symlink that points at the current generation directory (Kubernetes' atomic writer
    /// pattern). Every visible entry of the root is a symlink through it.
    pub const DATA_LINK: &str = "..data";
    /// Written (inside the root) after the first complete generation.
    pub const READY_FILE: &str = ".ps-ready";
    /// Machine-readable result of the last run (references and outcomes, never values).
    pub const RESULT_FILE: &str = ".ps-result.json";
    /// Env data for `ps-agent exec`, inside each generation: `<root>/..data/.ps-env`.
    pub const ENV_FILE: &str = ".ps-env";
    /// Where `ps-agent copy-self` puts the agent binary for exec mode: `<root>/.ps-bin/ps-agent`.
    pub const BIN_DIR: &str = ".ps-bin";
    pub const BIN_NAME: &str = "ps-agent";

    /// Where Kubernetes' ServiceAccount admission plugin mounts the API token
    /// (`kube-api-access-*`) into every container that has no mount at this exact path.
    pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    /// A tiny empty in-memory volume the webhook mounts read-only at [`SERVICE_ACCOUNT_DIR`] in
    /// every injected container, so the plugin (also when re-run after the webhook) skips them:
    /// the agent needs no Kubernetes API access and gets no token.
    pub const NO_TOKEN_VOLUME_NAME: &str = "ps-injector-no-token";
    /// The `sizeLimit` of [`NO_TOKEN_VOLUME_NAME`]: it stays empty.
    pub const NO_TOKEN_SIZE_LIMIT: &str = "4Ki";
}

/// Agent subcommands the webhook writes into container args.
pub mod command {
    /// One shot: exit 0 only when every required output was written.
    pub const FETCH: &str = "fetch";
    /// Refresh loop.
    pub const WATCH: &str = "watch";
    /// `exec -- CMD ARGS...`: set env from the env file, then exec CMD.
    pub const EXEC: &str = "exec";
    /// `copy-self DIR`: copy the agent binary into DIR.
    pub const COPY_SELF: &str = "copy-self";
    /// `ready --root DIR`: exit 0 when the ready file exists (startup probe).
    pub const READY: &str = "ready";
}
