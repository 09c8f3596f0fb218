"""``Azurite``: the Azure Storage emulator's blob service, over HTTPS on 127.0.0.1 with a
certificate of a private CA made by ``trustme``, for offline tests and benchmarks of
``envelope.blob``. It always runs with ``--disableTelemetry`` (without it Azurite tries to
report to an outside host), in memory, and stops with the object.

Azurite is a Node.js program (npm package ``azurite``): the command is ``ENVELOPE_AZURITE``
(a path to ``azurite-blob``; the repository's ``.ci/install-azurite`` installs the pinned
version and prints it), else ``azurite-blob`` on the PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import trustme

from ..transport import TLSPolicy

if TYPE_CHECKING:
    from azure.storage.blob import ContainerClient

#: Azurite's well-known development account (public, documented by Microsoft).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_LISTENING = re.compile(r"listens on https://127\.0\.0\.1:(\d+)")
_START_TIMEOUT = 60


class AzuriteNotFound(RuntimeError):
    """Neither ``ENVELOPE_AZURITE`` nor the PATH names an ``azurite-blob`` command."""


def azurite_command() -> str:
    """The ``azurite-blob`` command to run (see the module docstring)."""
    command = os.environ.get("ENVELOPE_AZURITE") or shutil.which("azurite-blob")
    if not command or not os.path.exists(command):
        raise AzuriteNotFound(
            "Azurite is not installed: install it with npm (npm install azurite) or run "
            "'make test', which installs the pinned version, or set ENVELOPE_AZURITE to the "
            "path of its azurite-blob command"
        )
    return command


class Azurite:
    """A running Azurite blob service: ``url`` (the account's endpoint), ``tls_policy`` and
    ``ca_file`` (its CA), ``credential`` (the well-known development account's key).
    ``with Azurite() as azurite:`` stops it at the end; otherwise call ``stop()``."""

    def __init__(self, workdir: str | Path | None = None) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="envelope-azurite-")
            workdir = self._tmp.name
        workdir = Path(workdir)
        ca = trustme.CA()
        leaf = ca.issue_cert("127.0.0.1")
        cert, key = workdir / "cert.pem", workdir / "key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        self.ca_file = str(workdir / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        self.tls_policy = TLSPolicy(ca_data=ca.cert_pem.bytes())
        self.credential = {"account_name": ACCOUNT, "account_key": ACCOUNT_KEY}
        environment = {k: v for k, v in os.environ.items() if not k.upper().endswith("PROXY")}
        # The command is the operator's (ENVELOPE_AZURITE or the PATH), its arguments fixed.
        self._process = subprocess.Popen(  # noqa: S603
            [
                azurite_command(),
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                "0",
                "--cert",
                str(cert),
                "--key",
                str(key),
                "--inMemoryPersistence",
                "--extentMemoryLimit",
                "2048",
                "--disableTelemetry",
                "--skipApiVersionCheck",
                "--silent",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=environment,
            cwd=workdir,
        )
        self.port = self._wait_for_port()
        self.url = f"https://127.0.0.1:{self.port}/{ACCOUNT}"
        # Keep reading its output, so a full pipe never blocks it.
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()

    def _wait_for_port(self) -> int:
        assert self._process.stdout is not None
        lines: list[str] = []
        timer = threading.Timer(_START_TIMEOUT, self._process.kill)
        timer.start()
        try:
            for line in self._process.stdout:
                lines.append(line)
                match = _LISTENING.search(line)
                if match:
                    return int(match[1])
        finally:
            timer.cancel()
        self.stop()
        raise RuntimeError("Azurite did not start:\n" + "".join(lines))

    def _drain(self) -> None:
        assert self._process.stdout is not None
        for _ in self._process.stdout:
            pass

    def container(self, name: str | None = None) -> ContainerClient:
        """A new container, through envelope's TLS-only transport (needs the ``blob``
        extra)."""
        from ..blob import secure_container_client  # noqa: PLC0415 - the blob extra

        client = secure_container_client(
            f"{self.url}/{name or 'c' + uuid.uuid4().hex[:12]}",
            self.credential,
            tls_policy=self.tls_policy,
        )
        client.create_container()
        return client

    def stop(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        drainer = getattr(self, "_drainer", None)
        if drainer is not None:
            drainer.join(10)
        if self._process.stdout is not None:
            self._process.stdout.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Azurite:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
