#!/usr/bin/env python3
"""Run the webhook exactly as the rendered Deployment would, and call it as the API server would.

    run_rendered.py RENDERED.yaml PS_WEBHOOK_BIN

Takes the container's args and env from the rendered Deployment, materialises its mounted
ConfigMap and (helm-mode) certificate Secret into a temp dir at the paths the args name, moves
only the listen addresses to free loopback ports, and starts ps-webhook. Then:
- the admin port answers /livez and /readyz (the probes' paths);
- a TLS client that trusts only the MutatingWebhookConfiguration's caBundle connects with the
  Service's DNS name (<svc>.<ns>.svc), as the API server does, and POSTs an AdmissionReview for
  a pod without the opt-in to the clientConfig path: the answer allows it.
Exits 1 with a message on the first failure.
"""

import base64
import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request

import yaml


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die(msg, log=None):
    print(f"FAIL  {msg}")
    if log and os.path.exists(log):
        print(open(log).read()[-2000:])
    sys.exit(1)


def main():
    rendered, binary = sys.argv[1], sys.argv[2]
    docs = [d for d in yaml.safe_load_all(open(rendered)) if d]
    get = lambda kind: [d for d in docs if d.get("kind") == kind]
    dep = get("Deployment")[0]
    mwc = get("MutatingWebhookConfiguration")[0]["webhooks"][0]
    pod = dep["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    vols = {v["name"]: v for v in pod["volumes"]}
    cms = {d["metadata"]["name"]: d for d in get("ConfigMap")}
    secrets = {d["metadata"]["name"]: d for d in get("Secret")}

    with tempfile.TemporaryDirectory() as tmp:
        def path(p):
            return os.path.join(tmp, p.lstrip("/"))

        # Materialise the mounts the container would see.
        for m in ctr.get("volumeMounts", []):
            v = vols[m["name"]]
            os.makedirs(path(m["mountPath"]), exist_ok=True)
            if "configMap" in v:
                for k, text in cms[v["configMap"]["name"]]["data"].items():
                    open(os.path.join(path(m["mountPath"]), k), "w").write(text)
            elif "secret" in v:
                sec = secrets.get(v["secret"]["secretName"])
                if sec is None:
                    die(f"Secret {v['secret']['secretName']} is not rendered (this check needs certificates.mode=helm)")
                for item in v["secret"].get("items") or [{"key": k, "path": k} for k in sec["data"]]:
                    data = base64.b64decode(sec["data"][item["key"]])
                    open(os.path.join(path(m["mountPath"]), item["path"]), "wb").write(data)

        https, admin = free_port(), free_port()
        args = []
        for a in ctr["args"]:
            flag, eq, val = a.partition("=")
            if flag == "--listen":
                val = f"127.0.0.1:{https}"
            elif flag == "--admin-listen":
                val = f"127.0.0.1:{admin}"
            elif eq and val.startswith("/"):
                val = path(val)
            args.append(flag + eq + val if eq else a)
        env = dict(os.environ)
        for e in ctr.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
        log = os.path.join(tmp, "webhook.log")
        proc = subprocess.Popen([binary, *args], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        try:
            probes = {"/livez": False, "/readyz": False}
            for _ in range(100):
                if proc.poll() is not None:
                    die(f"ps-webhook exited ({proc.returncode}) with the rendered args {ctr['args']}", log)
                for p in probes:
                    try:
                        probes[p] = urllib.request.urlopen(f"http://127.0.0.1:{admin}{p}", timeout=1).status == 200
                    except Exception:  # noqa: BLE001
                        pass
                if all(probes.values()):
                    break
                time.sleep(0.1)
            if not all(probes.values()):
                die(f"probes not answering 200 on the admin port: {probes}", log)
            if dig_probe(ctr, "readinessProbe") != "/readyz" or dig_probe(ctr, "livenessProbe") != "/livez":
                die("the probes do not use /readyz and /livez")

            ca = base64.b64decode(mwc["clientConfig"]["caBundle"]).decode()
            svc = mwc["clientConfig"]["service"]
            host = f"{svc['name']}.{svc['namespace']}.svc"
            ctx = ssl.create_default_context(cadata=ca)
            review = {
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": "0f0e0d0c-0000-4000-8000-000000000001",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "operation": "CREATE", "namespace": "team-a", "name": "plain",
                    "userInfo": {"username": "test"},
                    "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "plain", "namespace": "team-a"},
                               "spec": {"containers": [{"name": "app", "image": "app:1"}]}},
                    "dryRun": False,
                },
            }
            body = json.dumps(review).encode()
            with socket.create_connection(("127.0.0.1", https), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname=host) as tls:
                    req = (f"POST {svc['path']} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
                    tls.sendall(req)
                    resp = b""
                    while True:
                        chunk = tls.recv(65536)
                        if not chunk:
                            break
                        resp += chunk
            head, _, payload = resp.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                die(f"admission POST to {svc['path']}: {head[:80]!r}", log)
            if b"chunked" in head.lower():
                payload = dechunk(payload)
            answer = json.loads(payload)
            r = answer.get("response") or {}
            if r.get("uid") != review["request"]["uid"] or r.get("allowed") is not True:
                die(f"admission answer does not allow the plain pod: {answer}", log)
            print(f"ok: ps-webhook runs with the rendered args, serves TLS as {host} trusted by the caBundle, "
                  f"and answers AdmissionReviews on {svc['path']}")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def dig_probe(ctr, name):
    return ((ctr.get(name) or {}).get("httpGet") or {}).get("path")


def dechunk(data):
    out = b""
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size.split(b";")[0], 16)
        if n == 0:
            break
        out += rest[:n]
        data = rest[n + 2:]
    return out


if __name__ == "__main__":
    main()
