"""Parts 1 and 3 of bench/compare: ps-agent against programs on BeyondTrust's official Go and
Python libraries (and one curl GET), fetching the same 5 secrets and 1 managed account from the
same ps-emulator, on loopback and through toxiproxy at 10 and 50 ms of round trip; then 200 of
each started at once.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))
from lib import Emulator, seed_yaml  # noqa: E402

from procs import (  # noqa: E402
    Operator, Run, Toxiproxy, max_rss_kib, median, percentile, proc_cpu_ms, run_once, spawn, traffic_delta)

SECRETS = [f"s{i}" for i in range(1, 6)]
ACCOUNT_PASSWORD = "compare-account-value"
# 128 hex digits, the length of a real Password Safe API key (the Python library refuses less).
API_KEY = "c0ffee0123456789abcdef" * 5 + "0123456789abcdef0a"
RUNAS = "svc-compare"
assert len(API_KEY) == 128
SEED = seed_yaml(['{title: s1, type: credential, username: u1, password: "compare-value-1"}',
                  '{title: s2, type: text, text: "compare-value-2"}',
                  '{title: s3, type: credential, username: u3, password: "compare-value-3"}',
                  '{title: s4, type: text, text: "compare-value-4"}',
                  '{title: s5, type: credential, username: u5, password: "compare-value-5"}'],
                 ACCOUNT_PASSWORD, api_key=API_KEY, runas=RUNAS)
EXPECTED = {**{s: f"compare-value-{s[1:]}" for s in SECRETS}, "account": ACCOUNT_PASSWORD}

# Round trips on the critical path from start to the last file in place (sign-out, one more for
# every client, comes after it), through a proxy that delays TLS and HTTP but not the TCP
# handshake (see Toxiproxy):
#  - ps-agent: TLS 1.3 (1) + sign-in (1), then the 5 secret GETs and the managed-account chain
#    at once as HTTP/2 streams on sign-in's connection, the chain being the longest (lookup,
#    request, credentials: 3; the check-in comes after the files, at sign-out) = 5.
#  - the Go and Python programs call one after another on one kept-alive connection: their
#    handshakes' round trips (TLS 1.2: 2, the Go library pins it; TLS 1.3: 1) plus one per
#    HTTP request but the sign-out, both counted by the emulator.
#  - curl: TLS 1.3 (1) + GET (1) = 2, to its exit.
AGENT_FLOOR_RTTS = 1 + 1 + 3
TLS_RTTS = {"ps-agent": 1, "go-library": 2, "python-library": 1, "curl": 1}


@dataclass
class Clients:
    agent: str
    go_client: str
    python: str          # the venv's interpreter
    python_script: str
    curl: str


def agent_config(base_url: str, root: Path) -> str:
    import json
    return json.dumps({
        "version": 1,
        "passwordSafe": {"url": base_url, "apiVersion": "3.1"},
        "root": str(root),
        "secrets": [{"name": s, "path": f"team/app/{s}"} for s in SECRETS],
        "accounts": [{"name": "account", "account": "db-prod/svc_app"}],
    })


def command(name: str, c: Clients, base_url: str, root: Path, ca: Path) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one client run writing into `root`; nothing inherited but PATH."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PS_API_KEY": API_KEY, "PS_RUNAS": RUNAS}
    pairs_s = [f"{s}=team/app/{s}" for s in SECRETS]
    pairs_a = ["account=db-prod/svc_app"]
    if name == "ps-agent":
        env.update(PS_AGENT_CONFIG=agent_config(base_url, root), PS_CA_FILE=str(ca), PS_LOG_LEVEL="warn")
        return [c.agent, "fetch"], env
    if name == "go-library":
        env.update(SSL_CERT_FILE=str(ca), SSL_CERT_DIR="/nonexistent")
        argv = [c.go_client, "-api-url", base_url, "-root", str(root)]
        argv += [a for p in pairs_s for a in ("-secret", p)] + [a for p in pairs_a for a in ("-account", p)]
        return argv, env
    if name == "python-library":
        env.update(REQUESTS_CA_BUNDLE=str(ca), SSL_CERT_FILE=str(ca), SSL_CERT_DIR="/nonexistent")
        argv = [c.python, c.python_script, "--api-url", base_url, "--root", str(root)]
        argv += [a for p in pairs_s for a in ("--secret", p)] + [a for p in pairs_a for a in ("--account", p)]
        return argv, env
    if name == "curl":
        # The physical floor: one HTTPS GET on a new connection (an API route; the 401 without
        # a session is as cheap an answer as there is).
        return [c.curl, "-sS", "-o", "/dev/null", "--cacert", str(ca), f"{base_url}/Auth/SignAppIn"], env
    raise ValueError(name)


def check_files(name: str, root: Path) -> str | None:
    """None when every expected file holds its value; else what is wrong (no values shown)."""
    if name == "curl":
        return None
    for f, want in EXPECTED.items():
        try:
            got = (root / f).read_text()
        except OSError as e:
            return f"{f}: {e.strerror}"
        if got != want:
            return f"{f}: {len(got)} bytes, want {len(want)}"
    return None


CLIENTS = ["ps-agent", "go-library", "python-library", "curl"]


def measured_run(name: str, argv: list[str], env: dict[str, str], root: Path, log: Path, op: Operator,
                 where: str) -> Run:
    """One run of client `name` into `root` with the emulator's traffic it caused; checks the
    files, removes `root`, and raises naming `where` when the run failed or a file is wrong."""
    before = op.traffic()
    r = run_once(argv, env, root, {"..data", *EXPECTED}, log)
    r.traffic = traffic_delta(before, op.traffic())
    bad = check_files(name, root)
    shutil.rmtree(root, ignore_errors=True)
    if r.code != 0 or bad:
        raise RuntimeError(f"{where}: exit {r.code}, files: {bad or 'ok'}; output: {r.stderr.strip()[-800:]}")
    return r


def single_runs(c: Clients, emu: Emulator, op: Operator, toxi: Toxiproxy, work: Path,
                rtts: list[int], runs: dict[int, int], say) -> dict:
    """Interleaved runs of every client at every RTT. Returns {rtt: {client: summary}}."""
    out: dict = {}
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else work
    for rtt in rtts:
        port = emu.port if rtt == 0 else toxi.add(f"rtt{rtt}", emu.port, rtt)
        base = f"https://127.0.0.1:{port}/BeyondTrust/api/public/v3"
        n = runs[rtt]
        results: dict[str, list[Run]] = {k: [] for k in CLIENTS}
        # The emulator's CPU per fetch: /proc ticks are 10 ms, so it is summed over all runs.
        emu_cpu = {k: 0.0 for k in CLIENTS}
        say(f"agent clients at {rtt} ms RTT: {n} interleaved runs each (+2 warm-up)")
        for i in range(n + 2):
            for name in CLIENTS:
                root = Path(os.path.join(shm, f"compare-{os.getpid()}-{name}"))
                shutil.rmtree(root, ignore_errors=True)
                root.mkdir(mode=0o700)
                argv, env = command(name, c, base, root, emu.ca)
                cpu0 = proc_cpu_ms(emu.proc.pid)
                r = measured_run(name, argv, env, root, work / f"{name}.log", op, f"{name} at {rtt} ms RTT, run {i}")
                if i >= 2:
                    emu_cpu[name] += proc_cpu_ms(emu.proc.pid) - cpu0
                    results[name].append(r)
        out[rtt] = {name: summarize(name, rs, rtt) for name, rs in results.items()}
        for name in CLIENTS:
            out[rtt][name]["emulator_cpu_ms"] = emu_cpu[name] / n
        if rtt == 0:
            for name in CLIENTS:
                peak = 0
                for _ in range(3):
                    root = Path(os.path.join(shm, f"compare-{os.getpid()}-{name}"))
                    shutil.rmtree(root, ignore_errors=True)
                    root.mkdir(mode=0o700)
                    argv, env = command(name, c, base, root, emu.ca)
                    peak = max(peak, max_rss_kib(argv, env, work / f"{name}.log"))
                    shutil.rmtree(root, ignore_errors=True)
                out[rtt][name]["rss_max_kib"] = peak
        for name, s in out[rtt].items():
            say(f"  {name:15} written p50 {s['written_p50_ms']:8.2f} ms  exit p50 {s['wall_p50_ms']:8.2f} ms  "
                f"cpu {s['cpu_p50_ms']:6.1f} ms  emulator {s['emulator_cpu_ms']:5.2f} ms  "
                f"requests {s['http_requests']}  tls {s['tls_handshakes']}  floor {s['floor_ms']:.0f} ms"
                + (f"  max RSS {s['rss_max_kib'] / 1024:.1f} MiB" if "rss_max_kib" in s else ""))
    return out


def summarize(name: str, rs: list[Run], rtt: int) -> dict:
    written = [r.written_ms if r.written_ms is not None else r.wall_ms for r in rs]
    tr = rs[0].traffic
    varying = {k for r in rs for k in r.traffic if r.traffic[k] != tr[k]}
    full = tr["tls_handshakes"] - tr["tls_resumed"]
    if name == "ps-agent":
        floor_rtts = AGENT_FLOOR_RTTS
    else:
        floor_rtts = full * TLS_RTTS[name] + tr["http_requests"] - (0 if name == "curl" else 1)
    return {
        "runs": len(rs),
        "written_p50_ms": median(written), "written_p90_ms": percentile(written, 90),
        "wall_p50_ms": median([r.wall_ms for r in rs]), "wall_p90_ms": percentile([r.wall_ms for r in rs], 90),
        "cpu_p50_ms": median([r.cpu_ms for r in rs]),
        "http_requests": tr["http_requests"], "tcp_connections": tr["tcp_accepted"],
        "tls_handshakes": tr["tls_handshakes"], "tls_resumed": tr["tls_resumed"],
        "traffic_varies": sorted(varying),
        "floor_rtts": floor_rtts, "floor_ms": floor_rtts * rtt,
    }


def fleet(c: Clients, emu_bin: str, work: Path, n: int, say) -> dict:
    """n processes of each client at once, each against a fresh emulator (peaks never reset)."""
    out = {}
    for name in ("ps-agent", "go-library", "python-library"):
        fw = work / f"fleet-{name}"
        fw.mkdir()
        seed = fw / "seed.yaml"
        seed.write_text(SEED)
        emu = Emulator(emu_bin, seed, fw)
        emu.start()
        op = Operator(emu.port, emu.ca)
        shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else fw
        roots = [shm / f"compare-fleet-{os.getpid()}-{name}-{i:03}" for i in range(n)]
        try:
            before = op.traffic()
            op.call("POST", "/_emulator/faults", {"reset_counters": True})
            cmds = [command(name, c, emu.base_url, r, emu.ca) for r in roots]
            pids = {}
            emu_cpu0 = proc_cpu_ms(emu.proc.pid)
            t0 = time.perf_counter()
            for i, (argv, env) in enumerate(cmds):
                pids[spawn(argv, env, fw / f"{i:03}.log")] = i
            spawned = time.perf_counter() - t0
            codes = {}
            last = 0.0
            cpu = 0.0
            while pids:
                pid, status, usage = os.wait4(-1, 0)
                i = pids.pop(pid, None)
                if i is None:
                    continue
                last = time.perf_counter() - t0
                codes[i] = os.waitstatus_to_exitcode(status)
                cpu += usage.ru_utime + usage.ru_stime
            emu_cpu = (proc_cpu_ms(emu.proc.pid) - emu_cpu0) / 1000
            st = op.state()
            tr = traffic_delta(before, st["traffic"])
            failed = [i for i in range(n) if codes[i] != 0 or check_files(name, roots[i])]
            reasons = sorted({(fw / f"{i:03}.log").read_text(errors="replace").strip().splitlines()[-1][:200]
                              for i in failed[:20] if (fw / f"{i:03}.log").read_text().strip()})
            out[name] = {
                "processes": n, "last_exit_s": last, "spawn_s": spawned, "failures": len(failed),
                "failure_reasons": reasons,
                "peak_sessions": st["traffic"]["peak_sessions"],
                "peak_in_flight": st["load"]["peak_in_flight"],
                "peak_connections": st["traffic"]["peak_connections"],
                "http_requests": tr["http_requests"], "tcp_connections": tr["tcp_accepted"],
                "tls_handshakes": tr["tls_handshakes"], "cpu_s": cpu, "emulator_cpu_s": emu_cpu,
                "sessions_open_after": st["sessions_open"], "requests_open_after": st["requests_open"],
            }
            say(f"fleet {name}: {n} at once, last exit {last:.2f} s, failures {len(failed)}, "
                f"peak sessions {out[name]['peak_sessions']}, peak in flight {out[name]['peak_in_flight']}, "
                f"calls {tr['http_requests']}" + (f"; e.g. {reasons[0]}" if reasons else ""))
        finally:
            op.close()
            emu.stop()
            for r in roots:
                shutil.rmtree(r, ignore_errors=True)
    return out


def sizes(c: Clients, venv: Path) -> dict:
    site = next(venv.glob("lib/python3*/site-packages"))
    total = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink())
    return {
        "ps-agent": os.path.getsize(c.agent),
        "go-library": os.path.getsize(c.go_client),
        "python-library": total,
    }
