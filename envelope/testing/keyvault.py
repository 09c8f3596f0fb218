"""Run a local Key Vault until Ctrl-C: ``python -m envelope.testing.keyvault``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING

from ._vault import LocalKeyVault

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

__all__ = ["main"]

USAGE = """\
Local Key Vault (keys API) listening on {url}
  CA certificate  {ca_file}
  tenant id       {tenant}
  client id       {client_id}
  client secret   {client_secret}
{keys}
Python:
  from azure.identity import ClientSecretCredential
  from azure.keyvault.keys import KeyClient

  credential = ClientSecretCredential(
      "{tenant}", "{client_id}", "{client_secret}",
      authority="{url}", disable_instance_discovery=True,
      connection_verify="{ca_file}",
  )
  client = KeyClient("{url}", credential, verify_challenge_resource=False,
                     connection_verify="{ca_file}")

Press Ctrl-C to stop; keys live in memory only.
"""


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m envelope.testing.keyvault",
        description="Serve a local Azure Key Vault (keys API) over HTTPS on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: any free port)")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="NAME[:KTY[:SIZE]]",
        help="create a key at start, e.g. kek:RSA:3072 or hsm:oct-HSM:256 (repeatable)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with LocalKeyVault(port=args.port) as vault:
        created = []
        for spec in args.key:
            name, _, rest = spec.partition(":")
            kty, _, size = rest.partition(":")
            try:
                kid = vault.create_key(name, kty or "RSA", int(size) if size else None)
            except Exception as exc:
                print(f"cannot create key {spec!r}: {exc}", file=sys.stderr)
                return 2
            created.append(f"  key             {kid}")
        identity = vault.identity()
        print(
            USAGE.format(
                url=vault.url,
                ca_file=vault.ca_file,
                tenant=vault.tenant_id,
                client_id=identity.client_id,
                client_secret=identity.client_secret,
                keys="\n".join(created) + ("\n" if created else ""),
            ),
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
