"""A fleet of `ps-agent fetch` processes started at once against one ps-emulator (RELIABILITY.md).

Scenarios (all by default, or --scenario NAME):

  shared        N agents, one run-as user, one managed account, no limits: a Deployment's
                replicas at rollout. Pass: every agent writes the password; no request or
                session left open.
  storm         N agents (the managed account and a secret each) against an emulator with
                appliance-like limits (concurrent calls, rate; 503/429 with Retry-After) and a
                per-call latency. Pass: every agent succeeds within its retry budget; no call
                repeated before its Retry-After; the limit held; no request or session left
                open; agent CPU low while waiting.
  small-budget  N/5 agents whose retry budget (1 s) is smaller than the throttling they meet.
                Pass: each agent succeeds or fails closed (exit 1, nothing switched in, the
                error names the throttling); at least one fails closed; nothing left open.

Prints one line of figures per scenario for RELIABILITY.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import Emulator, Fail, agent_env, check, error_lines, keep_logs, scratch_dir, seed_yaml  # noqa: E402

ACCOUNT_PASSWORD = "PSCANARY-account-pw-storm-1"
SECRET_VALUE = "PSCANARY-secret-pw-storm-1"

SEED = seed_yaml([f'{{title: db, type: credential, username: app, password: "{SECRET_VALUE}"}}'],
                 ACCOUNT_PASSWORD)


@dataclass
class AgentRun:
    index: int
    root: Path
    pid: int = 0
    code: int | None = None
    cpu: float = 0.0
    exited: float = 0.0
    written: float | None = None
    stderr: str = ""


def spawn(agent: str, env: dict[str, str], log: Path) -> int:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        return os.posix_spawn(
            agent, [agent, "fetch"], env,
            file_actions=[(os.POSIX_SPAWN_DUP2, fd, 1), (os.POSIX_SPAWN_DUP2, fd, 2),
                          (os.POSIX_SPAWN_CLOSE, fd)],
        )
    finally:
        os.close(fd)


def run_fleet(agent: str, emu: Emulator, n: int, work: Path, with_secret: bool,
              extra_env: dict[str, str]) -> tuple[list[AgentRun], float]:
    """Starts n agents at once and reaps them. Returns the runs and the start time."""
    runs: list[AgentRun] = []
    envs = []
    for i in range(n):
        root = work / f"agent-{i:04}"
        config = {
            "version": 1,
            "passwordSafe": {"url": emu.base_url, "apiVersion": "3.1"},
            "root": str(root),
            "accounts": [{"name": "account", "account": "db-prod/svc_app"}],
        }
        if with_secret:
            config["secrets"] = [{"name": "db", "path": "team/app/db"}]
        envs.append(agent_env(emu, config, extra_env))
        runs.append(AgentRun(i, root))
    by_pid: dict[int, AgentRun] = {}
    t0 = time.time()
    for run, env in zip(runs, envs):
        run.pid = spawn(agent, env, work / f"agent-{run.index:04}.log")
        by_pid[run.pid] = run
    while by_pid:
        pid, status, usage = os.wait4(-1, 0)
        run = by_pid.pop(pid, None)
        if run is None:
            continue
        run.exited = time.time() - t0
        run.code = os.waitstatus_to_exitcode(status)
        run.cpu = usage.ru_utime + usage.ru_stime
    for run in runs:
        data = run.root / "..data"
        if os.path.lexists(data):
            run.written = os.lstat(data).st_mtime - t0
        run.stderr = (work / f"agent-{run.index:04}.log").read_text(errors="replace")
    return runs, t0


def file_is(path: Path, expected: str) -> bool:
    try:
        return path.read_bytes() == expected.encode()
    except OSError:
        return False


def summarize_failures(runs: list[AgentRun]) -> list[str]:
    out = []
    for r in runs:
        if r.code != 0:
            lines = error_lines(r.stderr) or r.stderr.strip().splitlines()[-1:]
            out.append(f"agent {r.index}: exit {r.code}: {lines[0] if lines else '(no output)'}")
    return out


def closed(emu: Emulator, failures: list[str], label: str) -> dict:
    st = emu.state()
    check(st["sessions_open"] == 0, f"{label}: no session left open (sessions_open {st['sessions_open']})",
          failures)
    check(st["requests_open"] == 0, f"{label}: no managed-account request left open "
          f"(requests_open {st['requests_open']})", failures)
    return st


def scenario_shared(agent: str, emu_bin: str, n: int, base: Path, failures: list[str]) -> str:
    work = base / "shared"
    work.mkdir()
    (work / "seed.yaml").write_text(SEED)
    emu = Emulator(emu_bin, work / "seed.yaml", work)
    emu.start()
    try:
        runs, _ = run_fleet(agent, emu, n, work, with_secret=False, extra_env={})
        bad = summarize_failures(runs)
        for line in bad[:10]:
            print(f"      {line}")
        check(not bad, f"shared: {n - len(bad)} of {n} agents wrote the password ({len(bad)} failed)",
              failures)
        wrong = [r.index for r in runs if r.code == 0 and not file_is(r.root / "account", ACCOUNT_PASSWORD)]
        check(not wrong, f"shared: every written password is the account's ({len(wrong)} differ)", failures)
        st = closed(emu, failures, "shared")
        calls = st["calls"]
        rerequests = calls["POST requests"] - n
        wall = max(r.exited for r in runs)
        return (f"shared: {n} agents, {n - len(bad)} ok, {len(bad)} failed; POST requests {calls['POST requests']} "
                f"(re-requests {rerequests}), credentials reads {calls['GET credentials/{id}']}, check-ins "
                f"{calls['PUT requests/{id}/checkin']}; all done in {wall:.2f} s; sessions_open "
                f"{st['sessions_open']}, requests_open {st['requests_open']}")
    finally:
        emu.stop()


def scenario_storm(agent: str, emu_bin: str, n: int, args: argparse.Namespace, base: Path,
                   failures: list[str]) -> str:
    work = base / "storm"
    work.mkdir()
    (work / "seed.yaml").write_text(SEED)
    emu = Emulator(emu_bin, work / "seed.yaml", work, [
        "--max-concurrent", str(args.max_concurrent), "--rate-limit", str(args.rate),
        "--rate-burst", str(args.burst), "--retry-after-seconds", str(args.retry_after)])
    emu.start()
    try:
        emu.faults({"latency_ms": args.latency_ms})
        cpu_before = emu.cpu_seconds()
        runs, _ = run_fleet(agent, emu, n, work, with_secret=True,
                            extra_env={"PS_RETRY_BUDGET_SECONDS": str(args.budget)})
        emu_cpu = emu.cpu_seconds() - cpu_before
        bad = summarize_failures(runs)
        for line in bad[:10]:
            print(f"      {line}")
        check(not bad, f"storm: {n - len(bad)} of {n} agents succeeded within their retry budget "
              f"of {args.budget} s ({len(bad)} failed)", failures)
        wrong = [r.index for r in runs if r.code == 0 and not (
            file_is(r.root / "account", ACCOUNT_PASSWORD) and file_is(r.root / "db", SECRET_VALUE))]
        check(not wrong, f"storm: every agent that succeeded wrote both values ({len(wrong)} differ)",
              failures)
        st = closed(emu, failures, "storm")
        load = st["load"]
        check(load["early_retries"] == 0,
              f"storm: Retry-After honoured: no call repeated before its Retry-After "
              f"(early_retries {load['early_retries']})", failures)
        check(load["peak_admitted"] <= args.max_concurrent,
              f"storm: the limit held: peak admitted {load['peak_admitted']} <= max_concurrent "
              f"{args.max_concurrent}", failures)
        refused = load["throttled"] + load["overloaded"]
        total = sum(st["calls"].values())
        admitted = total - refused
        written = [r.written for r in runs if r.written is not None]
        all_written = max(written) if written else float("nan")
        ideal = max(admitted - args.burst, 0) / args.rate
        cpu = [r.cpu for r in runs]
        cpu_mean_ms = 1000 * sum(cpu) / n
        cpu_max_ms = 1000 * max(cpu)
        wall_sum = sum(r.exited for r in runs)
        cpu_share = sum(cpu) / wall_sum if wall_sum else 0.0
        # A busy loop burns a core for the whole wait: seconds per agent. Backoff sleeps.
        check(cpu_max_ms <= 1000 * args.max_agent_cpu,
              f"storm: no busy loop: agent CPU mean {cpu_mean_ms:.1f} ms, max {cpu_max_ms:.1f} ms "
              f"(limit {args.max_agent_cpu * 1000:.0f} ms), {100 * cpu_share:.2f} % of their wall time",
              failures)
        return (f"storm: {n} agents, {n - len(bad)} ok; limits {args.max_concurrent} concurrent, "
                f"{args.rate}/s (burst {args.burst}), Retry-After {args.retry_after} s, latency "
                f"{args.latency_ms} ms; calls {total} (admitted {admitted}, 429 {load['throttled']}, "
                f"503 {load['overloaded']}); early retries {load['early_retries']}; peak in flight "
                f"{load['peak_in_flight']} (admitted {load['peak_admitted']}); all written in "
                f"{all_written:.2f} s vs ideal {ideal:.2f} s ({admitted} - {args.burst} burst) / "
                f"{args.rate}/s = x{all_written / ideal if ideal else float('nan'):.2f}; agent CPU mean "
                f"{cpu_mean_ms:.1f} ms, max {cpu_max_ms:.1f} ms ({100 * cpu_share:.2f} % of wall); "
                f"emulator CPU {emu_cpu:.2f} s; sessions_open {st['sessions_open']}, requests_open "
                f"{st['requests_open']}")
    finally:
        emu.stop()


def scenario_small_budget(agent: str, emu_bin: str, n: int, base: Path, failures: list[str]) -> str:
    work = base / "small-budget"
    work.mkdir()
    (work / "seed.yaml").write_text(SEED)
    rate = 5
    emu = Emulator(emu_bin, work / "seed.yaml", work, [
        "--rate-limit", str(rate), "--rate-burst", str(rate), "--retry-after-seconds", "2"])
    emu.start()
    try:
        runs, _ = run_fleet(agent, emu, n, work, with_secret=True,
                            extra_env={"PS_RETRY_BUDGET_SECONDS": "1"})
        ok = [r for r in runs if r.code == 0]
        failed = [r for r in runs if r.code != 0]
        good = all(file_is(r.root / "account", ACCOUNT_PASSWORD) and file_is(r.root / "db", SECRET_VALUE)
                   for r in ok)
        check(good, f"small-budget: the {len(ok)} agent(s) that succeeded wrote both values", failures)
        check(bool(failed), f"small-budget: {len(failed)} of {n} agents ran out of budget", failures)
        named = []
        for r in failed:
            result = r.root / ".ps-result.json"
            closed_ok = (r.code == 1 and not os.path.lexists(r.root / "..data")
                         and result.exists() and json.loads(result.read_text())["ok"] is False)
            reason = "throttled by Password Safe" in r.stderr and "the retry budget ran out" in r.stderr
            if not (closed_ok and reason):
                named.append(f"agent {r.index}: exit {r.code}, ..data present "
                             f"{os.path.lexists(r.root / '..data')}, reason named {reason}")
        for line in named[:10]:
            print(f"      {line}")
        check(not named, "small-budget: every failed agent failed closed (exit 1, nothing switched in, "
              "ok=false in .ps-result.json) naming the throttling and the budget", failures)
        st = closed(emu, failures, "small-budget")
        sample = next((error_lines(r.stderr)[0] for r in failed if error_lines(r.stderr)), "")
        sample = sample.split(" ERROR ", 1)[-1].strip()
        load = st["load"]
        return (f"small-budget: {n} agents with a 1 s budget against {rate}/s, Retry-After 2 s: "
                f"{len(ok)} ok, {len(failed)} failed closed; 429 {load['throttled']}, early retries "
                f"{load['early_retries']}; sessions_open {st['sessions_open']}, requests_open "
                f"{st['requests_open']}; e.g. `{sample}`")
    finally:
        emu.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", required=True, help="ps-agent binary")
    p.add_argument("--emulator", required=True, help="ps-emulator binary")
    p.add_argument("--agents", type=int, default=500)
    p.add_argument("--scenario", choices=["shared", "storm", "small-budget"], action="append")
    p.add_argument("--max-concurrent", type=int, default=16)
    p.add_argument("--rate", type=int, default=200, help="emulator rate limit, calls per second")
    p.add_argument("--burst", type=int, default=50)
    p.add_argument("--retry-after", type=int, default=1)
    p.add_argument("--latency-ms", type=int, default=10)
    p.add_argument("--budget", type=int, default=60, help="the agents' retry budget, seconds")
    p.add_argument("--max-agent-cpu", type=float, default=1.0,
                   help="most CPU seconds one agent may use (a busy loop uses its whole wait)")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    scenarios = args.scenario or ["shared", "storm", "small-budget"]
    base = scratch_dir("ps-storm.")
    failures: list[str] = []
    lines = []
    try:
        if "shared" in scenarios:
            lines.append(scenario_shared(args.agent, args.emulator, args.agents, base, failures))
        if "storm" in scenarios:
            lines.append(scenario_storm(args.agent, args.emulator, args.agents, args, base, failures))
        if "small-budget" in scenarios:
            lines.append(scenario_small_budget(args.agent, args.emulator, max(args.agents // 5, 2), base,
                                               failures))
    except Fail as e:
        failures.append(str(e))
        print(f"FAIL  {e}")
    finally:
        keep_logs(base, "storm")
        if args.keep:
            print(f"work directory kept: {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print()
    for line in lines:
        print(f"figures  {line}")
    if failures:
        print(f"\n{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
