"""Fixtures of the command-line tests: the command run as a real subprocess (``python -m
envelope``, or the installed ``envelope`` script), two local key files, and a directory
of files of mixed sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from envelope import Envelope, LocalKey

#: Sizes around the frame size (65,536) and the read chunk, and a few larger ones.
MIXED_SIZES = (0, 1, 1023, 65535, 65536, 65537, 200_000, 1_000_003)


@dataclass
class Result:
    code: int
    stdout: bytes
    stderr: str

    @property
    def lines(self) -> list[str]:
        return self.stderr.splitlines()


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without any Azure or envelope setting of the machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "ENVELOPE_", "MSI_"))}
    env.update(extra or {})
    return env


def envelope_command() -> list[str]:
    return [sys.executable, "-m", "envelope"]


def run(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> Result:
    completed = subprocess.run(
        [*envelope_command(), *map(str, args)],
        cwd=cwd,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=clean_environment(env),
        timeout=timeout,
        check=False,
    )
    return Result(completed.returncode, completed.stdout, completed.stderr.decode())


def assert_one_line_error(result: Result, code: int, *fragments: str) -> None:
    """Failed with ``code``, saying so in one line without a traceback."""
    assert result.code == code, result
    assert len(result.lines) == 1, result.stderr
    assert result.lines[0].startswith("envelope: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@dataclass
class Keys:
    inner: Path
    outer: Path

    @property
    def args(self) -> list[str]:
        return ["--key", f"local:{self.inner}", "--key", f"local:{self.outer}"]

    def envelope(self) -> Envelope:
        return Envelope([LocalKey.load(self.inner), LocalKey.load(self.outer)])


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    folder = tmp_path / "keys"
    folder.mkdir()
    made = Keys(folder / "inner.key", folder / "outer.key")
    LocalKey.generate().save(made.inner)
    LocalKey.generate().save(made.outer)
    return made


def make_tree(root: Path, sizes: Sequence[int] = MIXED_SIZES) -> dict[str, bytes]:
    """Files of ``sizes`` spread over nested folders, plus an empty folder; returns each
    file's content by its path relative to ``root``."""
    contents: dict[str, bytes] = {}
    for index, size in enumerate(sizes):
        relative = Path(f"level{index % 3}") / f"sub{index % 2}" / f"file{index}.bin"
        if index % 4 == 0:
            relative = Path(f"top{index}.bin")
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        data = os.urandom(size)
        path.write_bytes(data)
        contents[relative.as_posix()] = data
    (root / "empty").mkdir()
    return contents


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[str, bytes]]:
    root = tmp_path / "tree"
    root.mkdir()
    return root, make_tree(root)


def files_under(root: Path) -> dict[str, Path]:
    """Every file under ``root`` (hidden ones too) by its relative path."""
    return {
        path.relative_to(root).as_posix(): path
        for path in sorted(root.rglob("*"))
        if path.is_file() or path.is_symlink()
    }
