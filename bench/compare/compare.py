"""bench/compare: ps-injector side by side with what users would pick instead, in one run.
Started by bench/compare/run, which builds or finds every binary and passes them in the
environment (see there). Writes bench/results.json, bench/figures/*.svg and the generated
blocks of BENCHMARKS.md (between `<!-- compare:NAME -->` and `<!-- /compare:NAME -->`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import agents  # noqa: E402
import svg  # noqa: E402
from procs import Operator, Toxiproxy  # noqa: E402

MIB = 1024 * 1024


def say(msg: str) -> None:
    print(msg, flush=True)


def sh(*argv: str) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def meta(env: dict) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    dirty = sh("git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no")
    return {
        "commit": sh("git", "-C", str(REPO), "rev-parse", "--short", "HEAD") + (" (modified)" if dirty else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(),
        "rustc": sh("rustc", "--version"), "go": sh("go", "version"),
        "python": platform.python_version(),
        "versions": {
            "go-library": "github.com/BeyondTrust/go-client-library-passwordsafe v1.3.2",
            "python-library": "beyondtrust-bips-library 2.32.1",
            "vault-k8s": "github.com/hashicorp/vault-k8s v1.6.2",
            "toxiproxy": "github.com/Shopify/toxiproxy/v2 v2.12.0",
            "curl": sh("curl", "--version").splitlines()[0] if sh("curl", "--version") != "unknown" else "unknown",
            "wrk": "wrk (Debian)",
        },
    }


# ------------------------------------------------------------------------------ targets

LABEL = {"ps-agent": "ps-agent", "go-library": "Go library", "python-library": "Python library",
         "curl": "curl, one GET"}


def ratio(a: float, b: float) -> float:
    return a / b if b else float("inf")


def targets(res: dict) -> list[dict]:
    out = []

    def add(part, what, value, ratio_, met, detail=""):
        out.append({"part": part, "target": what, "value": value, "ratio": ratio_, "met": met, "detail": detail})

    w = res.get("webhook")
    if w:
        ours, theirs = w["servers"]["ps-webhook"], w["servers"]["vault-k8s"]
        r = ratio(ours["summary"][16]["rps"], theirs["summary"][16]["rps"])
        add("webhook", "admissions/s at 16 connections ≥ 5× vault-k8s's", f"{ours['summary'][16]['rps']:,.0f} vs {theirs['summary'][16]['rps']:,.0f} /s", r, r >= 5)
        r = ratio(ours["summary"][16]["p99_ms"], theirs["summary"][16]["p99_ms"])
        add("webhook", "p99 at 16 connections ≤ 0.1× vault-k8s's", f"{ours['summary'][16]['p99_ms']:.2f} vs {theirs['summary'][16]['p99_ms']:.2f} ms", r, r <= 0.1)
        r = ratio(ours["cpu_us_per_admission"], theirs["cpu_us_per_admission"])
        add("webhook", "CPU per admission ≤ 0.1× vault-k8s's", f"{ours['cpu_us_per_admission']:.1f} vs {theirs['cpu_us_per_admission']:.1f} µs", r, r <= 0.1)
    a = res.get("agents")
    if a:
        for rtt in (0, 10):
            if rtt not in a["rtt"]:
                continue
            s = a["rtt"][rtt]
            where = "loopback" if rtt == 0 else f"{rtt} ms RTT"
            me = s["ps-agent"]["written_p50_ms"]
            for peer, bound in (("go-library", 0.5), ("python-library", 0.1)):
                r = ratio(me, s[peer]["written_p50_ms"])
                add("agent", f"start → last file ≤ {bound}× the {LABEL[peer]}'s, {where}",
                    f"{me:.1f} vs {s[peer]['written_p50_ms']:.1f} ms", r, r <= bound)
            r = ratio(me, s["curl"]["wall_p50_ms"])
            add("agent", f"start → last file ≤ 2× one curl GET, {where}", f"{me:.1f} vs {s['curl']['wall_p50_ms']:.1f} ms", r, r <= 2)
        s = a["rtt"][0]
        for peer in ("go-library", "python-library"):
            r = ratio(s["ps-agent"]["rss_max_kib"], s[peer]["rss_max_kib"])
            add("agent", f"max RSS ≤ 0.5× the {LABEL[peer]}'s",
                f"{s['ps-agent']['rss_max_kib'] / 1024:.1f} vs {s[peer]['rss_max_kib'] / 1024:.1f} MiB", r, r <= 0.5)
        for peer in ("go-library", "python-library"):
            mine, theirs = s["ps-agent"]["http_requests"], s[peer]["http_requests"]
            add("agent", f"HTTP calls ≤ the {LABEL[peer]}'s", f"{mine} vs {theirs}", ratio(mine, theirs), mine <= theirs)
    f = res.get("fleet")
    if f and "ps-agent" in f:
        x = f["ps-agent"]
        add("fleet", "every agent of the fleet succeeds", f"{x['processes'] - x['failures']} of {x['processes']}",
            None, x["failures"] == 0)
        add("fleet", "peak concurrent sessions ≤ number of agents", f"{x['peak_sessions']} for {x['processes']} agents",
            ratio(x["peak_sessions"], x["processes"]), x["peak_sessions"] <= x["processes"])
    return out


# ------------------------------------------------------------------------------ report

def fmt_ratio(r) -> str:
    if r is None:
        return "—"
    return f"{r:.3f}" if r < 1 else f"{r:.2f}" if r < 10 else f"{r:.1f}"


def md_meta(m: dict) -> str:
    v = m["versions"]
    return "\n".join([
        f"Last run: **{m['date']}**, commit `{m['commit']}`, {m['cpus']} × {m['cpu']}, Linux {m['kernel']}; "
        f"load average {m['load_before'][0]:.2f} before and {m['load_after'][0]:.2f} after the run "
        f"(other builds share this VM; the ratios within one run are what to read, the absolute "
        f"figures drift between runs). Took {m['seconds']:.0f} s.",
        "",
        f"Peers: {v['go-library']}, {v['python-library']}, {v['vault-k8s']}; delaying proxy "
        f"{v['toxiproxy']}; {v['curl']}; {m['rustc']}; {m['go']}; Python {m['python']}.",
    ])


def md_targets(ts: list[dict]) -> str:
    rows = ["| part | target | measured | ratio | |", "|---|---|---|---|---|"]
    for t in ts:
        rows.append(f"| {t['part']} | {t['target']} | {t['value']} | {fmt_ratio(t['ratio'])} | "
                    f"{'met' if t['met'] else '**missed**'} |")
    return "\n".join(rows)


def md_agents(a: dict) -> str:
    names = agents.CLIENTS
    label = LABEL
    out = []
    for rtt, s in sorted(a["rtt"].items()):
        where = "loopback" if rtt == 0 else f"{rtt} ms round trip (toxiproxy)"
        out += [f"**{where}** ({s['ps-agent']['runs']} interleaved runs each)", "",
                "| | start → last file p50 / p90 | start → exit p50 | round-trip floor | CPU p50 | emulator CPU, mean | max RSS | HTTP requests | TCP / TLS handshakes (resumed) |",
                "|---|---|---|---|---|---|---|---|---|"]
        for n in names:
            x = s[n]
            written = "—" if n == "curl" else f"{x['written_p50_ms']:.1f} / {x['written_p90_ms']:.1f} ms"
            floor = f"{x['floor_rtts']} RTT" + (f" = {x['floor_ms']:.0f} ms" if rtt else "")
            out.append(f"| {label[n]} | {written} | {x['wall_p50_ms']:.1f} ms | {floor} | {x['cpu_p50_ms']:.1f} ms | "
                       f"{x['emulator_cpu_ms']:.1f} ms | "
                       + (f"{x['rss_max_kib'] / 1024:.1f} MiB" if "rss_max_kib" in x else "—")
                       + f" | {x['http_requests']} | "
                       f"{x['tcp_connections']} / {x['tls_handshakes']} ({x['tls_resumed']}) |")
        out.append("")
    sz = a["sizes"]
    out += ["| size on disk | ps-agent | Go library | Python library |", "|---|---|---|---|",
            f"| | {sz['ps-agent'] / MIB:.2f} MiB static binary | {sz['go-library'] / MIB:.2f} MiB stripped binary | "
            f"{sz['python-library'] / MIB:.1f} MiB site-packages (+ the Python interpreter) |"]
    return "\n".join(out)


def md_webhook(w: dict) -> str:
    o, v = w["servers"]["ps-webhook"], w["servers"]["vault-k8s"]
    conns = sorted(o["summary"])
    out = [f"vault-k8s's apiserver in this run: {w['apiserver']}.", "",
           "| | ps-webhook | vault-k8s | ratio |", "|---|---|---|---|"]
    for c in conns:
        a, b = o["summary"][c], v["summary"][c]
        out.append(f"| admissions/s, {c} connection{'s' if c > 1 else ''} | {a['rps']:,.0f} | {b['rps']:,.0f} | {ratio(a['rps'], b['rps']):.1f}× |")
    for c in conns:
        a, b = o["summary"][c], v["summary"][c]
        out.append(f"| p50 / p99, {c} connection{'s' if c > 1 else ''} | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} ms | "
                   f"{b['p50_ms']:.2f} / {b['p99_ms']:.2f} ms | {ratio(a['p99_ms'], b['p99_ms']):.2f} (p99) |")
    out.append(f"| CPU per admission ({w['cpu_requests']:,} at 16 connections, `/proc/PID/stat`) | "
               f"{o['cpu_us_per_admission']:.1f} µs | {v['cpu_us_per_admission']:.1f} µs | "
               f"{ratio(o['cpu_us_per_admission'], v['cpu_us_per_admission']):.3f} |")
    out.append(f"| RSS idle / peak | {o['rss_idle_kib'] / 1024:.1f} / {o['rss_peak_kib'] / 1024:.1f} MiB | "
               f"{v['rss_idle_kib'] / 1024:.1f} / {v['rss_peak_kib'] / 1024:.1f} MiB | "
               f"{ratio(o['rss_peak_kib'], v['rss_peak_kib']):.2f} (peak) |")
    pa, pv = w["pod"]["ps-webhook"], w["pod"]["vault-k8s"]
    out.append(f"| response size (patch) | {pa['response_bytes']:,} B ({pa['patch_bytes']:,} B, {pa['patch_ops']} ops) | "
               f"{pv['response_bytes']:,} B ({pv['patch_bytes']:,} B, {pv['patch_ops']} ops) | "
               f"{ratio(pa['response_bytes'], pv['response_bytes']):.2f} |")
    out.append(f"| request size | {w['request_bytes']['ps-webhook']:,} B | {w['request_bytes']['vault-k8s']:,} B | |")
    out += ["", "What each adds to the pod (same pod, one secret, init container plus refreshing agent):", "",
            "| | ps-webhook | vault-k8s |", "|---|---|---|"]

    def containers(p):
        return ", ".join(f"`{a['name']}` ({'init' if a['kind'] == 'initContainers' else 'sidecar'}"
                         f"{', restartPolicy Always' if a['restartPolicy'] == 'Always' else ''})" for a in p["added"])

    def req(p):
        return "; ".join(f"`{a['name']}` {a['requests'].get('cpu', '–')} CPU / {a['requests'].get('memory', '–')}"
                         + (f" (limits {a['limits'].get('cpu', '–')} / {a['limits'].get('memory', '–')})" if a["limits"] else "")
                         for a in p["added"])
    out.append(f"| containers added | {pa['containers_added']}: {containers(pa)} | {pv['containers_added']}: {containers(pv)} |")
    out.append(f"| volumes added | {pa['volumes_added']} | {pv['volumes_added']} |")
    out.append(f"| resource requests | {req(pa)} | {req(pv)} |")
    out.append(f"| added to the pod's requests for its whole life (the sidecar's) | {pa['cpu_request_cores'] * 1000:.0f}m CPU, "
               f"{pa['memory_request_bytes'] / MIB:.0f} Mi | {pv['cpu_request_cores'] * 1000:.0f}m CPU, "
               f"{pv['memory_request_bytes'] / MIB:.0f} Mi |")
    img = w["image"]
    out.append(f"| agent image | {img['ours_bytes'] / MIB:.2f} MiB measured: static `ps-agent` "
               f"{img['agent_bytes'] / MIB:.2f} MiB + CA bundle {img['ca_bytes'] / MIB:.2f} MiB | "
               f"`{img['vault_image']}`: {img['vault_documented']} |")
    return "\n".join(out)


def md_fleet(f: dict) -> str:
    label = LABEL
    out = ["| | last process done | failures | peak sessions | peak calls in flight | peak connections | "
           "calls | TCP / TLS handshakes | CPU, all processes | emulator CPU |", "|---|---|---|---|---|---|---|---|---|---|"]
    for n, x in f.items():
        if n == "run":
            continue
        fails = f"{x['failures']}" + (f" (e.g. `{x['failure_reasons'][0][:110]}`)" if x["failure_reasons"] else "")
        out.append(f"| {label[n]} | {x['last_exit_s']:.2f} s | {fails} | {x['peak_sessions']} | {x['peak_in_flight']} | "
                   f"{x['peak_connections']} | {x['http_requests']:,} | {x['tcp_connections']:,} / {x['tls_handshakes']:,} | "
                   f"{x['cpu_s']:.1f} s | {x['emulator_cpu_s']:.1f} s |")
    return "\n".join(out)


def replace_block(text: str, name: str, body: str) -> str:
    pat = re.compile(rf"(<!-- compare:{name} -->\n).*?(<!-- /compare:{name} -->)", re.S)
    if not pat.search(text):
        raise RuntimeError(f"BENCHMARKS.md has no <!-- compare:{name} --> block")
    return pat.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), text)


# ------------------------------------------------------------------------------ figures

def figures(res: dict, out: Path) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.svg"):  # the directory is this script's: no stale charts
        old.unlink()
    made = []
    a = res.get("agents")
    if a:
        groups = []
        for rtt, s in sorted(a["rtt"].items()):
            where = "loopback" if rtt == 0 else f"{rtt} ms RTT"
            items = [(n, s[n]["written_p50_ms"] if n != "curl" else s[n]["wall_p50_ms"],
                      f"{(s[n]['written_p50_ms'] if n != 'curl' else s[n]['wall_p50_ms']):.1f} ms"
                      + (f" (floor {s[n]['floor_ms']:.0f})" if rtt else "")) for n in agents.CLIENTS]
            groups.append((where, items))
        (out / "agent-start.svg").write_text(svg.bars(
            "5 secrets + 1 managed account: process start → last file (p50)", "milliseconds, lower is better",
            groups, note="curl: one HTTPS GET on a new connection, the physical floor. Floor: round trips of the call sequence × RTT.",
            log=True))
        s = a["rtt"][0]
        (out / "agent-footprint.svg").write_text(svg.bars(
            "Footprint of one fetch", "lower is better", [
                ("max RSS (MiB)", [(n, s[n]["rss_max_kib"] / 1024, f"{s[n]['rss_max_kib'] / 1024:.1f} MiB") for n in agents.CLIENTS[:3]]),
                ("CPU (ms)", [(n, s[n]["cpu_p50_ms"], f"{s[n]['cpu_p50_ms']:.1f} ms") for n in agents.CLIENTS[:3]]),
                ("HTTP requests", [(n, s[n]["http_requests"], str(s[n]["http_requests"])) for n in agents.CLIENTS[:3]]),
                ("size (MiB)", [(n, a["sizes"][n] / MIB, f"{a['sizes'][n] / MIB:.1f} MiB") for n in agents.CLIENTS[:3]]),
            ], log=True))
        made += ["agent-start.svg", "agent-footprint.svg"]
    f = {k: v for k, v in res.get("fleet", {}).items() if k != "run"}
    if f:
        (out / "fleet.svg").write_text(svg.bars(
            f"{next(iter(f.values()))['processes']} processes at once against one emulator", "lower is better", [
                ("last done (s)", [(n, x["last_exit_s"], f"{x['last_exit_s']:.2f} s") for n, x in f.items()]),
                ("CPU, all (s)", [(n, x["cpu_s"], f"{x['cpu_s']:.1f} s") for n, x in f.items()]),
                ("peak sessions", [(n, x["peak_sessions"], str(x["peak_sessions"])) for n, x in f.items()]),
                ("failures", [(n, x["failures"], str(x["failures"])) for n, x in f.items()]),
            ]))
        made.append("fleet.svg")
    w = res.get("webhook")
    if w:
        servers = ["ps-webhook", "vault-k8s"]
        ss = w["servers"]
        conns = sorted(ss["ps-webhook"]["summary"])
        (out / "webhook-throughput.svg").write_text(svg.bars(
            "Admissions per second, TLS keep-alive, same pod", "admissions/s, higher is better",
            [(f"{c} conn.", [(n, ss[n]["summary"][c]["rps"], f"{ss[n]['summary'][c]['rps']:,.0f}/s") for n in servers]) for c in conns]))
        (out / "webhook-cost.svg").write_text(svg.bars(
            "Cost of an admission", "lower is better", [
                ("CPU (µs)", [(n, ss[n]["cpu_us_per_admission"], f"{ss[n]['cpu_us_per_admission']:.1f} µs") for n in servers]),
                ("p99 @16 (ms)", [(n, ss[n]["summary"][16]["p99_ms"], f"{ss[n]['summary'][16]['p99_ms']:.2f} ms") for n in servers]),
                ("peak RSS (MiB)", [(n, ss[n]["rss_peak_kib"] / 1024, f"{ss[n]['rss_peak_kib'] / 1024:.1f} MiB") for n in servers]),
                ("response (B)", [(n, w["pod"][n]["response_bytes"], f"{w['pod'][n]['response_bytes']:,} B") for n in servers]),
            ], log=True))
        made += ["webhook-throughput.svg", "webhook-cost.svg"]
    return made


# ------------------------------------------------------------------------------ main

def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--parts", default="agents,fleet,webhook")
    p.add_argument("--fleet", type=int, default=int(os.environ.get("FLEET", "200")))
    p.add_argument("--runs", default=os.environ.get("RUNS", "0:30,10:20,50:10"),
                   help="RTT:RUNS pairs, e.g. 0:30,10:20,50:10")
    p.add_argument("--duration", default=os.environ.get("DURATION", "5s"), help="per wrk point")
    p.add_argument("--rounds", type=int, default=int(os.environ.get("ROUNDS", "3")))
    p.add_argument("--cpu-requests", type=int, default=int(os.environ.get("CPU_REQUESTS", "50000")))
    p.add_argument("--results", default=str(REPO / "bench/results.json"))
    p.add_argument("--markdown", default=str(REPO / "BENCHMARKS.md"))
    args = p.parse_args()
    parts = set(args.parts.split(","))
    env = os.environ
    t_start = time.monotonic()
    res: dict = {"meta": meta(env)}
    res["meta"]["load_before"] = loadavg()
    say(f"bench/compare: commit {res['meta']['commit']}, {res['meta']['cpus']} × {res['meta']['cpu']}, load {loadavg()}")
    with tempfile.TemporaryDirectory(prefix="ps-compare.") as tmp:
        work = Path(tmp)
        clients = agents.Clients(agent=env["AGENT"], go_client=env["GO_CLIENT"],
                                 python=env["VENV"] + "/bin/python", python_script=str(HERE / "python-client/fetch.py"),
                                 curl=sh("sh", "-c", "command -v curl"))
        if "agents" in parts:
            runs = {int(k): int(v) for k, v in (x.split(":") for x in args.runs.split(","))}
            seed = work / "seed.yaml"
            seed.write_text(agents.SEED)
            emu = agents.Emulator(env["EMU"], seed, work)
            emu.start()
            op = Operator(emu.port, emu.ca)
            toxi = Toxiproxy(env["TOXIPROXY"], work)
            try:
                res["agents"] = {"rtt": agents.single_runs(clients, emu, op, toxi, work, sorted(runs), runs, say),
                                 "sizes": agents.sizes(clients, Path(env["VENV"]))}
            finally:
                toxi.stop()
                op.close()
                emu.stop()
        if "fleet" in parts:
            fw = work / "fleet"
            fw.mkdir()
            res["fleet"] = agents.fleet(clients, env["EMU"], fw, args.fleet, say)
        if "webhook" in parts:
            res["webhook"] = webhook_part(env, work, args)
    res["meta"]["load_after"] = loadavg()
    res["meta"]["seconds"] = time.monotonic() - t_start
    stamp = {k: res["meta"][k] for k in ("commit", "date", "load_before", "load_after")}
    for name in ("agents", "fleet", "webhook"):
        if name in res:
            res[name]["run"] = stamp
    # A part left out of this run keeps its figures from the last run that measured it, stamped
    # with that run's commit and date.
    previous = Path(args.results)
    if previous.exists():
        old = json.loads(previous.read_text())
        for name in ("agents", "fleet", "webhook"):
            if name not in res and name in old and "run" in old[name]:
                res[name] = old[name]
    if "agents" in res:
        res["agents"]["rtt"] = {int(k): v for k, v in res["agents"]["rtt"].items()}
    if "webhook" in res:
        for srv in res["webhook"]["servers"].values():
            srv["summary"] = {int(k): v for k, v in srv["summary"].items()}
    res["targets"] = targets(res)
    for t in res["targets"]:
        say(f"  {'met   ' if t['met'] else 'MISSED'} {t['part']}: {t['target']}: {t['value']} (ratio {fmt_ratio(t['ratio'])})")

    Path(args.results).write_text(json.dumps(res, indent=1, default=str) + "\n")
    made = figures(res, REPO / "bench/figures")
    md = Path(args.markdown)
    text = md.read_text()
    text = replace_block(text, "meta", md_meta(res["meta"]))
    text = replace_block(text, "targets", md_targets(res["targets"]))
    skipped = "Not measured yet: `bench/compare/run` measures it."
    for name, render in (("agents", md_agents), ("fleet", md_fleet), ("webhook", md_webhook)):
        if name not in res:
            body = skipped
        else:
            r = res[name]["run"]
            body = (f"Measured {r['date']}, commit `{r['commit']}`, load average {r['load_before'][0]:.2f} → "
                    f"{r['load_after'][0]:.2f}.\n\n" + render(res[name]))
        text = replace_block(text, name, body)
    md.write_text(text)
    say(f"wrote {args.results}, {md} and bench/figures/ ({', '.join(made)}) in {res['meta']['seconds']:.0f} s")
    return 0


def webhook_part(env, work: Path, args) -> dict:
    import webhooks
    ww = work / "webhook"
    ww.mkdir()
    crt, key = webhooks.make_cert(ww)
    stub = None
    if env.get("VAULT_APISERVER") == "stub":
        stub = webhooks.StubApiserver(crt, key)
        apiserver, token, apiserver_ca = stub.url, "stub-token", crt
    else:
        apiserver, token, apiserver_ca = env["CP_SERVER"], webhooks.kube_token(env["KUBECTL"]), Path(env["CP_CA_CRT"])
    servers = []
    try:
        servers.append(webhooks.PsWebhook(env["WEBHOOK"], crt, key, ww))
        servers.append(webhooks.VaultK8s(env["VAULT_K8S"], crt, key, ww, apiserver, token, apiserver_ca))
        pod = {s.name: webhooks.pod_additions(s, crt) for s in servers}
        say(f"webhooks: {args.rounds} alternating rounds of {args.duration} at 1, 16 and 64 connections")
        out = webhooks.bench(servers, ww, [1, 16, 64], args.duration, args.rounds, args.cpu_requests, say)
    finally:
        for s in servers:
            s.stop()
        if stub is not None:
            stub.stop()
    ca_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    agent_bytes = os.path.getsize(env["AGENT"])
    ca_bytes = ca_bundle.stat().st_size
    return {
        "servers": out, "pod": pod, "cpu_requests": args.cpu_requests,
        "apiserver": "stub (VAULT_APISERVER=stub)" if stub else "kube-apiserver (tests/e2e/control-plane)",
        "request_bytes": {s.name: len(s.body) for s in servers},
        "image": {
            "agent_bytes": agent_bytes, "ca_bytes": ca_bytes, "ours_bytes": agent_bytes + ca_bytes,
            "vault_image": pod["vault-k8s"]["added"][0]["image"],
            "vault_documented": VAULT_IMAGE_NOTE,
        },
    }


# vault-k8s v1.6.2 injects hashicorp/vault:1.18.5 by default. Its size is not measured here (no
# registry access); these are HashiCorp's published figures for earlier releases of the same image.
VAULT_IMAGE_NOTE = ("not measured here (no registry); reported sizes of the same image: 186 MB at 1.13.2 "
                    "and 253 MB at 1.13.3 ([hashicorp/vault#21069](https://github.com/hashicorp/vault/issues/21069)), "
                    "247 MB at 1.14.1 and 355 MB at 1.14.2 "
                    "([hashicorp/vault#22893](https://github.com/hashicorp/vault/issues/22893))")


if __name__ == "__main__":
    sys.exit(main())
