"""Run `pixelgate ...` commands in the test process: the same click command `python -m pixelgate`
runs, without paying ~0.7 s of interpreter start and imports per command (the CLI tests ran
eighty of them). Tests of what only a process shows (serving, signals) start real processes."""

from __future__ import annotations

import os
import traceback
from dataclasses import dataclass
from unittest import mock

from click.testing import CliRunner

from pixelgate.cli import main


@dataclass
class Ran:
    """What a finished command left, shaped like subprocess.CompletedProcess."""

    returncode: int
    stdout: str
    stderr: str


def pixelgate(*args: str, cwd, env: dict | None = None) -> Ran:
    """`pixelgate *args` in `cwd`, with the environment `env` (the test process's, without any
    PIXELGATE_* variable, if None). An exception the command did not turn into a message is added
    to stderr as the traceback a user would have seen."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PIXELGATE_")} if env is None else env
    here = os.getcwd()
    # patch.dict puts back the whole environment: `serve` writes its options into it
    with mock.patch.dict(os.environ, environment, clear=True):
        os.chdir(cwd)
        try:
            result = CliRunner().invoke(main, list(args), catch_exceptions=True)
        finally:
            os.chdir(here)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return Ran(result.exit_code, result.stdout, stderr)
