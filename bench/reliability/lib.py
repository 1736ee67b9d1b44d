"""Shared by the reliability runs (storm.py, watch_faults.py, webhook_soak.py): the emulator as a
child process, its operator endpoints, agent environments, certificates, CPU accounting.

Loopback only. Secret values are fake and never printed: comparisons report lengths. Every one is
a secret canary (`PSCANARY-<kind>-…`, crates/testkit/canaries.txt): scripts/test keeps the runs'
logs (`keep_logs`) and scripts/canary-check fails when one shows there.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

API_KEY = "PSCANARY-apikey-reliability-0123456789abcdef0123456789"
RUNAS = "svc-reliability"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def seed_yaml(secrets: list[str], account_password: str, api_key: str = API_KEY, runas: str = RUNAS) -> str:
    """An emulator seed: the run-as user with the API key, a safe `team` whose folder `app` holds
    `secrets` (YAML flow mappings), and the managed account `db-prod/svc_app`, all readable and
    requestable by the user."""
    lines = "\n".join(f"          - {s}" for s in secrets)
    return f"""
users:
  - {{name: {runas}, groups: [app]}}
api_keys:
  - {{key: "{api_key}", users: [{runas}]}}
safes:
  - name: team
    readers: [app]
    folders:
      - name: app
        secrets:
{lines}
managed_accounts:
  - system: db-prod
    account: svc_app
    password: "{account_password}"
    requestors: [app]
"""


def terminate(proc: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Fail(Exception):
    """A failed pass criterion: the run prints it and exits 1."""


def check(ok: bool, what: str, failures: list[str]) -> None:
    print(f"{'ok  ' if ok else 'FAIL'}  {what}", flush=True)
    if not ok:
        failures.append(what)


def make_tls(work: Path) -> tuple[Path, Path, Path]:
    """A CA and a serving certificate for 127.0.0.1 (so a restarted emulator keeps its
    identity). Returns (ca, cert, key)."""
    ca_key, ca = work / "ca.key", work / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=reliability test CA"],
                   check=True, capture_output=True)
    cert, key = make_leaf(work, ca, ca_key, "tls")
    return ca, cert, key


def make_leaf(work: Path, ca: Path, ca_key: Path, stem: str, key_type: str = "ec") -> tuple[Path, Path]:
    """A serving certificate for 127.0.0.1 signed by the CA, as `<stem>.pem` and `<stem>.key`
    (each call a new key and serial). `key_type`: "ec" (P-256, what the chart's cert-manager
    and selfManaged modes issue) or "rsa" (2048 bits, what a certificate brought from elsewhere
    often is). Returns (cert, key)."""
    key, csr, cert, ext = (work / f"{stem}.{x}" for x in ("key", "csr", "pem", "ext"))
    ext.write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1\nauthorityKeyIdentifier=keyid\n"
    )
    run = lambda *a: subprocess.run(a, check=True, capture_output=True)  # noqa: E731
    newkey = ["rsa:2048"] if key_type == "rsa" else ["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    run("openssl", "req", "-newkey", *newkey, "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", ext)
    return cert, key


class Emulator:
    """`ps-emulator` as a child process on 127.0.0.1, restartable on the same port with the
    same certificate."""

    def __init__(self, binary: str, seed: Path, work: Path, extra_args: list[str] | None = None):
        self.binary = binary
        self.seed = seed
        self.work = work
        self.extra = extra_args or []
        self.ca, self.cert, self.key = make_tls(work)
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.ctx = ssl.create_default_context(cafile=str(self.ca))

    def start(self) -> None:
        out = open(self.work / "emu.out", "w")
        err = open(self.work / "emu.err", "a")
        self.proc = subprocess.Popen(
            [self.binary, "--listen", f"127.0.0.1:{self.port}", "--data", str(self.seed),
             "--tls-cert", str(self.cert), "--tls-key", str(self.key), *self.extra],
            stdout=out, stderr=err, env={**os.environ, "RUST_LOG": "warn"},
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            text = (self.work / "emu.out").read_text()
            if text.startswith("listening on "):
                self.port = int(text.split()[2].rsplit(":", 1)[1])
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise Fail("the emulator did not start: " + (self.work / "emu.err").read_text()[-2000:])

    def stop(self) -> None:
        terminate(self.proc, 10)
        self.proc = None

    @property
    def origin(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + "/BeyondTrust/api/public/v3"

    def _operator(self, method: str, path: str, body: dict | None = None) -> dict:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            payload = r.read()
            if r.status != 200:
                raise Fail(f"{method} {path}: HTTP {r.status}: {payload[:300]!r}")
            return json.loads(payload)
        finally:
            conn.close()

    def state(self) -> dict:
        return self._operator("GET", "/_emulator/state")

    def faults(self, body: dict) -> dict:
        return self._operator("POST", "/_emulator/faults", body)

    def put_secret(self, body: dict) -> dict:
        return self._operator("PUT", "/_emulator/secret", body)

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.proc.pid) if self.proc else 0.0


def process_cpu_seconds(pid: int) -> float:
    """utime + stime of a running process, from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def agent_env(emu: Emulator, config: dict, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one agent: its configuration, the credentials, the CA; nothing
    inherited but PATH."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PS_AGENT_CONFIG": json.dumps(config),
        "PS_CA_FILE": str(emu.ca),
        "PS_API_KEY": API_KEY,
        "PS_RUNAS": RUNAS,
        "PS_LOG_LEVEL": "info",
    }
    env.update(extra or {})
    return env


def scratch_dir(prefix: str) -> Path:
    """A fresh directory on tmpfs when there is one (the agent's volume is medium: Memory)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def error_lines(stderr_text: str) -> list[str]:
    return [line for line in stderr_text.splitlines() if " ERROR " in line or line.startswith("ERROR")]


def die(msg: str) -> None:
    print(f"FAIL  {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def keep_logs(work: Path, name: str) -> None:
    """Copies the logs of a run (the emulator's and every agent's: `*.log`, `*.out`, `*.err`
    under `work`) to $PS_LOG_DIR/NAME for scripts/canary-check, when PS_LOG_DIR is set (scripts/test
    sets it). Never the agents' output directories: they hold the secrets."""
    dest = os.environ.get("PS_LOG_DIR")
    if not dest or not work.is_dir():
        return
    for path in work.rglob("*"):
        if path.suffix in (".log", ".out", ".err") and path.is_file() and not path.is_symlink():
            target = Path(dest) / name / path.relative_to(work)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
