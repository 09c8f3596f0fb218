"""The README's command-line examples run as written: every ``bash`` block, in order, in one
fresh directory, with the ``envelope`` of this environment first on ``PATH``.

(The ``sh`` blocks are the make commands and installs; they are not run here.)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from .conftest import clean_environment

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"```bash\n(.*?)```", re.DOTALL)


def _blocks() -> list[tuple[int, str]]:
    text = README.read_text()
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in _BLOCK.finditer(text)]


def test_the_readme_has_command_line_examples():
    commands = " ".join(code for _, code in _blocks())
    for command in ("keygen", "encrypt", "decrypt", "inspect", "rewrap", "vault", "-r"):
        assert f"envelope {command}" in commands or f" {command} " in commands, command


def test_readme_command_line_examples(tmp_path):
    bin_dir = str(Path(sys.executable).parent)
    env = clean_environment({"PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")})
    for line, code in _blocks():
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = process.communicate(timeout=180)
        finally:
            # Whatever a failed block left running (the vault) ends with it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        assert process.returncode == 0, (
            f"README.md:{line} failed:\n{stdout.decode()}\n{stderr.decode()}"
        )
