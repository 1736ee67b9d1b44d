//! Harness of the agent's integration tests: `ps-emulator` in process over real TLS on
//! 127.0.0.1, the `ps-agent` binary run with a clean environment, operator calls, and asserts
//! that never print a secret value.

#![allow(dead_code)]

use std::{
    collections::BTreeMap,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use ps_emulator::{
    Emulator, Options,
    testing::{self, Operator},
};
use serde_json::{Value, json};

pub const KEY: &str = "PSCANARY-apikey-agent-0123456789abcdef0123456789";
pub const RUNAS: &str = "svc-agent";
pub const RUNAS_PWD_USER: &str = "svc-pwd";
pub const RUNAS_PWD: &str = "PSCANARY-runas-pw-771";
pub const CLIENT_ID: &str = "11111111-2222-4333-8444-555555555555";
pub const CLIENT_SECRET: &str = "PSCANARY-client-secret-0123456789abcdef0123";

pub const DB_PASSWORD: &str = "PSCANARY-secret-pw-Db-9f8e7d";
pub const DB_USER: &str = "db-admin";
pub const CONFIG_TEXT: &str = "PSCANARY-secret-text-line1\nline2 'q' \"dq\" $HOME #x =y";
pub const FILE_CONTENT: &str = "PSCANARY-secret-file-4a5b6c\n";
pub const API_TOKEN: &str = "PSCANARY-secret-text-Tok-3c2b1a";
pub const ACCOUNT_PW: &str = "PSCANARY-account-pw-5566";
pub const OTHER_PW: &str = "PSCANARY-secret-pw-Other-1234";
pub const HOSTILE_VALUES: [&str; 6] = [
    "PSCANARY-secret-text-HOSTILE-1",
    "PSCANARY-secret-text-HOSTILE-2",
    "PSCANARY-secret-text-HOSTILE-3",
    "PSCANARY-secret-text-HOSTILE-4",
    "PSCANARY-secret-text-HOSTILE-5",
    "PSCANARY-secret-text-HOSTILE-6",
];

pub const SEED: &str = r#"
users:
  - {name: svc-agent, groups: [apps]}
  - {name: svc-pwd, password: "PSCANARY-runas-pw-771", groups: [apps]}
  - {name: svc-outsider, groups: [others]}
api_keys:
  - key: "PSCANARY-apikey-agent-0123456789abcdef0123456789"
    users: [svc-agent, svc-pwd, svc-outsider]
oauth_clients:
  - client_id: "11111111-2222-4333-8444-555555555555"
    client_secret: "PSCANARY-client-secret-0123456789abcdef0123"
    user: app-agent
    groups: [apps]
safes:
  - name: apps
    readers: [apps]
    secrets:
      - {title: api-token, type: text, text: "PSCANARY-secret-text-Tok-3c2b1a"}
    folders:
      - name: db
        secrets:
          - {title: password, type: credential, username: "db-admin", password: "PSCANARY-secret-pw-Db-9f8e7d"}
          - {title: config, type: text, text: "PSCANARY-secret-text-line1\nline2 'q' \"dq\" $HOME #x =y"}
          - {title: tls.crt, type: file, file_name: tls.crt, content: "PSCANARY-secret-file-4a5b6c\n"}
      - name: rotate
        secrets:
          - {title: a, type: text, text: "PSCANARY-secret-text-gen-0"}
          - {title: b, type: text, text: "PSCANARY-secret-text-gen-0"}
      - name: hostile
        secrets:
          - {title: "fine", type: text, text: "PSCANARY-secret-text-fine-value"}
          - {title: "../../etc/x", type: text, text: "PSCANARY-secret-text-HOSTILE-1"}
      - name: hostile-backslash
        secrets:
          - {title: 'a\b', type: text, text: "PSCANARY-secret-text-HOSTILE-2"}
      - name: hostile-nul
        secrets:
          - {title: "nul\0x", type: text, text: "PSCANARY-secret-text-HOSTILE-3"}
      - name: hostile-newline
        secrets:
          - {title: "new\nline", type: text, text: "PSCANARY-secret-text-HOSTILE-4"}
      - name: ".."
        secrets:
          - {title: "escape", type: text, text: "PSCANARY-secret-text-HOSTILE-5"}
      - name: hostile-data
        secrets:
          - {title: "..data", type: text, text: "PSCANARY-secret-text-HOSTILE-6"}
  - name: others
    readers: [others]
    folders:
      - name: db
        secrets:
          - {title: password, type: credential, username: o, password: "PSCANARY-secret-pw-Other-1234"}
managed_accounts:
  - {system: db-prod, account: svc_app, password: "PSCANARY-account-pw-5566", requestors: [apps]}
"#;

/// Every value and credential of the seed: none may ever appear in the agent's output.
pub fn never_logged() -> Vec<&'static str> {
    let mut v = vec![
        KEY,
        RUNAS_PWD,
        CLIENT_SECRET,
        DB_PASSWORD,
        "line2 'q'",
        "PSCANARY-secret-file-4a5b6c",
        API_TOKEN,
        ACCOUNT_PW,
        OTHER_PW,
        "PSCANARY-secret-text-fine-value",
    ];
    v.extend(HOSTILE_VALUES);
    v
}

/// Output of one agent run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn log(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Fails (printing the log) unless the run exited with `code`. The log is scanned for seeded
/// values first, so printing it is safe.
#[track_caller]
pub fn expect_code(run: &Run, code: i32) {
    assert_no_leak(&run.log(), &[]);
    assert!(
        run.code == code,
        "expected exit {code}, got {}:\n{}",
        run.code,
        run.log()
    );
}

/// Appends `text` to this test's log under `$PS_LOG_DIR/cargo-test/ps-agent/` when PS_LOG_DIR
/// is set (libtest names each test's thread after the test).
pub fn keep_log(text: &str) {
    use std::io::Write as _;
    let Some(dir) = std::env::var_os("PS_LOG_DIR") else {
        return;
    };
    let dir = Path::new(&dir).join("cargo-test/ps-agent");
    let name = std::thread::current()
        .name()
        .unwrap_or("unnamed")
        .replace("::", "-");
    fs::create_dir_all(&dir).expect("PS_LOG_DIR is writable");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .expect("PS_LOG_DIR is writable");
    f.write_all(text.as_bytes()).expect("PS_LOG_DIR is writable");
}

/// Fails if any seeded value or credential (or one of `extra`), or any secret canary (every
/// seeded value is one, and so is every session cookie, token and rotated password the emulator
/// mints), appears in `text`. Never prints the value, only its position in the list or its kind.
#[track_caller]
pub fn assert_no_leak(text: &str, extra: &[&str]) {
    let mut secrets = never_logged();
    secrets.extend(extra);
    testing::assert_no_secrets(text, &secrets);
}

/// Compares a file with the expected bytes without printing either.
#[track_caller]
pub fn assert_file(path: &Path, expected: &[u8]) {
    let got = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    testing::assert_value(&got, expected, &path.display().to_string());
}

#[track_caller]
pub fn assert_mode(path: &Path, mode: u32) {
    let m = fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(m, mode, "{}: mode {m:04o}, expected {mode:04o}", path.display());
}

/// Sorted names of a directory's entries.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An emulator, a temporary directory and the agent binary.
pub struct Harness {
    pub rt: tokio::runtime::Runtime,
    pub emu: Option<Emulator>,
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    op: Operator,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_options(Options::default())
    }

    pub fn with_options(opts: Options) -> Harness {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let emu = rt.block_on(testing::start(SEED, opts));
        let dir = tempfile::tempdir().unwrap();
        let ca_file = dir.path().join("ca.pem");
        fs::write(&ca_file, emu.ca_pem()).unwrap();
        let op = Operator::new(&emu);
        Harness {
            rt,
            emu: Some(emu),
            dir,
            ca_file,
            op,
        }
    }

    pub fn emu(&self) -> &Emulator {
        self.emu.as_ref().unwrap()
    }

    pub fn base_url(&self) -> String {
        self.emu().base_url().to_owned()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// The `PS_AGENT_CONFIG` of a test: `body` (JSON object members) plus version, URL and root.
    pub fn agent_config(&self, body: Value) -> String {
        let mut v = json!({
            "version": 1,
            "passwordSafe": {"url": self.base_url(), "apiVersion": "3.1"},
            "root": self.root().to_string_lossy(),
        });
        for (k, val) in body.as_object().expect("object").clone() {
            v[k] = val;
        }
        v.to_string()
    }

    /// A clean environment for the agent: the CA and API-key credentials.
    pub fn env_api_key(&self, config: &str) -> BTreeMap<String, String> {
        [
            ("PS_AGENT_CONFIG", config.to_owned()),
            ("PS_CA_FILE", self.ca_file.to_string_lossy().into_owned()),
            ("PS_API_KEY", KEY.to_owned()),
            ("PS_RUNAS", RUNAS.to_owned()),
            ("PS_RETRY_BUDGET_SECONDS", "5".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The agent with a clean environment but `env`, logging at `trace` unless `env` sets
    /// `PS_LOG_LEVEL`: every event the agent can emit goes through the tests' leak checks.
    pub fn command(&self, env: &BTreeMap<String, String>, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ps-agent"));
        c.env_clear().envs(env).args(args);
        if !env.contains_key("PS_LOG_LEVEL") {
            c.env("PS_LOG_LEVEL", "trace");
        }
        c
    }

    /// Runs the agent to completion. With `PS_LOG_DIR` set (scripts/test sets it), its output
    /// is also appended to `$PS_LOG_DIR/cargo-test/ps-agent/TEST.log` for scripts/canary-check.
    pub fn run(&self, env: &BTreeMap<String, String>, args: &[&str]) -> Run {
        let out: Output = self.command(env, args).output().expect("agent runs");
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        // The subcommand only: tests pass values in the arguments of `exec`.
        keep_log(&format!(
            "$ ps-agent {} (exit {})\n{}",
            args.first().unwrap_or(&""),
            run.code,
            run.log()
        ));
        run
    }

    /// Starts the agent in the background, stderr to `log`.
    pub fn spawn(&self, env: &BTreeMap<String, String>, args: &[&str], log: &Path) -> Child {
        let f = fs::File::create(log).unwrap();
        self.command(env, args)
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("agent starts")
    }

    /// [`Harness::spawn`] with `listener` as the agent's standard input: the agent serves its
    /// readiness endpoint on it when it is bound to `readiness.httpPort` (no free-port race).
    pub fn spawn_listening(
        &self,
        env: &BTreeMap<String, String>,
        args: &[&str],
        log: &Path,
        listener: std::net::TcpListener,
    ) -> Child {
        let f = fs::File::create(log).unwrap();
        self.command(env, args)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)))
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("agent starts")
    }

    pub fn state(&self) -> Value {
        self.rt.block_on(self.op.state())
    }

    pub fn faults(&self, body: Value) {
        self.rt.block_on(self.op.faults(body));
    }

    pub fn set_secret(&self, path: &str, title: &str, value: &str) {
        let body = json!({"path": path, "title": title, "value": value});
        self.rt.block_on(self.op.put_secret(body));
    }

    /// No session and no managed-account request may stay open after a run.
    #[track_caller]
    pub fn assert_closed(&self) {
        self.rt.block_on(self.op.assert_closed());
    }

    pub fn calls(&self, route: &str) -> u64 {
        self.rt.block_on(self.op.calls(route))
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(emu) = self.emu.take() {
            self.rt.block_on(emu.shutdown());
        }
    }
}

/// The result file as JSON.
pub fn result_file(root: &Path) -> Value {
    serde_json::from_slice(&fs::read(root.join(".ps-result.json")).expect("result file"))
        .expect("result JSON")
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, sig).unwrap();
}

/// Waits for a child to exit, with a deadline.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("agent did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
