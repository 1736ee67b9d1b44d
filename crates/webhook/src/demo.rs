//! `ps-webhook demo`: the whole flow on one machine, no cluster.
//!
//! 1. start `ps-emulator` (Password Safe) with the example seed on 127.0.0.1;
//! 2. generate a CA and a serving certificate and start the webhook server on TLS loopback,
//!    in process, with the example cluster configuration pointing at the emulator;
//! 3. send the example Deployment's pod through a real HTTPS AdmissionReview (trusting only the
//!    demo CA), apply the returned patch, and print the change;
//! 4. run the injected agent container's command with exactly its env from the patched spec
//!    (`secretKeyRef`s resolved from a demo credentials map standing in for the Kubernetes
//!    Secret, `PS_AGENT_ROOT` pointing at a local directory, `PS_CA_FILE` at the emulator's CA);
//! 5. list the files written: names and sizes, never values.
//!
//! `ps-emulator` and `ps-agent` are taken from the directory of the running executable. When
//! the demo runs under `cargo run`, it first builds them with the same cargo and profile, so
//! `cargo run --release -p ps-webhook -- demo` works from a fresh checkout.
//!
//! The example files (`examples/demo/{seed,deployment,config}.yaml`) are compiled in; `--dir`
//! reads them from another directory instead.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

use crate::{
    inject,
    server::{self, ServerConfig},
    tls,
};

const SEED: &str = include_str!("../../../examples/demo/seed.yaml");
const DEPLOYMENT: &str = include_str!("../../../examples/demo/deployment.yaml");
const CONFIG: &str = include_str!("../../../examples/demo/config.yaml");

/// The demo's stand-in for the Kubernetes Secret `ps-injector-credentials`: the API key and
/// run-as user of `examples/demo/seed.yaml`, under the default credential keys.
const CREDENTIALS: &[(&str, &str)] = &[
    (
        "api-key",
        "demo0a1b2c3d4e5f60718293a4b5c6d7e8f9demo0a1b2c3d4e5f60718293a4b5c6d7e8f9demo0a1b2c3d4e5f6071",
    ),
    ("runas", "svc-payments"),
];

/// Flags of `ps-webhook demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Read seed.yaml, deployment.yaml and config.yaml from this directory instead of the
    /// built-in copies of examples/demo.
    #[arg(long, env = "PS_WEBHOOK_DEMO_DIR")]
    pub dir: Option<PathBuf>,
    /// Print the whole injected pod instead of a diff.
    #[arg(long, env = "PS_WEBHOOK_DEMO_FULL")]
    pub full: bool,
    /// Keep the temporary directory (certificates, agent output) and print its path.
    #[arg(long, env = "PS_WEBHOOK_DEMO_KEEP")]
    pub keep: bool,
    /// Directory holding the ps-emulator and ps-agent binaries (default: next to ps-webhook).
    #[arg(long, env = "PS_WEBHOOK_DEMO_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
}

struct Inputs {
    seed: String,
    deployment: String,
    config: String,
    origin: String,
}

impl Inputs {
    fn load(dir: Option<&Path>) -> anyhow::Result<Self> {
        let Some(dir) = dir else {
            return Ok(Self {
                seed: SEED.to_owned(),
                deployment: DEPLOYMENT.to_owned(),
                config: CONFIG.to_owned(),
                origin: "examples/demo (built in)".to_owned(),
            });
        };
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
        };
        Ok(Self {
            seed: read("seed.yaml")?,
            deployment: read("deployment.yaml")?,
            config: read("config.yaml")?,
            origin: dir.display().to_string(),
        })
    }
}

fn section(n: usize, title: &str) {
    println!("\n== {n}/5  {title}");
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init(crate::logging::LogFormat::Plain, "warn")?;
    let bins = binaries(args.bin_dir.as_deref())?;
    let inputs = Inputs::load(args.dir.as_deref())?;
    let tmp = tempfile::Builder::new()
        .prefix("ps-webhook-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(demo(&args, &bins, &inputs, tmp.path()));
    if args.keep {
        let kept = tmp.keep();
        println!("\nkept {}", kept.display());
    }
    result?;
    println!("\ndone: the pod was injected over HTTPS and its agent wrote every secret.");
    Ok(ExitCode::SUCCESS)
}

struct Binaries {
    emulator: PathBuf,
    agent: PathBuf,
}

/// Finds `ps-emulator` and `ps-agent`; under `cargo run`, builds them first.
fn binaries(bin_dir: Option<&Path>) -> anyhow::Result<Binaries> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let dir = match bin_dir {
        Some(d) => d.to_owned(),
        None => exe
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?
            .to_owned(),
    };
    let bins = Binaries {
        emulator: dir.join("ps-emulator"),
        agent: dir.join("ps-agent"),
    };
    // `cargo run` sets CARGO and CARGO_MANIFEST_DIR: build the other two binaries with the same
    // cargo and profile so they are never stale.
    if bin_dir.is_none()
        && let (Some(cargo), Some(_)) = (std::env::var_os("CARGO"), std::env::var_os("CARGO_MANIFEST_DIR"))
    {
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "ps-emulator", "-p", "ps-agent"]);
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        println!("preparing: building ps-emulator and ps-agent ({profile} profile)");
        let status = cmd.status().context("cannot run cargo")?;
        if !status.success() {
            bail!("building ps-emulator and ps-agent failed ({status})");
        }
    }
    for path in [&bins.emulator, &bins.agent] {
        if !path.is_file() {
            bail!(
                "{} not found. Build it next to ps-webhook with `cargo build --release -p ps-webhook -p \
                 ps-emulator -p ps-agent` (scripts/demo does that), or point --bin-dir at it.",
                path.display()
            );
        }
    }
    Ok(bins)
}

async fn demo(args: &DemoArgs, bins: &Binaries, inputs: &Inputs, tmp: &Path) -> anyhow::Result<()> {
    println!(
        "ps-webhook demo: inputs from {}; scratch directory {}",
        inputs.origin,
        tmp.display()
    );

    // 1. Password Safe.
    section(1, "Password Safe (ps-emulator)");
    let emulator = Emulator::start(&bins.emulator, &inputs.seed, tmp).await?;
    println!(
        "   {} serving the API at {}",
        bins.emulator.display(),
        emulator.base_url
    );

    // 2. The webhook.
    section(2, "Webhook (ps-webhook serve, in process)");
    let ca =
        tls::generate("ps-webhook demo CA", &["localhost", "127.0.0.1"]).context("generating the demo CA")?;
    let (cert, key, config_path) = (tmp.join("tls.crt"), tmp.join("tls.key"), tmp.join("config.yaml"));
    std::fs::write(&cert, &ca.cert_pem)?;
    write_private(&key, ca.key_pem.as_bytes())?;
    std::fs::write(&config_path, demo_config(&inputs.config, &emulator.base_url)?)?;
    let mut cfg = ServerConfig::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        cert,
        key,
    );
    cfg.config = Some(config_path);
    cfg.drain_delay = Duration::ZERO;
    let server = server::spawn(cfg).await.context("starting the webhook")?;
    println!(
        "   https://localhost:{}/mutate (certificate from a fresh demo CA), admin http://{}",
        server.addr().port(),
        server.admin_addr()
    );
    println!(
        "   cluster configuration: passwordSafe.url = {}",
        emulator.base_url
    );

    // 3. Admission.
    section(
        3,
        "Admission: the example Deployment's pod, as kube-apiserver would send it",
    );
    let pod = pod_from_deployment(&inputs.deployment)?;
    let review = admission_review(&pod);
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.ca_pem.as_bytes())?])
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()?;
    let started = Instant::now();
    let rsp = client
        .post(format!("https://localhost:{}/mutate", server.addr().port()))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&review)?)
        .send()
        .await
        .context("POST /mutate")?;
    let status = rsp.status();
    let body = rsp.bytes().await?;
    let elapsed = started.elapsed();
    if !status.is_success() {
        bail!(
            "the webhook answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let answer: Value = serde_json::from_slice(&body).context("the webhook's answer is not JSON")?;
    let response = &answer["response"];
    println!(
        "   POST /mutate -> HTTP {} in {:.1} ms: allowed={}",
        status.as_u16(),
        elapsed.as_secs_f64() * 1000.0,
        response["allowed"]
    );
    if let Some(warnings) = response["warnings"].as_array() {
        for w in warnings {
            println!("   warning: {}", w.as_str().unwrap_or_default());
        }
    }
    if response["allowed"] != true {
        bail!(
            "the webhook denied the pod: {}",
            response["status"]["message"].as_str().unwrap_or("(no message)")
        );
    }
    let patch_b64 = response["patch"]
        .as_str()
        .ok_or_else(|| anyhow!("the webhook allowed the pod without a patch: is it opted in?"))?;
    let patch_bytes = base64::engine::general_purpose::STANDARD
        .decode(patch_b64)
        .context("the patch is not base64")?;
    let patch: json_patch::Patch =
        serde_json::from_slice(&patch_bytes).context("the patch is not a JSON Patch")?;
    let mut injected = pod.clone();
    json_patch::patch(&mut injected, &patch).context("the patch does not apply to the pod")?;
    println!(
        "   JSON Patch: {} operations, {} bytes",
        patch.0.len(),
        patch_bytes.len()
    );
    let before = serde_yaml_ng::to_string(&pod)?;
    let after = serde_yaml_ng::to_string(&injected)?;
    if args.full {
        println!("\n   The injected pod:\n{}", indent(&after));
    } else {
        println!(
            "\n   The change to the pod (--full prints it whole):\n{}",
            indent(&inject::diff(&before, &after))
        );
    }

    // 4. The agent.
    section(
        4,
        "Agent: the injected container's command, with its env from the patched spec",
    );
    let agent = agent_container(&injected)?;
    let root = tmp.join("secrets");
    std::fs::create_dir_all(&root)?;
    let run = AgentRun::from_container(&agent, &injected, &bins.agent, &root, &emulator.ca_file)?;
    println!("   container {:?}: {}", run.name, run.display_command());
    println!("   env: {}", run.env_names().join(", "));
    println!(
        "   (credentials from the demo stand-in for Secret {:?}; values not shown)",
        run.secret_names()
    );
    let output = tokio::time::timeout(Duration::from_secs(60), run.command().output())
        .await
        .context("the agent did not finish within 60 s")?
        .context("cannot run the agent")?;
    for line in String::from_utf8_lossy(&output.stderr)
        .lines()
        .chain(String::from_utf8_lossy(&output.stdout).lines())
    {
        println!("   | {line}");
    }
    if !output.status.success() {
        bail!("the agent failed ({})", output.status);
    }
    println!("   exit status 0");

    // 5. The files.
    section(5, "Files written (names and sizes; values are never printed)");
    let files = list_files(&root)?;
    if files.is_empty() {
        bail!("the agent wrote no files under {}", root.display());
    }
    let mount = agent_mount_path(&agent).unwrap_or_else(|| inject_api::layout::DEFAULT_MOUNT_PATH.to_owned());
    for (name, size) in &files {
        println!("   {mount}/{name}  {size} bytes");
    }
    println!(
        "   (local directory {} stands in for the pod's in-memory volume)",
        root.display()
    );

    server.shutdown().await;
    emulator.stop().await;
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    std::io::Write::write_all(&mut f, data)
}

/// The example configuration with `passwordSafe.url` pointing at the emulator.
fn demo_config(config: &str, url: &str) -> anyhow::Result<String> {
    let mut doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(config).context("config.yaml is not YAML")?;
    if doc.is_null() {
        doc = serde_yaml_ng::Value::Mapping(Default::default());
    }
    let map = doc
        .as_mapping_mut()
        .ok_or_else(|| anyhow!("config.yaml is not a mapping"))?;
    let ps = map
        .entry("passwordSafe".into())
        .or_insert_with(|| serde_yaml_ng::Value::Mapping(Default::default()));
    ps.as_mapping_mut()
        .ok_or_else(|| anyhow!("config.yaml: passwordSafe is not a mapping"))?
        .insert("url".into(), url.into());
    Ok(serde_yaml_ng::to_string(&doc)?)
}

/// The pod a ReplicaSet of `deployment` would create: its template, with `generateName` and the
/// namespace set the way the controller and the apiserver set them before admission.
fn pod_from_deployment(yaml: &str) -> anyhow::Result<Value> {
    let deployment: Value = serde_yaml_ng::from_str(yaml).context("deployment.yaml is not YAML")?;
    let name = deployment["metadata"]["name"].as_str().unwrap_or("demo");
    let namespace = deployment["metadata"]["namespace"].as_str().unwrap_or("default");
    let template = &deployment["spec"]["template"];
    if !template.is_object() {
        bail!("deployment.yaml has no spec.template");
    }
    let mut metadata = template["metadata"].clone();
    if !metadata.is_object() {
        metadata = json!({});
    }
    metadata["generateName"] = format!("{name}-7d4b9c8f6d-").into();
    metadata["namespace"] = namespace.into();
    metadata["ownerReferences"] = json!([{
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": format!("{name}-7d4b9c8f6d"),
        "uid": "5c0ffee0-0000-4000-8000-000000000001",
        "controller": true,
        "blockOwnerDeletion": true
    }]);
    Ok(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": template["spec"].clone(),
    }))
}

fn admission_review(pod: &Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "d3m0d3m0-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"]["namespace"],
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

/// The injected agent container to run: the one-shot (`fetch`) one when there is one, else the
/// first container carrying `PS_AGENT_CONFIG`.
fn agent_container(pod: &Value) -> anyhow::Result<Value> {
    let spec = &pod["spec"];
    let all: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[*k].as_array())
        .flatten()
        .filter(|c| {
            c["env"]
                .as_array()
                .is_some_and(|env| env.iter().any(|e| e["name"] == inject_api::env::AGENT_CONFIG))
        })
        .collect();
    let fetch = all.iter().find(|c| {
        c["args"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == inject_api::command::FETCH))
    });
    fetch.or(all.first()).map(|c| (*c).clone()).ok_or_else(|| {
        anyhow!(
            "the patched pod has no agent container (no env {})",
            inject_api::env::AGENT_CONFIG
        )
    })
}

fn agent_mount_path(container: &Value) -> Option<String> {
    container["volumeMounts"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == inject_api::layout::VOLUME_NAME)?["mountPath"]
        .as_str()
        .map(str::to_owned)
}

struct AgentRun {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    secrets: Vec<String>,
    note: Option<String>,
}

impl AgentRun {
    fn from_container(
        container: &Value,
        pod: &Value,
        agent: &Path,
        root: &Path,
        ca_file: &Path,
    ) -> anyhow::Result<Self> {
        let name = container["name"].as_str().unwrap_or("agent").to_owned();
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        let mut argv = strings(&container["command"]);
        argv.extend(strings(&container["args"]));
        if argv.is_empty() {
            bail!("agent container {name:?} has neither command nor args");
        }
        // The image's executable is this machine's ps-agent.
        argv.remove(0);
        let mut note = None;
        // A refreshing agent would run until stopped; the demo runs one fetch.
        if let Some(a) = argv.iter_mut().find(|a| *a == inject_api::command::WATCH) {
            *a = inject_api::command::FETCH.to_owned();
            note = Some("(a refreshing agent; the demo runs a single fetch)".to_owned());
        }
        let credentials: BTreeMap<&str, &str> = CREDENTIALS.iter().copied().collect();
        let mut env = Vec::new();
        let mut secrets = Vec::new();
        for var in container["env"].as_array().into_iter().flatten() {
            let var_name = var["name"].as_str().unwrap_or_default().to_owned();
            if let Some(value) = var["value"].as_str() {
                env.push((var_name, value.to_owned()));
                continue;
            }
            let from = &var["valueFrom"];
            if let Some(r) = from.get("secretKeyRef") {
                let key = r["key"].as_str().unwrap_or_default();
                let optional = r["optional"] == true;
                match credentials.get(key) {
                    Some(value) => {
                        env.push((var_name, (*value).to_owned()));
                        secrets.push(r["name"].as_str().unwrap_or_default().to_owned());
                    }
                    None if optional => {}
                    None => bail!(
                        "{var_name} needs key {key:?} of Secret {}, which the demo credentials do not have",
                        r["name"]
                    ),
                }
            } else if let Some(r) = from.get("fieldRef") {
                let path = r["fieldPath"].as_str().unwrap_or_default();
                let value = match path {
                    "metadata.name" => pod["metadata"]["generateName"]
                        .as_str()
                        .map(|g| format!("{g}x1y2z")),
                    "metadata.namespace" => pod["metadata"]["namespace"].as_str().map(str::to_owned),
                    "spec.nodeName" => Some("demo-node".to_owned()),
                    "status.podIP" | "status.hostIP" => Some("127.0.0.1".to_owned()),
                    _ => None,
                };
                if let Some(value) = value {
                    env.push((var_name, value));
                }
            }
        }
        env.push((
            inject_api::env::ROOT_OVERRIDE.to_owned(),
            root.display().to_string(),
        ));
        env.push((inject_api::env::CA_FILE.to_owned(), ca_file.display().to_string()));
        secrets.sort();
        secrets.dedup();
        Ok(Self {
            name,
            program: agent.to_owned(),
            args: argv,
            env,
            secrets,
            note,
        })
    }

    fn display_command(&self) -> String {
        let mut s = format!("{} {}", self.program.display(), self.args.join(" "));
        if let Some(note) = &self.note {
            s.push(' ');
            s.push_str(note);
        }
        s
    }

    fn env_names(&self) -> Vec<&str> {
        self.env.iter().map(|(k, _)| k.as_str()).collect()
    }

    fn secret_names(&self) -> String {
        self.secrets.join(", ")
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }
}

/// Every visible file under `root`, following the agent's `..data` symlinks, with its size.
fn list_files(root: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, u64)>, depth: usize) -> anyhow::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("..") {
                continue;
            }
            let path = entry.path();
            let meta = std::fs::metadata(&path)?;
            let shown = format!("{prefix}{name}");
            if meta.is_dir() {
                if depth < 8 {
                    walk(&path, &format!("{shown}/"), out, depth + 1)?;
                }
            } else {
                out.push((shown, meta.len()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, "", &mut out, 0)?;
    Ok(out)
}

/// The `ps-emulator` child process.
struct Emulator {
    child: tokio::process::Child,
    /// Kept open so the emulator never writes into a closed pipe.
    _stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
    base_url: String,
    ca_file: PathBuf,
}

impl Emulator {
    async fn start(binary: &Path, seed: &str, tmp: &Path) -> anyhow::Result<Self> {
        let seed_path = tmp.join("seed.yaml");
        let ca_file = tmp.join("emulator-ca.pem");
        let log_path = tmp.join("emulator.log");
        std::fs::write(&seed_path, seed)?;
        let log = std::fs::File::create(&log_path)?;
        let mut child = tokio::process::Command::new(binary)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data")
            .arg(&seed_path)
            .arg("--ca-out")
            .arg(&ca_file)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut stdout = tokio::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let read = tokio::time::timeout(Duration::from_secs(15), stdout.read_line(&mut line)).await;
        if !matches!(read, Ok(Ok(_))) {
            line.clear();
        }
        let origin = line.trim().strip_prefix("listening on ").map(str::to_owned);
        let Some(origin) = origin else {
            let _ = child.kill().await;
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "ps-emulator did not start (first line {:?}); its log:\n{}",
                line.trim(),
                indent(&log)
            );
        };
        Ok(Self {
            child,
            _stdout: stdout,
            base_url: format!("{origin}/BeyondTrust/api/public/v3"),
            ca_file,
        })
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
