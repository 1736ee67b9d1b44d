"""Where the CPU of one admission goes on the real server path (bench/webhook/split runs this).

For each fixture, `ps-webhook serve` (a release build with line tables, 1 connection thread,
JSON logs at info to a file) runs under callgrind twice, answering N and then 2N admissions of
that fixture over one TLS keep-alive connection (curl, one request per TLS record, as
kube-apiserver's client sends them). Start-up, the handshake and shutdown are the same in both
runs, so (run 2N − run N) / N is the steady cost of one admission, and the difference of the two
profiles says where it goes. A third run with N requests on N new connections gives the cost of
a handshake (TLS 1.3, the server's ECDSA P-256 key, as bench/webhook/load serves).

Attribution: every function's self cost belongs to the slice of the nearest anchor above it in
the call graph (SLICES below: rustls and ring for TLS, hyper/axum for HTTP, the core's entry
points, tracing for logging, ...); a function reached from several slices is split in
proportion to the calls from each (as gprof does). Fat LTO inlines much of a slice into one
function, so code inlined from another crate is attributed by its source file first (the line
tables name it): serde_json's writer inlined into the core's response counts as the response.
Syscalls are not instructions: the CPU per admission in user and system mode comes from
/proc/PID/stat under wrk load (16 connections, the same binary, 2 connection threads).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import callgrind  # noqa: E402

# Slices, in the order of the table: (key, label, function patterns, source-file patterns).
#
# How a function's self cost is attributed, first rule that applies:
# 1. the function is one of the server side's own (FIRST: tracing, metrics, rustls, tokio):
#    everything in it, including serde_json code inlined into tracing's JSON writer;
# 2. the instruction's source file (line tables) belongs to a slice: the core's files, rustls,
#    ring, hyper, axum, base64, k8s_openapi, ... — fat LTO inlines the whole review into axum's
#    handler, and the files still tell parsing from mutation;
# 3. the function is an anchor of a slice (its name);
# 4. otherwise (serde_json's shared writer and reader, memcpy, std): the slices of its callers,
#    in proportion to the instructions of the calls from each (as gprof does). A serde_json
#    reader reached from the handler is the request's parse, a writer the response's.
SLICES: list[tuple[str, str, list[str], list[str]]] = [
    ("parse", "request parsing (one pass: webhook-core seeds, serde_json reader)",
     [r"webhook_core::admission::.*Seed", r"webhook_core::pod::"],
     [r"webhook-core/src/(pod|admission)\.rs", r"serde_json-[^/]+/src/(de|read)\.rs"]),
    ("mutate", "decision and mutation (spec, agent config, k8s_openapi objects built and dropped)",
     [r"webhook_core::(admission::decide|mutate::|spec::|config::)", r"inject_api::"],
     [r"webhook-core/src/(mutate|spec|config)\.rs", r"inject-api/src/"]),
    ("patch", "patch serialised (k8s_openapi values to JSON, the JSON Patch array)",
     [r"webhook_core::patch::", r"k8s_openapi::.*Serialize", r"serde_json::value::to_raw_value"],
     [r"webhook-core/src/patch\.rs", r"k8s-openapi-[^/]+/src/"]),
    ("response", "response AdmissionReview (serde_json writer, base64, raw value check)",
     [r"webhook_core::admission::(response|base64_json_string)", r"base64::", r"serde_json::raw::"],
     [r"base64-[^/]+/src/"]),
    ("logging", "logging (admission span, JSON line, stderr write)",
     [r"tracing_subscriber::", r"tracing_core::", r"^tracing::", r"sharded_slab::", r"tracing_serde::",
      r"Stderr", r"tracing_log::", r"ps_webhook::server::admit::\{\{closure\}\}::\{\{closure\}\}"],
     [r"tracing-subscriber-[^/]+/", r"tracing-core-[^/]+/", r"/tracing-0[^/]*/", r"sharded-slab-",
      r"tracing-serde-"]),
    ("metrics", "metrics (counter, histogram)",
     [r"prometheus_client::", r"ps_webhook::metrics::"],
     [r"prometheus-client-[^/]+/", r"webhook/src/metrics\.rs"]),
    ("tls", "TLS (rustls record layer, AES-GCM)",
     [r"rustls::", r"tokio_rustls::", r"^ring::", r"ring_core_", r"_aesni_", r"^aes_", r"^gcm_"],
     [r"/rustls-[^/]+/", r"/tokio-rustls-[^/]+/", r"/ring-[^/]+/"]),
    ("http", "HTTP (hyper parse and write, axum routing, tower, body collect)",
     [r"hyper::", r"hyper_util::", r"axum::", r"axum_core::", r"tower::", r"http_body_util::",
      r"httparse::", r"matchit::", r"^http::", r"bytes::", r"ps_webhook::server::"],
     [r"/hyper-[^/]+/", r"/hyper-util-[^/]+/", r"/axum-[^/]+/", r"/axum-core-[^/]+/", r"/tower-[^/]+/",
      r"/httparse-[^/]+/", r"/matchit-[^/]+/", r"/http-[0-9][^/]*/", r"/http-body", r"/bytes-[^/]+/",
      r"webhook/src/server\.rs"]),
    ("runtime", "tokio runtime, timers and socket calls (epoll, recv, writev)",
     [r"tokio::", r"mio::", r"epoll_wait", r"^__libc_", r"^(recv|recvfrom|send|write|writev|read|readv)$",
      r"clock_gettime", r"Timespec>::now"],
     [r"/tokio-[0-9][^/]*/", r"/mio-[^/]+/"]),
    ("alloc", "allocator (malloc, free, realloc)",
     [r"^(malloc|free|realloc|calloc|cfree|_int_(malloc|free|realloc)|malloc_consolidate|unlink_chunk|"
      r"tcache_|__rust_(alloc|dealloc|realloc)|__rustc::__rust_(alloc|dealloc|realloc)|__libc_(malloc|free|realloc))",
      r"^_?mi_|mimalloc::"],
     [r"libmimalloc-sys-[^/]+/"]),
]
OTHER = ("other", "other (std, memcpy outside a slice, start-up noise)")
# Rule 1: these slices' function patterns come before the source files.
FIRST = ("logging", "metrics", "tls", "runtime", "alloc")
# Rule 4 refinements: a serde_json reader or writer reached through the HTTP handler (into which
# the review is inlined) is the request's parse or the response's writing.
RELABEL = [
    (re.compile(r"serde_json::(de|read)::|Deserialize|Deserializer|MapAccess|SeqAccess|from_utf8"), "http", "parse"),
    (re.compile(r"serde_json::ser|Serializer|SerializeStruct|SerializeMap|serialize"), "http", "response"),
]


def classify(profile: callgrind.Profile) -> tuple[dict[str, float], dict[str, float]]:
    """Instructions per slice, and the allocator's instructions by the slice that called it."""
    fn_pat = [(key, [re.compile(p) for p in fns]) for key, _, fns, _ in SLICES]
    file_pat = [(key, [re.compile(p) for p in files]) for key, _, _, files in SLICES]

    def anchor(fn: str, keys=None) -> str | None:
        for key, pats in fn_pat:
            if (keys is None or key in keys) and any(p.search(fn) for p in pats):
                return key
        return None

    def by_file(path: str) -> str | None:
        for key, pats in file_pat:
            if any(p.search(path) for p in pats):
                return key
        return None

    callers: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for (caller, callee), n in profile.calls.items():
        if n > 0 and caller != callee:
            callers[callee].append((caller, n))

    memo: dict[str, dict[str, float]] = {}
    on_stack: set[str] = set()

    def share(fn: str) -> dict[str, float]:
        """The slices that fn's calls serve, as fractions (for code of fn not placed by rules 1-3)."""
        if fn in memo:
            return memo[fn]
        a = anchor(fn)
        if a is not None:
            memo[fn] = {a: 1.0}
            return memo[fn]
        on_stack.add(fn)
        total = 0.0
        acc: dict[str, float] = defaultdict(float)
        for caller, n in callers.get(fn, []):
            if caller in on_stack:
                continue
            for k, v in share(caller).items():
                acc[k] += v * n
            total += n
        on_stack.discard(fn)
        result = {k: v / total for k, v in acc.items()} if total > 0 else {OTHER[0]: 1.0}
        for pat, old, new in RELABEL:
            if old in result and pat.search(fn):
                result[new] = result.get(new, 0.0) + result.pop(old)
                break
        memo[fn] = result
        return result

    def caller_share(fn: str) -> dict[str, float]:
        """Like share(), for an allocator function: the slices of whoever called the allocator."""
        acc: dict[str, float] = defaultdict(float)
        total = 0.0
        for caller, n in callers.get(fn, []):
            s = caller_share(caller) if anchor(caller) == "alloc" else share(caller)
            for k, v in s.items():
                acc[k] += v * n
            total += n
        return {k: v / total for k, v in acc.items()} if total > 0 else {OTHER[0]: 1.0}

    out: dict[str, float] = defaultdict(float)
    alloc_by: dict[str, float] = defaultdict(float)
    for (fn, path), n in profile.self_cost.items():
        key = anchor(fn, FIRST) or by_file(path) or anchor(fn)
        if key is not None:
            out[key] += n
            if key == "alloc":
                for k, v in caller_share(fn).items():
                    alloc_by[k] += n * v
            continue
        for k, v in share(fn).items():
            out[k] += n * v
    return out, alloc_by


# ---------------------------------------------------------------------------------------------
# Running the server
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, binary: str, work: Path, prefix: list[str], workers: int, log: Path):
        self.port, self.admin = free_port(), free_port()
        self.log = log
        argv = prefix + [
            binary, "serve",
            "--listen", f"127.0.0.1:{self.port}", "--admin-listen", f"127.0.0.1:{self.admin}",
            "--tls-cert", str(work / "tls.crt"), "--tls-key", str(work / "tls.key"),
            "--config", str(work / "config.yaml"), "--log-format", "json",
            "--drain-delay", "0s", "--worker-threads", str(workers),
            # No certificate or configuration polls during the run: their cost grows with the
            # run's wall time (which callgrind stretches), not with the admissions.
            "--reload-interval", "1h",
        ]
        env = dict(os.environ, PS_WEBHOOK_LOG="info")
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        # Readiness from the log line, not from /readyz: polling the admin port would add a
        # varying number of requests to the count.
        deadline = time.monotonic() + 300
        while b"serving admission requests" not in log.read_bytes():
            if self.proc.poll() is not None:
                sys.exit(f"bench/webhook/split: the server exited:\n{log.read_text(errors='replace')}")
            if time.monotonic() > deadline:
                self.stop()
                sys.exit("bench/webhook/split: the server did not start in 300 s")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def curl(server: Server, work: Path, body: Path, n: int, close: bool) -> None:
    """n POSTs of body in one curl process: one keep-alive connection, or (close) a new
    connection per request. Fails unless every answer is 200 and the connections are as asked."""
    entry = "\n".join([
        f'url = "https://127.0.0.1:{server.port}/mutate"',
        f'data-binary = "@{body}"',
        'header = "Content-Type: application/json"',
        # curl would otherwise wait for a 100 Continue before a body over 1 KiB (older curls).
        'header = "Expect:"',
        *(['header = "Connection: close"'] if close else []),
        f'cacert = "{work / "tls.crt"}"',
        "http1.1",
        "silent",
        'output = "/dev/null"',
        r'write-out = "%{http_code} %{num_connects}\n"',
    ])
    cfg = work / "curl.cfg"
    cfg.write_text("\nnext\n".join([entry] * n) + "\n")
    out = subprocess.run(["curl", "-K", str(cfg)], capture_output=True, text=True, timeout=3600)
    lines = out.stdout.split()
    codes, connects = lines[0::2], [int(c) for c in lines[1::2]]
    if out.returncode != 0 or len(codes) != n or any(c != "200" for c in codes):
        sys.exit(f"bench/webhook/split: curl failed ({out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    want = n if close else 1
    if sum(connects) != want:
        sys.exit(f"bench/webhook/split: curl opened {sum(connects)} connections, expected {want}")


def callgrind_run(args, work: Path, fixture: str, n: int, close: bool = False) -> callgrind.Profile:
    tag = f"{fixture}.{n}{'.close' if close else ''}"
    out = work / f"callgrind.{tag}"
    if args.reuse and out.exists():
        return callgrind.read(out)
    server = Server(args.binary, work, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"], 1,
                    work / f"server.{tag}.log")
    try:
        curl(server, work, Path(args.fixtures) / f"{fixture}.json", n, close)
    finally:
        server.stop()
    if server.proc.returncode != 0:
        sys.exit(f"bench/webhook/split: the server exited {server.proc.returncode}:\n"
                 f"{server.log.read_text(errors='replace')[-2000:]}")
    return callgrind.read(out)


def proc_cpu(pid: int) -> tuple[int, int]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])  # utime, stime (clock ticks)


def cpu_under_load(args, work: Path, fixture: str) -> dict:
    server = Server(args.binary, work, [], 2, work / f"server.{fixture}.wrk.log")
    try:
        body = Path(args.fixtures) / f"{fixture}.json"
        lua = Path(__file__).resolve().parent / "post.lua"
        env = dict(os.environ, BODY=str(body), CONNECTION="")
        # Warm-up (connections, allocator), then the measured run.
        subprocess.run(["wrk", "-t1", "-c16", "-d2s", "-s", str(lua), f"https://127.0.0.1:{server.port}/mutate"],
                       env=env, capture_output=True, check=True)
        u0, s0 = proc_cpu(server.proc.pid)
        out = subprocess.run(["wrk", "-t1", "-c16", f"-d{args.wrk_duration}", "-s", str(lua),
                              f"https://127.0.0.1:{server.port}/mutate"],
                             env=env, capture_output=True, text=True, check=True).stdout
        u1, s1 = proc_cpu(server.proc.pid)
    finally:
        server.stop()
    if "non-200 responses: 0" not in out:
        sys.exit(f"bench/webhook/split: wrk saw non-200 answers:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    tick = os.sysconf("SC_CLK_TCK")
    user_us = (u1 - u0) / tick * 1e6 / requests
    sys_us = (s1 - s0) / tick * 1e6 / requests
    return {"requests": requests, "user_us": round(user_us, 2), "system_us": round(sys_us, 2),
            "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--n", type=int, default=int(os.environ.get("N", "100")))
    ap.add_argument("--fixture", action="append", help="inject and/or skip (default both)")
    ap.add_argument("--no-handshake", action="store_true", help="skip the new-connection run")
    ap.add_argument("--no-load", action="store_true", help="skip the wrk run (user/system CPU)")
    ap.add_argument("--wrk-duration", default="10s")
    ap.add_argument("--reuse", action="store_true", help="analyse the callgrind files already in --work")
    ap.add_argument("--json", help="write the figures here as JSON")
    ap.add_argument("--top", type=int, default=0, help="also print the top functions and files of the difference")
    args = ap.parse_args()
    work = Path(args.work)
    n = args.n
    results: dict = {"n": n}
    for fixture in args.fixture or ["inject", "skip"]:
        a = callgrind_run(args, work, fixture, n)
        b = callgrind_run(args, work, fixture, 2 * n)
        diff = b.minus(a)
        per = diff.total / n
        slices, alloc_by = classify(diff)
        row = {"total": round(per), "slices": {k: round(v / n) for k, v in slices.items()},
               "allocator_by_caller": {k: round(v / n) for k, v in alloc_by.items()}}
        if not args.no_handshake:
            c = callgrind_run(args, work, fixture, n, close=True)
            row["handshake"] = round((c.total - b.total + diff.total) / n)  # close(N) − keep-alive(N)
        if not args.no_load:
            row["load"] = cpu_under_load(args, work, fixture)
        results[fixture] = row
        print_table(fixture, row)
        if args.top:
            print_top(diff, n, args.top)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def print_table(fixture: str, row: dict) -> None:
    total = row["total"]
    print(f"\n{fixture}: {total:,} instructions per admission (keep-alive, steady state)")
    labels = {key: label for key, label, _, _ in SLICES} | {OTHER[0]: OTHER[1]}
    for key in [k for k, *_ in SLICES] + [OTHER[0]]:
        v = row["slices"].get(key, 0)
        print(f"  {labels[key]:<84} {v:>9,}  {100 * v / total:5.1f} %")
    by = ", ".join(f"{k} {v:,}" for k, v in sorted(row["allocator_by_caller"].items(), key=lambda kv: -kv[1]) if v)
    print(f"  the allocator's instructions by caller: {by}")
    if "handshake" in row:
        print(f"  a new connection (TLS 1.3 handshake, accept, close) adds {row['handshake']:,} instructions")
    if "load" in row:
        ld = row["load"]
        print(f"  CPU under load (wrk, 16 connections, {ld['requests']:,} requests, {ld['req_per_s']:,.0f}/s): "
              f"user {ld['user_us']} µs + system {ld['system_us']} µs per admission")


def print_top(diff: callgrind.Profile, n: int, top: int) -> None:
    by_fn = sorted(diff.fn_self().items(), key=lambda kv: -kv[1])[:top]
    print("  top functions (self, per admission):")
    for fn, v in by_fn:
        print(f"    {v / n:>9,.0f}  {fn[:150]}")
    files: dict[str, int] = defaultdict(int)
    for (_, path), v in diff.self_cost.items():
        files[path] += v
    print("  top source files (self, per admission):")
    for path, v in sorted(files.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {v / n:>9,.0f}  {path[-110:]}")


if __name__ == "__main__":
    main()
