"""`pixelgate serve` as a newcomer runs it: embedded defaults, and several worker processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from prometheus_client.parser import text_string_to_metric_families
import pytest

from tests.conftest import database


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _start(args, cwd, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pixelgate", *args], cwd=cwd, env=env or os.environ.copy(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _start_anywhere(args, cwd, env, port: int = 0) -> tuple[subprocess.Popen, str, str]:
    """`serve --port 0 ...`: the system picks the port (a port picked first and passed on may be
    taken by another test in between). The process, its base URL, and what it said until then.
    `port`: where a restarted gateway must listen again (its links name it)."""
    proc = _start([*args, "--port", str(port)], cwd, env)
    said = ""
    while not (found := re.search(r"listening on (http://127\.0\.0\.1:\d+) ", said)):
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(said)
        said += line
    base = found.group(1)
    _wait_up(base, proc)
    return proc, base, said


def _wait_up(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("gateway did not come up")


def _stop(proc: subprocess.Popen) -> str:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
    return out


def test_first_start_with_no_configuration(tmp_path):
    if not _port_free(8080):
        pytest.skip("port 8080 is taken on this machine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")}
    proc = _start(["serve"], tmp_path, env)
    try:
        try:
            _wait_up("http://127.0.0.1:8080", proc)
        except AssertionError as exc:  # taken since the check above (another test run's gateway)
            if "cannot listen on 127.0.0.1:8080" in str(exc):
                pytest.skip("port 8080 is taken on this machine")
            raise
        assert (tmp_path / "data" / "pixelgate.db").is_file()
    finally:
        out = _stop(proc)
    key = re.search(r"created admin key \(shown once, keep it\): (pg-\S+)", out).group(1)
    # second start: same database, no new key printed; the printed key works
    proc = _start(["serve"], tmp_path, env)
    try:
        _wait_up("http://127.0.0.1:8080", proc)
        resp = httpx.post("http://127.0.0.1:8080/v1/images/generations", headers={"Authorization": f"Bearer {key}"},
                          json={"model": "sandbox-image", "prompt": "hello", "size": "64x64"}, timeout=30)
        assert resp.status_code == 200, resp.text
        image = httpx.get(resp.json()["data"][0]["url"])
        assert image.status_code == 200
        assert list((tmp_path / "data" / "images").glob("*.seg"))
    finally:
        out = _stop(proc)
    assert "created admin key" not in out


def _rollup(pid: int) -> dict[str, int]:
    """A process's memory in kB by kind (Rss, Pss, Shared_Clean, Private_Dirty...)."""
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        return {line.split(":")[0]: int(line.split()[1]) for line in fh if line.split()[-1:] == ["kB"]}


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry))
    return found


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels`, in Prometheus text."""
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == name and labels.items() <= s.labels.items())


@pytest.mark.long
def test_workers_share_one_port_database_and_storage(backend, tmp_path):
    with database(backend, tmp_path) as url:
        env = {**os.environ, "PIXELGATE_DATABASE_URL": url, "PIXELGATE_ADMIN_KEY": "pg-workers-test-key",
               "PIXELGATE_SANDBOX": "true",  # a database server: the sandbox is off unless asked for
               "PIXELGATE_DATA_DIR": str(tmp_path / "data")}
        proc, base, _ = _start_anywhere(["serve", "--workers", "2"], tmp_path, env)
        try:
            workers = _children(proc.pid)
            assert len(workers) == 2  # the workers and nothing else (no multiprocessing resource tracker)
            # The process that checked the database has made way for a supervisor that imported
            # the application once and forked the workers from it: most of a worker's memory is
            # those shared pages, not its own.
            for pid in workers:
                memory = _rollup(pid)
                assert memory["Shared_Clean"] + memory["Shared_Dirty"] > memory["Private_Clean"] + memory["Private_Dirty"]
            headers = {"Authorization": "Bearer pg-workers-test-key"}

            def one(i: int) -> httpx.Response:
                return httpx.post(base + "/v1/images/generations", headers=headers, timeout=60,
                                  json={"model": "sandbox-image", "prompt": f"p{i}", "size": "32x32"})

            with ThreadPoolExecutor(16) as pool:
                responses = list(pool.map(one, range(60)))
            assert all(r.status_code == 200 for r in responses)
            for r in responses[:5]:  # an image stored by any worker is served by any worker
                assert httpx.get(r.json()["data"][0]["url"]).status_code == 200
            ids = {r.headers["x-request-id"] for r in responses}
            time.sleep(0.5)
            logged = {row["id"] for row in httpx.get(base + "/admin/requests", params={"limit": 1000},
                                                      headers=headers).json()["data"]}
            assert ids <= logged
            # whichever worker is scraped counts for both (prometheus_client's multiprocess mode)
            for _ in range(4):
                text = httpx.get(base + "/admin/metrics", headers=headers).text
                assert metric(text, "pixelgate_requests_total", model="sandbox-image", status="200") == 60
                assert metric(text, "pixelgate_images_delivered_total", model="sandbox-image") == 60
        finally:
            out = _stop(proc)
        assert proc.returncode == 0, out  # SIGTERM reaches the supervisor: both workers stop cleanly


def test_a_worker_killed_from_outside_stops_the_server_with_a_failure(tmp_path):
    """A supervisor (systemd, the orchestrator) restarts a server that exits non-zero: a worker
    that dies takes the others down and the server's status says it failed."""
    env = {**os.environ, "PIXELGATE_ADMIN_KEY": "pg-workers-test-key", "PIXELGATE_DATA_DIR": str(tmp_path / "data")}
    proc, _, _ = _start_anywhere(["serve", "--workers", "2"], tmp_path, env)
    try:
        deadline = time.monotonic() + 30
        while len(workers := _children(proc.pid)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        os.kill(workers[0], signal.SIGKILL)
        assert proc.wait(timeout=30) == 1
        assert not any(os.path.exists(f"/proc/{pid}") and open(f"/proc/{pid}/stat").read().split()[2] != "Z"
                       for pid in workers[1:])
    finally:
        _stop(proc) if proc.poll() is None else None


def test_serve_starts_during_a_storage_outage_and_says_so(tmp_path):
    """An S3 store that does not answer is an outage, not a wrong setting: serve starts (the
    operator is told), where a missing bucket refuses (tests/services/test_s3_storage.py)."""
    dead = _free_port_nobody_listens_on()
    env = {**os.environ, "PIXELGATE_ADMIN_KEY": "pg-outage-test-key", "PIXELGATE_DATA_DIR": str(tmp_path / "data"),
           "PIXELGATE_STORAGE_URL": "s3://images/gw", "PIXELGATE_S3_ENDPOINT_URL": f"http://127.0.0.1:{dead}",
           "PIXELGATE_STORAGE_TIMEOUT_SECONDS": "1", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "b"}
    proc, base, said = _start_anywhere(["serve"], tmp_path, env)
    try:
        assert httpx.get(f"{base}/readyz").status_code == 503
    finally:
        _stop(proc)
    assert "starting anyway" in said and f"127.0.0.1:{dead}" in said, said


def _free_port_nobody_listens_on() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_stop_asked_for_while_the_workers_start_stops_them_all(tmp_path):
    """SIGTERM as soon as serve says it listens: the supervisor is still importing, forking, or
    becoming the watcher. The stop waits for the watcher (never kills it before its workers,
    which would leave them serving with no parent), and everything ends cleanly."""
    env = {**os.environ, "PIXELGATE_ADMIN_KEY": "pg-workers-test-key", "PIXELGATE_DATA_DIR": str(tmp_path / "data")}
    proc = _start(["serve", "--workers", "2", "--port", "0"], tmp_path, env)
    said = ""
    while not (found := re.search(r"listening on http://127\.0\.0\.1:(\d+) ", said)):
        line = proc.stdout.readline()
        assert line, said
        said += line
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, proc.stdout.read()
    marker = f'"port": {found.group(1)},'.encode()
    deadline = time.monotonic() + 10
    while left := [pid for pid in os.listdir("/proc") if pid.isdigit() and _cmdline_has(pid, marker)]:
        assert time.monotonic() < deadline, f"workers left serving: {left}"
        time.sleep(0.1)


def _cmdline_has(pid: str, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return marker in fh.read()
    except OSError:
        return False


def test_one_worker_serves_as_a_fresh_interpreter_under_the_pid_it_was_started_with(tmp_path):
    """`serve` without --workers checks everything (and migrates a new database), then becomes a
    fresh interpreter that only serves: same pid (what systemd and `kill` know), none of the
    checks' modules (Alembic) or garbage. It serves, and a SIGTERM still stops it cleanly."""
    env = {**os.environ, "PIXELGATE_ADMIN_KEY": "pg-one-worker-test-key", "PIXELGATE_DATA_DIR": str(tmp_path / "data")}
    proc, base, said = _start_anywhere(["serve"], tmp_path, env)
    try:
        assert "(1 worker)" in said
        assert _cmdline_has(str(proc.pid), b"serve_one_from_argv"), "still the process that ran the checks"
        resp = httpx.post(base + "/v1/images/generations", headers={"Authorization": "Bearer pg-one-worker-test-key"},
                          json={"model": "sandbox-image", "prompt": "one worker", "size": "64x64",
                                "response_format": "b64_json"}, timeout=30)
        assert resp.status_code == 200, resp.text
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM), out
    assert "Traceback" not in out, out


def test_every_process_of_the_server_still_shows_the_command_that_started_it(tmp_path):
    """`serve` re-executes itself (one worker: as the server; several: as the supervisor, then the
    watcher); each process's command line still ends with what the operator ran, so `ps` and
    `pkill -f "pixelgate serve"` find them all."""
    env = {**os.environ, "PIXELGATE_ADMIN_KEY": "pg-command-line-test-key", "PIXELGATE_DATA_DIR": str(tmp_path / "data")}
    for workers in ("1", "2"):
        proc, base, _ = _start_anywhere(["serve", "--workers", workers], tmp_path, env)
        try:
            pids = [proc.pid, *_children(proc.pid)]
            assert len(pids) == (1 if workers == "1" else 3), pids
            for pid in pids:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
                assert b" ".join(argv).rstrip().endswith(f"serve --workers {workers} --port 0".encode()), argv
        finally:
            _stop(proc)
