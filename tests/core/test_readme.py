"""Every Python example in the README runs exactly as written, in a fresh process.

A block preceded by ``<!-- illustrative -->`` shows placeholders for a real subscription
(``tenant_id``, ``vault_url``); it is compiled, so it cannot rot syntactically.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
_BLOCK = re.compile(r"(<!-- illustrative -->\n)?```python\n(.*?)```", re.DOTALL)


def _blocks() -> list[tuple[str, bool, str]]:
    text = README.read_text()
    found = []
    for match in _BLOCK.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.append((f"README.md:{line}", match.group(1) is not None, match.group(2)))
    return found


BLOCKS = _blocks()


def test_the_readme_has_examples():
    assert len([b for b in BLOCKS if not b[1]]) >= 3


@pytest.mark.parametrize(("where", "illustrative", "code"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_readme_example(tmp_path, where: str, illustrative: bool, code: str):
    if illustrative:
        compile(code, where, "exec")
        return
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
