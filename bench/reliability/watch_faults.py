"""`ps-agent watch` through faults, each held for several refresh intervals (RELIABILITY.md).

One agent refreshes four outputs (two secrets, a file secret, a managed account) every
--interval seconds into a small tmpfs (the pod's `emptyDir: {medium: Memory}` with its
sizeLimit), while a reader process reads every file continuously, as the app would. Faults, in
order:

  outage     the emulator process is killed, then restarted on the same port and certificate
  401        every session expires at each refresh; then every call and every sign-in answers 401
  slow       every answer comes later than the agent's request timeout
  truncate   answers are cut off in the middle of their body (the connection closes)
  rotation   a secret and the managed account's password change between two refreshes
  enospc     a file secret grows beyond what the volume can hold

Pass, for each: the reader never sees a partial or unknown file; while the fault lasts the last
good generation stays in place and `.ps-result.json` says what failed; the first refresh after
the fault ends succeeds; the agent never holds more than one session and leaves none open; its
CPU stays low while Password Safe is down. Needs root (it mounts the tmpfs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lib import (  # noqa: E402
    API_KEY, Emulator, Fail, agent_env, check, keep_logs, process_cpu_seconds, scratch_dir, seed_yaml,
    terminate,
)

# Long values: a partial write would show as a value of the wrong length. Fake, never printed.
DB = ["PSCANARY-secret-pw-db-" + "a" * 3000, "PSCANARY-secret-pw-db-" + "b" * 3100]
CFG = ["PSCANARY-secret-text-cfg-" + "c" * 4000]
BLOB = ["PSCANARY-secret-file-blob-" + "d" * 8000, "PSCANARY-secret-file-blob-" + "e" * 9000]
HUGE_BLOB = "PSCANARY-secret-file-blob-" + "f" * 1_500_000
ACCOUNT = ["PSCANARY-account-pw-1", "PSCANARY-account-pw-2"]
ALL_VALUES = DB + CFG + BLOB + ACCOUNT + [HUGE_BLOB]
VOLUME_SIZE = "1m"

SEED = seed_yaml([
    f'{{title: db, type: credential, username: app, password: "{DB[0]}"}}',
    f'{{title: cfg, type: text, text: "{CFG[0]}"}}',
    f'{{title: blob, type: file, file_name: blob.bin, content: "{BLOB[0]}"}}',
], ACCOUNT[0])

ALLOWED = {"db": DB, "cfg": CFG, "blob": BLOB, "account": ACCOUNT}


# ------------------------------------------------------------------------------------ reader

def reader_main(root: str, out: str) -> int:
    """Reads every output continuously, through its top-level link and through one opened
    `..data`, until SIGTERM; writes counts to `out`. Never prints a value."""
    stop = False

    def on_term(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    allowed = {name: {v.encode() for v in values} for name, values in ALLOWED.items()}
    stats = {"reads": 0, "bad": 0, "enoent": 0, "bad_detail": []}

    def judge(name: str, data: bytes) -> None:
        stats["reads"] += 1
        if data not in allowed[name]:
            stats["bad"] += 1
            if len(stats["bad_detail"]) < 20:
                stats["bad_detail"].append(f"{name}: {len(data)} bytes, not a whole value")

    rootp = Path(root)
    while not stop:
        for name in allowed:
            try:
                with open(rootp / name, "rb") as f:
                    judge(name, f.read())
            except FileNotFoundError:
                stats["enoent"] += 1
        try:
            fd = os.open(rootp / "..data", os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            stats["enoent"] += 1
            continue
        try:
            for name in allowed:
                try:
                    g = os.open(name, os.O_RDONLY, dir_fd=fd)
                except FileNotFoundError:
                    stats["enoent"] += 1
                    continue
                with os.fdopen(g, "rb") as f:
                    judge(name, f.read())
        finally:
            os.close(fd)
    Path(out).write_text(json.dumps(stats))
    return 0


# ------------------------------------------------------------------------------------ driver

class Run:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args = args
        self.work = work
        self.failures: list[str] = []
        self.figures: list[str] = []
        self.root = work / "volume"
        self.max_sessions = 0
        self.results: list[dict] = []
        self.last_result_time = ""
        self.agent: subprocess.Popen | None = None
        self.reader: subprocess.Popen | None = None
        self.mounted = False
        (work / "seed.yaml").write_text(SEED)
        self.emu = Emulator(args.emulator, work / "seed.yaml", work)

    # -- set-up and tear-down

    def mount(self) -> None:
        if os.geteuid() != 0:
            raise Fail("watch-faults mounts a small tmpfs for the output volume and needs root")
        self.root.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={VOLUME_SIZE},mode=0755", "tmpfs",
                        str(self.root)], check=True)
        self.mounted = True

    def start(self) -> None:
        self.mount()
        self.emu.start()
        config = {
            "version": 1,
            "passwordSafe": {"url": self.emu.base_url, "apiVersion": "3.1"},
            "root": str(self.root),
            "secrets": [
                {"name": "db", "path": "team/app/db"},
                {"name": "cfg", "path": "team/app/cfg"},
                {"name": "blob", "path": "team/app/blob"},
            ],
            "accounts": [{"name": "account", "account": "db-prod/svc_app"}],
            "refresh": {"intervalSeconds": self.args.interval, "jitterPercent": 0},
        }
        env = agent_env(self.emu, config, {
            "PS_RETRY_BUDGET_SECONDS": str(self.args.budget),
            "PS_REQUEST_TIMEOUT_SECONDS": str(self.args.request_timeout),
        })
        self.agent_log = self.work / "agent.log"
        self.agent = subprocess.Popen([self.args.agent, "watch"], env=env,
                                      stdout=open(self.agent_log, "w"), stderr=subprocess.STDOUT)
        first = self.next_result(after="", timeout=30)
        if not first["ok"]:
            raise Fail(f"the first refresh failed: {first}")
        self.reader_out = self.work / "reader.json"
        self.reader = subprocess.Popen([sys.executable, __file__, "--reader", str(self.root),
                                        str(self.reader_out)])

    def stop(self) -> None:
        terminate(self.reader, 30)
        terminate(self.agent, 60)
        self.emu.stop()
        if self.mounted:
            subprocess.run(["umount", str(self.root)], check=False)

    # -- observation

    def result(self) -> dict | None:
        try:
            return json.loads((self.root / ".ps-result.json").read_text())
        except (OSError, ValueError):
            return None

    def generation(self) -> str:
        return os.readlink(self.root / "..data")

    def poll_sessions(self) -> None:
        if self.emu.proc is None:
            return
        try:
            self.max_sessions = max(self.max_sessions, self.emu.state()["sessions_open"])
        except (OSError, Fail):
            pass

    def next_result(self, after: str, timeout: float) -> dict:
        """Waits for a result written after the one timed `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.result()
            if r and r["time"] > after:
                self.last_result_time = r["time"]
                self.results.append(r)
                return r
            self.poll_sessions()
            if self.agent and self.agent.poll() is not None:
                raise Fail(f"the agent exited with {self.agent.returncode}")
            time.sleep(0.05)
        raise Fail(f"no refresh result within {timeout:.0f} s")

    def hold(self, seconds: float, tick=None) -> list[dict]:
        """Collects results for `seconds`, calling `tick()` after each."""
        out = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                r = self.next_result(self.last_result_time, timeout=max(end - time.monotonic(), 0.05))
            except Fail as e:
                if "no refresh result" in str(e):
                    break
                raise
            out.append(r)
            if tick:
                tick()
        return out

    def failed_result(self, timeout: float) -> dict:
        """Waits for the next failed result (a refresh that just ended during the fault)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.next_result(self.last_result_time, timeout=max(deadline - time.monotonic(), 0.05))
            if not r["ok"]:
                return r

    @staticmethod
    def says(result: dict, text: str) -> bool:
        errors = [result.get("error") or ""] + [o.get("error") or "" for o in result["outputs"]]
        return any(text in e for e in errors)

    # -- one failing fault: inject, hold, see failures, end it right after a failed refresh, and
    #    the next refresh must succeed

    def failing_fault(self, name: str, inject, clear, expect: list[str], down: bool = False) -> None:
        a = self.args
        gen = self.generation()
        cpu0, t0 = process_cpu_seconds(self.agent.pid), time.monotonic()
        inject()
        # Several refresh intervals, and at least two failed refreshes (a slow refresh can take
        # longer than an interval).
        held = self.hold(a.intervals * a.interval)
        while sum(not r["ok"] for r in held) < 1:
            held.append(self.failed_result(timeout=a.interval * 4 + a.budget * 4 + 10))
        # End the fault right after a refresh failed, so the next one starts after it.
        held.append(self.failed_result(timeout=a.interval * 4 + a.budget * 4 + 10))
        gen_during = self.generation()
        cpu = process_cpu_seconds(self.agent.pid) - cpu0
        wall = time.monotonic() - t0
        clear()
        recovered = self.next_result(self.last_result_time, timeout=a.interval * 4 + a.budget * 4 + 10)
        failed = [r for r in held if not r["ok"]]
        check(len(failed) >= 2, f"{name}: {len(failed)} refreshes failed while the fault lasted "
              f"({len(held)} in {wall:.1f} s)", self.failures)
        named = [r for r in failed if any(self.says(r, t) for t in expect)]
        check(len(named) == len(failed), f"{name}: .ps-result.json names the failure in every failed "
              f"refresh ({' | '.join(expect)})", self.failures)
        if failed and len(named) != len(failed):
            odd = next(r for r in failed if r not in named)
            print(f"      e.g. {json.dumps({k: odd[k] for k in ('error', 'outputs')})[:600]}")
        check(gen_during == gen, f"{name}: the last good generation stayed in place", self.failures)
        check(recovered["ok"], f"{name}: the first refresh after the fault succeeded", self.failures)
        share = 100 * cpu / wall if wall else 0.0
        if down:
            check(share <= a.max_cpu_percent, f"{name}: agent CPU {cpu:.3f} s over {wall:.1f} s of "
                  f"fault = {share:.2f} % (limit {a.max_cpu_percent} %)", self.failures)
        sample = next((e for r in failed for e in [r.get("error")] + [o.get("error") for o in r["outputs"]]
                       if e), "")
        self.figures.append(f"{name}: {len(failed)} failed refreshes in {wall:.1f} s, agent CPU "
                            f"{share:.2f} %, recovered: {recovered['ok']}; e.g. `{sample[:160]}`")

    # -- the faults

    def outage(self) -> None:
        def inject():
            self.emu.proc.kill()
            self.emu.proc.wait()
            self.emu.proc = None

        self.failing_fault("outage", inject, self.emu.start,
                           ["network error", "sign-in to Password Safe failed"], down=True)

    def unauthorized(self) -> None:
        a = self.args
        # Sessions expire at every refresh: each refresh gets 401, signs in again, succeeds.
        before = self.emu.state()["calls"]["POST auth/signappin"]
        results = []
        for _ in range(a.intervals):
            self.emu.faults({"expire_sessions": True})
            results.append(self.next_result(self.last_result_time, timeout=a.interval * 4 + 10))
        sign_ins = self.emu.state()["calls"]["POST auth/signappin"] - before
        check(all(r["ok"] for r in results) and sign_ins >= a.intervals,
              f"401 (session expired): {sum(r['ok'] for r in results)} of {len(results)} refreshes "
              f"succeeded after signing in again ({sign_ins} sign-ins)", self.failures)
        self.poll_sessions()
        # Every call and every sign-in answers 401.
        big = 1_000_000
        routes = ["GET secrets-safe/secrets", "GET managedaccounts", "POST auth/signappin"]
        self.failing_fault(
            "401", lambda: self.emu.faults({"fail": [{"route": r, "status": 401, "count": big}
                                                      for r in routes]}),
            lambda: self.emu.faults({"fail": [{"route": r, "status": 401, "count": 0} for r in routes]}),
            ["authentication failed"])

    def slow(self) -> None:
        delay = int((self.args.request_timeout + 0.5) * 1000)
        self.failing_fault("slow", lambda: self.emu.faults({"latency_ms": delay}),
                           lambda: self.emu.faults({"latency_ms": 0}),
                           ["timed out", "network error"], down=True)

    def truncate(self) -> None:
        routes = ["GET secrets-safe/secrets", "GET managedaccounts"]
        self.failing_fault(
            "truncate",
            lambda: self.emu.faults({"truncate": [{"route": r, "count": 1_000_000} for r in routes]}),
            lambda: self.emu.faults({"truncate": [{"route": r, "count": 0} for r in routes]}),
            ["network error"], down=True)

    def rotation(self) -> None:
        a = self.args
        ok = 0
        for i in range(a.intervals):
            db, acct = DB[(i + 1) % 2], ACCOUNT[(i + 1) % 2]
            gen = self.generation()
            self.emu.put_secret({"path": "team/app", "title": "db", "value": db})
            self.emu.put_secret({"system": "db-prod", "account": "svc_app", "password": acct})
            # The refresh in progress may have read before the change: wait for one that did not.
            for _ in range(3):
                r = self.next_result(self.last_result_time, timeout=a.interval * 4 + 10)
                if r["ok"] and (self.root / "db").read_bytes() == db.encode():
                    break
            fresh = ((self.root / "db").read_bytes() == db.encode()
                     and (self.root / "account").read_bytes() == acct.encode())
            ok += bool(r["ok"] and r["changed"] and fresh and self.generation() != gen)
        check(ok == a.intervals, f"rotation: {ok} of {a.intervals} rotations were written by the next "
              "refresh as a new generation", self.failures)
        self.figures.append(f"rotation: {ok} of {a.intervals} rotations switched in by the next refresh")

    def enospc(self) -> None:
        self.failing_fault(
            "enospc",
            lambda: self.emu.put_secret({"path": "team/app", "title": "blob", "value": HUGE_BLOB}),
            lambda: self.emu.put_secret({"path": "team/app", "title": "blob", "value": BLOB[1]}),
            ["No space left on device"])
        check((self.root / "blob").read_bytes() == BLOB[1].encode(),
              "enospc: the recovered refresh wrote the new file", self.failures)

    # -- the end

    def finish(self) -> None:
        self.poll_sessions()
        self.agent.send_signal(signal.SIGTERM)
        code = self.agent.wait(60)
        check(code == 0, f"SIGTERM: the agent exited {code}", self.failures)
        st = self.emu.state()
        check(st["sessions_open"] == 0 and st["requests_open"] == 0,
              f"no session or request left open (sessions_open {st['sessions_open']}, requests_open "
              f"{st['requests_open']})", self.failures)
        check(self.max_sessions <= 1, f"never more than one session at a time (max seen "
              f"{self.max_sessions})", self.failures)
        self.reader.send_signal(signal.SIGTERM)
        self.reader.wait(30)
        stats = json.loads(self.reader_out.read_text())
        check(stats["reads"] > 1000 and stats["bad"] == 0,
              f"the reader never saw a partial or unknown file ({stats['reads']} reads, {stats['bad']} "
              f"bad, {stats['enoent']} ENOENT while a switch was under way)", self.failures)
        for d in stats["bad_detail"]:
            print(f"      {d}")
        log = self.agent_log.read_text(errors="replace")
        check(not any(v in log for v in ALL_VALUES) and API_KEY not in log,
              "no value or key in the agent's log", self.failures)
        self.figures.append(f"reader: {stats['reads']} reads, {stats['bad']} partial, {stats['enoent']} "
                            f"ENOENT; max sessions {self.max_sessions}; at the end sessions_open "
                            f"{st['sessions_open']}, requests_open {st['requests_open']}")


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--reader":
        return reader_main(sys.argv[2], sys.argv[3])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", required=True)
    p.add_argument("--emulator", required=True)
    p.add_argument("--interval", type=int, default=1, help="refresh interval, seconds")
    p.add_argument("--intervals", type=int, default=3, help="refresh intervals each fault lasts")
    p.add_argument("--budget", type=int, default=2, help="the agent's retry budget, seconds")
    p.add_argument("--request-timeout", type=int, default=1, help="the agent's request timeout, seconds")
    p.add_argument("--max-cpu-percent", type=float, default=5.0,
                   help="most agent CPU, in %% of one core, while Password Safe is down")
    p.add_argument("--fault", action="append",
                   choices=["outage", "401", "slow", "truncate", "rotation", "enospc"])
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    work = scratch_dir("ps-watch-faults.")
    run = Run(args, work)
    steps = {"outage": run.outage, "401": run.unauthorized, "slow": run.slow, "truncate": run.truncate,
             "rotation": run.rotation, "enospc": run.enospc}
    try:
        run.start()
        for name in args.fault or list(steps):
            print(f"--- {name}", flush=True)
            steps[name]()
        run.finish()
    except Fail as e:
        run.failures.append(str(e))
        print(f"FAIL  {e}")
    finally:
        run.stop()
        keep_logs(work, "watch-faults")
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for f in run.figures:
        print(f"figures  {f}")
    if run.failures:
        print(f"\n{len(run.failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
