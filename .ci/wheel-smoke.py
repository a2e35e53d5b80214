"""The wheel as users install it: built from this checkout, installed with its dependencies from
the registry (at the locked versions) into a new venv, started away from the source, asked for an
image. tests/test_wheel.py does the same offline, with the test environment's dependencies."""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
KEY = "pg-wheel-smoke-admin-key-000000000000000"


def main() -> None:
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="pixelgate-wheel-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    try:
        shutil.copytree(ROOT / "pixelgate", work / "src" / "pixelgate", ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, work / "src" / name)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(work / "dist"), str(work / "src")], check=True, env=env)
        (wheel,) = (work / "dist").glob("pixelgate-*.whl")
        subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True, env=env)
        subprocess.run([str(work / "venv" / "bin" / "pip"), "install", "-qq", "--disable-pip-version-check",
                        "-c", str(ROOT / "requirements.lock"), str(wheel)], check=True, env=env)
        (work / "run").mkdir()
        proc = subprocess.Popen([str(work / "venv" / "bin" / "pixelgate"), "serve", "--port", "0", "--workers", "2"],
                                cwd=work / "run",
                                env={**env, "PIXELGATE_ADMIN_KEY": KEY}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            smoke(proc)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            status = proc.wait(30)
        if status != 0:  # a clean stop of its supervisor and both workers
            sys.exit(f"wheel smoke: the installed gateway stopped with status {status} on SIGTERM")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wheel smoke: installed wheel served an image in {time.monotonic() - started:.0f} s")


def smoke(proc: subprocess.Popen) -> None:
    said = ""
    while not (found := re.search(r"listening on (http://127\.0\.0\.1:\d+) ", said)):
        line = proc.stdout.readline()
        if not line:
            sys.exit("wheel smoke: the installed gateway did not start:\n" + said)
        said += line
    base = found.group(1)
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                sys.exit("wheel smoke: the installed gateway does not answer")
            time.sleep(0.2)
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
        resp = client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "smoke",
                                                           "size": "64x64", "response_format": "b64_json"})
        if resp.status_code != 200 or not base64.b64decode(resp.json()["data"][0]["b64_json"]).startswith(b"\x89PNG"):
            sys.exit(f"wheel smoke: no image from the installed gateway: {resp.status_code} {resp.text[:500]}")
        for page in ("/docs", "/console/login", "/console/static/console.css"):
            if client.get(page).status_code != 200:
                sys.exit(f"wheel smoke: {page} is missing from the installed gateway")


if __name__ == "__main__":
    main()
