"""Part 2 of bench/compare: ps-webhook against HashiCorp's vault-k8s injector, the same pod
AdmissionReview with each one's annotations for one secret in one file, init container plus
refreshing agent, the same certificate, the same wrk, in alternating rounds.

vault-k8s runs outside a cluster: it insists on an in-cluster client, so it is started in a
private mount namespace (`unshare -m`) where a tmpfs over /run holds the token, CA and namespace
files at /var/run/secrets/kubernetes.io/serviceaccount, with KUBERNETES_SERVICE_HOST/PORT naming
the end-to-end suite's kube-apiserver on loopback. It serves a certificate from disk, so it
never generates or patches one.
"""

from __future__ import annotations

import base64
import copy
import http.client
import json
import os
import re
import ssl
import subprocess
import time
from pathlib import Path

from procs import free_port, median, proc_cpu_ms, proc_status_kib, terminate

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
FIXTURE = REPO / "bench/webhook/fixtures/inject-full.json"

OURS = {
    "ps-injector.io/inject": "true",
    "ps-injector.io/secret-db": "payments/db/password",
    "ps-injector.io/mode": "init+sidecar",
}
VAULTS = {
    "vault.hashicorp.com/agent-inject": "true",
    "vault.hashicorp.com/role": "payments",
    "vault.hashicorp.com/agent-inject-secret-db": "payments/db/password",
}


def review(annotations: dict) -> bytes:
    body = json.loads(FIXTURE.read_text())
    body["request"]["object"]["metadata"]["annotations"] = dict(annotations)
    return json.dumps(body, separators=(",", ":")).encode()


def make_cert(work: Path) -> tuple[Path, Path]:
    key, crt = work / "tls.key", work / "tls.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(crt)], check=True, capture_output=True)
    return crt, key


class Server:
    name = ""
    proc: subprocess.Popen
    port: int
    body: bytes

    def wait_ready(self, crt: Path, log: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(crt))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {log.read_text()[-2000:]}")
            try:
                status, _ = post(self.port, ctx, self.body)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer within 60 s: {log.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        terminate(self.proc)


class PsWebhook(Server):
    name = "ps-webhook"

    def __init__(self, binary: str, crt: Path, key: Path, work: Path):
        self.port = free_port()
        self.body = review(OURS)
        cfg = work / "ps-webhook.yaml"
        cfg.write_text("passwordSafe:\n  url: https://ps.example.com/BeyondTrust/api/public/v3\n")
        self.log = work / "ps-webhook.log"
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{self.port}", "--admin-listen", f"127.0.0.1:{free_port()}",
             "--tls-cert", str(crt), "--tls-key", str(key), "--config", str(cfg),
             "--log-format", "json", "--drain-delay", "0s", "--worker-threads", "2"],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
            env={"PATH": os.environ["PATH"], "PS_WEBHOOK_LOG": "info"})
        self.wait_ready(crt, self.log)


class VaultK8s(Server):
    name = "vault-k8s"

    def __init__(self, binary: str, crt: Path, key: Path, work: Path, apiserver: str, token: str, ca: Path):
        self.port = free_port()
        self.body = review(VAULTS)
        sa = work / "sa"
        sa.mkdir(exist_ok=True)
        (sa / "token").write_text(token)
        (sa / "ca.crt").write_bytes(ca.read_bytes())
        (sa / "namespace").write_text("default")
        host, port = re.match(r"https://([^:/]+):(\d+)", apiserver).groups()
        mount = "/var/run/secrets/kubernetes.io/serviceaccount"
        script = (f"mount -t tmpfs -o mode=755 tmpfs /run && mkdir -p {mount} && cp {sa}/token {sa}/ca.crt "
                  f"{sa}/namespace {mount}/ && exec \"$0\" \"$@\"")
        self.log = work / "vault-k8s.log"
        # Go's runtime sizes itself from the CPUs as ps-webhook is given 2 workers: both see 2.
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, binary, "agent-inject",
             "-listen", f"127.0.0.1:{self.port}", "-tls-cert-file", str(crt), "-tls-key-file", str(key),
             "-vault-address", "https://vault.example.com:8200", "-log-format", "json", "-log-level", "info",
             "-use-leader-elector=false"],
            stdout=open(self.log, "w"), stderr=subprocess.STDOUT,
            env={"PATH": os.environ["PATH"], "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port})
        self.wait_ready(crt, self.log)


def post(port: int, ctx: ssl.SSLContext, body: bytes) -> tuple[int, bytes]:
    c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        c.request("POST", "/mutate", body=body, headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def apply_patch(doc, ops: list[dict]):
    """RFC 6902 add/replace/remove, enough for what injectors send."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1] if parts else None
        if op["op"] in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif op["op"] == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        elif op["op"] == "remove":
            del parent[int(last) if isinstance(parent, list) else last]
        else:
            raise ValueError(f"patch op {op['op']} not handled")
    return doc


def quantity(q: str | None) -> float:
    """A Kubernetes quantity as a number (CPU in cores, memory in bytes)."""
    if q is None:
        return 0.0
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    return float(m.group(1)) * units.get(m.group(2), 1.0)


def pod_additions(server: Server, crt: Path) -> dict:
    """One admission: response size, patch, and what it adds to the pod."""
    ctx = ssl.create_default_context(cafile=str(crt))
    status, raw = post(server.port, ctx, server.body)
    if status != 200:
        raise RuntimeError(f"{server.name}: HTTP {status}")
    resp = json.loads(raw)["response"]
    if not resp.get("allowed") or not resp.get("patch"):
        raise RuntimeError(f"{server.name} did not inject: {json.dumps(resp)[:500]}")
    patch = base64.b64decode(resp["patch"])
    ops = json.loads(patch)
    pod = json.loads(server.body)["request"]["object"]
    after = apply_patch(pod, ops)
    added = []
    for kind in ("initContainers", "containers"):
        before_names = {c["name"] for c in pod["spec"].get(kind, [])}
        for c in after["spec"].get(kind, []):
            if c["name"] not in before_names:
                res = c.get("resources", {})
                added.append({"kind": kind, "name": c["name"], "image": c.get("image"),
                              "restartPolicy": c.get("restartPolicy"),
                              "requests": res.get("requests", {}), "limits": res.get("limits", {})})
    # A sidecar's requests add to the pod's for its whole life; an init container's count only
    # while it runs, and only where they exceed the app containers' (the larger of the two).
    sidecar = [a for a in added if a["kind"] == "containers" or a["restartPolicy"] == "Always"]

    def lasting(key: str) -> float:
        return sum(quantity(a["requests"].get(key)) for a in sidecar)
    return {
        "response_bytes": len(raw), "patch_bytes": len(patch), "patch_ops": len(ops),
        "containers_added": len(added), "added": added,
        "volumes_added": len(after["spec"].get("volumes", [])) - len(pod["spec"].get("volumes", [])),
        "cpu_request_cores": lasting("cpu"), "memory_request_bytes": lasting("memory"),
    }


LUA = HERE / "count.lua"


def wrk(port: int, body: Path, conns: int, duration: str, work: Path, requests: int = 0) -> dict:
    out = work / "wrk.out"
    env = {**os.environ, "BODY": str(body), "REQUESTS": str(requests)}
    with open(out, "w") as f:
        subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{duration}", "--latency", "-s", str(LUA),
                        f"https://127.0.0.1:{port}/mutate"], stdout=f, stderr=subprocess.STDOUT,
                       env=env, check=True, cwd=REPO)
    text = out.read_text()
    if "non-200 responses: 0\n" not in text or "Socket errors" in text:
        raise RuntimeError(f"wrk against port {port}: errors:\n{text}")
    rps = float(re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M).group(1))
    total = int(re.search(r"^\s*(\d+) requests in", text, re.M).group(1))
    p50, p90, p99 = map(float, re.search(r"latency p50 ([0-9.]+) ms, p90 ([0-9.]+) ms, p99 ([0-9.]+) ms", text).groups())
    return {"rps": rps, "p50_ms": p50, "p90_ms": p90, "p99_ms": p99, "requests": total}


def bench(servers: list[Server], work: Path, conns: list[int], duration: str, rounds: int,
          cpu_requests: int, say) -> dict:
    """Alternating rounds of every connection count; then CPU per admission over the same
    number of requests (16 connections); then peak RSS."""
    out = {s.name: {"points": {c: [] for c in conns}, "cpu": []} for s in servers}
    bodies = {}
    for s in servers:
        bodies[s.name] = work / f"{s.name}.json"
        bodies[s.name].write_bytes(s.body)
        wrk(s.port, bodies[s.name], 16, "2s", work)  # warm-up
        out[s.name]["rss_idle_kib"] = proc_status_kib(s.pid, "VmRSS")
    for r in range(rounds):
        for c in conns:
            for s in (servers if r % 2 == 0 else servers[::-1]):
                p = wrk(s.port, bodies[s.name], c, duration, work)
                out[s.name]["points"][c].append(p)
                say(f"  round {r + 1}, {c:2} connections, {s.name:10}: {p['rps']:9.0f} /s  p50 {p['p50_ms']:.3f} ms  p99 {p['p99_ms']:.3f} ms")
    for r in range(rounds):
        for s in (servers if r % 2 == 0 else servers[::-1]):
            rate = median([p["rps"] for p in out[s.name]["points"][16]])
            secs = max(3, int(cpu_requests / rate * 3) + 2)  # wrk runs its full -d; idle after the last
            before = proc_cpu_ms(s.pid)
            p = wrk(s.port, bodies[s.name], 16, f"{secs}s", work, requests=cpu_requests)
            used = proc_cpu_ms(s.pid) - before
            per = used * 1000 / p["requests"]
            out[s.name]["cpu"].append(per)
            say(f"  CPU, {s.name:10}: {used:.0f} ms over {p['requests']} admissions = {per:.1f} µs each")
    for s in servers:
        o = out[s.name]
        o["rss_peak_kib"] = proc_status_kib(s.pid, "VmHWM")
        o["cpu_us_per_admission"] = median(o["cpu"])
        o["summary"] = {c: {k: median([p[k] for p in o["points"][c]]) for k in ("rps", "p50_ms", "p90_ms", "p99_ms")}
                        for c in conns}
    return out


def kube_token(kubectl: str) -> str:
    """A token of a ServiceAccount bound to cluster-admin, as vault-k8s's chart grants it the
    webhook-configuration rights it needs (here: more, on a throwaway apiserver)."""
    run = lambda *a: subprocess.run([kubectl, *a], check=True, capture_output=True, text=True)  # noqa: E731
    run("create", "serviceaccount", "vault-k8s", "-n", "default")
    run("create", "clusterrolebinding", "vault-k8s", "--clusterrole=cluster-admin",
        "--serviceaccount=default:vault-k8s")
    return run("create", "token", "vault-k8s", "-n", "default", "--duration=2h").stdout.strip()



class StubApiserver:
    """The two kube-apiserver calls vault-k8s makes outside an admission, for a run without
    the end-to-end control plane (VAULT_APISERVER=stub): at start it lists
    MutatingWebhookConfigurations, and its certificate watcher lists and watches them before it
    serves the certificate to clients that send SNI (wrk does). An empty list and a watch that
    stays open are all it needs; the admission path never calls the apiserver."""

    def __init__(self, crt: Path, key: Path):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if "mutatingwebhookconfigurations" not in self.path:
                    body = b'{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}'
                    self.send_response(404)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if "watch=true" in self.path:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self.wfile.flush()
                    stop.wait()
                    return
                body = (b'{"kind":"MutatingWebhookConfigurationList","apiVersion":"admissionregistration.k8s.io/v1",'
                        b'"metadata":{"resourceVersion":"1"},"items":[]}')
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        stop = threading.Event()
        self.stop_event = stop
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(crt), str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()
