"""A LocalKeyVault in a process of its own, for tests that make thousands of vault calls.

In the test's own process the vault's request handling and the client's (the Azure SDK's
pipeline, httpx) share one interpreter lock, and a request costs their sum; in a process of
its own the vault runs beside the client, on the other core, as a real vault would. The test
drives it as it drives an in-process one: keys are created and operations counted by the
vault itself, over a pipe.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection
from types import TracebackType
from typing import Any

from azure.identity import ClientSecretCredential

from envelope.transport import TLSPolicy

__all__ = ["VaultProcess"]


def _serve(connection: Connection) -> None:
    """The child: one LocalKeyVault, and the commands the parent sends, until ``close``."""
    from envelope.testing import LocalKeyVault

    with LocalKeyVault() as vault:
        identity = vault.identity()
        connection.send(
            {
                "url": vault.url,
                "ca_file": vault.ca_file,
                "ca_pem": vault.ca_pem.decode("ascii"),
                "tenant_id": vault.tenant_id,
                "client_id": identity.client_id,
                "client_secret": identity.client_secret,
            }
        )
        while True:
            name, args, kwargs = connection.recv()
            if name == "close":
                connection.send(("ok", None))
                return
            try:
                connection.send(("ok", getattr(vault, name)(*args, **kwargs)))
            except Exception as exc:
                connection.send(("error", f"{type(exc).__name__}: {exc}"))


class VaultProcess:
    """A LocalKeyVault served by a child process: ``url``, ``tls_policy``, ``credential``
    (its full-permission identity) and the vault's own ``create_key``,
    ``operation_counts`` and ``reset_counts``."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child,), daemon=True)
        self._process.start()
        child.close()
        if not self._connection.poll(60):
            self._process.kill()
            raise RuntimeError("the vault process did not start within 60 s")
        facts: dict[str, str] = self._connection.recv()
        self.url = facts["url"]
        self.tls_policy = TLSPolicy(ca_data=facts["ca_pem"])
        self.credential = ClientSecretCredential(
            facts["tenant_id"],
            facts["client_id"],
            facts["client_secret"],
            authority=facts["url"],
            disable_instance_discovery=True,
            connection_verify=facts["ca_file"],
        )

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        self._connection.send((name, args, kwargs))
        if not self._connection.poll(60):
            raise RuntimeError(f"the vault process did not answer {name} within 60 s")
        status, value = self._connection.recv()
        if status != "ok":
            raise RuntimeError(f"the vault process failed {name}: {value}")
        return value

    def create_key(self, name: str, kty: str = "RSA", size: int | None = None) -> str:
        result: str = self._call("create_key", name, kty, size)
        return result

    def operation_counts(self) -> dict[str, int]:
        result: dict[str, int] = self._call("operation_counts")
        return result

    def reset_counts(self) -> None:
        self._call("reset_counts")

    def close(self) -> None:
        self.credential.close()
        if self._process.is_alive():
            self._call("close")
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()
        self._connection.close()

    def __enter__(self) -> VaultProcess:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
