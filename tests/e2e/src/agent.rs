//! "The injected spec really works": run a container of a stored pod on this machine, the way a
//! kubelet would, with the local `ps-agent` standing in for the agent image.
//!
//! What is taken from the stored pod, exactly: the container's `command` and `args`, and its
//! `env` — `value`s as they are, `valueFrom.secretKeyRef`s resolved from the real Secret in the
//! API server (a missing non-optional Secret or key fails, like a kubelet refusing to start the
//! container; a missing optional one is left out, like a kubelet does).
//!
//! What stands in for the pod (and nothing else):
//! - the image: `command[0]` must be the configured agent command (`ps-agent`), run as the local
//!   `ps-agent` binary; a command under the secrets volume (exec mode's
//!   `/ps/secrets/.ps-bin/ps-agent`) runs from the local directory standing in for the volume;
//! - the secrets volume: a local directory ([`Volume`]). `PS_AGENT_ROOT` (the agent's documented
//!   override for running outside a pod) points at it, and arguments that start with the
//!   container's mount path of the volume (`copy-self /ps/secrets/.ps-bin`) are rewritten to it;
//! - the CA: the e2e configuration names a CA bundle ConfigMap with `caOnly`; the webhook gives
//!   its in-cluster path (`/etc/ps-injector/ca/ca.crt`) in `PS_CA_FILE` only — never also in
//!   `PS_AGENT_CONFIG` — so replacing that one variable with the emulator's CA redirects it;
//! - the environment starts empty (no host variables leak in).

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, Result, anyhow, bail};
use inject_api::{env as agent_env, layout};
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::Api;

use crate::{Harness, pods};

/// A local directory standing in for the pod's in-memory secrets volume.
pub struct Volume {
    dir: tempfile::TempDir,
}

impl Volume {
    pub fn new() -> Volume {
        Volume {
            dir: tempfile::Builder::new()
                .prefix("ps-e2e-volume.")
                .tempdir()
                .expect("creating a temp dir for the secrets volume"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Reads `<volume>/<rel>` (through the agent's `..data` symlinks).
    pub fn read(&self, rel: &str) -> Vec<u8> {
        std::fs::read(self.path().join(rel))
            .unwrap_or_else(|e| panic!("reading {rel} in the secrets volume: {e}"))
    }

    pub fn mode(&self, rel: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(self.path().join(rel))
            .unwrap_or_else(|e| panic!("stat {rel} in the secrets volume: {e}"))
            .permissions()
            .mode()
            & 0o7777
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path().join(rel).exists()
    }
}

impl Default for Volume {
    fn default() -> Self {
        Self::new()
    }
}

/// How one container run ended.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    /// The agent's log lines (it never logs a value).
    pub stderr: String,
    /// The resolved environment's variable names (never the values), for messages.
    pub env_names: Vec<String>,
}

impl Run {
    #[track_caller]
    pub fn assert_success(&self, what: &str) {
        assert_eq!(
            self.code,
            Some(0),
            "{what} failed (exit {:?}); env names {:?}; its log:\n{}",
            self.code,
            self.env_names,
            self.stderr
        );
    }
}

/// What to run instead of the original command after `--` (exec mode: the app's own binary
/// does not exist here).
#[derive(Default)]
pub struct Options<'a> {
    pub replace_after_dashdash: Option<Vec<String>>,
    /// Variables added to the container's environment.
    pub extra_env: Vec<(&'a str, String)>,
}

impl Harness {
    /// Runs container `container` of the stored `pod` with the local binaries against the
    /// emulator, `volume` standing in for the secrets volume.
    pub async fn run_container(&self, pod: &Pod, container: &str, volume: &Volume, opts: Options<'_>) -> Run {
        self.try_run_container(pod, container, volume, opts)
            .await
            .unwrap_or_else(|e| panic!("running container {container} of pod {}: {e:#}", pods::name(pod)))
    }

    async fn try_run_container(
        &self,
        pod: &Pod,
        container: &str,
        volume: &Volume,
        opts: Options<'_>,
    ) -> Result<Run> {
        let ns = pod
            .metadata
            .namespace
            .as_deref()
            .ok_or_else(|| anyhow!("the pod has no namespace"))?;
        let c: &Container =
            pods::container(pod, container).ok_or_else(|| anyhow!("no container {container}"))?;
        let mount_path = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == layout::VOLUME_NAME)
            .map(|m| m.mount_path.clone())
            .ok_or_else(|| anyhow!("container {container} does not mount {}", layout::VOLUME_NAME))?;
        let local = volume
            .path()
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 temp dir"))?;
        let remap = |arg: &str| -> String {
            match arg.strip_prefix(mount_path.as_str()) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("{local}{rest}"),
                _ => arg.to_owned(),
            }
        };

        // Command line.
        let mut argv: Vec<String> = c.command.clone().unwrap_or_default();
        argv.extend(c.args.clone().unwrap_or_default());
        if argv.is_empty() {
            bail!("container {container} has no command (the image's entrypoint cannot be emulated)");
        }
        if let Some(tail) = opts.replace_after_dashdash {
            let i = argv
                .iter()
                .position(|a| a == "--")
                .ok_or_else(|| anyhow!("container {container}'s command has no `--`"))?;
            argv.truncate(i + 1);
            argv.extend(tail);
        }
        let program: PathBuf = if argv[0] == self.config.agent_command[0] {
            if argv.len() < self.config.agent_command.len()
                || argv[..self.config.agent_command.len()] != self.config.agent_command[..]
            {
                bail!("container {container}'s command does not start with agent.command");
            }
            argv.drain(..self.config.agent_command.len());
            self.env.agent_bin.clone()
        } else if argv[0].starts_with(&format!("{mount_path}/")) {
            PathBuf::from(remap(&argv.remove(0)))
        } else {
            bail!(
                "container {container} runs {:?}, which is neither the agent command nor in the secrets volume",
                argv[0]
            );
        };
        let args: Vec<String> = argv.iter().map(|a| remap(a)).collect();

        // Environment.
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let mut env: Vec<(String, String)> = Vec::new();
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value {
                env.push((e.name.clone(), v.clone()));
                continue;
            }
            let Some(from) = &e.value_from else {
                env.push((e.name.clone(), String::new()));
                continue;
            };
            let r = from
                .secret_key_ref
                .as_ref()
                .ok_or_else(|| anyhow!("env {}: only value and secretKeyRef are emulated", e.name))?;
            let optional = r.optional == Some(true);
            let secret = secrets
                .get_opt(&r.name)
                .await
                .with_context(|| format!("GET Secret {ns}/{}", r.name))?;
            let value = secret
                .as_ref()
                .and_then(|s| s.data.as_ref())
                .and_then(|d| d.get(&r.key))
                .map(|b| String::from_utf8(b.0.clone()));
            match (value, secret.is_some(), optional) {
                (Some(v), _, _) => env.push((
                    e.name.clone(),
                    v.with_context(|| format!("env {}: not UTF-8", e.name))?,
                )),
                (None, _, true) => {}
                (None, false, false) => bail!(
                    "env {}: Secret {ns}/{} does not exist (a kubelet would not start the container)",
                    e.name,
                    r.name
                ),
                (None, true, false) => bail!(
                    "env {}: Secret {ns}/{} has no key {:?} (a kubelet would not start the container)",
                    e.name,
                    r.name,
                    r.key
                ),
            }
        }
        let ca = self
            .env
            .emulator_ca
            .to_str()
            .ok_or_else(|| anyhow!("non-UTF-8 CA path"))?
            .to_owned();
        env.retain(|(k, _)| k != agent_env::CA_FILE);
        let agent_run = program == self.env.agent_bin;
        if agent_run {
            env.push((agent_env::ROOT_OVERRIDE.to_owned(), local.to_owned()));
            env.push((agent_env::CA_FILE.to_owned(), ca));
        }
        for (k, v) in opts.extra_env {
            env.push((k.to_owned(), v));
        }
        let env_names = env.iter().map(|(k, _)| k.clone()).collect();

        let out = tokio::process::Command::new(&program)
            .args(&args)
            .env_clear()
            .envs(env)
            .current_dir(volume.path())
            .stdin(Stdio::null())
            .output()
            .await
            .with_context(|| format!("starting {}", program.display()))?;
        Ok(Run {
            code: out.status.code(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            env_names,
        })
    }
}
