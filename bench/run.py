"""pixelgate benchmark: requests/s and the latency the gateway adds on /v1/images/generations.

It prints figures; it is not a timed test. For every scenario it

  1. starts bench/fast_upstream.py (an emulated OpenAI-compatible upstream answering a
     precomputed PNG-in-base64 reply, optionally after --delay seconds),
  2. loads the upstream directly with wrk (the baseline),
  3. starts a fresh `pixelgate serve` (its own temp data dir, SQLite, N workers) whose one
     channel points at that upstream, checks one answer end to end (the image comes back
     byte-identical, uncompressed), warms it up, then loads it with wrk at the same concurrency,
     sampling the memory (PSS) of the gateway's processes every 50 ms from /proc,
  4. reports requests/s, p50/p99 latency, the latency the gateway adds (gateway minus direct),
     errors (HTTP status >= 400 and socket errors/timeouts), the gateway's peak memory, and
     how the machine's CPU time was split between the gateway, the upstream and wrk.

Load generator: wrk (closed loop: N connections, each sends its next request when the last
answer arrived), latency percentiles from its histogram (1 us resolution) via a Lua done()
hook. Everything runs on this machine, so the gateway, the upstream and wrk share its cores.

    .venv/bin/python bench/run.py                      # every default scenario, ~5 minutes
    .venv/bin/python bench/run.py --quick              # shorter runs, a smoke check (~2-3 minutes)
    .venv/bin/python bench/run.py --scenario small-c1 --scenario large-c16 --duration 20
    .venv/bin/python bench/run.py --list               # the scenarios
    make bench ARGS="--quick"

Results also go to bench/out/results.json (and --markdown prints the table as Markdown).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
ADMIN_KEY = "pg-bench-admin-key-0123456789abcdefghijklmnopqrstuv"
MODEL = "bench-image"
PATH = "/v1/images/generations"
SMALL = 4096            # bytes of PNG: a few KB
LARGE = 1_100_000       # bytes of PNG: ~1.47 MB of base64
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    concurrency: int
    workers: int
    image_bytes: int = SMALL
    delay: float = 0.0
    stagger: bool = False
    about: str = ""
    default: bool = True
    config: tuple[str, ...] = ()
    """Lines added to the gateway's config file for this scenario."""
    response_format: str = "b64_json"
    """url: the gateway stores each image and answers a link (the check fetches it)."""
    storage: str = "local"
    """local segment files, or s3: a SeaweedFS started by the benchmark on loopback."""


SCENARIOS = [
    Scenario("small-c1", 1, 1, about="latency added at concurrency 1 (1 worker)"),
    Scenario("small-c64", 64, 2, about="throughput, small images, 2 workers"),
    Scenario("small-c256", 256, 2, about="throughput, small images, 2 workers"),
    Scenario("large-c16", 16, 2, image_bytes=LARGE, about="~1.5 MB base64 images, 2 workers"),
    Scenario("large-c16-keep-all", 16, 2, image_bytes=LARGE, config=('keep_images = "all"',),
             about="as large-c16, every answered image also written to disk (keep_images = all)"),
    Scenario("url-c16-local", 16, 2, response_format="url",
             about="small images answered by link: stored on local segments, 2 workers"),
    Scenario("url-c16-s3", 16, 2, response_format="url", storage="s3",
             about="as url-c16-local, stored in S3 (SeaweedFS on loopback)"),
    Scenario("slow-c1000", 1000, 2, delay=2.0, stagger=True,
             about="upstream answers after 2 s, 1,000 in flight, arrivals spread out"),
    Scenario("slow-c1000-burst", 1000, 2, delay=2.0,
             about="as slow-c1000, but all 1,000 requests arrive at once every 2 s"),
    # Extra scenarios, run only when named with --scenario:
    Scenario("small-c1-w2", 1, 2, default=False, about="as small-c1 with 2 workers"),
    Scenario("small-c64-w1", 64, 1, default=False, about="as small-c64 with 1 worker"),
    Scenario("large-c1", 1, 1, image_bytes=LARGE, default=False, about="latency added, 1.5 MB images"),
    Scenario("large-c64", 64, 2, image_bytes=LARGE, default=False, about="1.5 MB images at c=64"),
    Scenario("slow-c1000-w1", 1000, 1, delay=2.0, stagger=True, default=False,
             about="as slow-c1000 with 1 worker"),
    # wrk connects all 10,000 at once and the staggered ones send their first request up to 20 s
    # later: the gateway's guard against clients that connect and send nothing (10 s) would
    # close them, so it is lengthened here.
    Scenario("slow-c10000", 10000, 2, delay=20.0, stagger=True, default=False,
             config=("header_timeout_seconds = 30",),
             about="upstream answers after 20 s, 10,000 in flight, arrivals spread out (~5 minutes)"),
]
BY_NAME = {s.name: s for s in SCENARIOS}


# ---------------------------------------------------------------------------------------------
# processes: every child gets its own process group, killed by id on exit (even on Ctrl-C)

class Children:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, argv: list[str], **kwargs: Any) -> subprocess.Popen:
        proc = subprocess.Popen(argv, start_new_session=True, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 10.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left in its group (uvicorn workers, spawn helpers)
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if proc.poll() is None:
            proc.wait(5)
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.procs)):
            self.stop(proc, grace=5.0)


CHILDREN = Children()
TEMP_DIRS: list[Path] = []


def _on_signal(signum, frame):  # turn SIGTERM/SIGHUP into the same path as Ctrl-C
    raise KeyboardInterrupt


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process {proc.args} exited with {proc.returncode}\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s")


# ---------------------------------------------------------------------------------------------
# /proc readings

def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat[stat.rfind(b")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def worker_pids(root: int) -> list[int]:
    """The gateway's worker processes (forked by the supervisor), or the root itself with one worker."""
    return sorted(descendants(root)[1:]) or [root]


def pss_bytes(pid: int) -> int:
    """A process's proportional set size: its own pages, plus its share of those it shares (the
    forked workers share the supervisor's imported code; RSS would count those pages once per
    process, as if each had its own)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        pass
    return 0


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as fh:
            return int(fh.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


def self_cpu() -> float:
    """CPU seconds of this script itself (its sampler thread included)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


class InFlightSampler(threading.Thread):
    """Polls the emulated upstream's GET /stats: how many requests it holds (--delay) at once."""

    def __init__(self, port: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{port}/stats"
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.peak = 0
        self._halt = threading.Event()

    def _get(self, suffix: str = "") -> dict:
        with urllib.request.urlopen(self.url + suffix, timeout=2) as resp:
            return json.loads(resp.read())

    def run(self) -> None:
        self._get("?reset")
        start = time.monotonic()
        while not self._halt.wait(self.interval):
            try:
                stats = self._get()
            except OSError:
                continue
            self.samples.append((time.monotonic() - start, stats["in_flight"]))
            self.peak = max(self.peak, stats["peak_in_flight"])

    def stop(self) -> None:
        self._halt.set()
        self.join(3)

    def steady(self, after: float) -> float:
        """Mean requests in flight over the samples taken `after` seconds into the run."""
        values = [v for t, v in self.samples if t >= after]
        return sum(values) / len(values) if values else 0.0


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores, from /proc/stat."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])       # without guest time, which is already in user
    return (total - idle) / TICK, total / TICK


def other_load(seconds: float = 1.0) -> float:
    """Cores kept busy by everything on the machine over `seconds` (nothing of ours runs)."""
    b0, t0 = machine_cpu()
    time.sleep(seconds)
    b1, t1 = machine_cpu()
    return (b1 - b0) / max(1e-9, t1 - t0) * (os.cpu_count() or 1)


def wait_quiet(limit: float, patience: float) -> float:
    """Wait (up to `patience` s) until other processes use less than `limit` cores."""
    deadline = time.monotonic() + patience
    load = other_load()
    told = False
    while load > limit and time.monotonic() < deadline:
        if not told:
            print(f"  waiting for the machine to quieten (other processes use {load:.2f} cores)", flush=True)
            told = True
        load = other_load()
    return load


class MemorySampler(threading.Thread):
    """Sum of PSS over a process tree every `interval` seconds; the tree is re-read each second."""

    def __init__(self, root: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.pids = descendants(root)
        self.peak = 0
        self.samples = 0
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.peak, self.samples = 0, 0

    def current(self) -> int:
        return sum(pss_bytes(p) for p in self.pids)

    def run(self) -> None:
        last_tree = time.monotonic()
        while not self._halt.wait(self.interval):
            if time.monotonic() - last_tree > 1.0:
                self.pids, last_tree = descendants(self.root), time.monotonic()
            value = self.current()
            with self._lock:
                self.peak = max(self.peak, value)
                self.samples += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(2)


# ---------------------------------------------------------------------------------------------
# wrk

LUA = """
wrk.method = "POST"
wrk.body = '%(body)s'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept-Encoding"] = "gzip, deflate"
%(auth)s
%(stagger)s
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,' ..
    '"write":%%d,"status":%%d,"timeout":%%d,"p50":%%.0f,"p90":%%.0f,"p99":%%.0f,"p999":%%.0f,' ..
    '"mean":%%.1f,"min":%%.0f,"max":%%.0f}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.min, latency.max))
end
"""


@dataclasses.dataclass
class LoadResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    errors_status: int
    errors_socket: int
    mbytes_read: float
    wrk_cpu_s: float

    @property
    def errors(self) -> int:
        return self.errors_status + self.errors_socket


STAGGER = """
-- Spread the connections' first requests uniformly over %(ms)d ms, so that with an upstream
-- answering after a fixed delay the arrivals stay spread out instead of coming in one wave.
local first = %(n)d
delay = function()
  if first > 0 then
    first = first - 1
    return math.random(0, %(ms)d)
  end
  return 0
end
"""


def lua_script(tmp: Path, name: str, body: dict, token: str | None, stagger_n: int = 0,
               stagger_ms: int = 0) -> Path:
    path = tmp / f"{name}.lua"
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"' if token else ""
    stagger = STAGGER % {"n": stagger_n, "ms": stagger_ms} if stagger_n else ""
    path.write_text(LUA % {"body": json.dumps(body, separators=(",", ":")), "auth": auth,
                           "stagger": stagger})
    return path


def run_wrk(url: str, script: Path, concurrency: int, seconds: float, threads: int,
            timeout: float) -> LoadResult:
    threads = max(1, min(threads, concurrency))
    argv = ["wrk", f"-t{threads}", f"-c{concurrency}", f"-d{max(1, round(seconds))}s",
            f"--timeout={max(1, round(timeout))}s", "-s", str(script), url]
    proc = CHILDREN.start(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out = proc.stdout.read().decode(errors="replace")  # type: ignore[union-attr]
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if proc.returncode is None:  # interrupted: end it now
            CHILDREN.stop(proc, grace=1.0)
        if proc in CHILDREN.procs:
            CHILDREN.procs.remove(proc)
    line = next((l for l in out.splitlines() if l.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {' '.join(argv)}\n{out[-2000:]}")
    d = json.loads(line[len("BENCH_JSON "):])
    secs = d["duration_us"] / 1e6
    return LoadResult(
        requests=d["requests"], seconds=secs, rps=d["requests"] / secs if secs else 0.0,
        p50_ms=d["p50"] / 1000, p90_ms=d["p90"] / 1000, p99_ms=d["p99"] / 1000,
        p999_ms=d["p999"] / 1000, mean_ms=d["mean"] / 1000, max_ms=d["max"] / 1000,
        errors_status=d["status"], errors_socket=d["connect"] + d["read"] + d["write"] + d["timeout"],
        mbytes_read=d["bytes"] / 1e6, wrk_cpu_s=usage.ru_utime + usage.ru_stime)


def ensure_wrk(install: bool) -> str:
    path = shutil.which("wrk")
    if path:
        return path
    how = "apt-get update && apt-get install -y wrk"
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"wrk not found; installing it: {how}", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=False)
        path = shutil.which("wrk")
        if path:
            return path
    sys.exit(f"bench: this benchmark needs wrk (Debian package 'wrk'). Install it with:\n    {how}")


def version_of(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip().splitlines()[0]
    except Exception:
        return "?"


# ---------------------------------------------------------------------------------------------
# one scenario

@dataclasses.dataclass
class Outcome:
    scenario: Scenario
    png_bytes: int
    b64_bytes: int
    direct: LoadResult
    gateway: LoadResult
    idle_pss: int
    peak_pss: int
    pss_samples: int
    cpu_gateway: float
    cpu_upstream: float
    cpu_upstream_direct: float
    cpu_other: float
    cpu_other_direct: float
    cpu_workers: list[float]
    check: str
    conns_per_worker: list[int] = dataclasses.field(default_factory=list)
    code: str = ""
    upstream_peak: int = 0
    upstream_steady: float = 0.0
    upstream_peak_direct: int = 0
    upstream_steady_direct: float = 0.0
    idle_workers: list[tuple[int, int]] = dataclasses.field(default_factory=list)
    """(PSS, RSS) in bytes of each worker at idle."""
    nginx: LoadResult | None = None
    """The same load through nginx (a C reverse proxy, same workers): what any proxy reaches here."""

    @property
    def added_p50(self) -> float:
        return self.gateway.p50_ms - self.direct.p50_ms

    @property
    def added_p99(self) -> float:
        return self.gateway.p99_ms - self.direct.p99_ms

    @property
    def in_flight(self) -> float:
        """Little's law: mean requests in flight = throughput x mean latency."""
        return self.gateway.rps * self.gateway.mean_ms / 1000

    @property
    def per_request_pss(self) -> float:
        return max(0, self.peak_pss - self.idle_pss) / max(1, self.scenario.concurrency)


NGINX_CONF = """daemon off;
worker_processes %(workers)d;
error_log %(tmp)s/nginx-error.log warn;
pid %(tmp)s/nginx.pid;
events { worker_connections %(connections)d; }
http {
  access_log off;
  client_body_temp_path %(tmp)s/nginx-body;
  proxy_temp_path %(tmp)s/nginx-proxy;
  upstream vendor { server 127.0.0.1:%(upstream)d; keepalive %(keepalive)d; }
  server {
    listen 127.0.0.1:%(port)d reuseport;
    location / {
      proxy_pass http://vendor;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;            # pass the answer on as it arrives, as the gateway does
      proxy_request_buffering off;
      proxy_buffer_size 1m;           # read 1 MiB at a time: with the default 4-8 KB it makes half the rate
      proxy_buffers 4 1m;
      proxy_busy_buffers_size 2m;
    }
  }
}
"""


def start_nginx(port: int, upstream_port: int, sc: Scenario, tmp: Path) -> subprocess.Popen:
    """nginx as a plain reverse proxy to the upstream: no auth, no parsing, no records; the
    throughput any proxy reaches on this machine, where it shares the cores with wrk and the
    upstream as the gateway does."""
    conf = tmp / f"nginx-{port}.conf"
    conf.write_text(NGINX_CONF % {"workers": sc.workers, "tmp": tmp, "upstream": upstream_port, "port": port,
                                  "connections": max(1024, 2 * sc.concurrency + 64),
                                  "keepalive": max(16, sc.concurrency)})
    proc = CHILDREN.start([shutil.which("nginx") or "nginx", "-c", str(conf), "-p", str(tmp)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, 30, tmp / "nginx-error.log")
    return proc


def start_upstream(port: int, sc: Scenario, tmp: Path) -> subprocess.Popen:
    log = tmp / f"upstream-{port}.log"
    proc = CHILDREN.start([sys.executable, str(HERE / "fast_upstream.py"), "--port", str(port),
                           "--image-bytes", str(sc.image_bytes), "--delay", str(sc.delay)],
                          stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc, 30, log)
    return proc


class GatewayFailed(RuntimeError):
    """The gateway did not start (or answered the check request wrongly)."""


def snapshot_code(dest: Path) -> str:
    """Copy pixelgate/ to dest/pixelgate (the gateway then runs that copy, so edits made to the
    working tree during a run do not mix versions); returns a short hash of its contents."""
    import hashlib

    shutil.rmtree(dest / "pixelgate", ignore_errors=True)
    shutil.copytree(ROOT / "pixelgate", dest / "pixelgate",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    digest = hashlib.sha1()
    for path in sorted((dest / "pixelgate").rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:10]


def start_gateway(port: int, upstream_port: int, sc: Scenario, tmp: Path,
                  extra_env: dict[str, str], code: Path | None,
                  extra_config: list[str]) -> tuple[subprocess.Popen, Path]:
    work = Path(tempfile.mkdtemp(prefix="gw-", dir=tmp))
    top = ["sandbox = false"]
    config_source = (code or ROOT) / "pixelgate" / "config.py"
    if "unpriced" in config_source.read_text():
        top.append('unpriced = "free"  # the benchmark model has no price; serve it without billing')
    top.extend(sc.config)
    top.extend(extra_config)
    (work / "cfg.toml").write_text("\n".join(top) + f"""

[[channels]]
name = "bench"
provider = "openai-compatible"
base_url = "http://127.0.0.1:{upstream_port}/v1"
api_key = "sk-bench"
models = ["{MODEL}"]
timeout_seconds = 60
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}
    env.update(PIXELGATE_ADMIN_KEY=ADMIN_KEY, PIXELGATE_DATA_DIR=str(work / "data"),
               PIXELGATE_LOG_LEVEL="warning")
    env.update(extra_env)
    if sc.storage == "s3":
        env.update(s3_env())
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(code), env.get("PYTHONPATH")]))
    log = work / "gateway.log"
    exe = ROOT / ".venv" / "bin" / "pixelgate"
    argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "pixelgate"]
    proc = CHILDREN.start(argv + ["--config", "cfg.toml", "serve", "--port", str(port),
                                  "--workers", str(sc.workers)],
                          cwd=work, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", proc, 60, log)
    except RuntimeError as exc:
        raise GatewayFailed(str(exc)) from None
    # uvicorn answers /healthz from the first worker up; give every worker its turn
    deadline = time.monotonic() + 30
    while sc.workers > 1 and len(worker_pids(proc.pid)) < sc.workers and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    return proc, log


_SEAWEED: list = []


def s3_env() -> dict[str, str]:
    """SeaweedFS on loopback, started once for the benchmark's S3 scenarios."""
    if not _SEAWEED:
        from s3_clients import KEY, SECRET, start_seaweed

        endpoint, proc = start_seaweed()
        CHILDREN.procs.append(proc)
        _SEAWEED.append({"PIXELGATE_STORAGE_URL": "s3://bench/gateway", "PIXELGATE_S3_ENDPOINT_URL": endpoint,
                         "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET})
    return _SEAWEED[0]


def check_answer(port: int, body: dict, expected_png: bytes, timeout: float) -> str:
    """One request end to end: 200, not compressed, the image byte-identical to the upstream's."""
    import base64

    req = urllib.request.Request(f"http://127.0.0.1:{port}{PATH}", data=json.dumps(body).encode(),
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}",
                                          "Content-Type": "application/json",
                                          "Accept-Encoding": "gzip, deflate"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            encoding = resp.headers.get("Content-Encoding")
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"HTTP {exc.code}: {exc.read()[:500].decode(errors='replace')}") from None
    if encoding:
        raise RuntimeError(f"the gateway compressed the image answer (Content-Encoding: {encoding})")
    answer = json.loads(raw)
    if "url" in answer["data"][0]:
        with urllib.request.urlopen(answer["data"][0]["url"], timeout=timeout) as resp:
            got = resp.read()
        if got != expected_png:
            raise RuntimeError("the image served by link differs from the upstream's")
        return "ok: 200, the link serves the upstream's image"
    got = base64.b64decode(answer["data"][0]["b64_json"])
    if got != expected_png:
        raise RuntimeError("the gateway's image differs from the upstream's")
    return "ok: 200, uncompressed, image identical"


def run_scenario(sc: Scenario, args: argparse.Namespace, tmp: Path) -> Outcome:
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from fast_upstream import make_png

    png = make_png(sc.image_bytes)
    b64_len = (len(png) + 2) // 3 * 4
    duration = args.duration
    warmup = args.warmup
    # Latency must fit in wrk's timeout, and a warm-up must see at least one slow answer.
    timeout = max(10.0, sc.delay * 5 + 10)
    if sc.delay:
        warmup = max(warmup, sc.delay + 1)
        duration = max(duration, sc.delay * 5)

    up_port, gw_port = free_port(), free_port()
    upstream = start_upstream(up_port, sc, tmp)
    gateway = None
    try:
        upstream_body = {"model": MODEL, "prompt": "a fox", "n": 1, "response_format": "b64_json"}
        client_body = {"model": MODEL, "prompt": "a fox", "response_format": sc.response_format}
        stagger_n = -(-sc.concurrency // max(1, min(args.threads, sc.concurrency))) if sc.stagger else 0
        stagger_ms = int(sc.delay * 1000)
        direct_lua = lua_script(tmp, f"{sc.name}-direct", upstream_body, None, stagger_n, stagger_ms)
        gw_lua = lua_script(tmp, f"{sc.name}-gateway", client_body, ADMIN_KEY, stagger_n, stagger_ms)
        direct_url = f"http://127.0.0.1:{up_port}{PATH}"
        gw_url = f"http://127.0.0.1:{gw_port}{PATH}"

        print(f"  direct  : warm-up {warmup:g} s, run {duration:g} s at c={sc.concurrency}", flush=True)
        run_wrk(direct_url, direct_lua, sc.concurrency, warmup, args.threads, timeout)
        if sc.delay:
            time.sleep(sc.delay + 0.5)
        wait_quiet(args.quiet_cores, args.wait_quiet)
        up_cpu0, m0, self0 = cpu_seconds([upstream.pid]), machine_cpu()[0], self_cpu()
        flight_direct = InFlightSampler(up_port) if sc.delay else None
        if flight_direct:
            flight_direct.start()
        direct = run_wrk(direct_url, direct_lua, sc.concurrency, duration, args.threads, timeout)
        if flight_direct:
            flight_direct.stop()
        cpu_up_direct = cpu_seconds([upstream.pid]) - up_cpu0
        other_direct = (machine_cpu()[0] - m0) - cpu_up_direct - direct.wrk_cpu_s - (self_cpu() - self0)
        if sc.delay:
            time.sleep(sc.delay + 0.5)
        nginx_result = None
        if args.nginx and not sc.delay:
            nginx_port = free_port()
            nginx = start_nginx(nginx_port, up_port, sc, tmp)
            try:
                nginx_url = f"http://127.0.0.1:{nginx_port}{PATH}"
                print(f"  nginx   : {sc.workers} worker(s), warm-up {warmup:g} s, run {duration:g} s", flush=True)
                run_wrk(nginx_url, direct_lua, sc.concurrency, warmup, args.threads, timeout)
                wait_quiet(args.quiet_cores, args.wait_quiet)
                nginx_result = run_wrk(nginx_url, direct_lua, sc.concurrency, duration, args.threads, timeout)
            finally:
                CHILDREN.stop(nginx)

        gateway, gw_log = start_gateway(gw_port, up_port, sc, tmp, args.gateway_env, args.code_dir,
                                        args.config_line)
        try:
            check = check_answer(gw_port, client_body, png, timeout)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise GatewayFailed(f"the check request failed: {exc}\n{gw_log.read_text()[-2000:]}") from None
        sampler = MemorySampler(gateway.pid, 0.05)
        idle = sampler.current()
        sampler.start()
        each = ", ".join(f"{pss_bytes(p) / 2**20:.0f}/{rss_bytes(p) / 2**20:.0f}" for p in sampler.pids)
        idle_workers = [(pss_bytes(p), rss_bytes(p)) for p in worker_pids(gateway.pid)]
        print(f"  gateway : {sc.workers} worker(s), idle PSS {idle / 2**20:.0f} MiB "
              f"(PSS/RSS MiB by process, supervisor first: {each}); "
              f"warm-up {warmup:g} s, run {duration:g} s", flush=True)
        run_wrk(gw_url, gw_lua, sc.concurrency, warmup, args.threads, timeout)
        if sc.delay:
            time.sleep(sc.delay + 0.5)
        wait_quiet(args.quiet_cores, args.wait_quiet)
        pids = descendants(gateway.pid)
        workers = worker_pids(gateway.pid)
        profilers = start_profilers(args, sc, workers, duration)
        conns: list[int] = []
        counter = threading.Timer(min(2.0, duration / 3) + (sc.delay if sc.stagger else 0),
                                  lambda: conns.extend(connections_per_worker(workers, gw_port)))
        counter.daemon = True
        counter.start()
        gw_cpu0, up_cpu0 = cpu_seconds(pids), cpu_seconds([upstream.pid])
        w_cpu0 = [cpu_seconds([w]) for w in workers]
        m0, self0 = machine_cpu()[0], self_cpu()
        sampler.reset()
        flight = InFlightSampler(up_port) if sc.delay else None
        if flight:
            flight.start()
        result = run_wrk(gw_url, gw_lua, sc.concurrency, duration, args.threads, timeout)
        if flight:
            flight.stop()
        cpu_gw, cpu_up = cpu_seconds(pids) - gw_cpu0, cpu_seconds([upstream.pid]) - up_cpu0
        cpu_w = [cpu_seconds([w]) - c for w, c in zip(workers, w_cpu0)]
        other = (machine_cpu()[0] - m0) - cpu_gw - cpu_up - result.wrk_cpu_s - (self_cpu() - self0)
        other -= finish_profilers(profilers)
        sampler.stop()
        counter.cancel()
        if args.keep_logs:
            shutil.copy(gw_log, OUT / f"{sc.name}-gateway.log")
        outcome = Outcome(sc, len(png), b64_len, direct, result, idle, sampler.peak, sampler.samples,
                          cpu_gw, cpu_up, cpu_up_direct, other, other_direct, cpu_w, check)
        outcome.conns_per_worker = conns
        outcome.idle_workers = idle_workers
        outcome.nginx = nginx_result
        if flight and flight_direct:
            ramp = sc.delay * (2.2 if sc.stagger else 1.2)  # the first answers come back after that
            outcome.upstream_peak, outcome.upstream_steady = flight.peak, flight.steady(ramp)
            outcome.upstream_peak_direct = flight_direct.peak
            outcome.upstream_steady_direct = flight_direct.steady(ramp)
        return outcome
    finally:
        if gateway is not None:
            CHILDREN.stop(gateway)
        CHILDREN.stop(upstream)


def disturbance(o: Outcome) -> float:
    """Cores used by processes other than the gateway, the upstream, wrk and this script."""
    return max(o.cpu_other / o.gateway.seconds, o.cpu_other_direct / o.direct.seconds)


def noisy(o: Outcome, limit: float) -> bool:
    return disturbance(o) > limit


def connections_per_worker(workers: list[int], port: int) -> list[int]:
    """Established client connections to the gateway's port held by each worker process."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                next(fh)
                for line in fh:
                    f = line.split()
                    if int(f[1].rsplit(":", 1)[1], 16) == port and f[3] == "01":
                        inodes.add(f[9])
        except OSError:
            pass
    counts = []
    for pid in workers:
        n = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    n += 1
        except OSError:
            pass
        counts.append(n)
    return counts


def start_profilers(args: argparse.Namespace, sc: Scenario, workers: list[int], duration: float):
    """--profile: one py-spy per gateway worker, recording during the measured run."""
    if not args.profile:
        return []
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not os.path.exists(spy):
        print("  (--profile: py-spy not found; `.venv/bin/pip install py-spy`)", flush=True)
        return []
    procs = []
    for i, worker in enumerate(workers):
        out = OUT / f"profile-{sc.name}-w{i + 1}.txt"
        print(f"  profiling worker {worker} -> {out.relative_to(ROOT)}", flush=True)
        procs.append(CHILDREN.start(
            [spy, "record", "--pid", str(worker), "--duration", str(max(1, int(duration) - 1)),
             "--rate", "200", "--format", "raw", "--nonblocking", "-o", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def finish_profilers(procs: list[subprocess.Popen]) -> float:
    """Wait for the py-spy processes; their CPU seconds (not to be counted as 'other')."""
    used = 0.0
    for proc in procs:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                used += usage.ru_utime + usage.ru_stime
                break
            time.sleep(0.1)
        else:
            CHILDREN.stop(proc)
        if proc in CHILDREN.procs:
            CHILDREN.procs.remove(proc)
    return used


# ---------------------------------------------------------------------------------------------
# report

def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 100_000 else f"{n / 1e3:.1f} KB"


def table_rows(outcomes: list[Outcome]) -> tuple[list[str], list[list[str]]]:
    head = ["scenario", "workers", "conc", "image b64", "direct req/s", "direct p50 / p99 ms",
            "nginx req/s", "gateway req/s", "gateway p50 / p99 ms", "added p50 / p99 ms", "errors gw (direct)",
            "gw peak PSS (idle)", "conns per worker", "CPU cores gw (per worker) / upstream / wrk / other"]
    rows = []
    for o in outcomes:
        d, g, s = o.direct, o.gateway, o.scenario
        per = "+".join(f"{c / g.seconds:.2f}" for c in o.cpu_workers)
        cores = (f"{o.cpu_gateway / g.seconds:.2f} ({per}) / {o.cpu_upstream / g.seconds:.2f} / "
                 f"{g.wrk_cpu_s / g.seconds:.2f} / {max(0.0, o.cpu_other) / g.seconds:.2f}")
        rows.append([s.name, str(s.workers), str(s.concurrency), size(o.b64_bytes),
                     f"{d.rps:,.0f}", f"{d.p50_ms:.3f} / {d.p99_ms:.3f}",
                     f"{o.nginx.rps:,.0f}" if o.nginx else "-", f"{g.rps:,.0f}", f"{g.p50_ms:.3f} / {g.p99_ms:.3f}",
                     f"{o.added_p50:+.3f} / {o.added_p99:+.3f}",
                     f"{g.errors} ({d.errors})", f"{mib(o.peak_pss)} ({mib(o.idle_pss)})",
                     "+".join(str(c) for c in o.conns_per_worker) or "?", cores])
    return head, rows


def print_table(outcomes: list[Outcome], markdown: bool) -> None:
    if not outcomes:
        print("(no results)")
        return
    head, rows = table_rows(outcomes)
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "|".join("---" for _ in head) + "|")
        for r in rows:
            print("| " + " | ".join(r) + " |")
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def verdicts(outcomes: list[Outcome]) -> list[tuple[str, bool, str]]:
    """The issue's targets, for the scenarios that were run."""
    by = {o.scenario.name: o for o in outcomes}
    out: list[tuple[str, bool, str]] = []
    if "small-c1" in by:
        o = by["small-c1"]
        out.append(("c=1: gateway adds < 1 ms at the median", o.added_p50 < 1.0,
                    f"adds {o.added_p50:.3f} ms (p50 {o.gateway.p50_ms:.3f} vs direct {o.direct.p50_ms:.3f})"))
    if "small-c64" in by:
        o = by["small-c64"]
        out.append(("c=64, small images, 2 workers: >= 1,500 req/s", o.gateway.rps >= 1500 and o.gateway.errors == 0,
                    f"{o.gateway.rps:,.0f} req/s, {o.gateway.errors} errors"))
    for name in ("large-c16", "large-c16-keep-all"):
        if name not in by:
            continue
        o, how = by[name], " (keep_images = all)" if name.endswith("keep-all") else ""
        out.append((f"1.5 MB images, c=16, 2 workers{how}: >= 600 req/s",
                    o.gateway.rps >= 600 and o.gateway.errors == 0,
                    f"{o.gateway.rps:,.0f} req/s, {o.gateway.errors} errors"))
        if not how:
            ceiling = (f"; nginx, proxying the same load on the same cores, makes {o.nginx.rps:,.0f} = "
                       f"{o.nginx.rps / o.direct.rps:.0%} of direct, and the gateway {o.gateway.rps / o.nginx.rps:.0%} "
                       f"of nginx" if o.nginx else "")
            out.append(("1.5 MB images, c=16: at least half the direct rate", o.gateway.rps >= o.direct.rps / 2,
                        f"{o.gateway.rps:,.0f} of {o.direct.rps:,.0f} req/s direct = "
                        f"{o.gateway.rps / o.direct.rps:.0%}{ceiling}"))
        copies = o.per_request_pss / o.b64_bytes
        out.append((f"1.5 MB images{how}: each image held in memory no more than twice", copies <= 2.0,
                    f"(peak {mib(o.peak_pss)} - idle {mib(o.idle_pss)}) / {o.scenario.concurrency} in flight = "
                    f"{o.per_request_pss / 1e6:.2f} MB per request = {copies:.2f} x the {size(o.b64_bytes)} "
                    f"base64 image ({o.per_request_pss / o.png_bytes:.2f} x the {size(o.png_bytes)} PNG)"))
    if "slow-c1000" in by:
        o = by["slow-c1000"]
        out.append(("slow upstream: 1,000 in flight at no error",
                    o.gateway.errors == 0 and o.upstream_peak >= 1000 and o.upstream_steady >= 950,
                    f"upstream held {o.upstream_peak:,} at most and {o.upstream_steady:,.0f} on average once "
                    f"ramped up (direct: {o.upstream_peak_direct:,} / {o.upstream_steady_direct:,.0f}), "
                    f"{o.gateway.errors} errors "
                    f"({o.gateway.errors_status} HTTP >= 400, {o.gateway.errors_socket} socket/timeouts)"))
        out.append(("slow upstream: gateway adds < 20 ms at the median", o.added_p50 < 20.0,
                    f"adds {o.added_p50:.1f} ms (p50 {o.gateway.p50_ms:.1f} vs direct {o.direct.p50_ms:.1f})"))
    if "slow-c10000" in by:
        o = by["slow-c10000"]
        out.append(("10,000 in flight to a 20 s upstream: 0 errors, gateway memory < 500 MB",
                    o.gateway.errors == 0 and o.upstream_peak >= 10000 and o.peak_pss < 500e6,
                    f"{o.gateway.errors} errors, upstream held {o.upstream_peak:,} at most; peak {o.peak_pss / 1e6:.0f} MB "
                    f"PSS = idle {o.idle_pss / 1e6:.0f} MB + {o.per_request_pss / 1e3:.0f} KB per request in flight"))
    for o in outcomes:  # the first scenario of 1 and of 2 workers
        if o.idle_workers and o is next(x for x in outcomes if x.scenario.workers == o.scenario.workers):
            pss, rss = max(o.idle_workers)
            out.append((f"idle memory of one worker < 100 MB ({o.scenario.workers} worker(s), PSS)", pss < 100e6,
                        f"{pss / 1e6:.0f} MB PSS ({rss / 1e6:.0f} MB RSS, which counts pages shared with the "
                        f"supervisor and the other workers once per process) in {o.scenario.name}"))
    return out


def filesystem(path: Path) -> str:
    """The mount (type, device) that holds path, from /proc/mounts."""
    best, found = "", "?"
    try:
        path = path.resolve()
        for line in open("/proc/mounts"):
            dev, mnt, fstype = line.split()[:3]
            if (str(path) == mnt or str(path).startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, found = mnt, f"{fstype} ({dev} on {mnt})"
    except OSError:
        pass
    return found


def machine() -> dict:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "aiohttp", "orjson"):
        try:
            from importlib.metadata import version

            versions[pkg] = version(pkg)
        except Exception:
            versions[pkg] = "?"
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "pixelgate"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        code = head + (" + uncommitted changes in pixelgate/" if dirty else "")
    except Exception:
        code = "?"
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory": f"{mem / 2**30:.1f} GiB",
            "kernel": platform.release(), "python": platform.python_version(),
            "wrk": version_of(["wrk", "--version"]), "packages": versions, "pixelgate": code,
            "filesystem": filesystem(Path(tempfile.gettempdir()))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", metavar="NAME",
                        help="run only this scenario (repeatable; see --list)")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of each measured run (10)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up before each run (3)")
    parser.add_argument("--quick", action="store_true", help="--duration 4 --warmup 1")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (1: it shares 2 cores)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown too")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy record one gateway worker per scenario into bench/out/")
    parser.add_argument("--no-nginx", dest="nginx", action="store_false",
                        help="skip the reference run through nginx (made when nginx is installed)")
    parser.add_argument("--keep-logs", action="store_true", help="copy gateway logs into bench/out/")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--tmp-dir", help="where the temp data dirs go (default: the system's)")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--wait-quiet", type=float, default=60.0, metavar="SECONDS",
                        help="before each measured run, wait up to this long for other processes "
                             "to use less than --quiet-cores (60; 0: do not wait)")
    parser.add_argument("--gateway-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the gateway, e.g. PIXELGATE_CACHE_SECONDS=60 "
                             "(repeatable; for experiments)")
    parser.add_argument("--config-line", action="append", default=[], metavar="TOML",
                        help="a top-level line for the gateway's config file, e.g. 'cache_seconds = 60' "
                             "(repeatable; for experiments)")
    parser.add_argument("--live", action="store_true",
                        help="run the working tree's pixelgate/ rather than a copy taken at the start")
    parser.add_argument("--retries", type=int, default=1,
                        help="run a scenario again (this many times at most) when other processes "
                             "disturbed it (1)")
    parser.add_argument("--quiet-cores", type=float, default=0.15,
                        help="what counts as a quiet machine, in cores used by others (0.15)")
    args = parser.parse_args(argv)

    if args.list:
        for s in SCENARIOS:
            print(f"{s.name:15} c={s.concurrency:<5} workers={s.workers} image={s.image_bytes:>9} B "
                  f"delay={s.delay:g}s {'(default) ' if s.default else ''}{s.about}")
        return 0
    if args.quick:
        args.duration, args.warmup = 4.0, 1.0
    try:
        args.gateway_env = dict(item.split("=", 1) for item in args.gateway_env)
    except ValueError:
        parser.error("--gateway-env takes NAME=VALUE")
    names = args.scenario or [s.name for s in SCENARIOS if s.default]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown scenario {', '.join(unknown)}; known: {', '.join(BY_NAME)}")
    ensure_wrk(not args.no_install)
    if args.nginx and not shutil.which("nginx"):
        print("(nginx not found: no reference run through a C proxy; Debian package 'nginx-light')", flush=True)
        args.nginx = False

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < 4096:
        print(f"warning: open-file limit is {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}; "
              "the 1,000-connection scenario needs ~4,000 (ulimit -n)", file=sys.stderr)

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGHUP, _on_signal)
    OUT.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="pixelgate-bench-", dir=args.tmp_dir))
    TEMP_DIRS.append(tmp)
    args.code_dir, args.code_hash = None, "working tree"
    if not args.live:
        args.code_dir = Path(tempfile.mkdtemp(prefix="pixelgate-bench-code-", dir=args.tmp_dir))
        TEMP_DIRS.append(args.code_dir)
        args.code_hash = snapshot_code(args.code_dir)
    info = machine()
    info["filesystem"] = filesystem(tmp)
    print(f"pixelgate benchmark: {info['cpus']} x {info['cpu_model']}, {info['memory']}, "
          f"Python {info['python']}, {info['wrk']}")
    info["code_copy"] = args.code_hash
    print(f"pixelgate at {info['pixelgate']} (running a copy of pixelgate/, content hash "
          f"{args.code_hash}); gateway data dirs on {filesystem(tmp)}")
    print(f"runs of {args.duration:g} s after {args.warmup:g} s of warm-up; wrk -t{args.threads}; "
          f"scenarios: {', '.join(names)}\n", flush=True)
    outcomes: list[Outcome] = []
    failed: list[str] = []
    started = time.monotonic()
    try:
        for name in names:
            sc = BY_NAME[name]
            print(f"[{sc.name}] {sc.about}", flush=True)
            kept: Outcome | None = None
            failures = 0
            attempt = 0
            while attempt <= args.retries:
                try:
                    o = run_scenario(sc, args, tmp)
                except GatewayFailed as exc:
                    failures += 1
                    print(f"  !! the gateway failed: {str(exc)[-1500:]}", flush=True)
                    if failures > 2:
                        print(f"  !! giving up on {sc.name}", flush=True)
                        failed.append(sc.name)
                        break
                    if args.code_dir is not None:
                        print("  (the working tree may be mid-edit: taking a new copy in 30 s and trying again)",
                              flush=True)
                        time.sleep(30)
                        args.code_hash = snapshot_code(args.code_dir)
                        print(f"  pixelgate copy {args.code_hash}", flush=True)
                    continue
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)  # images written so far
                    tmp.mkdir()
                attempt += 1
                o.code = args.code_hash
                if kept is None or disturbance(o) < disturbance(kept):
                    kept = o
                via = f"nginx {o.nginx.rps:,.0f} req/s; " if o.nginx else ""
                print(f"  -> direct {o.direct.rps:,.0f} req/s p50 {o.direct.p50_ms:.3f} ms; {via}gateway "
                      f"{o.gateway.rps:,.0f} req/s p50 {o.gateway.p50_ms:.3f} ms p99 {o.gateway.p99_ms:.3f} ms, "
                      f"{o.gateway.errors} errors, peak PSS {mib(o.peak_pss)}", flush=True)
                if not noisy(o, args.quiet_cores):
                    break
                busy = max(o.cpu_other / o.gateway.seconds, o.cpu_other_direct / o.direct.seconds)
                print(f"  !! other processes used {busy:.2f} cores during this scenario: its figures are "
                      f"disturbed{'; running it again' if attempt <= args.retries else ''}", flush=True)
            if kept is not None:
                outcomes.append(kept)
    except KeyboardInterrupt:
        print("\ninterrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        CHILDREN.stop_all()
        for d in TEMP_DIRS:
            shutil.rmtree(d, ignore_errors=True)

    print(f"\nResults ({time.monotonic() - started:.0f} s in all; latency in ms; 'added' = gateway minus "
          "direct; errors = HTTP >= 400 + socket errors + timeouts; PSS = memory summed over the gateway's "
          "processes, sampled every 50 ms; CPU = cores busy on average during the gateway run)\n")
    print_table(outcomes, markdown=False)
    if args.markdown:
        print()
        print_table(outcomes, markdown=True)
    disturbed = [o.scenario.name for o in outcomes if noisy(o, args.quiet_cores)]
    if disturbed:
        print(f"\n!! other processes were busy during: {', '.join(disturbed)} (see the 'other' CPU column); "
              "those figures understate what the gateway can do")
    if failed:
        print(f"\n!! no figures for {', '.join(failed)}: the gateway failed (see above)")
    codes = sorted({o.code for o in outcomes})
    if len(codes) > 1:
        print("\n!! the scenarios ran different copies of pixelgate/: "
              + ", ".join(f"{o.scenario.name}={o.code}" for o in outcomes))
    checks = verdicts(outcomes)
    if checks:
        print("\nTargets:")
        for what, ok, detail in checks:
            print(f"  [{'MET' if ok else 'NOT MET'}] {what}: {detail}")
    for o in outcomes:
        if o.scenario.delay:
            print(f"\n{o.scenario.name}: requests held by the upstream through the gateway: {o.upstream_peak:,} "
                  f"at most, {o.upstream_steady:,.0f} on average once ramped up (direct: "
                  f"{o.upstream_peak_direct:,} / {o.upstream_steady_direct:,.0f})")
    record = {"machine": info, "duration": args.duration, "warmup": args.warmup, "threads": args.threads,
              "command": " ".join([".venv/bin/python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
              "results": [{"scenario": dataclasses.asdict(o.scenario), "png_bytes": o.png_bytes,
                           "b64_bytes": o.b64_bytes, "direct": dataclasses.asdict(o.direct),
                           "gateway": dataclasses.asdict(o.gateway), "added_p50_ms": o.added_p50,
                           "nginx": dataclasses.asdict(o.nginx) if o.nginx else None,
                           "added_p99_ms": o.added_p99, "idle_pss": o.idle_pss, "peak_pss": o.peak_pss,
                           "pss_samples": o.pss_samples, "per_request_pss": o.per_request_pss,
                           "in_flight": o.in_flight, "idle_workers_pss_rss": o.idle_workers, "cpu_gateway_s": o.cpu_gateway,
                           "cpu_upstream_s": o.cpu_upstream, "cpu_upstream_direct_s": o.cpu_upstream_direct,
                           "cpu_workers_s": o.cpu_workers, "connections_per_worker": o.conns_per_worker, "cpu_other_s": o.cpu_other,
                           "cpu_other_direct_s": o.cpu_other_direct,
                           "upstream_peak_in_flight": o.upstream_peak,
                           "upstream_steady_in_flight": o.upstream_steady,
                           "upstream_peak_in_flight_direct": o.upstream_peak_direct,
                           "upstream_steady_in_flight_direct": o.upstream_steady_direct,
                           "check": o.check, "code": o.code} for o in outcomes],
              "failed": failed,
              "targets": [{"target": w, "met": ok, "detail": d} for w, ok, d in checks]}
    (OUT / "results.json").write_text(json.dumps(record, indent=2))
    print(f"\n(saved to {OUT / 'results.json'})")
    return 1 if args.strict and not all(ok for _, ok, _ in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
