"""Process plumbing for bench/compare: spawning a client and accounting for it (wall time to
exit and to its last file in place, CPU, peak RSS), the emulator's traffic counters over one
keep-alive connection, and toxiproxy.

Loopback only; secret values are never printed.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import select
import ssl
import struct
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# inotify, for "last file in place": every client puts its files in place with renames into
# its output root (ps-agent its `..data` link and the top-level links to it, the others each
# file), so the last IN_MOVED_TO of one of those names on the root is when the last file
# appeared to a reader. Other names are ignored (ps-agent's result and ready files, written
# after sign-out).
_libc = ctypes.CDLL(None, use_errno=True)
IN_MOVED_TO = 0x00000080
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")


class RenameWatch:
    """Watches one directory for renames of `names` into it; `last` is the perf_counter() of
    the latest."""

    def __init__(self, root: Path, names: set[str]):
        self.names = {n.encode() for n in names}
        self.fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if _libc.inotify_add_watch(self.fd, str(root).encode(), IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), f"inotify_add_watch {root}")
        self.last: float | None = None
        self.count = 0
        self._stop = os.pipe()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            ready, _, _ = select.select([self.fd, self._stop[0]], [], [])
            now = time.perf_counter()
            if self.fd in ready:
                try:
                    data = os.read(self.fd, 65536)
                except BlockingIOError:
                    data = b""
                off = 0
                while off + _EVENT.size <= len(data):
                    _, mask, _, length = _EVENT.unpack_from(data, off)
                    name = data[off + _EVENT.size:off + _EVENT.size + length].rstrip(b"\0")
                    off += _EVENT.size + length
                    if mask & IN_MOVED_TO and name in self.names:
                        self.last = now
                        self.count += 1
            if self._stop[0] in ready:
                return

    def close(self) -> None:
        os.write(self._stop[1], b"x")
        self._thread.join()
        for fd in (self.fd, *self._stop):
            os.close(fd)


@dataclass
class Run:
    """One client process: wall times in ms from just before spawn, CPU in ms."""

    code: int
    wall_ms: float
    written_ms: float | None
    cpu_ms: float
    stderr: str = ""
    traffic: dict = field(default_factory=dict)


def spawn(argv: list[str], env: dict[str, str], log: Path) -> int:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            return os.posix_spawn(argv[0], argv, env, file_actions=[
                (os.POSIX_SPAWN_DUP2, devnull, 0), (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2), (os.POSIX_SPAWN_CLOSE, fd),
                (os.POSIX_SPAWN_CLOSE, devnull)])
        finally:
            os.close(devnull)
    finally:
        os.close(fd)


def run_once(argv: list[str], env: dict[str, str], root: Path, names: set[str], log: Path) -> Run:
    """Runs one client to completion; its output root must exist (it is watched for `names`)."""
    watch = RenameWatch(root, names)
    t0 = time.perf_counter()
    pid = spawn(argv, env, log)
    _, status, usage = os.wait4(pid, 0)
    t1 = time.perf_counter()
    watch.close()
    return Run(
        code=os.waitstatus_to_exitcode(status),
        wall_ms=(t1 - t0) * 1000,
        written_ms=None if watch.last is None else (watch.last - t0) * 1000,
        cpu_ms=(usage.ru_utime + usage.ru_stime) * 1000,
        stderr=log.read_text(errors="replace"),
    )


def max_rss_kib(argv: list[str], env: dict[str, str], log: Path) -> int:
    """Peak RSS of one run, from /usr/bin/time. Not from this process's wait4: a child spawned
    from it shares or copies its memory until exec, and the kernel carries that high-water mark
    (this interpreter's, tens of MiB) across exec into the child's ru_maxrss. GNU time forks
    from a process of about 2 MiB, below every client measured here."""
    out = log.with_suffix(".rss")
    pid = spawn(["/usr/bin/time", "-f", "%M", "-o", str(out), *argv], env, log)
    _, status, _ = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{argv[0]} failed under /usr/bin/time: {log.read_text(errors='replace')[-800:]}")
    return int(out.read_text().split()[-1])


class Operator:
    """The emulator's operator endpoints over one kept-alive connection, so that reading the
    counters between two runs adds no connection or handshake to them."""

    def __init__(self, port: int, ca: Path):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=str(ca))
        self.conn: http.client.HTTPSConnection | None = None

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)
            try:
                data = json.dumps(body).encode() if body is not None else None
                self.conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
                r = self.conn.getresponse()
                payload = r.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                continue
            if r.status != 200:
                raise RuntimeError(f"{method} {path}: HTTP {r.status}: {payload[:300]!r}")
            return json.loads(payload)
        raise AssertionError("unreachable")

    def state(self) -> dict:
        return self.call("GET", "/_emulator/state")

    def traffic(self) -> dict:
        return self.state()["traffic"]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def traffic_delta(before: dict, after: dict) -> dict:
    keys = ("tcp_accepted", "tls_handshakes", "tls_resumed", "http_requests")
    return {k: after[k] - before[k] for k in keys}


class Toxiproxy:
    """toxiproxy-server on 127.0.0.1, with one proxy per round-trip time: a latency toxic of
    RTT/2 on each direction, so a request and its answer cross RTT. The proxy accepts the TCP
    connection itself, so a TCP handshake costs no round trip through it; TLS and HTTP do."""

    def __init__(self, binary: str, work: Path):
        self.port = free_port()
        self.log = open(work / "toxiproxy.log", "w")
        self.proc = subprocess.Popen([binary, "-host", "127.0.0.1", "-port", str(self.port)],
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            try:
                self._api("GET", "/version")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("toxiproxy did not start: " + (work / "toxiproxy.log").read_text()[-1000:])
                time.sleep(0.05)

    def _api(self, method: str, path: str, body: dict | None = None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.read()

    def add(self, name: str, upstream_port: int, rtt_ms: int) -> int:
        """A proxy to 127.0.0.1:upstream_port with `rtt_ms` of round trip; returns its port."""
        port = free_port()
        self._api("POST", "/proxies", {"name": name, "listen": f"127.0.0.1:{port}",
                                        "upstream": f"127.0.0.1:{upstream_port}", "enabled": True})
        half = rtt_ms // 2
        if half:
            for stream in ("upstream", "downstream"):
                self._api("POST", f"/proxies/{name}/toxics", {
                    "name": f"latency_{stream}", "type": "latency", "stream": stream,
                    "toxicity": 1.0, "attributes": {"latency": half, "jitter": 0}})
        return port

    def stop(self) -> None:
        terminate(self.proc)
        self.log.close()


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def terminate(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def proc_cpu_ms(pid: int) -> float:
    """utime + stime of a live process from /proc/PID/stat (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def proc_status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def median(values: list[float]) -> float:
    return percentile(values, 50)
