"""The README's examples, run as a new user runs them: the gateway started as its quick start says
(`pixelgate serve`, which `make run` runs, with PIXELGATE_SIMULATE_VENDORS=true and nothing else),
the admin key taken from what it prints, then every shell and Python block of the README that
calls the gateway, as written, from the repository's root. Only the port is changed, and the
`task_...` and `customId` placeholders are filled from the earlier answers, as a reader would."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.test_cli import _clean_env
from tests.test_serve import _start_anywhere, _stop

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
START = "PIXELGATE_SIMULATE_VENDORS=true make run"
EXPORT = "export PG_KEY=pg-..."


def _blocks() -> list[tuple[str, str]]:
    """(language, text) of every fenced block that calls the gateway, in README order."""
    found = re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.S | re.M)
    return [(lang, text) for lang, text in found if lang in ("sh", "python")
            and "127.0.0.1:8080" in re.sub(r"(^|\s)#.*$", "", text, flags=re.M)]  # not only in a comment


def _commands(text: str) -> list[str]:
    """A shell block's commands: continuation lines joined, comment lines dropped."""
    commands, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            commands.append(current)
            current = ""
    return commands


def test_make_run_is_pixelgate_serve():
    # The test starts `pixelgate serve` itself rather than `make run` (which installs first).
    assert re.search(r"^run: install\n\t\$\(BIN\)/pixelgate serve \$\(ARGS\)$", (ROOT / "Makefile").read_text(), re.M)


@pytest.mark.long
def test_every_readme_example_runs_offline(tmp_path):
    if shutil.which("curl") is None:
        pytest.skip("the README's shell examples use curl")
    blocks = _blocks()
    assert len(blocks) >= 6 and START in blocks[0][1] and EXPORT in blocks[0][1]
    server, base, said = _start_anywhere(["serve"], tmp_path, _clean_env(PIXELGATE_SIMULATE_VENDORS="true"))
    port = int(base.rsplit(":", 1)[1])
    try:
        key = re.search(r"created admin key \(shown once, keep it\): (pg-\S+)", said).group(1)
        env = {**os.environ, "PG_KEY": key}
        ran, last_task = 0, None
        for lang, text in blocks:
            text = text.replace("127.0.0.1:8080", f"127.0.0.1:{port}")
            if lang == "python":
                proc = subprocess.run([sys.executable, "-c", text], cwd=ROOT, env=env, capture_output=True,
                                      text=True, timeout=300)
                assert proc.returncode == 0, (text, proc.stderr)
                ran += 1
                continue
            for command in _commands(text):
                if command.startswith((START, EXPORT)):
                    continue  # done above: the server started so, and PG_KEY set from what it printed
                if "MJ::JOB::upsample::1::..." in command:
                    command = command.replace("MJ::JOB::upsample::1::...", _button(base, key, last_task, "U1"))
                if "task_..." in command:
                    assert last_task, command
                    command = command.replace("task_...", last_task)
                proc = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True,
                                      timeout=300)
                assert proc.returncode == 0, (command, proc.stderr)
                body = json.loads(proc.stdout)
                assert not body.get("error") and body.get("code", 1) == 1 and body.get("status") != "failed", \
                    (command, body)
                last_task = next(iter(re.findall(r"task_[0-9a-f]+", proc.stdout)), last_task)
                ran += 1
        assert ran >= 13, ran  # healthz, 7 more curl calls, 3 Midjourney steps, 2 Python programs
    finally:
        _stop(server)


def _button(base: str, key: str, task: str | None, label: str) -> str:
    """The customId of a finished Midjourney task's button, once the task has finished."""
    assert task
    deadline = time.monotonic() + 60
    while (job := httpx.get(f"{base}/mj/task/{task}/fetch", headers={"mj-api-secret": key}).json())["status"] != "SUCCESS":
        assert job["status"] not in ("FAILURE", "CANCEL") and time.monotonic() < deadline, job
        time.sleep(0.5)
    return next(b["customId"] for b in job["buttons"] if b["label"] == label)
