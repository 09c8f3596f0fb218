"""Run a local Key Vault until Ctrl-C: ``python -m envelope.testing.keyvault``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import TYPE_CHECKING

from envelope._errors import EnvelopeError

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
  client = KeyClient("{url}", credential,{challenge}
                     connection_verify="{ca_file}")
{hosts}
Press Ctrl-C to stop; {storage}.
"""


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m envelope.testing.keyvault",
        description="Serve a local Azure Key Vault (keys API) over HTTPS on 127.0.0.1.",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="TCP port (default: any free port; 443 with --host)",
    )
    parser.add_argument(
        "--host",
        help="serve under this name, e.g. myvault.vault.azure.net (resolve it to 127.0.0.1)",
    )
    parser.add_argument("--path", help="keep the keys in this file across restarts")
    parser.add_argument(
        "--key",
        action="append",
        default=[],
        metavar="NAME[:KTY[:SIZE|CURVE]]",
        help="create a key at start, e.g. kek:RSA:3072, hsm:oct-HSM:256 or sig:EC:P-384 "
        "(repeatable)",
    )
    return parser.parse_args(argv)


def _create(vault: LocalKeyVault, spec: str) -> str:
    name, _, rest = spec.partition(":")
    kty, _, size = rest.partition(":")
    kty = kty or "RSA"
    if kty.startswith("EC"):
        return vault.create_key(name, kty, curve=size or None)
    return vault.create_key(name, kty, int(size) if size else None)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    port = args.port if args.port is not None else (443 if args.host else 0)
    try:
        vault = LocalKeyVault(port=port, host=args.host, path=args.path)
    except (OSError, ValueError, EnvelopeError) as exc:
        print(f"cannot start the local Key Vault: {exc}", file=sys.stderr)
        return 2
    with vault:
        created = []
        for spec in args.key:
            try:
                kid = _create(vault, spec)
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
                challenge="" if args.host else " verify_challenge_resource=False,",
                hosts=(
                    f"\nOther processes reach it once the hosts file maps {args.host} to "
                    "127.0.0.1.\n"
                    if args.host
                    else ""
                ),
                storage=f"keys are kept in {args.path}"
                if args.path
                else "keys live in memory only",
            ),
            flush=True,
        )
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
