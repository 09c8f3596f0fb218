"""Run azure-keyvault-keys' own live tests against LocalKeyVault.

``python -m envelope.testing.azure_sdk_tests [--source PATH] [--real-time] [PYTEST ARGS...]``

Without ``--source`` it downloads the source package of the installed azure-keyvault-keys
version with pip (``pip download --no-binary :all: --no-deps``) into a cache folder and runs
its ``tests/`` folder with pytest in live mode, without recording
(``AZURE_TEST_RUN_LIVE=true``, ``AZURE_SKIP_LIVE_RECORDING=true``). ``--source`` takes that
package unpacked, its ``tests/`` folder, or the ``.tar.gz`` itself.

The tests import ``devtools_testutils``, the Azure SDK repository's test helpers, which are
not on PyPI; a stand-in for the parts they use is put on ``sys.path``. A pytest plugin serves
a vault and a Managed HSM (see ``envelope.testing._sdk_plugin``). The async tests need
aiohttp and the tests need python-dateutil (both in the ``dev`` extra). Remaining arguments
go to pytest, e.g. ``-k crypto --junitxml=results.xml``. The exit status is pytest's.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main", "tests_folder"]

PACKAGE = "azure-keyvault-keys"
SHIM = Path(__file__).resolve().parent / "_sdk_shim"
PYTEST_INI = """\
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
addopts = -p no:cacheprovider
"""


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "envelope"


def _unpack(archive: Path, destination: Path) -> Path:
    """Unpack the ``tests/`` folder of a source archive; no member may leave the folder."""
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if "/tests/" in f"/{m.name}"]
        if not members:
            raise SystemExit(f"{archive} has no tests/ folder")
        tar.extractall(destination, members=members, filter="data")
    found = sorted(destination.glob("*/tests"))
    if len(found) != 1:
        raise SystemExit(f"{archive} does not unpack to one tests/ folder")
    return found[0]


def _download(version: str) -> Path:
    target = _cache_root() / f"{PACKAGE}-{version}"
    found = sorted(target.glob("*/tests"))
    if found:
        return found[0]
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(  # noqa: S603 - this interpreter's pip, fixed arguments
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-binary",
                ":all:",
                "--no-deps",
                "--dest",
                tmp,
                f"{PACKAGE}=={version}",
            ],
            check=True,
        )
        archives = sorted(Path(tmp).glob("*.tar.gz"))
        if len(archives) != 1:
            raise SystemExit(f"pip did not download one source archive of {PACKAGE} {version}")
        return _unpack(archives[0], target)


def tests_folder(source: str | None) -> Path:
    """The ``tests/`` folder to run: from ``source``, or from the downloaded package of the
    installed version."""
    if source is None:
        return _download(importlib.metadata.version(PACKAGE))
    path = Path(source)
    if path.is_file():
        return _unpack(path, Path(tempfile.mkdtemp(prefix="azure-keyvault-keys-")))
    if (path / "tests" / "conftest.py").is_file():
        return path / "tests"
    if (path / "conftest.py").is_file():
        return path
    raise SystemExit(f"{source}: not a source archive, package folder or tests folder")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m envelope.testing.azure_sdk_tests",
        description="Run azure-keyvault-keys' live tests against LocalKeyVault.",
    )
    parser.add_argument("--source", help="source archive, package folder or tests folder")
    parser.add_argument(
        "--real-time",
        action="store_true",
        help="let the tests' waits take wall-clock time instead of advancing the vaults' clocks",
    )
    args, pytest_args = parser.parse_known_args(argv)
    tests = tests_folder(args.source)
    ini = tests.parent / "envelope-pytest.ini"
    ini.write_text(PYTEST_INI)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(SHIM), str(tests)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env["AZURE_TEST_RUN_LIVE"] = "true"
    env["AZURE_SKIP_LIVE_RECORDING"] = "true"
    env.pop("ENVELOPE_SDK_TESTS_REAL_TIME", None)
    if args.real_time:
        env["ENVELOPE_SDK_TESTS_REAL_TIME"] = "1"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(ini),
        "--rootdir",
        str(tests),
        "-p",
        "envelope.testing._sdk_plugin",
        str(tests),
        *pytest_args,
    ]
    # This interpreter's pytest on the tests folder the caller chose.
    return subprocess.run(command, env=env, cwd=tests, check=False).returncode  # noqa: S603


if __name__ == "__main__":
    sys.exit(main())
