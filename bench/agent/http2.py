"""ps-agent over HTTP/2 and over HTTP/1.1: it fetches 5 secrets and 1 managed account
(bench/compare's agent case) from ps-emulator through toxiproxy at several round-trip times,
runs of every variant interleaved, and reports per variant and RTT the p50 and p90 of start →
last file in place and of start → exit, with the TCP connections, TLS handshakes and HTTP
requests one run cost the emulator. Started by bench/agent/http2 (which builds the binaries);
a benchmark, not a test. Secret values are never printed.

The same script at commit 5e19226 (as bench/agent/h2-vs-warm) also measured the connection
warm-up that HTTP/2 replaced (docs/design.md, "HTTP/2, not connection warm-up").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "bench" / "compare"))
sys.path.insert(0, str(REPO / "bench" / "reliability"))

import agents  # noqa: E402
from lib import Emulator  # noqa: E402
from procs import Operator, Toxiproxy, median, percentile  # noqa: E402

# name: (the emulator serves HTTP/2, extra agent environment, what it is)
VARIANTS: dict[str, tuple[bool, dict[str, str], str]] = {
    "h1": (False, {}, "HTTP/1.1 server (--http1-only)"),
    "h2": (True, {}, "HTTP/2 server (h2 through ALPN)"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rtts", default="1,10,50", help="round-trip times in ms (default 1,10,50)")
    ap.add_argument("--runs", type=int, default=31, help="measured runs per variant and RTT (default 31)")
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help="which of " + "; ".join(f"{k}: {v[2]}" for k, v in VARIANTS.items()))
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    agent, emu_bin, toxi_bin = os.environ["AGENT"], os.environ["EMU"], os.environ["TOXIPROXY"]
    rtts = [int(x) for x in args.rtts.split(",")]
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    for n in names:
        if n not in VARIANTS:
            ap.error(f"--variants: unknown variant {n!r} (known: {', '.join(VARIANTS)})")

    work = Path(os.environ.get("WORK") or "/tmp") / f"bench-http2-{os.getpid()}"
    work.mkdir(parents=True)
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else work
    emus: dict[bool, tuple[Emulator, Operator]] = {}
    toxi = Toxiproxy(toxi_bin, work)
    clients = agents.Clients(agent=agent, go_client="", python="", python_script="", curl="")
    out: dict = {"rtts": rtts, "runs": args.runs,
                 "variants": {n: VARIANTS[n][2] for n in names}, "results": {}}
    try:
        for h2 in sorted({VARIANTS[n][0] for n in names}):
            d = work / ("h2" if h2 else "h1")
            d.mkdir()
            seed = d / "seed.yaml"
            seed.write_text(agents.SEED)
            emu = Emulator(emu_bin, seed, d, [] if h2 else ["--http1-only"])
            emu.start()
            emus[h2] = (emu, Operator(emu.port, emu.ca))
        for rtt in rtts:
            ports = {h2: toxi.add(f"{'h2' if h2 else 'h1'}-rtt{rtt}", e.port, rtt) for h2, (e, _) in emus.items()}
            runs: dict[str, list] = {n: [] for n in names}
            print(f"{rtt} ms RTT: {args.runs} interleaved runs of {', '.join(names)} (+2 unmeasured)", flush=True)
            for i in range(args.runs + 2):
                for n in names:
                    h2, extra, _ = VARIANTS[n]
                    emu, op = emus[h2]
                    base = f"https://127.0.0.1:{ports[h2]}/BeyondTrust/api/public/v3"
                    root = shm / f"bench-http2-{os.getpid()}-{n}"
                    shutil.rmtree(root, ignore_errors=True)
                    root.mkdir(mode=0o700)
                    argv, env = agents.command("ps-agent", clients, base, root, emu.ca)
                    env.update(extra)
                    r = agents.measured_run("ps-agent", argv, env, root, work / f"{n}.log", op,
                                            f"variant {n} at {rtt} ms, run {i}")
                    if i >= 2:
                        runs[n].append(r)
            res = {}
            for n in names:
                rs = runs[n]
                written = [r.written_ms for r in rs if r.written_ms is not None]
                wall = [r.wall_ms for r in rs]
                per_run = {k: sorted({r.traffic[k] for r in rs}) for k in rs[0].traffic}
                res[n] = {
                    "written_p50_ms": median(written), "written_p90_ms": percentile(written, 90),
                    "exit_p50_ms": median(wall), "exit_p90_ms": percentile(wall, 90),
                    "traffic_per_run": per_run,
                }
                t = per_run
                print(f"  {n}  written p50 {res[n]['written_p50_ms']:7.2f}  p90 {res[n]['written_p90_ms']:7.2f}   "
                      f"exit p50 {res[n]['exit_p50_ms']:7.2f}  p90 {res[n]['exit_p90_ms']:7.2f} ms   "
                      f"tcp {fmt(t['tcp_accepted'])}  tls {fmt(t['tls_handshakes'])} "
                      f"(resumed {fmt(t['tls_resumed'])})  requests {fmt(t['http_requests'])}", flush=True)
            out["results"][rtt] = res
    finally:
        for emu, op in emus.values():
            op.close()
            emu.stop()
        toxi.stop()
        shutil.rmtree(work, ignore_errors=True)
    out["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    out["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print_table(out, names)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


def fmt(values: list[int]) -> str:
    return "/".join(str(v) for v in values)


def print_table(out: dict, names: list[str]) -> None:
    print()
    print("| variant | RTT | last file p50 | p90 | exit p50 | p90 | TCP | TLS (resumed) | requests |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rtt in out["rtts"]:
        for n in names:
            r = out["results"][rtt][n]
            t = r["traffic_per_run"]
            print(f"| {n}: {VARIANTS[n][2]} | {rtt} ms | {r['written_p50_ms']:.1f} ms | {r['written_p90_ms']:.1f} ms | "
                  f"{r['exit_p50_ms']:.1f} ms | {r['exit_p90_ms']:.1f} ms | {fmt(t['tcp_accepted'])} | "
                  f"{fmt(t['tls_handshakes'])} ({fmt(t['tls_resumed'])}) | {fmt(t['http_requests'])} |")


if __name__ == "__main__":
    sys.exit(main())
