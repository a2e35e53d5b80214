"""The gateway installed as users install it: a wheel built from the source, installed into a new
virtual environment and started there, far from the repository. Only the gateway's own files come
from the wheel; its dependencies are the test environment's, seen through a .pth file (offline, pip
cannot fetch them; .ci/wheel-smoke.sh installs the wheel with its dependencies from the registry)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import httpx
import pytest

from tests.test_cli import _clean_env, _until_started
from tests.test_serve import _stop, _wait_up

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "pg-wheel-admin-key-0000000000000000000000"
PNG = b"\x89PNG\r\n\x1a\n"


def _build_wheel(tmp_path: Path) -> Path:
    """A wheel of a clean copy of the source: a build/ left in the work tree would add stale files."""
    src = tmp_path / "src"
    shutil.copytree(ROOT / "pixelgate", src / "pixelgate", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=180)
    (wheel,) = (tmp_path / "dist").glob("pixelgate-*.whl")
    return wheel


def _install(wheel: Path, venv: Path, env: dict) -> Path:
    """The wheel alone in a new venv, which sees this environment's packages after its own."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], env=env, check=True, capture_output=True, timeout=180)
    own = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         env=env, check=True, capture_output=True, text=True).stdout.strip()
    # A plain directory line: the .pth files there (this checkout's editable install) are not run.
    (Path(own) / "pixelgate-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin" / "pixelgate"


def _assets(page: str, pattern: str) -> list[str]:
    found = re.findall(pattern, page)
    assert found, page[:500]
    return found


@pytest.mark.long(20)
def test_the_installed_wheel_serves_images_docs_and_the_console(tmp_path):
    wheel = _build_wheel(tmp_path)
    shipped = set(zipfile.ZipFile(wheel).namelist())
    source = {p.relative_to(ROOT).as_posix() for p in (ROOT / "pixelgate").rglob("*")
              if p.is_file() and "__pycache__" not in p.parts}
    assert source - shipped == set()  # every file the gateway may read: catalog, templates, migrations

    # no PYTHONPATH: with this checkout on it, pip would find pixelgate "already installed"
    env = {k: v for k, v in _clean_env(PIXELGATE_ADMIN_KEY=ADMIN).items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    command = _install(wheel, tmp_path / "venv", env)
    run = tmp_path / "run"
    run.mkdir()
    where = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c", "import pixelgate; print(pixelgate.__file__)"],
                           cwd=run, env=env, check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(tmp_path / "venv")), where  # not this checkout

    proc = subprocess.Popen([str(command), "serve", "--port", "0"], cwd=run, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        said = _until_started(proc)
        base = "http://127.0.0.1:" + re.search(r"listening on http://127\.0\.0\.1:(\d+) ", said).group(1)
        _wait_up(base, proc)
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as client:
            for fmt in ("url", "b64_json"):
                resp = client.post("/v1/images/generations", json={"model": "sandbox-image", "prompt": "a wheel",
                                                                   "size": "64x64", "response_format": fmt})
                assert resp.status_code == 200, resp.text
                item = resp.json()["data"][0]
                image = client.get(item["url"]).content if fmt == "url" else base64.b64decode(item["b64_json"])
                assert image.startswith(PNG)
            docs = client.get("/docs")
            assert docs.status_code == 200
            for asset in _assets(docs.text, r"/docs/static/[\w.\-]+"):
                assert client.get(asset).status_code == 200, asset
            login = client.get("/console/login")
            assert login.status_code == 200 and "<form" in login.text
            for asset in _assets(login.text, r"/console/static/[\w.\-]+"):
                assert client.get(asset).status_code == 200, asset
    finally:
        out = _stop(proc)
    assert "Traceback" not in out, out
    assert (run / "data" / "pixelgate.db").exists()  # the migrations ran from the installed copy
